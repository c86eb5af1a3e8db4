//! Terminals: a pseudo-terminal for `process.terminal`, its master sent to
//! the caller's console socket (the runc `--console-socket` protocol: one
//! message carrying the master as SCM_RIGHTS).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Why the console could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot connect to the console socket {0}")]
    Connect(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot create a pseudo-terminal")]
    Pty(#[source] nix::Error),
    #[error("cannot send the terminal to the console socket")]
    Send(#[source] nix::Error),
    #[error("cannot make the terminal the controlling terminal")]
    Attach(#[source] nix::Error),
}

/// Connects to the console socket at `path` (before pivot_root, while the
/// path is visible).
pub fn connect(path: &Path) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(path).map_err(|e| ConsoleError::Connect(path.to_path_buf(), e))
}

/// Sends `master` over `socket`.
pub fn send_master(socket: &UnixStream, master: BorrowedFd<'_>) -> Result<(), ConsoleError> {
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let name = b"/dev/ptmx";
    let iov = [IoSlice::new(name)];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map(drop)
        .map_err(ConsoleError::Send)
}

/// Opens a new pty pair inside the container (`/dev/ptmx` of its devpts).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(ConsoleError::Pty)?;
    grantpt(&master).map_err(ConsoleError::Pty)?;
    unlockpt(&master).map_err(ConsoleError::Pty)?;
    let name = ptsname_r(&master).map_err(ConsoleError::Pty)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(ConsoleError::Pty)?;
    Ok((master.into(), slave))
}

/// Makes `slave` the standard streams and the controlling terminal of this
/// process (which must be a session leader).
pub fn attach(slave: &OwnedFd) -> Result<(), ConsoleError> {
    for target in 0..=2 {
        // SAFETY: dup2 onto 0..2 replaces this process's standard streams,
        // which no Rust object owns in the init process.
        let done = unsafe { libc::dup2(slave.as_raw_fd(), target) };
        if done < 0 {
            return Err(ConsoleError::Attach(nix::Error::last()));
        }
    }
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); fd 0 is the
    // slave we just placed there.
    let r = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    if r < 0 {
        return Err(ConsoleError::Attach(nix::Error::last()));
    }
    Ok(())
}
