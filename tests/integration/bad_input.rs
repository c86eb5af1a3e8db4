//! Bad input to checkpoint and restore against the real CRIU: a missing or
//! empty images directory, a process that does not exist, a truncated
//! `inventory.img`, a missing parent directory and a page-server address
//! without a port. Each gives exit status 1 and one line on stderr starting
//! `crabmigrate: error:`, never a panic, and leaves the workload alone.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use criu_rpc::{DumpRequest, KnownFailure, RestoreRequest};
use testkit::{KillOnDrop, Tick, Workload};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `crabmigrate ARGS`, which must fail cleanly, and returns its one
/// line of error output.
fn one_error_line(args: &[&str]) -> String {
    let out = testkit::run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: exit status; {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("crabmigrate: error: "),
        "{args:?}: {stderr}"
    );
    lines[0].to_owned()
}

/// The workload is still the same process and still counting.
fn assert_untouched(workload: &Workload, pid: u32) {
    let now = workload.tick();
    let later = workload.wait_tick(now.counter + 2, LIMIT);
    assert_eq!(later.pid, pid);
    assert_eq!(workload.pid(), pid);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "workload {pid} is gone"
    );
}

/// The pid of a child that has exited and been reaped, so no process has it.
fn vanished_pid() -> u32 {
    for _ in 0..10 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return pid;
        }
    }
    panic!("every reaped pid was reused at once");
}

#[test]
fn restore_from_a_missing_images_dir() {
    let Some(_criu) = testkit::real_criu("restore_from_a_missing_images_dir") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let line = one_error_line(&["restore", "--images-dir", missing.to_str().unwrap()]);
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    assert!(line.contains("does not exist"), "{line}");
    assert!(!missing.exists(), "restore must not create the directory");
}

#[test]
fn restore_from_an_empty_images_dir() {
    let Some(_criu) = testkit::real_criu("restore_from_an_empty_images_dir") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let line = one_error_line(&["restore", "--images-dir", tmp.path().to_str().unwrap()]);
    assert!(line.contains("no checkpoint"), "{line}");
    assert!(line.contains("inventory.img"), "{line}");
}

#[test]
fn checkpoint_of_a_process_that_does_not_exist() {
    let Some(_criu) = testkit::real_criu("checkpoint_of_a_process_that_does_not_exist") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    // A reaped child's pid, and one above any pid_max.
    for pid in [vanished_pid().to_string(), "4000000".to_owned()] {
        let line = one_error_line(&[
            "checkpoint",
            "--pid",
            &pid,
            "--images-dir",
            images.to_str().unwrap(),
        ]);
        assert!(
            line.contains(&format!("process {pid} does not exist")),
            "{line}"
        );
    }
}

#[test]
fn library_dump_of_a_missing_process_is_classified() {
    let Some(criu) = testkit::real_criu("library_dump_of_a_missing_process_is_classified") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let images = File::open(tmp.path()).unwrap();
    let pid = vanished_pid();
    let err = criu
        .dump(&DumpRequest::new(pid, images.as_fd()), None)
        .expect_err("no such process");
    assert_eq!(err.pid, pid);
    assert_eq!(
        err.source.known_failure(),
        Some(KnownFailure::NoSuchProcess),
        "{:?}",
        err.source
    );
}

#[test]
fn restore_from_a_truncated_inventory_fails_cleanly() {
    let Some(criu) = testkit::real_criu("restore_from_a_truncated_inventory_fails_cleanly") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&good).unwrap();
    std::fs::create_dir(&bad).unwrap();
    let mut workload = Workload::start(4, &state);
    let pid = workload.pid();
    workload.wait_tick(2, LIMIT);
    let images = File::open(&good).unwrap();
    criu.dump(&DumpRequest::new(pid, images.as_fd()), None)
        .expect("dump");
    workload.reap();
    let at_dump = Tick::read(&state).unwrap();

    for entry in std::fs::read_dir(&good).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bad.join(entry.file_name())).unwrap();
    }
    let inventory = bad.join("inventory.img");
    File::options()
        .write(true)
        .open(&inventory)
        .unwrap()
        .set_len(5)
        .unwrap();

    // Whatever comes back under the pid must not outlive the test.
    let _guard = KillOnDrop(pid as i32);
    let line = one_error_line(&["restore", "--images-dir", bad.to_str().unwrap(), "--detach"]);
    // CRIU 4.1.1 says "Read 1 bytes while 4 expected on .../inventory.img"
    // (with a stale errno); crabmigrate recognises broken images.
    assert!(line.contains("inventory.img"), "{line}");
    assert!(line.contains("no complete checkpoint"), "{line}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{line}");

    // The library classifies it the same way.
    let bad_dir = File::open(&bad).unwrap();
    let err = criu
        .restore(&RestoreRequest::new(bad_dir.as_fd()), None)
        .expect_err("truncated inventory");
    assert_eq!(
        err.source.known_failure(),
        Some(KnownFailure::BadImages),
        "{:?}",
        err.source
    );

    // The failed attempts left nothing behind: the intact images restore.
    let restored = criu
        .restore(&RestoreRequest::new(images.as_fd()), None)
        .expect("restore of the intact images");
    assert_eq!(restored.pid, pid as i32);
    let after = testkit::wait_until(LIMIT, || {
        Tick::read(&state).filter(|t| t.counter > at_dump.counter)
    })
    .expect("the restored workload counts on");
    assert_eq!(after.pid, pid);
}

#[test]
fn checkpoint_with_a_missing_parent_dir() {
    let Some(_criu) = testkit::real_criu("checkpoint_with_a_missing_parent_dir") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let workload = Workload::start(1, &tmp.path().join("state"));
    let pid = workload.pid();
    let images = tmp.path().join("images");
    let parent = tmp.path().join("no-such-parent");
    let line = one_error_line(&[
        "checkpoint",
        "--pid",
        &pid.to_string(),
        "--images-dir",
        images.to_str().unwrap(),
        "--parent-dir",
        parent.to_str().unwrap(),
    ]);
    assert!(line.contains("parent images directory"), "{line}");
    assert!(line.contains(parent.to_str().unwrap()), "{line}");
    assert!(line.contains("does not exist"), "{line}");
    assert_untouched(&workload, pid);
}

#[test]
fn checkpoint_to_a_page_server_without_a_port() {
    let Some(_criu) = testkit::real_criu("checkpoint_to_a_page_server_without_a_port") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let workload = Workload::start(1, &tmp.path().join("state"));
    let pid = workload.pid();
    let images = tmp.path().join("images");
    let line = one_error_line(&[
        "checkpoint",
        "--pid",
        &pid.to_string(),
        "--images-dir",
        images.to_str().unwrap(),
        "--page-server",
        "nohost",
    ]);
    assert!(line.contains("\"nohost\" is not HOST:PORT"), "{line}");
    assert!(
        !images.exists(),
        "a refused address must leave no directory"
    );
    assert_untouched(&workload, pid);
}
