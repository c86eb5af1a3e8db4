//! Moving files and byte streams over the secure channel.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::channel::{ChannelError, SecureChannel, SecureReceiver, SecureSender};
use crate::manifest::{self, ManifestError, Receiver};
use crate::protocol::{Body, Envelope, ProtocolError, MAX_CHUNK};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the peer aborted: {0}")]
    Aborted(String),
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the local end of a stream failed")]
    Local(#[source] std::io::Error),
}

/// Sends every regular file under `dir` (skipping names `skip` rejects):
/// the manifest first, then the chunks. Returns the bytes of content sent.
pub async fn send_dir<W: AsyncWrite + Unpin>(
    tx: &mut SecureSender<W>,
    dir: &Path,
    skip: impl Fn(&str) -> bool,
) -> Result<u64, TransferError> {
    let dir_owned = dir.to_path_buf();
    let mut manifest = tokio::task::spawn_blocking(move || manifest::build(&dir_owned))
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))??;
    manifest.entries.retain(|e| !skip(&e.path));
    tx.send(&Envelope::new(Body::Manifest(manifest.clone())))
        .await?;
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
            tx.send(&Envelope::new(Body::FileChunk(
                crate::protocol::FileChunk {
                    path: entry.path.clone(),
                    offset,
                    data: buf[..n].to_vec(),
                },
            )))
            .await?;
            offset += n as u64;
            sent += n as u64;
        }
    }
    tx.send(&Envelope::new(Body::Ack(crate::protocol::Ack {
        step: "files sent".into(),
    })))
    .await?;
    Ok(sent)
}

/// Receives what [`send_dir`] sends into `dir`, checking every chunk
/// against the manifest and every digest at the end.
pub async fn recv_dir<R: AsyncRead + Unpin>(
    rx: &mut SecureReceiver<R>,
    dir: &Path,
) -> Result<PathBuf, TransferError> {
    let manifest = match rx.recv().await? {
        Body::Manifest(m) => m,
        Body::Abort(a) => return Err(TransferError::Aborted(a.cause)),
        other => {
            return Err(ProtocolError::Unexpected {
                expected: "Manifest",
                got: other.name(),
            }
            .into())
        }
    };
    let mut receiver = Receiver::new(dir, &manifest)?;
    loop {
        match rx.recv().await? {
            Body::FileChunk(chunk) => receiver.write(&chunk)?,
            Body::Ack(_) => break,
            Body::Abort(a) => return Err(TransferError::Aborted(a.cause)),
            other => {
                return Err(ProtocolError::Unexpected {
                    expected: "FileChunk",
                    got: other.name(),
                }
                .into())
            }
        }
    }
    Ok(tokio::task::spawn_blocking(move || receiver.finish())
        .await
        .map_err(|e| TransferError::Local(std::io::Error::other(e)))??)
}

/// Bytes carried each way by [`pump`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pumped {
    /// From the local socket into the channel.
    pub out: u64,
    /// From the channel to the local socket.
    pub back: u64,
}

/// Carries a local TCP connection (CRIU's page-server traffic) over the
/// channel, both ways, until both sides have finished.
pub async fn pump<S>(local: TcpStream, channel: SecureChannel<S>) -> Result<Pumped, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // CRIU's page-server protocol is many small writes: never let Nagle's
    // algorithm hold them back.
    let _ = local.set_nodelay(true);
    let (mut local_rx, mut local_tx) = local.into_split();
    let (mut tx, mut rx) = channel.split();
    let outgoing = async move {
        let mut buf = vec![0u8; crate::channel::MAX_PLAINTEXT];
        let mut total = 0u64;
        loop {
            let n = local_rx
                .read(&mut buf)
                .await
                .map_err(TransferError::Local)?;
            if n == 0 {
                tx.shutdown().await?;
                return Ok::<u64, TransferError>(total);
            }
            tx.send_bytes(&buf[..n]).await?;
            total += n as u64;
        }
    };
    let incoming = async move {
        let mut total = 0u64;
        loop {
            match rx.recv_bytes().await {
                Ok(bytes) => {
                    local_tx
                        .write_all(&bytes)
                        .await
                        .map_err(TransferError::Local)?;
                    total += bytes.len() as u64;
                }
                Err(ChannelError::Closed) => {
                    let _ = local_tx.shutdown().await;
                    return Ok::<u64, TransferError>(total);
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let (out, back) = tokio::try_join!(outgoing, incoming)?;
    Ok(Pumped { out, back })
}
