//! The source's hold at post-dump, shared by CRIU's notification handler
//! (a blocking thread inside the dump) and the migration (async).
//!
//! ```text
//!  Waiting --post-dump--> Holding --begin_commit--> Committing --decide--> Decided
//!                            |  \--decide(Resume)--> Decided(Resume)
//!                            \--deadline passed--> Expired   (CRIU resumes the source)
//! ```
//!
//! The deadline and the commit exclude each other: once the source began
//! to commit, the hold never expires on its own (the source stopped its
//! tree with SIGSTOP first, so even CRIU's death cannot resume it), and
//! once the hold expired, the source cannot commit. The deadline comes
//! from the protocol's ([`crate::deadlines::hold`]).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What CRIU is told at post-dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// "ok": the dump ends and CRIU kills the source (the destination runs
    /// it); post-copy: CRIU serves the lazy pages first.
    Release,
    /// "failed": CRIU lets the tree go. Before the commit it runs on; after
    /// it (in doubt) it stays stopped by the SIGSTOP sent before.
    Resume,
}

/// Where the hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// The dump has not reached post-dump.
    Waiting,
    /// The tree is frozen and held; the deadline runs.
    Holding,
    /// The source is committing: no deadline any more.
    Committing,
    /// The hold's deadline passed before a decision: CRIU resumes.
    Expired,
    /// Decided.
    Decided(Verdict),
}

/// Why the source cannot commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitRefused {
    #[error("the source's hold at post-dump expired after {0:?}, so CRIU resumed it")]
    Expired(Duration),
    #[error("the source was already decided ({0:?})")]
    Decided(Verdict),
    #[error("the source is not frozen yet")]
    NotFrozen,
}

/// Why the handler answers "failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoldEnd {
    #[error("the migration resumes the source")]
    Resume,
    #[error("no decision within the hold's {0:?}; the source resumes")]
    Expired(Duration),
}

/// The shared hold.
#[derive(Debug)]
pub struct Hold {
    state: Mutex<(HoldState, Option<Instant>)>,
    changed: Condvar,
    deadline: Duration,
}

impl Hold {
    /// A hold that expires `deadline` after the tree froze, unless the
    /// source began to commit.
    pub fn new(deadline: Duration) -> Self {
        Self {
            state: Mutex::new((HoldState::Waiting, None)),
            changed: Condvar::new(),
            deadline,
        }
    }

    fn lock(&self) -> MutexGuard<'_, (HoldState, Option<Instant>)> {
        // A poisoned lock only means a panicking holder; the state itself
        // stays meaningful.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> HoldState {
        self.lock().0
    }

    /// The hold's deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// CRIU's handler at post-dump: blocks until the migration decides or
    /// the deadline passes (unless the source is committing). `Ok`: answer
    /// "ok" (release); `Err`: answer "failed" (resume).
    pub fn wait(&self) -> Result<(), HoldEnd> {
        let mut guard = self.lock();
        if guard.0 == HoldState::Waiting {
            guard.0 = HoldState::Holding;
            guard.1 = Some(Instant::now());
            self.changed.notify_all();
        }
        let since = guard.1.unwrap_or_else(Instant::now);
        loop {
            match guard.0 {
                HoldState::Decided(Verdict::Release) => return Ok(()),
                HoldState::Decided(Verdict::Resume) => return Err(HoldEnd::Resume),
                HoldState::Expired => return Err(HoldEnd::Expired(self.deadline)),
                HoldState::Committing | HoldState::Waiting => {
                    guard = self.changed.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                HoldState::Holding => {
                    let left = self.deadline.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        guard.0 = HoldState::Expired;
                        self.changed.notify_all();
                        return Err(HoldEnd::Expired(self.deadline));
                    }
                    guard = self
                        .changed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// The source is about to stop its tree and send Commit: from now on
    /// the hold cannot expire. Fails if it expired or was decided.
    pub fn begin_commit(&self) -> Result<(), CommitRefused> {
        let mut guard = self.lock();
        match guard.0 {
            HoldState::Holding => {
                guard.0 = HoldState::Committing;
                self.changed.notify_all();
                Ok(())
            }
            HoldState::Expired => Err(CommitRefused::Expired(self.deadline)),
            HoldState::Decided(v) => Err(CommitRefused::Decided(v)),
            HoldState::Waiting | HoldState::Committing => Err(CommitRefused::NotFrozen),
        }
    }

    /// Decides (once; later decisions are ignored). Returns whether this
    /// call decided.
    pub fn decide(&self, verdict: Verdict) -> bool {
        let mut guard = self.lock();
        match guard.0 {
            HoldState::Decided(_) | HoldState::Expired => false,
            _ => {
                guard.0 = HoldState::Decided(verdict);
                self.changed.notify_all();
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn held(deadline: Duration) -> (Arc<Hold>, std::thread::JoinHandle<Result<(), HoldEnd>>) {
        let hold = Arc::new(Hold::new(deadline));
        let h = Arc::clone(&hold);
        let handler = std::thread::spawn(move || h.wait());
        while hold.state() == HoldState::Waiting {
            std::thread::yield_now();
        }
        (hold, handler)
    }

    #[test]
    fn release_and_resume_reach_the_handler() {
        let (hold, handler) = held(Duration::from_secs(60));
        assert_eq!(hold.state(), HoldState::Holding);
        hold.begin_commit().unwrap();
        assert!(hold.decide(Verdict::Release));
        assert_eq!(handler.join().unwrap(), Ok(()));
        assert!(!hold.decide(Verdict::Resume), "decided once");

        let (hold, handler) = held(Duration::from_secs(60));
        assert!(hold.decide(Verdict::Resume));
        assert_eq!(handler.join().unwrap(), Err(HoldEnd::Resume));
        assert_eq!(
            hold.begin_commit(),
            Err(CommitRefused::Decided(Verdict::Resume))
        );
    }

    #[test]
    fn an_expired_hold_cannot_commit() {
        let (hold, handler) = held(Duration::from_millis(1));
        assert_eq!(
            handler.join().unwrap(),
            Err(HoldEnd::Expired(Duration::from_millis(1)))
        );
        assert_eq!(hold.state(), HoldState::Expired);
        assert!(matches!(
            hold.begin_commit(),
            Err(CommitRefused::Expired(_))
        ));
        assert!(!hold.decide(Verdict::Release), "too late to release");
    }

    #[test]
    fn a_committing_hold_never_expires() {
        let (hold, handler) = held(Duration::from_millis(20));
        hold.begin_commit().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            hold.state(),
            HoldState::Committing,
            "past the deadline, still held"
        );
        assert!(!handler.is_finished());
        hold.decide(Verdict::Resume);
        assert_eq!(handler.join().unwrap(), Err(HoldEnd::Resume));
    }

    #[test]
    fn a_decision_before_the_freeze_is_kept() {
        let hold = Hold::new(Duration::from_secs(60));
        assert_eq!(hold.begin_commit(), Err(CommitRefused::NotFrozen));
        hold.decide(Verdict::Resume);
        assert_eq!(hold.wait(), Err(HoldEnd::Resume));
    }
}
