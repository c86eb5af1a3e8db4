//! Cancelling a running call from another thread or task.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};

/// A handle that stops every call of the clients it was given to: CRIU is
/// killed and reaped, and the call returns [`crate::TransportError::Cancelled`].
/// Clones share the same state.
#[derive(Debug, Clone)]
pub struct CancelToken {
    event: Arc<EventFd>,
}

impl CancelToken {
    /// A token that is not cancelled yet.
    pub fn new() -> std::io::Result<Self> {
        let event =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self {
            event: Arc::new(event),
        })
    }

    /// Cancels: running and future calls stop.
    pub fn cancel(&self) {
        // A counter overflow would need 2^64 cancels; the state is sticky
        // because nobody ever reads the counter back.
        let _ = self.event.write(1);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Readable once cancelled; the transport polls it beside CRIU's socket.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }
}
