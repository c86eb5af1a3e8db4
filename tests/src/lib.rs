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

/// One state line of `crabmigrate-workload`: `COUNTER CHECKSUM PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub counter: u64,
    pub checksum: String,
    pub pid: u32,
}

impl Tick {
    /// Parses a state line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split_whitespace();
        Some(Self {
            counter: parts.next()?.parse().ok()?,
            checksum: parts.next()?.to_owned(),
            pid: parts.next()?.parse().ok()?,
        })
    }

    /// Reads the state file the workload writes with `--out`.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(std::fs::read_to_string(path).ok()?.trim())
    }
}

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
    pub fn start(mem_mib: usize, state: &Path) -> Self {
        let mut cmd = Command::new(built("crabmigrate-workload"));
        cmd.args(["--setsid", "--mem-mib", &mem_mib.to_string(), "--out"])
            .arg(state)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Self::spawn(cmd, state)
    }

    /// Starts `cmd` (a workload command line) and waits for its first tick.
    pub fn spawn(mut cmd: Command, state: &Path) -> Self {
        let child = cmd.spawn().expect("workload starts");
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
