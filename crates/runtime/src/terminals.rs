//! Terminals a detached tree inherited from the shell that started it.
//!
//! `setsid server &` typed in a terminal, or `crabmigrate run -d` with
//! stderr left on the terminal, gives the tree a pty slave whose master
//! (the terminal emulator, ssh, tmux) is outside it. CRIU cannot dump such a
//! slave ("Found slave peer index N without correspond master peer"; in a
//! container "Can't lookup mount ... path=/dev/pts/0"). As runc does with
//! the descriptors it records in `descriptors.json`, crabmigrate declares
//! each such terminal external at checkpoint (`--external tty[RDEV:DEV]`)
//! and records it in the images ([`RECORD`]); at restore the terminal of the
//! restoring crabmigrate takes its place (`--inherit-fd fd[N]:tty[RDEV:DEV]`):
//! the restored tree writes where `restore` was run.
//!
//! A terminal whose master is in the tree is left to CRIU, which dumps the
//! pair. With `--shell-job` CRIU handles the terminal itself and nothing is
//! declared.

use std::collections::HashSet;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use criu_rpc::External;
use serde::{Deserialize, Serialize};

/// The file in the images directory that lists the external terminals.
pub const RECORD: &str = "crabmigrate-terminals.json";

/// Major numbers of Unix98 pty slaves (`/dev/pts/N`).
const PTS_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;
/// Virtual consoles and serial lines (`/dev/ttyN`, `/dev/ttySN`).
const TTY_MAJOR: u64 = 4;
/// `/dev/tty`, `/dev/console`, `/dev/ptmx`.
const TTYAUX_MAJOR: u64 = 5;

/// One terminal left outside the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalTerminal {
    /// CRIU's key, `tty[RDEV:DEV]` (hex).
    pub key: String,
    /// Its path at checkpoint (`/dev/pts/0`).
    pub path: String,
    /// The lowest of the root's standard descriptors (0, 1, 2) that was
    /// this terminal, if any.
    pub stdio: Option<u32>,
}

impl ExternalTerminal {
    /// The `--external` specification for it.
    pub fn external(&self) -> External {
        External::raw(self.key.clone())
    }
}

/// Why the terminals of a checkpoint cannot be given back.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The record is unreadable.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The record is not ours.
    #[error("{0} is damaged")]
    Corrupt(PathBuf, #[source] serde_json::Error),
    /// The restore has no terminal to give.
    #[error("the checkpoint's tree wrote to the terminal {path}, and this restore has no terminal on its standard input, output or error to give it in its place; run restore from a terminal")]
    NoTerminal {
        /// The terminal the tree had.
        path: String,
    },
}

/// `pid`'s children and their children, `pid` first.
pub fn tree_pids(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut at = 0;
    while at < out.len() && out.len() < 1 << 16 {
        let p = out[at];
        at += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !out.contains(&child) {
                    out.push(child);
                }
            }
        }
    }
    out
}

fn is_pts(rdev: u64) -> bool {
    PTS_MAJORS.contains(&major(rdev))
}

fn major(rdev: u64) -> u64 {
    nix::sys::stat::major(rdev)
}

fn minor(rdev: u64) -> u64 {
    nix::sys::stat::minor(rdev)
}

/// The pty index of a Unix98 slave (`/dev/pts/INDEX`).
fn pts_index(rdev: u64) -> u64 {
    (major(rdev) - PTS_MAJORS.start()) * 256 + minor(rdev)
}

/// Whether a terminal device is one CRIU can only dump with its master or
/// as external: pty slaves, consoles and serial lines.
fn is_terminal(rdev: u64) -> bool {
    is_pts(rdev) || major(rdev) == TTY_MAJOR || (major(rdev) == TTYAUX_MAJOR && minor(rdev) == 1)
}

/// The terminals the processes `pids` (the root first) hold whose master
/// is not among them.
pub fn find(pids: &[u32]) -> Vec<ExternalTerminal> {
    let mut masters = HashSet::new();
    let mut found: Vec<(u32, u32, String, u64, u64)> = Vec::new();
    for (n, &pid) in pids.iter().enumerate() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Some(num) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if !meta.file_type().is_char_device() {
                continue;
            }
            let rdev = meta.rdev();
            if major(rdev) == TTYAUX_MAJOR && minor(rdev) == 2 {
                if let Some(index) = master_index(pid, num) {
                    masters.insert(index);
                }
                continue;
            }
            if !is_terminal(rdev) {
                continue;
            }
            let path = std::fs::read_link(fd.path())
                .map(|p| {
                    let p = p.to_string_lossy();
                    p.strip_suffix(" (deleted)").unwrap_or(&p).to_owned()
                })
                .unwrap_or_default();
            let root_stdio = if n == 0 && num <= 2 { num } else { u32::MAX };
            found.push((root_stdio, num, path, rdev, meta.dev()));
        }
    }
    let mut out: Vec<ExternalTerminal> = Vec::new();
    found.sort();
    for (root_stdio, _, path, rdev, dev) in found {
        if is_pts(rdev) && masters.contains(&pts_index(rdev)) {
            continue;
        }
        let key = External::tty(rdev, dev).as_str().to_owned();
        let stdio = (root_stdio != u32::MAX).then_some(root_stdio);
        match out.iter_mut().find(|t| t.key == key) {
            Some(t) => t.stdio = t.stdio.or(stdio),
            None => out.push(ExternalTerminal { key, path, stdio }),
        }
    }
    out
}

/// The pty index of a master (`tty-index:` in its fdinfo).
fn master_index(pid: u32, fd: u32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Writes the record into the images directory (removes a stale one when
/// there is none to record).
pub fn record(images_dir: &Path, terminals: &[ExternalTerminal]) -> std::io::Result<()> {
    let path = images_dir.join(RECORD);
    if terminals.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let json = serde_json::to_vec_pretty(terminals).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

/// The terminals a checkpoint left outside (none without a record).
pub fn load(images_dir: &Path) -> Result<Vec<ExternalTerminal>, TerminalError> {
    let path = images_dir.join(RECORD);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TerminalError::Read(path, e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| TerminalError::Corrupt(path, e))
}

/// For each recorded terminal, the caller's descriptor that takes its
/// place: the same standard descriptor if it is a terminal, else the first
/// of standard input, output and error that is one.
pub fn stand_ins(
    terminals: &[ExternalTerminal],
) -> Result<Vec<(String, BorrowedFd<'static>)>, TerminalError> {
    let ours = |fd: u32| -> Option<BorrowedFd<'static>> {
        // SAFETY: 0, 1 and 2 are this process's standard streams, open for
        // its whole life and never closed by crabmigrate.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd as i32) };
        nix::unistd::isatty(borrowed)
            .unwrap_or(false)
            .then_some(borrowed)
    };
    terminals
        .iter()
        .map(|t| {
            t.stdio
                .and_then(ours)
                .or_else(|| (0..3).find_map(ours))
                .map(|fd| (t.key.clone(), fd))
                .ok_or_else(|| TerminalError::NoTerminal {
                    path: t.path.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_pty_slave_without_its_master_is_external_and_with_it_is_not() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let me = std::process::id();
        let slave_fd = pty.slave.as_raw_fd() as u32;
        let meta = std::fs::metadata(format!("/proc/self/fd/{slave_fd}")).unwrap();
        let key = External::tty(meta.rdev(), meta.dev()).as_str().to_owned();
        // This process holds both ends: CRIU would dump the pair.
        let both = find(&[me]);
        assert!(both.iter().all(|t| t.key != key), "{both:?}");
        // Only the slave (its master gone, as if held outside): external.
        drop(pty.master);
        let alone = find(&[me]);
        let t = alone
            .iter()
            .find(|t| t.key == key)
            .unwrap_or_else(|| panic!("{key} in {alone:?}"));
        assert!(t.path.starts_with("/dev/pts/"), "{t:?}");
        assert!(!t.path.ends_with("(deleted)"), "{t:?}");
        criu_rpc::External::parse(&t.key, criu_rpc::ExternalSide::Dump).unwrap();
    }

    #[test]
    fn record_round_trips_and_an_empty_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let t = ExternalTerminal {
            key: "tty[8800:1a]".into(),
            path: "/dev/pts/0".into(),
            stdio: Some(2),
        };
        record(dir.path(), std::slice::from_ref(&t)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![t]);
        record(dir.path(), &[]).unwrap();
        assert!(!dir.path().join(RECORD).exists());
    }
}
