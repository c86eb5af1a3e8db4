//! A container's bundle on the move: its config.json goes in the preflight,
//! its rootfs as a tar taken while the container is frozen (unless both
//! hosts see the same rootfs, `--shared-rootfs`).

use std::path::{Path, PathBuf};

use crabmigrate_runtime::spec;

/// The name of the rootfs archive among the transferred images; CRIU
/// ignores files it does not know in an images directory.
pub const ROOTFS_TAR: &str = "crabmigrate-rootfs.tar";
/// The bundle's config among the preflight files.
pub const CONFIG: &str = "config.json";

/// Why a bundle cannot be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle of container {0}")]
    Spec(String, #[source] spec::SpecError),
    #[error("config.json of {0} is not valid JSON")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    Unsuitable(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |e| BundleError::Io(what, path, e)
}

/// Writes the config.json to send into `out`: `root.path` becomes
/// `rootfs` (the tar is unpacked there) or, with a shared rootfs, the
/// rootfs's absolute path on this host. Returns the rootfs to archive.
pub fn export_config(bundle_dir: &Path, shared: bool, out: &Path) -> Result<PathBuf, BundleError> {
    let bundle = spec::load(bundle_dir)
        .map_err(|e| BundleError::Spec(bundle_dir.display().to_string(), e))?;
    let config = bundle.config_path();
    let text = std::fs::read(&config).map_err(io("read", &config))?;
    let mut json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| BundleError::Json(config.clone(), e))?;
    let root = if shared {
        bundle.rootfs.to_string_lossy().into_owned()
    } else {
        "rootfs".to_owned()
    };
    json["root"]["path"] = serde_json::Value::String(root);
    let bytes = serde_json::to_vec_pretty(&json).map_err(|e| BundleError::Json(config, e))?;
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    let path = out.join(CONFIG);
    std::fs::write(&path, bytes).map_err(io("write", &path))?;
    Ok(bundle.rootfs)
}

/// Archives `rootfs` into `tar`: files, links and special files as they
/// are, symbolic links not followed. Blocking.
pub fn archive_rootfs(rootfs: &Path, tar: &Path) -> Result<u64, BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    // 0600: the archive holds the container's files, readable by no one
    // else on this host.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tar)
        .map_err(io("create", tar))?;
    let mut builder = ::tar::Builder::new(std::io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.mode(::tar::HeaderMode::Complete);
    builder
        .append_dir_all(".", rootfs)
        .map_err(io("archive", rootfs))?;
    builder
        .into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io("write", tar))?;
    Ok(std::fs::metadata(tar).map(|m| m.len()).unwrap_or(0))
}

/// Unpacks a received rootfs archive into `rootfs` (which must not exist
/// yet): owners, modes and times as archived; nothing is written outside
/// `rootfs` (the tar crate refuses `..` and links leading out). Blocking.
pub fn unpack_rootfs(tar: &Path, rootfs: &Path) -> Result<(), BundleError> {
    let file = std::fs::File::open(tar).map_err(io("open", tar))?;
    std::fs::create_dir_all(rootfs).map_err(io("create", rootfs))?;
    let mut archive = ::tar::Archive::new(std::io::BufReader::new(file));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    archive.unpack(rootfs).map_err(io("unpack into", rootfs))?;
    let _ = std::fs::remove_file(tar);
    Ok(())
}

/// Checks a received bundle before anything is frozen: the config loads,
/// every bind-mount source exists here, and the container's cgroup on this
/// host is free.
pub fn check_received(bundle_dir: &Path, id: &str) -> Result<(), BundleError> {
    let bundle = spec::load(bundle_dir).map_err(|e| BundleError::Spec(id.to_owned(), e))?;
    let mounts = bundle
        .mounts()
        .map_err(|e| BundleError::Spec(id.to_owned(), e))?;
    for m in mounts
        .iter()
        .filter(|m| m.kind == crabmigrate_runtime::container::rootfs::MountKind::Bind)
    {
        if let Some(source) = &m.source {
            if !source.exists() {
                return Err(BundleError::Unsuitable(format!(
                    "the bind mount source {} of {} does not exist on this host; create it (or share it) before migrating",
                    source.display(),
                    m.destination.display()
                )));
            }
        }
    }
    let cgroup = bundle
        .cgroup_path(id)
        .map_err(|e| BundleError::Spec(id.to_owned(), e))?;
    match crabmigrate_runtime::cgroups::members(&cgroup) {
        Ok(pids) if !pids.is_empty() => Err(BundleError::Unsuitable(format!(
            "cgroup {cgroup} already holds processes {pids:?} on this host (is the source on this same machine? migrate with --target-id NEW)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rootfs_survives_the_round_trip_with_links_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        let root = src.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        std::os::unix::fs::symlink("tool", root.join("bin/alias")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
        let tar = src.path().join(ROOTFS_TAR);
        archive_rootfs(&root, &tar).unwrap();
        assert_eq!(
            std::fs::metadata(&tar).unwrap().permissions().mode() & 0o777,
            0o600,
            "the archive is private"
        );

        let dst = tempfile::tempdir().unwrap();
        let out = dst.path().join("rootfs");
        unpack_rootfs(&tar, &out).unwrap();
        assert_eq!(std::fs::read(out.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        let mode = std::fs::metadata(out.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o751);
        assert_eq!(
            std::fs::read_link(out.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        // An absolute link is kept as a link, never followed while packing.
        assert_eq!(
            std::fs::read_link(out.join("outside")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(!tar.exists(), "the archive is removed once unpacked");
    }
}
