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

use std::path::PathBuf;
use std::sync::mpsc as sync_mpsc;
use std::time::{Duration, Instant};

use criu_rpc::{Criu, DumpRequest, ImagesRequest, Notify, NotifyResult, PageServerTarget};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::agent::{chain, make_hello};
use crate::channel::{ChannelError, SecureChannel};
use crate::key::Key;
use crate::protocol::{Abort, Body, Commit, Envelope, Prepare, StreamOpen, PROTOCOL_VERSION};
use crate::transfer::{self, TransferError};

/// How to move memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Pick from the probes and say why.
    Auto,
    /// Freeze, dump with pages streamed to the destination, restore.
    StopCopy,
}

impl Strategy {
    fn wire(self) -> &'static str {
        match self {
            Self::Auto | Self::StopCopy => "stop-copy",
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
    /// CRIU's frozen time on the source (includes holding post-dump).
    pub criu_frozen_ms: Option<f64>,
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
    #[error("the migration was rolled back and the workload keeps running on the source: {0}")]
    RolledBack(String),
    #[error("process {0} does not exist")]
    NoProcess(u32),
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

/// Moves the process tree `req.pid` to the agent at `req.to`.
pub async fn migrate_process(criu: Criu, req: MigrateRequest) -> Result<Report, MigrateError> {
    let started = Instant::now();
    if !std::path::Path::new(&format!("/proc/{}", req.pid)).exists() {
        return Err(MigrateError::NoProcess(req.pid));
    }
    let strategy = Strategy::StopCopy;
    let why = match req.strategy {
        Strategy::Auto => "auto: stop-copy is the strategy this release implements".to_owned(),
        Strategy::StopCopy => "asked for".to_owned(),
    };
    let socket = TcpStream::connect(&req.to)
        .await
        .map_err(|e| MigrateError::Connect(req.to.clone(), e))?;
    let _ = socket.set_nodelay(true);
    let (mut tx, mut rx) = SecureChannel::connect(socket, &req.key).await?.split();
    let criu_for_hello = criu.clone();
    let hello = tokio::task::spawn_blocking(move || make_hello("source", &criu_for_hello))
        .await
        .map_err(|e| MigrateError::Local("ask CRIU for its version", std::io::Error::other(e)))?;
    tx.send(&Envelope::new(Body::Hello(hello))).await?;
    match rx.recv().await? {
        Body::Hello(h) if h.protocol_version == PROTOCOL_VERSION => {}
        other => return Err(expect("Hello", other)),
    }
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
    })))
    .await?;
    match rx.recv().await? {
        Body::Ack(_) => {}
        other => return Err(expect("Ack", other)),
    }

    // Preflight: this CPU's description, checked by the destination.
    let work = tempfile_dir(&req.work_dir, &session)?;
    let cpuinfo_dir = work.path.join("cpuinfo");
    std::fs::create_dir_all(&cpuinfo_dir)
        .map_err(|e| MigrateError::Local("create a work directory", e))?;
    let c = criu.clone();
    let dir = cpuinfo_dir.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
        let mut s = c.session().map_err(|e| chain(&e))?;
        s.cpuinfo_dump(&ImagesRequest::new(std::os::fd::AsFd::as_fd(&images)))
            .map_err(|e| chain(&e))
    })
    .await
    .map_err(|e| MigrateError::Local("run CRIU", std::io::Error::other(e)))?
    .map_err(MigrateError::Criu)?;
    transfer::send_dir(&mut tx, &cpuinfo_dir, |_| false).await?;
    match rx.recv().await? {
        Body::Ack(_) => {}
        other => return Err(expect("Ack", other)),
    }

    // The page stream: CRIU -> loopback -> encrypted data connection.
    match rx.recv().await? {
        Body::PagesReady(_) => {}
        other => return Err(expect("PagesReady", other)),
    }
    let local = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| MigrateError::Local("listen on loopback", e))?;
    let local_port = local
        .local_addr()
        .map_err(|e| MigrateError::Local("listen on loopback", e))?
        .port();
    let data_socket = TcpStream::connect(&req.to)
        .await
        .map_err(|e| MigrateError::Connect(req.to.clone(), e))?;
    let _ = data_socket.set_nodelay(true);
    let mut data = SecureChannel::connect(data_socket, &req.key).await?;
    data.send(&Envelope::new(Body::StreamOpen(StreamOpen {
        session: session.clone(),
        purpose: "pages".into(),
    })))
    .await?;
    let pump = tokio::spawn(async move {
        let (criu_conn, _) = local.accept().await.map_err(TransferError::Local)?;
        transfer::pump(criu_conn, data).await
    });

    // The dump runs on a blocking thread; at post-dump it hands control to
    // this task and waits for the verdict.
    let images_dir = work.path.join("images");
    std::fs::create_dir_all(&images_dir)
        .map_err(|e| MigrateError::Local("create a work directory", e))?;
    let (frozen_tx, frozen_rx) =
        oneshot::channel::<(Instant, sync_mpsc::Sender<Result<(), String>>)>();
    let c = criu.clone();
    let dir = images_dir.clone();
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
        let mut handover = Handover {
            frozen_at: None,
            frozen: Some(frozen_tx),
        };
        c.dump(&request, Some(&mut handover)).map_err(|e| chain(&e))
    });

    let (frozen_at, verdict) = match frozen_rx.await {
        Ok(x) => x,
        Err(_) => {
            let why = match dump.await {
                Ok(Err(why)) => why,
                _ => "the dump ended early".into(),
            };
            let _ = tx
                .send(&Envelope::new(Body::Abort(Abort { cause: why.clone() })))
                .await;
            return Err(MigrateError::RolledBack(format!(
                "the source could not be dumped: {why}"
            )));
        }
    };
    tracing::info!(
        frozen_ms = frozen_at.elapsed().as_millis() as u64,
        "source frozen and dumped"
    );
    let cut_over = async {
        let pumped = pump
            .await
            .map_err(|e| MigrateError::Local("carry pages", std::io::Error::other(e)))??;
        tracing::info!(bytes = pumped.out, "page stream finished");
        let image_bytes = transfer::send_dir(&mut tx, &images_dir, |_| false).await?;
        tracing::info!(bytes = image_bytes, "images sent");
        let restored = match rx.recv().await? {
            Body::Restored(r) => r,
            other => return Err(expect("Restored", other)),
        };
        tracing::info!(pid = restored.pid, "destination restored, committing");
        tx.send(&Envelope::new(Body::Commit(Commit {}))).await?;
        match rx.recv().await? {
            Body::Committed(c) => Ok((pumped, image_bytes, restored, c.pid, Instant::now())),
            other => Err(expect("Committed", other)),
        }
    }
    .await;
    let (pumped, image_bytes, _restored, dest_pid, running_at) = match cut_over {
        Ok(x) => x,
        Err(e) => {
            let cause = chain(&e);
            let _ = tx
                .send(&Envelope::new(Body::Abort(Abort {
                    cause: cause.clone(),
                })))
                .await;
            let _ = verdict.send(Err(cause.clone()));
            let _ = dump.await;
            return Err(MigrateError::RolledBack(cause));
        }
    };
    let _ = verdict.send(Ok(()));
    let outcome = dump
        .await
        .map_err(|e| MigrateError::Local("run CRIU", std::io::Error::other(e)))?;
    let frozen_ms = match &outcome {
        Ok(o) => o.stats.map(|s| f64::from(s.frozen_time_us) / 1000.0),
        Err(why) => {
            // The destination runs the workload already; the source's
            // CRIU failing to finish is reported, not rolled back.
            tracing::warn!(%why, "the source dump reported a failure after commit");
            None
        }
    };
    Ok(Report {
        strategy: strategy.wire(),
        why,
        page_bytes: pumped.out,
        image_bytes,
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
        downtime_ms: running_at.duration_since(frozen_at).as_secs_f64() * 1000.0,
        criu_frozen_ms: frozen_ms,
        destination_pid: dest_pid,
    })
}

/// The verdict on a frozen source: `Ok` kills it, `Err(cause)` resumes it.
type Verdict = sync_mpsc::Sender<Result<(), String>>;

/// Hands the frozen tree to the async side at post-dump and waits.
struct Handover {
    frozen_at: Option<Instant>,
    frozen: Option<oneshot::Sender<(Instant, Verdict)>>,
}

impl Notify for Handover {
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

/// Resident memory of the tree's root in bytes (a size estimate).
fn tree_memory(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
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
