//! The test workload (`crabmigrate-workload`): the state line it writes
//! each tick, and private copies of a built program (CRIU dumps a running
//! executable by path; a `cargo build` replacing the file under it breaks
//! the dump with link-remap errors, a private copy nobody rebuilds cannot).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// One state line: `COUNTER CHECKSUM PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The counter.
    pub counter: u64,
    /// The checksum of the whole held memory.
    pub checksum: String,
    /// The writer's pid as it sees itself (1 in its own pid namespace).
    pub pid: u32,
}

impl Tick {
    /// Parses a state line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split_whitespace();
        Some(Self {
            counter: parts.next()?.parse().ok()?,
            checksum: parts.next()?.to_owned(),
            pid: parts.next()?.parse().ok()?,
        })
    }

    /// Reads the state file the workload writes with `--out`.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(std::fs::read_to_string(path).ok()?.trim())
    }
}

/// Why a program could not be copied.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy {from} to {to}")]
pub struct CopyError {
    pub from: PathBuf,
    pub to: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A private copy of the program `built` (same file name) in a new
/// directory under `dir`, unique per process and call.
pub fn private_copy(built: &Path, dir: &Path) -> Result<PathBuf, CopyError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let sub = dir.join(format!(
        ".program-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let copy = sub.join(built.file_name().unwrap_or_default());
    std::fs::create_dir_all(&sub)
        .and_then(|()| std::fs::copy(built, &copy))
        .map_err(|source| CopyError {
            from: built.to_path_buf(),
            to: copy.clone(),
            source,
        })?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lines_parse() {
        let t = Tick::parse("12 abcd 1").unwrap();
        assert_eq!((t.counter, t.checksum.as_str(), t.pid), (12, "abcd", 1));
        assert_eq!(Tick::parse("12 abcd"), None);
        assert_eq!(Tick::parse("x abcd 1"), None);
    }

    #[test]
    fn copies_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join("prog");
        std::fs::write(&built, b"#!/bin/sh\n").unwrap();
        let a = private_copy(&built, dir.path()).unwrap();
        let b = private_copy(&built, dir.path()).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"#!/bin/sh\n");
        assert!(private_copy(&dir.path().join("missing"), dir.path()).is_err());
    }
}
