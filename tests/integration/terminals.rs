//! Trees whose stdio is the caller's terminal, as when a README command is
//! pasted into a shell: `setsid server &` and `run -d` with stderr left on
//! the terminal. The checkpoint leaves the terminal outside
//! (`--external tty[..]`, recorded in `crabmigrate-terminals.json`); the
//! restore hands over its own terminal; a restore without one is refused
//! before CRIU runs, and nothing is restored.
//!
//! Each "terminal" is a pty pair the test opens: the tree gets the slave,
//! the test keeps the master, as a terminal emulator does.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use testkit::{container_id, wait_until, BusyboxBundle, KillOnDrop, Runtime, Tick, Workload};

const PATIENCE: Duration = Duration::from_secs(60);

/// A pty pair whose descriptors children do not inherit unless given.
struct Terminal {
    master: OwnedFd,
    slave: OwnedFd,
    path: PathBuf,
}

impl Terminal {
    fn open() -> Self {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("close-on-exec");
        }
        let path = slave_path(&pty.slave);
        Self {
            master: pty.master,
            slave: pty.slave,
            path,
        }
    }

    fn stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("dup the slave"))
    }

    /// Reads what arrives on the master until `needle` shows up.
    fn read_until(&self, needle: &str) -> String {
        let mut seen = Vec::new();
        let until = Instant::now() + PATIENCE;
        while !String::from_utf8_lossy(&seen).contains(needle) {
            assert!(
                Instant::now() < until,
                "no {needle:?} on the terminal; read {:?}",
                String::from_utf8_lossy(&seen)
            );
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(500u16)).expect("poll") == 0 {
                continue;
            }
            let mut buf = [0u8; 512];
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) => panic!("the terminal hung up"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => panic!("read from the master: {e}"),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }
}

fn slave_path(slave: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).expect("slave path")
}

/// Where descriptor `fd` of `pid` points.
fn fd_target(pid: u32, fd: u32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap_or_default()
}

#[test]
fn a_setsid_tree_on_the_callers_terminal_checkpoints_and_restores_onto_the_restorers() {
    let Some(_criu) = testkit::real_criu(
        "a_setsid_tree_on_the_callers_terminal_checkpoints_and_restores_onto_the_restorers",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let images = tmp.path().join("images");
    let first = Terminal::open();
    // `setsid workload &` in a shell on `first`.
    let mut cmd = Command::new(testkit::private_copy("crabmigrate-workload", tmp.path()));
    cmd.args(["--setsid", "--mem-mib", "1", "--out"])
        .arg(&state)
        .stdin(first.stdio())
        .stdout(first.stdio())
        .stderr(first.stdio());
    let mut workload = Workload::spawn(cmd, &state);
    let pid = workload.pid();
    assert_eq!(fd_target(pid, 2), first.path);

    let out = testkit::run(&[
        "checkpoint",
        "--pid",
        &pid.to_string(),
        "--images-dir",
        images.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    workload.reap();
    let record = fs::read_to_string(images.join("crabmigrate-terminals.json")).unwrap();
    assert!(record.contains(first.path.to_str().unwrap()), "{record}");
    let at_dump = Tick::read(&state).unwrap();

    // Without a terminal the restore is refused before CRIU runs.
    let refused = testkit::crabmigrate()
        .args(["restore", "--images-dir", images.to_str().unwrap(), "-d"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run restore from a terminal"), "{stderr}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{stderr}");

    // From another terminal it restores, and the tree writes there.
    let second = Terminal::open();
    let _guard = KillOnDrop(pid as i32);
    let status = testkit::crabmigrate()
        .args(["restore", "--images-dir", images.to_str().unwrap(), "-d"])
        .stdin(second.stdio())
        .stdout(second.stdio())
        .stderr(second.stdio())
        .status()
        .unwrap();
    assert!(status.success());
    let said = second.read_until("restored");
    assert!(said.contains(&format!("as pid {pid}")), "{said}");
    for fd in 0..3 {
        assert_eq!(fd_target(pid, fd), second.path, "fd {fd}");
    }
    let after = wait_until(PATIENCE, || {
        Tick::read(&state).filter(|t| t.counter > at_dump.counter)
    })
    .expect("the restored workload counts on");
    assert_eq!(after.pid, pid);
}

#[test]
fn a_detached_container_with_stderr_on_the_terminal_checkpoints_and_restores() {
    let Some(_criu) = testkit::real_criu(
        "a_detached_container_with_stderr_on_the_terminal_checkpoints_and_restores",
    ) else {
        return;
    };
    let rt = Runtime::new();
    let id = container_id("tty-stderr");
    let bundle = BusyboxBundle::new(&[
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo tick$i >&2; sleep 0.2; done",
    ]);
    let first = Terminal::open();
    // README: run -d with stdin and stdout redirected, stderr on the
    // terminal.
    let status = rt
        .command(&[
            "run",
            "-d",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(first.stdio())
        .status()
        .unwrap();
    assert!(status.success());
    first.read_until("tick2");

    let images = tempfile::tempdir().unwrap();
    let images_dir = images.path().join("ckpt");
    let out = rt.run(&[
        "checkpoint",
        &id,
        "--images-dir",
        images_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rt.state(&id)["status"], "checkpointed");

    let second = Terminal::open();
    let status = rt
        .command(&[
            "restore",
            &id,
            "--bundle",
            bundle.path().to_str().unwrap(),
            "--images-dir",
            images_dir.to_str().unwrap(),
            "-d",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(second.stdio())
        .status()
        .unwrap();
    assert!(status.success());
    // The restored shell goes on counting, on the restorer's terminal.
    second.read_until("tick");
    let pid = rt.state(&id)["pid"].as_u64().unwrap() as u32;
    assert_eq!(fd_target(pid, 2), second.path);
}
