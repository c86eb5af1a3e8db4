//! Shared helpers for the integration tests: finding the built programs,
//! gating tests that need root and a real CRIU, and stand-in CRIUs.
//!
//! Gating rule: under `CI=true` a missing CRIU or missing root is a test
//! failure, never a skip. Elsewhere such a test prints why it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use criu_rpc::{Criu, CriuBinary};

/// Whether we run in CI, where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The directory holding the built programs (`target/debug`).
pub fn bin_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn built(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// The `crabmigrate` program under test.
pub fn crabmigrate() -> Command {
    Command::new(built("crabmigrate"))
}

/// Runs `crabmigrate ARGS` and returns its output.
pub fn run(args: &[&str]) -> Output {
    crabmigrate().args(args).output().expect("crabmigrate runs")
}

/// A real CRIU and root, or `None` after printing why (outside CI only).
pub fn real_criu(test: &str) -> Option<Criu> {
    let problem = if !nix_is_root() {
        Some("not running as root".to_owned())
    } else {
        match CriuBinary::locate(None) {
            Ok(binary) => return Some(Criu::new(binary)),
            Err(e) => Some(format!("{e}")),
        }
    };
    let problem = problem.unwrap_or_default();
    assert!(
        !in_ci(),
        "{test}: needs root and CRIU under CI=true, but {problem}"
    );
    println!("SKIPPED {test}: {problem}");
    None
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A wrapper script that starts the stand-in CRIU with `scenario`; pass it
/// to `--criu`. Lives in `dir`, which the caller cleans up.
pub fn standin_criu(dir: &Path, scenario: &str) -> PathBuf {
    let script = dir.join(format!("criu-{scenario}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{}' '{scenario}' \"$@\"\n",
            built("criu-standin").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The path of a built program in the workspace (`crabmigrate-workload`,
/// `criu-standin`, `crabmigrate`).
pub fn program(name: &str) -> PathBuf {
    built(name)
}

/// A private copy of the built program `name` (same file name) in a new
/// directory under `dir`. CRIU dumps a running executable by path: a `cargo
/// build` running meanwhile replaces the file in `target/`, and the dump
/// then fails with "Can't create link remap" (the mapped file is gone). A
/// copy nobody rebuilds avoids that.
///
/// Executing a file just written can fail with "Text file busy" while a
/// child forked by another test thread still holds the writing descriptor;
/// [`Workload::spawn`] retries that.
pub fn private_copy(name: &str, dir: &Path) -> PathBuf {
    test_support::workload::private_copy(&built(name), dir).unwrap_or_else(|e| panic!("{e}"))
}

/// One state line of `crabmigrate-workload`: `COUNTER CHECKSUM PID`.
pub use test_support::workload::Tick;

/// Polls `probe` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_until<T>(
    limit: std::time::Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `crabmigrate-workload` child in its own session, writing its state to
/// `state`. Killed and reaped on drop.
#[derive(Debug)]
pub struct Workload {
    pub child: Option<std::process::Child>,
    pub state: PathBuf,
}

impl Workload {
    /// Starts the workload holding `mem_mib` MiB, writing to `state`, with
    /// stdin from /dev/null and stdout/stderr to /dev/null.
    ///
    /// It runs from a private copy of the program next to `state` (see
    /// [`private_copy`]).
    pub fn start(mem_mib: usize, state: &Path) -> Self {
        let dir = state.parent().unwrap_or(Path::new("/tmp"));
        let mut cmd = Command::new(private_copy("crabmigrate-workload", dir));
        cmd.args(["--setsid", "--mem-mib", &mem_mib.to_string(), "--out"])
            .arg(state)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Self::spawn(cmd, state)
    }

    /// Starts `cmd` (a workload command line) and waits for its first tick.
    pub fn spawn(mut cmd: Command, state: &Path) -> Self {
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc_etxtbsy()) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.expect("workload starts"),
            }
        };
        let workload = Self {
            child: Some(child),
            state: state.to_path_buf(),
        };
        workload.wait_tick(1, std::time::Duration::from_secs(20));
        workload
    }

    /// The workload's pid.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(std::process::Child::id)
            .expect("running")
    }

    /// The latest state line.
    pub fn tick(&self) -> Tick {
        Tick::read(&self.state).expect("state file readable")
    }

    /// Waits until the counter reaches `counter`.
    pub fn wait_tick(&self, counter: u64, limit: std::time::Duration) -> Tick {
        wait_until(limit, || {
            Tick::read(&self.state).filter(|t| t.counter >= counter)
        })
        .unwrap_or_else(|| panic!("workload did not reach counter {counter} in {limit:?}"))
    }

    /// Reaps the child after CRIU killed it (so its pid is free for the
    /// restore) and returns how it ended.
    pub fn reap(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn libc_etxtbsy() -> i32 {
    nix::errno::Errno::ETXTBSY as i32
}

/// Kills a process (a restored tree's root, not our child) on drop.
#[derive(Debug)]
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
        // Reap it if it is our child (rst_sibling); for any other process
        // waitpid fails at once with ECHILD.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.0), None);
    }
}

/// A busybox OCI bundle in a temporary directory (see
/// [`test_support::busybox`]); panics if it cannot be made.
#[derive(Debug)]
pub struct BusyboxBundle(pub test_support::busybox::Bundle);

impl BusyboxBundle {
    /// A bundle running `args` (e.g. `["sh", "-c", "..."]`).
    pub fn new(args: &[&str]) -> Self {
        Self(test_support::busybox::Bundle::new(args).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The spec `new` writes, for tests to edit and write back.
    pub fn default_config(args: &[&str]) -> serde_json::Value {
        test_support::busybox::Bundle::default_config(args)
    }

    /// Replaces config.json.
    pub fn write_config(&self, config: &serde_json::Value) {
        self.0
            .write_config(config)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The rootfs.
    pub fn rootfs(&self) -> PathBuf {
        self.0.rootfs()
    }
}

/// A unique container ID for `test` (tests run in parallel).
pub fn container_id(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A state root in a temporary directory plus `crabmigrate --root` calls;
/// force-deletes every container left in it on drop.
#[derive(Debug)]
pub struct Runtime {
    pub root: tempfile::TempDir,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `crabmigrate --root ROOT ARGS...`, with stdio from/to /dev/null unless
    /// the caller changes it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = crabmigrate();
        cmd.arg("--root").arg(self.root.path()).args(args);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs `crabmigrate --root ROOT ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("crabmigrate runs")
    }

    /// The `state` JSON of `id`.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]);
        assert!(
            out.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("state is JSON")
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let ids: Vec<String> = std::fs::read_dir(self.root.path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            let _ = self.run(&["delete", "--force", &id]);
        }
    }
}
