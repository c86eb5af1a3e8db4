//! Content-hashed transfer for pre-copy without memory tracking.
//!
//! Where the kernel has no soft-dirty bits (this project's CI machines),
//! CRIU cannot tell which pages changed since a pre-dump. Pre-copy then
//! takes rounds of full leave-running dumps and sends them as 4 KiB chunks
//! named by their sha256: the source remembers every digest it has sent,
//! the destination keeps every chunk it has received in a [`ChunkStore`],
//! so each round, and the final dump, carries only chunks the destination
//! lacks. Page images keep pages 4 KiB-aligned, so a dirtied page is one
//! new chunk and pages moved to another offset (a growing mapping before
//! them) are found again by digest.
//!
//! The final round also sends each file's chunk list ([`FileIndex`]); the
//! destination assembles the files from its store and checks their sha256
//! against the [`Manifest`] before anything is restored. Every chunk is
//! checked against its digest on arrival.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::channel::{SecureReceiver, SecureSender};
use crate::manifest::{self, ManifestError};
use crate::protocol::{
    Ack, Body, ChunkBatch, Envelope, FileIndex, Manifest, ManifestEntry, ProtocolError,
};
use crate::transfer::{Meter, TransferError};

/// The chunk size: one page.
pub const CHUNK: usize = 4096;
/// Chunks per [`ChunkBatch`] (a batch stays well inside one message).
const BATCH: usize = 14;
/// Digests per [`FileIndex`] piece.
const INDEX_PIECE: usize = 1500;

/// A sha256 digest.
pub type Digest32 = [u8; 32];

/// One file cut into chunks.
#[derive(Debug, Clone)]
pub struct HashedFile {
    /// Relative to the hashed directory.
    pub path: String,
    pub size: u64,
    pub sha256: Digest32,
    pub chunks: Vec<Digest32>,
}

/// Hashes every regular file under `dir` (recursively), on two threads.
/// Blocking.
pub fn hash_dir(dir: &Path) -> Result<Vec<HashedFile>, ManifestError> {
    let listing = manifest::list(dir)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let mut results: Vec<Result<Vec<HashedFile>, ManifestError>> = Vec::new();
    // Largest first, dealt round-robin, so the threads get similar work.
    let mut by_size: Vec<(String, u64)> = listing;
    by_size.sort_by_key(|f| std::cmp::Reverse(f.1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mine: Vec<&(String, u64)> = by_size.iter().skip(w).step_by(workers).collect();
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|(path, _)| hash_file(dir, path))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for h in handles {
            results.push(h.join().unwrap_or_else(|_| {
                Err(ManifestError::Io {
                    what: "hash",
                    path: dir.to_path_buf(),
                    source: std::io::Error::other("a hashing thread panicked"),
                })
            }));
        }
    });
    let mut files = Vec::new();
    for r in results {
        files.extend(r?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn hash_file(dir: &Path, rel: &str) -> Result<HashedFile, ManifestError> {
    let path = dir.join(manifest::check_path(rel)?);
    let mut file = File::open(&path).map_err(|e| io_err("read", &path, e))?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut file, &mut buf).map_err(|e| io_err("read", &path, e))?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        for piece in buf[..n].chunks(CHUNK) {
            chunks.push(Sha256::digest(piece).into());
        }
        size += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(HashedFile {
        path: rel.to_owned(),
        size,
        sha256: whole.finalize().into(),
        chunks,
    })
}

/// Reads until `buf` is full or the file ends (so chunks stay aligned).
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn io_err(what: &'static str, path: &Path, source: std::io::Error) -> ManifestError {
    ManifestError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What one round sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundSent {
    /// Bytes of all files of the round.
    pub total: u64,
    /// Bytes of chunk data sent (new chunks only).
    pub data: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Bytes of chunk lists sent (final round only).
    pub index: u64,
}

/// The source's side: which chunks the destination has.
#[derive(Debug, Default)]
pub struct ChunkSender {
    sent: HashSet<Digest32>,
}

impl ChunkSender {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the chunks of `files` the destination lacks.
    pub fn pending(&self, files: &[HashedFile]) -> u64 {
        let mut seen = HashSet::new();
        let mut bytes = 0u64;
        for f in files {
            for (i, d) in f.chunks.iter().enumerate() {
                if !self.sent.contains(d) && seen.insert(*d) {
                    bytes += chunk_len(f.size, i) as u64;
                }
            }
        }
        bytes
    }

    /// Sends the chunks of `files` (under `dir`) the destination lacks;
    /// with `last`, the manifest first and every file's chunk list too.
    /// Ends with an [`Ack`].
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        tx: &mut SecureSender<W>,
        dir: &Path,
        files: &[HashedFile],
        last: bool,
        meter: &Meter,
    ) -> Result<RoundSent, TransferError> {
        let mut out = RoundSent {
            total: files.iter().map(|f| f.size).sum(),
            ..Default::default()
        };
        if last {
            let manifest = Manifest {
                entries: files
                    .iter()
                    .map(|f| ManifestEntry {
                        path: f.path.clone(),
                        size: f.size,
                        sha256: f.sha256.to_vec(),
                    })
                    .collect(),
            };
            tx.send(&Envelope::new(Body::Manifest(manifest))).await?;
        }
        let mut batch = ChunkBatch::default();
        for f in files {
            let path = dir.join(manifest::check_path(&f.path)?);
            let file = std::fs::File::open(&path).map_err(TransferError::Local)?;
            for (i, digest) in f.chunks.iter().enumerate() {
                if !self.sent.insert(*digest) {
                    continue;
                }
                let len = chunk_len(f.size, i);
                let start = batch.data.len();
                batch.data.resize(start + len, 0);
                file.read_exact_at(&mut batch.data[start..], (i * CHUNK) as u64)
                    .map_err(TransferError::Local)?;
                batch.digests.extend_from_slice(digest);
                batch.lengths.push(len as u32);
                out.data += len as u64;
                out.chunks += 1;
                if batch.lengths.len() == BATCH {
                    meter.add(batch.data.len() as u64);
                    tx.send(&Envelope::new(Body::ChunkBatch(std::mem::take(&mut batch))))
                        .await?;
                }
            }
            if !batch.lengths.is_empty() {
                meter.add(batch.data.len() as u64);
                tx.send(&Envelope::new(Body::ChunkBatch(std::mem::take(&mut batch))))
                    .await?;
            }
            if last {
                for (n, piece) in f.chunks.chunks(INDEX_PIECE).enumerate() {
                    let digests: Vec<u8> = piece.iter().flatten().copied().collect();
                    out.index += digests.len() as u64;
                    tx.send(&Envelope::new(Body::FileIndex(FileIndex {
                        path: f.path.clone(),
                        first: (n * INDEX_PIECE) as u64,
                        digests,
                    })))
                    .await?;
                }
            }
        }
        tx.send(&Envelope::new(Body::Ack(Ack {
            step: "round sent".into(),
        })))
        .await?;
        Ok(out)
    }
}

/// The length of chunk `i` of a file of `size` bytes.
fn chunk_len(size: u64, i: usize) -> usize {
    let start = (i * CHUNK) as u64;
    (size.saturating_sub(start)).min(CHUNK as u64) as usize
}

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
        let pack = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
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

    fn read(&self, digest: &Digest32, buf: &mut Vec<u8>) -> Option<std::io::Result<()>> {
        let &(offset, len) = self.index.get(digest)?;
        buf.resize(len as usize, 0);
        Some(self.pack.read_exact_at(buf, offset))
    }
}

/// Assembles the files of the final round from the store.
#[derive(Debug)]
struct Assembly {
    dir: PathBuf,
    files: HashMap<String, (ManifestEntry, u64, File)>,
}

impl Assembly {
    fn new(dir: &Path, manifest: &Manifest) -> Result<Self, TransferError> {
        manifest::validate(manifest)?;
        std::fs::create_dir_all(dir).map_err(TransferError::Local)?;
        let mut files = HashMap::new();
        for e in &manifest.entries {
            let path = dir.join(manifest::check_path(&e.path)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(TransferError::Local)?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&path)
                .map_err(TransferError::Local)?;
            files.insert(e.path.clone(), (e.clone(), 0u64, file));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
        })
    }

    fn place(&mut self, store: &ChunkStore, index: &FileIndex) -> Result<(), TransferError> {
        let bad = || ChunkError::BadIndex {
            path: index.path.clone(),
            first: index.first,
        };
        let (entry, next, file) = self
            .files
            .get_mut(&index.path)
            .ok_or_else(|| ManifestError::NotListed(index.path.clone()))?;
        if index.first != *next || index.digests.len() % 32 != 0 {
            return Err(bad().into());
        }
        let count = index.digests.len() as u64 / 32;
        let chunks_in_file = entry.size.div_ceil(CHUNK as u64);
        if index.first + count > chunks_in_file {
            return Err(bad().into());
        }
        let mut buf = Vec::with_capacity(CHUNK);
        for (k, d) in index.digests.chunks_exact(32).enumerate() {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(d);
            let i = index.first + k as u64;
            match store.read(&digest, &mut buf) {
                None => return Err(ChunkError::Missing(index.path.clone()).into()),
                Some(r) => r.map_err(TransferError::Local)?,
            }
            if buf.len() != chunk_len(entry.size, i as usize) {
                return Err(bad().into());
            }
            file.write_all_at(&buf, i * CHUNK as u64)
                .map_err(TransferError::Local)?;
        }
        *next += count;
        Ok(())
    }

    /// Checks every file's size and sha256.
    fn finish(self) -> Result<PathBuf, TransferError> {
        for (entry, next, file) in self.files.into_values() {
            file.set_len(entry.size).map_err(TransferError::Local)?;
            if next != entry.size.div_ceil(CHUNK as u64) {
                return Err(ManifestError::SizeMismatch {
                    path: entry.path.clone(),
                    got: next * CHUNK as u64,
                    want: entry.size,
                }
                .into());
            }
            drop(file);
            let (size, sha256) = manifest::digest_file(&self.dir.join(&entry.path))?;
            if size != entry.size || sha256 != entry.sha256 {
                return Err(ManifestError::DigestMismatch(entry.path.clone()).into());
            }
        }
        Ok(self.dir)
    }
}

/// Receives one round sent by [`ChunkSender::send`]. With `last`, the files
/// are assembled into `dir` and checked; returns the bytes of new chunks.
pub async fn recv_round<R: AsyncRead + Unpin>(
    rx: &mut SecureReceiver<R>,
    store: &mut ChunkStore,
    last: Option<&Path>,
) -> Result<u64, TransferError> {
    let mut assembly = match last {
        Some(dir) => match rx.recv().await? {
            Body::Manifest(m) => Some(Assembly::new(dir, &m)?),
            Body::Abort(a) => return Err(TransferError::Aborted(a.cause)),
            other => return Err(unexpected("Manifest", &other)),
        },
        None => None,
    };
    let mut added = 0u64;
    loop {
        match rx.recv().await? {
            Body::ChunkBatch(batch) => added += store.add(&batch)?,
            Body::FileIndex(index) => match assembly.as_mut() {
                Some(a) => a.place(store, &index)?,
                None => return Err(unexpected("ChunkBatch", &Body::FileIndex(index))),
            },
            Body::Ack(_) => break,
            Body::Abort(a) => return Err(TransferError::Aborted(a.cause)),
            other => return Err(unexpected("ChunkBatch", &other)),
        }
    }
    if let Some(a) = assembly {
        tokio::task::block_in_place(|| a.finish())?;
    }
    Ok(added)
}

fn unexpected(expected: &'static str, got: &Body) -> TransferError {
    ProtocolError::Unexpected {
        expected,
        got: got.name(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::SecureChannel;
    use crate::key::Key;

    fn write(dir: &Path, name: &str, data: &[u8]) {
        std::fs::write(dir.join(name), data).unwrap();
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    async fn channel_pair() -> (
        SecureSender<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
        SecureReceiver<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    ) {
        let key = Key::from_hex(&"07".repeat(32)).unwrap();
        let (a, b) = tokio::io::duplex(1 << 20);
        let k = key.clone();
        let accept = tokio::spawn(async move { SecureChannel::accept(b, &k).await.unwrap() });
        let source = SecureChannel::connect(a, &key).await.unwrap();
        let dest = accept.await.unwrap();
        (source.split().0, dest.split().1)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn later_rounds_send_only_changed_chunks_and_files_arrive_whole() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut pages = pseudo_random(64 * CHUNK + 100, 1);
        write(src.path(), "pages-1.img", &pages);
        write(src.path(), "core-1.img", b"core");
        let (mut tx, mut rx) = channel_pair().await;
        let mut sender = ChunkSender::new();
        let mut store = ChunkStore::create(&dst.path().join("pack"), 1 << 30).unwrap();
        let meter = Meter::default();

        let files = hash_dir(src.path()).unwrap();
        let first = sender
            .send(&mut tx, src.path(), &files, false, &meter)
            .await
            .unwrap();
        assert_eq!(
            recv_round(&mut rx, &mut store, None).await.unwrap(),
            first.data
        );
        assert_eq!(first.data, pages.len() as u64 + 4);

        // Dirty two pages and shift the rest by one page: only the two
        // dirty pages, the inserted page and the core are new.
        pages[3 * CHUNK] ^= 1;
        pages[10 * CHUNK + 7] ^= 1;
        let mut shifted = pseudo_random(CHUNK, 9);
        shifted.extend_from_slice(&pages);
        write(src.path(), "pages-1.img", &shifted);
        write(src.path(), "core-1.img", b"core2");
        let files = hash_dir(src.path()).unwrap();
        assert_eq!(sender.pending(&files), 3 * CHUNK as u64 + 5);
        let out = dst.path().join("images");
        let last = sender
            .send(&mut tx, src.path(), &files, true, &meter)
            .await
            .unwrap();
        assert_eq!(last.data, 3 * CHUNK as u64 + 5);
        recv_round(&mut rx, &mut store, Some(&out)).await.unwrap();
        assert_eq!(std::fs::read(out.join("pages-1.img")).unwrap(), shifted);
        assert_eq!(std::fs::read(out.join("core-1.img")).unwrap(), b"core2");
    }

    #[test]
    fn a_corrupted_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::create(&dir.path().join("pack"), 1 << 20).unwrap();
        let data = vec![5u8; 100];
        let mut batch = ChunkBatch {
            digests: Sha256::digest(&data).to_vec(),
            lengths: vec![100],
            data,
        };
        batch.data[0] ^= 1;
        assert!(matches!(store.add(&batch), Err(ChunkError::Corrupt)));
        batch.lengths = vec![99];
        assert!(matches!(store.add(&batch), Err(ChunkError::Malformed(_))));
        batch.data[0] ^= 1;
        batch.lengths = vec![100];
        let mut small = ChunkStore::create(&dir.path().join("small"), 50).unwrap();
        assert!(matches!(small.add(&batch), Err(ChunkError::Full(50))));
        assert_eq!(store.add(&batch).unwrap(), 100);
        assert_eq!(
            store.add(&batch).unwrap(),
            0,
            "known chunks are not stored twice"
        );
    }
}
