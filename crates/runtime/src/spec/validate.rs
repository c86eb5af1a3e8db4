//! The spec's own rules, whatever the runtime supports; container IDs and
//! the cgroup path.

use std::path::{Component, Path};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};

use super::hooks::all_hooks;
use super::mounts::{mount_kind, rootfs_propagation, MountKind};
use super::namespaces::{collect_namespaces, NamespaceKind};
use super::{process, SpecError, DEFAULT_CGROUP_PARENT, MAX_ID_LEN};

/// Checks the rules of the spec that do not depend on what crabmigrate
/// supports: a 1.x version, root and process present, non-empty args,
/// absolute cwd, `KEY=VALUE` env, namespaces (no duplicates, absolute paths,
/// a mount namespace, a UTS namespace when a hostname is set), the cgroups
/// path, rootfs propagation, mounts, devices and hook paths.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    let version = spec.version();
    if version.is_empty() {
        return Err(SpecError::Missing {
            field: "ociVersion",
        });
    }
    if !version.starts_with("1.") {
        return Err(SpecError::UnsupportedVersion {
            version: version.clone(),
        });
    }

    let root = spec
        .root()
        .as_ref()
        .ok_or(SpecError::Missing { field: "root" })?;
    if root.path().as_os_str().is_empty() {
        return Err(SpecError::Missing { field: "root.path" });
    }

    let process = process(spec)?;
    match process.args() {
        Some(args) if args.first().is_some_and(|a| !a.is_empty()) => {}
        _ => return Err(SpecError::EmptyArgs),
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::RelativeCwd {
            cwd: process.cwd().clone(),
        });
    }
    for (i, kv) in process.env().iter().flatten().enumerate() {
        if !kv.contains('=') || kv.starts_with('=') {
            return Err(invalid(
                format!("process.env[{i}]"),
                format!("{kv:?} is not of the form KEY=VALUE"),
            ));
        }
    }

    let (ns, _) = collect_namespaces(spec)?;
    check_id_mappings(spec, ns.create.contains(&NamespaceKind::User))?;
    if !ns.contains(NamespaceKind::Mount) {
        return Err(invalid(
            "linux.namespaces",
            "has no mount namespace, which crabmigrate needs to set up the rootfs; add {\"type\": \"mount\"}",
        ));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) && !ns.contains(NamespaceKind::Uts)
    {
        return Err(invalid(
            "hostname",
            "needs a UTS namespace; add {\"type\": \"uts\"} to linux.namespaces",
        ));
    }

    if let Some(linux) = spec.linux() {
        if let Some(path) = linux.cgroups_path() {
            check_cgroups_path(&path.to_string_lossy())?;
        }
        for (i, dev) in linux.devices().iter().flatten().enumerate() {
            check_device(i, dev)?;
        }
    }
    rootfs_propagation(spec)?;
    super::sysctl::sysctls(spec)?;

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if m.destination().as_os_str().is_empty() {
            return Err(invalid(format!("mounts[{i}].destination"), "is empty"));
        }
        if mount_kind(m) == Some(MountKind::Bind)
            && m.source().as_ref().is_none_or(|s| s.as_os_str().is_empty())
        {
            return Err(invalid(
                format!("mounts[{i}]"),
                format!(
                    "is a bind mount of nothing; set its source to the host path to mount at {}",
                    m.destination().display()
                ),
            ));
        }
    }

    for (stage, list) in all_hooks(spec) {
        for (i, hook) in list.iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(invalid(
                    format!("hooks.{stage}[{i}].path"),
                    format!("{} is not absolute", hook.path().display()),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_device(i: usize, dev: &LinuxDevice) -> Result<(), SpecError> {
    let path = dev.path();
    if !path.starts_with("/dev") || path == Path::new("/dev") {
        return Err(invalid(
            format!("linux.devices[{i}].path"),
            format!("{} is not a path under /dev", path.display()),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            format!("linux.devices[{i}].path"),
            format!("{} contains \"..\"", path.display()),
        ));
    }
    if dev.typ() == LinuxDeviceType::A {
        return Err(invalid(
            format!("linux.devices[{i}].type"),
            "\"a\" is not a device type; use c, b, u or p",
        ));
    }
    Ok(())
}
/// Validates a container ID: non-empty, at most 1024 bytes, only
/// `[A-Za-z0-9_.+-]`, not "." or "..".
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let bad = |reason: String| Err(SpecError::BadId { reason });
    if id.is_empty() {
        return bad("the container id is empty".to_owned());
    }
    if id.len() > MAX_ID_LEN {
        return bad(format!(
            "the container id is {} bytes long; the limit is {MAX_ID_LEN}",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return bad(format!(
            "the container id {id:?} is not allowed; it names a directory"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')))
    {
        return bad(format!(
            "the container id {id:?} contains {c:?}; use only letters, digits, '_', '.', '+' and '-'"
        ));
    }
    Ok(())
}

/// The container's cgroup path, relative to the cgroup root and starting
/// with '/': `linux.cgroupsPath` (absolute, without ".."; "." and repeated
/// slashes are dropped) or `/crabmigrate/<id>`.
pub fn cgroup_path(spec: &Spec, id: &str) -> Result<String, SpecError> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .filter(|p| !p.as_os_str().is_empty());
    match given {
        Some(path) => check_cgroups_path(&path.to_string_lossy()),
        None => {
            validate_id(id)?;
            Ok(format!("{DEFAULT_CGROUP_PARENT}/{id}"))
        }
    }
}

fn check_cgroups_path(path: &str) -> Result<String, SpecError> {
    let bad = |reason| {
        Err(SpecError::BadCgroupsPath {
            path: path.to_owned(),
            reason,
        })
    };
    if !path.starts_with('/') {
        return if path.split(':').count() == 3 {
            bad("looks like a systemd slice:prefix:name; crabmigrate manages cgroupfs paths, use an absolute path such as /crabmigrate/ID")
        } else {
            bad("is not absolute; use an absolute path such as /crabmigrate/ID")
        };
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return bad("contains \"..\""),
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return bad("is the cgroup root; a container needs a cgroup of its own");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A new user namespace needs both id mappings; mappings need a new user
/// namespace. Each mapping must have a size and stay within 32 bits.
fn check_id_mappings(spec: &Spec, new_user_ns: bool) -> Result<(), SpecError> {
    let (uids, gids) = super::id_mappings(spec);
    match (new_user_ns, uids.is_empty() || gids.is_empty()) {
        (true, true) => {
            return Err(invalid(
                "linux.namespaces",
                "creates a user namespace without linux.uidMappings and linux.gidMappings; \
                 map the container's ids to host ids, e.g. [{\"containerID\": 0, \"hostID\": 100000, \"size\": 65536}]",
            ))
        }
        (false, _) if !uids.is_empty() || !gids.is_empty() => {
            return Err(invalid(
                "linux.uidMappings",
                "needs a new user namespace; add {\"type\": \"user\"} to linux.namespaces",
            ))
        }
        _ => {}
    }
    for (field, list) in [("linux.uidMappings", &uids), ("linux.gidMappings", &gids)] {
        for (i, m) in list.iter().enumerate() {
            let end = u64::from(m.container_id()).checked_add(u64::from(m.size()));
            let host_end = u64::from(m.host_id()).checked_add(u64::from(m.size()));
            if m.size() == 0
                || end.is_none_or(|e| e > 1 << 32)
                || host_end.is_none_or(|e| e > 1 << 32)
            {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    "is empty or runs past the 32-bit id range",
                ));
            }
        }
    }
    Ok(())
}
