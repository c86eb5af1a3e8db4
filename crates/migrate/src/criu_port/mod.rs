//! The [`Checkpointer`] port over criu-rpc and the container runtime.
//!
//! CRIU is always started in a process group of its own
//! ([`criu_rpc::IsolatedLauncher`]): a Ctrl-C on the terminal reaches only
//! crabmigrate, which decides what happens to the frozen workload. On the
//! destination a process tree's CRIU is first moved into the session's
//! cgroup, so the restored tree is born inside it.

mod dump;
mod restore;
mod source_tree;

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use crabmigrate_runtime::state::{StateRoot, Status};
use criu_rpc::{Criu, ImagesRequest, IsolatedLauncher};

use crate::cgroup::TreeCgroup;
use crate::port::{
    Checkpointer, Daemon, DumpJob, DumpRun, HostFacts, Op, PortError, RestoreJob, RestoreRun,
    RestoreTarget, SourceTree, SourceWatchdog, Subject, Tree, Watchdog, Workload,
};
use crate::watchdog::{ThawWatchdog, TreeWatchdog};

/// The real port.
#[derive(Debug, Clone)]
pub struct CriuCheckpointer {
    criu: Criu,
}

impl CriuCheckpointer {
    /// A port over `criu` (its launcher is replaced by one that isolates
    /// CRIU in its own process group).
    pub fn new(criu: Criu) -> Self {
        Self {
            criu: criu.with_launcher(Arc::new(IsolatedLauncher::default())),
        }
    }

    /// The CRIU client, for a tree's restore: inside its cgroup.
    fn criu_in(&self, tree: &dyn Tree) -> Criu {
        self.criu.clone().with_launcher(Arc::new(IsolatedLauncher {
            cgroup_procs: tree.enter_files(),
        }))
    }
}

/// The error chain on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether this host can do its part of post-copy: CRIU's lazy-pages
/// feature, and a pipe size CRIU's lazy page server can get.
fn post_copy_ready(criu: &Criu) -> Result<(), String> {
    use crabmigrate_runtime::host;
    let features = criu
        .feature_check(criu_rpc::Features::ALL)
        .map_err(|e| chain(&e))?;
    if !features.lazy_pages {
        return Err("CRIU reports no lazy-pages support (userfaultfd) on this host".into());
    }
    let privilege = host::privilege();
    let pipe = host::pipe_max_size().unwrap_or(0);
    if !privilege.cap_sys_resource && pipe < host::LAZY_PAGES_PIPE_SIZE {
        return Err(format!(
            "fs.pipe-max-size is {pipe}, below the {} CRIU's lazy page server needs (run scripts/setup.sh)",
            host::LAZY_PAGES_PIPE_SIZE
        ));
    }
    Ok(())
}

/// Resident memory of `pids` in bytes (a size estimate).
fn memory_of(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/statm"))
                .ok()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map(|pages| pages * 4096)
        .sum()
}

/// An upper bound of the image files CRIU writes for `pids`: about a dozen
/// per process (mm, pagemap, pages, fs, ids, fdinfo, ...) and one core
/// image per thread, plus the tree-wide ones.
fn files_estimate(pids: &[u32]) -> u32 {
    let threads: usize = pids
        .iter()
        .map(|p| {
            std::fs::read_dir(format!("/proc/{p}/task"))
                .map(|d| d.count())
                .unwrap_or(1)
        })
        .sum();
    let estimate = 64 + 12 * pids.len() + threads;
    u32::try_from(estimate).unwrap_or(u32::MAX)
}

fn inspect_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PortError {
    PortError::new(Op::Inspect, e)
}

impl Checkpointer for CriuCheckpointer {
    fn host(&self) -> HostFacts {
        HostFacts {
            criu_version: self
                .criu
                .version()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            post_copy: post_copy_ready(&self.criu),
        }
    }

    fn inspect(&self, workload: &Workload) -> Result<Subject, PortError> {
        match workload {
            Workload::Process { pid } => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return Err(inspect_error(format!("process {pid} does not exist")));
                }
                let pids = crate::procs::tree(*pid);
                Ok(Subject {
                    pid: *pid,
                    memory: memory_of(&pids),
                    files_estimate: files_estimate(&pids),
                    bundle_dir: None,
                    rootfs: None,
                    freezer: None,
                })
            }
            Workload::Container {
                id,
                state_root,
                shared_rootfs,
                ..
            } => {
                let root = StateRoot::new(state_root.clone());
                let mut state = root.load(id).map_err(inspect_error)?;
                state.refresh();
                if !matches!(state.status, Status::Running | Status::Paused) {
                    return Err(inspect_error(format!(
                        "container {id} is {}; only a running or paused container can be migrated",
                        state.status
                    )));
                }
                let spec = crabmigrate_runtime::spec::load(&state.bundle).map_err(inspect_error)?;
                if spec
                    .spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.terminal())
                    .unwrap_or(false)
                {
                    return Err(inspect_error(format!(
                        "container {id} has a terminal (process.terminal), whose master stays on this host; migrating it is not supported"
                    )));
                }
                let pids = match &state.cgroup {
                    Some(c) => c
                        .all_pids()
                        .unwrap_or_else(|_| crate::procs::tree(state.pid)),
                    None => crate::procs::tree(state.pid),
                };
                Ok(Subject {
                    pid: state.pid,
                    memory: memory_of(&pids),
                    files_estimate: files_estimate(&pids).saturating_add(1),
                    bundle_dir: Some(state.bundle.clone()),
                    rootfs: (!shared_rootfs).then(|| spec.rootfs.clone()),
                    freezer: state
                        .cgroup
                        .as_ref()
                        .and_then(|c| c.freezer_path().map(Path::to_path_buf)),
                })
            }
        }
    }

    fn cpuinfo_dump(&self, dir: &Path) -> Result<(), PortError> {
        let fail = |e: Box<dyn std::error::Error + Send + Sync>| PortError::new(Op::CpuinfoDump, e);
        let images = std::fs::File::open(dir).map_err(|e| fail(e.into()))?;
        let mut session = self.criu.session().map_err(|e| fail(e.into()))?;
        session
            .cpuinfo_dump(&ImagesRequest::new(images.as_fd()))
            .map_err(|e| fail(e.into()))
    }

    fn dump(&self, job: DumpJob) -> DumpRun {
        dump::start(self.criu.clone(), job)
    }

    fn source_tree(&self, workload: &Workload, subject: &Subject) -> Arc<dyn SourceTree> {
        Arc::new(source_tree::Real::new(workload.clone(), subject.pid))
    }

    fn source_watchdog(
        &self,
        subject: &Subject,
    ) -> Result<Option<Box<dyn SourceWatchdog>>, PortError> {
        match &subject.freezer {
            Some(freezer) => Ok(Some(Box::new(ThawWatchdog::arm(freezer)?))),
            None => Ok(None),
        }
    }

    fn cpuinfo_check(&self, dir: &Path) -> Result<(), PortError> {
        let fail =
            |e: Box<dyn std::error::Error + Send + Sync>| PortError::new(Op::CpuinfoCheck, e);
        let images = std::fs::File::open(dir).map_err(|e| fail(e.into()))?;
        let mut session = self.criu.session().map_err(|e| fail(e.into()))?;
        session
            .cpuinfo_check(&ImagesRequest::new(images.as_fd()))
            .map_err(|e| fail(e.into()))
    }

    fn check_bundle(&self, bundle_dir: &Path, id: &str) -> Result<(), PortError> {
        crate::bundle::check_received(bundle_dir, id).map_err(|e| PortError::new(Op::Bundle, e))
    }

    fn tree(&self, session: &str, target: &RestoreTarget) -> Result<Arc<dyn Tree>, PortError> {
        Ok(Arc::new(match target {
            RestoreTarget::Process => TreeCgroup::create_session(session)?,
            RestoreTarget::Container { id, bundle_dir, .. } => {
                TreeCgroup::for_container(bundle_dir, id)?
            }
        }))
    }

    fn sweep(&self, scope: &str) {
        crate::cgroup::sweep(scope);
    }

    fn watchdog(&self, tree: &dyn Tree) -> Result<Box<dyn Watchdog>, PortError> {
        Ok(Box::new(TreeWatchdog::arm(tree)?))
    }

    fn page_server(&self, images_dir: &Path) -> Result<Daemon, PortError> {
        restore::page_server(self.criu.clone(), images_dir)
    }

    fn lazy_pages(&self, images_dir: &Path, port: u16) -> Result<Daemon, PortError> {
        restore::lazy_pages(self.criu.clone(), images_dir, port)
    }

    fn restore(&self, job: RestoreJob) -> RestoreRun {
        let criu = self.criu_in(job.tree.as_ref());
        restore::start(criu, job)
    }
}
