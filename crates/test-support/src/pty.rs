//! Pseudo-terminals: a pair, and a conversation through the master (write
//! a line, read until an answer appears).

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Why a terminal failed.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("cannot open a pseudo-terminal")]
    Open(#[source] Errno),
    #[error("cannot write to the terminal")]
    Write(#[source] Errno),
    #[error("cannot read from the terminal")]
    Read(#[source] Errno),
    #[error("the terminal hung up; read {0:?}")]
    HungUp(String),
    #[error("no {answer:?} from the terminal within {limit:?}; read {read:?}")]
    NoAnswer {
        answer: String,
        limit: Duration,
        read: String,
    },
}

/// A new pseudo-terminal: (master, slave).
pub fn open() -> Result<(OwnedFd, OwnedFd), PtyError> {
    let pair = nix::pty::openpty(None, None).map_err(PtyError::Open)?;
    Ok((pair.master, pair.slave))
}

/// Writes `line` and a newline to the master, then reads until `answer`
/// appears (a terminal echoes the input first). Returns what it read.
pub fn converse(
    master: &OwnedFd,
    line: &str,
    answer: &str,
    limit: Duration,
) -> Result<String, PtyError> {
    let data = format!("{line}\n");
    let mut written = 0;
    while written < data.len() {
        written +=
            nix::unistd::write(master, &data.as_bytes()[written..]).map_err(PtyError::Write)?;
    }
    let mut seen = Vec::new();
    let until = Instant::now() + limit;
    while !String::from_utf8_lossy(&seen).contains(answer) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PtyError::NoAnswer {
                answer: answer.to_owned(),
                limit,
                read: String::from_utf8_lossy(&seen).into_owned(),
            });
        }
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(PtyError::Read(e)),
        }
        let mut buf = [0u8; 256];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(Errno::EIO) => {
                return Err(PtyError::HungUp(
                    String::from_utf8_lossy(&seen).into_owned(),
                ))
            }
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(PtyError::Read(e)),
        }
    }
    Ok(String::from_utf8_lossy(&seen).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_answers_through_the_master() {
        use std::os::unix::process::CommandExt;
        let (master, slave) = open().unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "read l; echo got:$l"])
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().unwrap();
        drop(slave);
        let read = converse(&master, "hello", "got:hello", Duration::from_secs(10)).unwrap();
        assert!(read.contains("got:hello"), "{read}");
        let _ = child.wait();
    }
}
