//! `rootfs-diff.tar` and `deleted.files`: the container's file-system
//! changes that travel with a checkpoint.
//!
//! The rule (crabmigrate keeps no snapshot of the rootfs to compare with):
//! a file, directory or symbolic link is in the diff when its modification
//! or status-change time is at or after the time given (the container's
//! creation or restore). Changing a file's contents or metadata, creating,
//! renaming or extracting it all set its status-change time, so every
//! changed file is caught; a few unchanged files touched in that same
//! second may come along. Deletions cannot be seen this way, so
//! `deleted.files` is always an empty list. Other mounts below the rootfs,
//! device nodes, fifos and sockets are left out.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most rootfs entries walked.
const MAX_WALK: usize = 10_000_000;

/// A written diff.
#[derive(Debug, Clone, Default)]
pub struct RootfsDiff {
    /// Entries in the tar.
    pub files: usize,
    /// Bytes of file contents.
    pub bytes: u64,
    /// What was left out, with why.
    pub skipped: Vec<String>,
}

/// An applied diff.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RootfsApplied {
    /// Entries written into the rootfs.
    pub written: usize,
    /// Paths removed because `deleted.files` lists them.
    pub deleted: usize,
}

/// Why the rootfs diff could not be written or applied.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rootfs-diff.tar member {member:?} is refused: {why}")]
    Refused { member: String, why: String },
    #[error("deleted.files is not a JSON list of paths")]
    DeletedList(#[source] serde_json::Error),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { what, path, source }
}

/// Writes the files of `rootfs` changed at or after `since` to the tar
/// file `out`, with paths relative to the rootfs.
pub fn write_rootfs_diff(
    rootfs: &Path,
    since: SystemTime,
    out: &Path,
) -> Result<RootfsDiff, RootfsError> {
    let since = since
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let root_meta = std::fs::symlink_metadata(rootfs).map_err(io_err("read", rootfs))?;
    let file = std::fs::File::create(out).map_err(io_err("create", out))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let mut diff = RootfsDiff::default();
    let mut stack = vec![PathBuf::new()];
    let mut walked = 0usize;
    while let Some(rel) = stack.pop() {
        let dir = rootfs.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                diff.skipped
                    .push(format!("/{} could not be read ({e})", rel.display()));
                continue;
            }
        };
        let mut names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            walked += 1;
            if walked > MAX_WALK {
                diff.skipped.push(format!(
                    "the rootfs has more than {MAX_WALK} entries; the rest was left out"
                ));
                return finish(tar, out, diff);
            }
            let rel = rel.join(&name);
            let path = rootfs.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != root_meta.dev() {
                diff.skipped.push(format!(
                    "/{} is another mount and was left out",
                    rel.display()
                ));
                continue;
            }
            let changed = meta.mtime() >= since || meta.ctime() >= since;
            let ft = meta.file_type();
            if ft.is_dir() {
                if changed {
                    tar.append_path_with_name(&path, &rel)
                        .map_err(io_err("archive", &path))?;
                    diff.files += 1;
                }
                stack.push(rel);
            } else if ft.is_file() || ft.is_symlink() {
                if changed {
                    tar.append_path_with_name(&path, &rel)
                        .map_err(io_err("archive", &path))?;
                    diff.files += 1;
                    if ft.is_file() {
                        diff.bytes += meta.len();
                    }
                }
            } else if changed {
                diff.skipped.push(format!(
                    "/{} is a device, fifo or socket and was left out of rootfs-diff.tar",
                    rel.display()
                ));
            }
        }
    }
    finish(tar, out, diff)
}

fn finish(
    tar: tar::Builder<io::BufWriter<std::fs::File>>,
    out: &Path,
    diff: RootfsDiff,
) -> Result<RootfsDiff, RootfsError> {
    let w = tar.into_inner().map_err(io_err("write", out))?;
    w.into_inner()
        .map_err(|e| io_err("write", out)(e.into_error()))?
        .sync_all()
        .map_err(io_err("write", out))?;
    Ok(diff)
}

/// Applies `diff` (a `rootfs-diff.tar`) and then `deleted` (a
/// `deleted.files` list) to `rootfs`. Members must be plain relative paths
/// of files, directories or symbolic links, and nothing is written through
/// a symbolic link that leads out of the rootfs.
pub fn apply_rootfs_diff(
    diff: Option<&Path>,
    deleted: Option<&Path>,
    rootfs: &Path,
) -> Result<RootfsApplied, RootfsError> {
    let mut applied = RootfsApplied::default();
    let root = rootfs.canonicalize().map_err(io_err("resolve", rootfs))?;
    if let Some(diff) = diff {
        let file = std::fs::File::open(diff).map_err(io_err("open", diff))?;
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(io_err("read", diff))? {
            let mut entry = entry.map_err(io_err("read", diff))?;
            let member = entry
                .path()
                .map_err(io_err("read", diff))?
                .to_string_lossy()
                .into_owned();
            let refuse = |why: &str| RootfsError::Refused {
                member: member.clone(),
                why: why.to_owned(),
            };
            // Podman's diffs name members `./x` and hold the root `./`.
            let trimmed = member.trim_end_matches('/');
            let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
            if trimmed.is_empty() || trimmed == "." {
                continue;
            }
            if let Err(why) = super::plain_relative(trimmed) {
                return Err(refuse(why));
            }
            use tar::EntryType as T;
            match entry.header().entry_type() {
                T::Regular | T::Continuous | T::Directory | T::Symlink => {}
                T::Link => return Err(refuse("hard links are not allowed")),
                T::Char | T::Block => return Err(refuse("device nodes are not allowed")),
                T::Fifo => return Err(refuse("fifos are not allowed")),
                T::XGlobalHeader => continue,
                other => return Err(refuse(&format!("entry type {other:?} is not allowed"))),
            }
            if !inside(&root, &root.join(trimmed))? {
                return Err(refuse(
                    "it would be written through a link out of the rootfs",
                ));
            }
            let unpacked = entry
                .unpack_in(&root)
                .map_err(io_err("write into", &root))?;
            if !unpacked {
                return Err(refuse("it lies outside the rootfs"));
            }
            applied.written += 1;
        }
    }
    if let Some(deleted) = deleted {
        let text = std::fs::read(deleted).map_err(io_err("read", deleted))?;
        let list: Vec<String> = serde_json::from_slice(&text).map_err(RootfsError::DeletedList)?;
        for path in list {
            let rel = path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_owned();
            if let Err(why) = super::plain_relative(&rel) {
                return Err(RootfsError::Refused {
                    member: format!("deleted.files: {path}"),
                    why: why.to_owned(),
                });
            }
            let target = root.join(&rel);
            if !inside(&root, &target)? {
                return Err(RootfsError::Refused {
                    member: format!("deleted.files: {path}"),
                    why: "it lies behind a link out of the rootfs".into(),
                });
            }
            match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&target),
                Ok(_) => std::fs::remove_file(&target),
                Err(_) => continue,
            }
            .map_err(io_err("delete", &target))?;
            applied.deleted += 1;
        }
    }
    Ok(applied)
}

/// Whether `path`'s existing parent directories resolve inside `root`
/// (the last component itself is not followed).
fn inside(root: &Path, path: &Path) -> Result<bool, RootfsError> {
    let mut parent = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    // Walk up to the deepest parent that exists, then resolve it.
    loop {
        match parent.canonicalize() {
            Ok(real) => return Ok(real.starts_with(root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !parent.pop() || parent.components().all(|c| matches!(c, Component::RootDir)) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(io_err("resolve", &parent)(e)),
        }
    }
}
