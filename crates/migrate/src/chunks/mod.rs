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

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::manifest::{self, ManifestError};
use crate::meter::Meter;
use crate::protocol::{Ack, Body, ChunkBatch, FileIndex, ManifestEntry, MessageSender, Step};

mod store;

pub use store::{recv_round, ChunkError, ChunkStore};

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

/// Hashes every regular file under `dir` (recursively) in 4 KiB chunks, on
/// every core: large files are cut into ranges so that one big page image
/// does not leave a core idle. Blocking.
pub fn hash_dir(dir: &Path) -> Result<Vec<HashedFile>, ManifestError> {
    let listing = manifest::list(dir)?;
    // Ranges of at most RANGE bytes (a multiple of CHUNK): (file, start, len).
    const RANGE: u64 = 16 << 20;
    let mut ranges: Vec<(usize, u64, u64)> = Vec::new();
    for (i, (_, size)) in listing.iter().enumerate() {
        let mut start = 0;
        loop {
            let len = (size - start).min(RANGE);
            ranges.push((i, start, len));
            start += len;
            if start >= *size {
                break;
            }
        }
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let next = std::sync::atomic::AtomicUsize::new(0);
    /// What one hashing thread did: (range number, its chunk digests).
    type Hashed = Result<Vec<(usize, Vec<Digest32>)>, ManifestError>;
    let results: Vec<Hashed> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    let mut buf = vec![0u8; RANGE as usize];
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(file, start, len)) = ranges.get(k) else {
                            return Ok(done);
                        };
                        let path = dir.join(manifest::check_path(&listing[file].0)?);
                        let digests = hash_range(&path, start, &mut buf[..len as usize])?;
                        done.push((k, digests));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(io_err(
                        "hash",
                        dir,
                        std::io::Error::other("a hashing thread panicked"),
                    ))
                })
            })
            .collect()
    });
    let mut by_range: Vec<Option<Vec<Digest32>>> = vec![None; ranges.len()];
    for r in results {
        for (k, digests) in r? {
            by_range[k] = Some(digests);
        }
    }
    let mut files: Vec<HashedFile> = listing
        .iter()
        .map(|(path, size)| HashedFile {
            path: path.clone(),
            size: *size,
            sha256: [0; 32],
            chunks: Vec::with_capacity(size.div_ceil(CHUNK as u64) as usize),
        })
        .collect();
    for (&(file, _, _), digests) in ranges.iter().zip(by_range) {
        files[file].chunks.extend(digests.unwrap_or_default());
    }
    for f in &mut files {
        f.sha256 = digest_of_chunks(&f.chunks);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A content-hashed file's digest: the sha256 of its chunks' digests in
/// order. Every chunk is checked against its own digest on arrival, so
/// this names the whole file without hashing its data a second time.
pub fn digest_of_chunks(chunks: &[Digest32]) -> Digest32 {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c);
    }
    h.finalize().into()
}

/// The chunk digests of `buf.len()` bytes of `path` from `start`.
fn hash_range(path: &Path, start: u64, buf: &mut [u8]) -> Result<Vec<Digest32>, ManifestError> {
    let file = File::open(path).map_err(|e| io_err("read", path, e))?;
    file.read_exact_at(buf, start)
        .map_err(|e| io_err("read", path, e))?;
    Ok(buf
        .chunks(CHUNK)
        .map(|c| Sha256::digest(c).into())
        .collect())
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
    pub async fn send(
        &mut self,
        tx: &mut MessageSender,
        dir: &Path,
        files: &[HashedFile],
        last: bool,
        meter: &Meter,
    ) -> Result<RoundSent, ChunkError> {
        let mut out = RoundSent {
            total: files.iter().map(|f| f.size).sum(),
            ..Default::default()
        };
        if last {
            let entries: Vec<ManifestEntry> = files
                .iter()
                .map(|f| ManifestEntry {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256.to_vec(),
                })
                .collect();
            crate::transfer::send_manifest(tx, &entries).await?;
        }
        let mut batch = ChunkBatch::default();
        for f in files {
            let path = dir.join(manifest::check_path(&f.path)?);
            let file = std::fs::File::open(&path).map_err(ChunkError::Local)?;
            for (i, digest) in f.chunks.iter().enumerate() {
                if !self.sent.insert(*digest) {
                    continue;
                }
                let len = chunk_len(f.size, i);
                let start = batch.data.len();
                batch.data.resize(start + len, 0);
                file.read_exact_at(&mut batch.data[start..], (i * CHUNK) as u64)
                    .map_err(ChunkError::Local)?;
                batch.digests.extend_from_slice(digest);
                batch.lengths.push(len as u32);
                out.data += len as u64;
                out.chunks += 1;
                if batch.lengths.len() == BATCH {
                    meter.add(batch.data.len() as u64);
                    tx.send(Body::ChunkBatch(std::mem::take(&mut batch)))
                        .await?;
                }
            }
            if !batch.lengths.is_empty() {
                meter.add(batch.data.len() as u64);
                tx.send(Body::ChunkBatch(std::mem::take(&mut batch)))
                    .await?;
            }
            if last {
                for (n, piece) in f.chunks.chunks(INDEX_PIECE).enumerate() {
                    let digests: Vec<u8> = piece.iter().flatten().copied().collect();
                    out.index += digests.len() as u64;
                    tx.send(Body::FileIndex(FileIndex {
                        path: f.path.clone(),
                        first: (n * INDEX_PIECE) as u64,
                        digests,
                    }))
                    .await?;
                }
            }
        }
        tx.send(Ack::of(Step::Round)).await?;
        Ok(out)
    }
}

/// The length of chunk `i` of a file of `size` bytes.
pub(crate) fn chunk_len(size: u64, i: usize) -> usize {
    let start = (i * CHUNK) as u64;
    (size.saturating_sub(start)).min(CHUNK as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::protocol::MessageReceiver;

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

    async fn channel_pair() -> (MessageSender, MessageReceiver) {
        let key = Key::from_hex(&"07".repeat(32)).unwrap();
        let (source, dest) = crate::channel::duplex_pair(&key, 1 << 20).await.unwrap();
        (
            MessageSender::new(source.split().0),
            MessageReceiver::new(dest.split().1, std::time::Duration::from_secs(30)),
        )
    }

    #[tokio::test]
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
            recv_round(&mut rx, &mut store, None, 1000).await.unwrap(),
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
        recv_round(&mut rx, &mut store, Some(&out), 1000)
            .await
            .unwrap();
        assert_eq!(std::fs::read(out.join("pages-1.img")).unwrap(), shifted);
        assert_eq!(std::fs::read(out.join("core-1.img")).unwrap(), b"core2");
    }

    #[test]
    fn a_large_file_hashes_in_ranges_like_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let data = pseudo_random((33 << 20) + 100, 3);
        write(dir.path(), "pages-1.img", &data);
        let files = hash_dir(dir.path()).unwrap();
        let f = &files[0];
        assert_eq!(f.size, data.len() as u64);
        let expected: Vec<Digest32> = data
            .chunks(CHUNK)
            .map(|c| Sha256::digest(c).into())
            .collect();
        assert_eq!(f.chunks, expected, "every chunk, in order, across ranges");
        assert_eq!(f.sha256, digest_of_chunks(&expected));
    }

    #[test]
    fn a_corrupted_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChunkStore::create(&dir.path().join("pack"), 1 << 20).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pack"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the store holds the workload's memory");
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
