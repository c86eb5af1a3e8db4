//! The agent's `Receiving` state, by strategy, and post-copy's `Paging`.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::session::{unexpected, Session, SessionError};
use crate::bundle;
use crate::chunks::{self, ChunkStore};
use crate::deadlines;
use crate::port::{PortError, RestoreTarget};
use crate::protocol::{Ack, Body, PagesReady, Step, StreamPurpose, WireStrategy};
use crate::transfer::{self, PumpOptions, Pumped, TransferError};

/// Post-copy: the running `criu lazy-pages` and the pump carrying its page
/// requests.
pub(super) struct Lazy {
    done: tokio::sync::oneshot::Receiver<Result<(), PortError>>,
    pump: tokio::task::JoinHandle<Result<Pumped, TransferError>>,
    /// Fired once the migration committed; dropped, the daemon's end of
    /// stream can never go to the source in order.
    committed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Lazy {
    fn drop(&mut self) {
        // A pump dropped on a failure must not end in order: the source's
        // CRIU would read that as "every page served". Aborting drops the
        // channel without its end marker, which the source reads as a
        // broken stream.
        self.pump.abort();
    }
}

/// The next data connection of the session, of `purpose`.
async fn data_stream(
    s: &mut Session<'_>,
    purpose: StreamPurpose,
) -> Result<crate::channel::SecureChannel, SessionError> {
    let streams = s.streams.as_mut().ok_or(SessionError::NoStream(purpose))?;
    // The control connection is watched meanwhile: a source that gave up
    // or vanished ends the wait at once.
    tokio::select! {
        stream = tokio::time::timeout(deadlines::DATA_STREAM, streams.recv()) => match stream {
            Ok(Some((p, channel))) if p == purpose => Ok(channel),
            _ => Err(SessionError::NoStream(purpose)),
        },
        message = s.rx.recv_within(deadlines::DATA_STREAM) => match message {
            Ok(other) => Err(unexpected("a data connection", other)),
            Err(e) => Err(e.into()),
        },
    }
}

fn max_files(s: &Session<'_>) -> usize {
    usize::try_from(s.agent.opts.limits.max_files).unwrap_or(usize::MAX)
}

/// Receives the images as the strategy moves them; returns post-copy's
/// lazy-pages daemon.
pub(super) async fn run(s: &mut Session<'_>) -> Result<Option<Lazy>, SessionError> {
    let images_dir = s.dir.join("images");
    super::session::make_private_dir(&images_dir).map_err(TransferError::Local)?;
    match s.prepared().strategy {
        WireStrategy::StopCopy => stop_copy(s, &images_dir).await?,
        WireStrategy::PreCopy => pre_copy(s, &images_dir).await?,
        WireStrategy::PostCopy | WireStrategy::Unspecified => {
            let max = max_files(s);
            transfer::recv_dir(&mut s.rx, &images_dir, max).await?;
            s.tx.send(Ack::of(Step::Images)).await?;
        }
    }
    tracing::info!("images received and verified");
    unpack_rootfs(s, &images_dir).await?;
    if s.prepared().strategy == WireStrategy::PostCopy {
        return Ok(Some(lazy_daemon(s, &images_dir).await?));
    }
    Ok(None)
}

/// Stop-copy: CRIU's page server on loopback; the source's page stream
/// arrives on a data connection and is carried to it. A broken or silent
/// stream is refused at once (the source's dump then fails and its user
/// learns why); then the images follow on the control connection.
async fn stop_copy(s: &mut Session<'_>, images_dir: &std::path::Path) -> Result<(), SessionError> {
    let port = std::sync::Arc::clone(&s.agent.port);
    let dir = images_dir.to_path_buf();
    let daemon = tokio::task::spawn_blocking(move || port.page_server(&dir))
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))??;
    s.tx.send(Body::PagesReady(PagesReady {})).await?;
    let data = data_stream(s, StreamPurpose::Pages).await?;
    let local = TcpStream::connect(("127.0.0.1", daemon.port))
        .await
        .map_err(TransferError::Local)?;
    let pumped = transfer::pump_with(
        local,
        data,
        PumpOptions {
            idle: Some(deadlines::STREAM_IDLE),
            ..Default::default()
        },
    )
    .await;
    let mut done = daemon.done;
    let pumped = match pumped {
        Ok(p) => p,
        Err(e) => {
            // The page server failing (a full disk) breaks the stream
            // first: its own error is the cause.
            let server = tokio::time::timeout(Duration::from_secs(5), &mut done).await;
            // A stream broken on the network side (altered, cut) is its
            // own cause; one broken on the page server's side is the
            // page server's.
            let local = matches!(e, TransferError::Local(_));
            let mut cause = match server {
                Ok(Ok(Err(server))) if local => crate::source::chain(&server),
                _ => crate::source::chain(&e),
            };
            let work = &s.agent.opts.work_dir;
            if let Some(free) = super::session::free_space(work).filter(|&f| f < 16 << 20) {
                cause.push_str(&format!(
                    "; the file system of {} is full ({free} bytes free): free space there or give the agent another --work-dir",
                    work.display()
                ));
            }
            return Err(SessionError::Refused {
                step: Step::Pages,
                reason: format!("the page stream broke on the destination: {cause}"),
                known: None,
            });
        }
    };
    tracing::info!(bytes = pumped.out + pumped.back, "page stream done");
    match done.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(PortError::new(crate::port::Op::PageServerRun, "its thread died").into())
        }
    }
    let max = max_files(s);
    transfer::recv_dir(&mut s.rx, images_dir, max).await?;
    Ok(())
}

/// Pre-copy: rounds of chunks into the store, then the final round's files
/// assembled and checked.
async fn pre_copy(s: &mut Session<'_>, images_dir: &std::path::Path) -> Result<(), SessionError> {
    let limit = s.prepared().bytes_estimate.saturating_mul(4).max(1 << 30);
    let mut store = ChunkStore::create(&s.dir.join("chunks.pack"), limit)?;
    let max = max_files(s);
    loop {
        // The source dumps and hashes a round between two RoundStarts.
        let start = match s.rx.recv_within(deadlines::ROUND).await? {
            Body::RoundStart(r) => r,
            other => return Err(unexpected("RoundStart", other)),
        };
        if start.last {
            chunks::recv_round(&mut s.rx, &mut store, Some(images_dir), max).await?;
            tracing::info!(
                round = start.round,
                stored = store.len(),
                "final round received and verified"
            );
            break;
        }
        let added = chunks::recv_round(&mut s.rx, &mut store, None, max).await?;
        tracing::info!(round = start.round, added, "pre-copy round received");
        s.tx.send(Ack::of(Step::Round)).await?;
    }
    // The files are whole: the chunks' memory goes back before the restore
    // needs it.
    store.discard();
    Ok(())
}

/// Containers: the received rootfs archive is unpacked into the bundle.
async fn unpack_rootfs(
    s: &mut Session<'_>,
    images_dir: &std::path::Path,
) -> Result<(), SessionError> {
    let RestoreTarget::Container { bundle_dir, .. } = s.prepared().target.clone() else {
        return Ok(());
    };
    if s.prepared().shared_rootfs {
        return Ok(());
    }
    let tar = images_dir.join(bundle::ROOTFS_TAR);
    let rootfs = bundle_dir.join("rootfs");
    tokio::task::spawn_blocking(move || bundle::unpack_rootfs(&tar, &rootfs))
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))?
        .map_err(|e| SessionError::Refused {
            step: Step::Images,
            reason: format!("cannot unpack the rootfs: {}", crate::source::chain(&e)),
            known: None,
        })
}

/// Waits for the source's lazy stream, then starts `criu lazy-pages` on a
/// loopback port that is carried to the source's lazy page server.
async fn lazy_daemon(
    s: &mut Session<'_>,
    images_dir: &std::path::Path,
) -> Result<Lazy, SessionError> {
    let data = data_stream(s, StreamPurpose::Lazy).await?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(TransferError::Local)?;
    let port = listener.local_addr().map_err(TransferError::Local)?.port();
    // The daemon's end of stream goes to the source in order only if the
    // daemon succeeded and the migration committed (see
    // `PumpOptions::eof_gate`): the daemon may fetch every page while the
    // restored copy is still held, and the source's CRIU would kill the
    // source on that end — before the commit, or after a failed health
    // check, nothing would run anywhere.
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel();
    let (committed_tx, committed_rx) = tokio::sync::oneshot::channel::<()>();
    let pump = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.map_err(TransferError::Local)?;
        transfer::pump_with(
            conn,
            data,
            PumpOptions {
                eof_gate: Some(gate_rx),
                ..Default::default()
            },
        )
        .await
    });
    let ports = std::sync::Arc::clone(&s.agent.port);
    let dir = images_dir.to_path_buf();
    let daemon = tokio::task::spawn_blocking(move || ports.lazy_pages(&dir, port))
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)));
    match daemon {
        Ok(Ok(daemon)) => {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let result = daemon.done.await.unwrap_or_else(|_| {
                    Err(PortError::new(
                        crate::port::Op::LazyPagesRun,
                        "its thread died",
                    ))
                });
                let ok = result.is_ok();
                let _ = done_tx.send(result);
                let committed = committed_rx.await.is_ok();
                let _ = gate_tx.send(ok && committed);
            });
            Ok(Lazy {
                done: done_rx,
                pump,
                committed: Some(committed_tx),
            })
        }
        Ok(Err(e)) => {
            pump.abort();
            Err(e.into())
        }
        Err(e) => {
            pump.abort();
            Err(e.into())
        }
    }
}

/// Post-copy after the commit: until the last page arrives the workload
/// needs the source. A broken transfer kills the copy (the source's CRIU
/// resumes the source's tree, which stays stopped until the source hears
/// this refusal); success releases the watchdog.
pub(super) async fn pages(
    s: &mut Session<'_>,
    mut lazy: Lazy,
    pid: u32,
) -> Result<(), SessionError> {
    // Committed (and healthy): the daemon's end may reach the source.
    if let Some(committed) = lazy.committed.take() {
        let _ = committed.send(());
    }
    let daemon = (&mut lazy.done).await.unwrap_or_else(|_| {
        Err(PortError::new(
            crate::port::Op::LazyPagesRun,
            "its thread died",
        ))
    });
    let pumped = tokio::time::timeout(Duration::from_secs(10), &mut lazy.pump).await;
    if let Err(e) = daemon {
        tracing::error!(pid, error = %crate::source::chain(&e), "page transfer broke; killing the destination copy");
        return Err(SessionError::Refused {
            step: Step::LazyPages,
            reason: format!(
                "the post-copy page transfer failed ({}); the destination's copy is killed",
                crate::source::chain(&e)
            ),
            known: None,
        });
    }
    if !matches!(pumped, Ok(Ok(Ok(_)))) {
        tracing::warn!(
            pid,
            "the lazy page stream did not end in order after the last page"
        );
    }
    tracing::info!(pid, "all pages arrived");
    s.release_watchdog();
    s.tx.send(Ack::of(Step::LazyPages)).await?;
    Ok(())
}
