//! CRIU's statistics files, `stats-dump` and `stats-restore`, which CRIU
//! writes into the work directory after a successful request.

use std::path::Path;

use criu_proto::stats::{StatsEntry, IMG_SERVICE_MAGIC, STATS_MAGIC};
use prost::Message;
use serde::Serialize;

/// The largest stats file we read; real ones are under 100 bytes.
const MAX_STATS_FILE: u64 = 64 * 1024;

/// Dump statistics (times in microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DumpStats {
    /// From the start of freezing until every task stopped.
    pub freezing_time_us: u32,
    /// From "all stopped" until the tasks were resumed or killed (for a dump,
    /// including the time the post-dump notification was held).
    pub frozen_time_us: u32,
    /// Pulling pages out of the tasks.
    pub memdump_time_us: u32,
    /// Writing pages to images or a page server.
    pub memwrite_time_us: u32,
    /// Pages examined.
    pub pages_scanned: u64,
    /// Pages left out because the parent images have them.
    pub pages_skipped_parent: u64,
    /// Pages written.
    pub pages_written: u64,
    /// Pages left for lazy transfer.
    pub pages_lazy: u64,
}

/// Restore statistics (times in microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    /// Pages compared for copy-on-write sharing.
    pub pages_compared: u64,
    /// Pages shared copy-on-write instead of copied.
    pub pages_skipped_cow: u64,
    /// Creating the task tree.
    pub forking_time_us: u32,
    /// From the start until just before the tasks were released.
    pub restore_time_us: u32,
    /// Pages restored.
    pub pages_restored: u64,
}

/// Why a stats file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The file could not be opened or read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a CRIU stats image.
    #[error("{path} is not a CRIU stats file ({why})")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Reads `DIR/stats-dump`.
pub fn read_dump_stats(dir: &Path) -> Result<Option<DumpStats>, StatsError> {
    let entry = read_entry(&dir.join("stats-dump"))?;
    Ok(entry.and_then(|e| e.dump).map(|d| DumpStats {
        freezing_time_us: d.freezing_time,
        frozen_time_us: d.frozen_time,
        memdump_time_us: d.memdump_time,
        memwrite_time_us: d.memwrite_time,
        pages_scanned: d.pages_scanned,
        pages_skipped_parent: d.pages_skipped_parent,
        pages_written: d.pages_written,
        pages_lazy: d.pages_lazy,
    }))
}

/// Reads `DIR/stats-restore`.
pub fn read_restore_stats(dir: &Path) -> Result<Option<RestoreStats>, StatsError> {
    let entry = read_entry(&dir.join("stats-restore"))?;
    Ok(entry.and_then(|e| e.restore).map(|r| RestoreStats {
        pages_compared: r.pages_compared,
        pages_skipped_cow: r.pages_skipped_cow,
        forking_time_us: r.forking_time,
        restore_time_us: r.restore_time,
        pages_restored: r.pages_restored.unwrap_or(0),
    }))
}

/// `Ok(None)` when the file does not exist.
fn read_entry(path: &Path) -> Result<Option<StatsEntry>, StatsError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StatsError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATS_FILE)
        .read_to_end(&mut bytes)
        .map_err(|source| StatsError::Read {
            path: path.into(),
            source,
        })?;
    decode(&bytes).map(Some).map_err(|why| StatsError::Format {
        path: path.into(),
        why,
    })
}

fn decode(bytes: &[u8]) -> Result<StatsEntry, String> {
    let word = |i: usize| -> Result<u32, String> {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "file too short".to_owned())
    };
    if word(0)? != IMG_SERVICE_MAGIC || word(1)? != STATS_MAGIC {
        return Err("wrong magic".into());
    }
    let len = word(2)? as usize;
    let body = bytes
        .get(12..12usize.saturating_add(len))
        .ok_or_else(|| format!("entry of {len} bytes is cut short"))?;
    StatsEntry::decode(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_proto::stats::DumpStatsEntry;

    fn image(entry: &StatsEntry) -> Vec<u8> {
        let body = entry.encode_to_vec();
        let mut bytes = Vec::new();
        for w in [IMG_SERVICE_MAGIC, STATS_MAGIC, body.len() as u32] {
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn reads_dump_stats_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let entry = StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: 10,
                frozen_time: 20,
                pages_written: 59,
                ..Default::default()
            }),
            restore: None,
        };
        std::fs::write(dir.path().join("stats-dump"), image(&entry)).unwrap();
        let stats = read_dump_stats(dir.path()).unwrap().unwrap();
        assert_eq!((stats.freezing_time_us, stats.pages_written), (10, 59));
        assert_eq!(read_restore_stats(dir.path()).unwrap(), None);

        let mut truncated = image(&entry);
        truncated.truncate(14);
        std::fs::write(dir.path().join("stats-dump"), truncated).unwrap();
        assert!(matches!(
            read_dump_stats(dir.path()),
            Err(StatsError::Format { .. })
        ));
        std::fs::write(dir.path().join("stats-dump"), [0u8; 3]).unwrap();
        assert!(matches!(
            read_dump_stats(dir.path()),
            Err(StatsError::Format { .. })
        ));
    }
}
