//! Pre-copy: rounds of leave-running dumps sent as content-hashed chunks
//! (see [`crate::chunks`]) until they converge ([`super::converge`]), then
//! a frozen final round that sends only what changed.
//!
//! ```text
//!   DUMP --leave-running, hash 4 KiB chunks  |
//!   |-- RoundStart(1) + new chunks + Ack --->|   chunk store
//!   |<---------------------------- Ack ------|
//!   ...  until converged
//!   freeze, DUMP, post-dump (held), hash     |
//!   |-- RoundStart(last) + Manifest -------->|
//!   |-- new chunks + FileIndex + Ack ------->|   files assembled, checked,
//!   :              cut-over                  :   RESTORE
//! ```

use std::time::Instant;

use crate::chunks::{self, ChunkSender};
use crate::events::Event;
use crate::port::PagesTo;
use crate::protocol::{Body, RoundStart, Step};

use super::cutover::{self, roll_back};
use super::plan::{converge, RoundFigures};
use super::{blocking, ms, Job, MigrateError, Outcome, RoundReport};

/// One leave-running round: dump, hash, send what is new. The workload
/// runs on throughout (CRIU freezes it only while it writes the dump).
async fn round(
    job: &Job<'_>,
    link: &mut super::Link,
    sender: &mut ChunkSender,
    round: u32,
) -> Result<(RoundReport, RoundFigures), MigrateError> {
    let dir = job.work_dir.join(format!("round-{round}"));
    std::fs::create_dir_all(&dir).map_err(|e| MigrateError::Local("create a work directory", e))?;
    let started = Instant::now();
    let meter = link.wire.clone();
    let phase = job
        .req
        .events
        .phase(&format!("round {round}"), None, &meter);
    // The dump is not interrupted: a signal ends the migration once the
    // workload runs on.
    let run = job.dump(&dir, PagesTo::Images, true, None);
    let figures = run.done.await.unwrap_or_else(|_| {
        Err(crate::port::PortError::new(
            crate::port::Op::Dump,
            "the dump's thread ended",
        ))
    })?;
    if let Some(signal) = job.req.interrupt.fired() {
        return Err(MigrateError::Interrupted(signal));
    }
    job.archive_rootfs(&dir).await?;
    let d = dir.clone();
    let files = blocking(move || chunks::hash_dir(&d))
        .await?
        .map_err(|e| MigrateError::Chunks(e.into()))?;
    let send_started = Instant::now();
    let sent = job
        .interruptible(async {
            link.tx
                .send(Body::RoundStart(RoundStart { round, last: false }))
                .await?;
            let sent = sender
                .send(&mut link.tx, &dir, &files, false, &meter)
                .await?;
            link.expect_ack(Step::Round).await?;
            Ok(sent)
        })
        .await?;
    let send_secs = send_started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    phase.finish();
    let report = RoundReport {
        round,
        bytes_total: sent.total,
        bytes_sent: sent.data,
        index_bytes: 0,
        pages_written: figures.pages_written,
        ms: ms(started.elapsed()),
        last: false,
    };
    job.req.events.emit(Event::Round {
        round,
        pages_written: report.pages_written,
        bytes_total: report.bytes_total,
        bytes_sent: report.bytes_sent,
        ms: report.ms,
    });
    Ok((
        report,
        RoundFigures {
            round,
            total: sent.total,
            sent: sent.data,
            send_secs,
        },
    ))
}

pub(super) async fn run(job: &Job<'_>, link: &mut super::Link) -> Result<Outcome, MigrateError> {
    let events = &job.req.events;
    let mut sender = ChunkSender::new();
    let mut rounds: Vec<RoundReport> = Vec::new();
    let mut figures: Vec<RoundFigures> = Vec::new();
    let converged = loop {
        let n = figures.len() as u32 + 1;
        let (report, f) = round(job, link, &mut sender, n).await?;
        rounds.push(report);
        figures.push(f);
        if let Some(c) = converge(&figures, &job.req.pre_copy) {
            break c;
        }
    };
    events.emit(Event::Converged {
        rounds: figures.len() as u32,
        why: converged.to_string(),
    });

    // The final round: frozen, dumped here, only changed chunks sent.
    let final_round = figures.len() as u32 + 1;
    let started = Instant::now();
    let meter = link.wire.clone();
    let phase = events.phase(&format!("round {final_round} (final)"), None, &meter);
    let hold = job.hold();
    let run = job.dump(&job.images_dir, PagesTo::Images, false, Some(hold.clone()));
    let (mut frozen, _serving) = job.freeze(link, run, hold).await?;
    let sent = job
        .interruptible(async {
            job.archive_rootfs(&job.images_dir).await?;
            let d = job.images_dir.clone();
            let hashing = Instant::now();
            let files = blocking(move || chunks::hash_dir(&d))
                .await?
                .map_err(|e| MigrateError::Chunks(e.into()))?;
            tracing::info!(
                frozen_for_ms = ms(frozen.frozen_at.elapsed()),
                hash_ms = ms(hashing.elapsed()),
                "final round dumped and hashed"
            );
            link.tx
                .send(Body::RoundStart(RoundStart {
                    round: final_round,
                    last: true,
                }))
                .await?;
            Ok(sender
                .send(&mut link.tx, &job.images_dir, &files, true, &meter)
                .await?)
        })
        .await;
    let sent = match sent {
        Ok(s) => s,
        Err(e) => return Err(roll_back(link, frozen, e).await),
    };
    let committed = match cutover::commit(job, link, &mut frozen).await {
        Ok(c) => c,
        Err(fate) => return Err(cutover::fail(job, link, frozen, fate).await),
    };
    phase.finish();
    let downtime_ms = ms(committed.running_at.duration_since(frozen.frozen_at));
    events.emit(Event::CutOver {
        destination_pid: committed.pid,
        downtime_ms,
    });
    let dump = match frozen.release().await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %super::chain(&e), "the source's CRIU failed after the commit");
            Default::default()
        }
    };
    rounds.push(RoundReport {
        round: final_round,
        bytes_total: sent.total,
        bytes_sent: sent.data,
        index_bytes: sent.index,
        pages_written: dump.pages_written,
        ms: ms(started.elapsed()),
        last: true,
    });
    Ok(Outcome {
        rounds,
        converged: Some(converged),
        downtime_ms,
        criu_frozen_ms: dump.frozen_ms,
        restore_ms: Some(committed.restore_ms),
        destination_pid: committed.pid,
        ..Default::default()
    })
}
