//! A dump streams its pages to a page server in another network namespace,
//! and a restore from the received images works.
//!
//! Two "hosts" (namespaces `src` and `dst`, joined by a veth). The workload
//! and the dumping CRIU run in `src`; the page server (PAGE_SERVER_CHLD)
//! and the restoring CRIU run in `dst`. The page server writes
//! `pagemap-*.img` and `pages-*.img` into its directory, the source keeps
//! every other image, so the source's images are copied over before the
//! restore, as a migration would. Checked: the page server's WAIT_PID
//! status, which images ended up where, that the restored workload lives in
//! `dst`, continues counting and holds the same memory. Once through the
//! library and once through `crabmigrate page-server`/`checkpoint`/`restore`.
//! Also: a child-mode page server whose session is dropped without WAIT_PID
//! does not stay behind.
//!
//! This module also holds the helpers the migration tests share (copying
//! images, error messages with CRIU's log tails, process guards, the
//! workload inside a namespace).

use std::fs::File;
use std::io::BufRead;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use criu_rpc::{CancelToken, DumpRequest, PageServerRequest, PageServerTarget, RestoreRequest};
use testkit::{KillOnDrop, Tick, Workload};

use crate::netns::{NetNs, TwoHosts};

/// Generous bound for anything that should take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Copies every regular file of `from` that `to` lacks; returns the names.
pub fn copy_images(from: &Path, to: &Path) -> Vec<String> {
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().unwrap().is_file() || to.join(&name).exists() {
            continue;
        }
        std::fs::copy(entry.path(), to.join(&name)).unwrap();
        copied.push(name);
    }
    copied.sort();
    copied
}

/// File names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An error with its whole chain of causes, then the end of every CRIU log
/// in `dirs` (the temporary directories are gone once the test unwinds, so
/// a failure message must carry them).
pub fn explain(error: &dyn std::error::Error, dirs: &[&Path]) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text + &log_tails(dirs)
}

/// The end of every CRIU log in `dirs`.
pub fn log_tails(dirs: &[&Path]) -> String {
    let mut text = String::new();
    for dir in dirs {
        for name in names(dir).into_iter().filter(|n| n.ends_with(".log")) {
            let log = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            text.push_str(&format!("\n--- {}/{name} ---\n{tail}", dir.display()));
        }
    }
    text
}

/// A child process killed and reaped on drop (unless waited for).
#[derive(Debug)]
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Starts `cmd`.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(Some(cmd.spawn().expect("program starts")))
    }

    /// The child.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not waited for yet")
    }

    /// Waits for it and returns its status and remaining standard output.
    pub fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.0.take().expect("not waited for yet");
        let mut rest = String::new();
        if let Some(mut out) = child.stdout.take() {
            std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        }
        (child.wait().unwrap(), rest)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Cancels a token on drop, so that a CRIU call running on another thread
/// stops when the test ends early.
#[derive(Debug)]
pub struct CancelOnDrop(pub CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Lines a child writes to a pipe, delivered through a channel by a reader
/// thread (which ends with the pipe).
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; panics with what came instead.
pub fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, what: &str) -> String {
    let mut seen = Vec::new();
    let until = std::time::Instant::now() + PATIENCE;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("{what}: no line with {needle:?} ({e}); got: {seen:?}"),
        }
    }
}

/// A private copy of `crabmigrate-workload` in `dir` (see
/// [`testkit::private_copy`]).
pub fn workload_program(dir: &Path) -> PathBuf {
    testkit::private_copy("crabmigrate-workload", dir)
}

/// The workload (`mem_mib` MiB, own session) started inside `ns`, run from
/// a copy in `state`'s directory.
pub fn workload_in(ns: &NetNs, mem_mib: usize, state: &Path) -> Workload {
    let program = workload_program(state.parent().unwrap());
    let mut cmd = ns.command(program);
    cmd.args(["--setsid", "--mem-mib", &mem_mib.to_string(), "--out"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Workload::spawn(cmd, state)
}

/// Whether process `pid` lives in network namespace `ns`.
pub fn lives_in(pid: i32, ns: &NetNs) -> bool {
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    let wanted = std::fs::metadata(ns.path()).unwrap();
    (theirs.dev(), theirs.ino()) == (wanted.dev(), wanted.ino())
}

/// Waits until the workload writing `state` has counted past `last` and
/// returns that tick.
pub fn continued(state: &Path, last: &Tick) -> Tick {
    testkit::wait_until(PATIENCE, || {
        Tick::read(state).filter(|t| t.counter > last.counter)
    })
    .unwrap_or_else(|| {
        panic!(
            "the restored workload did not count past {}; state: {:?}",
            last.counter,
            Tick::read(state)
        )
    })
}

struct Dirs {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    state: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new()
        .prefix("crabmigrate-ps-")
        .tempdir()
        .unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    Dirs {
        state: tmp.path().join("state"),
        src,
        dst,
        _tmp: tmp,
    }
}

fn is_page_image(name: &str) -> bool {
    name.starts_with("pages-") || name.starts_with("pagemap-")
}

#[test]
fn dump_streams_pages_to_a_page_server_in_another_netns() {
    let Some(criu) = testkit::real_criu("dump_streams_pages_to_a_page_server_in_another_netns")
    else {
        return;
    };
    let hosts = TwoHosts::new("ps");
    let d = dirs();
    let src_criu = hosts.src.criu(&criu);
    let dst_criu = hosts.dst.criu(&criu);

    let mut workload = workload_in(&hosts.src, 16, &d.state);
    let pid = workload.pid();
    let before = workload.wait_tick(3, PATIENCE);

    // The page server listens in dst on its end of the link.
    let dst_images = File::open(&d.dst).unwrap();
    let request = PageServerRequest::listen(dst_images.as_fd(), &hosts.veth.b_addr, 0);
    let (session, info) = dst_criu
        .page_server(&request)
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[&d.dst])));
    assert_ne!(info.port, 0, "the kernel-chosen port is reported");
    // Dropping the session (a failed test) kills it; see the last test.
    let server_pid = info.pid.expect("a child-mode page server reports its pid");

    let src_images = File::open(&d.src).unwrap();
    let mut dump = DumpRequest::new(pid, src_images.as_fd());
    dump.options.page_server = Some(PageServerTarget::Address {
        address: &hosts.veth.b_addr,
        port: info.port,
    });
    let outcome = src_criu
        .dump(&dump, None)
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[&d.src, &d.dst])));
    let status = session
        .wait_pid(server_pid)
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[&d.dst])));
    assert!(status.success(), "page server ended with {status}");
    let last = Tick::read(&d.state).unwrap();
    let killed = workload.reap();
    assert!(!killed.success(), "CRIU killed the dumped workload");

    // The pages went over the link; the source kept the rest.
    let stats = outcome.stats.expect("stats-dump");
    assert!(
        stats.pages_written >= 16 * 256,
        "16 MiB were sent: {stats:?}"
    );
    let received = names(&d.dst);
    assert!(
        received.iter().any(|n| n.starts_with("pages-")),
        "{received:?}"
    );
    assert!(
        received.iter().any(|n| n.starts_with("pagemap-")),
        "{received:?}"
    );
    let kept = names(&d.src);
    assert!(
        !kept.iter().any(|n| n.starts_with("pages-")),
        "the source wrote no pages itself: {kept:?}"
    );
    let copied = copy_images(&d.src, &d.dst);
    assert!(copied.iter().any(|n| n == "inventory.img"), "{copied:?}");
    assert!(copied.iter().all(|n| !is_page_image(n)), "{copied:?}");

    let restored = dst_criu
        .restore(&RestoreRequest::new(dst_images.as_fd()), None)
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[&d.dst])));
    let _restored = KillOnDrop(restored.pid);
    assert_eq!(restored.pid, pid as i32, "same pid namespace, same pid");
    assert!(
        lives_in(restored.pid, &hosts.dst),
        "restored on the dst host"
    );
    let after = continued(&d.state, &last);
    assert_eq!(after.checksum, before.checksum, "memory arrived intact");
    assert_eq!(after.pid, pid);
}

#[test]
fn cli_page_server_receives_a_checkpoint_from_another_netns() {
    let Some(_criu) =
        testkit::real_criu("cli_page_server_receives_a_checkpoint_from_another_netns")
    else {
        return;
    };
    let hosts = TwoHosts::new("pscli");
    let d = dirs();
    let mut workload = workload_in(&hosts.src, 16, &d.state);
    let pid = workload.pid();
    let before = workload.wait_tick(3, PATIENCE);

    let mut server = ChildGuard::spawn(
        hosts
            .dst
            .command(testkit::program("crabmigrate"))
            .args(["page-server", "--images-dir"])
            .arg(&d.dst)
            .args(["--address", &hosts.veth.b_addr, "--port", "0", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut first = String::new();
    std::io::BufReader::new(server.child().stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let announced: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("page-server printed {first:?}: {e}"));
    assert_eq!(announced["address"], hosts.veth.b_addr.as_str());
    let port = announced["port"].as_u64().expect("port") as u16;
    let server_pid = announced["pid"].as_u64().expect("pid") as i32;
    assert!(port > 0, "{announced}");
    // If the test fails, killing crabmigrate alone would orphan CRIU's page
    // server; this kills it first, while CRIU still holds it. Disarmed once
    // the server has exited and been reaped.
    let server_guard = KillOnDrop(server_pid);

    let out = hosts
        .src
        .command(testkit::program("crabmigrate"))
        .args(["checkpoint", "--pid", &pid.to_string(), "--images-dir"])
        .arg(&d.src)
        .args(["--page-server", &format!("{}:{port}", hosts.veth.b_addr)])
        .args(["--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["stats"]["pages_written"].as_u64().unwrap() >= 16 * 256);
    let (status, rest) = server.wait();
    std::mem::forget(server_guard);
    assert!(status.success(), "page-server exited with {status}");
    assert_eq!(rest.trim(), "", "--json prints one line only");
    let last = Tick::read(&d.state).unwrap();
    workload.reap();

    let received = names(&d.dst);
    assert!(
        received.iter().any(|n| n.starts_with("pages-")),
        "{received:?}"
    );
    copy_images(&d.src, &d.dst);
    let pid_file = d.dst.join("restored.pid");
    let out = hosts
        .dst
        .command(testkit::program("crabmigrate"))
        .args(["restore", "--detach", "--images-dir"])
        .arg(&d.dst)
        .arg("--pid-file")
        .arg(&pid_file)
        .output()
        .unwrap();
    let restored: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "restore failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let _restored = KillOnDrop(restored);
    assert!(out.status.success());
    assert!(lives_in(restored, &hosts.dst));
    let after = continued(&d.state, &last);
    assert_eq!(after.checksum, before.checksum);
}

#[test]
fn dropping_the_session_stops_a_child_mode_page_server() {
    let Some(criu) = testkit::real_criu("dropping_the_session_stops_a_child_mode_page_server")
    else {
        return;
    };
    let ns = NetNs::new("psdrop");
    let dir = tempfile::tempdir().unwrap();
    let images = File::open(dir.path()).unwrap();
    let (session, info) = ns
        .criu(&criu)
        .page_server(&PageServerRequest::listen(images.as_fd(), "127.0.0.1", 0))
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[dir.path()])));
    let pid = info.pid.expect("pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // No WAIT_PID: the caller gave up (an error, a panic). The server must
    // not stay behind listening (and keep the namespace alive).
    drop(session);
    // (Connecting to it would not tell: it serves one connection and exits
    // when that closes.)
    let gone = testkit::wait_until(PATIENCE, || {
        match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => Some(()),
            Ok(s) if s.contains("State:\tZ") => Some(()),
            Ok(_) => None,
        }
    });
    if gone.is_none() {
        drop(KillOnDrop(pid as i32));
        panic!("page server {pid} outlived its session");
    }
}
