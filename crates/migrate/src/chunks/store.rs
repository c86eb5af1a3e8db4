//! The destination's side of pre-copy: every chunk received in a
//! [`ChunkStore`], and the final round's files assembled from it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{chunk_len, Digest32, CHUNK};
use crate::manifest::{self, ManifestError};
use crate::protocol::{
    Body, ChunkBatch, FileIndex, Manifest, ManifestEntry, MessageReceiver, ProtocolError,
};
use crate::transfer::{self, TransferError};

/// Why received chunks were refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("a chunk does not match its sha256 (corrupted in transit or by the sender)")]
    Corrupt,
    #[error("a chunk batch is malformed ({0})")]
    Malformed(&'static str),
    #[error("the chunk store would grow past its limit of {0} bytes")]
    Full(u64),
    #[error("file {0} refers to a chunk that was never sent")]
    Missing(String),
    #[error("the chunk list of {path} is out of order or too long (chunk {first})")]
    BadIndex { path: String, first: u64 },
    #[error("cannot use the chunk store {0}")]
    Store(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read or write a file of the round")]
    Local(#[source] std::io::Error),
}

impl From<ProtocolError> for ChunkError {
    fn from(e: ProtocolError) -> Self {
        Self::Transfer(e.into())
    }
}

/// The destination's side: every chunk received in this session, in one
/// append-only pack file.
#[derive(Debug)]
pub struct ChunkStore {
    path: PathBuf,
    pack: File,
    len: u64,
    limit: u64,
    index: HashMap<Digest32, (u64, u32)>,
}

impl ChunkStore {
    /// A new store at `path`, refusing to grow past `limit` bytes.
    pub fn create(path: &Path, limit: u64) -> Result<Self, ChunkError> {
        // 0600: the pack holds the workload's memory.
        let pack = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| ChunkError::Store(path.to_path_buf(), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            pack,
            len: 0,
            limit,
            index: HashMap::new(),
        })
    }

    /// Bytes stored.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks and stores one batch; returns the bytes of new chunks.
    pub fn add(&mut self, batch: &ChunkBatch) -> Result<u64, ChunkError> {
        if batch.digests.len() != batch.lengths.len() * 32 {
            return Err(ChunkError::Malformed("digests and lengths disagree"));
        }
        let total: u64 = batch.lengths.iter().map(|&l| u64::from(l)).sum();
        if total != batch.data.len() as u64 {
            return Err(ChunkError::Malformed("lengths and data disagree"));
        }
        let mut offset = 0usize;
        let mut added = 0u64;
        for (i, &len) in batch.lengths.iter().enumerate() {
            let len = len as usize;
            if len == 0 || len > CHUNK {
                return Err(ChunkError::Malformed("a chunk length is out of range"));
            }
            let data = &batch.data[offset..offset + len];
            offset += len;
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&batch.digests[i * 32..i * 32 + 32]);
            if Sha256::digest(data).as_slice() != digest {
                return Err(ChunkError::Corrupt);
            }
            if self.index.contains_key(&digest) {
                continue;
            }
            if self.len + len as u64 > self.limit {
                return Err(ChunkError::Full(self.limit));
            }
            self.pack
                .write_all_at(data, self.len)
                .map_err(|e| ChunkError::Store(self.path.clone(), e))?;
            self.index.insert(digest, (self.len, len as u32));
            self.len += len as u64;
            added += len as u64;
        }
        Ok(added)
    }

    /// Removes the pack (its chunks live on in the assembled files).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Where a chunk is in the pack: (offset, length).
    fn locate(&self, digest: &Digest32) -> Option<(u64, u32)> {
        self.index.get(digest).copied()
    }
}

/// One file being assembled.
#[derive(Debug)]
struct Assembling {
    entry: ManifestEntry,
    /// Chunks placed so far (they arrive in order).
    next: u64,
    file: File,
    /// Over the chunk digests, in order (see [`digest_of_chunks`]).
    digests: Sha256,
}

/// Assembles the files of the final round from the store.
#[derive(Debug)]
struct Assembly {
    dir: PathBuf,
    files: HashMap<String, Assembling>,
}

impl Assembly {
    fn new(dir: &Path, manifest: &Manifest) -> Result<Self, ChunkError> {
        manifest::validate(manifest)?;
        std::fs::create_dir_all(dir).map_err(ChunkError::Local)?;
        let mut files = HashMap::new();
        for e in &manifest.entries {
            let path = dir.join(manifest::check_path(&e.path)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(ChunkError::Local)?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&path)
                .map_err(ChunkError::Local)?;
            files.insert(
                e.path.clone(),
                Assembling {
                    entry: e.clone(),
                    next: 0,
                    file,
                    digests: Sha256::new(),
                },
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Places the chunks `index` lists, copying runs that lie one after
    /// the other in the pack in one kernel-side copy.
    fn place(&mut self, store: &ChunkStore, index: &FileIndex) -> Result<(), ChunkError> {
        let bad = || ChunkError::BadIndex {
            path: index.path.clone(),
            first: index.first,
        };
        let f = self
            .files
            .get_mut(&index.path)
            .ok_or_else(|| ManifestError::NotListed(index.path.clone()))?;
        if index.first != f.next || index.digests.len() % 32 != 0 {
            return Err(bad());
        }
        let count = index.digests.len() as u64 / 32;
        if index.first + count > f.entry.size.div_ceil(CHUNK as u64) {
            return Err(bad());
        }
        // The run being gathered: (pack offset, file offset, length).
        let mut run: Option<(u64, u64, u64)> = None;
        for (k, d) in index.digests.chunks_exact(32).enumerate() {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(d);
            f.digests.update(digest);
            let i = index.first + k as u64;
            let (at, len) = store
                .locate(&digest)
                .ok_or_else(|| ChunkError::Missing(index.path.clone()))?;
            if len as usize != chunk_len(f.entry.size, i as usize) {
                return Err(bad());
            }
            let to = i * CHUNK as u64;
            run = match run {
                Some((src, dst, n)) if src + n == at && dst + n == to => {
                    Some((src, dst, n + u64::from(len)))
                }
                Some(done) => {
                    copy_run(&store.pack, &f.file, done)?;
                    Some((at, to, u64::from(len)))
                }
                None => Some((at, to, u64::from(len))),
            };
        }
        if let Some(done) = run {
            copy_run(&store.pack, &f.file, done)?;
        }
        f.next += count;
        Ok(())
    }

    /// Checks every file's chunk count and digest (its data was checked
    /// chunk by chunk on arrival).
    fn finish(self) -> Result<PathBuf, ChunkError> {
        for f in self.files.into_values() {
            f.file.set_len(f.entry.size).map_err(ChunkError::Local)?;
            if f.next != f.entry.size.div_ceil(CHUNK as u64) {
                return Err(ManifestError::SizeMismatch {
                    path: f.entry.path.clone(),
                    got: (f.next * CHUNK as u64).min(f.entry.size),
                    want: f.entry.size,
                }
                .into());
            }
            let digest: Digest32 = f.digests.finalize().into();
            if digest.as_slice() != f.entry.sha256.as_slice() {
                return Err(ManifestError::DigestMismatch(f.entry.path.clone()).into());
            }
        }
        Ok(self.dir)
    }
}

/// Copies `(pack offset, file offset, length)` from the pack into `file`
/// inside the kernel.
fn copy_run(pack: &File, file: &File, (src, dst, len): (u64, u64, u64)) -> Result<(), ChunkError> {
    let (mut src, mut dst, mut left) = (src as i64, dst as i64, len);
    while left > 0 {
        let n = nix::fcntl::copy_file_range(
            pack,
            Some(&mut src),
            file,
            Some(&mut dst),
            left.min(1 << 30) as usize,
        )
        .map_err(|e| ChunkError::Local(e.into()))?;
        if n == 0 {
            return Err(ChunkError::Local(std::io::Error::other(
                "the chunk store ended early",
            )));
        }
        left -= n as u64;
    }
    Ok(())
}

/// Receives one round sent by [`super::ChunkSender::send`]. With `last`,
/// the files (at most `max_files`) are assembled into `dir` and checked;
/// returns the bytes of new chunks.
pub async fn recv_round(
    rx: &mut MessageReceiver,
    store: &mut ChunkStore,
    last: Option<&Path>,
    max_files: usize,
) -> Result<u64, ChunkError> {
    let mut assembly = match last {
        Some(dir) => match rx.recv().await? {
            Body::Manifest(first) => {
                let m = transfer::recv_manifest(rx, first, max_files).await?;
                Some(Assembly::new(dir, &m)?)
            }
            other => return Err(transfer::unexpected("Manifest", other).into()),
        },
        None => None,
    };
    let mut added = 0u64;
    loop {
        match rx.recv().await? {
            Body::ChunkBatch(batch) => added += store.add(&batch)?,
            Body::FileIndex(index) => match assembly.as_mut() {
                Some(a) => a.place(store, &index)?,
                None => {
                    return Err(transfer::unexpected("ChunkBatch", Body::FileIndex(index)).into())
                }
            },
            Body::Ack(_) => break,
            other => return Err(transfer::unexpected("ChunkBatch", other).into()),
        }
    }
    if let Some(a) = assembly {
        tokio::task::spawn_blocking(move || a.finish())
            .await
            .map_err(|e| ChunkError::Local(std::io::Error::other(e)))??;
    }
    Ok(added)
}
