//! One migration on the destination, as a state machine.
//!
//! ```text
//! Greeting --Hello--> Preparing --Prepare ok--> CheckingCpu
//!   --cpuinfo ok--> [CheckingBundle --bundle ok-->] (tree cgroup, watchdog armed)
//!   --> Receiving, by strategy:
//!         stop-copy: page server up, PagesReady, page stream, Manifest(images)
//!         pre-copy:  RoundStart(n) chunks Ack ... RoundStart(last) Manifest
//!                    chunks FileIndex, files assembled
//!         post-copy: Manifest(images), Ack, criu lazy-pages up
//!   --digests ok, rootfs unpacked--> Restoring --post-restore--> Held (Restored sent)
//!   --Commit--> Committing (the tree runs; health check) --> Committed
//!   post-copy: Committed --> Paging --last page--> (watchdog released)
//!
//! any error, Abort, silence past a deadline or a lost connection
//!   --> RolledBack: Refuse with the cause if the source can still hear it;
//!       the restored copy killed with its whole cgroup, the session
//!       directory and a received bundle removed
//! ```
//!
//! Until Commit arrives the restored workload stays stopped at CRIU's
//! post-restore point; without Commit it is killed, so the source (which
//! resumes on failure) and the destination never both run it. From the
//! end of the preflight a watchdog process kills the tree's cgroup if the
//! agent dies before it released it.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::health::{self, Resolved};
use super::{receive, valid_session, Agent, DataStream, BUNDLES, SESSIONS};
use crate::channel::SecureChannel;
use crate::chunks::ChunkError;
use crate::deadlines;
use crate::port::{PortError, RestoreJob, RestoreTarget, Tree, Watchdog};
use crate::protocol::{
    enum_field, Ack, Body, Committed, Hello, MessageReceiver, MessageSender, ProtocolError, Refuse,
    Restored, Role, Step, StreamPurpose, WireStrategy, WorkloadKind, PROTOCOL_VERSION,
};
use crate::transfer::TransferError;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Greeting,
    Preparing,
    CheckingCpu,
    CheckingBundle,
    Receiving,
    Restoring,
    Held,
    Committing,
    Committed,
    Paging,
    RolledBack,
}

impl AgentState {
    /// The step a refusal in this state refuses.
    fn step(self) -> Step {
        match self {
            Self::Greeting => Step::Hello,
            Self::Preparing => Step::Prepare,
            Self::CheckingCpu => Step::Cpuinfo,
            Self::CheckingBundle => Step::Bundle,
            Self::Receiving => Step::Images,
            Self::Restoring | Self::Held => Step::Restore,
            Self::Committing | Self::Committed => Step::Commit,
            Self::Paging => Step::LazyPages,
            Self::RolledBack => Step::Unspecified,
        }
    }
}

/// Why one migration failed on this side.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Chunks(#[from] ChunkError),
    #[error("the source sent {got} where {expected} was due")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("refused: {reason}")]
    Refused {
        step: Step,
        reason: String,
        known: Option<String>,
    },
    #[error("no {0:?} data stream arrived for the session")]
    NoStream(StreamPurpose),
    #[error("the source gave up: {0}")]
    Aborted(String),
    #[error(transparent)]
    Port(#[from] PortError),
}

impl SessionError {
    /// Whether the source should be told (it broke nothing itself).
    fn tell_source(&self) -> bool {
        !matches!(self, Self::Aborted(_))
            && !matches!(self, Self::Protocol(ProtocolError::Channel(_)))
    }

    fn refusal(&self, state: AgentState) -> Refuse {
        match self {
            Self::Refused {
                step,
                reason,
                known,
            } => Refuse {
                reason: reason.clone(),
                step: *step as i32,
                known_failure: known.clone().unwrap_or_default(),
            },
            Self::Port(p) => Refuse {
                reason: crate::source::chain(p),
                step: state.step() as i32,
                known_failure: known_name(p),
            },
            other => Refuse {
                reason: format!("the destination failed: {}", crate::source::chain(other)),
                step: state.step() as i32,
                known_failure: String::new(),
            },
        }
    }
}

fn known_name(p: &PortError) -> String {
    p.known
        .and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn refused(step: Step, reason: impl Into<String>) -> SessionError {
    SessionError::Refused {
        step,
        reason: reason.into(),
        known: None,
    }
}

pub(super) fn unexpected(expected: &'static str, got: Body) -> SessionError {
    match got {
        Body::Abort(a) => SessionError::Aborted(a.cause),
        other => SessionError::Unexpected {
            expected,
            got: other.name(),
        },
    }
}

/// Removes a directory when dropped, unless kept.
#[derive(Debug)]
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What the source asked for, checked.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub name: String,
    pub strategy: WireStrategy,
    pub target: RestoreTarget,
    pub shared_rootfs: bool,
    pub tcp_established: bool,
    pub bytes_estimate: u64,
    pub health: Resolved,
}

/// One session's state.
pub(super) struct Session<'a> {
    pub agent: &'a Agent,
    pub tx: MessageSender,
    pub rx: MessageReceiver,
    pub state: AgentState,
    pub prepared: Option<Prepared>,
    pub dir: PathBuf,
    dir_guard: DirGuard,
    bundle_guard: DirGuard,
    pub streams: Option<mpsc::Receiver<DataStream>>,
    registered: Option<String>,
    tree: Option<Arc<dyn Tree>>,
    watchdog: Option<Box<dyn Watchdog>>,
    /// A restored copy exists (from `Held` on): its root's pid.
    restored_pid: Option<u32>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.registered.take() {
            if let Ok(mut map) = self.agent.streams.lock() {
                map.remove(&name);
            }
        }
    }
}

/// Runs one session over `channel`, whose first message was `hello`.
pub(super) async fn run(
    agent: &Agent,
    channel: SecureChannel,
    hello: Hello,
) -> Result<(), SessionError> {
    let (tx, rx) = channel.split();
    let mut s = Session {
        agent,
        tx: MessageSender::new(tx),
        rx: MessageReceiver::new(rx, deadlines::MESSAGE),
        state: AgentState::Greeting,
        prepared: None,
        dir: PathBuf::new(),
        dir_guard: DirGuard(None),
        bundle_guard: DirGuard(None),
        streams: None,
        registered: None,
        tree: None,
        watchdog: None,
        restored_pid: None,
        _permit: None,
    };
    let result = s.drive(hello).await;
    if let Err(e) = &result {
        tracing::warn!(state = ?s.state, error = %crate::source::chain(e), "session failed; rolling back");
        if e.tell_source() {
            let refusal = e.refusal(s.state);
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                s.tx.send(Body::Refuse(refusal)),
            )
            .await;
        }
        s.drop_copy().await;
        s.state = AgentState::RolledBack;
    }
    result
}

impl Session<'_> {
    fn enter(&mut self, state: AgentState) {
        tracing::debug!(from = ?self.state, to = ?state, "session state");
        self.state = state;
    }

    async fn ack(&mut self, step: Step) -> Result<(), SessionError> {
        Ok(self.tx.send(Ack::of(step)).await?)
    }

    pub(super) fn prepared(&self) -> &Prepared {
        // Set by `prepare`, which every later state follows.
        self.prepared
            .as_ref()
            .unwrap_or_else(|| unreachable!("a session past Preparing has its request"))
    }

    async fn drive(&mut self, hello: Hello) -> Result<(), SessionError> {
        self.greet(hello).await?;
        self.prepare().await?;
        self.check_cpu().await?;
        if matches!(self.prepared().target, RestoreTarget::Container { .. }) {
            self.check_bundle().await?;
        }
        let lazy = receive::run(self).await?;
        self.enter(AgentState::Restoring);
        let (held, done) = self.restore().await?;
        self.hold(held, done).await?;
        let pid = self.commit_health().await?;
        if let Some(lazy) = lazy {
            self.enter(AgentState::Paging);
            receive::pages(self, lazy, pid).await?;
        } else {
            self.release_watchdog();
        }
        Ok(())
    }

    /// The copy stands on its own: the watchdog stands down.
    pub(super) fn release_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.release();
        }
    }

    async fn greet(&mut self, hello: Hello) -> Result<(), SessionError> {
        // The greeting already matched the version; this is the
        // authenticated copy.
        if hello.protocol_version != PROTOCOL_VERSION || hello.role != Role::Source as i32 {
            return Err(refused(
                Step::Hello,
                format!(
                    "the peer is not a source of protocol version {PROTOCOL_VERSION} (it says version {}, role {})",
                    hello.protocol_version, hello.role
                ),
            ));
        }
        self._permit = Some(
            Arc::clone(&self.agent.sessions)
                .try_acquire_owned()
                .map_err(|_| {
                    refused(
                        Step::Hello,
                        format!(
                            "the agent is busy: {} migrations run, its limit; try again later",
                            self.agent.opts.limits.sessions
                        ),
                    )
                })?,
        );
        let port = Arc::clone(&self.agent.port);
        let facts = tokio::task::spawn_blocking(move || port.host())
            .await
            .map_err(|e| TransferError::Local(std::io::Error::other(e)))?;
        if !version_at_least(&facts.criu_version, &hello.criu_version) {
            return Err(refused(
                Step::Hello,
                format!(
                    "CRIU here is {} and older than the source's {}; upgrade CRIU on the destination",
                    facts.criu_version, hello.criu_version
                ),
            ));
        }
        self.tx
            .send(Body::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                role: Role::Destination as i32,
                criu_version: facts.criu_version,
                kernel: crabmigrate_runtime::host::kernel_release(),
                hostname: nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                post_copy: facts.post_copy.is_ok(),
                post_copy_why: facts.post_copy.err().unwrap_or_default(),
                max_files: self.agent.opts.limits.max_files,
                health_checks: self.agent.opts.health_checks.keys().cloned().collect(),
            }))
            .await?;
        self.enter(AgentState::Preparing);
        Ok(())
    }

    async fn prepare(&mut self) -> Result<(), SessionError> {
        let p = match self.rx.recv().await? {
            Body::Prepare(p) => p,
            other => return Err(unexpected("Prepare", other)),
        };
        let bad = |e: ProtocolError| refused(Step::Prepare, e.to_string());
        if !valid_session(&p.session) {
            return Err(refused(Step::Prepare, "invalid session name"));
        }
        let strategy: WireStrategy = enum_field("strategy", p.strategy).map_err(bad)?;
        let kind: WorkloadKind = enum_field("workload", p.workload).map_err(bad)?;
        let opts = &self.agent.opts;
        if p.files_estimate > opts.limits.max_files {
            return Err(refused(
                Step::Prepare,
                format!(
                    "the workload needs about {} image files, more than this agent's limit of {}",
                    p.files_estimate, opts.limits.max_files
                ),
            ));
        }
        let health = health::resolve(p.health.as_ref(), &opts.health_checks)
            .map_err(|e| refused(Step::Prepare, e.to_string()))?;
        let target = match kind {
            WorkloadKind::Process => RestoreTarget::Process,
            _ => {
                if let Err(e) = crabmigrate_runtime::spec::validate_id(&p.id) {
                    return Err(refused(Step::Prepare, format!("invalid container ID: {e}")));
                }
                let root = crabmigrate_runtime::state::StateRoot::new(opts.state_root.clone());
                if let Ok(mut state) = root.load(&p.id) {
                    state.refresh();
                    return Err(refused(
                        Step::Prepare,
                        format!(
                            "container {} already exists on this host ({}); delete it there or migrate with --target-id",
                            p.id, state.status
                        ),
                    ));
                }
                let bundle_dir = opts.work_dir.join(BUNDLES).join(&p.id);
                if bundle_dir.exists() {
                    return Err(refused(
                        Step::Prepare,
                        format!(
                            "a migration of container {} is already under way here; wait for it or migrate with --target-id",
                            p.id
                        ),
                    ));
                }
                RestoreTarget::Container {
                    id: p.id.clone(),
                    bundle_dir,
                    state_root: opts.state_root.clone(),
                }
            }
        };
        if let Some(free) = free_space(&opts.work_dir) {
            if free < p.bytes_estimate {
                return Err(refused(
                    Step::Prepare,
                    format!(
                        "not enough space in {}: {} bytes free, about {} needed; free space there or start the agent with another --work-dir",
                        opts.work_dir.display(),
                        free,
                        p.bytes_estimate
                    ),
                ));
            }
        }
        let dir = opts.work_dir.join(SESSIONS).join(&p.session);
        make_private_dir(&dir).map_err(TransferError::Local)?;
        self.dir_guard = DirGuard(Some(dir.clone()));
        self.dir = dir;
        if let RestoreTarget::Container { bundle_dir, .. } = &target {
            make_private_dir(bundle_dir).map_err(TransferError::Local)?;
            self.bundle_guard = DirGuard(Some(bundle_dir.clone()));
        }
        let (stream_tx, stream_rx) = mpsc::channel(1);
        if let Ok(mut map) = self.agent.streams.lock() {
            map.insert(p.session.clone(), stream_tx);
        }
        self.registered = Some(p.session.clone());
        self.streams = Some(stream_rx);
        tracing::info!(session = %p.session, ?strategy, ?kind, id = %p.id, "migration prepared");
        self.prepared = Some(Prepared {
            name: p.session,
            strategy,
            target,
            shared_rootfs: p.shared_rootfs,
            tcp_established: p.tcp_established,
            bytes_estimate: p.bytes_estimate,
            health,
        });
        self.ack(Step::Prepare).await?;
        self.enter(AgentState::CheckingCpu);
        Ok(())
    }

    /// The cgroup the restored tree will live in, and the watchdog on it:
    /// armed before the source freezes, or the migration is refused.
    async fn arm(&mut self, step: Step) -> Result<(), SessionError> {
        let port = Arc::clone(&self.agent.port);
        let name = format!("{}{}", self.agent.scope, self.prepared().name);
        let target = self.prepared().target.clone();
        let armed = tokio::task::spawn_blocking(move || {
            let tree = port.tree(&name, &target)?;
            let watchdog = port.watchdog(tree.as_ref())?;
            Ok::<_, PortError>((tree, watchdog))
        })
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))?;
        match armed {
            Ok((tree, watchdog)) => {
                self.tree = Some(tree);
                self.watchdog = Some(watchdog);
                Ok(())
            }
            Err(e) => Err(SessionError::Refused {
                step,
                reason: format!(
                    "{}; the restored workload would not be guarded, so the migration does not start",
                    crate::source::chain(&e)
                ),
                known: None,
            }),
        }
    }

    async fn check_cpu(&mut self) -> Result<(), SessionError> {
        let dir = self.dir.join("cpuinfo");
        crate::transfer::recv_dir(&mut self.rx, &dir, 16).await?;
        let port = Arc::clone(&self.agent.port);
        tokio::task::spawn_blocking(move || port.cpuinfo_check(&dir))
            .await
            .map_err(|e| TransferError::Local(std::io::Error::other(e)))??;
        if matches!(self.prepared().target, RestoreTarget::Process) {
            self.arm(Step::Cpuinfo).await?;
            self.ack(Step::Cpuinfo).await?;
            self.enter(AgentState::Receiving);
        } else {
            self.ack(Step::Cpuinfo).await?;
            self.enter(AgentState::CheckingBundle);
        }
        Ok(())
    }

    async fn check_bundle(&mut self) -> Result<(), SessionError> {
        let RestoreTarget::Container { id, bundle_dir, .. } = self.prepared().target.clone() else {
            return Ok(());
        };
        crate::transfer::recv_dir(&mut self.rx, &bundle_dir, 16).await?;
        // Deleting the container here deletes this bundle too.
        std::fs::write(
            bundle_dir.join(crabmigrate_runtime::container::OWNED_BUNDLE_MARKER),
            b"",
        )
        .map_err(TransferError::Local)?;
        if !self.prepared().shared_rootfs {
            // The container's root: its mode is the container's (CRIU
            // checks it), not private.
            std::fs::create_dir(bundle_dir.join("rootfs")).map_err(TransferError::Local)?;
        }
        let port = Arc::clone(&self.agent.port);
        tokio::task::spawn_blocking(move || port.check_bundle(&bundle_dir, &id))
            .await
            .map_err(|e| TransferError::Local(std::io::Error::other(e)))??;
        self.arm(Step::Bundle).await?;
        self.ack(Step::Bundle).await?;
        self.enter(AgentState::Receiving);
        Ok(())
    }

    /// Starts the restore and waits until it holds the tree.
    async fn restore(
        &mut self,
    ) -> Result<
        (
            crate::port::Held,
            tokio::sync::oneshot::Receiver<Result<u32, PortError>>,
        ),
        SessionError,
    > {
        let p = self.prepared().clone();
        let tree = self
            .tree
            .clone()
            .ok_or_else(|| refused(Step::Restore, "no cgroup was made for the tree"))?;
        let run = self.agent.port.restore(RestoreJob {
            images_dir: self.dir.join("images"),
            target: p.target,
            tcp_established: p.tcp_established,
            lazy: p.strategy == WireStrategy::PostCopy,
            tree,
        });
        let held = tokio::time::timeout(deadlines::RESTORED, run.held).await;
        match held {
            Ok(Ok(held)) => {
                self.restored_pid = Some(held.pid);
                tracing::info!(
                    pid = held.pid,
                    restore_ms = held.restore_time.as_secs_f64() * 1000.0,
                    "restored, held until the source commits"
                );
                self.tx
                    .send(Body::Restored(Restored {
                        pid: held.pid,
                        restore_time_us: u64::try_from(held.restore_time.as_micros())
                            .unwrap_or(u64::MAX),
                    }))
                    .await?;
                self.enter(AgentState::Held);
                Ok((held, run.done))
            }
            Ok(Err(_)) => match run.done.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(refused(
                    Step::Restore,
                    "the restore ended without holding the tree",
                )),
            },
            Err(_) => Err(refused(
                Step::Restore,
                format!(
                    "the restore did not finish within {:?}",
                    deadlines::RESTORED
                ),
            )),
        }
    }

    /// Held at post-restore: Commit lets the tree run; anything else (an
    /// Abort, silence, a lost connection) lets CRIU kill it.
    async fn hold(
        &mut self,
        held: crate::port::Held,
        done: tokio::sync::oneshot::Receiver<Result<u32, PortError>>,
    ) -> Result<(), SessionError> {
        let verdict = self.rx.recv_within(deadlines::COMMIT).await;
        let commit = matches!(verdict, Ok(Body::Commit(_)));
        let _ = held.decide.send(commit);
        let finished = done.await.unwrap_or_else(|_| {
            Err(PortError::new(
                crate::port::Op::Restore,
                "the restore's thread died",
            ))
        });
        if !commit {
            return Err(match verdict {
                Ok(other) => unexpected("Commit", other),
                Err(e) => e.into(),
            });
        }
        self.enter(AgentState::Committing);
        tracing::info!(
            pid = held.pid,
            "commit received; the tree runs and its health is checked"
        );
        match finished {
            Ok(_) => Ok(()),
            Err(e) => Err(SessionError::Refused {
                step: Step::Commit,
                reason: format!(
                    "restore failed after the commit: {}",
                    crate::source::chain(&e)
                ),
                known: Some(known_name(&e)).filter(|k| !k.is_empty()),
            }),
        }
    }

    /// The tree runs: the health check decides, then Committed.
    async fn commit_health(&mut self) -> Result<u32, SessionError> {
        let pid = self.root_pid();
        let check = self.prepared().health.clone();
        if let Err(why) = health::run(&check, pid).await {
            tracing::warn!(pid, %why, "health check failed; dropping the restored copy");
            return Err(refused(
                Step::Health,
                format!("health check failed on the destination: {why}"),
            ));
        }
        self.enter(AgentState::Committed);
        // Whatever happens to this message, the copy runs on: the source
        // is kept stopped (in doubt) if it does not hear it.
        if let Err(e) = self.tx.send(Body::Committed(Committed { pid })).await {
            tracing::error!(pid, error = %crate::source::chain(&e), "cannot tell the source the migration committed; it keeps its copy stopped (in doubt)");
        }
        self.bundle_guard.0 = None;
        tracing::info!(pid, session = %self.prepared().name, "migration committed; the workload runs here");
        if let (RestoreTarget::Process, Some(tree)) = (&self.prepared().target, self.tree.clone()) {
            // The tree's own cgroup goes once the tree has ended.
            tokio::spawn(async move {
                while tree.occupied() {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
                tree.release();
            });
        }
        Ok(pid)
    }

    /// The restored root's pid.
    fn root_pid(&self) -> u32 {
        self.restored_pid.unwrap_or(0)
    }

    /// Kills the restored copy (with its whole cgroup) and forgets it.
    async fn drop_copy(&mut self) {
        let Some(tree) = self.tree.clone() else {
            return;
        };
        let target = self.prepared.as_ref().map(|p| p.target.clone());
        let restored = self.restored_pid.is_some();
        let _ = tokio::task::spawn_blocking(move || {
            if let (true, Some(RestoreTarget::Container { id, state_root, .. })) = (restored, &target) {
                let root = crabmigrate_runtime::state::StateRoot::new(state_root.clone());
                if let Err(e) = crabmigrate_runtime::container::delete(&root, id, true) {
                    tracing::warn!(id, error = %crate::source::chain(&e), "cannot delete the dropped container");
                }
            }
            if let Err(e) = tree.kill() {
                tracing::error!(error = %crate::source::chain(&e), "cannot kill the restored copy");
            }
            tree.release();
        })
        .await;
    }
}

/// `a >= b` for dotted versions.
pub(super) fn version_at_least(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    parse(a) >= parse(b)
}

pub(super) fn free_space(dir: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// A new directory only root can enter (it will hold the workload's
/// memory).
pub(super) fn make_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("4.2.1", "4.2.1"));
        assert!(version_at_least("4.10", "4.9.3"));
        assert!(!version_at_least("4.1", "4.1.1"));
        assert!(!version_at_least("3.17.1", "4.2"));
    }
}
