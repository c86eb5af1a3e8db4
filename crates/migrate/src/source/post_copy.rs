//! Post-copy: freeze, send all but the lazily restorable pages, restore at
//! once on the destination, fault the rest in over the network.
//!
//! ```text
//!   freeze, DUMP --lazy-pages, post-dump     |
//!   |-- Manifest + images (no lazy pages) -->|
//!   |<---------------------------- Ack ------|   criu lazy-pages
//!   release post-dump: CRIU serves pages     |
//!   |== data connection: StreamOpen(lazy) ===|   page requests <-> pages
//!   :              cut-over                  :   RESTORE --lazy-pages
//!   CRIU serves pages while  <-------------->|   watchdog until last page
//!   the destination runs                     |
//!   |<--------------------- Ack(lazy pages) -|   or Refuse: copy killed
//! ```
//!
//! After post-dump is released, the lever that resumes the source is the
//! lazy page server failing (CRIU resumes the tree then); an orderly end
//! of its connection would read as "every page served" and kill the
//! source, so every failure resets it. After the commit the SIGSTOP keeps
//! the tree stopped whatever CRIU does: only the destination saying its
//! copy is gone lets it continue.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::deadlines;
use crate::events::Event;
use crate::port::PagesTo;
use crate::protocol::{Body, Step, StreamPurpose};
use crate::transfer::{self, Pumped, TransferError};

use super::cutover::{self, with_cause, Fate};
use super::frozen::FrozenSource;
use super::link::Link;
use super::{chain, ms, Job, MigrateError, Outcome};

/// How long stopping CRIU's lazy page server after a failure may take.
const LAZY_STOP: Duration = Duration::from_secs(30);

/// A TCP port free right now (CRIU's lazy page server needs a number).
fn free_port() -> Result<u16, MigrateError> {
    let local = |e| MigrateError::Local("find a free port", e);
    let socket = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(local)?;
    Ok(socket.local_addr().map_err(local)?.port())
}

/// Makes CRIU's lazy page server fail, so that CRIU resumes the tree: a
/// connection that sends an invalid command and closes with a reset.
async fn fail_lazy_server(port: u16) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut socket) = TcpStream::connect(("127.0.0.1", port)).await {
        let _ = socket.write_all(&[0xff; 24]).await;
        let _ = socket.set_zero_linger();
    }
}

/// The carried lazy stream.
struct Pump {
    task: tokio::task::JoinHandle<Result<Pumped, TransferError>>,
    cut: oneshot::Sender<()>,
}

impl Pump {
    /// Breaks the stream: CRIU's connection gets a reset.
    async fn cut(self) {
        let _ = self.cut.send(());
        let _ = tokio::time::timeout(LAZY_STOP, self.task).await;
    }
}

/// Makes CRIU's lazy server fail, whether or not the stream was carried
/// yet, and waits for CRIU to let go (the tree: resumed by CRIU; stopped
/// still if it was stopped for the commit).
async fn break_pages(pump: Option<Pump>, serving: Option<oneshot::Receiver<()>>, port: u16) {
    match pump {
        Some(pump) => pump.cut().await,
        None => {
            // CRIU starts its lazy page server even after a refused
            // post-dump.
            if let Some(serving) = serving {
                if matches!(tokio::time::timeout(LAZY_STOP, serving).await, Ok(Ok(()))) {
                    fail_lazy_server(port).await;
                }
            } else {
                fail_lazy_server(port).await;
            }
        }
    }
}

pub(super) async fn run(job: &Job<'_>, link: &mut Link) -> Result<Outcome, MigrateError> {
    let events = &job.req.events;
    let lazy_port = free_port()?;
    let hold = job.hold();
    let run = job.dump(
        &job.images_dir,
        PagesTo::Lazy(lazy_port),
        false,
        Some(hold.clone()),
    );
    let (mut frozen, serving) = job.freeze(link, run, hold).await?;
    // Everything but the lazy pages goes first; until the destination has
    // it, refusing post-dump resumes the source.
    let sent = job
        .interruptible(async {
            job.archive_rootfs(&job.images_dir).await?;
            let image_bytes = job.send_images(link).await?;
            link.expect_ack(Step::Images).await?;
            Ok(image_bytes)
        })
        .await;
    let image_bytes = match sent {
        Ok(b) => b,
        Err(e) => {
            let e = with_cause(link, e).await;
            link.abort(&chain(&e)).await;
            tokio::join!(frozen.resume(), break_pages(None, Some(serving), lazy_port));
            return Err(MigrateError::RolledBack(Box::new(e)));
        }
    };
    // CRIU now serves the lazy pages on lazy_port; carry them.
    frozen.serve_pages();
    let meter = link.wire.clone();
    let mut pump = None;
    let carried = job
        .interruptible(async {
            match tokio::time::timeout(deadlines::MESSAGE, serving).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(MigrateError::Port(crate::port::PortError::new(
                        crate::port::Op::Dump,
                        "CRIU's lazy page server did not start",
                    )))
                }
            }
            let data = link.data(StreamPurpose::Lazy).await?;
            let criu = TcpStream::connect(("127.0.0.1", lazy_port))
                .await
                .map_err(|e| MigrateError::Local("connect to CRIU's lazy page server", e))?;
            let (cut_tx, cut_rx) = oneshot::channel();
            pump = Some(Pump {
                task: tokio::spawn(transfer::pump_with(
                    criu,
                    data,
                    transfer::PumpOptions {
                        meter: meter.clone(),
                        cut: Some(cut_rx),
                        ..Default::default()
                    },
                )),
                cut: cut_tx,
            });
            Ok(())
        })
        .await;
    if let Err(e) = carried {
        let e = with_cause(link, e).await;
        link.abort(&chain(&e)).await;
        tokio::join!(frozen.resume(), break_pages(pump, None, lazy_port));
        return Err(MigrateError::RolledBack(Box::new(e)));
    }
    let committed = match cutover::commit(job, link, &mut frozen).await {
        Ok(c) => c,
        Err(fate) => return Err(fail(job, link, frozen, pump, lazy_port, fate).await),
    };
    let downtime_ms = ms(committed.running_at.duration_since(frozen.frozen_at));
    events.emit(Event::CutOver {
        destination_pid: committed.pid,
        downtime_ms,
    });
    // The destination runs; pages flow until the last one is fetched.
    let pages = events.phase("lazy pages", Some(job.subject.memory), &meter);
    let served = frozen.pages_served().await;
    let last_page_at = Instant::now();
    let pumped = match pump {
        Some(p) => p.task.await.ok().and_then(Result::ok),
        None => None,
    };
    if let Err(e) = served {
        // CRIU resumed the tree after a broken transfer; the SIGSTOP keeps
        // it stopped until the destination confirms its copy is gone.
        let dropped = matches!(
            link.next_within(deadlines::MESSAGE).await,
            Ok(Body::Refuse(r)) if r.refused_step() == Step::LazyPages
        );
        frozen.after_broken_pages(dropped).await;
        let e = MigrateError::PagesBroken(e);
        return Err(if dropped {
            MigrateError::RolledBack(Box::new(e))
        } else {
            cutover::in_doubt(job, link, &e)
        });
    }
    frozen.finished();
    pages.finish();
    // The destination confirms every page arrived (best effort: CRIU
    // already said so).
    let _ = link.next_within(deadlines::MESSAGE).await;
    let dependent_ms = ms(last_page_at.duration_since(committed.running_at));
    events.emit(Event::LastPage { dependent_ms });
    Ok(Outcome {
        page_bytes: pumped.map_or(0, |p| p.out),
        image_bytes,
        downtime_ms,
        restore_ms: Some(committed.restore_ms),
        dependent_ms: Some(dependent_ms),
        destination_pid: committed.pid,
        ..Default::default()
    })
}

/// A failed post-copy cut-over: the lazy server is made to fail in every
/// case, so CRIU lets go of the tree.
async fn fail(
    job: &Job<'_>,
    link: &mut Link,
    frozen: FrozenSource,
    pump: Option<Pump>,
    port: u16,
    fate: Fate,
) -> MigrateError {
    match fate {
        Fate::Before(e) => {
            let e = with_cause(link, e).await;
            link.abort(&chain(&e)).await;
            tokio::join!(frozen.resume(), break_pages(pump, None, port));
            MigrateError::RolledBack(Box::new(e))
        }
        Fate::Refused(e) => {
            tokio::join!(frozen.resume(), break_pages(pump, None, port));
            MigrateError::RolledBack(Box::new(e))
        }
        Fate::Doubt(e) => {
            // Breaking the page stream makes the destination's copy fail
            // too (its watchdog kills it), unless it has every page
            // already; the source stays stopped either way.
            tokio::join!(frozen.keep_stopped(), break_pages(pump, None, port));
            cutover::in_doubt(job, link, &e)
        }
    }
}
