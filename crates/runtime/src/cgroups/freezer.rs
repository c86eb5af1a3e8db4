//! The freezer (v1 `freezer.state` or v2 `cgroup.freeze`) and signalling
//! a whole cgroup while it is frozen.

use std::fmt;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::hierarchy::has_controller;
use super::{read_file, write_file, Cgroup, CgroupError, UNIFIED};

/// How long [`Cgroup::freeze`] and [`Cgroup::thaw`] wait for the state to
/// settle (CRIU's default freeze timeout).
pub(super) const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the freezer says about a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezerState {
    /// Running.
    Thawed,
    /// Asked to freeze; not all tasks are frozen yet.
    Freezing,
    /// Every task is frozen.
    Frozen,
}

impl fmt::Display for FreezerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Thawed => "thawed",
            Self::Freezing => "freezing",
            Self::Frozen => "frozen",
        })
    }
}

impl FreezerState {
    /// Parses v1 `freezer.state`.
    pub fn from_v1(content: &str) -> Option<Self> {
        match content.trim() {
            "THAWED" => Some(Self::Thawed),
            "FREEZING" => Some(Self::Freezing),
            "FROZEN" => Some(Self::Frozen),
            _ => None,
        }
    }

    /// Combines v2 `cgroup.freeze` (what was asked) and `cgroup.events`
    /// (what is: `frozen 0|1`, which also reflects frozen ancestors).
    pub fn from_v2(freeze: &str, events: &str) -> Option<Self> {
        let frozen = events
            .lines()
            .find_map(|l| l.strip_prefix("frozen "))
            .map(str::trim)?;
        match (freeze.trim(), frozen) {
            (_, "1") => Some(Self::Frozen),
            ("1", "0") => Some(Self::Freezing),
            ("0", "0") => Some(Self::Thawed),
            _ => None,
        }
    }
}

/// Which freezer a cgroup uses.
#[derive(Debug, Clone, Copy)]
enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl Freezer<'_> {
    fn dir(&self) -> &Path {
        match self {
            Self::V1(d) | Self::V2(d) => d,
        }
    }
}

impl Cgroup {
    /// The freezer this cgroup uses: the v1 freezer where mounted, else v2.
    fn freezer(&self) -> Option<Freezer<'_>> {
        self.paths
            .iter()
            .find(|(k, _)| *k != UNIFIED && has_controller(k, "freezer"))
            .map(|(_, d)| Freezer::V1(d))
            .or_else(|| self.paths.get(UNIFIED).map(|d| Freezer::V2(d)))
    }

    /// The directory CRIU should freeze (its `freeze_cgroup` option): the v1
    /// freezer directory, else the v2 one. CRIU tells them apart by
    /// `freezer.state` versus `cgroup.freeze`.
    pub fn freezer_path(&self) -> Option<&Path> {
        self.freezer().map(|f| match f {
            Freezer::V1(d) | Freezer::V2(d) => d,
        })
    }

    /// The freezer's current state.
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        match self.freezer().ok_or(CgroupError::NoFreezer)? {
            Freezer::V1(dir) => {
                let file = dir.join("freezer.state");
                let content = read_file(&file)?;
                FreezerState::from_v1(&content).ok_or(CgroupError::Parse {
                    path: file,
                    content,
                })
            }
            Freezer::V2(dir) => {
                let freeze = read_file(&dir.join("cgroup.freeze"))?;
                let events_file = dir.join("cgroup.events");
                let events = read_file(&events_file)?;
                FreezerState::from_v2(&freeze, &events).ok_or(CgroupError::Parse {
                    path: events_file,
                    content: events,
                })
            }
        }
    }

    /// Freezes every process in the cgroup and waits (at most 10 s) until
    /// the freezer reports it frozen. On timeout the cgroup is thawed again.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let freezer = self.freezer().ok_or(CgroupError::NoFreezer)?;
        self.request(freezer, FreezerState::Frozen)?;
        let result = self.wait_for(freezer, FreezerState::Frozen);
        if result.is_err() {
            if let Err(e) = self.request(freezer, FreezerState::Thawed) {
                warn!(error = %e, "cannot thaw the cgroup after a failed freeze");
            }
        }
        result
    }

    /// Thaws the cgroup and waits (at most 10 s) until the freezer reports it
    /// thawed (a frozen ancestor keeps it frozen: that is a timeout error).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        let freezer = self.freezer().ok_or(CgroupError::NoFreezer)?;
        self.request(freezer, FreezerState::Thawed)?;
        self.wait_for(freezer, FreezerState::Thawed)
    }

    fn request(&self, freezer: Freezer<'_>, state: FreezerState) -> Result<(), CgroupError> {
        let frozen = state == FreezerState::Frozen;
        match freezer {
            Freezer::V1(dir) => write_file(
                &dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            Freezer::V2(dir) => {
                write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
            }
        }
    }

    /// Polls the freezer until it reports `wanted`. A v1 freezer can get
    /// stuck in FREEZING, so, like CRIU, this asks again now and then and
    /// occasionally thaws and re-freezes.
    fn wait_for(&self, freezer: Freezer<'_>, wanted: FreezerState) -> Result<(), CgroupError> {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let mut delay = Duration::from_micros(100);
        let mut attempt = 0u32;
        loop {
            let state = self.freezer_state()?;
            if state == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::FreezerTimeout {
                    path: freezer.dir().to_path_buf(),
                    state,
                    wanted,
                });
            }
            attempt += 1;
            if let (Freezer::V1(_), FreezerState::Frozen) = (freezer, wanted) {
                if attempt % 32 == 31 {
                    debug!(dir = %freezer.dir().display(), "freezer stuck; thawing and freezing again");
                    self.request(freezer, FreezerState::Thawed)?;
                    sleep(Duration::from_millis(10));
                    self.request(freezer, FreezerState::Frozen)?;
                } else if attempt % 8 == 0 {
                    self.request(freezer, FreezerState::Frozen)?;
                }
            }
            sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to every process in the cgroup and its sub-cgroups.
    ///
    /// The cgroup is frozen while the processes are listed and signalled, so
    /// none can fork away. Afterwards it is thawed, unless it was frozen
    /// before and the signal is not SIGKILL: a paused container stays
    /// paused. (Fatal signals still kill frozen tasks on v2 at once; on v1
    /// they act when the cgroup is thawed, which is why SIGKILL thaws.)
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        let signal = Signal::try_from(signal).map_err(|_| CgroupError::InvalidSignal(signal))?;
        let before = self.freezer_state().ok();
        if before.is_some() {
            if let Err(e) = self.freeze() {
                warn!(error = %e, "cannot freeze the cgroup; signalling it running");
            }
        }
        let mut result = self.all_pids().and_then(|pids| {
            for pid in pids {
                let Ok(raw) = i32::try_from(pid) else {
                    continue;
                };
                match kill(Pid::from_raw(raw), signal) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Signal {
                            pid,
                            signal,
                            source,
                        })
                    }
                }
            }
            Ok(())
        });
        if before.is_some() && (before != Some(FreezerState::Frozen) || signal == Signal::SIGKILL) {
            if let Err(e) = self.thaw() {
                result = result.and(Err(e));
            }
        }
        debug!(path = %self.path, %signal, "signalled cgroup");
        result
    }
}
