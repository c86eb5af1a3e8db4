//! Every wait of the protocol has a deadline, and the source's hold at
//! post-dump is derived from them, so the protocol gives up before CRIU's
//! hold does (and the hold state machine, [`crate::hold`], makes the two
//! exclude each other anyway).

use std::time::Duration;

/// The first message after the handshake (a replayed handshake message
/// never sends one).
pub const FIRST_MESSAGE: Duration = Duration::from_secs(10);
/// Any message in the middle of a step (between file chunks, pre-copy
/// batches, acknowledgements of quick checks).
pub const MESSAGE: Duration = Duration::from_secs(60);
/// A page stream may pause this long (CRIU dumps without writing).
pub const STREAM_IDLE: Duration = Duration::from_secs(60);
/// A pre-copy round on the source between two messages to the
/// destination (a leave-running dump and its hashing).
pub const ROUND: Duration = Duration::from_secs(300);
/// The destination's restore, until `Restored`.
pub const RESTORED: Duration = Duration::from_secs(300);
/// How long a health check may keep failing before the destination gives
/// up and drops its copy.
pub const HEALTH: Duration = Duration::from_secs(10);
/// From `Commit` to `Committed`: the destination lets its copy run and
/// runs the health check.
pub const COMMITTED: Duration = Duration::from_secs(10 + 30);
/// The destination's copy waits this long at post-restore for `Commit`
/// (the source sends it at once after `Restored`).
pub const COMMIT: Duration = Duration::from_secs(60);
/// Waiting for a data connection of a session.
pub const DATA_STREAM: Duration = Duration::from_secs(30);
/// The slowest transfer the source's hold allows for: the images sent
/// while frozen, per second.
pub const MIN_FROZEN_RATE: u64 = 10 << 20;
/// Slack on top of the sum.
const MARGIN: Duration = Duration::from_secs(120);

/// The source's hold at post-dump for `frozen_bytes` to send while frozen:
/// the transfer at [`MIN_FROZEN_RATE`], the restore, the commit, and a
/// margin.
pub fn hold(frozen_bytes: u64) -> Duration {
    let transfer = Duration::from_secs(frozen_bytes / MIN_FROZEN_RATE);
    transfer + RESTORED + COMMITTED + MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_outlasts_every_wait_of_the_frozen_phase() {
        for bytes in [0, 64 << 20, 1 << 30, 64 << 30] {
            let h = hold(bytes);
            assert!(h > RESTORED + COMMITTED + MESSAGE, "{bytes}: {h:?}");
            assert!(h >= Duration::from_secs(bytes / MIN_FROZEN_RATE));
        }
    }
}
