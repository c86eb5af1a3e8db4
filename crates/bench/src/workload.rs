//! The test workload (`crabmigrate-workload`): N MiB of pseudo-random
//! memory and a counter written to a state file each tick.
//!
//! It always runs from a private copy of the binary (a `cargo build`
//! replacing the file in `target/` under a dumped process breaks CRIU with
//! link-remap errors), in its own session, with stdio on /dev/null, and as
//! pid 1 of its own pid namespace (`unshare --pid --fork`), so a restore
//! never collides with the pid of the original or of an earlier copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::{NetError, NetNs};
use crate::proc::{self, Background, RunError};

/// How long a workload may take to fill its memory and tick.
const START_LIMIT: Duration = Duration::from_secs(120);

/// Why a workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The program could not be copied.
    #[error("cannot copy the workload {from} to {to}")]
    Copy {
        /// The built workload.
        from: PathBuf,
        /// The private copy.
        to: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// It could not be started.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The namespace could not be entered.
    #[error(transparent)]
    Net(#[from] NetError),
    /// It did not tick in time.
    #[error("the workload ({mem_mib} MiB) did not reach tick {tick} within {limit:?}; its output goes to /dev/null (CRIU must dump it): run it by hand to see why")]
    NoTick {
        /// Its memory.
        mem_mib: u64,
        /// The tick waited for.
        tick: u64,
        /// The bound.
        limit: Duration,
    },
    /// Its pid-1 process could not be found.
    #[error("no child of unshare (pid {0}) found")]
    NoRoot(u32),
}

/// Copies the workload binary into a new directory under `dir` and
/// returns the copy.
pub fn private_copy(built: &Path, dir: &Path) -> Result<PathBuf, WorkloadError> {
    test_support::workload::private_copy(built, dir).map_err(|e| WorkloadError::Copy {
        from: e.from,
        to: e.to,
        source: e.source,
    })
}

/// One state line: `COUNTER CHECKSUM PID`.
pub use test_support::workload::Tick;

/// A running workload: `outer` is the `unshare` (our child), `root` the
/// pid-1 process of its namespace (the tree to dump).
#[derive(Debug)]
pub struct Workload {
    /// Host pid of the tree's root.
    pub root: u32,
    root_started: Option<u64>,
    outer: Background,
    /// The state file.
    pub state: PathBuf,
    mem_mib: u64,
}

impl Workload {
    /// Starts `program` (a private copy) holding `mem_mib` MiB and ticking
    /// every `interval_ms`, in `netns` if given, and waits for tick `warm`
    /// (the memory is filled before the first tick and read at every tick,
    /// so this pre-warms it).
    pub fn start(
        program: &Path,
        mem_mib: u64,
        interval_ms: u64,
        state: &Path,
        netns: Option<&NetNs>,
        warm: u64,
    ) -> Result<Self, WorkloadError> {
        let mut cmd = match netns {
            Some(ns) => ns.command("unshare")?,
            None => Command::new("unshare"),
        };
        cmd.args(["--pid", "--fork"])
            .arg(program)
            .args(["--setsid", "--mem-mib", &mem_mib.to_string()])
            .args(["--interval-ms", &interval_ms.to_string(), "--out"])
            .arg(state);
        let _ = std::fs::remove_file(state);
        let outer = Background::start(&mut cmd, None)?;
        let pid = outer.pid();
        let root = proc::wait_until(Duration::from_secs(10), Duration::from_millis(2), || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        })
        .ok_or(WorkloadError::NoRoot(pid))?;
        let workload = Self {
            root,
            root_started: proc::start_time(root),
            outer,
            state: state.to_path_buf(),
            mem_mib,
        };
        workload.wait_tick(warm, START_LIMIT)?;
        Ok(workload)
    }

    /// Waits until the counter reaches `counter`.
    pub fn wait_tick(&self, counter: u64, limit: Duration) -> Result<Tick, WorkloadError> {
        proc::wait_until(limit, Duration::from_millis(5), || {
            Tick::read(&self.state).filter(|t| t.counter >= counter)
        })
        .ok_or(WorkloadError::NoTick {
            mem_mib: self.mem_mib,
            tick: counter,
            limit,
        })
    }

    /// Whether the original root process still runs.
    pub fn root_alive(&self) -> bool {
        proc::alive(self.root) && proc::start_time(self.root) == self.root_started
    }

    /// Waits (up to `limit`) for the tree to be gone after CRIU killed it,
    /// and reaps the `unshare`.
    pub fn wait_gone(&mut self, limit: Duration) {
        self.outer.finish(limit);
        proc::kill_and_reap(self.root, self.root_started, limit);
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        proc::kill_and_reap(self.root, self.root_started, Duration::from_secs(5));
        self.outer.stop();
    }
}

/// Watches a state file every millisecond and records when the counter
/// changed: an observer outside the migrated tree.
#[derive(Debug)]
pub struct TickWatch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<(Instant, Tick)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TickWatch {
    /// Starts watching `state`.
    pub fn start(state: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink, path) = (Arc::clone(&stop), Arc::clone(&changes), state.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut last: Option<u64> = None;
            while !flag.load(Ordering::Relaxed) {
                if let Some(tick) = Tick::read(&path) {
                    if last != Some(tick.counter) {
                        last = Some(tick.counter);
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((Instant::now(), tick));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            stop,
            changes,
            thread: Some(thread),
        }
    }

    /// The changes seen so far.
    pub fn changes(&self) -> Vec<(Instant, Tick)> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until at least `n` changes were seen after `since`.
    pub fn wait_changes_after(&self, since: Instant, n: usize, limit: Duration) -> bool {
        proc::wait_until(limit, Duration::from_millis(2), || {
            (self.changes().iter().filter(|(t, _)| *t > since).count() >= n).then_some(())
        })
        .is_some()
    }

    /// Stops watching and returns every change.
    pub fn finish(mut self) -> Vec<(Instant, Tick)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.changes()
    }
}

impl Drop for TickWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the watcher saw around a migration that ran from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    /// The largest time between two counter changes from the last change
    /// before `start` to the first change after `end`, in ms.
    pub gap_ms: f64,
    /// The median time between changes before `start` (the resolution of
    /// the measurement), in ms.
    pub tick_ms: f64,
    /// Whether the first tick after the migration carried the checksum of
    /// the last tick before it, with a higher counter.
    pub continued: bool,
}

/// Computes the [`Gap`] from the watcher's changes; `None` if no change
/// came before `start` or after `end`.
pub fn gap(changes: &[(Instant, Tick)], start: Instant, end: Instant) -> Option<Gap> {
    let before = changes.iter().rposition(|(t, _)| *t <= start)?;
    let after = changes.iter().position(|(t, _)| *t >= end)?;
    if after <= before {
        return None;
    }
    let window = &changes[before..=after];
    let gap_ms = window
        .windows(2)
        .map(|w| ms(w[1].0 - w[0].0))
        .fold(0.0, f64::max);
    let earlier: Vec<f64> = changes[..=before]
        .windows(2)
        .map(|w| ms(w[1].0 - w[0].0))
        .collect();
    let tick_ms = crate::stats::median(&earlier).unwrap_or(f64::NAN);
    let (last, first) = (&changes[before].1, &changes[after].1);
    Some(Gap {
        gap_ms,
        tick_ms,
        continued: first.checksum == last.checksum && first.counter > last.counter,
    })
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
