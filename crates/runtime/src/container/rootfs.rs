//! The container's file system view: mounts under the rootfs, default
//! devices, pivot_root, masked and read-only paths. Runs in the init process,
//! inside the container's mount namespace, before the user process starts.

use std::collections::VecDeque;
use std::fs;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub use crate::spec::{MountEntry, MountKind};

/// Host device nodes bind-mounted into every container's /dev.
pub const DEFAULT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// Why preparing the rootfs failed (reported to `create`).
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount {kind:?} on {path}")]
    Mount {
        kind: MountKind,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mount destination {0} leaves the rootfs")]
    Escape(PathBuf),
    #[error("cannot pivot_root into {path}")]
    Pivot {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// `root` joined with the container path `path`, never leaving `root`:
/// `..` components are resolved lexically and symlinks inside the rootfs are
/// followed relative to it.
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf, RootfsError> {
    fn parts(p: &Path) -> impl Iterator<Item = std::ffi::OsString> + '_ {
        p.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
    }
    let mut resolved = PathBuf::from("/");
    let mut queue: VecDeque<std::ffi::OsString> = parts(path).collect();
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(RootfsError::Escape(path.to_path_buf()));
                }
                let target = fs::read_link(&host).map_err(io("read link", &host))?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for part in parts(&target).collect::<Vec<_>>().into_iter().rev() {
                    queue.push_front(part);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved.strip_prefix("/").unwrap_or(&resolved)))
}

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { what, path, source }
}

pub(super) fn do_mount(
    kind: MountKind,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    mount(
        source,
        target,
        fstype,
        flags,
        data.filter(|d| !d.is_empty()),
    )
    .map_err(|source| RootfsError::Mount {
        kind,
        path: target.to_path_buf(),
        source,
    })
}

/// Makes the mount tree private (so nothing leaks to the host) and binds the
/// rootfs onto itself, so that it is a mount point pivot_root accepts.
pub fn prepare_root(rootfs: &Path, propagation: MsFlags) -> Result<(), RootfsError> {
    do_mount(
        MountKind::Bind,
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | propagation,
        None,
    )?;
    do_mount(
        MountKind::Bind,
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

/// Performs one mount of the spec under `rootfs`, creating its mount point.
pub fn mount_one(rootfs: &Path, m: &MountEntry, new_netns: bool) -> Result<(), RootfsError> {
    let target = secure_join(rootfs, &m.destination)?;
    let source_is_file = m.kind == MountKind::Bind
        && m.source
            .as_deref()
            .and_then(|s| fs::metadata(s).ok())
            .is_some_and(|meta| !meta.is_dir());
    if source_is_file {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        if !target.exists() {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644)
                .open(&target)
                .map_err(io("create", &target))?;
        }
    } else {
        fs::create_dir_all(&target).map_err(io("create", &target))?;
    }
    let data = Some(m.options.data.as_str());
    let flags = m.options.flags;
    // A file system of its own, mounted by type (the source is its name).
    let fresh = |fstype: &str| {
        do_mount(
            m.kind,
            Some(Path::new(fstype)),
            &target,
            Some(fstype),
            flags,
            data,
        )
    };
    match m.kind {
        MountKind::Proc => fresh("proc")?,
        MountKind::Sysfs if new_netns => fresh("sysfs")?,
        // Without its own network namespace a container may not mount
        // sysfs; it gets the host's, read-only (as runc does).
        MountKind::Sysfs => bind(
            m.kind,
            Path::new("/sys"),
            &target,
            flags | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        )?,
        MountKind::Tmpfs => fresh("tmpfs")?,
        MountKind::Devpts => fresh("devpts")?,
        MountKind::Mqueue => fresh("mqueue")?,
        MountKind::Cgroup => do_mount(
            m.kind,
            Some(Path::new("tmpfs")),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755,size=4k"),
        )?,
        MountKind::Bind => {
            let source = m.source.as_deref().unwrap_or(Path::new("/"));
            bind(m.kind, source, &target, flags)?;
        }
    }
    if !m.options.propagation.is_empty() {
        do_mount(m.kind, None, &target, None, m.options.propagation, None)?;
    }
    Ok(())
}

/// Bind mount, then a remount for the flags a bind ignores (ro, nosuid...).
pub(super) fn bind(
    kind: MountKind,
    source: &Path,
    target: &Path,
    flags: MsFlags,
) -> Result<(), RootfsError> {
    let rec = flags & MsFlags::MS_REC;
    do_mount(
        kind,
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | rec,
        None,
    )?;
    let extra = flags & !(MsFlags::MS_REC | MsFlags::MS_BIND);
    if !extra.is_empty() {
        do_mount(
            kind,
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
            None,
        )?;
    }
    Ok(())
}

/// Default device nodes (bind mounts of the host's) and the usual links.
pub fn populate_dev(rootfs: &Path, extra: &[PathBuf]) -> Result<Vec<PathBuf>, RootfsError> {
    let dev = rootfs.join("dev");
    let mut bound = Vec::new();
    for node in DEFAULT_DEVICES
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().cloned())
    {
        let target = secure_join(rootfs, &node)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        if !target.exists() {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o666)
                .open(&target)
                .map_err(io("create", &target))?;
        }
        bind(MountKind::Bind, &node, &target, MsFlags::empty())?;
        bound.push(node);
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        if fs::symlink_metadata(&path).is_err() {
            symlink(to, &path).map_err(io("create", &path))?;
        }
    }
    Ok(bound)
}

/// Switches the root to `rootfs` and detaches the old root.
pub fn pivot_root(rootfs: &Path) -> Result<(), RootfsError> {
    let pivot = |source| RootfsError::Pivot {
        path: rootfs.to_path_buf(),
        source,
    };
    nix::unistd::chdir(rootfs).map_err(pivot)?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // "." afterwards removes it without needing a directory for it.
    nix::unistd::pivot_root(".", ".").map_err(pivot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(pivot)?;
    nix::unistd::chdir("/").map_err(pivot)
}

/// Switches the root to `rootfs` without pivot_root (runc's `--no-pivot`,
/// for a rootfs on a ramdisk, where pivot_root fails): moves the mount
/// onto / and chroots into it. The old root stays reachable from outside
/// the chroot, which is why pivot_root is the default.
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    let fail = |source| RootfsError::Pivot {
        path: rootfs.to_path_buf(),
        source,
    };
    nix::unistd::chdir(rootfs).map_err(fail)?;
    mount(
        Some(rootfs),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(fail)?;
    nix::unistd::chroot(".").map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

/// Hides `path` (inside the container, after pivot_root): /dev/null over a
/// file, an empty read-only tmpfs over a directory. Missing paths are fine.
pub fn mask(path: &Path) -> Result<(), RootfsError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => do_mount(
            MountKind::Tmpfs,
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        ),
        Ok(_) => bind(
            MountKind::Bind,
            Path::new("/dev/null"),
            path,
            MsFlags::empty(),
        ),
        Err(_) => Ok(()),
    }
}

/// Makes `path` read-only (inside the container). Missing paths are fine.
pub fn make_readonly(path: &Path) -> Result<(), RootfsError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    bind(
        MountKind::Bind,
        path,
        path,
        MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )
}

/// Makes the whole root read-only (`root.readonly`).
pub fn readonly_root() -> Result<(), RootfsError> {
    do_mount(
        MountKind::Bind,
        None,
        Path::new("/"),
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("a/abs")).unwrap();
        symlink("../../..", root.join("a/b/up")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/a/b")).unwrap(),
            root.join("a/b")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/b/up/y")).unwrap(),
            root.join("y")
        );
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, Path::new("/loop")).is_err());
    }
}
