//! A `cgroup` mount in the spec, as runc makes it on a host without a
//! cgroup namespace for the container: a tmpfs at the destination holding,
//! for every hierarchy, a bind mount of the container's own cgroup
//! directory under the hierarchy's name (`/sys/fs/cgroup/memory` is the
//! host's `/sys/fs/cgroup/memory/<cgroupsPath>`), plus the host's symbolic
//! links between hierarchy names. On a pure v2 host the container's v2
//! directory is bound at the destination itself.
//!
//! Checkpoint declares each bind an external mount; restore maps it to the
//! cgroup directory of the restored container.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::rootfs::{bind, do_mount, io, secure_join, MountEntry, MountKind, RootfsError};
use crate::cgroups::{Cgroup, CGROUP_ROOT};

/// (path in the container, host directory) for every hierarchy of
/// `cgroup`, under the mount's destination `dest`.
pub(crate) fn binds(cgroup: &Cgroup, dest: &Path) -> Vec<(PathBuf, PathBuf)> {
    let suffix = cgroup.path().trim_start_matches('/');
    let mut out = Vec::new();
    for dir in cgroup.paths().values() {
        let Some(mount_point) = strip_suffix(dir, suffix) else {
            continue;
        };
        match mount_point.strip_prefix(CGROUP_ROOT) {
            Ok(name) if name.as_os_str().is_empty() => out.push((dest.to_path_buf(), dir.clone())),
            Ok(name) => out.push((dest.join(name), dir.clone())),
            Err(_) => {}
        }
    }
    out.sort();
    out
}

/// `dir` without its trailing components `suffix` ("crabmigrate/ID").
fn strip_suffix(dir: &Path, suffix: &str) -> Option<PathBuf> {
    let mut out = dir.to_path_buf();
    for component in suffix.split('/').filter(|c| !c.is_empty()).rev() {
        if out.file_name()? != component {
            return None;
        }
        out.pop();
    }
    Some(out)
}

/// Mounts `m` (a `cgroup` mount) under `rootfs`. Without a cgroup the
/// destination gets an empty read-only tmpfs.
pub(crate) fn mount(
    rootfs: &Path,
    m: &MountEntry,
    cgroup: Option<&Cgroup>,
) -> Result<(), RootfsError> {
    let target = secure_join(rootfs, &m.destination)?;
    fs::create_dir_all(&target).map_err(io("create", &target))?;
    // Only the flags that make sense on a cgroup view.
    let keep = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let flags = m.options.flags & keep;
    let binds = cgroup.map(|c| binds(c, &m.destination)).unwrap_or_default();
    if let [(only, dir)] = binds.as_slice() {
        if *only == m.destination {
            return bind(MountKind::Cgroup, dir, &target, flags);
        }
    }
    do_mount(
        MountKind::Cgroup,
        Some(Path::new("tmpfs")),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    for (inside, dir) in &binds {
        let point = secure_join(rootfs, inside)?;
        fs::create_dir_all(&point).map_err(io("create", &point))?;
        bind(MountKind::Cgroup, dir, &point, flags)?;
    }
    // The host's links between names ("cpu" -> "cpu,cpuacct").
    if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
        for entry in entries.filter_map(Result::ok) {
            let Ok(link) = fs::read_link(entry.path()) else {
                continue;
            };
            let at = target.join(entry.file_name());
            if !at.exists() {
                std::os::unix::fs::symlink(&link, &at).map_err(io("link", &at))?;
            }
        }
    }
    do_mount(
        MountKind::Cgroup,
        None,
        &target,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | flags,
        Some("mode=755"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::host::CgroupLayout;

    #[test]
    fn binds_name_each_hierarchy() {
        let paths: BTreeMap<String, PathBuf> = [
            ("memory", "/sys/fs/cgroup/memory/crabmigrate/c1"),
            ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/crabmigrate/c1"),
            ("name=systemd", "/sys/fs/cgroup/systemd/crabmigrate/c1"),
            ("unified", "/sys/fs/cgroup/unified/crabmigrate/c1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
        .collect();
        let cg = Cgroup::from_paths(CgroupLayout::Hybrid, "/crabmigrate/c1", paths);
        let got = binds(&cg, Path::new("/sys/fs/cgroup"));
        let inside: Vec<&Path> = got.iter().map(|(i, _)| i.as_path()).collect();
        assert_eq!(
            inside,
            [
                Path::new("/sys/fs/cgroup/cpu,cpuacct"),
                Path::new("/sys/fs/cgroup/memory"),
                Path::new("/sys/fs/cgroup/systemd"),
                Path::new("/sys/fs/cgroup/unified"),
            ]
        );
        let v2: BTreeMap<String, PathBuf> = [(
            "unified".to_owned(),
            PathBuf::from("/sys/fs/cgroup/crabmigrate/c1"),
        )]
        .into();
        let cg = Cgroup::from_paths(CgroupLayout::V2, "/crabmigrate/c1", v2);
        assert_eq!(
            binds(&cg, Path::new("/sys/fs/cgroup")),
            [(
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/sys/fs/cgroup/crabmigrate/c1")
            )]
        );
    }
}
