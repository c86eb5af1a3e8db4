//! The source: `crabmigrate migrate` moves a workload to an agent.
//!
//! Every strategy starts with the same preflight and ends with the same
//! cut-over; they differ in how memory moves ([`stop_copy`], [`pre_copy`],
//! [`post_copy`]).
//!
//! ```text
//! source                                   destination agent
//!   |==== greeting (version), Noise NNpsk0 ==|   (other version, other key:
//!   |-- Hello ------------------------------>|    refused here, by name)
//!   |<------------------------------ Hello --|   (or Refuse: CRIU too old)
//!   |-- Prepare(session, workload, sizes) -->|   ID free, space, file count,
//!   |<---------------------------- Ack ------|   health check offered
//!   |-- Manifest + cpuinfo.img ------------->|   CPUINFO_CHECK
//!   |<---------------------------- Ack ------|
//!   |-- Manifest + config.json ------------->|   containers: bundle checked
//!   |<---------------------------- Ack ------|   (mount sources, cgroup)
//!   :            memory, by strategy         :
//!   |<------------------------- Restored ----|   held at post-restore
//!   record, SIGSTOP every task               |
//!   |-- Commit ----------------------------->|   tasks resume there
//!   |<------------------------ Committed ----|   (after the health check)
//!   release post-dump: CRIU kills the source |
//! ```
//!
//! The source's states and what a failure in each means:
//!
//! ```text
//!   Preflight ----------------------------\
//!   Rounds (pre-copy, still running) ------> failure: nothing to undo
//!   Frozen (CRIU holds it) ----------------> failure: Abort, resume (the
//!   Sending, AwaitingRestored ------------/   FrozenSource guard)
//!   Committing (record written, SIGSTOP, Commit sent)
//!       Committed -> Released: CRIU ends the source
//!       Refuse    -> SIGCONT, resume (the destination's copy is gone)
//!       anything else -> InDoubt: kept stopped, `crabmigrate recover`
//! ```
//!
//! A signal (SIGINT, SIGTERM, SIGHUP) before Committing rolls back; from
//! Committing on the cut-over finishes first.

mod cutover;
mod error;
mod frozen;
mod link;
mod plan;
mod post_copy;
mod pre_copy;
mod stop_copy;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bundle;
use crate::deadlines;
use crate::events::{Event, Events};
use crate::hold::Hold;
use crate::interrupt::Interrupt;
use crate::key::Key;
use crate::meter::Meter;
use crate::port::{
    Checkpointer, DumpJob, DumpRun, PagesTo, PortError, SourceTree, Subject, Workload, WorkloadName,
};
use crate::protocol::{
    Body, HealthCheck, Hello, Prepare, Role, Step, WireStrategy, WorkloadKind, PROTOCOL_VERSION,
};
use crate::transfer;

pub use error::{InDoubt, MigrateError, Refusal, Unavailable};
pub use link::{Dialer, TcpDialer};
pub use plan::{converge, Convergence, RoundFigures};

use frozen::{FrozenSource, WatchdogSlot};
use link::{expect, Link};

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
    fn wire(self) -> WireStrategy {
        match self {
            Self::Auto | Self::StopCopy => WireStrategy::StopCopy,
            Self::PostCopy => WireStrategy::PostCopy,
            Self::PreCopy => WireStrategy::PreCopy,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::StopCopy => "stop-copy",
            Self::PostCopy => "post-copy",
            Self::PreCopy => "pre-copy",
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

/// A health check the destination runs once the workload runs there; if it
/// fails within its time, the destination drops its copy and the source
/// resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Health {
    /// No check.
    #[default]
    None,
    /// A check the destination's agent defines (`--health-check
    /// NAME=COMMAND` there), by name.
    Named(String),
    /// A TCP port on the destination's loopback that must accept.
    Tcp(u16),
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
    /// Where the source writes its images (a fresh directory is made in it)
    /// and keeps in-doubt records.
    pub work_dir: PathBuf,
    /// Checked on the destination before the migration commits.
    pub health: Health,
    /// Where progress goes.
    pub events: Events,
    /// SIGINT and friends.
    pub interrupt: Interrupt,
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
    /// Pages CRIU wrote in the round's dump (absent if CRIU did not say).
    pub pages_written: Option<u64>,
    pub ms: f64,
    /// Whether the workload was frozen (the final round).
    pub last: bool,
}

/// What happened, for the user.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: WorkloadName,
    pub strategy: Strategy,
    pub why: String,
    /// The migration's session name (the agent logs it).
    pub session: String,
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
    pub converged: Option<Convergence>,
    pub total_ms: f64,
    /// From the workload being frozen to the destination running it.
    pub downtime_ms: f64,
    /// CRIU's frozen time on the source (includes the hand-over), when
    /// CRIU reported it.
    pub criu_frozen_ms: Option<f64>,
    /// The destination's restore, from its start until the tree was held
    /// before running.
    pub restore_ms: Option<f64>,
    /// Post-copy: from the destination running the workload to the last
    /// page arriving, while the workload depended on both hosts.
    pub dependent_ms: Option<f64>,
    pub destination_pid: u32,
}

/// The error chain on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    crate::criu_port::chain(e)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Moves `req.workload` to the agent at `req.to` over TCP.
pub async fn migrate(
    port: Arc<dyn Checkpointer>,
    req: MigrateRequest,
) -> Result<Report, MigrateError> {
    let dialer = Arc::new(TcpDialer::new(&req.to));
    migrate_via(port, dialer, req).await
}

/// Moves `req.workload` to the agent `dialer` reaches.
pub async fn migrate_via(
    port: Arc<dyn Checkpointer>,
    dialer: Arc<dyn Dialer>,
    mut req: MigrateRequest,
) -> Result<Report, MigrateError> {
    req.events.restart();
    let events = req.events.clone();
    // An interrupt is a rollback wherever it came: the user learns the
    // workload runs on.
    let result = run(port, dialer, &req).await.map_err(|e| match e {
        e @ MigrateError::Interrupted(_) => MigrateError::RolledBack(Box::new(e)),
        other => other,
    });
    match &result {
        Err(MigrateError::InDoubt(d)) => events.emit(Event::InDoubt {
            session: d.session.clone(),
            resume: d.resume.clone(),
            discard: d.discard.clone(),
        }),
        Err(e) => events.emit(Event::Rollback { cause: chain(e) }),
        Ok(_) => {}
    }
    result
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MigrateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MigrateError::Local("run a task", std::io::Error::other(e)))
}

fn session_name() -> String {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    hex::encode(bytes)
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

/// A private work directory (mode 0700: it holds the workload's memory),
/// locked while its migration runs, removed on drop.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The prefix of a migration's work directory.
const WORK_PREFIX: &str = "migrate-";

impl WorkDir {
    fn create(base: &Path, session: &str) -> Result<Self, MigrateError> {
        use std::os::unix::fs::DirBuilderExt;
        let local = |e| MigrateError::Local("create a work directory", e);
        std::fs::create_dir_all(base).map_err(local)?;
        sweep_work_dir(base);
        let path = base.join(format!("{WORK_PREFIX}{session}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(local)?;
        let file = std::fs::File::create(path.join(".lock")).map_err(local)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| local(e.into()))?;
        Ok(Self { path, _lock: lock })
    }
}

/// Removes the work directories that migrations killed with SIGKILL left
/// in `base` (a running migration holds its directory's lock). Returns
/// what it removed.
pub fn sweep_work_dir(base: &Path) -> Vec<PathBuf> {
    let mut swept = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return swept;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || !entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            continue;
        }
        let unlocked = match std::fs::File::open(path.join(".lock")) {
            Ok(file) => {
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
            }
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if unlocked && std::fs::remove_dir_all(&path).is_ok() {
            tracing::info!(dir = %path.display(), "swept the work directory of a killed migration");
            swept.push(path);
        }
    }
    swept
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One migration's local facts, shared by the strategies.
pub(crate) struct Job<'a> {
    port: Arc<dyn Checkpointer>,
    req: &'a MigrateRequest,
    subject: Subject,
    images_dir: PathBuf,
    work_dir: PathBuf,
    tree: Arc<dyn SourceTree>,
    watchdog: WatchdogSlot,
    target_id: String,
}

impl Job<'_> {
    /// Runs `fut` unless a signal arrives first (before the commit only).
    async fn interruptible<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, MigrateError>>,
    ) -> Result<T, MigrateError> {
        tokio::select! {
            r = fut => r,
            signal = self.req.interrupt.wait() => Err(MigrateError::Interrupted(signal)),
        }
    }

    fn dump(
        &self,
        dir: &Path,
        pages: PagesTo,
        leave_running: bool,
        hold: Option<Arc<Hold>>,
    ) -> DumpRun {
        self.port.dump(DumpJob {
            workload: self.req.workload.clone(),
            dir: dir.to_path_buf(),
            pages,
            leave_running,
            tcp_established: self.req.tcp_established,
            hold,
        })
    }

    /// A hold for the final dump, with the deadline the protocol allows.
    fn hold(&self) -> Arc<Hold> {
        let rootfs = self.subject.rootfs.as_deref().map_or(0, dir_size);
        #[cfg(test)]
        if let Some(d) = tests::HOLD.with(std::cell::Cell::get) {
            return Arc::new(Hold::new(d));
        }
        Arc::new(Hold::new(deadlines::hold(self.subject.memory + rootfs)))
    }

    /// Waits until the dump holds the frozen tree; a dump that fails
    /// first rolls back (thawing a container CRIU left frozen), with the
    /// destination's word on it when it has one.
    async fn freeze(
        &self,
        link: &mut Link,
        run: DumpRun,
        hold: Arc<Hold>,
    ) -> Result<(FrozenSource, tokio::sync::oneshot::Receiver<()>), MigrateError> {
        let DumpRun {
            frozen,
            serving,
            done,
        } = run;
        let waited = self.interruptible(async { Ok(frozen.await) }).await;
        match waited {
            Ok(Ok(at)) => {
                self.req.events.emit(Event::Frozen);
                let guard = FrozenSource::new(
                    at,
                    hold,
                    Arc::clone(&self.tree),
                    done,
                    Arc::clone(&self.watchdog),
                );
                Ok((guard, serving))
            }
            Ok(Err(_)) => {
                let failure = done.await.unwrap_or_else(|_| {
                    Err(PortError::new(
                        crate::port::Op::Dump,
                        "the dump ended early",
                    ))
                });
                let tree = Arc::clone(&self.tree);
                let _ = blocking(move || tree.thaw_if_frozen()).await;
                let e = match failure {
                    Err(e) => MigrateError::Port(e),
                    Ok(_) => MigrateError::Port(PortError::new(
                        crate::port::Op::Dump,
                        "the dump ended without holding the tree",
                    )),
                };
                // A dump that failed writing to the page stream usually
                // failed because of the destination, which says why.
                let e = match link.destination_cause().await {
                    Some(theirs) => MigrateError::Peer(theirs, Box::new(e)),
                    None => e,
                };
                link.abort(&chain(&e)).await;
                Err(MigrateError::RolledBack(Box::new(e)))
            }
            Err(interrupted) => {
                // Resume the tree as soon as CRIU holds it, and wait.
                hold.decide(crate::hold::Verdict::Resume);
                let _ = done.await;
                let tree = Arc::clone(&self.tree);
                let _ = blocking(move || tree.thaw_if_frozen()).await;
                link.abort(&chain(&interrupted)).await;
                Err(MigrateError::RolledBack(Box::new(interrupted)))
            }
        }
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
            .map_err(|e| MigrateError::Local("archive the rootfs", std::io::Error::other(e)))
    }

    /// Sends the images directory as a digest-checked transfer.
    async fn send_images(&self, link: &mut Link) -> Result<u64, MigrateError> {
        let meter = link.wire.clone();
        let phase = self
            .req
            .events
            .phase("images", Some(dir_size(&self.images_dir)), &meter);
        let sent = transfer::send_dir(&mut link.tx, &self.images_dir, |_| false, &meter).await?;
        phase.finish();
        Ok(sent)
    }

    fn record_facts(&self, link: &Link) -> frozen::RecordFacts {
        frozen::RecordFacts {
            work_dir: self.req.work_dir.clone(),
            session: link.session.clone(),
            to: link.to().to_owned(),
            container: match &self.req.workload {
                Workload::Container { id, state_root, .. } => {
                    Some((id.clone(), state_root.clone(), self.target_id.clone()))
                }
                Workload::Process { .. } => None,
            },
            root_pid: self.subject.pid,
        }
    }
}

/// What a strategy measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    page_bytes: u64,
    image_bytes: u64,
    rounds: Vec<RoundReport>,
    converged: Option<Convergence>,
    downtime_ms: f64,
    criu_frozen_ms: Option<f64>,
    restore_ms: Option<f64>,
    dependent_ms: Option<f64>,
    destination_pid: u32,
}

async fn run(
    port: Arc<dyn Checkpointer>,
    dialer: Arc<dyn Dialer>,
    req: &MigrateRequest,
) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let events = &req.events;
    let p = Arc::clone(&port);
    let workload = req.workload.clone();
    let subject = blocking(move || p.inspect(&workload)).await??;
    let preflight = events.phase("preflight", None, &Meter::default());
    let mut link = Link::connect(dialer, &req.key).await?;
    let p = Arc::clone(&port);
    let facts = blocking(move || p.host()).await?;
    link.tx
        .send(Body::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Source as i32,
            criu_version: facts.criu_version.clone(),
            kernel: crabmigrate_runtime::host::kernel_release(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            post_copy: facts.post_copy.is_ok(),
            post_copy_why: facts.post_copy.clone().err().unwrap_or_default(),
            ..Default::default()
        }))
        .await?;
    let theirs = match link.next_within(deadlines::MESSAGE).await? {
        Body::Hello(h)
            if h.protocol_version == PROTOCOL_VERSION && h.role == Role::Destination as i32 =>
        {
            h
        }
        other => return Err(expect("Hello", other)),
    };
    let ability = plan::PostCopyAbility {
        source: facts.post_copy,
        destination: if theirs.post_copy {
            Ok(())
        } else {
            Err(theirs.post_copy_why.clone())
        },
    };
    let (strategy, why) =
        plan::choose(req.strategy, &ability, subject.memory).map_err(MigrateError::Unavailable)?;
    if let Health::Named(name) = &req.health {
        if !theirs.health_checks.contains(name) {
            return Err(MigrateError::Unavailable(Unavailable::HealthCheck {
                name: name.clone(),
                offered: theirs.health_checks.clone(),
            }));
        }
    }
    if theirs.max_files > 0 && subject.files_estimate > theirs.max_files {
        return Err(MigrateError::Unavailable(Unavailable::TooManyFiles {
            estimate: subject.files_estimate,
            limit: theirs.max_files,
        }));
    }
    tracing::info!(strategy = strategy.name(), %why, "strategy");
    events.emit(Event::Strategy {
        strategy: strategy.name().into(),
        why: why.clone(),
    });

    link.session = session_name();
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
    link.tx
        .send(Body::Prepare(Prepare {
            session: link.session.clone(),
            workload: match req.workload {
                Workload::Process { .. } => WorkloadKind::Process,
                Workload::Container { .. } => WorkloadKind::Container,
            } as i32,
            id: target_id.clone(),
            strategy: strategy.wire() as i32,
            shared_rootfs,
            bundle_path: subject
                .bundle_dir
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tcp_established: req.tcp_established,
            bytes_estimate: estimate,
            health: match &req.health {
                Health::None => None,
                Health::Named(name) => Some(HealthCheck::named(name)),
                Health::Tcp(port) => Some(HealthCheck::tcp(*port)),
            },
            files_estimate: subject.files_estimate,
        }))
        .await?;
    link.expect_ack(Step::Prepare).await?;

    // This CPU's description, checked by the destination.
    let work = WorkDir::create(&req.work_dir, &link.session)?;
    let cpuinfo_dir = work.path.join("cpuinfo");
    std::fs::create_dir_all(&cpuinfo_dir)
        .map_err(|e| MigrateError::Local("create a work directory", e))?;
    let (p, dir) = (Arc::clone(&port), cpuinfo_dir.clone());
    blocking(move || p.cpuinfo_dump(&dir)).await??;
    transfer::send_dir(&mut link.tx, &cpuinfo_dir, |_| false, &Meter::default()).await?;
    link.expect_ack(Step::Cpuinfo).await?;

    // Containers: the bundle's config, checked by the destination.
    if let Some(bundle_dir) = &subject.bundle_dir {
        let out = work.path.join("bundle");
        let (from, o) = (bundle_dir.clone(), out.clone());
        blocking(move || bundle::export_config(&from, shared_rootfs, &o))
            .await?
            .map_err(|e| MigrateError::Local("export the bundle", std::io::Error::other(e)))?;
        transfer::send_dir(&mut link.tx, &out, |_| false, &Meter::default()).await?;
        link.expect_ack(Step::Bundle).await?;
    }
    preflight.finish();

    let images_dir = work.path.join("images");
    std::fs::create_dir_all(&images_dir)
        .map_err(|e| MigrateError::Local("create a work directory", e))?;
    // A container frozen by a CRIU that dies with this process is thawed
    // by a watchdog, from the first dump on.
    let p = Arc::clone(&port);
    let s = subject.clone();
    let watchdog: WatchdogSlot =
        Arc::new(Mutex::new(blocking(move || p.source_watchdog(&s)).await??));
    let job = Job {
        tree: port.source_tree(&req.workload, &subject),
        port,
        req,
        subject,
        images_dir,
        work_dir: work.path.clone(),
        watchdog: Arc::clone(&watchdog),
        target_id,
    };
    let outcome = match strategy {
        Strategy::PostCopy => post_copy::run(&job, &mut link).await,
        Strategy::PreCopy => pre_copy::run(&job, &mut link).await,
        Strategy::StopCopy | Strategy::Auto => stop_copy::run(&job, &mut link).await,
    };
    // Whatever happened, the source is in its final state now.
    if let Some(w) = watchdog.lock().ok().and_then(|mut s| s.take()) {
        w.done();
    }
    let outcome = outcome?;
    // The source copy is gone (CRIU killed it): forget the container here.
    if let Workload::Container { id, state_root, .. } = &req.workload {
        let root = crabmigrate_runtime::state::StateRoot::new(state_root.clone());
        if let Err(e) = crabmigrate_runtime::container::delete(&root, id, true) {
            tracing::warn!(id, error = %chain(&e), "cannot remove the migrated container's state on the source");
        }
    }
    Ok(Report {
        workload: req.workload.kind(),
        strategy,
        why,
        session: link.session.clone(),
        page_bytes: outcome.page_bytes,
        image_bytes: outcome.image_bytes,
        bytes_on_wire: link.wire.get(),
        rounds: outcome.rounds,
        converged: outcome.converged,
        total_ms: ms(started.elapsed()),
        downtime_ms: outcome.downtime_ms,
        criu_frozen_ms: outcome.criu_frozen_ms,
        restore_ms: outcome.restore_ms,
        dependent_ms: outcome.dependent_ms,
        destination_pid: outcome.destination_pid,
    })
}
