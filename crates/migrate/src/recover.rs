//! In-doubt records and the way out of them.
//!
//! Before it sends Commit, the source writes a record of the frozen
//! workload into `WORK_DIR/in-doubt/SESSION.json` (the pids and start
//! times of a process tree, or a container's ID and state root) and only
//! then stops the tree with SIGSTOP. When the outcome is known the record
//! goes. If it stays — the connection broke after the commit, or
//! `crabmigrate migrate` itself was killed — `crabmigrate recover` lists
//! it, and resumes (`--resume`) or discards (`--discard`) the stopped
//! source, once the operator has checked whether the destination runs the
//! workload.

use std::path::{Path, PathBuf};

use crabmigrate_runtime::cgroups::FreezerState;
use crabmigrate_runtime::container;
use crabmigrate_runtime::state::{StateRoot, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The records' directory under the source's work directory.
pub const DIR: &str = "in-doubt";

/// One task of a recorded process tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: u32,
    /// Clock ticks since boot (`/proc/PID/stat` field 22): a pid with
    /// another start time is another process and is left alone.
    pub start_time: u64,
}

/// The stopped workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RecordedWorkload {
    Process {
        root: u32,
        tasks: Vec<Task>,
    },
    Container {
        id: String,
        state_root: PathBuf,
        /// Its ID on the destination.
        target_id: String,
    },
}

/// An in-doubt record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub session: String,
    /// The destination agent.
    pub to: String,
    pub workload: RecordedWorkload,
    /// Seconds since the epoch when the commit began.
    pub created: u64,
}

/// Why a record could not be written, read or acted on.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
    #[error("{0} is not an in-doubt record")]
    Format(PathBuf, #[source] serde_json::Error),
    #[error("no in-doubt migration {0:?} in {1}; `crabmigrate recover --work-dir DIR` lists them")]
    Unknown(String, PathBuf),
    #[error("invalid session name {0:?}")]
    BadSession(String),
    #[error("container {0}")]
    Container(String, #[source] Box<container::LifecycleError>),
    #[error("cannot signal process {0}")]
    Signal(u32, #[source] nix::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecoverError {
    let path = path.to_path_buf();
    move |e| RecoverError::Io(what, path, e)
}

/// The start time of `pid`, if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    crabmigrate_runtime::state::process_start(pid).map(|(start, _)| start)
}

fn path_of(work_dir: &Path, session: &str) -> Result<PathBuf, RecoverError> {
    if session.is_empty() || !session.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(RecoverError::BadSession(session.to_owned()));
    }
    Ok(work_dir.join(DIR).join(format!("{session}.json")))
}

impl Record {
    /// Writes the record durably (a temporary file renamed into place).
    pub fn write(&self, work_dir: &Path) -> Result<PathBuf, RecoverError> {
        let path = path_of(work_dir, &self.session)?;
        let dir = work_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let tmp = dir.join(format!(".{}.tmp", self.session));
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| RecoverError::Format(tmp.clone(), e))?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("write", &tmp))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(io("write", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io("write", &path))?;
        Ok(path)
    }

    /// The record of `session` in `work_dir`.
    pub fn load(work_dir: &Path, session: &str) -> Result<Self, RecoverError> {
        let path = path_of(work_dir, session)?;
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                RecoverError::Unknown(session.to_owned(), work_dir.join(DIR))
            }
            _ => RecoverError::Io("read", path.clone(), e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| RecoverError::Format(path, e))
    }

    /// Every record in `work_dir`.
    pub fn list(work_dir: &Path) -> Result<Vec<Self>, RecoverError> {
        let dir = work_dir.join(DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RecoverError::Io("list", dir, e)),
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(session) = name.strip_suffix(".json") {
                records.push(Self::load(work_dir, session)?);
            }
        }
        records.sort_by_key(|r| r.created);
        Ok(records)
    }

    /// Removes the record (the outcome is known).
    pub fn remove(work_dir: &Path, session: &str) {
        if let Ok(path) = path_of(work_dir, session) {
            let _ = std::fs::remove_file(path);
            // The directory goes with its last record.
            let _ = std::fs::remove_dir(work_dir.join(DIR));
        }
    }

    /// The recorded tasks that are still the same processes.
    fn live_tasks(tasks: &[Task]) -> Vec<u32> {
        tasks
            .iter()
            .filter(|t| start_time(t.pid) == Some(t.start_time))
            .map(|t| t.pid)
            .collect()
    }

    /// Resumes the stopped source (the destination does not run it), then
    /// removes the record.
    pub fn resume(&self, work_dir: &Path) -> Result<(), RecoverError> {
        match &self.workload {
            RecordedWorkload::Process { tasks, .. } => {
                for pid in Self::live_tasks(tasks) {
                    signal(pid, Signal::SIGCONT)?;
                }
            }
            RecordedWorkload::Container { id, state_root, .. } => {
                let root = StateRoot::new(state_root.clone());
                let mut state = root.load(id).map_err(|e| {
                    RecoverError::Container(
                        id.clone(),
                        Box::new(container::LifecycleError::State(e)),
                    )
                })?;
                state.refresh();
                let cgroup = state.cgroup.as_ref();
                // SIGCONT first: the tasks leave their stop into the
                // (still) frozen cgroup; the thaw lets them run.
                if let Some(pids) = cgroup.and_then(|c| c.all_pids().ok()) {
                    for pid in pids {
                        signal(pid, Signal::SIGCONT)?;
                    }
                }
                if state.status == Status::Paused {
                    container::resume(&root, id)
                        .map_err(|e| RecoverError::Container(id.clone(), Box::new(e)))?;
                } else if let Some(c) = cgroup {
                    if !matches!(c.freezer_state(), Ok(FreezerState::Thawed)) {
                        c.thaw().map_err(|e| {
                            RecoverError::Container(
                                id.clone(),
                                Box::new(container::LifecycleError::Cgroup(id.clone(), e)),
                            )
                        })?;
                    }
                }
            }
        }
        Self::remove(work_dir, &self.session);
        Ok(())
    }

    /// Discards the stopped source (the destination runs it), then
    /// removes the record.
    pub fn discard(&self, work_dir: &Path) -> Result<(), RecoverError> {
        match &self.workload {
            RecordedWorkload::Process { tasks, .. } => {
                for pid in Self::live_tasks(tasks) {
                    signal(pid, Signal::SIGKILL)?;
                }
            }
            RecordedWorkload::Container { id, state_root, .. } => {
                let root = StateRoot::new(state_root.clone());
                match container::delete(&root, id, true) {
                    Ok(()) => {}
                    Err(container::LifecycleError::State(
                        crabmigrate_runtime::state::StateError::NotFound { .. },
                    )) => {}
                    Err(e) => return Err(RecoverError::Container(id.clone(), Box::new(e))),
                }
            }
        }
        Self::remove(work_dir, &self.session);
        Ok(())
    }

    /// One line for `crabmigrate recover`.
    pub fn describe(&self) -> String {
        let what = match &self.workload {
            RecordedWorkload::Process { root, tasks } => {
                format!("process {root} ({} tasks)", tasks.len())
            }
            RecordedWorkload::Container { id, target_id, .. } => {
                format!("container {id} (there: {target_id})")
            }
        };
        format!("{}: {what} to {}", self.session, self.to)
    }
}

fn signal(pid: u32, sig: Signal) -> Result<(), RecoverError> {
    let raw = i32::try_from(pid).map_err(|_| RecoverError::Signal(pid, nix::Error::EINVAL))?;
    match kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(RecoverError::Signal(pid, e)),
    }
}

/// The command lines `crabmigrate recover` takes for `session`.
pub fn commands(work_dir: &Path, session: &str) -> (String, String) {
    let dir = work_dir.display();
    (
        format!("crabmigrate recover --work-dir {dir} --resume {session}"),
        format!("crabmigrate recover --work-dir {dir} --discard {session}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_record_resumes_and_discards_only_its_own_processes() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let record = Record {
            session: "0123456789abcdef".into(),
            to: "10.0.0.2:7070".into(),
            workload: RecordedWorkload::Process {
                root: pid,
                tasks: vec![
                    Task {
                        pid,
                        start_time: start_time(pid).unwrap(),
                    },
                    // Another process that once had this pid.
                    Task {
                        pid: std::process::id(),
                        start_time: 1,
                    },
                ],
            },
            created: 1,
        };
        record.write(dir.path()).unwrap();
        assert_eq!(Record::list(dir.path()).unwrap(), vec![record.clone()]);
        signal(pid, Signal::SIGSTOP).unwrap();
        let loaded = Record::load(dir.path(), &record.session).unwrap();
        loaded.resume(dir.path()).unwrap();
        assert!(
            Record::list(dir.path()).unwrap().is_empty(),
            "resumed: the record goes"
        );
        let state = crabmigrate_runtime::state::process_start(pid).unwrap().1;
        assert_ne!(state, 'T', "running again");

        record.write(dir.path()).unwrap();
        record.discard(dir.path()).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed: {status}");
        assert!(Record::list(dir.path()).unwrap().is_empty());
        assert!(matches!(
            Record::load(dir.path(), "ffff"),
            Err(RecoverError::Unknown(..))
        ));
        assert!(matches!(
            Record::load(dir.path(), "../x"),
            Err(RecoverError::BadSession(_))
        ));
    }
}
