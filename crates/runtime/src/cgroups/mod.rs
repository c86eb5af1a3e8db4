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
//!
//! The parts, one file each: `hierarchy.rs` (what is mounted),
//! `resources.rs` (the limits), `freezer.rs` (freeze, thaw, signal).

mod devices;
mod freezer;
mod hierarchy;
mod resources;
mod stats;

pub use devices::{default_allowed as default_allowed_devices, DeviceRule};
pub use freezer::FreezerState;
pub use hierarchy::{hierarchies, Hierarchy};
pub use resources::{shares_to_weight, Resources};
pub use stats::{CpuStats, CpuUsage, MemoryEntry, MemoryStats, PidsStats, Stats};

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::host::{cgroup_layout, CgroupLayout};
use freezer::FREEZE_TIMEOUT;
use hierarchy::has_controller;
use resources::init_cpuset;

/// Where the host mounts its cgroup hierarchies.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The key of the v2 (unified) hierarchy in [`Cgroup::paths`], on v2 and
/// hybrid hosts alike.
pub const UNIFIED: &str = "unified";

/// How often [`Cgroup::remove`] retries `rmdir` while it fails with EBUSY.
const RMDIR_ATTEMPTS: u32 = 10;

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
    /// Device rules were asked for, but no v1 devices hierarchy is mounted.
    #[error(
        "cannot enforce linux.resources.devices: this host has no cgroup v1 devices controller, \
         and crabmigrate does not attach cgroup v2 device programs (eBPF); run on a host with \
         the v1 devices controller mounted"
    )]
    NoDevicesController,
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
        self.apply_devices(hierarchies, &resources.devices)?;
        self.apply(hierarchies, components, resources)
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
mod tests;
