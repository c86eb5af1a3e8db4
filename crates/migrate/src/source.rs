//! The source: `crabmigrate migrate` moves a workload to an agent.
//!
//! Stop-copy of a process tree:
//!
//! ```text
//! source                                   destination agent
//!   |==== Noise NNpsk0 handshake ============|   (wrong key: refused here)
//!   |-- Hello ------------------------------>|
//!   |<------------------------------ Hello --|   (or Refuse: version, CRIU)
//!   |-- Prepare(session, strategy, size) --->|   checks space
//!   |<---------------------------- Ack ------|
//!   |-- Manifest + cpuinfo.img ------------->|   CPUINFO_CHECK
//!   |<---------------------------- Ack ------|
//!   |<----------------------- PagesReady ----|   page server on loopback
//!   |== data connection: StreamOpen(pages) ==|
//!   freeze, DUMP: pages ==== tunnel =======> page server
//!   post-dump (tree frozen, held)            |
//!   |-- Manifest + images (sha256) --------->|   digests checked
//!   |                                        |   RESTORE, held at post-restore
//!   |<------------------------- Restored ----|
//!   |-- Commit ----------------------------->|   tasks resume here
//!   |<------------------------ Committed ----|
//!   ack post-dump: CRIU kills the source     |
//! ```
//!
//! Any failure before Commit (refusal, digest mismatch, restore error, lost
//! connection) answers post-dump with "failed": CRIU resumes the source, and
//! the destination, which never got Commit, drops its copy.

use std::path::{Path, PathBuf};
use std::sync::mpsc as sync_mpsc;
use std::time::{Duration, Instant};

use criu_rpc::{Criu, DumpRequest, ImagesRequest, Notify, NotifyResult, PageServerTarget};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::agent::{chain, make_hello};
use crate::channel::{ChannelError, SecureChannel, SecureReceiver, SecureSender};
use crate::key::Key;
use crate::protocol::{
    Abort, Body, Commit, Envelope, Hello, Prepare, StreamOpen, PROTOCOL_VERSION,
};
use crate::transfer::{self, TransferError};

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

/// A migration request from the source.
#[derive(Debug, Clone)]
pub struct MigrateRequest {
    /// The agent, `HOST:PORT`.
    pub to: String,
    pub key: Key,
    /// The root of the process tree.
    pub pid: u32,
    pub strategy: Strategy,
    pub tcp_established: bool,
    /// Where the source writes its images (a fresh directory is made in it).
    pub work_dir: PathBuf,
    /// Checked on the destination before the migration commits.
    pub health: Health,
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

/// What happened, for the user.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub strategy: &'static str,
    pub why: String,
    /// Bytes of page data carried by the tunnel.
    pub page_bytes: u64,
    /// Bytes of the other image files.
    pub image_bytes: u64,
    pub total_ms: f64,
    /// From the tree being frozen to the destination running it.
    pub downtime_ms: f64,
    /// CRIU's frozen time on the source (stop-copy; includes the hand-over).
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
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot {0}")]
    Local(&'static str, #[source] std::io::Error),
    #[error("CRIU on the source failed: {0}")]
    Criu(String),
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

fn local(what: &'static str) -> impl FnOnce(std::io::Error) -> MigrateError {
    move |e| MigrateError::Local(what, e)
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, MigrateError> {
    r.map_err(|e| MigrateError::Local("run a task", std::io::Error::other(e)))
}

/// Moves the process tree `req.pid` to the agent at `req.to`.
pub async fn migrate_process(criu: Criu, req: MigrateRequest) -> Result<Report, MigrateError> {
    let started = Instant::now();
    if !std::path::Path::new(&format!("/proc/{}", req.pid)).exists() {
        return Err(MigrateError::NoProcess(req.pid));
    }
    let socket = transfer::connect(&req.to)
        .await
        .map_err(|e| MigrateError::Connect(req.to.clone(), e))?;
    let (mut tx, mut rx) = SecureChannel::connect(socket, &req.key).await?.split();
    let c = criu.clone();
    let ours = joined(tokio::task::spawn_blocking(move || make_hello("source", &c)).await)?;
    tx.send(&Envelope::new(Body::Hello(ours.clone()))).await?;
    let theirs = match next(&mut rx).await? {
        Body::Hello(h) if h.protocol_version == PROTOCOL_VERSION => h,
        other => return Err(expect("Hello", other)),
    };
    let (strategy, why) = choose(req.strategy, &ours, &theirs)?;
    tracing::info!(strategy = strategy.wire(), %why, "strategy");

    let session = session_name();
    let estimate = tree_memory(req.pid)
        .saturating_mul(2)
        .saturating_add(64 << 20);
    tx.send(&Envelope::new(Body::Prepare(Prepare {
        session: session.clone(),
        workload: "process".into(),
        id: String::new(),
        strategy: strategy.wire().into(),
        shared_rootfs: false,
        bundle_path: String::new(),
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
    match next(&mut rx).await? {
        Body::Ack(_) => {}
        other => return Err(expect("Ack", other)),
    }

    // Preflight: this CPU's description, checked by the destination.
    let work = tempfile_dir(&req.work_dir, &session)?;
    let cpuinfo_dir = work.path.join("cpuinfo");
    std::fs::create_dir_all(&cpuinfo_dir).map_err(local("create a work directory"))?;
    let c = criu.clone();
    let dir = cpuinfo_dir.clone();
    joined(
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
            let mut s = c.session().map_err(|e| chain(&e))?;
            s.cpuinfo_dump(&ImagesRequest::new(std::os::fd::AsFd::as_fd(&images)))
                .map_err(|e| chain(&e))
        })
        .await,
    )?
    .map_err(MigrateError::Criu)?;
    transfer::send_dir(&mut tx, &cpuinfo_dir, |_| false).await?;
    match next(&mut rx).await? {
        Body::Ack(_) => {}
        other => return Err(expect("Ack", other)),
    }
    let images_dir = work.path.join("images");
    std::fs::create_dir_all(&images_dir).map_err(local("create a work directory"))?;
    let link = Link {
        tx,
        rx,
        to: req.to.clone(),
        key: req.key.clone(),
        session,
    };
    let mut report = match strategy {
        Strategy::PostCopy => post_copy(criu, &req, link, &images_dir).await?,
        _ => stop_copy(criu, &req, link, &images_dir).await?,
    };
    report.why = why;
    report.total_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

/// The strategy for `asked`, from both hosts' Hellos, and why.
fn choose(
    asked: Strategy,
    ours: &Hello,
    theirs: &Hello,
) -> Result<(Strategy, String), MigrateError> {
    let post_copy = match (ours.post_copy, theirs.post_copy) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("the source cannot: {}", ours.post_copy_why)),
        (_, false) => Err(format!("the destination cannot: {}", theirs.post_copy_why)),
    };
    match asked {
        Strategy::StopCopy => Ok((Strategy::StopCopy, "asked for".into())),
        Strategy::PostCopy => match post_copy {
            Ok(()) => Ok((Strategy::PostCopy, "asked for".into())),
            Err(why) => Err(MigrateError::Unavailable(format!(
                "post-copy is not possible: {why}; use --strategy stop-copy"
            ))),
        },
        Strategy::PreCopy => Err(MigrateError::Unavailable(
            "pre-copy is not implemented yet (and this kernel has no soft-dirty tracking); use --strategy post-copy or stop-copy"
                .into(),
        )),
        Strategy::Auto => Ok(match post_copy {
            Ok(()) => (
                Strategy::PostCopy,
                "auto: both hosts support lazy pages, so the workload stops only for its non-lazy state".into(),
            ),
            Err(why) => (Strategy::StopCopy, format!("auto: post-copy is not possible ({why})")),
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
        self.tx
            .send(&Envelope::new(Body::Commit(Commit {})))
            .await?;
        match next(&mut self.rx).await? {
            Body::Committed(c) => Ok((c.pid, Instant::now())),
            other => Err(expect("Committed", other)),
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

async fn stop_copy(
    criu: Criu,
    req: &MigrateRequest,
    mut link: Link,
    images_dir: &Path,
) -> Result<Report, MigrateError> {
    // The page stream: CRIU -> loopback -> encrypted data connection.
    match next(&mut link.rx).await? {
        Body::PagesReady(_) => {}
        other => return Err(expect("PagesReady", other)),
    }
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(local("listen on loopback"))?;
    let local_port = listener
        .local_addr()
        .map_err(local("listen on loopback"))?
        .port();
    let data = link.data("pages").await?;
    let pump = tokio::spawn(async move {
        let (criu_conn, _) = listener.accept().await.map_err(TransferError::Local)?;
        transfer::pump(criu_conn, data).await
    });

    // The dump runs on a blocking thread; at post-dump it hands control to
    // this task and waits for the verdict.
    let (frozen_tx, frozen_rx) = oneshot::channel::<(Instant, Verdict)>();
    let dir = images_dir.to_path_buf();
    let pid = req.pid;
    let tcp = req.tcp_established;
    let dump = tokio::task::spawn_blocking(move || {
        let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
        let mut request = DumpRequest::new(pid, std::os::fd::AsFd::as_fd(&images));
        request.options.tcp_established = tcp;
        request.options.page_server = Some(PageServerTarget::Address {
            address: "127.0.0.1",
            port: local_port,
        });
        let mut handover = Handover::new(frozen_tx, None);
        criu.dump(&request, Some(&mut handover))
            .map_err(|e| chain(&e))
    });
    let Ok((frozen_at, verdict)) = frozen_rx.await else {
        let why = match dump.await {
            Ok(Err(why)) => why,
            _ => "the dump ended early".into(),
        };
        link.abort(&why).await;
        return Err(MigrateError::RolledBack(format!(
            "the source could not be dumped: {why}"
        )));
    };
    let cut_over = async {
        let pumped = joined(pump.await)??;
        let image_bytes = transfer::send_dir(&mut link.tx, images_dir, |_| false).await?;
        let (dest_pid, running_at) = link.commit().await?;
        Ok::<_, MigrateError>((pumped, image_bytes, dest_pid, running_at))
    }
    .await;
    let (pumped, image_bytes, dest_pid, running_at) = match cut_over {
        Ok(x) => x,
        Err(e) => {
            let cause = chain(&e);
            link.abort(&cause).await;
            let _ = verdict.send(Err(cause.clone()));
            let _ = dump.await;
            return Err(MigrateError::RolledBack(cause));
        }
    };
    let _ = verdict.send(Ok(()));
    let frozen_ms = match joined(dump.await)? {
        Ok(o) => o.stats.map(|s| f64::from(s.frozen_time_us) / 1000.0),
        Err(why) => {
            // The destination runs the workload already; the source's CRIU
            // failing to finish is reported, not rolled back.
            tracing::warn!(%why, "the source dump reported a failure after commit");
            None
        }
    };
    Ok(Report {
        strategy: "stop-copy",
        why: String::new(),
        page_bytes: pumped.out,
        image_bytes,
        total_ms: 0.0,
        downtime_ms: running_at.duration_since(frozen_at).as_secs_f64() * 1000.0,
        criu_frozen_ms: frozen_ms,
        dependent_ms: None,
        destination_pid: dest_pid,
    })
}

async fn post_copy(
    criu: Criu,
    req: &MigrateRequest,
    mut link: Link,
    images_dir: &Path,
) -> Result<Report, MigrateError> {
    let lazy_port = free_port()?;
    let (frozen_tx, frozen_rx) = oneshot::channel::<(Instant, Verdict)>();
    let (serving_tx, serving_rx) = oneshot::channel::<()>();
    let dir = images_dir.to_path_buf();
    let pid = req.pid;
    let tcp = req.tcp_established;
    let dump = tokio::task::spawn_blocking(move || {
        let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
        let mut request = DumpRequest::new(pid, std::os::fd::AsFd::as_fd(&images));
        request.options.tcp_established = tcp;
        request.lazy_pages_port = Some(lazy_port);
        let mut handover = Handover::new(frozen_tx, Some(serving_tx));
        criu.dump(&request, Some(&mut handover))
            .map_err(|e| chain(&e))
    });
    let Ok((frozen_at, verdict)) = frozen_rx.await else {
        let why = match dump.await {
            Ok(Err(why)) => why,
            _ => "the dump ended early".into(),
        };
        link.abort(&why).await;
        return Err(MigrateError::RolledBack(format!(
            "the source could not be dumped: {why}"
        )));
    };
    // Everything but the lazy pages goes first; until the destination has
    // it, refusing post-dump resumes the source.
    let sent = async {
        let image_bytes = transfer::send_dir(&mut link.tx, images_dir, |_| false).await?;
        match next(&mut link.rx).await? {
            Body::Ack(_) => Ok(image_bytes),
            other => Err(expect("Ack", other)),
        }
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
        pump = Some(tokio::spawn(transfer::pump(criu_conn, data)));
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
    // The destination runs; pages flow until the last one is fetched.
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
                req.to
            )));
        }
    };
    Ok(Report {
        strategy: "post-copy",
        why: String::new(),
        page_bytes: pumped.out,
        image_bytes,
        total_ms: 0.0,
        downtime_ms: running_at.duration_since(frozen_at).as_secs_f64() * 1000.0,
        criu_frozen_ms: None,
        dependent_ms: Some(last_page_at.duration_since(running_at).as_secs_f64() * 1000.0),
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

/// A work directory removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir(base: &std::path::Path, session: &str) -> Result<WorkDir, MigrateError> {
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
        let (s, why) = choose(Strategy::Auto, &hello(true, ""), &hello(true, "")).unwrap();
        assert_eq!(s, Strategy::PostCopy);
        assert!(why.contains("lazy pages"), "{why}");
        let (s, why) = choose(Strategy::Auto, &hello(true, ""), &hello(false, "no uffd")).unwrap();
        assert_eq!(s, Strategy::StopCopy);
        assert!(why.contains("destination cannot: no uffd"), "{why}");
        let err = choose(
            Strategy::PostCopy,
            &hello(false, "small pipes"),
            &hello(true, ""),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("source cannot: small pipes"),
            "{err}"
        );
        assert!(choose(Strategy::PreCopy, &hello(true, ""), &hello(true, "")).is_err());
        assert_eq!(
            choose(Strategy::StopCopy, &hello(true, ""), &hello(true, ""))
                .unwrap()
                .0,
            Strategy::StopCopy
        );
    }
}
