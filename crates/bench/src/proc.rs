//! Running programs: timed runs with a bound, background children that are
//! killed and reaped on drop, and reaping of the orphans the bench adopts.
//!
//! The bench makes itself a child subreaper: trees that CRIU restores
//! detached (and containers whose runtime exited) are reparented to it
//! instead of to pid 1, which on these machines reaps only every ~2 s.
//! [`reap_orphans`] collects them; children the bench spawned itself are
//! registered so that it never steals their exit status from `std`.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// Why running a program failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Its output files could not be created or read.
    #[error("cannot keep the output of {program} in {dir}")]
    Output {
        /// The program.
        program: String,
        /// Where the output goes.
        dir: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} ran longer than {limit:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The bound.
        limit: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: ExitStatus,
        /// The last lines of its error output.
        stderr: String,
    },
}

/// Pids owned by a `std::process::Child` of ours: never reaped by
/// [`reap_orphans`].
static OWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn own(pid: u32) {
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).insert(pid);
}

fn disown(pid: u32) {
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
}

/// Makes orphaned descendants our children (see the module docs).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reaps every exited child that no `Child` of ours owns (adopted orphans).
pub fn reap_orphans() {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((state, ppid)) = state_and_parent(pid) else {
            continue;
        };
        let owned = OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pid);
        if ppid == me && state == 'Z' && !owned {
            let _ = waitpid(pid_of(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// `/proc/PID/stat`: the state letter and the parent pid.
pub fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// `/proc/PID/stat` field 22: when the process started (clock ticks since
/// boot); a pid with another start time is another process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether `pid` names a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// SIGKILLs `pid` (if it is still the process that started at `started`,
/// when given), reaps it if it is our child, and waits up to `limit` until
/// it is gone.
pub fn kill_and_reap(pid: u32, started: Option<u64>, limit: Duration) {
    if pid == 0 || started.is_some_and(|s| start_time(pid) != Some(s)) {
        return;
    }
    let _ = kill(pid_of(pid), Signal::SIGKILL);
    let until = Instant::now() + limit;
    loop {
        reap_orphans();
        if !alive(pid) || Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The end of a finished run.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// From just before the spawn until its exit was collected.
    pub wall: Duration,
}

impl Finished {
    /// The run as a result: `Failed` with the tail of stderr unless it
    /// exited with status 0.
    pub fn ok(self, program: &str) -> Result<Self, RunError> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(RunError::Failed {
                program: program.to_owned(),
                status: self.status,
                stderr: tail(&self.stderr),
            })
        }
    }
}

/// The last few meaningful lines of a program's error output, on one line.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("RLIMIT_NOFILE"))
        .collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "no error output".to_owned()
    } else {
        joined
    }
}

/// A short name for a command, for messages.
pub fn name_of(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let first: Vec<String> = cmd
        .get_args()
        .take(3)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{program} {}", first.join(" ")).trim().to_owned()
}

/// Runs `cmd` with all of its stdio on /dev/null (a container started with
/// `run -d` inherits it, and CRIU can only dump stdio it can reopen there);
/// its error output is lost, so say so.
pub fn run_silent(cmd: &mut Command, limit: Duration) -> Result<Finished, RunError> {
    let program = name_of(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    own(child.id());
    let status = wait_bounded(&mut child, limit);
    let wall = started.elapsed();
    disown(child.id());
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout: String::new(),
            stderr: "(its output went to /dev/null so that the container can be checkpointed; run it by hand to see why)".to_owned(),
            wall,
        }),
        None => Err(RunError::Timeout { program, limit }),
    }
}

/// Runs `cmd` to completion with stdin from /dev/null and stdout/stderr in
/// files under `dir` (a restored tree never holds a pipe of ours), and kills
/// it after `limit`. The wall time covers spawn to exit.
pub fn run(cmd: &mut Command, dir: &Path, limit: Duration) -> Result<Finished, RunError> {
    let program = name_of(cmd);
    let output_error = |source| RunError::Output {
        program: program.clone(),
        dir: dir.to_path_buf(),
        source,
    };
    let out_path = dir.join("run.stdout");
    let err_path = dir.join("run.stderr");
    let out = File::create(&out_path).map_err(output_error)?;
    let err = File::create(&err_path).map_err(output_error)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    own(child.id());
    let status = wait_bounded(&mut child, limit);
    let wall = started.elapsed();
    disown(child.id());
    let read = |p: &Path| std::fs::read_to_string(p).map_err(output_error);
    let stdout = read(&out_path)?;
    let stderr = read(&err_path)?;
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    match status {
        Some(status) => Ok(Finished {
            status,
            stdout,
            stderr,
            wall,
        }),
        None => Err(RunError::Timeout { program, limit }),
    }
}

/// Waits for `child` (a blocking wait, so the exit time is exact); a
/// watchdog kills it after `limit`, and then `None` is returned.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let (done, watch) = mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = kill(pid_of(pid), Signal::SIGKILL);
            return true;
        }
        false
    });
    let status = child.wait().ok();
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    if timed_out {
        None
    } else {
        status
    }
}

/// A background child (an agent, an `unshare`), SIGKILLed and reaped on
/// drop. Its stderr goes to a file that [`Background::stderr`] reads.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Background {
    /// Starts `cmd` with stdin and stdout on /dev/null and stderr in
    /// `stderr` (or on /dev/null: a process CRIU dumps must not write to a
    /// file that changes before its restore).
    pub fn start(cmd: &mut Command, stderr: Option<&Path>) -> Result<Self, RunError> {
        let program = name_of(cmd);
        let target = match stderr {
            Some(path) => Stdio::from(File::create(path).map_err(|source| RunError::Output {
                program: program.clone(),
                dir: path.to_path_buf(),
                source,
            })?),
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(target);
        let child = cmd
            .spawn()
            .map_err(|source| RunError::Spawn { program, source })?;
        own(child.id());
        Ok(Self {
            child: Some(child),
            stderr: stderr.map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether it still runs (collects its exit status if it ended).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `limit` for it to end by itself, then kills it; reaps it.
    pub fn finish(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop();
    }

    /// SIGKILLs and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            disown(child.id());
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `probe` every `every` until it returns `Some`, for at most `limit`.
pub fn wait_until<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(every);
    }
}
