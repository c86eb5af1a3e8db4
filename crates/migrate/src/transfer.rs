//! Moving files and byte streams over the secure channel: a directory as
//! a manifest (in parts) and file chunks, checked on arrival; CRIU's page
//! traffic carried both ways between a local socket and a data channel.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::channel::{ChannelError, SecureChannel};
use crate::manifest::{self, ManifestError, Receiver};
use crate::meter::Meter;
use crate::protocol::{
    Body, FileChunk, Manifest, ManifestEntry, MessageReceiver, MessageSender, ProtocolError, Step,
    MANIFEST_PART, MAX_CHUNK,
};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the peer gave up: {0}")]
    Aborted(String),
    #[error("the local end of a stream failed")]
    Local(#[source] std::io::Error),
}

impl From<ChannelError> for TransferError {
    fn from(e: ChannelError) -> Self {
        Self::Protocol(e.into())
    }
}

/// The error for `got` where `expected` was due (an Abort says why).
pub fn unexpected(expected: &'static str, got: Body) -> TransferError {
    match got {
        Body::Abort(a) => TransferError::Aborted(a.cause),
        other => ProtocolError::Unexpected {
            expected,
            got: other.name(),
        }
        .into(),
    }
}

/// Sends a manifest's entries in parts of [`MANIFEST_PART`].
pub async fn send_manifest(
    tx: &mut MessageSender,
    entries: &[ManifestEntry],
) -> Result<(), ProtocolError> {
    let mut parts = entries.chunks(MANIFEST_PART).peekable();
    if parts.peek().is_none() {
        return tx
            .send(Body::Manifest(Manifest {
                entries: Vec::new(),
                more: false,
            }))
            .await;
    }
    while let Some(part) = parts.next() {
        tx.send(Body::Manifest(Manifest {
            entries: part.to_vec(),
            more: parts.peek().is_some(),
        }))
        .await?;
    }
    Ok(())
}

/// Receives the rest of a manifest whose first part is `first`, refusing
/// more than `max_files` entries as soon as they arrive.
pub async fn recv_manifest(
    rx: &mut MessageReceiver,
    first: Manifest,
    max_files: usize,
) -> Result<Manifest, TransferError> {
    let mut manifest = first;
    let limit = max_files.min(manifest::MAX_FILES);
    while manifest.more {
        if manifest.entries.len() > limit {
            break;
        }
        match rx.recv().await? {
            Body::Manifest(part) => {
                manifest.entries.extend(part.entries);
                manifest.more = part.more;
            }
            other => return Err(unexpected("Manifest", other)),
        }
    }
    manifest.more = false;
    manifest::validate_within(&manifest, limit)?;
    Ok(manifest)
}

/// Sends every regular file under `dir` (skipping names `skip` rejects):
/// the manifest first, then the chunks, then an Ack of [`Step::Files`].
/// Returns the bytes of content sent; `meter` counts them as they go.
pub async fn send_dir(
    tx: &mut MessageSender,
    dir: &Path,
    skip: impl Fn(&str) -> bool,
    meter: &Meter,
) -> Result<u64, TransferError> {
    let dir_owned = dir.to_path_buf();
    let mut manifest = tokio::task::spawn_blocking(move || manifest::build(&dir_owned))
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))??;
    manifest.entries.retain(|e| !skip(&e.path));
    send_manifest(tx, &manifest.entries).await?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; MAX_CHUNK];
    for entry in &manifest.entries {
        let path = dir.join(manifest::check_path(&entry.path)?);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(TransferError::Local)?;
        let mut offset = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(TransferError::Local)?;
            if n == 0 {
                break;
            }
            tx.send(Body::FileChunk(FileChunk {
                path: entry.path.clone(),
                offset,
                data: buf[..n].to_vec(),
            }))
            .await?;
            offset += n as u64;
            sent += n as u64;
            meter.add(n as u64);
        }
    }
    tx.send(crate::protocol::Ack::of(Step::Files)).await?;
    Ok(sent)
}

/// Receives what [`send_dir`] sends into `dir`, refusing more than
/// `max_files` files, checking every chunk against the manifest and every
/// digest at the end.
pub async fn recv_dir(
    rx: &mut MessageReceiver,
    dir: &Path,
    max_files: usize,
) -> Result<PathBuf, TransferError> {
    let first = match rx.recv().await? {
        Body::Manifest(m) => m,
        other => return Err(unexpected("Manifest", other)),
    };
    recv_dir_from(rx, first, dir, max_files).await
}

/// [`recv_dir`] after its first manifest part arrived.
pub async fn recv_dir_from(
    rx: &mut MessageReceiver,
    first: Manifest,
    dir: &Path,
    max_files: usize,
) -> Result<PathBuf, TransferError> {
    let manifest = recv_manifest(rx, first, max_files).await?;
    let mut receiver = Receiver::new(dir, &manifest)?;
    loop {
        match rx.recv().await? {
            Body::FileChunk(chunk) => receiver.write(&chunk)?,
            Body::Ack(_) => break,
            other => return Err(unexpected("FileChunk", other)),
        }
    }
    Ok(tokio::task::spawn_blocking(move || receiver.finish())
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))??)
}

/// Prepares a connection between the hosts: no Nagle delay, and a dead
/// peer or link is noticed within about half a minute (keepalive probes and
/// a user timeout for unacknowledged data), instead of TCP's many minutes.
pub fn tune(socket: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = socket.set_nodelay(true);
    let _ = setsockopt(socket, sockopt::KeepAlive, &true);
    let _ = setsockopt(socket, sockopt::TcpKeepIdle, &5);
    let _ = setsockopt(socket, sockopt::TcpKeepInterval, &2);
    let _ = setsockopt(socket, sockopt::TcpKeepCount, &3);
    let _ = setsockopt(socket, sockopt::TcpUserTimeout, &30_000);
}

/// How long connecting to the other host may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the other host within [`CONNECT_TIMEOUT`], tuned.
pub async fn connect(to: &str) -> std::io::Result<TcpStream> {
    let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )
        })??;
    tune(&socket);
    Ok(socket)
}

/// Bytes carried each way by [`pump`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    /// From the local socket into the channel.
    pub out: u64,
    /// From the channel to the local socket.
    pub back: u64,
}

/// The local end of a carried stream: CRIU's side, on loopback TCP or a
/// UNIX socket pair.
pub trait LocalStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Tunes the stream before it carries anything.
    fn prepare(&self) {}
    /// Makes the next close a reset where the transport has one.
    fn reset_on_close(&self) {}
}

impl LocalStream for TcpStream {
    fn prepare(&self) {
        // CRIU's page-server protocol is many small writes: never let
        // Nagle's algorithm hold them back.
        let _ = self.set_nodelay(true);
    }

    fn reset_on_close(&self) {
        // Dropped with a zero linger: CRIU reads a reset, not an end.
        let _ = self.set_zero_linger();
    }
}

impl LocalStream for tokio::net::UnixStream {}

/// Carries a local connection (CRIU's page-server traffic) over the
/// channel, both ways, until both sides have finished.
///
/// Each direction ends in order only with the sender's end marker
/// ([`SecureSender::send_end`]). A channel that breaks instead (closed
/// without the marker, reset, an altered frame) resets a local TCP
/// connection: CRIU's lazy page server takes a plain end of stream for "all
/// pages served" and would let the source die, while a reset makes it fail
/// and resume the source.
pub async fn pump(local: TcpStream, channel: SecureChannel) -> Result<Pumped, TransferError> {
    pump_with(local, channel, PumpOptions::default()).await
}

/// How [`pump_with`] runs.
#[derive(Debug, Default)]
pub struct PumpOptions {
    /// Counts the bytes carried from the local end into the channel.
    pub meter: Meter,
    /// When it fires, ends the outgoing direction as an end of stream
    /// would: for a socket pair whose other end this process also holds
    /// (CRIU inherited it), the end of stream never comes.
    pub local_done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// When it fires, breaks the stream on purpose: the local end is
    /// reset, as if the channel had broken.
    pub cut: Option<tokio::sync::oneshot::Receiver<()>>,
    /// The longest the channel may stay silent.
    pub idle: Option<std::time::Duration>,
    /// When the local end closes, the stream ends in order only if this
    /// says `true` (the local program finished well); `false`, or no
    /// answer, breaks the stream instead. A lazy-pages daemon that fails
    /// also closes its connection in order, which the source's CRIU would
    /// take for "every page served".
    pub eof_gate: Option<tokio::sync::oneshot::Receiver<bool>>,
}

/// [`pump`] for any local stream, as `opts` say.
pub async fn pump_with<L: LocalStream>(
    mut local: L,
    channel: SecureChannel,
    opts: PumpOptions,
) -> Result<Pumped, TransferError> {
    local.prepare();
    let PumpOptions {
        meter,
        mut local_done,
        cut,
        idle,
        eof_gate,
    } = opts;
    let (mut tx, mut rx) = channel.split();
    rx.set_deadline(idle);
    let carried = {
        let (mut local_rx, mut local_tx) = tokio::io::split(&mut local);
        let outgoing = async {
            let mut buf = vec![0u8; crate::channel::MAX_PLAINTEXT];
            let mut total = 0u64;
            loop {
                let n = match local_done.as_mut() {
                    Some(done) => tokio::select! {
                        read = local_rx.read(&mut buf) => read.map_err(TransferError::Local)?,
                        _ = done => 0,
                    },
                    None => local_rx
                        .read(&mut buf)
                        .await
                        .map_err(TransferError::Local)?,
                };
                if n == 0 {
                    if let Some(gate) = eof_gate {
                        if !matches!(gate.await, Ok(true)) {
                            return Err(TransferError::Aborted(
                                "the local end closed after a failure".into(),
                            ));
                        }
                    }
                    tx.send_end().await?;
                    tx.shutdown().await?;
                    return Ok::<u64, TransferError>(total);
                }
                tx.send_bytes(&buf[..n]).await?;
                total += n as u64;
                meter.add(n as u64);
            }
        };
        let incoming = async {
            let mut total = 0u64;
            loop {
                let bytes = rx.recv_frame().await?;
                if bytes.is_empty() {
                    let _ = local_tx.shutdown().await;
                    return Ok::<u64, TransferError>(total);
                }
                local_tx
                    .write_all(&bytes)
                    .await
                    .map_err(TransferError::Local)?;
                total += bytes.len() as u64;
            }
        };
        let both = async { tokio::try_join!(outgoing, incoming) };
        match cut {
            Some(cut) => tokio::select! {
                r = both => r,
                Ok(()) = cut => Err(TransferError::Aborted("the stream was cut on purpose".into())),
            },
            None => both.await,
        }
    };
    match carried {
        Ok((out, back)) => Ok(Pumped { out, back }),
        Err(e) => {
            local.reset_on_close();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    /// A connected loopback pair: (CRIU's end, the pump's end).
    async fn local_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let criu = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (local, _) = listener.accept().await.unwrap();
        (criu, local)
    }

    /// A pump between a local connection and a channel; returns CRIU's end
    /// of the local connection, the far end of the channel and the pump.
    async fn pumping() -> (
        TcpStream,
        SecureChannel,
        tokio::task::JoinHandle<Result<Pumped, TransferError>>,
    ) {
        let key = Key::from_hex(&"07".repeat(32)).unwrap();
        let (criu, local) = local_pair().await;
        let (far, near) = crate::channel::duplex_pair(&key, 1 << 16).await.unwrap();
        let pump = tokio::spawn(pump(local, near));
        (criu, far, pump)
    }

    #[tokio::test]
    async fn an_orderly_end_reaches_criu_as_end_of_stream() {
        let (mut criu, far, pump) = pumping().await;
        let (mut tx, mut rx) = far.split();
        tx.send_bytes(b"pages").await.unwrap();
        tx.send_end().await.unwrap();
        tx.shutdown().await.unwrap();
        let mut got = Vec::new();
        criu.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pages");
        criu.write_all(b"answer").await.unwrap();
        drop(criu);
        assert_eq!(rx.recv_frame().await.unwrap(), b"answer");
        assert!(rx.recv_frame().await.unwrap().is_empty(), "end marker");
        let pumped = pump.await.unwrap().unwrap();
        assert_eq!(pumped, Pumped { out: 6, back: 5 });
    }

    #[tokio::test]
    async fn a_broken_channel_reaches_criu_as_a_reset() {
        let (mut criu, far, pump) = pumping().await;
        let (mut tx, rx) = far.split();
        tx.send_bytes(b"pages").await.unwrap();
        // The peer dies: end of stream without the end marker.
        drop((tx, rx));
        assert!(pump.await.unwrap().is_err());
        let mut got = Vec::new();
        let read = criu.read_to_end(&mut got).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "read {got:?}"
        );
    }
}
