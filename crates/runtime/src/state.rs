//! Container state on disk: `ROOT/ID/state.json`, written atomically.
//!
//! The state keeps what later commands need: the init's pid and its start
//! time (so a recycled pid is never mistaken for the container), the bundle,
//! the status, the cgroup and namespace paths.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;

/// Where state lives unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/crabmigrate";
/// The state file in each container directory.
const STATE_FILE: &str = "state.json";
/// The container's cgroup, written as soon as the cgroup exists, so that
/// `delete --force` finds it when `state.json` never got written (a crash
/// during create).
pub const CGROUP_RECORD: &str = "cgroup.json";
/// The largest state file read (they are a few KiB).
const MAX_STATE: u64 = 1 << 20;

/// Lifecycle states, as in the OCI runtime spec plus `checkpointed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created; the user process has not started yet.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The init exited.
    Stopped,
    /// Checkpointed: the processes are gone, the images hold them.
    Checkpointed,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Checkpointed => "checkpointed",
        })
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The OCI version of the bundle's spec.
    pub oci_version: String,
    /// The container ID.
    pub id: String,
    /// Lifecycle status as last recorded (see [`State::refresh`]).
    pub status: Status,
    /// Host pid of the container's init (0 when none).
    pub pid: u32,
    /// The init's start time in clock ticks since boot (field 22 of
    /// `/proc/PID/stat`), to detect pid reuse.
    pub pid_start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The rootfs directory.
    pub rootfs: PathBuf,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The cgroup on every hierarchy.
    pub cgroup: Option<Cgroup>,
    /// Namespace files of the init (`/proc/PID/ns/*`) by kind, or the paths
    /// the container joined.
    pub namespaces: BTreeMap<String, PathBuf>,
    /// The spec's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The images directory of the last checkpoint, if any.
    pub checkpoint: Option<PathBuf>,
    /// The CNI network attachment, for a container with `--network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::Attachment>,
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No container with that ID.
    #[error("container {id} does not exist (no {path})")]
    NotFound {
        /// The ID.
        id: String,
        /// The state file looked for.
        path: PathBuf,
    },
    /// The ID is taken.
    #[error("container {0} already exists; delete it first or pick another ID")]
    Exists(String),
    /// Reading or writing failed.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid state.
    #[error("{path} is not a valid container state; remove the container with crabmigrate delete --force ID")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// The state root: one directory per container.
#[derive(Debug, Clone)]
pub struct StateRoot {
    dir: PathBuf,
}

impl StateRoot {
    /// Uses `dir` (created with mode 0700 when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates the directory of a new container; fails if the ID is taken.
    pub fn create_dir(&self, id: &str) -> Result<PathBuf, StateError> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { what, path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create the state root", &self.dir))?;
        let dir = self.container_dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_owned()))
            }
            Err(e) => Err(io("create", &dir)(e)),
        }
    }

    /// Reads the state of `id`.
    pub fn load(&self, id: &str) -> Result<State, StateError> {
        use std::io::Read;
        let path = self.container_dir(id).join(STATE_FILE);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound {
                    id: id.to_owned(),
                    path,
                })
            }
            Err(source) => {
                return Err(StateError::Io {
                    what: "read",
                    path,
                    source,
                })
            }
        };
        let mut text = Vec::new();
        file.take(MAX_STATE)
            .read_to_end(&mut text)
            .map_err(|source| StateError::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the state of `state.id` atomically: a temporary file in the
    /// same directory, fsync, then rename over `state.json`.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let dir = self.container_dir(&state.id);
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |what, p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io {
                what,
                path: p,
                source,
            }
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("write", &tmp))?;
        file.write_all(&bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("replace", &path))
    }

    /// Writes `value` as `id`'s record `file` (e.g. [`CGROUP_RECORD`]),
    /// replacing it atomically.
    pub fn save_record<T: serde::Serialize>(
        &self,
        id: &str,
        file: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let path = self.container_dir(id).join(file);
        let tmp = self.container_dir(id).join(format!(".{file}.tmp"));
        let bytes = serde_json::to_vec(value).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|source| StateError::Io {
                what: "write",
                path,
                source,
            })
    }

    /// Reads `id`'s record `file`, if it is there and whole.
    pub fn load_record<T: serde::de::DeserializeOwned>(&self, id: &str, file: &str) -> Option<T> {
        let text = fs::read(self.container_dir(id).join(file)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Removes the directory of `id` and everything in it.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                what: "remove",
                path: dir,
                source,
            }),
        }
    }

    /// The IDs of every directory in the root, sorted: containers, and
    /// those whose `state.json` is missing (a create or restore that
    /// stopped half-way), which `list` shows as broken.
    pub fn all_ids(&self) -> Result<Vec<String>, StateError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    what: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| !id.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The IDs of every container, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    what: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(STATE_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl State {
    /// The state of container `id` from `bundle` whose init is `pid`, with
    /// its start time read now and the given namespace paths.
    pub fn for_bundle(
        bundle: &crate::spec::Bundle,
        id: &str,
        status: Status,
        pid: u32,
        cgroup: Cgroup,
        namespaces: BTreeMap<String, PathBuf>,
    ) -> Self {
        Self {
            oci_version: bundle.spec.version().clone(),
            id: id.to_owned(),
            status,
            pid,
            pid_start_time: process_start(pid).map(|(t, _)| t).unwrap_or(0),
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: now(),
            cgroup: Some(cgroup),
            namespaces,
            annotations: bundle.annotations(),
            checkpoint: None,
            network: None,
        }
    }

    /// Whether the recorded init still runs: the pid exists, is not a
    /// zombie, and started at the recorded time.
    pub fn init_alive(&self) -> bool {
        self.pid != 0
            && matches!(process_start(self.pid), Some((start, state)) if start == self.pid_start_time && state != 'Z')
    }

    /// The status as it is now: a recorded running, created or paused
    /// container whose init is gone is stopped.
    pub fn refresh(&mut self) {
        if matches!(
            self.status,
            Status::Created | Status::Running | Status::Paused
        ) && !self.init_alive()
        {
            self.status = Status::Stopped;
        }
    }
}

/// The start time (clock ticks since boot) and state letter of a process.
pub fn process_start(pid: u32) -> Option<(u64, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 is starttime.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> State {
        State {
            oci_version: "1.0.2".into(),
            id: id.into(),
            status: Status::Created,
            pid: std::process::id(),
            pid_start_time: process_start(std::process::id()).unwrap().0,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now(),
            cgroup: None,
            namespaces: BTreeMap::new(),
            annotations: BTreeMap::new(),
            checkpoint: None,
            network: None,
        }
    }

    #[test]
    fn save_load_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path().join("root"));
        assert!(root.ids().unwrap().is_empty());
        root.create_dir("a").unwrap();
        assert!(matches!(root.create_dir("a"), Err(StateError::Exists(_))));
        let state = sample("a");
        root.save(&state).unwrap();
        assert_eq!(root.load("a").unwrap(), state);
        assert_eq!(root.ids().unwrap(), vec!["a"]);
        assert!(matches!(root.load("b"), Err(StateError::NotFound { .. })));
        std::fs::write(root.container_dir("a").join(STATE_FILE), "{").unwrap();
        assert!(matches!(root.load("a"), Err(StateError::Corrupt { .. })));
        root.remove("a").unwrap();
        root.remove("a").unwrap();
        assert!(root.ids().unwrap().is_empty());
    }

    #[test]
    fn pid_reuse_is_detected() {
        let mut state = sample("x");
        assert!(state.init_alive());
        state.status = Status::Running;
        state.pid_start_time += 1;
        assert!(!state.init_alive());
        state.refresh();
        assert_eq!(state.status, Status::Stopped);
    }
}
