//! The client against a stand-in CRIU (`standin/main.rs`): no root, no CRIU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criu_rpc::{CallError, Criu, CriuBinary, CriuVersion, Features, TransportError};

/// A wrapper script that starts the stand-in with `scenario`, as the real
/// setup starts CRIU through a wrapper. Returns it and the request record.
fn standin(dir: &Path, scenario: &str) -> (Criu, PathBuf) {
    let record = dir.join(format!("{scenario}.requests"));
    let script = dir.join(format!("criu-{scenario}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nCRIU_STANDIN_RECORD='{}' exec '{}' '{scenario}' \"$@\"\n",
            record.display(),
            env!("CARGO_BIN_EXE_criu-standin"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (Criu::new(CriuBinary::at(script)), record)
}

#[test]
fn version_comes_from_the_rpc_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "criu-4.1.1");
    assert_eq!(criu.version().unwrap(), CriuVersion::new(4, 1, 1));
    let (old, _) = standin(dir.path(), "criu-3.17");
    let v = old.version().unwrap();
    assert_eq!(v.to_string(), "3.17.1");
    assert!(!v.is_supported());
}

#[test]
fn feature_check_returns_criu_answer_not_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "criu-4.1.1");
    // We ask for everything; the stand-in, like this kernel, has no soft-dirty.
    let got = criu.feature_check(Features::ALL).unwrap();
    assert_eq!(
        got,
        Features {
            mem_track: false,
            lazy_pages: true,
            pidfd_store: true
        }
    );
    let sent = std::fs::read_to_string(record).unwrap();
    assert!(
        sent.contains("mem_track: Some(true)"),
        "request must ask for mem_track: {sent}"
    );
}

#[test]
fn session_keeps_one_process_across_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "criu-4.1.1");
    let mut session = criu.session().unwrap();
    let pid = session.pid();
    assert_eq!(session.version().unwrap(), CriuVersion::new(4, 1, 1));
    assert!(session.feature_check(Features::ALL).unwrap().lazy_pages);
    assert_eq!(session.version().unwrap().major, 4);
    assert_eq!(session.pid(), pid);
    drop(session);
    let sent = std::fs::read_to_string(record).unwrap();
    assert_eq!(sent.lines().count(), 3);
    assert!(
        sent.lines().all(|l| l.contains("keep_open: Some(true)")),
        "{sent}"
    );
}

#[test]
fn criu_that_exits_at_once_is_a_typed_error_with_its_status_and_words() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "exit-now");
    let err = criu.version().unwrap_err();
    let criu_rpc::VersionError::Call(CallError::Transport(TransportError::Exited {
        status,
        output,
        ..
    })) = &err
    else {
        panic!("unexpected error: {err:?}");
    };
    assert_eq!(status.code(), Some(1));
    assert!(output.contains("stand-in refuses to start"), "{output}");
    let text = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        text.contains("exited with status 1 before answering"),
        "{text}"
    );
}

#[test]
fn crash_reports_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "crash");
    let err = criu.feature_check(Features::ALL).unwrap_err();
    let text = format!("{}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("killed by signal 6"), "{text}");
}

#[test]
fn missing_program_is_a_spawn_error_naming_it() {
    let criu = Criu::new(CriuBinary::at("/nonexistent/criu"));
    let err = criu.version().unwrap_err();
    let CallError::Transport(TransportError::Spawn { program, .. }) =
        std::error::Error::source(&err)
            .unwrap()
            .downcast_ref::<CallError>()
            .unwrap()
    else {
        panic!("{err:?}");
    };
    assert_eq!(program, Path::new("/nonexistent/criu"));
}

#[test]
fn timeout_kills_a_silent_criu() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "hang");
    let criu = criu.with_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let err = criu.version().unwrap_err();
    assert!(
        matches!(
            err,
            criu_rpc::VersionError::Call(CallError::Transport(TransportError::TimedOut { .. }))
        ),
        "{err:?}"
    );
    // Not a timing assertion on our speed: only that the deadline was used
    // rather than waiting for an hour-long sleep.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn large_answer_is_read_whole_and_failure_keeps_errno_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "big-error");
    let err = criu.version().unwrap_err();
    let criu_rpc::VersionError::Call(CallError::Failed(failure)) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(failure.errno, Some(22));
    let msg = failure.errmsg.as_deref().unwrap();
    assert!(
        msg.starts_with("huge failure") && msg.len() > 100 * 1024,
        "{}",
        msg.len()
    );
}

#[test]
fn answer_of_another_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "wrong-type");
    let err = criu.version().unwrap_err();
    assert!(
        matches!(
            err,
            criu_rpc::VersionError::Call(CallError::UnexpectedAnswer {
                request: "VERSION",
                answer: "DUMP"
            })
        ),
        "{err:?}"
    );
}

#[test]
fn notification_with_descriptor_is_received_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "notify-fd");
    // The stand-in only answers after our ack of its fd-carrying NOTIFY.
    assert_eq!(criu.version().unwrap().major, 4);
}

#[test]
fn kernel_probes_read_criu_check_output() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "criu-4.1.1");
    let check = criu.check_kernel().unwrap();
    assert!(check.ok);
    assert_eq!(check.reason(), Some("Looks good."));
    let dirty = criu
        .check_feature(criu_rpc::feature::MEM_DIRTY_TRACK)
        .unwrap();
    assert!(!dirty.ok);
    assert!(dirty.reason().unwrap().contains("Dirty tracking is OFF"));
    assert!(criu.check_feature(criu_rpc::feature::UFFD).unwrap().ok);
}

#[test]
fn dropping_a_session_kills_and_reaps_criu() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "criu-4.1.1");
    let mut session = criu.session().unwrap();
    session.version().unwrap();
    let pid = session.pid().unwrap();
    drop(session);
    // Reaped: no zombie or live process remains under that pid (pid reuse
    // within this instant is not a concern on a test machine).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(!status.contains("criu-standin"), "{status}");
}
