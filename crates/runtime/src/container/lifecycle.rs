//! `start`, `kill`, `delete`, `pause`, `resume`, `state` and `ps`.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use serde::Serialize;

use super::hooks::{self, HookState};
use crate::state::{State, StateRoot, Status};

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid container ID")]
    Id(#[source] crate::spec::SpecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("container {id} is {status}; {action} needs it {wanted}")]
    WrongStatus {
        id: String,
        status: Status,
        action: &'static str,
        wanted: &'static str,
    },
    /// runc's words ("container not running") begin the message: the
    /// containerd shim reads a kill of an exited container by them.
    #[error("container not running: container {id} is {status}")]
    NotRunning { id: String, status: Status },
    #[error("cannot start container {0}: its init is waiting on no exec.fifo")]
    NoFifo(String, #[source] nix::Error),
    #[error("cannot signal container {0}")]
    Signal(String, #[source] nix::Error),
    #[error("cannot use the cgroup of container {0}")]
    Cgroup(String, #[source] crate::cgroups::CgroupError),
    #[error("container {0} has no cgroup, so it cannot be frozen")]
    NoCgroup(String),
    #[error("processes of container {0} did not exit within {1:?} after SIGKILL")]
    Stuck(String, Duration),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("cannot release the network of container {0}; fix the cause or delete with --force")]
    Network(String, #[source] crate::network::NetworkError),
}

fn wrong(state: &State, action: &'static str, wanted: &'static str) -> LifecycleError {
    LifecycleError::WrongStatus {
        id: state.id.clone(),
        status: state.status,
        action,
        wanted,
    }
}

/// Loads `id` with its status brought up to date. The ID is checked first,
/// so that "../other-root/ID" cannot reach outside the state root.
pub(crate) fn load(root: &StateRoot, id: &str) -> Result<State, LifecycleError> {
    crate::spec::validate_id(id).map_err(LifecycleError::Id)?;
    let mut state = root.load(id)?;
    state.refresh();
    Ok(state)
}

/// Lets the created container's user process run.
pub fn start(root: &StateRoot, id: &str) -> Result<State, LifecycleError> {
    let mut state = load(root, id)?;
    if state.status != Status::Created {
        return Err(wrong(&state, "start", "created"));
    }
    let fifo = root.container_dir(id).join("exec.fifo");
    // Opening for reading meets the init's blocked open for writing.
    let file = open(&fifo, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| LifecycleError::NoFifo(id.to_owned(), e))?;
    let mut byte = [0u8; 1];
    let _ = std::fs::File::from(file).read(&mut byte);
    let _ = std::fs::remove_file(&fifo);
    state.status = Status::Running;
    root.save(&state)?;
    // Poststart failures are logged, not fatal (OCI runtime spec): the
    // process runs either way.
    if let Err(e) = run_hooks(&state, "poststart") {
        tracing::warn!(id, error = %e, "poststart hook failed");
    }
    Ok(state)
}

/// Sends `signal` to the container's init (or, with `all`, every process
/// in its cgroup).
pub fn kill(root: &StateRoot, id: &str, signal: Signal, all: bool) -> Result<(), LifecycleError> {
    let state = load(root, id)?;
    if !matches!(
        state.status,
        Status::Created | Status::Running | Status::Paused
    ) {
        return Err(LifecycleError::NotRunning {
            id: state.id,
            status: state.status,
        });
    }
    if all {
        if let Some(cgroup) = &state.cgroup {
            return cgroup
                .signal_all(signal as i32)
                .map_err(|e| LifecycleError::Cgroup(id.to_owned(), e));
        }
    }
    nix::sys::signal::kill(Pid::from_raw(state.pid as i32), signal)
        .map_err(|e| LifecycleError::Signal(id.to_owned(), e))
}

/// How long `delete --force` waits for killed processes.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Deletes the container: its cgroup and state; poststop hooks run. A
/// running or paused container needs `force` (its processes are killed);
/// processes left in a stopped container's cgroup are killed either way.
pub fn delete(root: &StateRoot, id: &str, force: bool) -> Result<(), LifecycleError> {
    let state = match load(root, id) {
        Ok(state) => state,
        // A damaged state.json, or none (a create that died before writing
        // it): release what it attached, remove what can be found.
        Err(LifecycleError::State(_)) if force && super::broken_reason(root, id).is_some() => {
            super::delete_broken(root, id)?;
            return Ok(());
        }
        // runc's `delete --force` of a container that does not exist
        // succeeds: engines clean up that way after a failed create or a
        // checkpoint that removed the container.
        Err(LifecycleError::State(crate::state::StateError::NotFound { .. })) if force => {
            tracing::info!(id, "no such container; nothing to delete");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let live = matches!(
        state.status,
        Status::Created | Status::Running | Status::Paused
    );
    if live && state.status != Status::Created && !force {
        return Err(wrong(
            &state,
            "delete without --force",
            "stopped, created or checkpointed",
        ));
    }
    // A stopped container's cgroup can still hold processes: ones exec'd
    // into a container without a pid namespace of its own outlive its init.
    // runc's delete kills what is left; so does this.
    let leftovers = !live && cgroup_busy(&state);
    if leftovers {
        tracing::info!(
            id,
            "killing the processes left in the stopped container's cgroup"
        );
    }
    if live || leftovers {
        if let Some(cgroup) = &state.cgroup {
            // A frozen cgroup would keep SIGKILL pending.
            let _ = cgroup.thaw();
            let _ = cgroup.signal_all(libc::SIGKILL);
        }
        if live {
            let _ = nix::sys::signal::kill(Pid::from_raw(state.pid as i32), Signal::SIGKILL);
        }
        let until = Instant::now() + KILL_WAIT;
        while state.init_alive() || cgroup_busy(&state) {
            if Instant::now() > until {
                return Err(LifecycleError::Stuck(id.to_owned(), KILL_WAIT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(net) = state.network.as_ref().filter(|n| !n.released) {
        match crate::network::release(net) {
            Ok(()) => {}
            Err(e) if force => {
                tracing::warn!(id, error = %e, "cannot release the container's network; deleting anyway")
            }
            Err(e) => return Err(LifecycleError::Network(id.to_owned(), e)),
        }
    }
    if let Some(cgroup) = &state.cgroup {
        cgroup
            .remove()
            .map_err(|e| LifecycleError::Cgroup(id.to_owned(), e))?;
    }
    // The processes are gone: poststop hooks see a stopped container (as
    // with runc), not the status recorded before the kill.
    let state = State {
        status: Status::Stopped,
        ..state
    };
    // Poststop failures are logged, not fatal (OCI runtime spec).
    if let Err(e) = run_hooks(&state, "poststop") {
        tracing::warn!(id, error = %e, "poststop hook failed");
    }
    root.remove(id)?;
    // A bundle the runtime made itself (a migration received it) goes with
    // its container; a user's bundle is never touched.
    if state.bundle.join(OWNED_BUNDLE_MARKER).is_file() {
        if let Err(e) = std::fs::remove_dir_all(&state.bundle) {
            tracing::warn!(id, bundle = %state.bundle.display(), error = %e, "cannot remove the container's bundle");
        }
    }
    Ok(())
}

/// A file in a bundle directory that crabmigrate created (a migration
/// destination writes it): `delete` removes such a bundle with its
/// container.
pub const OWNED_BUNDLE_MARKER: &str = ".crabmigrate-owned-bundle";

fn cgroup_busy(state: &State) -> bool {
    state
        .cgroup
        .as_ref()
        .and_then(|c| c.pids().ok())
        .is_some_and(|pids| !pids.is_empty())
}

/// Freezes every process of the container.
pub fn pause(root: &StateRoot, id: &str) -> Result<State, LifecycleError> {
    let mut state = load(root, id)?;
    if state.status != Status::Running {
        return Err(wrong(&state, "pause", "running"));
    }
    let cgroup = state
        .cgroup
        .as_ref()
        .ok_or_else(|| LifecycleError::NoCgroup(id.to_owned()))?;
    cgroup
        .freeze()
        .map_err(|e| LifecycleError::Cgroup(id.to_owned(), e))?;
    state.status = Status::Paused;
    root.save(&state)?;
    Ok(state)
}

/// Thaws a paused container.
pub fn resume(root: &StateRoot, id: &str) -> Result<State, LifecycleError> {
    let mut state = load(root, id)?;
    if state.status != Status::Paused {
        return Err(wrong(&state, "resume", "paused"));
    }
    let cgroup = state
        .cgroup
        .as_ref()
        .ok_or_else(|| LifecycleError::NoCgroup(id.to_owned()))?;
    cgroup
        .thaw()
        .map_err(|e| LifecycleError::Cgroup(id.to_owned(), e))?;
    state.status = Status::Running;
    root.save(&state)?;
    Ok(state)
}

/// The OCI runtime spec's view of a container (`crabmigrate state`), with
/// runc's fields: `created` in RFC 3339 (engines parse it as a time),
/// `owner` (empty: containers belong to root). `status` may also be
/// `paused` (as with runc) and `checkpointed` (crabmigrate's: the images
/// hold the container, which `restore` brings back under this ID).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: u32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The CNI network attachment (`--network`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkStatus>,
}

/// The state of `id`, as `crabmigrate state` prints it.
pub fn oci_state(root: &StateRoot, id: &str) -> Result<OciState, LifecycleError> {
    let s = load(root, id)?;
    let pid = if s.init_alive() { s.pid } else { 0 };
    Ok(OciState {
        oci_version: s.oci_version,
        id: s.id,
        status: s.status,
        pid,
        bundle: s.bundle,
        rootfs: s.rootfs,
        created: rfc3339(s.created),
        owner: String::new(),
        annotations: s.annotations,
        network: s.network.as_ref().map(crate::network::Attachment::status),
    })
}

/// One process of a container.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub command: String,
}

/// The processes in the container's cgroup.
pub fn ps(root: &StateRoot, id: &str) -> Result<Vec<ProcessInfo>, LifecycleError> {
    let state = load(root, id)?;
    let Some(cgroup) = &state.cgroup else {
        return Ok(Vec::new());
    };
    let pids = cgroup
        .pids()
        .map_err(|e| LifecycleError::Cgroup(id.to_owned(), e))?;
    Ok(pids
        .into_iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            ProcessInfo { pid, command }
        })
        .collect())
}

/// Runs the bundle's hooks of `stage` ("poststart", "poststop").
pub(crate) fn run_hooks(state: &State, stage: &'static str) -> Result<(), hooks::HookError> {
    let Ok(bundle) = crate::spec::load(&state.bundle) else {
        return Ok(());
    };
    let Some(h) = bundle.spec.hooks() else {
        return Ok(());
    };
    let list = match stage {
        "poststart" => h.poststart().clone(),
        "poststop" => h.poststop().clone(),
        _ => None,
    }
    .unwrap_or_default();
    let status = state.status.to_string();
    hooks::run(
        stage,
        &list,
        &HookState {
            oci_version: &state.oci_version,
            id: &state.id,
            status: &status,
            pid: state.pid,
            bundle: &state.bundle,
            annotations: &state.annotations,
        },
    )
}

/// Seconds since the epoch as RFC 3339 in UTC (`2026-01-01T00:00:00Z`).
pub fn rfc3339(seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}
