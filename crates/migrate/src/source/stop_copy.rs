//! Stop-copy: freeze, dump with every page streamed to the destination's
//! page server, send the other images, cut over.
//!
//! ```text
//!   |<----------------------- PagesReady ----|   page server on loopback
//!   |== data connection: StreamOpen(pages) ==|
//!   freeze, DUMP: pages ==== tunnel =======> page server
//!   post-dump (frozen, held)                 |
//!   |-- Manifest + images (+ rootfs tar) --->|   digests checked, RESTORE
//!   :              cut-over                  :
//! ```

use tokio::sync::oneshot;

use crate::deadlines;
use crate::events::Event;
use crate::port::PagesTo;
use crate::protocol::{Body, StreamPurpose};
use crate::transfer;

use super::cutover::{self, roll_back};
use super::link::{expect, Link};
use super::{ms, Job, MigrateError, Outcome};

pub(super) async fn run(job: &Job<'_>, link: &mut Link) -> Result<Outcome, MigrateError> {
    let events = &job.req.events;
    match job
        .interruptible(link.next_within(deadlines::MESSAGE))
        .await?
    {
        Body::PagesReady(_) => {}
        other => return Err(expect("PagesReady", other)),
    }
    // CRIU writes its pages into one end of a socket pair (no loopback TCP
    // hop); the other end is carried over the encrypted data connection.
    let local = |e| MigrateError::Local("make a socket pair", e);
    let (criu_end, our_end) = std::os::unix::net::UnixStream::pair().map_err(local)?;
    our_end.set_nonblocking(true).map_err(local)?;
    let our_end = tokio::net::UnixStream::from_std(our_end).map_err(local)?;
    let data = job.interruptible(link.data(StreamPurpose::Pages)).await?;
    let meter = link.wire.clone();
    // CRIU has written every page once it reaches post-dump (it waited for
    // the page server's answer to its last command): the frozen hand-over
    // ends the stream, since this process holds CRIU's end too.
    let (pages_done_tx, pages_done_rx) = oneshot::channel();
    let pump = tokio::spawn(transfer::pump_with(
        our_end,
        data,
        transfer::PumpOptions {
            meter: meter.clone(),
            local_done: Some(pages_done_rx),
            ..Default::default()
        },
    ));
    let memory = events.phase("memory", Some(job.subject.memory), &meter);
    let hold = job.hold();
    let run = job.dump(
        &job.images_dir,
        PagesTo::PageServer(criu_end.into()),
        false,
        Some(hold.clone()),
    );
    let (mut frozen, _serving) = job.freeze(link, run, hold).await?;
    let _ = pages_done_tx.send(());
    let sent = job
        .interruptible(async {
            let pumped = pump
                .await
                .map_err(|e| MigrateError::Local("carry the pages", std::io::Error::other(e)))??;
            memory.finish();
            job.archive_rootfs(&job.images_dir).await?;
            let image_bytes = job.send_images(link).await?;
            Ok((pumped, image_bytes))
        })
        .await;
    let (pumped, image_bytes) = match sent {
        Ok(x) => x,
        Err(e) => return Err(roll_back(link, frozen, e).await),
    };
    let committed = match cutover::commit(job, link, &mut frozen).await {
        Ok(c) => c,
        Err(fate) => return Err(cutover::fail(job, link, frozen, fate).await),
    };
    let downtime_ms = ms(committed.running_at.duration_since(frozen.frozen_at));
    events.emit(Event::CutOver {
        destination_pid: committed.pid,
        downtime_ms,
    });
    let figures = match frozen.release().await {
        Ok(f) => f,
        Err(e) => {
            // The destination runs the workload; the stopped remains of the
            // source were discarded.
            tracing::warn!(error = %super::chain(&e), "the source's CRIU failed after the commit");
            Default::default()
        }
    };
    Ok(Outcome {
        page_bytes: pumped.out,
        image_bytes,
        downtime_ms,
        criu_frozen_ms: figures.frozen_ms,
        restore_ms: Some(committed.restore_ms),
        destination_pid: committed.pid,
        ..Default::default()
    })
}
