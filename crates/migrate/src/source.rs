//! The source: `crabmigrate migrate` moves a workload to an agent.
//!
//! Every strategy starts with the same preflight and ends with the same
//! cut-over; they differ in how memory moves.
//!
//! ```text
//! source                                   destination agent
//!   |==== Noise NNpsk0 handshake ============|   (wrong key: refused here)
//!   |-- Hello ------------------------------>|
//!   |<------------------------------ Hello --|   (or Refuse: version, CRIU)
//!   |-- Prepare(session, workload, size) --->|   ID free, space
//!   |<---------------------------- Ack ------|
//!   |-- Manifest + cpuinfo.img ------------->|   CPUINFO_CHECK
//!   |<---------------------------- Ack ------|
//!   |-- Manifest + config.json ------------->|   containers: bundle checked
//!   |<---------------------------- Ack ------|   (mount sources, cgroup)
//!   :            memory, by strategy         :
//!   |<------------------------- Restored ----|   held at post-restore
//!   |-- Commit ----------------------------->|   tasks resume there
//!   |<------------------------ Committed ----|   (after the health check)
//!   ack post-dump: CRIU kills the source     |
//! ```
//!
//! Stop-copy:
//!
//! ```text
//!   |<----------------------- PagesReady ----|   page server on loopback
//!   |== data connection: StreamOpen(pages) ==|
//!   freeze, DUMP: pages ==== tunnel =======> page server
//!   post-dump (frozen, held)                 |
//!   |-- Manifest + images (+ rootfs tar) --->|   digests checked, RESTORE
//! ```
//!
//! Pre-copy (content-hashed rounds, see [`crate::chunks`]):
//!
//! ```text
//!   DUMP --leave-running, hash 4 KiB chunks  |
//!   |-- RoundStart(1) + new chunks + Ack --->|   chunk store
//!   |<---------------------------- Ack ------|
//!   ...  until converged (few bytes left, no shrinking, --max-rounds,
//!        or the estimate fits --downtime-budget)
//!   freeze, DUMP, post-dump (held), hash     |
//!   |-- RoundStart(last) + Manifest -------->|
//!   |-- new chunks + FileIndex + Ack ------->|   files assembled, checked,
//!   |                                        |   RESTORE
//! ```
//!
//! Post-copy:
//!
//! ```text
//!   freeze, DUMP --lazy-pages, post-dump     |
//!   |-- Manifest + images (no lazy pages) -->|
//!   |<---------------------------- Ack ------|   criu lazy-pages
//!   |== data connection: StreamOpen(lazy) ===|   page requests <-> pages
//!   CRIU serves pages while  <-------------->|   RESTORE --lazy-pages
//!   the destination runs                     |   watchdog until last page
//! ```
//!
//! Any failure before Commit (refusal, digest mismatch, restore error, lost
//! connection, failed health check) answers post-dump with "failed": CRIU
//! resumes the source, and the destination, which never got Commit, drops
//! its copy. After Commit the source never resumes.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc as sync_mpsc;
use std::time::{Duration, Instant};

use crabmigrate_runtime::container::{self, CheckpointOptions};
use crabmigrate_runtime::state::{StateRoot, Status};
use criu_rpc::{
    Criu, DumpRequest, DumpStats, ImagesRequest, Notify, NotifyResult, PageServerTarget,
};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::agent::{chain, make_hello};
use crate::bundle;
use crate::channel::{ChannelError, SecureChannel, SecureReceiver, SecureSender};
use crate::chunks::{self, ChunkSender};
use crate::events::{Event, Events};
use crate::key::Key;
use crate::protocol::{
    Abort, Body, Commit, Envelope, Hello, Prepare, RoundStart, StreamOpen, PROTOCOL_VERSION,
};
use crate::transfer::{self, Meter, TransferError};

/// How to move memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Pick from the probes of both hosts and say why.
    Auto,
    /// Freeze, dump with pages streamed to the destination, restore.
    StopCopy,
    /// Dump without most pages, restore at once, fault pages in over the
    /// network.
    PostCopy,
    /// Copy memory while the workload runs, then a short final round.
    PreCopy,
}

impl Strategy {
    fn wire(self) -> &'static str {
        match self {
            Self::Auto | Self::StopCopy => "stop-copy",
            Self::PostCopy => "post-copy",
            Self::PreCopy => "pre-copy",
        }
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
    fn kind(&self) -> &'static str {
        match self {
            Self::Process { .. } => "process",
            Self::Container { .. } => "container",
        }
    }
}

/// Pre-copy's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreCopyLimits {
    /// Rounds before the final one, at most.
    pub max_rounds: u32,
    /// Stop the rounds once the final round is expected to fit in this.
    pub downtime_budget: Option<Duration>,
}

impl Default for PreCopyLimits {
    fn default() -> Self {
        Self {
            max_rounds: 5,
            downtime_budget: None,
        }
    }
}

/// A migration request from the source.
#[derive(Debug, Clone)]
pub struct MigrateRequest {
    /// The agent, `HOST:PORT`.
    pub to: String,
    pub key: Key,
    pub workload: Workload,
    pub strategy: Strategy,
    pub pre_copy: PreCopyLimits,
    pub tcp_established: bool,
    /// Where the source writes its images (a fresh directory is made in it).
    pub work_dir: PathBuf,
    /// Checked on the destination before the migration commits.
    pub health: Health,
    /// Where progress goes.
    pub events: Events,
}

/// A health check the destination runs once the workload runs there; if it
/// fails within its time, the destination drops its copy and the source
/// resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Health {
    /// No check.
    #[default]
    None,
    /// A command run with `sh -c` on the destination; it must exit 0.
    Command(String),
    /// A TCP port on the destination's loopback that must accept.
    Tcp(u16),
}

/// One pre-copy round, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: u32,
    /// Bytes of all files of the round's dump.
    pub bytes_total: u64,
    /// Bytes of new chunks sent.
    pub bytes_sent: u64,
    /// Bytes of chunk lists sent (the final round only).
    pub index_bytes: u64,
    pub pages_written: u64,
    pub ms: f64,
    /// Whether the workload was frozen (the final round).
    pub last: bool,
}

/// What happened, for the user.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// "process" or "container".
    pub workload: &'static str,
    pub strategy: &'static str,
    pub why: String,
    /// Bytes of page data carried by the tunnel (stop-copy, post-copy).
    pub page_bytes: u64,
    /// Bytes of the other image files (and the rootfs archive).
    pub image_bytes: u64,
    /// Everything sent on the control and data connections, in bytes of
    /// content (pages, images, chunks and chunk lists).
    pub bytes_on_wire: u64,
    /// Pre-copy rounds, the final one last.
    pub rounds: Vec<RoundReport>,
    /// Why pre-copy stopped its rounds.
    pub converged: Option<String>,
    pub total_ms: f64,
    /// From the workload being frozen to the destination running it.
    pub downtime_ms: f64,
    /// CRIU's frozen time on the source (includes the hand-over).
    pub criu_frozen_ms: Option<f64>,
    /// Post-copy: from the destination running the workload to the last
    /// page arriving, while the workload depended on both hosts.
    pub dependent_ms: Option<f64>,
    pub destination_pid: u32,
}

/// Why a migration failed. Unless it says otherwise, the workload keeps
/// running on the source.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the agent at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("the destination refused: {0}")]
    Refused(String),
    #[error("the destination sent {got} where {expected} was due")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("the destination did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the migration was rolled back and the workload keeps running on the source: {0}")]
    RolledBack(String),
    #[error("process {0} does not exist")]
    NoProcess(u32),
    #[error("container {0}")]
    Container(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot {0}")]
    Local(&'static str, #[source] std::io::Error),
    #[error("CRIU on the source failed: {0}")]
    Criu(String),
    /// What the destination said about a failure the source saw as a
    /// broken connection.
    #[error("{0}")]
    Peer(String, #[source] Box<MigrateError>),
    /// The source sent Commit but never learned the outcome: the workload
    /// may run on the destination, so it is kept stopped here.
    #[error("{0}")]
    InDoubt(String),
}

fn expect(expected: &'static str, got: Body) -> MigrateError {
    match got {
        Body::Refuse(r) => MigrateError::Refused(r.reason),
        Body::Abort(a) => MigrateError::Refused(a.cause),
        other => MigrateError::Unexpected {
            expected,
            got: other.name(),
        },
    }
}

/// How long one answer of the destination may take (a restore of a large
/// workload included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

type Tx = SecureSender<tokio::io::WriteHalf<TcpStream>>;
type Rx = SecureReceiver<tokio::io::ReadHalf<TcpStream>>;

/// The next message, within [`ANSWER_TIMEOUT`].
async fn next(rx: &mut Rx) -> Result<Body, MigrateError> {
    tokio::time::timeout(ANSWER_TIMEOUT, rx.recv())
        .await
        .map_err(|_| MigrateError::Timeout(ANSWER_TIMEOUT))?
        .map_err(MigrateError::from)
}

async fn expect_ack(rx: &mut Rx) -> Result<(), MigrateError> {
    match next(rx).await? {
        Body::Ack(_) => Ok(()),
        other => Err(expect("Ack", other)),
    }
}

fn local(what: &'static str) -> impl FnOnce(std::io::Error) -> MigrateError {
    move |e| MigrateError::Local(what, e)
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, MigrateError> {
    r.map_err(|e| MigrateError::Local("run a task", std::io::Error::other(e)))
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MigrateError> {
    joined(tokio::task::spawn_blocking(f).await)
}

/// What the source knows about the workload before it connects.
struct Subject {
    /// The root process on this host.
    pid: u32,
    /// The tree's resident memory when the migration began, in bytes: the
    /// size estimate for the strategy, the space check and progress.
    memory: u64,
    /// Containers: the bundle on this host.
    bundle_dir: Option<PathBuf>,
    /// Containers: the rootfs to archive (none when shared).
    rootfs: Option<PathBuf>,
}

fn inspect(workload: &Workload) -> Result<Subject, MigrateError> {
    match workload {
        Workload::Process { pid } => {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(MigrateError::NoProcess(*pid));
            }
            Ok(Subject {
                pid: *pid,
                memory: tree_memory(*pid),
                bundle_dir: None,
                rootfs: None,
            })
        }
        Workload::Container {
            id,
            state_root,
            shared_rootfs,
            ..
        } => {
            let root = StateRoot::new(state_root.clone());
            let mut state = root
                .load(id)
                .map_err(|e| MigrateError::Container(id.clone(), Box::new(e)))?;
            state.refresh();
            if !matches!(state.status, Status::Running | Status::Paused) {
                return Err(MigrateError::Unavailable(format!(
                    "container {id} is {}; only a running or paused container can be migrated",
                    state.status
                )));
            }
            let spec = crabmigrate_runtime::spec::load(&state.bundle)
                .map_err(|e| MigrateError::Container(id.clone(), Box::new(e)))?;
            if spec
                .spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false)
            {
                return Err(MigrateError::Unavailable(format!(
                    "container {id} has a terminal (process.terminal), whose master stays on this host; migrating it is not supported"
                )));
            }
            Ok(Subject {
                pid: state.pid,
                memory: tree_memory(state.pid),
                bundle_dir: Some(state.bundle.clone()),
                rootfs: (!shared_rootfs).then(|| spec.rootfs.clone()),
            })
        }
    }
}

/// Moves `req.workload` to the agent at `req.to`.
pub async fn migrate(criu: Criu, mut req: MigrateRequest) -> Result<Report, MigrateError> {
    req.events.restart();
    let events = req.events.clone();
    let result = run(criu, &req).await;
    if let Err(e) = &result {
        events.emit(Event::Rollback { cause: chain(e) });
    }
    result
}

async fn run(criu: Criu, req: &MigrateRequest) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let events = &req.events;
    let subject = inspect(&req.workload)?;
    let preflight = events.phase("preflight", None, &Meter::default());
    let socket = transfer::connect(&req.to)
        .await
        .map_err(|e| MigrateError::Connect(req.to.clone(), e))?;
    let (mut tx, mut rx) = SecureChannel::connect(socket, &req.key).await?.split();
    let c = criu.clone();
    let ours = blocking(move || make_hello("source", &c)).await?;
    tx.send(&Envelope::new(Body::Hello(ours.clone()))).await?;
    let theirs = match next(&mut rx).await? {
        Body::Hello(h) if h.protocol_version == PROTOCOL_VERSION => h,
        other => return Err(expect("Hello", other)),
    };
    let (strategy, why) = choose(req.strategy, &ours, &theirs, subject.memory)?;
    tracing::info!(strategy = strategy.wire(), %why, "strategy");
    events.emit(Event::Strategy {
        strategy: strategy.wire().into(),
        why: why.clone(),
    });

    let session = session_name();
    let rootfs_size = subject.rootfs.as_deref().map_or(0, dir_size);
    let estimate = subject
        .memory
        .saturating_mul(2)
        .saturating_add(rootfs_size.saturating_mul(2))
        .saturating_add(64 << 20);
    let (target_id, shared_rootfs) = match &req.workload {
        Workload::Container {
            id,
            target_id,
            shared_rootfs,
            ..
        } => (
            target_id.clone().unwrap_or_else(|| id.clone()),
            *shared_rootfs,
        ),
        Workload::Process { .. } => (String::new(), false),
    };
    tx.send(&Envelope::new(Body::Prepare(Prepare {
        session: session.clone(),
        workload: req.workload.kind().into(),
        id: target_id,
        strategy: strategy.wire().into(),
        shared_rootfs,
        bundle_path: subject
            .bundle_dir
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        tcp_established: req.tcp_established,
        bytes_estimate: estimate,
        health_cmd: match &req.health {
            Health::Command(cmd) => cmd.clone(),
            _ => String::new(),
        },
        health_tcp: match req.health {
            Health::Tcp(port) => u32::from(port),
            _ => 0,
        },
    })))
    .await?;
    expect_ack(&mut rx).await?;

    // This CPU's description, checked by the destination.
    let work = tempfile_dir(&req.work_dir, &session)?;
    let cpuinfo_dir = work.path.join("cpuinfo");
    std::fs::create_dir_all(&cpuinfo_dir).map_err(local("create a work directory"))?;
    let c = criu.clone();
    let dir = cpuinfo_dir.clone();
    blocking(move || -> Result<(), String> {
        let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
        let mut s = c.session().map_err(|e| chain(&e))?;
        s.cpuinfo_dump(&ImagesRequest::new(std::os::fd::AsFd::as_fd(&images)))
            .map_err(|e| chain(&e))
    })
    .await?
    .map_err(MigrateError::Criu)?;
    transfer::send_dir(&mut tx, &cpuinfo_dir, |_| false).await?;
    expect_ack(&mut rx).await?;

    // Containers: the bundle's config, checked by the destination.
    if let Some(bundle_dir) = &subject.bundle_dir {
        let out = work.path.join("bundle");
        let from = bundle_dir.clone();
        let o = out.clone();
        blocking(move || bundle::export_config(&from, shared_rootfs, &o))
            .await?
            .map_err(|e| MigrateError::Container(req_id(&req.workload), Box::new(e)))?;
        transfer::send_dir(&mut tx, &out, |_| false).await?;
        expect_ack(&mut rx).await?;
    }
    preflight.finish();

    let images_dir = work.path.join("images");
    std::fs::create_dir_all(&images_dir).map_err(local("create a work directory"))?;
    let mut link = Link {
        tx,
        rx,
        to: req.to.clone(),
        key: req.key.clone(),
        session,
        wire: Meter::default(),
    };
    let job = Job {
        criu,
        req,
        subject,
        images_dir,
        work_dir: work.path.clone(),
    };
    let outcome = match strategy {
        Strategy::PostCopy => post_copy(&job, &mut link).await,
        Strategy::PreCopy => pre_copy(&job, &mut link).await,
        _ => stop_copy(&job, &mut link).await,
    };
    let mut report = match outcome {
        Ok(report) => report,
        // A send that failed because the destination hung up: its refusal,
        // if it sent one, is the real cause.
        Err(e @ (MigrateError::Channel(_) | MigrateError::Transfer(_))) => {
            return Err(match destination_cause(&mut link).await {
                Some(theirs) => MigrateError::Peer(theirs, Box::new(e)),
                None => e,
            })
        }
        Err(e) => return Err(e),
    };
    // The source copy is gone (CRIU killed it): forget the container here.
    if let Workload::Container { id, state_root, .. } = &req.workload {
        let root = StateRoot::new(state_root.clone());
        if let Err(e) = container::delete(&root, id, true) {
            tracing::warn!(id, error = %chain(&e), "cannot remove the migrated container's state on the source");
        }
    }
    report.workload = req.workload.kind();
    report.why = why;
    report.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

fn req_id(w: &Workload) -> String {
    match w {
        Workload::Container { id, .. } => id.clone(),
        Workload::Process { pid } => pid.to_string(),
    }
}

/// At or below this much memory, auto picks stop-copy: it moves the
/// workload in a fraction of a second, with no window in which the
/// workload depends on both hosts.
const SMALL_WORKLOAD: u64 = 64 << 20;

/// The strategy for `asked`, from both hosts' Hellos and the workload's
/// resident memory, and why.
fn choose(
    asked: Strategy,
    ours: &Hello,
    theirs: &Hello,
    memory: u64,
) -> Result<(Strategy, String), MigrateError> {
    let post_copy = match (ours.post_copy, theirs.post_copy) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("the source cannot: {}", ours.post_copy_why)),
        (_, false) => Err(format!("the destination cannot: {}", theirs.post_copy_why)),
    };
    match asked {
        Strategy::StopCopy => Ok((Strategy::StopCopy, "asked for".into())),
        Strategy::PreCopy => Ok((
            Strategy::PreCopy,
            "asked for; rounds of leave-running dumps sent as content-hashed chunks (no soft-dirty memory tracking is used)".into(),
        )),
        Strategy::PostCopy => match post_copy {
            Ok(()) => Ok((Strategy::PostCopy, "asked for".into())),
            Err(why) => Err(MigrateError::Unavailable(format!(
                "post-copy is not possible: {why}; use --strategy stop-copy or pre-copy"
            ))),
        },
        Strategy::Auto if memory <= SMALL_WORKLOAD => Ok((
            Strategy::StopCopy,
            format!(
                "auto: the workload holds {} MiB, which stop-copy moves at once, without a time in which it depends on both hosts",
                memory >> 20
            ),
        )),
        Strategy::Auto => Ok(match post_copy {
            Ok(()) => (
                Strategy::PostCopy,
                format!(
                    "auto: the workload holds {} MiB and both hosts support lazy pages, so it stops only for its non-lazy state",
                    memory >> 20
                ),
            ),
            Err(why) => (
                Strategy::StopCopy,
                format!("auto: post-copy is not possible ({why})"),
            ),
        }),
    }
}

/// The control connection and what data connections need.
struct Link {
    tx: Tx,
    rx: Rx,
    to: String,
    key: Key,
    session: String,
    /// Content bytes sent on every connection.
    wire: Meter,
}

impl Link {
    /// Opens a data connection of this session for `purpose`.
    async fn data(&self, purpose: &str) -> Result<SecureChannel<TcpStream>, MigrateError> {
        let socket = transfer::connect(&self.to)
            .await
            .map_err(|e| MigrateError::Connect(self.to.clone(), e))?;
        let mut data = SecureChannel::connect(socket, &self.key).await?;
        data.send(&Envelope::new(Body::StreamOpen(StreamOpen {
            session: self.session.clone(),
            purpose: purpose.into(),
        })))
        .await?;
        Ok(data)
    }

    /// Restored, Commit, Committed: the cut-over. Returns the destination
    /// pid and when it started running.
    async fn commit(&mut self) -> Result<(u32, Instant), MigrateError> {
        let restored = match next(&mut self.rx).await? {
            Body::Restored(r) => r,
            other => return Err(expect("Restored", other)),
        };
        tracing::info!(pid = restored.pid, "destination restored, committing");
        // From here on the source never resumes on its own: the destination
        // may run the workload as soon as Commit arrives. Only a refusal
        // (its copy is gone) lets the source resume; anything else leaves
        // the outcome in doubt.
        let in_doubt = |e: MigrateError| MigrateError::InDoubt(chain(&e));
        self.tx
            .send(&Envelope::new(Body::Commit(Commit {})))
            .await
            .map_err(|e| in_doubt(e.into()))?;
        match next(&mut self.rx).await {
            Ok(Body::Committed(c)) => Ok((c.pid, Instant::now())),
            Ok(refusal @ (Body::Refuse(_) | Body::Abort(_))) => Err(expect("Committed", refusal)),
            Ok(other) => Err(in_doubt(expect("Committed", other))),
            Err(e) => Err(in_doubt(e)),
        }
    }

    async fn abort(&mut self, cause: &str) {
        let _ = self
            .tx
            .send(&Envelope::new(Body::Abort(Abort {
                cause: cause.into(),
            })))
            .await;
    }
}

/// One migration's local facts, shared by the strategies.
struct Job<'a> {
    criu: Criu,
    req: &'a MigrateRequest,
    subject: Subject,
    images_dir: PathBuf,
    work_dir: PathBuf,
}

/// Where a dump's pages go.
#[derive(Debug)]
enum PagesTo {
    /// A page server at the other end of this socket (the tunnel's entry).
    PageServer(std::os::fd::OwnedFd),
    /// Kept here and served lazily on this port.
    Lazy(u16),
    /// Into the images directory.
    Images,
}

impl Job<'_> {
    /// Dumps the workload into `dir` on a blocking thread; `notify` sees
    /// CRIU's notifications (the hand-over holds post-dump).
    fn dump(
        &self,
        dir: &Path,
        pages: PagesTo,
        leave_running: bool,
        mut notify: Option<Handover>,
    ) -> tokio::task::JoinHandle<Result<Option<DumpStats>, String>> {
        let criu = self.criu.clone();
        let workload = self.req.workload.clone();
        let tcp = self.req.tcp_established;
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let notify = notify.as_mut().map(|n| n as &mut dyn Notify);
            match workload {
                Workload::Process { pid } => {
                    let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
                    let mut request = DumpRequest::new(pid, std::os::fd::AsFd::as_fd(&images));
                    request.options.tcp_established = tcp;
                    request.options.leave_running = leave_running;
                    match &pages {
                        PagesTo::PageServer(socket) => {
                            request.options.page_server =
                                Some(PageServerTarget::Socket(socket.as_fd()));
                        }
                        PagesTo::Lazy(port) => request.lazy_pages_port = Some(*port),
                        PagesTo::Images => {}
                    }
                    criu.dump(&request, notify)
                        .map(|o| o.stats)
                        .map_err(|e| chain(&e))
                }
                Workload::Container { id, state_root, .. } => {
                    let root = StateRoot::new(state_root);
                    let opts = CheckpointOptions {
                        images_dir: dir,
                        leave_running,
                        tcp_established: tcp,
                        page_server_socket: match &pages {
                            PagesTo::PageServer(socket) => Some(socket.as_fd()),
                            _ => None,
                        },
                        lazy_pages_port: match pages {
                            PagesTo::Lazy(port) => Some(port),
                            _ => None,
                        },
                        ..Default::default()
                    };
                    container::checkpoint(&criu, &root, &id, &opts, notify)
                        .map(|o| o.stats)
                        .map_err(|e| chain(&e))
                }
            }
        })
    }

    /// Containers: archives the rootfs into `dir` (the workload is frozen
    /// for the final copy). Returns the archive's size.
    async fn archive_rootfs(&self, dir: &Path) -> Result<u64, MigrateError> {
        let Some(rootfs) = self.subject.rootfs.clone() else {
            return Ok(0);
        };
        let tar = dir.join(bundle::ROOTFS_TAR);
        blocking(move || bundle::archive_rootfs(&rootfs, &tar))
            .await?
            .map_err(|e| MigrateError::Container(req_id(&self.req.workload), Box::new(e)))
    }

    /// Sends the images directory as a digest-checked transfer.
    async fn send_images(&self, link: &mut Link) -> Result<u64, MigrateError> {
        let events = &self.req.events;
        let meter = link.wire.clone();
        let phase = events.phase("images", Some(dir_size(&self.images_dir)), &meter);
        let sent =
            transfer::send_dir_metered(&mut link.tx, &self.images_dir, |_| false, &meter).await?;
        phase.finish();
        Ok(sent)
    }
}

/// Waits for the frozen hand-over, or reports why the dump failed.
async fn frozen(
    job: &Job<'_>,
    link: &mut Link,
    frozen_rx: oneshot::Receiver<(Instant, Verdict)>,
    dump: tokio::task::JoinHandle<Result<Option<DumpStats>, String>>,
) -> Result<
    (
        Instant,
        Verdict,
        tokio::task::JoinHandle<Result<Option<DumpStats>, String>>,
    ),
    MigrateError,
> {
    match frozen_rx.await {
        Ok((at, verdict)) => {
            job.req.events.emit(Event::Frozen);
            Ok((at, verdict, dump))
        }
        Err(_) => {
            let why = match dump.await {
                Ok(Err(why)) => why,
                _ => "the dump ended early".into(),
            };
            // A dump that failed writing to the page stream usually failed
            // because of the destination, which says why.
            let cause = match destination_cause(link).await {
                Some(theirs) => format!("{theirs} (the source's dump: {why})"),
                None => format!("the source could not be dumped: {why}"),
            };
            link.abort(&cause).await;
            Err(MigrateError::RolledBack(cause))
        }
    }
}

/// A refusal the destination sent but the source has not read yet (it was
/// busy sending), within a moment.
async fn destination_cause(link: &mut Link) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(2), link.rx.recv()).await {
        Ok(Ok(Body::Refuse(r))) => Some(format!("the destination refused: {}", r.reason)),
        Ok(Ok(Body::Abort(a))) => Some(format!("the destination gave up: {}", a.cause)),
        _ => None,
    }
}

async fn stop_copy(job: &Job<'_>, link: &mut Link) -> Result<Report, MigrateError> {
    let events = &job.req.events;
    // The page stream: CRIU -> loopback -> encrypted data connection.
    match next(&mut link.rx).await? {
        Body::PagesReady(_) => {}
        other => return Err(expect("PagesReady", other)),
    }
    // CRIU writes its pages into one end of a socket pair (no loopback TCP
    // hop); the other end is carried over the encrypted data connection.
    let (criu_end, our_end) =
        std::os::unix::net::UnixStream::pair().map_err(local("make a socket pair"))?;
    our_end
        .set_nonblocking(true)
        .map_err(local("make a socket pair"))?;
    let our_end = tokio::net::UnixStream::from_std(our_end).map_err(local("make a socket pair"))?;
    let data = link.data("pages").await?;
    let pages_meter = link.wire.clone();
    // CRIU has written every page once it reaches post-dump (it waited for
    // the page server's answer to its last command): the frozen hand-over
    // ends the stream, since this process holds CRIU's end too.
    let (pages_done_tx, pages_done_rx) = oneshot::channel();
    let pump = tokio::spawn(transfer::pump_metered(
        our_end,
        data,
        pages_meter.clone(),
        Some(pages_done_rx),
    ));
    let memory = events.phase("memory", Some(job.subject.memory), &pages_meter);

    // The dump runs on a blocking thread; at post-dump it hands control to
    // this task and waits for the verdict.
    let (frozen_tx, frozen_rx) = oneshot::channel::<(Instant, Verdict)>();
    let dump = job.dump(
        &job.images_dir,
        PagesTo::PageServer(criu_end.into()),
        false,
        Some(Handover::new(frozen_tx, None)),
    );
    let (frozen_at, verdict, dump) = frozen(job, link, frozen_rx, dump).await?;
    let _ = pages_done_tx.send(());
    let cut_over = async {
        let pumped = joined(pump.await)??;
        memory.finish();
        job.archive_rootfs(&job.images_dir).await?;
        let image_bytes = job.send_images(link).await?;
        let (dest_pid, running_at) = link.commit().await?;
        Ok::<_, MigrateError>((pumped, image_bytes, dest_pid, running_at))
    }
    .await;
    let (pumped, image_bytes, dest_pid, running_at) = match cut_over {
        Ok(x) => x,
        Err(e) => return Err(roll_back(job, link, verdict, dump, e).await),
    };
    let _ = verdict.send(Ok(()));
    let downtime_ms = ms(running_at.duration_since(frozen_at));
    events.emit(Event::CutOver {
        destination_pid: dest_pid,
        downtime_ms,
    });
    let frozen_ms = finished_dump(dump).await?;
    Ok(Report {
        workload: "",
        strategy: "stop-copy",
        why: String::new(),
        page_bytes: pumped.out,
        image_bytes,
        bytes_on_wire: link.wire.get(),
        rounds: Vec::new(),
        converged: None,
        total_ms: 0.0,
        downtime_ms,
        criu_frozen_ms: frozen_ms,
        dependent_ms: None,
        destination_pid: dest_pid,
    })
}

/// Resumes the source after a failure before Commit: tells the destination,
/// refuses post-dump, waits for CRIU. After Commit, in doubt, keeps the
/// source stopped instead (see [`hold_in_doubt`]).
async fn roll_back(
    job: &Job<'_>,
    link: &mut Link,
    verdict: Verdict,
    dump: tokio::task::JoinHandle<Result<Option<DumpStats>, String>>,
    e: MigrateError,
) -> MigrateError {
    if let MigrateError::InDoubt(cause) = e {
        return hold_in_doubt(job, verdict, dump, &cause).await;
    }
    // A send that failed because the destination hung up: its refusal,
    // if it sent one, is the real cause.
    let cause = match &e {
        MigrateError::Channel(_) | MigrateError::Transfer(_) => destination_cause(link)
            .await
            .map(|theirs| format!("{theirs} ({})", chain(&e)))
            .unwrap_or_else(|| chain(&e)),
        _ => chain(&e),
    };
    link.abort(&cause).await;
    let _ = verdict.send(Err(cause.clone()));
    let _ = dump.await;
    MigrateError::RolledBack(cause)
}

/// The connection broke after Commit: the destination may run the
/// workload, or may have dropped it. Neither resuming (two copies) nor
/// killing (none) is safe, so the source is kept stopped: every task gets
/// SIGSTOP while CRIU still holds it, then CRIU lets go. A container is
/// also paused (its cgroup frozen) so that `crabmigrate resume` works.
async fn hold_in_doubt(
    job: &Job<'_>,
    verdict: Verdict,
    dump: tokio::task::JoinHandle<Result<Option<DumpStats>, String>>,
    cause: &str,
) -> MigrateError {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids = crate::procs::tree(job.subject.pid);
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
    }
    let _ = verdict.send(Err(
        "in doubt after the commit: the workload is kept stopped".into(),
    ));
    let _ = dump.await;
    let (check, resume, delete) = match &job.req.workload {
        Workload::Container {
            id,
            state_root,
            target_id,
            ..
        } => {
            let root = StateRoot::new(state_root.clone());
            if container::pause(&root, id).is_ok() {
                for &pid in &pids {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
                }
            }
            (
                format!(
                    "`crabmigrate state {}` there",
                    target_id.as_deref().unwrap_or(id)
                ),
                format!("`crabmigrate resume {id}`"),
                format!("`crabmigrate delete --force {id}`"),
            )
        }
        Workload::Process { pid } => {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            (
                format!("whether the workload runs there (its pid {pid} here)"),
                format!("`kill -CONT {}`", list.join(" ")),
                format!("`kill -KILL {}`", list.join(" ")),
            )
        }
    };
    tracing::error!(%cause, "migration in doubt; the source is kept stopped");
    MigrateError::InDoubt(format!(
        "the connection to {} broke after the commit ({cause}), so the workload may run there: it is kept stopped here, neither resumed nor killed; check {check}, then if it runs there remove it here with {delete}, else resume it here with {resume}",
        job.req.to
    ))
}

/// CRIU's frozen time once the committed dump ends.
async fn finished_dump(
    dump: tokio::task::JoinHandle<Result<Option<DumpStats>, String>>,
) -> Result<Option<f64>, MigrateError> {
    Ok(match joined(dump.await)? {
        Ok(stats) => stats.map(|s| f64::from(s.frozen_time_us) / 1000.0),
        Err(why) => {
            // The destination runs the workload already; the source's CRIU
            // failing to finish is reported, not rolled back.
            tracing::warn!(%why, "the source dump reported a failure after commit");
            None
        }
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Below this many new bytes a pre-copy round counts as converged.
const CONVERGED_BYTES: u64 = 2 << 20;

async fn pre_copy(job: &Job<'_>, link: &mut Link) -> Result<Report, MigrateError> {
    let events = &job.req.events;
    let limits = job.req.pre_copy;
    let mut sender = ChunkSender::new();
    let mut rounds: Vec<RoundReport> = Vec::new();
    let mut rate = 0f64; // bytes per second of the last round's sending
    let converged;
    let mut round = 0u32;
    loop {
        round += 1;
        let dir = job.work_dir.join(format!("round-{round}"));
        std::fs::create_dir_all(&dir).map_err(local("create a work directory"))?;
        let started = Instant::now();
        let meter = link.wire.clone();
        let phase = events.phase(&format!("round {round}"), None, &meter);
        let stats = joined(job.dump(&dir, PagesTo::Images, true, None).await)?
            .map_err(MigrateError::Criu)?;
        job.archive_rootfs(&dir).await?;
        let d = dir.clone();
        let files = blocking(move || chunks::hash_dir(&d))
            .await?
            .map_err(TransferError::from)?;
        link.tx
            .send(&Envelope::new(Body::RoundStart(RoundStart {
                round,
                last: false,
            })))
            .await?;
        let send_started = Instant::now();
        let sent = sender
            .send(&mut link.tx, &dir, &files, false, &meter)
            .await?;
        expect_ack(&mut link.rx).await?;
        let send_time = send_started.elapsed().as_secs_f64();
        if send_time > 0.0 && sent.data > 0 {
            rate = sent.data as f64 / send_time;
        }
        let _ = std::fs::remove_dir_all(&dir);
        phase.finish();
        let report = RoundReport {
            round,
            bytes_total: sent.total,
            bytes_sent: sent.data,
            index_bytes: 0,
            pages_written: stats.map_or(0, |s| s.pages_written),
            ms: ms(started.elapsed()),
            last: false,
        };
        events.emit(Event::Round {
            round,
            pages_written: report.pages_written,
            bytes_total: report.bytes_total,
            bytes_sent: report.bytes_sent,
            bytes_left: 0,
            ms: report.ms,
        });
        let previous = rounds.last().map(|r| r.bytes_sent);
        rounds.push(report);
        // Stop on convergence: little left, no progress, the round limit,
        // or a final round that fits the budget.
        let threshold = CONVERGED_BYTES.max(sent.total / 50);
        if round > 1 && sent.data <= threshold {
            converged = format!(
                "round {round} sent {} KiB, below the {} KiB threshold",
                sent.data >> 10,
                threshold >> 10
            );
            break;
        }
        if let Some(prev) = previous {
            if sent.data.saturating_mul(10) >= prev.saturating_mul(9) {
                converged = format!(
                    "round {round} sent {} KiB, not less than round {}'s {} KiB: the workload dirties memory as fast as it is copied",
                    sent.data >> 10,
                    round - 1,
                    prev >> 10
                );
                break;
            }
        }
        if let (Some(budget), true) = (limits.downtime_budget, round > 1 && rate > 0.0) {
            let expected = Duration::from_secs_f64(sent.data as f64 / rate);
            if expected <= budget {
                converged = format!(
                    "the final round should take about {} ms to send, within the {} ms budget",
                    expected.as_millis(),
                    budget.as_millis()
                );
                break;
            }
        }
        if round >= limits.max_rounds.max(1) {
            converged = format!("the limit of {} rounds", limits.max_rounds.max(1));
            break;
        }
    }
    events.emit(Event::Converged {
        rounds: round,
        why: converged.clone(),
    });

    // The final round: frozen, dumped here, only changed chunks sent.
    let final_round = round + 1;
    let started = Instant::now();
    let meter = link.wire.clone();
    let phase = events.phase(&format!("round {final_round} (final)"), None, &meter);
    let (frozen_tx, frozen_rx) = oneshot::channel::<(Instant, Verdict)>();
    let dump = job.dump(
        &job.images_dir,
        PagesTo::Images,
        false,
        Some(Handover::new(frozen_tx, None)),
    );
    let (frozen_at, verdict, dump) = frozen(job, link, frozen_rx, dump).await?;
    let cut_over = async {
        job.archive_rootfs(&job.images_dir).await?;
        let d = job.images_dir.clone();
        let hashing = Instant::now();
        let files = blocking(move || chunks::hash_dir(&d))
            .await?
            .map_err(TransferError::from)?;
        tracing::info!(
            frozen_for_ms = ms(frozen_at.elapsed()),
            hash_ms = ms(hashing.elapsed()),
            "final round dumped and hashed"
        );
        link.tx
            .send(&Envelope::new(Body::RoundStart(RoundStart {
                round: final_round,
                last: true,
            })))
            .await?;
        let sent = sender
            .send(&mut link.tx, &job.images_dir, &files, true, &meter)
            .await?;
        let committed = link.commit().await?;
        Ok::<_, MigrateError>((sent, committed))
    }
    .await;
    let (sent, (dest_pid, running_at)) = match cut_over {
        Ok(x) => x,
        Err(e) => return Err(roll_back(job, link, verdict, dump, e).await),
    };
    let _ = verdict.send(Ok(()));
    phase.finish();
    let downtime_ms = ms(running_at.duration_since(frozen_at));
    events.emit(Event::CutOver {
        destination_pid: dest_pid,
        downtime_ms,
    });
    let frozen_ms = finished_dump(dump).await?;
    rounds.push(RoundReport {
        round: final_round,
        bytes_total: sent.total,
        bytes_sent: sent.data,
        index_bytes: sent.index,
        pages_written: 0,
        ms: ms(started.elapsed()),
        last: true,
    });
    Ok(Report {
        workload: "",
        strategy: "pre-copy",
        why: String::new(),
        page_bytes: 0,
        image_bytes: 0,
        bytes_on_wire: rounds.iter().map(|r| r.bytes_sent + r.index_bytes).sum(),
        rounds,
        converged: Some(converged),
        total_ms: 0.0,
        downtime_ms,
        criu_frozen_ms: frozen_ms,
        dependent_ms: None,
        destination_pid: dest_pid,
    })
}

async fn post_copy(job: &Job<'_>, link: &mut Link) -> Result<Report, MigrateError> {
    let events = &job.req.events;
    let lazy_port = free_port()?;
    let (frozen_tx, frozen_rx) = oneshot::channel::<(Instant, Verdict)>();
    let (serving_tx, serving_rx) = oneshot::channel::<()>();
    let dump = job.dump(
        &job.images_dir,
        PagesTo::Lazy(lazy_port),
        false,
        Some(Handover::new(frozen_tx, Some(serving_tx))),
    );
    let (frozen_at, verdict, dump) = frozen(job, link, frozen_rx, dump).await?;
    // Everything but the lazy pages goes first; until the destination has
    // it, refusing post-dump resumes the source.
    let sent = async {
        job.archive_rootfs(&job.images_dir).await?;
        let image_bytes = job.send_images(link).await?;
        expect_ack(&mut link.rx).await?;
        Ok::<_, MigrateError>(image_bytes)
    }
    .await;
    let image_bytes = match sent {
        Ok(b) => b,
        Err(e) => {
            let cause = chain(&e);
            link.abort(&cause).await;
            let _ = verdict.send(Err(cause.clone()));
            // CRIU starts its lazy page server even after a refused
            // post-dump; make it fail so that it resumes the source.
            if matches!(
                tokio::time::timeout(LAZY_STOP_TIMEOUT, serving_rx).await,
                Ok(Ok(()))
            ) {
                fail_lazy_server(lazy_port).await;
            }
            let _ = tokio::time::timeout(LAZY_STOP_TIMEOUT, dump).await;
            return Err(MigrateError::RolledBack(cause));
        }
    };
    let _ = verdict.send(Ok(()));
    // CRIU now serves the lazy pages on lazy_port; carry them.
    let serving = tokio::time::timeout(ANSWER_TIMEOUT, serving_rx).await;
    let mut pump = None;
    let pages_meter = Meter::default();
    let carried = async {
        if !matches!(serving, Ok(Ok(()))) {
            return Err(MigrateError::Criu(
                "the lazy page server did not start".into(),
            ));
        }
        let data = link.data("lazy").await?;
        let criu_conn = TcpStream::connect(("127.0.0.1", lazy_port))
            .await
            .map_err(local("connect to CRIU's lazy page server"))?;
        pump = Some(tokio::spawn(transfer::pump_metered(
            criu_conn,
            data,
            pages_meter.clone(),
            None,
        )));
        link.commit().await
    }
    .await;
    let (dest_pid, running_at) = match carried {
        Ok(x) => x,
        Err(e) => {
            let cause = chain(&e);
            link.abort(&cause).await;
            // CRIU's lazy page server must fail (a plain end of stream
            // would read as "all pages served" and kill the source): a
            // pump resets its connection when its stream breaks, which the
            // abort causes; without a pump, a bad command does it.
            match pump {
                Some(pump) => {
                    let _ = tokio::time::timeout(LAZY_STOP_TIMEOUT, pump).await;
                }
                None => fail_lazy_server(lazy_port).await,
            }
            let _ = tokio::time::timeout(LAZY_STOP_TIMEOUT, dump).await;
            return Err(MigrateError::RolledBack(cause));
        }
    };
    let downtime_ms = ms(running_at.duration_since(frozen_at));
    events.emit(Event::CutOver {
        destination_pid: dest_pid,
        downtime_ms,
    });
    // The destination runs; pages flow until the last one is fetched.
    let pages = events.phase("lazy pages", Some(job.subject.memory), &pages_meter);
    let dumped = joined(dump.await)?;
    let last_page_at = Instant::now();
    let pumped = match pump {
        Some(pump) => joined(pump.await)?,
        None => Ok(transfer::Pumped::default()),
    };
    let pumped = match (dumped, pumped) {
        (Ok(_), Ok(pumped)) => pumped,
        (Err(why), _) => {
            // CRIU resumed the source after a broken transfer; the
            // destination drops its copy when its page daemon fails.
            return Err(MigrateError::RolledBack(format!(
                "the page transfer broke after the destination started ({why}); the destination's copy is killed"
            )));
        }
        (Ok(_), Err(e)) => {
            return Err(MigrateError::Criu(format!(
                "CRIU reports every page served but the page stream failed ({}); check the workload on {}",
                chain(&e),
                job.req.to
            )));
        }
    };
    pages.finish();
    let dependent_ms = ms(last_page_at.duration_since(running_at));
    events.emit(Event::LastPage { dependent_ms });
    Ok(Report {
        workload: "",
        strategy: "post-copy",
        why: String::new(),
        page_bytes: pumped.out,
        image_bytes,
        bytes_on_wire: link.wire.get() + pumped.out,
        rounds: Vec::new(),
        converged: None,
        total_ms: 0.0,
        downtime_ms,
        criu_frozen_ms: None,
        dependent_ms: Some(dependent_ms),
        destination_pid: dest_pid,
    })
}

/// How long stopping CRIU's lazy page server after a failure may take.
const LAZY_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes CRIU's lazy page server fail, so that CRIU resumes the source: a
/// connection that sends an invalid command and closes with a reset.
async fn fail_lazy_server(port: u16) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut socket) = TcpStream::connect(("127.0.0.1", port)).await {
        let _ = socket.write_all(&[0xff; 24]).await;
        let _ = socket.set_zero_linger();
    }
}

/// A TCP port free right now (CRIU's lazy page server needs a number).
fn free_port() -> Result<u16, MigrateError> {
    let socket = std::net::TcpListener::bind(("0.0.0.0", 0)).map_err(local("find a free port"))?;
    Ok(socket
        .local_addr()
        .map_err(local("find a free port"))?
        .port())
}

/// The verdict on a frozen source: `Ok` kills it, `Err(cause)` resumes it.
type Verdict = sync_mpsc::Sender<Result<(), String>>;

/// Hands the frozen tree to the async side at post-dump and waits; tells it
/// when a lazy page server is ready.
struct Handover {
    frozen_at: Option<Instant>,
    frozen: Option<oneshot::Sender<(Instant, Verdict)>>,
    serving: Option<oneshot::Sender<()>>,
}

impl Handover {
    fn new(
        frozen: oneshot::Sender<(Instant, Verdict)>,
        serving: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            frozen_at: None,
            frozen: Some(frozen),
            serving,
        }
    }
}

impl Notify for Handover {
    fn status_ready(&mut self) -> NotifyResult {
        if let Some(serving) = self.serving.take() {
            let _ = serving.send(());
        }
        Ok(())
    }

    fn query_ext_files(&mut self) -> Result<Vec<criu_rpc::External>, criu_rpc::NotifyError> {
        // The tree is frozen by now: downtime starts here.
        self.frozen_at.get_or_insert_with(Instant::now);
        Ok(Vec::new())
    }

    fn post_dump(&mut self) -> NotifyResult {
        let (verdict_tx, verdict_rx) = sync_mpsc::channel();
        let at = self.frozen_at.unwrap_or_else(Instant::now);
        if let Some(frozen) = self.frozen.take() {
            frozen
                .send((at, verdict_tx))
                .map_err(|_| "the migration ended before the handover")?;
        }
        match verdict_rx.recv_timeout(HANDOVER_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cause)) => Err(cause.into()),
            Err(_) => Err("the handover did not finish in time".into()),
        }
    }
}

/// The longest a frozen source waits for the destination.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(600);

fn session_name() -> String {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    hex::encode(bytes)
}

/// Resident memory of the whole tree in bytes (a size estimate).
fn tree_memory(pid: u32) -> u64 {
    crate::procs::tree(pid)
        .iter()
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

/// Bytes of the regular files under `dir` (an estimate; errors count 0).
fn dir_size(dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
    walk(dir)
}

/// A work directory removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir(base: &Path, session: &str) -> Result<WorkDir, MigrateError> {
    let path = base.join(format!("migrate-{session}"));
    std::fs::create_dir_all(&path)
        .map_err(|e| MigrateError::Local("create a work directory", e))?;
    Ok(WorkDir { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(post_copy: bool, why: &str) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            post_copy,
            post_copy_why: why.into(),
            ..Default::default()
        }
    }

    #[test]
    fn auto_picks_post_copy_only_where_both_hosts_can() {
        const BIG: u64 = 1 << 30;
        let (s, why) = choose(Strategy::Auto, &hello(true, ""), &hello(true, ""), BIG).unwrap();
        assert_eq!(s, Strategy::PostCopy);
        assert!(why.contains("lazy pages"), "{why}");
        let (s, why) = choose(
            Strategy::Auto,
            &hello(true, ""),
            &hello(false, "no uffd"),
            BIG,
        )
        .unwrap();
        assert_eq!(s, Strategy::StopCopy);
        assert!(why.contains("destination cannot: no uffd"), "{why}");
        let (s, why) =
            choose(Strategy::Auto, &hello(true, ""), &hello(true, ""), 16 << 20).unwrap();
        assert_eq!(s, Strategy::StopCopy, "a small workload moves at once");
        assert!(why.contains("16 MiB"), "{why}");
        let err = choose(
            Strategy::PostCopy,
            &hello(false, "small pipes"),
            &hello(true, ""),
            BIG,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("source cannot: small pipes"),
            "{err}"
        );
        let (s, why) =
            choose(Strategy::PreCopy, &hello(false, ""), &hello(false, ""), BIG).unwrap();
        assert_eq!(s, Strategy::PreCopy);
        assert!(why.contains("content-hashed"), "{why}");
        assert_eq!(
            choose(Strategy::StopCopy, &hello(true, ""), &hello(true, ""), BIG)
                .unwrap()
                .0,
            Strategy::StopCopy
        );
    }
}
