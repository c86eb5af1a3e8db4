//! Reading the pids of a checkpoint from its `pstree.img`, so that a
//! restore can tell beforehand whether they are free.

use std::path::Path;

use criu_proto::images::{PstreeEntry, IMG_COMMON_MAGIC, PSTREE_MAGIC};
use prost::Message;

/// The largest `pstree.img` read (a tree of ~100k tasks).
const MAX_PSTREE: u64 = 16 << 20;

/// Why `pstree.img` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PstreeError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid process-tree image.
    #[error("{path} is not a valid CRIU process-tree image ({why})")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Every task of the checkpoint in `images_dir`, in `pstree.img` order.
pub fn read_pstree(images_dir: &Path) -> Result<Vec<PstreeEntry>, PstreeError> {
    use std::io::Read;
    let path = images_dir.join("pstree.img");
    let read_err = |source| PstreeError::Read {
        path: path.clone(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .map_err(read_err)?
        .take(MAX_PSTREE)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    decode(&bytes).map_err(|why| PstreeError::Format { path, why })
}

fn decode(bytes: &[u8]) -> Result<Vec<PstreeEntry>, String> {
    let word = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0) != Some(IMG_COMMON_MAGIC) || word(4) != Some(PSTREE_MAGIC) {
        return Err("wrong magic".into());
    }
    let mut at = 8;
    let mut entries = Vec::new();
    while at < bytes.len() {
        let len = word(at).ok_or("truncated entry length")? as usize;
        let body = at
            .checked_add(4)
            .and_then(|start| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(|| format!("entry of {len} bytes at offset {at} is cut short"))?;
        entries.push(PstreeEntry::decode(body).map_err(|e| e.to_string())?);
        at += 4 + len;
    }
    Ok(entries)
}

/// Every pid and thread id the checkpoint will need at restore.
pub fn checkpoint_pids(entries: &[PstreeEntry]) -> Vec<u32> {
    let mut pids: Vec<u32> = entries
        .iter()
        .flat_map(|e| std::iter::once(e.pid).chain(e.threads.iter().copied()))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entries: &[PstreeEntry]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&IMG_COMMON_MAGIC.to_ne_bytes());
        bytes.extend_from_slice(&PSTREE_MAGIC.to_ne_bytes());
        for e in entries {
            let body = e.encode_to_vec();
            bytes.extend_from_slice(&(body.len() as u32).to_ne_bytes());
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    #[test]
    fn reads_tasks_and_threads() {
        let tree = [
            PstreeEntry {
                pid: 10,
                ppid: 1,
                pgid: 10,
                sid: 10,
                threads: vec![10, 12],
            },
            PstreeEntry {
                pid: 11,
                ppid: 10,
                pgid: 10,
                sid: 10,
                threads: vec![11],
            },
        ];
        let entries = decode(&image(&tree)).unwrap();
        assert_eq!(entries, tree);
        assert_eq!(checkpoint_pids(&entries), vec![10, 11, 12]);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let good = image(&[PstreeEntry {
            pid: 1,
            ppid: 0,
            pgid: 1,
            sid: 1,
            threads: vec![],
        }]);
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
        let mut absurd = good[..8].to_vec();
        absurd.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert!(decode(&absurd).unwrap_err().contains("cut short"));
        assert!(decode(b"not an image at all").is_err());
    }
}
