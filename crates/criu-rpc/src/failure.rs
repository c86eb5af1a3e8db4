//! Failures crabmigrate recognises in CRIU's answer and log, each with the
//! remedy a user needs.

use std::path::{Path, PathBuf};

use criu_proto::rpc::CriuReqType;
use serde::Serialize;

/// How many `Error (...)` lines of CRIU's log a failure quotes.
const LOG_ERRORS: usize = 8;

/// A recognised failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownFailure {
    /// A file points into a mount CRIU does not dump.
    MountNotDumped,
    /// iptables-restore is missing or failed while locking the network.
    NetworkLockFailed,
    /// A pid to restore is in use.
    PidInUse,
    /// The kernel has no soft-dirty bits (pre-dump, memory tracking).
    NoMemoryTracking,
    /// CRIU's lazy-pages server could not size its pipe.
    LazyPagesPipeTooSmall,
    /// The tree's session leader is outside it.
    SessionLeaderOutside,
    /// The process to dump does not exist.
    NoSuchProcess,
    /// The images directory holds no (or broken) images.
    BadImages,
    /// CRIU cannot read SO_PASSCRED/SO_PASSSEC of inet sockets (Linux 6.16+
    /// refuses them; CRIU 4.1 asks for every socket).
    InetSocketsUnsupported,
    /// The tree holds an established TCP connection and the dump was not
    /// asked to keep (or close) it.
    TcpEstablishedNeeded,
    /// The checkpoint was taken with tcp-close, and the restore lacks it.
    TcpCloseNeeded,
    /// A unix socket of the tree is connected to a process outside it.
    ExternalUnixSocket,
    /// The tree holds file locks and the dump was not asked to keep them.
    FileLocksHeld,
    /// An open file was deleted but still has other links; CRIU needs to
    /// link it back to dump it.
    LinkRemapNeeded,
    /// A socket of the checkpoint is bound to an address this host (or
    /// network namespace) does not have.
    AddressNotAvailable,
}

impl KnownFailure {
    /// What the user should do.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::MountNotDumped => {
                "declare the mount external (--external mnt[MOUNTPOINT]:KEY) or give the workload files outside it"
            }
            Self::NetworkLockFailed => {
                "install iptables (apt-get install iptables) or pick --network-lock nftables or skip"
            }
            Self::PidInUse => {
                "the original process still exists: restore into a new pid namespace or wait for the source to exit"
            }
            Self::NoMemoryTracking => {
                "this kernel has no soft-dirty memory tracking, so pre-dump cannot work; use post-copy (lazy pages) or stop-copy"
            }
            Self::LazyPagesPipeTooSmall => {
                "raise fs.pipe-max-size: echo 4194304 > /proc/sys/fs/pipe-max-size (scripts/setup.sh does)"
            }
            Self::SessionLeaderOutside => {
                "start the workload with setsid so it leads its own session, or dump it as a shell job (--shell-job)"
            }
            Self::NoSuchProcess => "check the pid: no such process",
            Self::BadImages => {
                "the images directory holds no complete checkpoint; point --images-dir at a directory written by checkpoint"
            }
            Self::InetSocketsUnsupported => {
                "CRIU before 4.2 cannot checkpoint TCP or UDP sockets on Linux 6.16 or newer (SO_PASSCRED); CRIU 4.2 or newer is needed: run `make setup` (scripts/setup.sh installs it into /opt/crabmigrate/criu) or pass --criu PATH"
            }
            Self::TcpEstablishedNeeded => {
                "established TCP connections need --tcp-established on both checkpoint and restore to keep them, or --tcp-close to give them back closed"
            }
            Self::TcpCloseNeeded => {
                "the checkpoint was taken with --tcp-close: restore with --tcp-close"
            }
            Self::ExternalUnixSocket => {
                "a unix socket is connected to a process outside the tree: checkpoint and restore with --ext-unix-sk (the peer must exist at restore), or include the peer in the tree"
            }
            Self::FileLocksHeld => {
                "the tree holds file locks: checkpoint and restore with --file-locks"
            }
            Self::LinkRemapNeeded => {
                "an open file was deleted but has other hard links: checkpoint and restore with --link-remap"
            }
            Self::AddressNotAvailable => {
                "a socket of the checkpoint is bound to an address this host does not have: add the address (ip addr add ...) or restore in the network namespace that has it"
            }
        }
    }
}

/// Recognises a failure from CRIU's errno, message and log lines.
pub(crate) fn classify(
    request: CriuReqType,
    errno: Option<i32>,
    texts: &[&str],
) -> Option<KnownFailure> {
    let any = |needle: &str| texts.iter().any(|t| t.contains(needle));
    let both = |a: &str, b: &str| texts.iter().any(|t| t.contains(a) && t.contains(b));
    if any("Can't get 1:16 opt") || any("Can't get 1:34 opt") {
        Some(KnownFailure::InetSocketsUnsupported)
    } else if any("Connected TCP socket, consider using --tcp-established")
        || any("Connected TCP socket in image")
    {
        Some(KnownFailure::TcpEstablishedNeeded)
    } else if any("Need to set the --tcp-close option") {
        Some(KnownFailure::TcpCloseNeeded)
    } else if any("Consider using --ext-unix-sk") {
        Some(KnownFailure::ExternalUnixSocket)
    } else if any("You can try --file-locks") {
        Some(KnownFailure::FileLocksHeld)
    } else if any("Use link-remap option") {
        Some(KnownFailure::LinkRemapNeeded)
    } else if both("Can't bind inet socket", "Cannot assign requested address") {
        Some(KnownFailure::AddressNotAvailable)
    } else if any("Can't lookup mount") {
        Some(KnownFailure::MountNotDumped)
    } else if any("Locking network failed") || any("iptables-restore") {
        Some(KnownFailure::NetworkLockFailed)
    } else if both("Can't fork for", "File exists")
        || (request == CriuReqType::Restore && errno == Some(libc::EEXIST))
    {
        Some(KnownFailure::PidInUse)
    } else if any("Dirty tracking is OFF")
        || any("Tracking memory is not available")
        || any("BUG at criu/mem.c")
    {
        Some(KnownFailure::NoMemoryTracking)
    } else if any("splice") && any("Bad file descriptor") || both("tee", "Operation not permitted")
    {
        Some(KnownFailure::LazyPagesPipeTooSmall)
    } else if any("A session leader of") && any("outside of its pid namespace") {
        Some(KnownFailure::SessionLeaderOutside)
    } else if is_dump(request)
        && (errno == Some(libc::ESRCH) || any("No such process") || any("Can't seize"))
    {
        Some(KnownFailure::NoSuchProcess)
    } else if request == CriuReqType::Restore
        && (any("inventory") || any("Can't open image") || any("Unexpected EOF") || any("magic"))
    {
        Some(KnownFailure::BadImages)
    } else {
        None
    }
}

fn is_dump(request: CriuReqType) -> bool {
    matches!(
        request,
        CriuReqType::Dump | CriuReqType::PreDump | CriuReqType::SinglePreDump
    )
}

/// The first `Error (...)` lines of a CRIU log, without their locations.
pub(crate) fn log_errors(log: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(log) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains("Error (") && !l.contains("RLIMIT_NOFILE"))
        .take(LOG_ERRORS)
        .map(|l| match l.find("): ") {
            Some(i) if l[..i].contains("Error (") => l[i + 3..].trim().to_owned(),
            _ => l.trim().to_owned(),
        })
        .collect()
}

/// The path behind one of our descriptors (`/proc/self/fd/N`).
pub(crate) fn fd_path(fd: std::os::fd::BorrowedFd<'_>) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_field_failures() {
        let cases: &[(&str, KnownFailure)] = &[
            (
                "Can't lookup mount=31 for fd=0 path=/dev/null",
                KnownFailure::MountNotDumped,
            ),
            (
                "Locking network failed: iptables-restore returned -1",
                KnownFailure::NetworkLockFailed,
            ),
            ("Can't fork for 4242: File exists", KnownFailure::PidInUse),
            (
                "Dirty tracking is OFF. Memory snapshot will not work.",
                KnownFailure::NoMemoryTracking,
            ),
            (
                "splice: -1: Bad file descriptor",
                KnownFailure::LazyPagesPipeTooSmall,
            ),
            (
                "A session leader of 77(77) is outside of its pid namespace",
                KnownFailure::SessionLeaderOutside,
            ),
            // CRIU 4.2.1's words, from real dumps and restores on Linux 6.18.
            (
                "sockets: Can't get 1:16 opt: Operation not supported",
                KnownFailure::InetSocketsUnsupported,
            ),
            (
                "inet: Connected TCP socket, consider using --tcp-established option.",
                KnownFailure::TcpEstablishedNeeded,
            ),
            (
                "inet: Connected TCP socket in image",
                KnownFailure::TcpEstablishedNeeded,
            ),
            (
                "Need to set the --tcp-close options.",
                KnownFailure::TcpCloseNeeded,
            ),
            (
                "unix: External socket is used. Consider using --ext-unix-sk option.",
                KnownFailure::ExternalUnixSocket,
            ),
            (
                "Some file locks are hold by dumping tasks! You can try --file-locks to dump them.",
                KnownFailure::FileLocksHeld,
            ),
            (
                "Can't create link remap for /tmp/exp/a. Use link-remap option.",
                KnownFailure::LinkRemapNeeded,
            ),
            (
                "inet: Can't bind inet socket (id 27): Cannot assign requested address",
                KnownFailure::AddressNotAvailable,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                classify(CriuReqType::Dump, None, &[text]),
                Some(*want),
                "{text}"
            );
        }
        assert_eq!(
            classify(CriuReqType::Dump, Some(3), &[]),
            Some(KnownFailure::NoSuchProcess)
        );
        assert_eq!(
            classify(CriuReqType::Restore, Some(17), &[]),
            Some(KnownFailure::PidInUse)
        );
        assert_eq!(classify(CriuReqType::Dump, None, &["something else"]), None);
        // The errno alone means something only for the request it belongs to.
        assert_eq!(classify(CriuReqType::Restore, Some(3), &[]), None);
        assert_eq!(classify(CriuReqType::Dump, Some(17), &[]), None);
    }

    #[test]
    fn reads_error_lines_from_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        std::fs::write(
            &log,
            "(00.001) rlimit: Error (criu/util.c:1): Can't setup RLIMIT_NOFILE for self\n\
             (00.002) Warn  (criu/x.c:2): meh\n\
             (00.003) Error (criu/files-reg.c:9): Can't lookup mount=31 for fd=0 path=/dev/null\n",
        )
        .unwrap();
        assert_eq!(
            log_errors(&log),
            vec!["Can't lookup mount=31 for fd=0 path=/dev/null"]
        );
        assert!(log_errors(&dir.path().join("missing.log")).is_empty());
    }
}
