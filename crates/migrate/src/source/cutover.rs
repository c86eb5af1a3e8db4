//! The cut-over every strategy ends with: Restored, the commit, Committed
//! — and the one right way out of each failure.

use std::time::Instant;

use crate::deadlines;
use crate::events::Event;
use crate::protocol::{Body, Commit};

use super::frozen::FrozenSource;
use super::link::{expect, refusal, Link};
use super::{chain, InDoubt, Job, MigrateError};

/// The destination runs the workload.
#[derive(Debug)]
pub(crate) struct Committed {
    pub pid: u32,
    /// When Committed arrived.
    pub running_at: Instant,
    /// The destination's restore time.
    pub restore_ms: f64,
}

/// How a failed cut-over ends.
#[derive(Debug)]
pub(crate) enum Fate {
    /// Before Commit was sent: the source resumes.
    Before(MigrateError),
    /// Refused after Commit: the destination's copy is gone; the source
    /// resumes.
    Refused(MigrateError),
    /// Commit sent, outcome unknown: the source stays stopped.
    Doubt(MigrateError),
}

/// Waits for Restored, prepares and sends Commit, waits for Committed.
pub(crate) async fn commit(
    job: &Job<'_>,
    link: &mut Link,
    frozen: &mut FrozenSource,
) -> Result<Committed, Fate> {
    let restored = job
        .interruptible(link.next_within(deadlines::RESTORED))
        .await
        .map_err(Fate::Before)?;
    let restored = match restored {
        Body::Restored(r) => r,
        other => return Err(Fate::Before(expect("Restored", other))),
    };
    if let Some(signal) = job.req.interrupt.fired() {
        return Err(Fate::Before(MigrateError::Interrupted(signal)));
    }
    tracing::info!(pid = restored.pid, "destination restored, committing");
    // From here on the source never resumes on its own: the destination
    // may run the workload as soon as Commit arrives. Only a refusal (its
    // copy is gone) lets the source resume; anything else is in doubt.
    frozen
        .begin_commit(&job.record_facts(link))
        .map_err(Fate::Before)?;
    if let Err(e) = link.tx.send(Body::Commit(Commit {})).await {
        return Err(Fate::Doubt(e.into()));
    }
    job.req.events.emit(Event::Committing);
    match link.next_within(deadlines::COMMITTED).await {
        Ok(Body::Committed(c)) => Ok(Committed {
            pid: c.pid,
            running_at: Instant::now(),
            restore_ms: restored.restore_time_us as f64 / 1000.0,
        }),
        Ok(Body::Refuse(r)) => Err(Fate::Refused(MigrateError::Refused(refusal(r)))),
        Ok(other) => Err(Fate::Doubt(expect("Committed", other))),
        Err(e) => Err(Fate::Doubt(e)),
    }
}

/// A send that failed because the destination hung up: its refusal, if it
/// sent one, is the real cause.
pub(crate) async fn with_cause(link: &mut Link, e: MigrateError) -> MigrateError {
    match e {
        MigrateError::Protocol(_) | MigrateError::Transfer(_) | MigrateError::Chunks(_) => {
            match link.destination_cause().await {
                Some(theirs) => MigrateError::Peer(theirs, Box::new(e)),
                None => e,
            }
        }
        other => other,
    }
}

/// Ends a failure before the commit: the destination is told, the source
/// resumes.
pub(crate) async fn roll_back(
    link: &mut Link,
    frozen: FrozenSource,
    e: MigrateError,
) -> MigrateError {
    let e = with_cause(link, e).await;
    link.abort(&chain(&e)).await;
    frozen.resume().await;
    MigrateError::RolledBack(Box::new(e))
}

/// Ends a failed cut-over as its fate says.
pub(crate) async fn fail(
    job: &Job<'_>,
    link: &mut Link,
    frozen: FrozenSource,
    fate: Fate,
) -> MigrateError {
    match fate {
        Fate::Before(e) => roll_back(link, frozen, e).await,
        Fate::Refused(e) => {
            frozen.resume().await;
            MigrateError::RolledBack(Box::new(e))
        }
        Fate::Doubt(e) => {
            frozen.keep_stopped().await;
            in_doubt(job, link, &e)
        }
    }
}

/// The in-doubt error, with the commands that end it.
pub(crate) fn in_doubt(job: &Job<'_>, link: &Link, cause: &MigrateError) -> MigrateError {
    let (resume, discard) = crate::recover::commands(&job.req.work_dir, &link.session);
    let check = match &job.req.workload {
        crate::port::Workload::Container { .. } => format!(
            "check with `crabmigrate state {}` on {}",
            job.target_id,
            link.to()
        ),
        crate::port::Workload::Process { .. } => format!(
            "check the agent's log on {} for session {}",
            link.to(),
            link.session
        ),
    };
    tracing::error!(cause = %chain(cause), session = %link.session, "migration in doubt; the source is kept stopped");
    MigrateError::InDoubt(Box::new(InDoubt {
        session: link.session.clone(),
        to: link.to().to_owned(),
        cause: chain(cause),
        check,
        resume,
        discard,
    }))
}
