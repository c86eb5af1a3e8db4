//! Every recognised failure against the log lines CRIU really writes.
//!
//! The logs below are excerpts of CRIU logs at the default level (`-v2`,
//! as crabmigrate asks). "4.2.1" ones were provoked on the project's
//! machine (Linux 6.18, CRIU 4.2.1 from Debian) with the CRIU command line
//! and are copied verbatim. "4.1.1" ones carry the message the field notes
//! and issues quote, placed at the source location that prints it in
//! CRIU v4.1.1 (`git grep` in checkpoint-restore/criu); the classification
//! reads only the message. Each names the situation that produced it.

use criu_rpc::failure::{
    classify_output, diagnose, is_consequence, FailureContext, KnownFailure, LogLines,
};
use criu_rpc::proto::rpc::CriuReqType;

/// One real failure: the CRIU that wrote it, the request, whether pages
/// went to a page server, the log, the cause expected and the line that
/// must lead the message.
struct Case {
    criu: &'static str,
    situation: &'static str,
    request: CriuReqType,
    page_server: bool,
    log: &'static str,
    want: KnownFailure,
    headline: Option<&'static str>,
}

const RLIMIT: &str = "Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n";

fn cases() -> Vec<Case> {
    use CriuReqType::{Dump, Restore};
    vec![
        Case {
            criu: "4.2.1",
            situation: "dump --page-server to a port nobody listens on",
            request: Dump,
            page_server: true,
            log: "Error (compel/src/lib/infect.c:417): Unable to detach from 19953: No such process\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::PageServerUnreachable,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "dump of a pid that does not exist",
            request: Dump,
            page_server: false,
            log: "Warn  (compel/src/lib/infect.c:132): Unable to interrupt task: 31999 (No such process)\n\
                  Error (compel/src/lib/infect.c:417): Unable to detach from 31999: No such process\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::NoSuchProcess,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "dump to a page server of a pid that does not exist",
            request: Dump,
            page_server: true,
            log: "Warn  (compel/src/lib/infect.c:132): Unable to interrupt task: 31999 (No such process)\n\
                  Error (compel/src/lib/infect.c:417): Unable to detach from 31999: No such process\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::NoSuchProcess,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "a setsid tree whose stdio is a pty of the caller, no --shell-job",
            request: Dump,
            page_server: false,
            log: "Warn  (compel/arch/x86/src/lib/infect.c:419): Will restore 20718 with interrupted system call\n\
                  Error (criu/tty.c:410): tty: Found slave peer index 0 without correspond master peer\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::TerminalOutsideTree,
            headline: Some("tty: Found slave peer index 0 without correspond master peer"),
        },
        Case {
            criu: "4.1.1",
            situation: "a detached container whose stderr is the caller's terminal",
            request: Dump,
            page_server: false,
            log: "Error (criu/files-reg.c:1790): Can't lookup mount=29 for fd=2 path=/dev/pts/0\n\
                  Error (criu/cr-dump.c:1681): Dump files (pid: 4242) failed with -1\n\
                  Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
            want: KnownFailure::TerminalOutsideTree,
            headline: Some("Can't lookup mount=29 for fd=2 path=/dev/pts/0"),
        },
        Case {
            criu: "4.1.1",
            situation: "a tree in its own mount namespace with a host file open",
            request: Dump,
            page_server: false,
            log: "Error (criu/files-reg.c:1790): Can't lookup mount=31 for fd=0 path=/dev/null\n\
                  Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
            want: KnownFailure::MountNotDumped,
            headline: Some("Can't lookup mount=31 for fd=0 path=/dev/null"),
        },
        Case {
            criu: "4.2.1",
            situation: "restore of an external terminal without a terminal given",
            request: Restore,
            page_server: false,
            log: " 20717: Error (criu/config.c:442): Deprecated functionality (TTY w/o regfile) rejected.\n \
                  20717: Error (criu/config.c:443): Use the --deprecated option or set CRIU_DEPRECATED environment.\n \
                  20717: Error (criu/config.c:444): For details visit https://criu.org/Deprecation\n\
                  Error (criu/cr-restore.c:2331): Restoring FAILED.\n",
            want: KnownFailure::TerminalNotGiven,
            headline: Some("Deprecated functionality (TTY w/o regfile) rejected."),
        },
        Case {
            criu: "4.2.1",
            situation: "restore of an external terminal given /dev/null in its place",
            request: Restore,
            page_server: false,
            log: " 20717: Error (criu/tty.c:850): tty: Can't set tty params on 0x4: Inappropriate ioctl for device\n \
                  20717: Error (criu/files.c:1221): Unable to open fd=0 id=0x4\n\
                  Error (criu/cr-restore.c:1265): 20717 exited, status=1\n\
                  Error (criu/cr-restore.c:2331): Restoring FAILED.\n",
            want: KnownFailure::TerminalNotGiven,
            headline: Some("tty: Can't set tty params on 0x4: Inappropriate ioctl for device"),
        },
        Case {
            criu: "4.2.1",
            situation: "a tree whose root is not a session leader",
            request: Dump,
            page_server: false,
            log: "Warn  (compel/arch/x86/src/lib/infect.c:419): Will restore 32022 with interrupted system call\n\
                  Error (criu/pstree.c:304): The root process 32022 is not a session leader. Consider using --shell-job option\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::NotSessionLeader,
            headline: None,
        },
        Case {
            criu: "4.1.1",
            situation: "a tree whose session leader is outside its pid namespace",
            request: Dump,
            page_server: false,
            log: "Error (criu/cr-dump.c:1664): A session leader of 77(77) is outside of its pid namespace\n\
                  Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
            want: KnownFailure::SessionLeaderOutside,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "a tree with an established TCP connection, no --tcp-established",
            request: Dump,
            page_server: false,
            log: "Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.\n\
                  Error (criu/cr-dump.c:1545): Dump files (pid: 32498) failed with -1\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::TcpEstablishedNeeded,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "--tcp-established with PATH=/nonexistent (no iptables-restore, no sh)",
            request: Dump,
            page_server: false,
            log: "Error (criu/util.c:642): execvp(\"sh\", ...) failed: No such file or directory\n\
                  Error (criu/util.c:657): exited, status=1\n\
                  Error (criu/netfilter.c:105): Iptables configuration failed\n\
                  Error (criu/sk-tcp.c:81): tcp: Failed to lock TCP connection babe\n\
                  Error (criu/cr-dump.c:1545): Dump files (pid: 32498) failed with -1\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::NetworkLockFailed,
            headline: Some("execvp(\"sh\", ...) failed: No such file or directory"),
        },
        Case {
            criu: "4.1.1",
            situation: "a tree with its own network namespace, iptables missing",
            request: Dump,
            page_server: false,
            log: "Error (criu/net.c:3282): Locking network failed: iptables-restore returned -1. This may be connected to disabled CONFIG_NETFILTER_XT_MARK kernel build config option.\n\
                  Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
            want: KnownFailure::NetworkLockFailed,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "restore of a TCP connection whose address is in another network namespace",
            request: Restore,
            page_server: false,
            log: "   646: Error (criu/sk-inet.c:1059): inet: Can't bind inet socket (id 26): Cannot assign requested address\n   \
                  646: Error (criu/files.c:1221): Unable to open fd=3 id=0x1a\n\
                  Error (criu/cr-restore.c:2331): Restoring FAILED.\n",
            want: KnownFailure::AddressNotAvailable,
            headline: Some("inet: Can't bind inet socket (id 26): Cannot assign requested address"),
        },
        Case {
            criu: "4.2.1",
            situation: "restore without --tcp-close of a checkpoint taken with it",
            request: Restore,
            page_server: false,
            log: "Error (criu/image.c:94): Need to set the --tcp-close options.\n",
            want: KnownFailure::TcpCloseNeeded,
            headline: Some("Need to set the --tcp-close options."),
        },
        Case {
            criu: "4.1.1",
            situation: "a Redis server (TCP listener) on Linux 6.18",
            request: Dump,
            page_server: false,
            log: "Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: Operation not supported\n\
                  Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
            want: KnownFailure::InetSocketsUnsupported,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "a tree holding one end of a socketpair whose other end is outside",
            request: Dump,
            page_server: false,
            log: "Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::ExternalUnixSocket,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "a tree holding a flock, no --file-locks",
            request: Dump,
            page_server: false,
            log: "Error (criu/file-lock.c:110): Some file locks are hold by dumping tasks! You can try --file-locks to dump them.\n\
                  Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
            want: KnownFailure::FileLocksHeld,
            headline: None,
        },
        Case {
            criu: "4.1.1",
            situation: "a workload whose executable was replaced while it ran",
            request: Dump,
            page_server: false,
            log: "Error (criu/files-reg.c:1122): Can't create link remap for /work/target/debug/crabmigrate-workload. Use link-remap option.\n\
                  Error (criu/cr-dump.c:2111): Dumping FAILED.\n",
            want: KnownFailure::LinkRemapNeeded,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "restore while the original process still lives (a zombie)",
            request: Restore,
            page_server: false,
            log: "Error (criu/cr-restore.c:1237): Can't fork for 20717: File exists\n\
                  Error (criu/cr-restore.c:2331): Restoring FAILED.\n",
            want: KnownFailure::PidInUse,
            headline: Some("Can't fork for 20717: File exists"),
        },
        Case {
            criu: "4.2.1",
            situation: "restore of a checkpoint whose inventory.img is cut to 5 bytes",
            request: Restore,
            page_server: false,
            log: "Error (criu/protobuf.c:76): Read 1 bytes while 4 expected on /tmp/nc-logs/ti/inventory.img: Operation not permitted\n",
            want: KnownFailure::BadImages,
            headline: None,
        },
        Case {
            criu: "4.2.1",
            situation: "restore of a checkpoint without core images",
            request: Restore,
            page_server: false,
            log: "Error (criu/protobuf.c:72): Unexpected EOF on (empty-image)\n\
                  Error (criu/cr-restore.c:2331): Restoring FAILED.\n",
            want: KnownFailure::BadImages,
            headline: None,
        },
        Case {
            criu: "4.1.1",
            situation: "pre-dump on a kernel without soft-dirty bits (a warning)",
            request: CriuReqType::PreDump,
            page_server: false,
            log: "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n",
            want: KnownFailure::NoMemoryTracking,
            headline: None,
        },
        Case {
            criu: "4.1.1",
            situation: "a lazy dump serving pages with fs.pipe-max-size at 1 MiB",
            request: Dump,
            page_server: false,
            log: "Error (criu/page-pipe.c:424): splice: -1: Bad file descriptor\n",
            want: KnownFailure::LazyPagesPipeTooSmall,
            headline: None,
        },
    ]
}

fn log_with_rlimit(case: &Case) -> String {
    // Every run on these hosts starts with the harmless RLIMIT line.
    format!("{RLIMIT}{}", case.log)
}

#[test]
fn every_real_log_names_its_cause() {
    for case in cases() {
        let log = LogLines::parse(&log_with_rlimit(&case));
        let context = FailureContext {
            request: case.request,
            errno: None,
            page_server: case.page_server,
        };
        let diagnosis = diagnose(&context, None, &log);
        assert_eq!(
            diagnosis.known,
            Some(case.want),
            "CRIU {}: {}",
            case.criu,
            case.situation
        );
        if let Some(headline) = case.headline {
            assert_eq!(
                diagnosis.first_error.as_deref(),
                Some(headline),
                "CRIU {}: {}",
                case.criu,
                case.situation
            );
        }
        if let Some(first) = &diagnosis.first_error {
            assert!(!is_consequence(first), "{first}");
            assert!(!first.contains("RLIMIT"), "{first}");
        }
    }
}

#[test]
fn every_known_failure_except_the_transport_ones_has_a_real_log() {
    let covered: std::collections::HashSet<KnownFailure> = cases().iter().map(|c| c.want).collect();
    for known in KnownFailure::ALL {
        let transport = matches!(
            known,
            KnownFailure::NoPrivilege | KnownFailure::CriuCrashed | KnownFailure::GhostFileTooBig
        );
        assert!(
            covered.contains(&known) || transport,
            "{known:?} has no real log line in this test"
        );
    }
}

#[test]
fn a_detach_error_alone_never_blames_the_pid() {
    // What CRIU logs when the page server is not there: the "No such
    // process" is about the parasite, not the workload.
    let log = LogLines::parse(
        "Error (compel/src/lib/infect.c:417): Unable to detach from 19953: No such process\n\
         Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
    );
    let plain = diagnose(&FailureContext::new(CriuReqType::Dump), None, &log);
    assert_ne!(plain.known, Some(KnownFailure::NoSuchProcess));
    assert_eq!(plain.first_error, None);
}

#[test]
fn non_root_criu_output_is_a_privilege_failure() {
    // What CRIU 4.2.1 prints on stdout when started as nobody (then exits 1).
    let output =
        "CRIU needs to have the CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE capability: \n\
                  setcap cap_checkpoint_restore+eip /opt/crabmigrate/criu/usr/sbin/criu";
    assert_eq!(classify_output(output), Some(KnownFailure::NoPrivilege));
    assert_eq!(classify_output("Looks good."), None);
}

#[test]
fn ghost_file_limit_line_is_recognised() {
    // criu/files-reg.c, unchanged from 4.1.1 to 4.2.1.
    let line = "Can't dump ghost file /tmp/big of 2101248 size, increase limit";
    assert_eq!(
        criu_rpc::failure::classify_line(CriuReqType::Dump, line),
        Some(KnownFailure::GhostFileTooBig)
    );
}
