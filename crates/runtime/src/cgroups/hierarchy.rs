//! The hierarchies mounted under `/sys/fs/cgroup`.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::{CgroupError, CGROUP_ROOT, UNIFIED};

/// v1 controllers this module recognises in mount options.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its key in [`Cgroup::paths`]: the v1 controllers joined by commas as in
    /// `/proc/PID/cgroup` ("memory", "cpu,cpuacct", "name=systemd"), or
    /// [`UNIFIED`] for the v2 hierarchy.
    pub name: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl Hierarchy {
    /// A v1 hierarchy with these controllers (or "name=X").
    pub fn v1(name: impl Into<String>, mount_point: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            mount_point: mount_point.into(),
        }
    }

    /// The v2 hierarchy.
    pub fn unified(mount_point: impl Into<PathBuf>) -> Self {
        Self::v1(UNIFIED, mount_point)
    }

    /// Whether this is the v2 hierarchy.
    pub fn is_unified(&self) -> bool {
        self.name == UNIFIED
    }

    /// Whether `controller` is bound to this v1 hierarchy.
    pub(super) fn has_v1_controller(&self, controller: &str) -> bool {
        !self.is_unified() && has_controller(&self.name, controller)
    }
}

pub(super) fn has_controller(key: &str, controller: &str) -> bool {
    key.split(',').any(|c| c == controller)
}

/// The hierarchies mounted under `/sys/fs/cgroup`, from `/proc/self/mountinfo`.
pub fn hierarchies() -> Result<Vec<Hierarchy>, CgroupError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Read {
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
    Ok(hierarchies_from(&mountinfo, Path::new(CGROUP_ROOT)))
}

/// Parses mountinfo: every cgroup or cgroup2 mount at or under `root`, one
/// per hierarchy (the first mount wins).
pub(super) fn hierarchies_from(mountinfo: &str, root: &Path) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        // Fields: id parent dev root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let (Some(mount_root), Some(mount_point)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let super_options = right.nth(1).unwrap_or("");
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        if !mount_point.starts_with(root) {
            continue;
        }
        let name = match fstype {
            "cgroup2" => UNIFIED.to_owned(),
            "cgroup" => {
                let mut parts: Vec<&str> = super_options
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .collect();
                parts.extend(super_options.split(',').filter(|o| o.starts_with("name=")));
                if parts.is_empty() {
                    continue;
                }
                parts.join(",")
            }
            _ => continue,
        };
        if *mount_root != "/" {
            warn!(hierarchy = %name, mount_root, "cgroup hierarchy is mounted from a subdirectory; paths are relative to it");
        }
        if found.iter().any(|h| h.name == name) {
            continue;
        }
        found.push(Hierarchy { name, mount_point });
    }
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
