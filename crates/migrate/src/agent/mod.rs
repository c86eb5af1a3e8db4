//! The destination: `crabmigrate agent` accepts migrations.
//!
//! Each connection is greeted (plain version check), then authenticated
//! (Noise with the shared key); its first message says what it is: a
//! `Hello` opens a migration session ([`session`]), a `StreamOpen` is a
//! data connection of a session that exists. Hardening:
//!
//! - at most [`Limits::sessions`] migrations at once (more are refused
//!   with a reason) and [`Limits::per_address`] connections per peer
//!   address (more are dropped before the greeting);
//! - every receive has a deadline ([`crate::deadlines`]); the first message
//!   after the handshake must come within 10 s (a replayed handshake
//!   message never sends one);
//! - accept errors (EMFILE and the like) back off instead of spinning;
//! - the work directory is locked (one agent per directory), sessions live
//!   in `sessions/NAME` (16 hex digits), received bundles in
//!   `bundles/ID`; what a killed agent left behind is swept at start;
//! - health checks are the operator's (`--health-check NAME=COMMAND`): the
//!   peer only names one.

mod health;
mod receive;
mod session;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::channel::{BoxStream, SecureChannel};
use crate::deadlines;
use crate::key::Key;
use crate::port::Checkpointer;
use crate::protocol::{enum_field, Body, Envelope, StreamPurpose, PROTOCOL_VERSION};

pub use session::{AgentState, SessionError};

/// The agent's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Migrations at once.
    pub sessions: usize,
    /// Connections at once from one peer address.
    pub per_address: usize,
    /// Files one transfer may hold.
    pub max_files: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions: 4,
            per_address: 16,
            max_files: 100_000,
        }
    }
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub key: Key,
    /// Where sessions keep their images and received bundles live.
    pub work_dir: PathBuf,
    /// Container state root on this host.
    pub state_root: PathBuf,
    /// The health checks a source may name: name -> command (run with
    /// `sh -c`, with `CRABMIGRATE_PID` set to the restored root's pid).
    pub health_checks: BTreeMap<String, String>,
    pub limits: Limits,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("cannot use the work directory {0}")]
    WorkDir(PathBuf, #[source] std::io::Error),
    #[error("another agent uses the work directory {0}; give each agent its own --work-dir")]
    WorkDirBusy(PathBuf),
    #[error("invalid health check name {0:?}: use letters, digits, '-' and '_'")]
    HealthCheckName(String),
}

/// A data connection handed to its session.
type DataStream = (StreamPurpose, SecureChannel);
type Streams = Arc<Mutex<HashMap<String, mpsc::Sender<DataStream>>>>;

/// What every connection of the agent shares.
pub struct Agent {
    opts: AgentOptions,
    /// Names this agent's session cgroups (from its work directory), so
    /// that its sweep never touches another agent's.
    scope: String,
    port: Arc<dyn Checkpointer>,
    streams: Streams,
    sessions: Arc<Semaphore>,
    /// Held for the agent's life: one agent per work directory.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("opts", &self.opts).finish()
    }
}

/// The directory of received bundles.
pub const BUNDLES: &str = "bundles";
/// The directory of sessions.
pub const SESSIONS: &str = "sessions";

/// The scope of an agent's session cgroups: from its work directory, so
/// that one agent's sweep never touches another's (8 hex digits).
pub fn scope_of(work_dir: &Path) -> String {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_path_buf());
    hex::encode(&sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..4])
}

/// Whether `name` is a session name: 16 lowercase hex digits.
pub fn valid_session(name: &str) -> bool {
    name.len() == 16 && name.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

impl Agent {
    /// Prepares the work directory (locked, swept) and the agent.
    pub fn new(opts: AgentOptions, port: Arc<dyn Checkpointer>) -> Result<Self, AgentError> {
        for name in opts.health_checks.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(AgentError::HealthCheckName(name.clone()));
            }
        }
        let work = &opts.work_dir;
        let wd = |e| AgentError::WorkDir(work.clone(), e);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(work)
                .map_err(wd)?;
        }
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(work.join(".lock"))
            .map_err(wd)?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| AgentError::WorkDirBusy(work.clone()))?;
        sweep(work, &opts.state_root);
        let scope = scope_of(work);
        port.sweep(&scope);
        let sessions = Arc::new(Semaphore::new(opts.limits.sessions.max(1)));
        Ok(Self {
            scope,
            opts,
            port,
            streams: Arc::default(),
            sessions,
            _lock: Some(lock),
        })
    }

    /// Serves migrations on `listen` until the process ends. A failed
    /// migration never stops the agent.
    pub async fn serve(
        self: Arc<Self>,
        listen: SocketAddr,
        ready: Option<oneshot::Sender<SocketAddr>>,
    ) -> Result<(), AgentError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| AgentError::Listen(listen, e))?;
        let local = listener.local_addr().unwrap_or(listen);
        tracing::info!(%local, "agent listening");
        if let Some(ready) = ready {
            let _ = ready.send(local);
        }
        let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let mut backoff = Duration::from_millis(10);
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOMEM...: wait instead of spinning.
                    tracing::warn!(error = %e, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Some(slot) =
                AddressSlot::take(&per_address, peer.ip(), self.opts.limits.per_address)
            else {
                tracing::warn!(%peer, "too many connections from this address; dropped");
                continue;
            };
            crate::transfer::tune(&socket);
            let agent = Arc::clone(&self);
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = agent.handle(Box::new(socket)).await {
                    tracing::warn!(%peer, error = %crate::source::chain(&e), "migration failed");
                }
            });
        }
    }

    /// Handles one connection of any kind.
    pub async fn handle(&self, stream: BoxStream) -> Result<(), SessionError> {
        let mut channel = SecureChannel::accept(stream, &self.opts.key, PROTOCOL_VERSION)
            .await
            .map_err(|e| SessionError::Protocol(e.into()))?;
        let first = channel
            .recv_frame(Some(deadlines::FIRST_MESSAGE))
            .await
            .map_err(|e| SessionError::Protocol(e.into()))?;
        match Envelope::decode_checked(&first).map_err(SessionError::Protocol)? {
            Body::StreamOpen(open) => {
                let purpose: StreamPurpose =
                    enum_field("purpose", open.purpose).map_err(SessionError::Protocol)?;
                let sender = self
                    .streams
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&open.session).cloned());
                match sender {
                    Some(sender) => sender
                        .send((purpose, channel))
                        .await
                        .map_err(|_| SessionError::NoStream(purpose)),
                    None => Err(SessionError::NoStream(purpose)),
                }
            }
            Body::Hello(hello) => session::run(self, channel, hello).await,
            other => Err(SessionError::Unexpected {
                expected: "Hello",
                got: other.name(),
            }),
        }
    }
}

/// One connection slot of a peer address; freed on drop.
struct AddressSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut m = map.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= limit.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

/// Removes what a killed agent left in `work`: every session directory,
/// and received bundles no container of `state_root` uses.
pub fn sweep(work: &Path, state_root: &Path) {
    let remove = |dir: &Path| {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sweep a leaked directory");
        } else {
            tracing::info!(dir = %dir.display(), "swept a leaked directory");
        }
    };
    if let Ok(entries) = std::fs::read_dir(work.join(SESSIONS)) {
        for e in entries.flatten() {
            remove(&e.path());
        }
    }
    // Sessions of releases before the sessions/ directory.
    if let Ok(entries) = std::fs::read_dir(work) {
        for e in entries.flatten() {
            if e.path().is_dir() && valid_session(&e.file_name().to_string_lossy()) {
                remove(&e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(work.join(BUNDLES)) {
        for e in entries.flatten() {
            let id = e.file_name();
            if !state_root.join(&id).join("state.json").exists() {
                remove(&e.path());
            }
        }
    }
}
