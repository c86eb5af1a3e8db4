//! Is a checkpoint whole enough to hand to CRIU's restore?
//!
//! CRIU trusts its images: a `pstree.img` without a process makes it crash
//! (SIGSEGV), a missing core image or a file id that `files.img` lacks
//! fails deep inside the restore, after processes were forked. These checks
//! read only the small metadata images and refuse such a directory with
//! the cause before anything starts:
//!
//! - `inventory.img` decodes and is format version 2;
//! - `pstree.img` lists at least one process, the first is the root
//!   (parent 0), pids and thread ids are unique, and every parent is in
//!   the tree;
//! - every thread has its `core-TID.img`, and it decodes;
//! - every descriptor in `fdinfo-*.img` names a file `files.img` holds;
//! - every pagemap whose pages are in the images names a page file that
//!   exists.
//!
//! Images crabmigrate does not know are left alone, so a newer CRIU's
//! checkpoint is never refused for being new.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use criu_proto::images::{
    CoreEntry, FdinfoEntry, FileEntry, InventoryEntry, PagemapEntry, PagemapHead, PstreeEntry,
};

use crate::checkpoint::{MAX_DIR_ENTRIES, PE_PARENT, PE_PRESENT};
use crate::magic;
use crate::read::{self, ImageError};

/// Why a directory is not a checkpoint CRIU can restore.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCheckpoint {
    /// The directory cannot be listed.
    #[error("cannot list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No `inventory.img`.
    #[error(
        "{0} holds no checkpoint (no inventory.img); point --images-dir at a directory written by checkpoint"
    )]
    NotCheckpoint(PathBuf),
    /// An image is missing, damaged or of the wrong kind.
    #[error("the checkpoint is damaged; take a new one")]
    Image(#[source] ImageError),
    /// An image format crabmigrate does not know.
    #[error("{path} is in image format version {version}; CRIU restores version 2")]
    Version { path: PathBuf, version: u32 },
    /// `pstree.img` lists no process.
    #[error("{0}/pstree.img lists no process, so there is nothing to restore; the checkpoint is damaged, take a new one")]
    NoProcess(PathBuf),
    /// The first process is not the root of a tree.
    #[error("{dir}/pstree.img starts with process {pid} whose parent is {ppid}, not the tree's root (parent 0); the checkpoint is damaged, take a new one")]
    NoRoot { dir: PathBuf, pid: u32, ppid: u32 },
    /// A pid or thread id appears twice.
    #[error("{dir}/pstree.img lists id {id} twice; the checkpoint is damaged, take a new one")]
    DuplicateId { dir: PathBuf, id: u32 },
    /// A parent that is not in the tree.
    #[error("{dir}/pstree.img gives process {pid} the parent {ppid}, which is not in the tree; the checkpoint is damaged, take a new one")]
    UnknownParent { dir: PathBuf, pid: u32, ppid: u32 },
    /// A descriptor naming a file `files.img` lacks.
    #[error("{path} names file id {id}, which files.img does not hold; the checkpoint is damaged, take a new one")]
    UnknownFile { path: PathBuf, id: u32 },
    /// A pagemap whose page file is missing.
    #[error("{path} keeps {pages} pages in {pages_image}, which is missing; the checkpoint is incomplete, copy it whole")]
    MissingPages {
        path: PathBuf,
        pages: u64,
        pages_image: String,
    },
}

impl From<ImageError> for InvalidCheckpoint {
    fn from(e: ImageError) -> Self {
        Self::Image(e)
    }
}

/// What the checks found: the tree's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restorable {
    /// The root's pid (in the dumped pid namespace).
    pub root: u32,
    pub processes: usize,
    pub threads: usize,
}

/// Checks that `dir` holds a checkpoint CRIU can restore (see the module
/// docs).
pub fn check_restorable(dir: &Path) -> Result<Restorable, InvalidCheckpoint> {
    let names = list(dir)?;
    if !names.contains("inventory.img") {
        return Err(InvalidCheckpoint::NotCheckpoint(dir.to_path_buf()));
    }
    let inventory_path = dir.join("inventory.img");
    let inventory: InventoryEntry = read::single(&inventory_path, magic::INVENTORY, "inventory")?;
    if inventory.img_version != 2 {
        return Err(InvalidCheckpoint::Version {
            path: inventory_path,
            version: inventory.img_version,
        });
    }
    let tree: Vec<PstreeEntry> = read::entries(&dir.join("pstree.img"), magic::PSTREE, "pstree")?;
    let restorable = check_tree(dir, &tree)?;
    for entry in &tree {
        for &tid in threads(entry) {
            let _: CoreEntry =
                read::single(&dir.join(format!("core-{tid}.img")), magic::CORE, "core")?;
        }
    }
    check_files(dir, &names)?;
    check_pagemaps(dir, &names)?;
    Ok(restorable)
}

fn list(dir: &Path) -> Result<HashSet<String>, InvalidCheckpoint> {
    let list_err = |source| InvalidCheckpoint::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = HashSet::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        if names.len() >= MAX_DIR_ENTRIES {
            break;
        }
        if let Ok(name) = entry.map_err(list_err)?.file_name().into_string() {
            names.insert(name);
        }
    }
    Ok(names)
}

fn threads(entry: &PstreeEntry) -> &[u32] {
    if entry.threads.is_empty() {
        std::slice::from_ref(&entry.pid)
    } else {
        &entry.threads
    }
}

fn check_tree(dir: &Path, tree: &[PstreeEntry]) -> Result<Restorable, InvalidCheckpoint> {
    let Some(root) = tree.first() else {
        return Err(InvalidCheckpoint::NoProcess(dir.to_path_buf()));
    };
    if root.ppid != 0 {
        return Err(InvalidCheckpoint::NoRoot {
            dir: dir.to_path_buf(),
            pid: root.pid,
            ppid: root.ppid,
        });
    }
    let mut pids = HashSet::new();
    let mut ids = HashSet::new();
    let mut threads_total = 0;
    for entry in tree {
        let duplicate = |id| InvalidCheckpoint::DuplicateId {
            dir: dir.to_path_buf(),
            id,
        };
        if !pids.insert(entry.pid) {
            return Err(duplicate(entry.pid));
        }
        // A process's pid is its first thread's id; other processes' ids
        // must not repeat it.
        let mut own = threads(entry).to_vec();
        if !own.contains(&entry.pid) {
            own.push(entry.pid);
        }
        for tid in own {
            if !ids.insert(tid) {
                return Err(duplicate(tid));
            }
        }
        threads_total += threads(entry).len();
    }
    for entry in tree.iter().skip(1) {
        if !pids.contains(&entry.ppid) {
            return Err(InvalidCheckpoint::UnknownParent {
                dir: dir.to_path_buf(),
                pid: entry.pid,
                ppid: entry.ppid,
            });
        }
    }
    Ok(Restorable {
        root: root.pid,
        processes: tree.len(),
        threads: threads_total,
    })
}

fn check_files(dir: &Path, names: &HashSet<String>) -> Result<(), InvalidCheckpoint> {
    let fdinfos: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("fdinfo-") && n.ends_with(".img"))
        .collect();
    if fdinfos.is_empty() {
        return Ok(());
    }
    let files: HashSet<u32> = if names.contains("files.img") {
        read::entries::<FileEntry>(&dir.join("files.img"), magic::FILES, "file")?
            .into_iter()
            .map(|f| f.id)
            .collect()
    } else {
        HashSet::new()
    };
    for name in fdinfos {
        let path = dir.join(name);
        for fd in read::entries::<FdinfoEntry>(&path, magic::FDINFO, "fdinfo")? {
            if !files.contains(&fd.id) {
                return Err(InvalidCheckpoint::UnknownFile { path, id: fd.id });
            }
        }
    }
    Ok(())
}

fn check_pagemaps(dir: &Path, names: &HashSet<String>) -> Result<(), InvalidCheckpoint> {
    let mut pages_by_image: HashMap<String, (PathBuf, u64)> = HashMap::new();
    for name in names
        .iter()
        .filter(|n| n.starts_with("pagemap-") && n.ends_with(".img"))
    {
        let path = dir.join(name);
        let bytes = read::read_file(&path)?;
        let header = read::expect_header(&path, &bytes, magic::PAGEMAP)?;
        let raw = read::raw_entries(&path, &bytes, header.size())?;
        let Some((head, rest)) = raw.split_first() else {
            continue;
        };
        let head: PagemapHead = read::decode(&path, head, "pagemap head")?;
        let mut present = 0u64;
        for body in rest {
            let e: PagemapEntry = read::decode(&path, body, "pagemap")?;
            let flags = e.flags.unwrap_or(if e.in_parent.unwrap_or(false) {
                PE_PARENT
            } else {
                PE_PRESENT
            });
            if flags & PE_PRESENT != 0 {
                present =
                    present.saturating_add(e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages)));
            }
        }
        if present > 0 {
            let image = format!("pages-{}.img", head.pages_id);
            let slot = pages_by_image.entry(image).or_insert((path, 0));
            slot.1 = slot.1.saturating_add(present);
        }
    }
    for (image, (path, pages)) in pages_by_image {
        if !names.contains(&image) {
            return Err(InvalidCheckpoint::MissingPages {
                path,
                pages,
                pages_image: image,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, ppid: u32, threads: &[u32]) -> PstreeEntry {
        PstreeEntry {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            threads: threads.to_vec(),
        }
    }

    #[test]
    fn tree_shapes() {
        let dir = Path::new("/images");
        assert!(matches!(
            check_tree(dir, &[]),
            Err(InvalidCheckpoint::NoProcess(_))
        ));
        assert!(matches!(
            check_tree(dir, &[entry(5, 4, &[5])]),
            Err(InvalidCheckpoint::NoRoot {
                pid: 5,
                ppid: 4,
                ..
            })
        ));
        assert!(matches!(
            check_tree(dir, &[entry(5, 0, &[5]), entry(5, 5, &[5])]),
            Err(InvalidCheckpoint::DuplicateId { id: 5, .. })
        ));
        assert!(matches!(
            check_tree(dir, &[entry(5, 0, &[5, 7]), entry(7, 5, &[7])]),
            Err(InvalidCheckpoint::DuplicateId { id: 7, .. })
        ));
        assert!(matches!(
            check_tree(dir, &[entry(5, 0, &[5]), entry(8, 6, &[8])]),
            Err(InvalidCheckpoint::UnknownParent {
                pid: 8,
                ppid: 6,
                ..
            })
        ));
        let ok = check_tree(dir, &[entry(5, 0, &[5, 6]), entry(8, 5, &[])]).unwrap();
        assert_eq!(
            ok,
            Restorable {
                root: 5,
                processes: 2,
                threads: 3
            }
        );
    }
}
