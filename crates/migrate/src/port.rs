//! The `Checkpointer` port: everything the migration needs from CRIU and
//! the container runtime, on either host. [`crate::criu_port`] implements it
//! with criu-rpc and the runtime; unit tests use a fake. The state machines
//! in [`crate::source`] and [`crate::agent`] only ever talk to this trait.
//!
//! Long operations (a dump held at post-dump, a restore held at
//! post-restore, a page server, the lazy-pages daemon) run on their own
//! threads and report through the channels of a `*Run` value.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::hold::Hold;
use crate::protocol::WireStrategy;

/// Why the port failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}")]
pub struct PortError {
    /// What was being done.
    pub op: Op,
    /// A failure of CRIU crabmigrate recognises (its remedy is in the
    /// source's message).
    pub known: Option<criu_rpc::KnownFailure>,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

/// The operations of the port, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Op {
    #[error("cannot inspect the workload")]
    Inspect,
    #[error("cannot describe this CPU")]
    CpuinfoDump,
    #[error("this CPU cannot run the source's workload")]
    CpuinfoCheck,
    #[error("cannot run the container here")]
    Bundle,
    #[error("the source could not be dumped")]
    Dump,
    #[error("cannot start a page server")]
    PageServer,
    #[error("the page server failed")]
    PageServerRun,
    #[error("cannot start criu lazy-pages")]
    LazyPages,
    #[error("criu lazy-pages failed")]
    LazyPagesRun,
    #[error("restore failed on the destination")]
    Restore,
    #[error("cannot make a cgroup for the restored tree")]
    Cgroup,
    #[error("cannot kill the restored tree")]
    Kill,
    #[error("cannot start the watchdog")]
    Watchdog,
    #[error("cannot stop the source's tree")]
    Stop,
    #[error("cannot thaw the source container")]
    Thaw,
}

impl PortError {
    /// `op` failed because of `source`.
    pub fn new(
        op: Op,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            op,
            known: None,
            source: source.into(),
        }
    }

    /// With a recognised failure of CRIU.
    pub fn known(mut self, known: Option<criu_rpc::KnownFailure>) -> Self {
        self.known = known;
        self
    }
}

/// What moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// A process tree, by the pid of its root.
    Process { pid: u32 },
    /// A container of this host's runtime.
    Container {
        id: String,
        /// The runtime's state root on this host.
        state_root: PathBuf,
        /// The ID on the destination (the same if `None`).
        target_id: Option<String>,
        /// Both hosts see the rootfs at the same path: it is not sent.
        shared_rootfs: bool,
    },
}

impl Workload {
    /// `process` or `container`, for the report.
    pub fn kind(&self) -> WorkloadName {
        match self {
            Self::Process { .. } => WorkloadName::Process,
            Self::Container { .. } => WorkloadName::Container,
        }
    }

    /// The ID or pid, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Process { pid } => format!("process {pid}"),
            Self::Container { id, .. } => format!("container {id}"),
        }
    }
}

/// The kind of workload, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadName {
    Process,
    Container,
}

/// What the source knows about the workload before it connects.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The root process on this host.
    pub pid: u32,
    /// The tree's resident memory when the migration began, in bytes: the
    /// size estimate for the strategy, the space check and progress.
    pub memory: u64,
    /// An upper bound of the image files a dump writes.
    pub files_estimate: u32,
    /// Containers: the bundle on this host.
    pub bundle_dir: Option<PathBuf>,
    /// Containers: the rootfs to archive (none when shared).
    pub rootfs: Option<PathBuf>,
    /// Containers: the freezer directory of the container's cgroup
    /// (`freezer.state` on v1, `cgroup.freeze` on v2).
    pub freezer: Option<PathBuf>,
}

/// This host's facts for the [`crate::protocol::Hello`].
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub criu_version: String,
    /// `Err(why)` when this host cannot take part in post-copy.
    pub post_copy: Result<(), String>,
}

/// Where a dump's pages go.
#[derive(Debug)]
pub enum PagesTo {
    /// A page server at the other end of this socket (the tunnel's entry).
    PageServer(std::os::fd::OwnedFd),
    /// Kept here and served lazily on this port.
    Lazy(u16),
    /// Into the images directory.
    Images,
}

/// One dump.
#[derive(Debug)]
pub struct DumpJob {
    pub workload: Workload,
    pub dir: PathBuf,
    pub pages: PagesTo,
    pub leave_running: bool,
    pub tcp_established: bool,
    /// Hold the frozen tree at post-dump and hand it over (see
    /// [`DumpRun::frozen`]); `None`: no hold (a leave-running round).
    pub hold: Option<Arc<Hold>>,
}

/// What a dump's statistics say, when CRIU wrote them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DumpFigures {
    /// CRIU's frozen time, in milliseconds.
    pub frozen_ms: Option<f64>,
    /// Pages CRIU wrote.
    pub pages_written: Option<u64>,
}

/// A dump in progress.
#[derive(Debug)]
pub struct DumpRun {
    /// Fires at post-dump with the moment the tree was frozen; the tree is
    /// then held until the [`Hold`] is decided.
    pub frozen: oneshot::Receiver<Instant>,
    /// Fires when a lazy page server listens.
    pub serving: oneshot::Receiver<()>,
    /// The dump's end.
    pub done: oneshot::Receiver<Result<DumpFigures, PortError>>,
}

/// How a restored tree is placed.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// A process tree, into its own cgroup for this session.
    Process,
    /// A container of this host's runtime.
    Container {
        id: String,
        bundle_dir: PathBuf,
        state_root: PathBuf,
    },
}

/// One restore.
#[derive(Debug)]
pub struct RestoreJob {
    pub images_dir: PathBuf,
    pub target: RestoreTarget,
    pub tcp_established: bool,
    /// Post-copy: pages come from the lazy-pages daemon.
    pub lazy: bool,
    /// The tree's cgroup (see [`Checkpointer::tree`]).
    pub tree: Arc<dyn Tree>,
}

/// The restored tree, held before it runs, until the source decides.
#[derive(Debug)]
pub struct Held {
    pub pid: u32,
    /// From the restore's start to this point.
    pub restore_time: std::time::Duration,
    /// `true`: let it run (Commit); `false` or dropped: CRIU kills it.
    pub decide: std::sync::mpsc::Sender<bool>,
}

/// A restore in progress.
#[derive(Debug)]
pub struct RestoreRun {
    /// Fires at post-restore.
    pub held: oneshot::Receiver<Held>,
    /// The restore's end: the root pid once it runs.
    pub done: oneshot::Receiver<Result<u32, PortError>>,
}

/// A page server or lazy-pages daemon that is running.
#[derive(Debug)]
pub struct Daemon {
    /// Its loopback port.
    pub port: u16,
    /// Its end.
    pub done: oneshot::Receiver<Result<(), PortError>>,
}

/// A restored tree's cgroup: it holds every process of the tree, so the
/// tree is killed as a whole, escaped daemons included.
pub trait Tree: std::fmt::Debug + Send + Sync {
    /// Kills every process in it and waits until it is empty.
    fn kill(&self) -> Result<(), PortError>;
    /// Whether any process lives in it.
    fn occupied(&self) -> bool;
    /// Removes the cgroup if it is this session's own (after a kill, or
    /// once the tree ended).
    fn release(&self);
    /// Shell commands that kill it (for the watchdog, which must not need
    /// the agent).
    fn kill_script(&self) -> String;
    /// The `cgroup.procs` files CRIU enters before it restores, so the tree
    /// is born inside (empty: the runtime places a container's tree).
    fn enter_files(&self) -> Vec<PathBuf>;
}

/// A process, independent of the agent, that kills a tree unless told
/// that it may live: dropped unreleased (or its agent dead), it fires.
pub trait Watchdog: std::fmt::Debug + Send {
    /// The tree stands on its own: disarm.
    fn release(self: Box<Self>);
}

/// The frozen source's controls beyond CRIU's own hold.
pub trait SourceTree: std::fmt::Debug + Send + Sync {
    /// Every task of the (frozen, so complete) tree.
    fn tasks(&self) -> Vec<u32>;
    /// SIGSTOPs `pids` while CRIU still holds them, so that CRIU's death or
    /// resumption leaves them stopped.
    fn stop(&self, pids: &[u32]) -> Result<(), PortError>;
    /// Undoes [`SourceTree::stop`] (a refusal after the commit).
    fn cont(&self, pids: &[u32]);
    /// Kills stopped tasks CRIU failed to end after the destination
    /// committed.
    fn discard(&self, pids: &[u32]);
    /// After CRIU let go of a tree kept stopped (in doubt): containers are
    /// also paused, so that the runtime knows.
    fn settle_stopped(&self, pids: &[u32]);
    /// After a dump that failed: a container CRIU froze and never thawed
    /// (CRIU killed mid-dump) is thawed.
    fn thaw_if_frozen(&self) -> Result<(), PortError>;
}

/// The port.
pub trait Checkpointer: Send + Sync + 'static {
    /// This host's facts. Blocking.
    fn host(&self) -> HostFacts;

    // The source.

    /// The workload's facts, before anything is touched. Blocking.
    fn inspect(&self, workload: &Workload) -> Result<Subject, PortError>;
    /// Writes this CPU's description into `dir`. Blocking.
    fn cpuinfo_dump(&self, dir: &Path) -> Result<(), PortError>;
    /// Starts a dump.
    fn dump(&self, job: DumpJob) -> DumpRun;
    /// The controls of the frozen source.
    fn source_tree(&self, workload: &Workload, subject: &Subject) -> Arc<dyn SourceTree>;
    /// Containers: a process that thaws the container if this process
    /// dies before the migration decided (CRIU, killed with it, would
    /// leave it frozen). `None` for process trees, which CRIU's death
    /// resumes by itself.
    fn source_watchdog(
        &self,
        subject: &Subject,
    ) -> Result<Option<Box<dyn SourceWatchdog>>, PortError>;

    // The destination.

    /// Checks the source's CPU description in `dir`. Blocking.
    fn cpuinfo_check(&self, dir: &Path) -> Result<(), PortError>;
    /// Checks a received bundle against this host. Blocking.
    fn check_bundle(&self, bundle_dir: &Path, id: &str) -> Result<(), PortError>;
    /// The cgroup the restored tree will live in (`name`: the agent's
    /// scope and the session, letters and digits). Blocking.
    fn tree(&self, name: &str, target: &RestoreTarget) -> Result<Arc<dyn Tree>, PortError>;
    /// Removes what an earlier agent of `scope` left (empty session
    /// cgroups). Blocking.
    fn sweep(&self, scope: &str);
    /// Arms a watchdog on `tree`; post-copy does not start without one.
    fn watchdog(&self, tree: &dyn Tree) -> Result<Box<dyn Watchdog>, PortError>;
    /// Starts a page server writing into `images_dir`.
    fn page_server(&self, images_dir: &Path) -> Result<Daemon, PortError>;
    /// Starts `criu lazy-pages` for `images_dir`, connecting to `port`.
    fn lazy_pages(&self, images_dir: &Path, port: u16) -> Result<Daemon, PortError>;
    /// Starts a restore held at post-restore.
    fn restore(&self, job: RestoreJob) -> RestoreRun;
}

/// The source's watchdog: `hold` (the commit is near: a container stays
/// frozen even if this process dies) or `done` (decided).
pub trait SourceWatchdog: std::fmt::Debug + Send {
    /// The source is about to commit: keep it frozen from now on.
    fn hold(&mut self);
    /// The migration decided and the source is in its final state.
    fn done(self: Box<Self>);
}

/// Which strategy a dump serves, for messages.
pub fn strategy_name(s: WireStrategy) -> &'static str {
    match s {
        WireStrategy::StopCopy => "stop-copy",
        WireStrategy::PreCopy => "pre-copy",
        WireStrategy::PostCopy => "post-copy",
        WireStrategy::Unspecified => "unspecified",
    }
}
