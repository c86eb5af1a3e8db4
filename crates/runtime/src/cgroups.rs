//! The cgroup manager: one container's cgroup on every mounted hierarchy.
//!
//! Like runc's `libcontainer/cgroups`, much smaller. It works on cgroup v1,
//! v2 and hybrid hosts (v1 controllers plus a v2 hierarchy at
//! `/sys/fs/cgroup/unified`):
//!
//! - [`Cgroup::create`] makes the container's directory on every hierarchy
//!   mounted under `/sys/fs/cgroup` (`mkdir -p`) and writes the supported
//!   subset of `linux.resources`. Each limit goes to the hierarchy that holds
//!   its controller: a v1 hierarchy when the controller is bound there, else
//!   the v2 hierarchy when its root offers it (the controller is then enabled
//!   in every ancestor's `cgroup.subtree_control`). Named v1 hierarchies
//!   (`name=systemd`) and a v2 hierarchy without controllers only get the
//!   directory and, later, the processes.
//! - [`Cgroup::freeze`] and [`Cgroup::thaw`] use the v1 freezer where it is
//!   mounted (hybrid hosts included: that is where the controller is), else
//!   v2's `cgroup.freeze`.
//! - [`Cgroup::freezer_path`] and [`Cgroup::v1_roots`] give CRIU its
//!   `freeze_cgroup` and `cg_root` options.
//!
//! Everything is plain file I/O on the cgroup file systems. Hierarchies are
//! passed in as [`Hierarchy`] values, so tests run against a fake cgroupfs of
//! plain directories: files that a real cgroupfs would provide are created on
//! first write.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::host::{cgroup_layout, CgroupLayout};

/// Where the host mounts its cgroup hierarchies.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The key of the v2 (unified) hierarchy in [`Cgroup::paths`], on v2 and
/// hybrid hosts alike.
pub const UNIFIED: &str = "unified";

/// How long [`Cgroup::freeze`] and [`Cgroup::thaw`] wait for the state to
/// settle (CRIU's default freeze timeout).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`Cgroup::remove`] retries `rmdir` while it fails with EBUSY.
const RMDIR_ATTEMPTS: u32 = 10;

/// v1 controllers this module recognises in mount options.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// Resource limits from the OCI spec's `linux.resources` (the supported
/// subset).
///
/// As in runc, zero means "not set" for every number; -1 (any negative
/// number for `pids_limit`) means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes (OCI semantics, as in cgroup v1).
    pub memory_swap: Option<i64>,
    /// CPU shares (v1 `cpu.shares`; converted to `cpu.weight` on v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CPUs the container may use, e.g. "0-3,6".
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use, e.g. "0".
    pub cpuset_mems: Option<String>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its key in [`Cgroup::paths`]: the v1 controllers joined by commas as in
    /// `/proc/PID/cgroup` ("memory", "cpu,cpuacct", "name=systemd"), or
    /// [`UNIFIED`] for the v2 hierarchy.
    pub name: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl Hierarchy {
    /// A v1 hierarchy with these controllers (or "name=X").
    pub fn v1(name: impl Into<String>, mount_point: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            mount_point: mount_point.into(),
        }
    }

    /// The v2 hierarchy.
    pub fn unified(mount_point: impl Into<PathBuf>) -> Self {
        Self::v1(UNIFIED, mount_point)
    }

    /// Whether this is the v2 hierarchy.
    pub fn is_unified(&self) -> bool {
        self.name == UNIFIED
    }

    /// Whether `controller` is bound to this v1 hierarchy.
    fn has_v1_controller(&self, controller: &str) -> bool {
        !self.is_unified() && has_controller(&self.name, controller)
    }
}

fn has_controller(key: &str, controller: &str) -> bool {
    key.split(',').any(|c| c == controller)
}

/// The hierarchies mounted under `/sys/fs/cgroup`, from `/proc/self/mountinfo`.
pub fn hierarchies() -> Result<Vec<Hierarchy>, CgroupError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Read {
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
    Ok(hierarchies_from(&mountinfo, Path::new(CGROUP_ROOT)))
}

/// Parses mountinfo: every cgroup or cgroup2 mount at or under `root`, one
/// per hierarchy (the first mount wins).
fn hierarchies_from(mountinfo: &str, root: &Path) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        // Fields: id parent dev root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let (Some(mount_root), Some(mount_point)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let super_options = right.nth(1).unwrap_or("");
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        if !mount_point.starts_with(root) {
            continue;
        }
        let name = match fstype {
            "cgroup2" => UNIFIED.to_owned(),
            "cgroup" => {
                let mut parts: Vec<&str> = super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .collect();
                parts.extend(super_options.split(',').filter(|o| o.starts_with("name=")));
                if parts.is_empty() {
                    continue;
                }
                parts.join(",")
            }
            _ => continue,
        };
        if *mount_root != "/" {
            warn!(hierarchy = %name, mount_root, "cgroup hierarchy is mounted from a subdirectory; paths are relative to it");
        }
        if found.iter().any(|h| h.name == name) {
            continue;
        }
        found.push(Hierarchy { name, mount_point });
    }
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

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

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup path is not absolute, is the root, or climbs with `..`.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted under {CGROUP_ROOT}")]
    NoHierarchies,
    /// A limit was asked for whose controller no hierarchy offers.
    #[error(
        "cannot set the {resource} limit: no cgroup hierarchy has the {controller} controller"
    )]
    NoController {
        /// The limit, e.g. "memory".
        resource: &'static str,
        /// The controller it needs.
        controller: &'static str,
    },
    /// The limits contradict each other.
    #[error("invalid resources: {0}")]
    InvalidResources(String),
    /// The cgroup exists and is in use.
    #[error("cgroup {path} already exists and holds processes {pids:?}; stop them or choose another cgroup path")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The processes in it.
        pids: Vec<u32>,
    },
    /// A directory could not be created.
    #[error("cannot create {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A value could not be written.
    #[error("cannot write {value} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A file holds something unexpected.
    #[error("unexpected content {content:?} in {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// Neither a v1 freezer nor a v2 hierarchy.
    #[error("this cgroup has no freezer (neither a v1 freezer hierarchy nor a v2 one)")]
    NoFreezer,
    /// The freezer did not reach the wanted state in time.
    #[error("{path} is still {state} after {} s, not {wanted}", FREEZE_TIMEOUT.as_secs())]
    FreezerTimeout {
        /// The freezer directory.
        path: PathBuf,
        /// The last state read.
        state: FreezerState,
        /// The state asked for.
        wanted: FreezerState,
    },
    /// The cgroup still holds processes, so it cannot be removed.
    #[error("cannot remove {path}: it still holds processes {pids:?}")]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The processes in it.
        pids: Vec<u32>,
    },
    /// A directory could not be removed.
    #[error("cannot remove {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Not a signal number.
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
    /// A process could not be signalled.
    #[error("cannot send {signal} to process {pid}")]
    Signal {
        /// The process.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// What the system said.
        #[source]
        source: nix::Error,
    },
}

/// The cgroup of one container, on every mounted hierarchy.
///
/// Serializable, so the container's state can keep it and
/// [`Cgroup::from_paths`] (or deserialization) re-opens it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The host's layout when the cgroup was created.
    #[serde(with = "layout_serde")]
    layout: CgroupLayout,
    /// The cgroup path, e.g. "/crabmigrate/ID".
    path: String,
    /// Hierarchy key -> absolute directory.
    paths: BTreeMap<String, PathBuf>,
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
    /// Creates (`mkdir -p`) the container's cgroup `path` (an absolute cgroup
    /// path like "/crabmigrate/ID") on every hierarchy mounted under
    /// `/sys/fs/cgroup` and applies `resources`.
    ///
    /// An existing, empty cgroup is reused; one that holds processes is an
    /// error.
    pub fn create(path: &str, resources: &Resources) -> Result<Self, CgroupError> {
        Self::create_in(cgroup_layout(), &hierarchies()?, path, resources)
    }

    /// Same as [`Cgroup::create`] on the given hierarchies (tests pass a fake
    /// cgroupfs made of plain directories).
    pub fn create_in(
        layout: CgroupLayout,
        hierarchies: &[Hierarchy],
        path: &str,
        resources: &Resources,
    ) -> Result<Self, CgroupError> {
        let components = validate_path(path)?;
        if hierarchies.is_empty() || layout == CgroupLayout::None {
            return Err(CgroupError::NoHierarchies);
        }
        let path = format!("/{}", components.join("/"));
        let mut paths = BTreeMap::new();
        for h in hierarchies {
            let dir = components
                .iter()
                .fold(h.mount_point.clone(), |d, c| d.join(c));
            let pids = read_pids(&dir)?;
            if !pids.is_empty() {
                return Err(CgroupError::InUse { path: dir, pids });
            }
            paths.insert(h.name.clone(), dir);
        }
        let cgroup = Self {
            layout,
            path,
            paths,
        };
        let result = cgroup.build(hierarchies, &components, resources);
        if let Err(e) = result {
            if let Err(cleanup) = cgroup.remove() {
                warn!(error = %cleanup, "cannot remove the half-made cgroup");
            }
            return Err(e);
        }
        debug!(path = %cgroup.path, %layout, "created cgroup");
        Ok(cgroup)
    }

    /// Makes the directories and writes the limits.
    fn build(
        &self,
        hierarchies: &[Hierarchy],
        components: &[&str],
        resources: &Resources,
    ) -> Result<(), CgroupError> {
        for h in hierarchies {
            let mut dir = h.mount_point.clone();
            for c in components {
                let parent = dir.clone();
                dir.push(c);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                    Err(source) => return Err(CgroupError::CreateDir { path: dir, source }),
                }
                if h.has_v1_controller("cpuset") {
                    init_cpuset(&parent, &dir)?;
                }
            }
        }
        self.apply(hierarchies, components, resources)
    }

    /// Writes `resources`, each to the hierarchy that has its controller.
    fn apply(
        &self,
        hierarchies: &[Hierarchy],
        components: &[&str],
        r: &Resources,
    ) -> Result<(), CgroupError> {
        let set = |v: Option<i64>| v.filter(|&v| v != 0);
        let memory = set(r.memory_limit);
        let swap = set(r.memory_swap);
        let shares = r.cpu_shares.filter(|&v| v != 0);
        let quota = set(r.cpu_quota);
        let period = r.cpu_period.filter(|&v| v != 0);
        let cpus = r.cpuset_cpus.as_deref().filter(|s| !s.is_empty());
        let mems = r.cpuset_mems.as_deref().filter(|s| !s.is_empty());
        let pids = set(r.pids_limit);

        let wanted: [(&'static str, &'static str, bool); 4] = [
            ("memory", "memory", memory.is_some() || swap.is_some()),
            (
                "cpu",
                "cpu",
                shares.is_some() || quota.is_some() || period.is_some(),
            ),
            ("cpuset", "cpuset", cpus.is_some() || mems.is_some()),
            ("pids", "pids", pids.is_some()),
        ];
        let unified = hierarchies.iter().find(|h| h.is_unified());
        let v2_available: Vec<String> = match unified {
            Some(h) => read_optional(&h.mount_point.join("cgroup.controllers"))?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        let mut v1_targets: BTreeMap<&str, &Path> = BTreeMap::new();
        let mut v2_needed: Vec<&str> = Vec::new();
        for (resource, controller, asked) in wanted {
            if !asked {
                continue;
            }
            if let Some(h) = hierarchies.iter().find(|h| h.has_v1_controller(controller)) {
                if let Some(dir) = self.paths.get(&h.name) {
                    v1_targets.insert(controller, dir);
                }
            } else if v2_available.iter().any(|c| c == controller) {
                v2_needed.push(controller);
            } else {
                return Err(CgroupError::NoController {
                    resource,
                    controller,
                });
            }
        }

        if let Some(dir) = v1_targets.get("memory") {
            v1_memory(dir, memory, swap)?;
        }
        if let Some(dir) = v1_targets.get("cpu") {
            if let Some(shares) = shares {
                write_file(&dir.join("cpu.shares"), &shares.to_string())?;
            }
            if let Some(period) = period {
                write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            }
            if let Some(quota) = quota {
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let Some(dir) = v1_targets.get("cpuset") {
            if let Some(cpus) = cpus {
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = mems {
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let (Some(dir), Some(pids)) = (v1_targets.get("pids"), pids) {
            write_file(&dir.join("pids.max"), &max_or(pids))?;
        }

        let (Some(h), false) = (unified, v2_needed.is_empty()) else {
            return Ok(());
        };
        // Enable the controllers from the root down to the parent.
        let mut ancestor = h.mount_point.clone();
        for c in components {
            enable_controllers(&ancestor, &v2_needed)?;
            ancestor.push(c);
        }
        let dir = &ancestor;
        if v2_needed.contains(&"memory") {
            if let Some(memory) = memory {
                write_file(&dir.join("memory.max"), &max_or(memory))?;
            }
            let swap_max = dir.join("memory.swap.max");
            match v2_swap(swap, memory)? {
                Some(value) if swap_max.exists() => write_file(&swap_max, &max_or(value))?,
                Some(_) => {
                    debug!(file = %swap_max.display(), "no swap accounting; swap limit ignored")
                }
                None => {}
            }
        }
        if v2_needed.contains(&"cpu") {
            if let Some(shares) = shares {
                write_file(
                    &dir.join("cpu.weight"),
                    &shares_to_weight(shares).to_string(),
                )?;
            }
            if quota.is_some() || period.is_some() {
                let mut value = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_owned(),
                };
                if let Some(p) = period {
                    value.push_str(&format!(" {p}"));
                }
                write_file(&dir.join("cpu.max"), &value)?;
            }
        }
        if v2_needed.contains(&"cpuset") {
            if let Some(cpus) = cpus {
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = mems {
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let (true, Some(pids)) = (v2_needed.contains(&"pids"), pids) {
            write_file(&dir.join("pids.max"), &max_or(pids))?;
        }
        Ok(())
    }

    /// Re-opens a cgroup recorded earlier: the layout, the cgroup path and
    /// the map from [`Cgroup::paths`].
    pub fn from_paths(
        layout: CgroupLayout,
        path: impl Into<String>,
        paths: BTreeMap<String, PathBuf>,
    ) -> Self {
        Self {
            layout,
            path: path.into(),
            paths,
        }
    }

    /// Hierarchy key ("memory", "name=systemd", [`UNIFIED`], ...) ->
    /// absolute directory.
    pub fn paths(&self) -> &BTreeMap<String, PathBuf> {
        &self.paths
    }

    /// The host's cgroup layout.
    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    /// The cgroup path, e.g. "/crabmigrate/ID".
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Moves a process (all its threads) into the cgroup on every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in self.paths.values() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        debug!(pid, path = %self.path, "added process to cgroup");
        Ok(())
    }

    /// The directory whose `cgroup.procs` lists the members: the v1 freezer,
    /// else the v2 hierarchy, else the first.
    fn procs_dir(&self) -> Option<&Path> {
        self.paths
            .iter()
            .find(|(k, _)| *k != UNIFIED && has_controller(k, "freezer"))
            .or_else(|| self.paths.get_key_value(UNIFIED))
            .or_else(|| self.paths.iter().next())
            .map(|(_, d)| d.as_path())
    }

    /// The processes in the cgroup itself (not in its children). A cgroup
    /// that no longer exists has none.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        match self.procs_dir() {
            Some(dir) => read_pids(dir),
            None => Ok(Vec::new()),
        }
    }

    /// The processes in the cgroup and every cgroup below it.
    pub fn all_pids(&self) -> Result<Vec<u32>, CgroupError> {
        let Some(dir) = self.procs_dir() else {
            return Ok(Vec::new());
        };
        let mut pids = Vec::new();
        for d in subtree(dir)? {
            pids.extend(read_pids(&d)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

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

    /// For CRIU's `cg_root` on restore: one (controller, cgroup path) pair
    /// per v1 controller and named hierarchy ("name=systemd"). Empty on a
    /// pure v2 host.
    pub fn v1_roots(&self) -> Vec<(String, String)> {
        self.paths
            .keys()
            .filter(|k| *k != UNIFIED)
            .flat_map(|k| k.split(','))
            .map(|c| (c.to_owned(), self.path.clone()))
            .collect()
    }

    /// Removes the cgroup directories, sub-cgroups first, retrying briefly
    /// while the kernel reports EBUSY (exited tasks may linger a moment).
    /// The processes must be gone. Directories already gone are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for dir in self.paths.values() {
            let result = subtree(dir).and_then(|dirs| {
                // Children come after their parents: remove in reverse.
                dirs.iter().rev().try_for_each(|d| rmdir(d))
            });
            if let Err(e) = result {
                warn!(dir = %dir.display(), error = %e, "cannot remove cgroup");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                debug!(path = %self.path, "removed cgroup");
                Ok(())
            }
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

/// Checks a cgroup path and splits it into components.
fn validate_path(path: &str) -> Result<Vec<&str>, CgroupError> {
    let invalid = |reason| CgroupError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(invalid("it must be absolute"));
    }
    if path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| *c == ".." || *c == ".") {
        return Err(invalid("it must not contain . or .. components"));
    }
    if components.is_empty() {
        return Err(invalid("it is the root cgroup"));
    }
    Ok(components)
}

/// Gives a new v1 cpuset the parent's CPUs and memory nodes (a cpuset with
/// empty ones cannot take tasks).
fn init_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !read_optional(&own)?.trim().is_empty() {
            continue;
        }
        let inherited = read_file(&parent.join(file))?;
        let inherited = inherited.trim();
        if !inherited.is_empty() {
            write_file(&own, inherited)?;
        }
    }
    Ok(())
}

/// v1 memory and memory+swap limits, in an order the kernel accepts (the
/// memory limit may never exceed memory+swap).
fn v1_memory(dir: &Path, memory: Option<i64>, swap: Option<i64>) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    // Unlimited memory with no swap limit means unlimited swap too.
    let swap = match (memory, swap) {
        (Some(-1), None) => Some(-1),
        _ => swap,
    };
    let swap = match swap {
        Some(_) if !memsw_file.exists() => {
            debug!(file = %memsw_file.display(), "no swap accounting; swap limit ignored");
            None
        }
        s => s,
    };
    let write_memory = || match memory {
        Some(m) => write_file(&limit_file, &m.to_string()),
        None => Ok(()),
    };
    let write_swap = || match swap {
        Some(s) => write_file(&memsw_file, &s.to_string()),
        None => Ok(()),
    };
    // Unreadable means "as on a new cgroup": unlimited.
    let current: u64 = std::fs::read_to_string(&limit_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let swap_first = match (memory, swap) {
        (Some(_), Some(-1)) => true,
        (Some(_), Some(s)) => u64::try_from(s).is_ok_and(|s| current < s),
        _ => false,
    };
    if swap_first {
        write_swap()?;
        write_memory()
    } else {
        write_memory()?;
        write_swap()
    }
}

/// The v2 `memory.swap.max` for OCI's memory+swap `swap` (runc's rules):
/// `None` to leave it, `Some(-1)` for unlimited.
fn v2_swap(swap: Option<i64>, memory: Option<i64>) -> Result<Option<i64>, CgroupError> {
    match (swap, memory) {
        (None, Some(-1)) => Ok(Some(-1)),
        (None, _) => Ok(None),
        (Some(s), _) if s < 0 => Ok(Some(-1)),
        (Some(_), None | Some(-1)) => Err(CgroupError::InvalidResources(
            "a swap limit needs a memory limit".to_owned(),
        )),
        (Some(_), Some(m)) if m < 0 => Err(CgroupError::InvalidResources(format!(
            "memory limit {m} is negative"
        ))),
        (Some(s), Some(m)) if s < m => Err(CgroupError::InvalidResources(format!(
            "memory+swap limit {s} is below the memory limit {m}"
        ))),
        (Some(s), Some(m)) => Ok(Some(s - m)),
    }
}

/// v1 CPU shares as a v2 CPU weight (the conversion runc and crun use):
/// 2..=262144 maps onto 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// "max" for a negative limit, else the number.
fn max_or(value: i64) -> String {
    if value < 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}

/// Enables `controllers` in `dir`'s `cgroup.subtree_control` where missing.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_optional(&file)?;
    let enabled: Vec<&str> = enabled
        .split_whitespace()
        .map(|c| c.trim_start_matches('+'))
        .collect();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&file, &missing.join(" "))
}

/// The processes in cgroup `path` ("/crabmigrate/ID") on any hierarchy
/// mounted here; empty if it does not exist. A restore into a cgroup that
/// holds processes fails, so a migration destination checks this first.
pub fn members(path: &str) -> Result<Vec<u32>, CgroupError> {
    let components = validate_path(path)?;
    let mut pids = Vec::new();
    for h in hierarchies()? {
        let dir = components
            .iter()
            .fold(h.mount_point.clone(), |d, c| d.join(c));
        pids.extend(read_pids(&dir)?);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The pids in `dir`'s `cgroup.procs`; none if the cgroup does not exist.
/// Zeros (processes outside our pid namespace) are skipped.
fn read_pids(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let file = dir.join("cgroup.procs");
    let content = read_optional(&file)?;
    let mut pids = Vec::new();
    for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse::<u32>() {
            Ok(0) => {}
            Ok(pid) => pids.push(pid),
            Err(_) => {
                return Err(CgroupError::Parse {
                    path: file,
                    content: line.to_owned(),
                })
            }
        }
    }
    Ok(pids)
}

/// `dir` and every directory below it, parents before children; empty if
/// `dir` does not exist.
fn subtree(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    out.push(dir.to_path_buf());
    let mut i = 0;
    while let Some(d) = out.get(i).cloned() {
        i += 1;
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path: d, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Read {
                path: d.clone(),
                source,
            })?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Removes a cgroup directory, retrying while EBUSY.
fn rmdir(dir: &Path) -> Result<(), CgroupError> {
    let mut delay = Duration::from_millis(5);
    for attempt in 1..=RMDIR_ATTEMPTS {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < RMDIR_ATTEMPTS => {
                sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(source) => {
                let pids = read_pids(dir).unwrap_or_default();
                if !pids.is_empty() {
                    return Err(CgroupError::Busy {
                        path: dir.to_path_buf(),
                        pids,
                    });
                }
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file that may be missing (as empty).
fn read_optional(path: &Path) -> Result<String, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` in one write. The file is created if missing, so plain
/// directories can stand in for a cgroupfs in tests; on a real cgroupfs a
/// missing file cannot be created, and the error then says "not found".
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|e| {
        let source = if path.exists() {
            e
        } else {
            io::Error::from(io::ErrorKind::NotFound)
        };
        CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_owned(),
            source,
        }
    })?;
    debug!(file = %path.display(), value, "wrote cgroup file");
    Ok(())
}

/// (De)serializes [`CgroupLayout`] by its lower-case name, as `host`
/// serializes it.
mod layout_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::host::CgroupLayout;

    pub(super) fn serialize<S: Serializer>(layout: &CgroupLayout, s: S) -> Result<S::Ok, S::Error> {
        layout.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CgroupLayout, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "v2" => Ok(CgroupLayout::V2),
            "v1" => Ok(CgroupLayout::V1),
            "hybrid" => Ok(CgroupLayout::Hybrid),
            "none" => Ok(CgroupLayout::None),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["v2", "v1", "hybrid", "none"],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;
    use std::process::{Child, Command};

    // ---- fake cgroupfs ------------------------------------------------

    fn write(path: &Path, content: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content).unwrap();
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// A hybrid host: v1 controllers, a named hierarchy, and a v2
    /// hierarchy with `v2_controllers`.
    fn fake_hybrid(root: &Path, v2_controllers: &str) -> Vec<Hierarchy> {
        let mut hs = Vec::new();
        for name in ["cpu,cpuacct", "cpuset", "memory", "freezer", "pids"] {
            let dir = root.join(name);
            fs::create_dir_all(&dir).unwrap();
            hs.push(Hierarchy::v1(name, dir));
        }
        write(&root.join("cpuset/cpuset.cpus"), "0-3\n");
        write(&root.join("cpuset/cpuset.mems"), "0\n");
        fs::create_dir_all(root.join("systemd")).unwrap();
        hs.push(Hierarchy::v1("name=systemd", root.join("systemd")));
        write(&root.join("unified/cgroup.controllers"), v2_controllers);
        hs.push(Hierarchy::unified(root.join("unified")));
        hs
    }

    /// A pure v2 host with the usual controllers.
    fn fake_v2(root: &Path) -> Vec<Hierarchy> {
        write(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        write(&root.join("cgroup.subtree_control"), "");
        vec![Hierarchy::unified(root)]
    }

    fn all_resources() -> Resources {
        Resources {
            memory_limit: Some(1 << 20),
            memory_swap: Some(2 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("1-2".to_owned()),
            cpuset_mems: Some("0".to_owned()),
            pids_limit: Some(-1),
        }
    }

    // ---- unit tests ---------------------------------------------------

    #[test]
    fn creates_the_directory_on_every_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        let cg = Cgroup::create_in(
            CgroupLayout::Hybrid,
            &hs,
            "/crabmigrate/c1",
            &Resources::default(),
        )
        .unwrap();
        assert_eq!(cg.paths().len(), hs.len());
        for h in &hs {
            let dir = &cg.paths()[&h.name];
            assert_eq!(dir, &h.mount_point.join("crabmigrate/c1"));
            assert!(dir.is_dir(), "{} missing", dir.display());
        }
        assert_eq!(cg.path(), "/crabmigrate/c1");
        assert_eq!(cg.layout(), CgroupLayout::Hybrid);
        // No limits were asked for: nothing written outside cpuset.
        assert!(!tmp
            .path()
            .join("memory/crabmigrate/c1/memory.limit_in_bytes")
            .exists());
        assert!(!tmp.path().join("unified/cgroup.subtree_control").exists());
    }

    #[test]
    fn v1_resources_land_in_v1_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let hs = fake_hybrid(root, "");
        // The kernel provides memsw only with swap accounting.
        write(
            &root.join("memory/crabmigrate/c1/memory.memsw.limit_in_bytes"),
            "9223372036854771712\n",
        );
        Cgroup::create_in(
            CgroupLayout::Hybrid,
            &hs,
            "/crabmigrate/c1",
            &all_resources(),
        )
        .unwrap();
        let leaf = |h: &str, f: &str| read(&root.join(h).join("crabmigrate/c1").join(f));
        assert_eq!(leaf("memory", "memory.limit_in_bytes"), "1048576");
        assert_eq!(leaf("memory", "memory.memsw.limit_in_bytes"), "2097152");
        assert_eq!(leaf("cpu,cpuacct", "cpu.shares"), "1024");
        assert_eq!(leaf("cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
        assert_eq!(leaf("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
        assert_eq!(leaf("cpuset", "cpuset.cpus"), "1-2");
        assert_eq!(leaf("cpuset", "cpuset.mems"), "0");
        assert_eq!(leaf("pids", "pids.max"), "max");
        // The v2 hierarchy of a hybrid host has no controllers: only the dir.
        let v2 = root.join("unified/crabmigrate/c1");
        assert!(v2.is_dir());
        assert_eq!(fs::read_dir(&v2).unwrap().count(), 0);
        assert!(!root.join("unified/cgroup.subtree_control").exists());
        assert_eq!(
            fs::read_dir(root.join("systemd/crabmigrate/c1"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn v1_swap_is_skipped_without_swap_accounting() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/c2", &all_resources()).unwrap();
        assert_eq!(
            read(&tmp.path().join("memory/c2/memory.limit_in_bytes")),
            "1048576"
        );
        assert!(!tmp
            .path()
            .join("memory/c2/memory.memsw.limit_in_bytes")
            .exists());
    }

    #[test]
    fn v2_resources_land_in_v2_files_and_controllers_are_enabled() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let hs = fake_v2(root);
        write(&root.join("crabmigrate/c1/memory.swap.max"), "max\n");
        let cg =
            Cgroup::create_in(CgroupLayout::V2, &hs, "/crabmigrate/c1", &all_resources()).unwrap();
        let leaf = |f: &str| read(&root.join("crabmigrate/c1").join(f));
        assert_eq!(leaf("memory.max"), "1048576");
        assert_eq!(leaf("memory.swap.max"), "1048576"); // memory+swap minus memory
        assert_eq!(leaf("cpu.weight"), "39");
        assert_eq!(leaf("cpu.max"), "50000 100000");
        assert_eq!(leaf("cpuset.cpus"), "1-2");
        assert_eq!(leaf("cpuset.mems"), "0");
        assert_eq!(leaf("pids.max"), "max");
        for dir in [root.to_path_buf(), root.join("crabmigrate")] {
            let mut enabled: Vec<String> = read(&dir.join("cgroup.subtree_control"))
                .split_whitespace()
                .map(|c| c.trim_start_matches('+').to_owned())
                .collect();
            enabled.sort();
            assert_eq!(
                enabled,
                ["cpu", "cpuset", "memory", "pids"],
                "in {}",
                dir.display()
            );
        }
        // The leaf's own subtree_control is left alone.
        assert!(!root.join("crabmigrate/c1/cgroup.subtree_control").exists());
        assert_eq!(cg.paths().keys().collect::<Vec<_>>(), [UNIFIED]);
        assert!(cg.v1_roots().is_empty());
        assert_eq!(
            cg.freezer_path(),
            Some(root.join("crabmigrate/c1").as_path())
        );
    }

    #[test]
    fn v2_only_enables_missing_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let hs = fake_v2(root);
        write(&root.join("cgroup.subtree_control"), "memory pids\n");
        let r = Resources {
            memory_limit: Some(-1),
            cpu_quota: Some(-1),
            ..Resources::default()
        };
        Cgroup::create_in(CgroupLayout::V2, &hs, "/c", &r).unwrap();
        assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpu");
        assert_eq!(read(&root.join("c/memory.max")), "max");
        assert_eq!(read(&root.join("c/cpu.max")), "max");
    }

    #[test]
    fn missing_controller_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Hybrid, but without a pids hierarchy and no v2 controllers.
        let hs: Vec<Hierarchy> = fake_hybrid(root, "")
            .into_iter()
            .filter(|h| h.name != "pids")
            .collect();
        let r = Resources {
            pids_limit: Some(10),
            ..Resources::default()
        };
        let err = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/c", &r).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::NoController {
                    controller: "pids",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "cannot set the pids limit: no cgroup hierarchy has the pids controller"
        );
        // The half-made cgroup is gone again.
        assert!(!root.join("memory/c").exists());
        // With pids on the v2 side instead, it goes there.
        let hs: Vec<Hierarchy> = fake_hybrid(root, "pids")
            .into_iter()
            .filter(|h| h.name != "pids")
            .collect();
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/c", &r).unwrap();
        assert_eq!(read(&root.join("unified/c/pids.max")), "10");
        assert_eq!(read(&root.join("unified/cgroup.subtree_control")), "+pids");
    }

    #[test]
    fn cpuset_parents_are_initialised() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let hs = fake_hybrid(root, "");
        let r = Resources {
            cpuset_cpus: Some("2".to_owned()),
            ..Resources::default()
        };
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/a/b/c", &r).unwrap();
        for mid in ["a", "a/b"] {
            assert_eq!(
                read(&root.join("cpuset").join(mid).join("cpuset.cpus")),
                "0-3"
            );
            assert_eq!(
                read(&root.join("cpuset").join(mid).join("cpuset.mems")),
                "0"
            );
        }
        assert_eq!(read(&root.join("cpuset/a/b/c/cpuset.cpus")), "2");
        assert_eq!(read(&root.join("cpuset/a/b/c/cpuset.mems")), "0");
        // Existing values are kept.
        write(&root.join("cpuset/x/cpuset.cpus"), "3\n");
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/x/y", &Resources::default()).unwrap();
        assert_eq!(read(&root.join("cpuset/x/cpuset.cpus")), "3");
        assert_eq!(read(&root.join("cpuset/x/y/cpuset.cpus")), "3");
    }

    #[test]
    fn shares_convert_to_weight() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }

    #[test]
    fn v2_swap_conversion() {
        assert_eq!(v2_swap(None, None).unwrap(), None);
        assert_eq!(v2_swap(None, Some(-1)).unwrap(), Some(-1));
        assert_eq!(v2_swap(Some(-1), Some(100)).unwrap(), Some(-1));
        assert_eq!(v2_swap(Some(300), Some(100)).unwrap(), Some(200));
        assert!(v2_swap(Some(300), None).is_err());
        assert!(v2_swap(Some(50), Some(100)).is_err());
    }

    #[test]
    fn paths_are_validated() {
        for bad in [
            "",
            "relative/x",
            "/",
            "//",
            "/a/../b",
            "/..",
            "/a/./b",
            "/a\0b",
        ] {
            let err = validate_path(bad).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidPath { .. }), "{bad:?}");
        }
        assert_eq!(validate_path("//a//b/").unwrap(), ["a", "b"]);
        assert_eq!(validate_path("/a..b/.c").unwrap(), ["a..b", ".c"]);
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        let err = Cgroup::create_in(
            CgroupLayout::Hybrid,
            &hs,
            "../escape",
            &Resources::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cgroup path \"../escape\": it must be absolute"
        );
        let err = Cgroup::create_in(
            CgroupLayout::Hybrid,
            &hs,
            "/a/../../escape",
            &Resources::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(".. components"), "{err}");
        let cg =
            Cgroup::create_in(CgroupLayout::Hybrid, &hs, "//n//m/", &Resources::default()).unwrap();
        assert_eq!(cg.path(), "/n/m");
    }

    #[test]
    fn existing_cgroup_with_processes_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        write(&tmp.path().join("freezer/busy/cgroup.procs"), "4242\n");
        let err = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/busy", &Resources::default())
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::InUse { pids, .. } if pids == &[4242]),
            "{err}"
        );
        assert!(err.to_string().contains("freezer/busy"), "{err}");
        // Nothing was created elsewhere.
        assert!(!tmp.path().join("memory/busy").exists());
        // An existing empty one is reused.
        write(&tmp.path().join("freezer/idle/cgroup.procs"), "");
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/idle", &Resources::default()).unwrap();
    }

    #[test]
    fn write_errors_name_file_and_value() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        // A directory where the file should be makes the write fail.
        fs::create_dir_all(tmp.path().join("memory/w/memory.limit_in_bytes")).unwrap();
        let r = Resources {
            memory_limit: Some(1_048_576),
            ..Resources::default()
        };
        let err = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/w", &r).unwrap_err();
        let file = tmp.path().join("memory/w/memory.limit_in_bytes");
        assert_eq!(
            err.to_string(),
            format!("cannot write 1048576 to {}", file.display())
        );
    }

    #[test]
    fn remove_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Without cpuset, nothing but directories is written.
        let hs: Vec<Hierarchy> = fake_hybrid(root, "")
            .into_iter()
            .filter(|h| h.name != "cpuset")
            .collect();
        let cg = Cgroup::create_in(
            CgroupLayout::Hybrid,
            &hs,
            "/crabmigrate/r",
            &Resources::default(),
        )
        .unwrap();
        // A sub-cgroup the container made.
        fs::create_dir(root.join("memory/crabmigrate/r/sub")).unwrap();
        cg.remove().unwrap();
        for dir in cg.paths().values() {
            assert!(!dir.exists(), "{} still there", dir.display());
            assert!(dir.parent().unwrap().is_dir(), "the parent must stay");
        }
        cg.remove().unwrap();
        assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn freezer_states_parse() {
        assert_eq!(
            FreezerState::from_v1("THAWED\n"),
            Some(FreezerState::Thawed)
        );
        assert_eq!(
            FreezerState::from_v1("FREEZING\n"),
            Some(FreezerState::Freezing)
        );
        assert_eq!(FreezerState::from_v1("FROZEN"), Some(FreezerState::Frozen));
        assert_eq!(FreezerState::from_v1("frozen"), None);
        let events = |f| format!("populated 1\nfrozen {f}\n");
        assert_eq!(
            FreezerState::from_v2("0\n", &events(0)),
            Some(FreezerState::Thawed)
        );
        assert_eq!(
            FreezerState::from_v2("1\n", &events(0)),
            Some(FreezerState::Freezing)
        );
        assert_eq!(
            FreezerState::from_v2("1\n", &events(1)),
            Some(FreezerState::Frozen)
        );
        // Frozen by an ancestor.
        assert_eq!(
            FreezerState::from_v2("0\n", &events(1)),
            Some(FreezerState::Frozen)
        );
        assert_eq!(FreezerState::from_v2("1\n", "populated 1\n"), None);
        assert_eq!(FreezerState::Freezing.to_string(), "freezing");
    }

    #[test]
    fn freezer_state_reads_the_right_files() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        let cg = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/f", &Resources::default()).unwrap();
        // Hybrid prefers the v1 freezer.
        assert_eq!(
            cg.freezer_path(),
            Some(tmp.path().join("freezer/f").as_path())
        );
        write(&tmp.path().join("freezer/f/freezer.state"), "FREEZING\n");
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Freezing);
        write(&tmp.path().join("freezer/f/freezer.state"), "BOGUS\n");
        assert!(matches!(cg.freezer_state(), Err(CgroupError::Parse { .. })));
        // Without a v1 freezer, the v2 one.
        let mut paths = cg.paths().clone();
        paths.remove("freezer");
        let cg = Cgroup::from_paths(CgroupLayout::Hybrid, "/f", paths);
        assert_eq!(
            cg.freezer_path(),
            Some(tmp.path().join("unified/f").as_path())
        );
        write(&tmp.path().join("unified/f/cgroup.freeze"), "1\n");
        write(
            &tmp.path().join("unified/f/cgroup.events"),
            "populated 0\nfrozen 1\n",
        );
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
        // Nothing at all.
        let none = Cgroup::from_paths(CgroupLayout::None, "/f", BTreeMap::new());
        assert!(matches!(none.freeze(), Err(CgroupError::NoFreezer)));
        assert_eq!(none.freezer_path(), None);
    }

    #[test]
    fn pids_come_from_the_freezer_and_skip_zeros() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        let cg = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/p", &Resources::default()).unwrap();
        write(&tmp.path().join("freezer/p/cgroup.procs"), "12\n0\n7\n");
        write(&tmp.path().join("freezer/p/sub/cgroup.procs"), "99\n");
        write(&tmp.path().join("memory/p/cgroup.procs"), "555\n");
        assert_eq!(cg.pids().unwrap(), [12, 7]);
        assert_eq!(cg.all_pids().unwrap(), [7, 12, 99]);
        cg.add_process(31).unwrap();
        for dir in cg.paths().values() {
            assert_eq!(read(&dir.join("cgroup.procs")), "31");
        }
        assert!(matches!(
            cg.signal_all(12345),
            Err(CgroupError::InvalidSignal(12345))
        ));
    }

    #[test]
    fn v1_roots_list_every_controller() {
        let paths: BTreeMap<String, PathBuf> = [
            ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/c/x"),
            ("memory", "/sys/fs/cgroup/memory/c/x"),
            ("name=systemd", "/sys/fs/cgroup/systemd/c/x"),
            (UNIFIED, "/sys/fs/cgroup/unified/c/x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
        .collect();
        let cg = Cgroup::from_paths(CgroupLayout::Hybrid, "/c/x", paths);
        let expected: Vec<(String, String)> = ["cpu", "cpuacct", "memory", "name=systemd"]
            .into_iter()
            .map(|c| (c.to_owned(), "/c/x".to_owned()))
            .collect();
        assert_eq!(cg.v1_roots(), expected);
    }

    #[test]
    fn serializes_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = fake_hybrid(tmp.path(), "");
        let cg =
            Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/s/t", &Resources::default()).unwrap();
        let json = serde_json::to_string(&cg).unwrap();
        assert!(json.contains("\"layout\":\"hybrid\""), "{json}");
        assert!(json.contains("\"name=systemd\""), "{json}");
        let back: Cgroup = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cg);
        for layout in [CgroupLayout::V1, CgroupLayout::V2, CgroupLayout::None] {
            let cg = Cgroup::from_paths(layout, "/x", BTreeMap::new());
            let back: Cgroup = serde_json::from_str(&serde_json::to_string(&cg).unwrap()).unwrap();
            assert_eq!(back.layout(), layout);
        }
        assert!(
            serde_json::from_str::<Cgroup>(r#"{"layout":"v3","path":"/x","paths":{}}"#).is_err()
        );
        let r = all_resources();
        let back: Resources = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn hierarchies_come_from_mountinfo() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:34 / /sys/fs/cgroup/freezer2 rw,relatime - cgroup cgroup rw,freezer
50 23 0:40 / /tmp/criu\\040mnt rw - cgroup cgroup rw,memory
";
        let hs = hierarchies_from(hybrid, Path::new(CGROUP_ROOT));
        let names: Vec<&str> = hs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["cpu,cpuacct", "cpuset", "freezer", "name=systemd", UNIFIED]
        );
        assert_eq!(hs[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(hs[4].is_unified());
        assert!(hs[0].has_v1_controller("cpuacct") && !hs[0].has_v1_controller("cpuset"));

        let v2 =
            "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            hierarchies_from(v2, Path::new(CGROUP_ROOT)),
            [Hierarchy::unified("/sys/fs/cgroup")]
        );
        let escaped = "50 23 0:40 / /tmp/criu\\040mnt rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            hierarchies_from(escaped, Path::new("/tmp"))[0].mount_point,
            Path::new("/tmp/criu mnt")
        );
        assert!(hierarchies_from("garbage\n", Path::new(CGROUP_ROOT)).is_empty());
    }

    #[test]
    fn no_hierarchies_is_an_error() {
        let err =
            Cgroup::create_in(CgroupLayout::None, &[], "/x", &Resources::default()).unwrap_err();
        assert!(matches!(err, CgroupError::NoHierarchies));
    }

    // ---- tests on the real /sys/fs/cgroup (root only) ----------------

    /// Whether a real-host test can run; prints SKIPPED otherwise. Under
    /// CI=true a missing requirement fails the test.
    fn real_host(name: &str) -> bool {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let reason = if !nix::unistd::geteuid().is_root() {
            Some("needs root")
        } else if cgroup_layout() == CgroupLayout::None {
            Some("no cgroup hierarchy is mounted")
        } else {
            None
        };
        match reason {
            None => true,
            Some(reason) if ci => panic!("{name}: {reason} (CI=true)"),
            Some(reason) => {
                eprintln!("SKIPPED {name}: {reason}");
                false
            }
        }
    }

    /// Kills the sleeper and removes the cgroup even when the test panics.
    struct Guard {
        cgroup: Option<Cgroup>,
        child: Option<Child>,
        parent: PathBuf,
    }

    impl Guard {
        fn new(path: &str) -> Self {
            Self {
                cgroup: None,
                child: None,
                parent: PathBuf::from(path.rsplit_once('/').map_or("/", |(p, _)| p)),
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(cg) = &self.cgroup {
                // A frozen task would not die, and waiting for it would hang.
                let _ = cg.thaw();
            }
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(cg) = &self.cgroup {
                let _ = cg.remove();
                // The shared parent goes when the last test leaves it.
                for dir in cg.paths().values() {
                    let mut d = dir.as_path();
                    for _ in self.parent.components().skip(1) {
                        match d.parent() {
                            Some(p) => {
                                let _ = fs::remove_dir(p);
                                d = p;
                            }
                            None => break,
                        }
                    }
                }
            }
        }
    }

    fn test_path(test: &str) -> String {
        format!("/crabmigrate-test/{test}-{}", std::process::id())
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("30").spawn().unwrap()
    }

    /// The third field of /proc/PID/stat (after the parenthesised comm).
    fn proc_state(pid: u32) -> char {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(") ").unwrap().1;
        after.chars().next().unwrap()
    }

    /// The cgroup path of `pid` on the hierarchy with `key` (v2: "").
    fn proc_cgroup(pid: u32, key: &str) -> Option<String> {
        let content = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        content.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, k, p) = (f.next()?, f.next()?, f.next()?);
            (k == key).then(|| p.to_owned())
        })
    }

    #[test]
    fn real_cgroup_lifecycle() {
        let name = "real_cgroup_lifecycle";
        if !real_host(name) {
            return;
        }
        let path = test_path(name);
        let mut guard = Guard::new(&path);
        let hs = hierarchies().unwrap();
        let layout = cgroup_layout();
        let resources = Resources {
            memory_limit: Some(64 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids_limit: Some(100),
            ..Resources::default()
        };
        let cg = Cgroup::create(&path, &resources).unwrap();
        guard.cgroup = Some(cg.clone());
        assert_eq!(cg.layout(), layout);
        assert_eq!(cg.paths().len(), hs.len());
        for dir in cg.paths().values() {
            assert!(dir.is_dir(), "{} missing", dir.display());
        }

        // The memory limit reads back.
        let memory = match cg
            .paths()
            .iter()
            .find(|(k, _)| *k != UNIFIED && has_controller(k, "memory"))
        {
            Some((_, dir)) => read(&dir.join("memory.limit_in_bytes")),
            None => read(&cg.paths()[UNIFIED].join("memory.max")),
        };
        assert_eq!(memory, (64u64 << 20).to_string());
        let v1 = |controller: &str| {
            cg.paths()
                .iter()
                .find(|(k, _)| *k != UNIFIED && has_controller(k, controller))
                .map(|(_, d)| d.clone())
        };
        if let Some(dir) = v1("cpu") {
            assert_eq!(read(&dir.join("cpu.shares")), "512");
            assert_eq!(read(&dir.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(&dir.join("cpu.cfs_period_us")), "100000");
        }
        if let Some(dir) = v1("pids") {
            assert_eq!(read(&dir.join("pids.max")), "100");
        }
        if let Some(dir) = v1("cpuset") {
            // Initialised from the parents, so tasks can join.
            assert!(!read(&dir.join("cpuset.cpus")).is_empty());
            assert!(!read(&dir.join("cpuset.mems")).is_empty());
        }

        let child = guard.child.insert(sleeper());
        let pid = child.id();
        cg.add_process(pid).unwrap();
        assert!(cg.pids().unwrap().contains(&pid));
        let freezer_key = cg
            .paths()
            .keys()
            .find(|k| *k != UNIFIED && has_controller(k, "freezer"))
            .cloned();
        let key = freezer_key.clone().unwrap_or_default();
        assert_eq!(proc_cgroup(pid, &key).as_deref(), Some(path.as_str()));
        if cg.paths().contains_key(UNIFIED) {
            assert_eq!(proc_cgroup(pid, "").as_deref(), Some(path.as_str()));
        }

        // A second create of the same, busy cgroup is refused.
        let err = Cgroup::create(&path, &Resources::default()).unwrap_err();
        assert!(
            matches!(&err, CgroupError::InUse { pids, .. } if pids.contains(&pid)),
            "{err}"
        );

        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
        cg.freeze().unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
        let state = proc_state(pid);
        eprintln!("{name}: frozen sleep is in state {state}");
        if freezer_key.is_some() {
            // A task frozen by the v1 freezer reports D (TASK_FROZEN).
            assert_eq!(state, 'D');
        }
        cg.thaw().unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
        assert_ne!(proc_state(pid), 'D');

        // Killing a frozen cgroup: signal_all thaws so the task can die.
        cg.freeze().unwrap();
        cg.signal_all(libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        guard.child = None;
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

        cg.remove().unwrap();
        for dir in cg.paths().values() {
            assert!(!dir.exists(), "{} still there", dir.display());
        }
        cg.remove().unwrap();
    }

    /// The v2 side on its own (on a hybrid host: the unified hierarchy,
    /// which has no controllers but does have cgroup.freeze).
    #[test]
    fn real_v2_freezer() {
        let name = "real_v2_freezer";
        if !real_host(name) {
            return;
        }
        let Some(unified) = hierarchies()
            .unwrap()
            .into_iter()
            .find(Hierarchy::is_unified)
        else {
            eprintln!("SKIPPED {name}: no cgroup v2 hierarchy is mounted");
            return;
        };
        let path = test_path(name);
        let mut guard = Guard::new(&path);
        let cg =
            Cgroup::create_in(CgroupLayout::V2, &[unified], &path, &Resources::default()).unwrap();
        guard.cgroup = Some(cg.clone());
        let dir = cg.paths()[UNIFIED].clone();
        assert_eq!(cg.freezer_path(), Some(dir.as_path()));

        let child = guard.child.insert(sleeper());
        let pid = child.id();
        cg.add_process(pid).unwrap();
        assert_eq!(cg.pids().unwrap(), [pid]);
        assert_eq!(proc_cgroup(pid, "").as_deref(), Some(path.as_str()));

        cg.freeze().unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
        assert!(read(&dir.join("cgroup.events")).contains("frozen 1"));
        eprintln!("{name}: frozen sleep is in state {}", proc_state(pid));
        cg.thaw().unwrap();
        assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

        // A signal other than SIGKILL leaves a paused cgroup paused. (On v2
        // a fatal signal kills a frozen task at once anyway, so the state
        // may read freezing while it exits: check the request, not it.)
        cg.freeze().unwrap();
        cg.signal_all(libc::SIGTERM).unwrap();
        assert_eq!(read(&dir.join("cgroup.freeze")), "1");
        cg.thaw().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        guard.child = None;

        cg.remove().unwrap();
        assert!(!dir.exists());
    }
}
