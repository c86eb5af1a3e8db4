//! The client against a stand-in CRIU (`standin/main.rs`): no root, no CRIU.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use criu_rpc::proto::prost::Message;
use criu_rpc::proto::rpc::{CriuReq, CriuReqType};
use criu_rpc::{
    AsyncCriu, CallError, CancelToken, Criu, CriuBinary, CriuVersion, DumpRequest, External,
    Features, Notify, NotifyError, NotifyResult, PageServerTarget, PreDumpError, PreDumpRequest,
    Recorder, RequestError, RestoreRequest, TransportError,
};

/// The requests the stand-in received, decoded.
fn requests(record: &Path) -> Vec<CriuReq> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("req "))
        .map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            CriuReq::decode(&bytes[..]).unwrap()
        })
        .collect()
}

fn kinds(reqs: &[CriuReq]) -> Vec<CriuReqType> {
    reqs.iter().map(CriuReq::r#type).collect()
}

/// The stand-in's pid, as it recorded it.
fn standin_pid(record: &Path) -> Option<i32> {
    std::fs::read_to_string(record)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("pid ")?.parse().ok())
}

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
    let sent = requests(&record);
    assert_eq!(kinds(&sent), vec![CriuReqType::FeatureCheck]);
    let asked = sent[0].features.unwrap();
    assert_eq!(
        (asked.mem_track, asked.lazy_pages),
        (Some(true), Some(true))
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
    let sent = requests(&record);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|r| r.keep_open == Some(true)), "{sent:?}");
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

#[test]
fn pre_dump_rounds_then_final_dump_compose_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "soft-dirty");
    let images: Vec<std::fs::File> = (1..=3)
        .map(|i| {
            let path = dir.path().join(i.to_string());
            std::fs::create_dir(&path).unwrap();
            std::fs::File::open(path).unwrap()
        })
        .collect();
    let mut session = criu.session().unwrap();
    for (round, parent) in [(0, None), (1, Some("../1"))] {
        let mut pre = PreDumpRequest::new(77, images[round].as_fd());
        pre.options.parent_img = parent.map(str::to_owned);
        pre.options.page_server = Some(PageServerTarget::Address {
            address: "10.9.0.2",
            port: 27,
        });
        session.pre_dump(&pre).unwrap();
    }
    let mut dump = DumpRequest::new(77, images[2].as_fd());
    dump.options.parent_img = Some("../2".into());
    dump.options.tcp_established = true;
    let mut steps = Recorder::default();
    session.dump(&dump, Some(&mut steps)).unwrap();

    let sent = requests(&record);
    use CriuReqType::*;
    assert_eq!(
        kinds(&sent),
        vec![
            Version,
            FeatureCheck,
            PreDump,
            FeatureCheck,
            PreDump,
            Dump,
            Notify,
            Notify,
            Notify
        ]
    );
    assert_eq!(
        sent[0].keep_open,
        Some(true),
        "the version probe keeps the session"
    );
    let first = sent[2].opts.as_ref().unwrap();
    assert_eq!(first.pid, Some(77));
    assert_eq!(first.track_mem, Some(true));
    assert_eq!(first.parent_img, None);
    assert_eq!(first.images_dir_fd, images[0].as_raw_fd());
    let ps = first.ps.as_ref().unwrap();
    assert_eq!(
        (ps.address.as_deref(), ps.port),
        (Some("10.9.0.2"), Some(27))
    );
    assert_eq!(
        sent[4].opts.as_ref().unwrap().parent_img.as_deref(),
        Some("../1")
    );
    let last = sent[5].opts.as_ref().unwrap();
    assert_eq!(last.parent_img.as_deref(), Some("../2"));
    assert_eq!(
        last.notify_scripts,
        Some(true),
        "a handler turns notifications on"
    );
    assert_eq!(last.tcp_established, Some(true));
    assert_eq!(last.leave_running, None);
    assert_eq!(
        steps.scripts,
        vec!["pre-dump", "query-ext-files", "post-dump"]
    );
}

#[test]
fn pre_dump_without_memory_tracking_is_refused_before_criu_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "criu-4.1.1");
    let images = std::fs::File::open(dir.path()).unwrap();
    let err = criu
        .session()
        .unwrap()
        .pre_dump(&PreDumpRequest::new(77, images.as_fd()))
        .unwrap_err();
    assert!(
        matches!(err, PreDumpError::NoMemoryTracking { pid: 77 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("post-copy"), "{err}");
    let sent = kinds(&requests(&record));
    assert!(
        !sent.contains(&CriuReqType::PreDump),
        "no PRE_DUMP may reach CRIU: {sent:?}"
    );
    let err = criu
        .single_pre_dump(&PreDumpRequest::new(77, images.as_fd()))
        .unwrap_err();
    assert!(
        matches!(err, PreDumpError::NoMemoryTracking { .. }),
        "{err:?}"
    );
}

struct RefusePostDump;

impl Notify for RefusePostDump {
    fn post_dump(&mut self) -> NotifyResult {
        Err("refused by the test".into())
    }
}

#[test]
fn failing_handler_aborts_and_is_the_reported_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "criu-4.1.1");
    let images = std::fs::File::open(dir.path()).unwrap();
    let err = criu
        .dump(
            &DumpRequest::new(5, images.as_fd()),
            Some(&mut RefusePostDump),
        )
        .unwrap_err();
    let RequestError::Handler { script, source } = &err.source else {
        panic!("{err:?}");
    };
    assert_eq!(script, "post-dump");
    assert_eq!(source.to_string(), "refused by the test");
    let acks: Vec<Option<bool>> = requests(&record)
        .iter()
        .filter(|r| r.r#type() == CriuReqType::Notify)
        .map(|r| r.notify_success)
        .collect();
    assert_eq!(acks, vec![Some(true), Some(true), Some(false)]);
}

struct AddExternals;

impl Notify for AddExternals {
    fn query_ext_files(&mut self) -> Result<Vec<External>, NotifyError> {
        Ok(vec![External::unix_socket(12345)])
    }
}

#[test]
fn query_ext_files_answer_carries_extra_externals() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "criu-4.1.1");
    let images = std::fs::File::open(dir.path()).unwrap();
    criu.dump(
        &DumpRequest::new(5, images.as_fd()),
        Some(&mut AddExternals),
    )
    .unwrap();
    let sent = requests(&record);
    let ack = sent
        .iter()
        .filter(|r| r.r#type() == CriuReqType::Notify)
        .nth(1)
        .unwrap();
    assert_eq!(ack.opts.as_ref().unwrap().external, vec!["unix[12345]"]);
}

#[test]
fn restore_returns_the_pid_and_tells_post_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "criu-4.1.1");
    let images = std::fs::File::open(dir.path()).unwrap();
    let mut steps = Recorder::default();
    let outcome = criu
        .restore(&RestoreRequest::new(images.as_fd()), Some(&mut steps))
        .unwrap();
    assert_eq!(outcome.pid, 4242);
    assert_eq!(steps.restored_pid, Some(4242));
    assert_eq!(
        steps.scripts,
        vec!["pre-restore", "post-restore", "pre-resume", "post-resume"]
    );
}

#[test]
fn criu_older_than_4_is_refused_before_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "criu-3.17");
    let images = std::fs::File::open(dir.path()).unwrap();
    let err = criu
        .dump(&DumpRequest::new(5, images.as_fd()), None)
        .unwrap_err();
    assert!(
        matches!(err.source, RequestError::Unsupported { .. }),
        "{err:?}"
    );
    assert!(err.source.to_string().contains("3.17.1"));
    assert_eq!(kinds(&requests(&record)), vec![CriuReqType::Version]);
}

#[test]
fn session_requests_cannot_pass_new_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "soft-dirty");
    let images = std::fs::File::open(dir.path()).unwrap();
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut dump = DumpRequest::new(5, images.as_fd());
    dump.options.page_server = Some(PageServerTarget::Socket(sock.as_fd()));
    let err = criu.session().unwrap().dump(&dump, None).unwrap_err();
    assert!(matches!(err.source, RequestError::Options(_)), "{err:?}");
}

#[test]
fn cancel_token_stops_a_running_call_and_kills_criu() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, record) = standin(dir.path(), "hang");
    let token = CancelToken::new().unwrap();
    let criu = criu.with_cancel(token.clone());
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        token.cancel();
    });
    let err = criu.version().unwrap_err();
    canceller.join().unwrap();
    assert!(
        matches!(
            err,
            criu_rpc::VersionError::Call(CallError::Transport(TransportError::Cancelled))
        ),
        "{err:?}"
    );
    assert_process_gone(&record);
}

#[tokio::test]
async fn dropping_the_async_future_kills_criu() {
    let dir = tempfile::tempdir().unwrap();
    let (criu, _) = standin(dir.path(), "criu-4.1.1");
    let async_criu = AsyncCriu::new(criu);
    assert_eq!(
        async_criu.version().await.unwrap(),
        CriuVersion::new(4, 1, 1)
    );

    let (hanging, record) = standin(dir.path(), "hang");
    let async_criu = AsyncCriu::new(hanging);
    let waited = tokio::time::timeout(Duration::from_millis(300), async_criu.version()).await;
    assert!(waited.is_err(), "the stand-in never answers");
    assert_process_gone(&record);
}

/// The stand-in recorded in `record` is gone (killed and reaped) soon.
fn assert_process_gone(record: &Path) {
    let until = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = standin_pid(record) {
            break pid;
        }
        assert!(Instant::now() < until, "the stand-in never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < until, "stand-in {pid} still exists");
        std::thread::sleep(Duration::from_millis(10));
    }
}
