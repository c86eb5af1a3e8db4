//! The guard of the frozen source: no code path can forget to decide it.
//!
//! ```text
//!   Held (CRIU holds the frozen tree at post-dump)
//!     | begin_commit: in-doubt record written, thaw watchdog told "hold",
//!     |               hold can no longer expire, every task gets SIGSTOP
//!     v
//!   Stopped (Commit may be on its way)
//!
//!   dropped while Held    -> CRIU resumes the tree: it runs on
//!   dropped while Stopped -> CRIU lets go, the SIGSTOP keeps it stopped
//!                            (in doubt: `crabmigrate recover`)
//! ```
//!
//! The explicit ends: [`FrozenSource::release`] (Committed: CRIU ends the
//! source), [`FrozenSource::resume`] (before the commit, or refused after
//! it: SIGCONT, then CRIU resumes), [`FrozenSource::keep_stopped`] (in
//! doubt). Each waits until CRIU has let go.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::hold::{Hold, HoldState, Verdict};
use crate::port::{DumpFigures, PortError, SourceTree, SourceWatchdog};
use crate::recover::{self, RecordedWorkload, Task};

use super::MigrateError;

/// The thaw watchdog of a container source, shared by the migration.
pub(crate) type WatchdogSlot = Arc<Mutex<Option<Box<dyn SourceWatchdog>>>>;

type DumpDone = oneshot::Receiver<Result<DumpFigures, PortError>>;

/// The frozen source.
#[derive(Debug)]
pub(crate) struct FrozenSource {
    /// When the tree froze (downtime starts).
    pub frozen_at: Instant,
    hold: Arc<Hold>,
    tree: Arc<dyn SourceTree>,
    done: Option<DumpDone>,
    /// The tasks stopped with SIGSTOP (after `begin_commit`).
    stopped: Option<Vec<u32>>,
    /// The in-doubt record (work directory, session).
    record: Option<(PathBuf, String)>,
    watchdog: WatchdogSlot,
    decided: bool,
}

/// What the in-doubt record needs.
#[derive(Debug, Clone)]
pub(crate) struct RecordFacts {
    pub work_dir: PathBuf,
    pub session: String,
    pub to: String,
    /// `None` for a process tree (its tasks are recorded).
    pub container: Option<(String, PathBuf, String)>,
    pub root_pid: u32,
}

impl FrozenSource {
    pub(crate) fn new(
        frozen_at: Instant,
        hold: Arc<Hold>,
        tree: Arc<dyn SourceTree>,
        done: DumpDone,
        watchdog: WatchdogSlot,
    ) -> Self {
        Self {
            frozen_at,
            hold,
            tree,
            done: Some(done),
            stopped: None,
            record: None,
            watchdog,
            decided: false,
        }
    }

    /// Post-copy: CRIU serves the lazy pages from the frozen tree from now
    /// on (the post-dump hold ends); a broken page stream makes CRIU resume
    /// the tree, success makes it kill it.
    pub(crate) fn serve_pages(&mut self) -> bool {
        self.hold.decide(Verdict::Release)
    }

    /// Prepares the commit: the in-doubt record, the watchdog's "hold", the
    /// hold's deadline cancelled, SIGSTOP on every task. After this the
    /// source never runs on its own.
    pub(crate) fn begin_commit(&mut self, facts: &RecordFacts) -> Result<(), MigrateError> {
        let tasks = self.tree.tasks();
        let workload = match &facts.container {
            Some((id, state_root, target_id)) => RecordedWorkload::Container {
                id: id.clone(),
                state_root: state_root.clone(),
                target_id: target_id.clone(),
            },
            None => RecordedWorkload::Process {
                root: facts.root_pid,
                tasks: tasks
                    .iter()
                    .filter_map(|&pid| {
                        Some(Task {
                            pid,
                            start_time: recover::start_time(pid)?,
                        })
                    })
                    .collect(),
            },
        };
        let record = recover::Record {
            session: facts.session.clone(),
            to: facts.to.clone(),
            workload,
            created: crabmigrate_runtime::state::now(),
        };
        record.write(&facts.work_dir).map_err(|e| {
            MigrateError::Local("write the in-doubt record", std::io::Error::other(e))
        })?;
        self.record = Some((facts.work_dir.clone(), facts.session.clone()));
        if let Ok(mut slot) = self.watchdog.lock() {
            if let Some(w) = slot.as_mut() {
                w.hold();
            }
        }
        // Post-copy released the hold already for the lazy pages; the
        // other strategies end its deadline here (or learn it expired).
        if self.hold.state() != HoldState::Decided(Verdict::Release) {
            if let Err(refused) = self.hold.begin_commit() {
                self.forget_record();
                return Err(refused.into());
            }
        }
        self.tree.stop(&tasks)?;
        self.stopped = Some(tasks);
        Ok(())
    }

    fn forget_record(&mut self) {
        if let Some((dir, session)) = self.record.take() {
            recover::Record::remove(&dir, &session);
        }
    }

    fn watchdog_done(&self) {
        if let Some(w) = self.watchdog.lock().ok().and_then(|mut s| s.take()) {
            w.done();
        }
    }

    async fn criu_let_go(&mut self) -> Result<DumpFigures, PortError> {
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| {
                Err(PortError::new(
                    crate::port::Op::Dump,
                    "the dump's thread ended without a word",
                ))
            }),
            None => Ok(DumpFigures::default()),
        }
    }

    /// Committed: CRIU ends the source (post-copy: once every page is
    /// served). On success the record goes; if CRIU fails after the commit
    /// the stopped tasks are discarded (the destination runs the
    /// workload).
    pub(crate) async fn release(mut self) -> Result<DumpFigures, PortError> {
        self.decided = true;
        self.hold.decide(Verdict::Release);
        let result = self.criu_let_go().await;
        if result.is_err() {
            if let Some(pids) = &self.stopped {
                self.tree.discard(pids);
            }
        }
        self.forget_record();
        self.watchdog_done();
        result
    }

    /// The source runs on: continue the stopped tasks (a refusal after the
    /// commit), then let CRIU resume the tree; a container CRIU left
    /// frozen is thawed.
    pub(crate) async fn resume(mut self) {
        self.decided = true;
        if let Some(pids) = self.stopped.take() {
            self.tree.cont(&pids);
        }
        self.hold.decide(Verdict::Resume);
        let _ = self.criu_let_go().await;
        if let Err(e) = self.tree.thaw_if_frozen() {
            tracing::error!(error = %super::chain(&e), "cannot thaw the source container");
        }
        self.forget_record();
        self.watchdog_done();
    }

    /// In doubt: CRIU lets go and the SIGSTOP keeps the tree stopped; a
    /// container is also paused. The record stays for `crabmigrate
    /// recover`.
    pub(crate) async fn keep_stopped(mut self) {
        self.decided = true;
        self.hold.decide(Verdict::Resume);
        let _ = self.criu_let_go().await;
        if let Some(pids) = &self.stopped {
            self.tree.settle_stopped(pids);
        }
        // The watchdog was told "hold": it leaves the container frozen.
        if let Some(w) = self.watchdog.lock().ok().and_then(|mut s| s.take()) {
            drop(w);
        }
    }

    /// Post-copy after the commit, the page stream broken: CRIU resumed the
    /// tree, which the SIGSTOP keeps stopped. `destination_dropped`: the
    /// destination said its copy is gone, so the source resumes; else it
    /// stays stopped, in doubt.
    pub(crate) async fn after_broken_pages(mut self, destination_dropped: bool) {
        let _ = self.criu_let_go().await;
        self.decided = true;
        if destination_dropped {
            if let Some(pids) = self.stopped.take() {
                self.tree.cont(&pids);
            }
            self.forget_record();
            self.watchdog_done();
        } else if let Some(pids) = &self.stopped {
            self.tree.settle_stopped(pids);
        }
    }

    /// Post-copy: waits for CRIU's end (every page served, or the stream
    /// broken), keeping the decision for later.
    pub(crate) async fn pages_served(&mut self) -> Result<DumpFigures, PortError> {
        self.criu_let_go().await
    }

    /// Post-copy success: every page served and CRIU ended the source.
    pub(crate) fn finished(mut self) {
        self.decided = true;
        self.forget_record();
        self.watchdog_done();
    }
}

impl Drop for FrozenSource {
    fn drop(&mut self) {
        if !self.decided {
            // Held: CRIU resumes the tree. Stopped: CRIU lets go and the
            // SIGSTOP keeps it stopped (the record stays).
            self.hold.decide(Verdict::Resume);
        }
    }
}
