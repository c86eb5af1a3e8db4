//! The frozen source's controls: SIGSTOP before the commit, SIGCONT after
//! a refusal, the runtime's pause for a container kept stopped, and the
//! thaw of a container CRIU froze and never thawed.

use crabmigrate_runtime::cgroups::FreezerState;
use crabmigrate_runtime::container;
use crabmigrate_runtime::state::{StateRoot, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::port::{Op, PortError, SourceTree, Workload};

/// The real controls.
#[derive(Debug)]
pub(super) struct Real {
    workload: Workload,
    root_pid: u32,
}

impl Real {
    pub(super) fn new(workload: Workload, root_pid: u32) -> Self {
        Self { workload, root_pid }
    }

    /// Every task of the tree: a container's cgroup members (the tree is
    /// frozen, so the list is complete), else the process tree.
    fn pids(&self) -> Vec<u32> {
        if let Workload::Container { id, state_root, .. } = &self.workload {
            let root = StateRoot::new(state_root.clone());
            if let Some(pids) = root
                .load(id)
                .ok()
                .and_then(|s| s.cgroup)
                .and_then(|c| c.all_pids().ok())
                .filter(|p| !p.is_empty())
            {
                return pids;
            }
        }
        crate::procs::tree(self.root_pid)
    }
}

fn signal(pids: &[u32], sig: Signal) -> Result<(), nix::Error> {
    for &pid in pids {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        match kill(Pid::from_raw(raw), sig) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl SourceTree for Real {
    fn tasks(&self) -> Vec<u32> {
        self.pids()
    }

    fn stop(&self, pids: &[u32]) -> Result<(), PortError> {
        signal(pids, Signal::SIGSTOP).map_err(|e| PortError::new(Op::Stop, e))
    }

    fn discard(&self, pids: &[u32]) {
        if let Err(e) = signal(pids, Signal::SIGKILL) {
            tracing::warn!(error = %e, "cannot kill the source's remaining tasks");
        }
    }

    fn cont(&self, pids: &[u32]) {
        if let Err(e) = signal(pids, Signal::SIGCONT) {
            tracing::warn!(error = %e, "cannot continue the source's tasks");
        }
    }

    fn settle_stopped(&self, pids: &[u32]) {
        let Workload::Container { id, state_root, .. } = &self.workload else {
            return;
        };
        // CRIU let go (and thawed): pause the container so that the
        // runtime knows, then let the tasks out of their stop into the
        // frozen cgroup.
        let root = StateRoot::new(state_root.clone());
        match container::pause(&root, id) {
            Ok(_) => {
                let _ = signal(pids, Signal::SIGCONT);
            }
            Err(e) => {
                tracing::warn!(id, error = %e, "cannot pause the source container kept stopped; its tasks stay stopped by SIGSTOP")
            }
        }
    }

    fn thaw_if_frozen(&self) -> Result<(), PortError> {
        let Workload::Container { id, state_root, .. } = &self.workload else {
            return Ok(());
        };
        let root = StateRoot::new(state_root.clone());
        let Ok(state) = root.load(id) else {
            return Ok(());
        };
        if state.status == Status::Paused {
            return Ok(());
        }
        let Some(cgroup) = &state.cgroup else {
            return Ok(());
        };
        if matches!(cgroup.freezer_state(), Ok(FreezerState::Thawed)) {
            return Ok(());
        }
        cgroup.thaw().map_err(|e| PortError::new(Op::Thaw, e))
    }
}
