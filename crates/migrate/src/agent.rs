//! The destination: `crabmigrate agent` accepts migrations.
//!
//! Receiver state machine (one per control connection):
//!
//! ```text
//! Handshake --Hello--> Greeted --Prepare--> Prepared   (ID free, space)
//!   --Manifest(cpuinfo), CPUINFO_CHECK--> Checked
//!   --Manifest(config.json), bundle checked--> BundleChecked  (containers)
//!   --> Receiving, by strategy:
//!         stop-copy: page server up, PagesReady, page stream + Manifest(images)
//!         pre-copy:  RoundStart(n) chunks Ack ... RoundStart(last) Manifest
//!                    chunks FileIndex, files assembled
//!         post-copy: Manifest(images), Ack, criu lazy-pages up
//!   --digests ok, rootfs unpacked--> Restoring --post-restore--> Held
//!   --Commit, health check--> Running (Committed)
//!
//! any error, Abort or lost connection before Commit --> RolledBack
//!   (Refuse with the cause if the source can still hear it; the restored
//!   copy, the session directory and a received bundle are removed)
//! ```
//!
//! Until Commit arrives the restored workload stays stopped at CRIU's
//! post-restore point; without Commit it is killed, so the source (which
//! resumes on failure) and the destination never both run it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crabmigrate_runtime::container::{self, RestoreOptions};
use crabmigrate_runtime::state::StateRoot;
use criu_rpc::{Criu, ImagesRequest, Notify, NotifyResult, PageServerRequest, RestoreRequest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::bundle;
use crate::channel::{ChannelError, SecureChannel};
use crate::chunks::{self, ChunkStore};
use crate::key::Key;
use crate::protocol::{
    Ack, Body, Committed, Envelope, Hello, PagesReady, Refuse, Restored, PROTOCOL_VERSION,
};
use crate::transfer::{self, TransferError};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub listen: SocketAddr,
    pub key: Key,
    /// Where sessions keep their images.
    pub work_dir: PathBuf,
    /// Container state root on this host.
    pub state_root: PathBuf,
    pub criu: Criu,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("cannot create the work directory {0}")]
    WorkDir(PathBuf, #[source] std::io::Error),
}

type Streams = Arc<Mutex<HashMap<String, mpsc::Sender<SecureChannel<TcpStream>>>>>;

/// Serves migrations until the process ends. Each connection is handled on
/// its own task; a failed migration never stops the agent.
pub async fn serve(
    opts: AgentOptions,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| AgentError::WorkDir(opts.work_dir.clone(), e))?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| AgentError::Listen(opts.listen, e))?;
    let local = listener.local_addr().unwrap_or(opts.listen);
    tracing::info!(%local, "agent listening");
    if let Some(ready) = ready {
        let _ = ready.send(local);
    }
    let streams: Streams = Arc::default();
    let opts = Arc::new(opts);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let opts = Arc::clone(&opts);
        let streams = Arc::clone(&streams);
        tokio::spawn(async move {
            if let Err(e) = connection(socket, &opts, streams).await {
                tracing::warn!(%peer, error = %chain(&e), "migration failed");
            }
        });
    }
}

/// The error chain on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why one migration failed on this side.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("the source sent {got} where {expected} was due")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error("no data stream arrived for the session")]
    NoStream,
    #[error("the source gave up: {0}")]
    Aborted(String),
}

async fn connection(
    socket: TcpStream,
    opts: &AgentOptions,
    streams: Streams,
) -> Result<(), SessionError> {
    transfer::tune(&socket);
    let mut channel = SecureChannel::accept(socket, &opts.key).await?;
    match channel.recv().await? {
        Body::StreamOpen(open) => {
            let sender = streams
                .lock()
                .ok()
                .and_then(|m| m.get(&open.session).cloned());
            match sender {
                Some(sender) => sender
                    .send(channel)
                    .await
                    .map_err(|_| SessionError::NoStream),
                None => Err(SessionError::NoStream),
            }
        }
        Body::Hello(hello) => control(channel, hello, opts, streams).await,
        other => Err(SessionError::Unexpected {
            expected: "Hello",
            got: other.name(),
        }),
    }
}

/// This host's Hello.
/// Blocks on CRIU: call from a blocking thread.
pub(crate) fn make_hello(role: &str, criu: &Criu) -> Hello {
    let post_copy = post_copy_ready(criu);
    Hello {
        protocol_version: PROTOCOL_VERSION,
        role: role.into(),
        criu_version: criu.version().map(|v| v.to_string()).unwrap_or_default(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        post_copy: post_copy.is_ok(),
        post_copy_why: post_copy.err().unwrap_or_default(),
    }
}

/// Whether this host can do its part of post-copy: CRIU's lazy-pages
/// feature, and a pipe size CRIU's lazy page server can get.
pub(crate) fn post_copy_ready(criu: &Criu) -> Result<(), String> {
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

/// Sends a refusal and returns the matching error.
async fn refuse(tx: &mut ControlTx, reason: String) -> SessionError {
    let _ = tx
        .send(&Envelope::new(Body::Refuse(Refuse {
            reason: reason.clone(),
        })))
        .await;
    SessionError::Refused(reason)
}

async fn control(
    channel: SecureChannel<TcpStream>,
    peer: Hello,
    opts: &AgentOptions,
    streams: Streams,
) -> Result<(), SessionError> {
    let (mut tx, mut rx) = channel.split();
    let result = session(&mut tx, &mut rx, peer, opts, streams).await;
    if let Err(e) = &result {
        // A failure of this side the source has not been told about (a
        // refusal was already sent): tell it, so its user learns the cause
        // and not just a broken connection.
        if matches!(
            e,
            SessionError::Transfer(_) | SessionError::Unexpected { .. } | SessionError::NoStream
        ) {
            let _ = tx
                .send(&Envelope::new(Body::Refuse(Refuse {
                    reason: format!("the destination failed: {}", chain(e)),
                })))
                .await;
        }
    }
    result
}

type ControlTx = crate::channel::SecureSender<tokio::io::WriteHalf<TcpStream>>;
type ControlRx = crate::channel::SecureReceiver<tokio::io::ReadHalf<TcpStream>>;

/// What a received container needs here.
struct Incoming {
    id: String,
    bundle_dir: PathBuf,
    shared_rootfs: bool,
}

async fn session(
    tx: &mut ControlTx,
    rx: &mut ControlRx,
    peer: Hello,
    opts: &AgentOptions,
    streams: Streams,
) -> Result<(), SessionError> {
    if peer.protocol_version != PROTOCOL_VERSION {
        return Err(refuse(
            tx,
            format!(
                "protocol version {} is not {PROTOCOL_VERSION}; run the same crabmigrate release on both hosts",
                peer.protocol_version
            ),
        )
        .await);
    }
    let criu = opts.criu.clone();
    let ours = tokio::task::spawn_blocking(move || make_hello("destination", &criu))
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))?;
    if !version_at_least(&ours.criu_version, &peer.criu_version) {
        return Err(refuse(
            tx,
            format!(
                "CRIU here is {} and older than the source's {}; upgrade CRIU on the destination",
                ours.criu_version, peer.criu_version
            ),
        )
        .await);
    }
    tx.send(&Envelope::new(Body::Hello(ours))).await?;

    let prepare = match rx.recv().await? {
        Body::Prepare(p) => p,
        other => return Err(unexpected("Prepare", &other)),
    };
    if !prepare.session.chars().all(|c| c.is_ascii_alphanumeric()) || prepare.session.is_empty() {
        return Err(refuse(tx, "invalid session name".into()).await);
    }
    if !matches!(
        prepare.strategy.as_str(),
        "stop-copy" | "pre-copy" | "post-copy"
    ) {
        return Err(refuse(tx, format!("unknown strategy {:?}", prepare.strategy)).await);
    }
    let state_root = StateRoot::new(opts.state_root.clone());
    let mut bundle_cleanup = DirCleanup(None);
    let incoming = match prepare.workload.as_str() {
        "process" => None,
        "container" => {
            if let Err(e) = crabmigrate_runtime::spec::validate_id(&prepare.id) {
                return Err(refuse(tx, format!("invalid container ID: {e}")).await);
            }
            if let Ok(mut state) = state_root.load(&prepare.id) {
                state.refresh();
                return Err(refuse(
                    tx,
                    format!(
                        "container {} already exists on this host ({}); delete it there or migrate with --target-id",
                        prepare.id, state.status
                    ),
                )
                .await);
            }
            let bundle_dir = opts.work_dir.join("bundles").join(&prepare.id);
            let _ = std::fs::remove_dir_all(&bundle_dir);
            bundle_cleanup.0 = Some(bundle_dir.clone());
            Some(Incoming {
                id: prepare.id.clone(),
                bundle_dir,
                shared_rootfs: prepare.shared_rootfs,
            })
        }
        other => {
            return Err(refuse(tx, format!("unknown workload type {other:?}")).await);
        }
    };
    let session_dir = opts.work_dir.join(&prepare.session);
    if let Some(free) = free_space(&opts.work_dir) {
        if free < prepare.bytes_estimate {
            return Err(refuse(
                tx,
                format!(
                    "not enough space in {}: {} bytes free, about {} needed; free space there or start the agent with another --work-dir",
                    opts.work_dir.display(),
                    free,
                    prepare.bytes_estimate
                ),
            )
            .await);
        }
    }
    let _cleanup = DirCleanup(Some(session_dir.clone()));
    let (stream_tx, mut stream_rx) = mpsc::channel(1);
    if let Ok(mut map) = streams.lock() {
        map.insert(prepare.session.clone(), stream_tx);
    }
    let _unregister = Unregister {
        streams: Arc::clone(&streams),
        session: prepare.session.clone(),
    };
    ack(tx, "prepare").await?;

    // Preflight: the source's cpuinfo must suit this CPU.
    let cpuinfo_dir = session_dir.join("cpuinfo");
    transfer::recv_dir(rx, &cpuinfo_dir).await?;
    let criu = opts.criu.clone();
    let dir = cpuinfo_dir.clone();
    let check = tokio::task::spawn_blocking(move || {
        let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
        let mut session = criu.session().map_err(|e| chain(&e))?;
        session
            .cpuinfo_check(&ImagesRequest::new(std::os::fd::AsFd::as_fd(&images)))
            .map_err(|e| chain(&e))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(why) = check {
        return Err(refuse(
            tx,
            format!("this CPU cannot run the source's workload: {why}"),
        )
        .await);
    }
    ack(tx, "cpuinfo").await?;

    // Containers: the bundle's config, checked against this host.
    if let Some(c) = &incoming {
        transfer::recv_dir(rx, &c.bundle_dir).await?;
        // Deleting the container here deletes this bundle too.
        std::fs::write(c.bundle_dir.join(container::OWNED_BUNDLE_MARKER), b"")
            .map_err(TransferError::Local)?;
        if !c.shared_rootfs {
            std::fs::create_dir_all(c.bundle_dir.join("rootfs")).map_err(TransferError::Local)?;
        }
        let (dir, id) = (c.bundle_dir.clone(), c.id.clone());
        let checked = tokio::task::spawn_blocking(move || bundle::check_received(&dir, &id))
            .await
            .map_err(|e| TransferError::Local(std::io::Error::other(e)))?;
        if let Err(e) = checked {
            return Err(refuse(tx, format!("cannot run the container here: {}", chain(&e))).await);
        }
        ack(tx, "bundle").await?;
    }

    let images_dir = session_dir.join("images");
    std::fs::create_dir_all(&images_dir).map_err(TransferError::Local)?;
    let post_copy = prepare.strategy == "post-copy";
    let mut lazy = None;
    match prepare.strategy.as_str() {
        "stop-copy" => {
            let (done, mut pump) = start_page_server(tx, opts, &images_dir, &mut stream_rx).await?;
            // The rest of the images, checked against their digests, while
            // the page stream is watched: a broken stream is reported at
            // once (the source's dump then fails, and its user learns why).
            let mut pumped = None;
            {
                let receive = transfer::recv_dir(rx, &images_dir);
                tokio::pin!(receive);
                loop {
                    tokio::select! {
                        received = &mut receive => {
                            received?;
                            break;
                        }
                        p = &mut pump, if pumped.is_none() => {
                            let p = p.map_err(|e| TransferError::Local(std::io::Error::other(e)))?;
                            match p {
                                Ok(p) => pumped = Some(p),
                                Err(e) => {
                                    return Err(refuse(
                                        tx,
                                        format!("the page stream broke on the destination: {}", chain(&e)),
                                    )
                                    .await)
                                }
                            }
                        }
                    }
                }
            }
            let pumped = match pumped {
                Some(p) => p,
                None => pump
                    .await
                    .map_err(|e| TransferError::Local(std::io::Error::other(e)))??,
            };
            tracing::info!(bytes = pumped.out + pumped.back, "page stream done");
            let status = done
                .await
                .unwrap_or_else(|_| Err("the page server thread died".into()));
            if !matches!(status, Ok(s) if s.success()) {
                let log =
                    std::fs::read_to_string(images_dir.join("page-server.log")).unwrap_or_default();
                let errors: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("Error"))
                    .take(3)
                    .collect();
                return Err(refuse(
                    tx,
                    format!(
                        "the page server failed ({status:?}): {}",
                        errors.join(" / ")
                    ),
                )
                .await);
            }
        }
        "pre-copy" => {
            let limit = prepare.bytes_estimate.saturating_mul(4).max(1 << 30);
            let mut store = ChunkStore::create(&session_dir.join("chunks.pack"), limit)
                .map_err(TransferError::from)?;
            loop {
                let start = match rx.recv().await? {
                    Body::RoundStart(r) => r,
                    other => return Err(unexpected("RoundStart", &other)),
                };
                if start.last {
                    chunks::recv_round(rx, &mut store, Some(&images_dir)).await?;
                    tracing::info!(
                        round = start.round,
                        stored = store.len(),
                        "final round received and verified"
                    );
                    break;
                }
                let added = chunks::recv_round(rx, &mut store, None).await?;
                tracing::info!(round = start.round, added, "pre-copy round received");
                ack(tx, "round").await?;
            }
            // The files are whole: the chunks' memory goes back before the
            // restore needs it.
            store.discard();
        }
        _ => {
            transfer::recv_dir(rx, &images_dir).await?;
            ack(tx, "images").await?;
        }
    }
    tracing::info!("images received and verified");
    if let Some(c) = &incoming {
        let tar = images_dir.join(bundle::ROOTFS_TAR);
        if !c.shared_rootfs {
            let rootfs = c.bundle_dir.join("rootfs");
            let unpacked =
                tokio::task::spawn_blocking(move || bundle::unpack_rootfs(&tar, &rootfs))
                    .await
                    .map_err(|e| TransferError::Local(std::io::Error::other(e)))?;
            if let Err(e) = unpacked {
                return Err(refuse(tx, format!("cannot unpack the rootfs: {}", chain(&e))).await);
            }
        }
    }
    if post_copy {
        match start_lazy_daemon(opts, &images_dir, &mut stream_rx).await {
            Ok(l) => lazy = Some(l),
            Err(why) => return Err(refuse(tx, why).await),
        }
    }

    // Restore, held before the tasks run until the source commits.
    let (held_tx, held_rx) = oneshot::channel::<(u32, std::sync::mpsc::Sender<bool>)>();
    let criu = opts.criu.clone();
    let dir = images_dir.clone();
    let tcp = prepare.tcp_established;
    let container_target = incoming
        .as_ref()
        .map(|c| (c.id.clone(), c.bundle_dir.clone(), opts.state_root.clone()));
    let restore = tokio::task::spawn_blocking(move || -> Result<u32, String> {
        let mut hold = Hold {
            held: Some(held_tx),
        };
        match container_target {
            None => {
                let images = std::fs::File::open(&dir).map_err(|e| e.to_string())?;
                let mut request = RestoreRequest::new(std::os::fd::AsFd::as_fd(&images));
                request.options.tcp_established = tcp;
                // The lazy-pages daemon listens in the images directory,
                // which is also the restore's work directory.
                request.options.lazy_pages = post_copy;
                criu.restore(&request, Some(&mut hold))
                    .map(|o| o.pid as u32)
                    .map_err(|e| chain(&e))
            }
            Some((id, bundle_dir, state_root)) => {
                let root = StateRoot::new(state_root);
                let opts = RestoreOptions {
                    bundle: bundle_dir,
                    images_dir: dir,
                    tcp_established: tcp,
                    lazy_pages: post_copy,
                    ..Default::default()
                };
                let restored = container::restore(&criu, &root, &id, &opts, Some(&mut hold))
                    .map_err(|e| chain(&e))?;
                let pid = restored.state.pid;
                // The restored init is this agent's child (CRIU's
                // rst_sibling): reap it when it ends.
                std::thread::spawn(move || {
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
                });
                Ok(pid)
            }
        }
    });
    let restore_started = std::time::Instant::now();
    let (pid, decide) = match held_rx.await {
        Ok(x) => x,
        Err(_) => {
            let why = match restore.await {
                Ok(Err(why)) => why,
                _ => "the restore ended early".into(),
            };
            return Err(refuse(tx, format!("restore failed on the destination: {why}")).await);
        }
    };
    // Post-copy: until the last page arrives this copy depends on the
    // source, which resumes if the transfer breaks. A watchdog outside the
    // agent kills the copy unless told that every page arrived, so even the
    // agent dying cannot leave a copy running on zero-filled memory.
    tracing::info!(
        pid,
        restore_ms = restore_started.elapsed().as_secs_f64() * 1000.0,
        "restored, held until the source commits"
    );
    let mut watchdog = if post_copy {
        Watchdog::start(pid)
    } else {
        None
    };
    tx.send(&Envelope::new(Body::Restored(Restored {
        pid,
        restore_time_us: 0,
    })))
    .await?;
    let verdict = rx.recv().await;
    let commit = matches!(verdict, Ok(Body::Commit(_)));
    let _ = decide.send(commit);
    let restored = restore.await.unwrap_or_else(|e| Err(e.to_string()));
    if !commit {
        return match verdict {
            Ok(Body::Abort(a)) => Err(SessionError::Aborted(a.cause)),
            Ok(other) => Err(unexpected("Commit", &other)),
            Err(e) => Err(e.into()),
        };
    }
    let drop_copy = |pid: u32| match &incoming {
        Some(c) => {
            if let Err(e) = container::delete(&state_root, &c.id, true) {
                tracing::warn!(id = c.id, error = %chain(&e), "cannot delete the dropped container");
                crate::procs::kill_tree(pid);
            }
        }
        None => crate::procs::kill_tree(pid),
    };
    let pid = match restored {
        Ok(pid) => pid,
        Err(why) => return Err(refuse(tx, format!("restore failed after commit: {why}")).await),
    };
    if std::env::var_os(FAULT_ENV).is_some_and(|v| v == "exit-after-commit") {
        // Fault injection for tests: the destination dies after it
        // committed, before the source hears of it.
        tracing::warn!(pid, "{FAULT_ENV}=exit-after-commit: exiting");
        #[allow(clippy::exit)] // an abrupt death is the point
        std::process::exit(70);
    }
    if let Err(why) = health_check(&prepare).await {
        // The source is still frozen (stop-copy, pre-copy) or serving
        // pages (post-copy): drop this copy and let it resume.
        tracing::warn!(pid, %why, "health check failed; dropping the restored copy");
        drop_copy(pid);
        return Err(refuse(tx, format!("health check failed on the destination: {why}")).await);
    }
    tx.send(&Envelope::new(Body::Committed(Committed { pid })))
        .await?;
    bundle_cleanup.0 = None;
    tracing::info!(pid, "migration committed; the workload runs here");
    if let Some(lazy) = lazy {
        // Until the last page arrives the workload needs the source; if the
        // transfer breaks, CRIU resumes the source, so this copy must go at
        // once.
        let daemon = lazy
            .done
            .await
            .unwrap_or_else(|_| Err("the lazy-pages thread died".into()));
        let _ = lazy.pump.await;
        if let Err(why) = daemon {
            tracing::error!(pid, %why, "page transfer broke; killing the destination copy");
            drop_copy(pid);
            return Err(SessionError::Refused(format!(
                "post-copy page transfer failed: {why}"
            )));
        }
        tracing::info!("all pages arrived");
        if let Some(w) = watchdog.take() {
            w.release();
        }
    }
    Ok(())
}

async fn ack(tx: &mut ControlTx, step: &str) -> Result<(), SessionError> {
    tx.send(&Envelope::new(Body::Ack(Ack { step: step.into() })))
        .await?;
    Ok(())
}

type PageServerDone = oneshot::Receiver<Result<std::process::ExitStatus, String>>;
type PumpTask = tokio::task::JoinHandle<Result<transfer::Pumped, TransferError>>;

/// Stop-copy: CRIU's page server on loopback; the source's page stream
/// arrives on a data connection and is carried to it.
async fn start_page_server(
    tx: &mut ControlTx,
    opts: &AgentOptions,
    images_dir: &Path,
    stream_rx: &mut mpsc::Receiver<SecureChannel<TcpStream>>,
) -> Result<(PageServerDone, PumpTask), SessionError> {
    // One thread starts the page server and waits for it: CRIU dies with
    // the thread that started it (parent-death signal).
    let criu = opts.criu.clone();
    let dir = images_dir.to_path_buf();
    let (info_tx, info_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel::<Result<std::process::ExitStatus, String>>();
    std::thread::spawn(move || {
        let started = std::fs::File::open(&dir)
            .map_err(|e| e.to_string())
            .and_then(|images| {
                let request =
                    PageServerRequest::listen(std::os::fd::AsFd::as_fd(&images), "127.0.0.1", 0);
                criu.page_server(&request).map_err(|e| chain(&e))
            });
        match started {
            Ok((session, info)) => {
                let _ = info_tx.send(Ok(info));
                let status = session
                    .wait_pid(info.pid.unwrap_or(0))
                    .map_err(|e| chain(&e));
                let _ = done_tx.send(status);
            }
            Err(why) => {
                let _ = info_tx.send(Err(why));
            }
        }
    });
    let info = match info_rx.await {
        Ok(Ok(info)) => info,
        Ok(Err(why)) => return Err(refuse(tx, format!("cannot start a page server: {why}")).await),
        Err(_) => return Err(refuse(tx, "the page server thread died".into()).await),
    };
    tx.send(&Envelope::new(Body::PagesReady(PagesReady {})))
        .await?;
    let data = tokio::time::timeout(Duration::from_secs(30), stream_rx.recv())
        .await
        .ok()
        .flatten()
        .ok_or(SessionError::NoStream)?;
    let local = TcpStream::connect(("127.0.0.1", info.port))
        .await
        .map_err(TransferError::Local)?;
    Ok((done_rx, tokio::spawn(transfer::pump(local, data))))
}

/// A process, independent of the agent, that SIGKILLs a post-copy copy
/// unless released: `sh` reads one line from a pipe whose writing end only
/// the agent holds; end of file (the agent gone, or the copy dropped)
/// without "done" means kill.
struct Watchdog {
    child: std::process::Child,
}

impl Watchdog {
    fn start(pid: u32) -> Option<Self> {
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"read verdict; [ "$verdict" = done ] || kill -9 "$1""#)
            .arg("crabmigrate-watchdog")
            .arg(pid.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(Self { child }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the post-copy watchdog");
                None
            }
        }
    }

    /// Every page arrived: the copy stands on its own.
    fn release(mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Not released: closing the pipe makes the watchdog kill the copy.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// How long a health check may keep failing before the migration is
/// rolled back.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the source's health check until it passes or [`HEALTH_TIMEOUT`].
async fn health_check(prepare: &crate::protocol::Prepare) -> Result<(), String> {
    if prepare.health_cmd.is_empty() && prepare.health_tcp == 0 {
        return Ok(());
    }
    let until = tokio::time::Instant::now() + HEALTH_TIMEOUT;
    let mut last = String::new();
    while tokio::time::Instant::now() < until {
        let passed = if !prepare.health_cmd.is_empty() {
            let run = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&prepare.health_cmd)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            match tokio::time::timeout_at(until, run).await {
                Ok(Ok(out)) if out.status.success() => true,
                Ok(Ok(out)) => {
                    last = format!("`{}` {}", prepare.health_cmd, out.status);
                    false
                }
                Ok(Err(e)) => {
                    last = format!("cannot run `{}`: {e}", prepare.health_cmd);
                    false
                }
                Err(_) => {
                    last = format!("`{}` did not finish", prepare.health_cmd);
                    false
                }
            }
        } else {
            match TcpStream::connect(("127.0.0.1", prepare.health_tcp as u16)).await {
                Ok(_) => true,
                Err(e) => {
                    last = format!("port {} does not accept: {e}", prepare.health_tcp);
                    false
                }
            }
        };
        if passed {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{last} (for {} s)", HEALTH_TIMEOUT.as_secs()))
}

/// A running `criu lazy-pages` and the pump carrying its page requests.
struct Lazy {
    done: oneshot::Receiver<Result<(), String>>,
    pump: tokio::task::JoinHandle<Result<transfer::Pumped, TransferError>>,
}

/// Waits for the source's lazy stream, then starts `criu lazy-pages` on a
/// loopback port that is carried to the source's lazy page server.
async fn start_lazy_daemon(
    opts: &AgentOptions,
    images_dir: &Path,
    streams: &mut mpsc::Receiver<SecureChannel<TcpStream>>,
) -> Result<Lazy, String> {
    let data = tokio::time::timeout(Duration::from_secs(60), streams.recv())
        .await
        .ok()
        .flatten()
        .ok_or("no lazy page stream arrived from the source")?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let pump = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.map_err(TransferError::Local)?;
        transfer::pump(conn, data).await
    });
    // One thread starts the daemon and waits for it (CRIU dies with the
    // thread that started it).
    let criu = opts.criu.clone();
    let dir = images_dir.to_path_buf();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let request = criu_rpc::LazyPagesRequest {
            images_dir: &dir,
            work_dir: &dir,
            address: "127.0.0.1",
            port,
            log_file: "lazy-pages.log",
            tls_args: Vec::new(),
        };
        match criu.lazy_pages(&request) {
            Ok(mut daemon) => {
                let _ = ready_tx.send(Ok(()));
                let status = daemon.wait().map_err(|e| e.to_string()).and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        Err(format!(
                            "criu lazy-pages {s}; log: {}",
                            daemon.log_file().display()
                        ))
                    }
                });
                let _ = done_tx.send(status);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(chain(&e)));
            }
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(Lazy {
            done: done_rx,
            pump,
        }),
        Ok(Err(why)) => Err(format!("cannot start criu lazy-pages: {why}")),
        Err(_) => Err("the lazy-pages thread died".into()),
    }
}

fn unexpected(expected: &'static str, got: &Body) -> SessionError {
    match got {
        Body::Abort(a) => SessionError::Aborted(a.cause.clone()),
        other => SessionError::Unexpected {
            expected,
            got: other.name(),
        },
    }
}

/// Holds the restored tree at post-restore until the source decides.
struct Hold {
    held: Option<oneshot::Sender<(u32, std::sync::mpsc::Sender<bool>)>>,
}

impl Notify for Hold {
    fn post_restore(&mut self, pid: i32) -> NotifyResult {
        let (decide_tx, decide_rx) = std::sync::mpsc::channel();
        if let Some(held) = self.held.take() {
            held.send((pid as u32, decide_tx))
                .map_err(|_| "the migration session ended")?;
        }
        match decide_rx.recv_timeout(COMMIT_TIMEOUT) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the source did not commit; the restored copy is dropped".into()),
            Err(_) => Err("no commit from the source in time; the restored copy is dropped".into()),
        }
    }
}

/// Fault injection for tests: `exit-after-commit` makes the agent exit
/// right after it committed a migration, before it tells the source.
pub const FAULT_ENV: &str = "CRABMIGRATE_FAULT";

/// How long a restored copy waits for the source's decision.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// `a >= b` for dotted versions.
fn version_at_least(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    parse(a) >= parse(b)
}

fn free_space(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Removes a directory when the session ends (unless emptied first).
struct DirCleanup(Option<PathBuf>);

impl Drop for DirCleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Forgets a session's stream slot when the session ends.
struct Unregister {
    streams: Streams,
    session: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if let Ok(mut map) = self.streams.lock() {
            map.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("4.1.1", "4.1.1"));
        assert!(version_at_least("4.10", "4.9.3"));
        assert!(!version_at_least("4.1", "4.1.1"));
        assert!(!version_at_least("3.17.1", "4.0"));
    }
}
