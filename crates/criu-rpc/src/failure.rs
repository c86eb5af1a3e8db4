//! Failures crabmigrate recognises in CRIU's answer, log and output, each
//! with the cause in plain words and the remedy that is right for it.
//!
//! CRIU's reply to a failed request is often generic (`Dumping FAILED.`),
//! or names a consequence instead of the cause (a failed connection to a
//! page server shows up as `Unable to detach from PID: No such process`).
//! So the cause comes from the log: its error lines in order, without the
//! lines that only report a failure further up ([`is_consequence`]); the
//! first line that names a known cause wins, then CRIU's warnings, then
//! what the request itself tells (it sent pages to a page server), and
//! only then CRIU's errno.
//!
//! `docs/troubleshooting.md` lists every cause with its remedy; a test keeps
//! the two in step.

use std::path::{Path, PathBuf};

use criu_proto::rpc::CriuReqType;
use serde::Serialize;

/// How many error lines of CRIU's log a failure keeps.
const LOG_ERRORS: usize = 8;
/// How many warning lines of CRIU's log are looked at.
const LOG_WARNINGS: usize = 32;
/// The most of a log file read (CRIU logs at the default level are small;
/// a debug log can be huge and the errors are what matters).
const LOG_READ_LIMIT: u64 = 16 << 20;

/// A recognised failure: a cause with its remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownFailure {
    /// An open file lies on a mount outside the dumped mount namespace.
    MountNotDumped,
    /// iptables-restore (or nft) is missing or failed while locking the
    /// network.
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
    /// The dump could not send its pages to the page server.
    PageServerUnreachable,
    /// The tree uses a terminal whose other end is outside it.
    TerminalOutsideTree,
    /// The checkpoint's terminal was external and the restore gave no
    /// terminal in its place.
    TerminalNotGiven,
    /// The tree's root does not lead its own session.
    NotSessionLeader,
    /// The tree holds an established TCP connection and the dump was not
    /// asked to keep (or close) it.
    TcpEstablishedNeeded,
    /// The checkpoint was taken with tcp-close, and the restore lacks it.
    TcpCloseNeeded,
    /// A socket's address does not exist on the restoring host.
    AddressNotAvailable,
    /// A unix socket connected to a process outside the tree.
    ExternalUnixSocket,
    /// The tree holds file locks, dumped without `--file-locks`.
    FileLocksHeld,
    /// An open file was deleted while other links to it remain.
    LinkRemapNeeded,
    /// An open, deleted file is larger than CRIU keeps in its images.
    GhostFileTooBig,
    /// CRIU lacks CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE.
    NoPrivilege,
    /// CRIU died of a signal (a crash) before answering.
    CriuCrashed,
}

impl KnownFailure {
    /// Every known failure, in the order `docs/troubleshooting.md` lists
    /// them.
    pub const ALL: [KnownFailure; 22] = [
        Self::NoPrivilege,
        Self::NoSuchProcess,
        Self::NotSessionLeader,
        Self::SessionLeaderOutside,
        Self::TerminalOutsideTree,
        Self::TerminalNotGiven,
        Self::MountNotDumped,
        Self::TcpEstablishedNeeded,
        Self::TcpCloseNeeded,
        Self::AddressNotAvailable,
        Self::InetSocketsUnsupported,
        Self::ExternalUnixSocket,
        Self::FileLocksHeld,
        Self::LinkRemapNeeded,
        Self::GhostFileTooBig,
        Self::NetworkLockFailed,
        Self::PageServerUnreachable,
        Self::PidInUse,
        Self::BadImages,
        Self::NoMemoryTracking,
        Self::LazyPagesPipeTooSmall,
        Self::CriuCrashed,
    ];

    /// The stable name (`mount-not-dumped`), as in JSON and the
    /// troubleshooting page.
    pub fn code(self) -> &'static str {
        match self {
            Self::MountNotDumped => "mount-not-dumped",
            Self::NetworkLockFailed => "network-lock-failed",
            Self::PidInUse => "pid-in-use",
            Self::NoMemoryTracking => "no-memory-tracking",
            Self::LazyPagesPipeTooSmall => "lazy-pages-pipe-too-small",
            Self::SessionLeaderOutside => "session-leader-outside",
            Self::NoSuchProcess => "no-such-process",
            Self::BadImages => "bad-images",
            Self::InetSocketsUnsupported => "inet-sockets-unsupported",
            Self::PageServerUnreachable => "page-server-unreachable",
            Self::TerminalOutsideTree => "terminal-outside-tree",
            Self::TerminalNotGiven => "terminal-not-given",
            Self::NotSessionLeader => "not-session-leader",
            Self::TcpEstablishedNeeded => "tcp-established-needed",
            Self::TcpCloseNeeded => "tcp-close-needed",
            Self::AddressNotAvailable => "address-not-available",
            Self::ExternalUnixSocket => "external-unix-socket",
            Self::FileLocksHeld => "file-locks-held",
            Self::LinkRemapNeeded => "link-remap-needed",
            Self::GhostFileTooBig => "ghost-file-too-big",
            Self::NoPrivilege => "no-privilege",
            Self::CriuCrashed => "criu-crashed",
        }
    }

    /// The cause in plain words, for when CRIU's own words do not say it.
    pub fn cause(self) -> &'static str {
        match self {
            Self::MountNotDumped => {
                "an open file lies on a mount outside the checkpointed mount namespace"
            }
            Self::NetworkLockFailed => "CRIU could not lock the network while it dumped",
            Self::PidInUse => "a pid of the checkpoint is in use on this host",
            Self::NoMemoryTracking => "the kernel has no soft-dirty memory tracking",
            Self::LazyPagesPipeTooSmall => {
                "CRIU's lazy-pages server could not size its pipe (fs.pipe-max-size is too small)"
            }
            Self::SessionLeaderOutside => "the leader of the tree's session is outside the tree",
            Self::NoSuchProcess => "the process does not exist",
            Self::BadImages => "the images directory holds no complete checkpoint",
            Self::InetSocketsUnsupported => {
                "this CRIU cannot dump TCP or UDP sockets on this kernel"
            }
            Self::PageServerUnreachable => {
                "CRIU could not send the pages to the page server (nothing listens there, or the connection broke)"
            }
            Self::TerminalOutsideTree => {
                "the tree uses a terminal whose other end (the terminal emulator, ssh, tmux) is outside it"
            }
            Self::TerminalNotGiven => {
                "the checkpoint's terminal was left outside it and this restore gave no terminal in its place"
            }
            Self::NotSessionLeader => "the tree's root does not lead its own session",
            Self::TcpEstablishedNeeded => "the tree has an established TCP connection",
            Self::TcpCloseNeeded => "the checkpoint was taken with --tcp-close",
            Self::AddressNotAvailable => {
                "a socket of the checkpoint is bound to an address this host does not have"
            }
            Self::ExternalUnixSocket => {
                "the tree has a unix socket connected to a process outside it"
            }
            Self::FileLocksHeld => "the tree holds file locks",
            Self::LinkRemapNeeded => "the tree has a file open that was deleted while other links to it remain",
            Self::GhostFileTooBig => {
                "the tree has a deleted file open that is larger than CRIU keeps in the images (1 MiB)"
            }
            Self::NoPrivilege => "CRIU runs without CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE",
            Self::CriuCrashed => "CRIU crashed",
        }
    }

    /// What the user should do.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::MountNotDumped => {
                "if it is the workload's stdio (a detached container writing to a host file), give it /dev/null, a pipe or a terminal instead; else close the file, open it inside the tree's mount namespace, or declare it with --external file[MNT_ID:INODE] (hex, from /proc/PID/fdinfo/FD and stat) and give it back at restore with --inherit-fd"
            }
            Self::NetworkLockFailed => {
                "install iptables (apt-get install iptables) or pick another lock with --network-lock nftables; crabmigrate check shows which lock this host has"
            }
            Self::PidInUse => {
                "the original process still exists or is not reaped yet: stop it (or wait for it) and restore again, or restore into a new pid namespace"
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
            Self::NoSuchProcess => {
                "the process exited or the pid is wrong; find the right one with ps"
            }
            Self::BadImages => {
                "the images directory holds no complete checkpoint; point --images-dir at a directory written by checkpoint"
            }
            Self::InetSocketsUnsupported => {
                "CRIU before 4.2 cannot checkpoint TCP or UDP sockets on Linux 6.16 or newer (SO_PASSCRED); CRIU 4.2 or newer is needed: run `make setup` (scripts/setup.sh installs it into /opt/crabmigrate/criu) or pass --criu PATH"
            }
            Self::PageServerUnreachable => {
                "start the page server first (crabmigrate page-server --images-dir DIR --port PORT on the receiving host) and check HOST:PORT and the firewall; the workload keeps running"
            }
            Self::TerminalOutsideTree => {
                "start the workload with its stdio redirected (</dev/null >FILE 2>&1), or checkpoint and restore it as a shell job (--shell-job)"
            }
            Self::TerminalNotGiven => {
                "run restore from a terminal (its standard input, output or error must be a terminal): the restored tree gets that terminal in place of the one it had"
            }
            Self::NotSessionLeader => {
                "start the workload with setsid so it leads its own session, or checkpoint and restore it as a shell job (--shell-job)"
            }
            Self::TcpEstablishedNeeded => {
                "established TCP connections need --tcp-established on both checkpoint and restore to keep them, or --tcp-close to give them back closed"
            }
            Self::AddressNotAvailable => {
                "a socket of the checkpoint is bound to an address this host does not have: add the address (ip addr add ...) or restore in the network namespace that has it"
            }
            Self::ExternalUnixSocket => {
                "a unix socket is connected to a process outside the tree: checkpoint and restore with --ext-unix-sk (the peer must exist at restore), or include the peer in the tree"
            }
            Self::FileLocksHeld => {
                "the tree holds file locks: checkpoint and restore with --file-locks"
            },
            Self::LinkRemapNeeded => {
                "an open file was deleted but has other hard links: checkpoint and restore with --link-remap"
            }
            Self::GhostFileTooBig => {
                "close or truncate the deleted file before the checkpoint, or keep it linked in the file system"
            }
            Self::TcpCloseNeeded => {
                "the checkpoint was taken with --tcp-close: restore with --tcp-close"
            }
            Self::NoPrivilege => "run crabmigrate as root (sudo crabmigrate ...)",
            Self::CriuCrashed => {
                "run crabmigrate inspect on the images to look for damage, then retry with --criu-log-level 4 and report CRIU's log"
            }
        }
    }
}

impl std::fmt::Display for KnownFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// What a request tells about its failure beyond CRIU's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureContext {
    /// The request that failed.
    pub request: CriuReqType,
    /// CRIU's errno, when it sent one.
    pub errno: Option<i32>,
    /// The request sent pages to a page server (not a lazy dump).
    pub page_server: bool,
}

impl FailureContext {
    /// A context with nothing but the request.
    pub fn new(request: CriuReqType) -> Self {
        Self {
            request,
            errno: None,
            page_server: false,
        }
    }
}

/// The error and warning lines of a CRIU log, in order, without their
/// source locations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLines {
    /// `Error (...)` lines.
    pub errors: Vec<String>,
    /// `Warn (...)` lines.
    pub warnings: Vec<String>,
}

impl LogLines {
    /// Picks the error and warning lines out of a log's text.
    pub fn parse(text: &str) -> Self {
        let mut lines = Self::default();
        for line in text.lines() {
            if let Some(message) = message_after(line, "Error (") {
                if lines.errors.len() < LOG_ERRORS && !is_harmless(&message) {
                    lines.errors.push(message);
                }
            } else if let Some(message) =
                message_after(line, "Warn  (").or_else(|| message_after(line, "Warn ("))
            {
                if lines.warnings.len() < LOG_WARNINGS {
                    lines.warnings.push(message);
                }
            }
        }
        lines
    }

    /// Reads a log file (missing or unreadable: no lines).
    pub fn read(path: &Path) -> Self {
        use std::io::Read;
        let mut bytes = Vec::new();
        let read =
            std::fs::File::open(path).and_then(|f| f.take(LOG_READ_LIMIT).read_to_end(&mut bytes));
        match read {
            Ok(_) => Self::parse(&String::from_utf8_lossy(&bytes)),
            Err(_) => Self::default(),
        }
    }
}

/// `rest` of `... MARKER file:line): rest`.
fn message_after(line: &str, marker: &str) -> Option<String> {
    let at = line.find(marker)?;
    let after = &line[at..];
    let message = match after.find("): ") {
        Some(i) => &after[i + 3..],
        None => after,
    };
    Some(message.trim().to_owned())
}

/// Lines CRIU prints on every run on hosts without CAP_SYS_RESOURCE.
fn is_harmless(line: &str) -> bool {
    line.contains("RLIMIT_NOFILE")
}

/// Whether an error line only reports a failure that an earlier line
/// explains (or follows a failure whose cause CRIU logs only at info
/// level): never the cause itself.
pub fn is_consequence(line: &str) -> bool {
    const CONSEQUENCES: &[&str] = &[
        "Dumping FAILED",
        "Restoring FAILED",
        "Pre-dumping FAILED",
        "Unable to detach from",
        "Dump files (pid:",
        "Unable to open fd=",
        "exited, status=",
        "Use the --deprecated option",
        "For details visit https://criu.org/Deprecation",
        "Unable to dump task",
    ];
    is_harmless(line) || CONSEQUENCES.iter().any(|c| line.contains(c))
}

/// The failure one log line (error or warning) names, if any.
pub fn classify_line(request: CriuReqType, line: &str) -> Option<KnownFailure> {
    let has = |needle: &str| line.contains(needle);
    let terminal_path = has("path=/dev/pts/") || has("path=/dev/tty") || has("path=/dev/console");
    let failure = if has("Can't get 1:16 opt") || has("Can't get 1:34 opt") {
        KnownFailure::InetSocketsUnsupported
    } else if has("Can't lookup mount") && terminal_path {
        KnownFailure::TerminalOutsideTree
    } else if has("Can't lookup mount") {
        KnownFailure::MountNotDumped
    } else if has("without correspond master peer") || has("slave external peer") {
        KnownFailure::TerminalOutsideTree
    } else if has("TTY w/o regfile") || has("Can't set tty params") {
        KnownFailure::TerminalNotGiven
    } else if has("Locking network failed")
        || has("Iptables configuration failed")
        || has("Failed to lock TCP connection")
        || has("iptables-restore")
    {
        KnownFailure::NetworkLockFailed
    } else if has("Can't fork for") && has("File exists") {
        KnownFailure::PidInUse
    } else if has("Dirty tracking is OFF")
        || has("Tracking memory is not available")
        || has("BUG at criu/mem.c")
    {
        KnownFailure::NoMemoryTracking
    } else if (has("splice") && has("Bad file descriptor"))
        || (has("tee") && has("Operation not permitted"))
    {
        KnownFailure::LazyPagesPipeTooSmall
    } else if has("A session leader of") && has("outside of its pid namespace") {
        KnownFailure::SessionLeaderOutside
    } else if has("is not a session leader") {
        KnownFailure::NotSessionLeader
    } else if has("consider using --tcp-established")
        || has("Consider using --tcp-established")
        || has("Connected TCP socket in image")
    {
        KnownFailure::TcpEstablishedNeeded
    } else if has("Need to set the --tcp-close option") {
        KnownFailure::TcpCloseNeeded
    } else if has("Can't bind inet socket") && has("Cannot assign requested address") {
        KnownFailure::AddressNotAvailable
    } else if has("External socket is used") || has("--ext-unix-sk") {
        KnownFailure::ExternalUnixSocket
    } else if has("file locks are hold") || has("--file-locks") {
        KnownFailure::FileLocksHeld
    } else if has("Can't create link remap") {
        KnownFailure::LinkRemapNeeded
    } else if has("Can't dump ghost file") {
        KnownFailure::GhostFileTooBig
    } else if has("CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE") {
        KnownFailure::NoPrivilege
    } else if is_dump(request)
        && ((has("Unable to interrupt task") && has("No such process")) || has("Can't seize"))
    {
        KnownFailure::NoSuchProcess
    } else if request == CriuReqType::Restore
        && (has("inventory")
            || has("Can't open image")
            || has("Unexpected EOF")
            || (has("bytes while") && has("expected"))
            || has("magic"))
    {
        KnownFailure::BadImages
    } else {
        return None;
    };
    Some(failure)
}

/// What a failure's log and context say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// The recognised cause.
    pub known: Option<KnownFailure>,
    /// The first error line that is not a mere consequence.
    pub first_error: Option<String>,
}

/// Finds the cause of a failed request from CRIU's message, its log lines
/// and the request (see the module docs for the order).
pub fn diagnose(context: &FailureContext, errmsg: Option<&str>, log: &LogLines) -> Diagnosis {
    let errors: Vec<&str> = log
        .errors
        .iter()
        .map(String::as_str)
        .chain(errmsg)
        .collect();
    let real: Vec<&str> = errors
        .iter()
        .copied()
        .filter(|l| !is_consequence(l))
        .collect();
    let first_error = real.first().map(|l| (*l).to_owned());
    let request = context.request;
    let known = real
        .iter()
        .find_map(|l| classify_line(request, l))
        .or_else(|| log.warnings.iter().find_map(|l| classify_line(request, l)))
        .or_else(|| {
            (real.is_empty() && context.page_server && is_dump(request))
                .then_some(KnownFailure::PageServerUnreachable)
        })
        .or_else(|| {
            // Consequences can still name a cause nothing else names.
            errors.iter().find_map(|l| classify_line(request, l))
        })
        .or_else(|| match (request, context.errno) {
            (r, Some(libc::ESRCH)) if is_dump(r) => Some(KnownFailure::NoSuchProcess),
            (CriuReqType::Restore, Some(libc::EEXIST)) => Some(KnownFailure::PidInUse),
            _ => None,
        });
    Diagnosis { known, first_error }
}

/// Recognises a failure from CRIU's errno and error lines.
#[cfg(test)]
pub(crate) fn classify(
    request: CriuReqType,
    errno: Option<i32>,
    texts: &[&str],
) -> Option<KnownFailure> {
    let log = LogLines {
        errors: texts.iter().map(|t| (*t).to_owned()).collect(),
        warnings: Vec::new(),
    };
    let context = FailureContext {
        request,
        errno,
        page_server: false,
    };
    diagnose(&context, None, &log).known
}

/// The failure behind what CRIU printed before it exited without an answer
/// (CRIU checks its privilege before it reads the request).
pub fn classify_output(output: &str) -> Option<KnownFailure> {
    output
        .contains("CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE")
        .then_some(KnownFailure::NoPrivilege)
}

fn is_dump(request: CriuReqType) -> bool {
    matches!(
        request,
        CriuReqType::Dump | CriuReqType::PreDump | CriuReqType::SinglePreDump
    )
}

/// The first `Error (...)` lines of a CRIU log, without their locations.
#[cfg(test)]
pub(crate) fn log_errors(log: &Path) -> Vec<String> {
    LogLines::read(log).errors
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
    fn codes_match_the_serialised_names_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for known in KnownFailure::ALL {
            let json = serde_json::to_string(&known).unwrap();
            assert_eq!(json, format!("\"{}\"", known.code()));
            assert!(seen.insert(known.code()), "{known:?} twice");
            assert!(!known.remedy().ends_with('.'), "{known:?}");
            assert!(!known.cause().ends_with('.'), "{known:?}");
        }
    }

    #[test]
    fn reads_error_and_warning_lines_from_a_log() {
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
        assert_eq!(LogLines::read(&log).warnings, vec!["meh"]);
        assert!(log_errors(&dir.path().join("missing.log")).is_empty());
    }

    #[test]
    fn recognises_criu_4_2_1_socket_lines() {
        // CRIU 4.2.1's words, from real dumps and restores on Linux 6.18.
        let cases: &[(&str, KnownFailure)] = &[
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
    }

    #[test]
    fn errno_alone_means_something_only_for_its_request() {
        assert_eq!(
            classify(CriuReqType::Dump, Some(3), &[]),
            Some(KnownFailure::NoSuchProcess)
        );
        assert_eq!(
            classify(CriuReqType::Restore, Some(17), &[]),
            Some(KnownFailure::PidInUse)
        );
        assert_eq!(classify(CriuReqType::Dump, None, &["something else"]), None);
        assert_eq!(classify(CriuReqType::Restore, Some(3), &[]), None);
        assert_eq!(classify(CriuReqType::Dump, Some(17), &[]), None);
    }
}
