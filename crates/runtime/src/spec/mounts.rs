//! Mounts: kinds, options as runc parses them, and the rootfs propagation.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{Mount, Spec};

use super::validate::invalid;
use super::SpecError;

/// What kind of file system a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Proc,
    Sysfs,
    Tmpfs,
    Devpts,
    Mqueue,
    /// Type "bind", or any type with a "bind" or "rbind" option.
    Bind,
    /// Type "cgroup" or "cgroup2".
    Cgroup,
}

/// The kind of a spec mount; `None` for a type crabmigrate does not mount.
pub fn mount_kind(m: &Mount) -> Option<MountKind> {
    let typ = m.typ().as_deref().unwrap_or("");
    let options = m.options().as_deref().unwrap_or_default();
    if typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind") {
        return Some(MountKind::Bind);
    }
    Some(match typ {
        "proc" => MountKind::Proc,
        "sysfs" => MountKind::Sysfs,
        "tmpfs" => MountKind::Tmpfs,
        "devpts" => MountKind::Devpts,
        "mqueue" => MountKind::Mqueue,
        "cgroup" | "cgroup2" => MountKind::Cgroup,
        _ => return None,
    })
}

/// A mount's options, parsed as runc's `parseMountOptions` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set (MS_RDONLY, MS_NOSUID, MS_BIND, MS_REC, ...), without
    /// propagation.
    pub flags: MsFlags,
    /// Flags an option explicitly cleared ("rw", "suid", "dev", "exec", ...),
    /// for remounts that must not keep them.
    pub cleared: MsFlags,
    /// The propagation to set after mounting (the last propagation option;
    /// MS_REC for the r-variants); empty when none is given.
    pub propagation: MsFlags,
    /// The other options, comma-separated, for the file system
    /// (`mode=755,size=65536k`).
    pub data: String,
    /// Options that runc handles outside mount(2) (recursive attributes
    /// such as "rro", "idmap", "tmpcopyup") and crabmigrate does not:
    /// [`check_supported`] reports them.
    pub extensions: Vec<String>,
}

impl MountOptions {
    /// Whether the mount is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Whether MS_REC is set (rbind).
    pub fn is_recursive(&self) -> bool {
        self.flags.contains(MsFlags::MS_REC)
    }

    /// `data` for mount(2): `None` when empty.
    pub fn data(&self) -> Option<&str> {
        (!self.data.is_empty()).then_some(self.data.as_str())
    }
}

/// Options handled outside mount(2) that crabmigrate does not support.
const EXTENSION_OPTIONS: &[&str] = &[
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
    "nosymfollow",
    "symfollow",
    "tmpcopyup",
    "idmap",
    "ridmap",
];

/// A flag option: whether it clears the flag rather than setting it.
fn flag_option(option: &str) -> Option<(bool, MsFlags)> {
    Some(match option {
        "acl" => (false, MsFlags::MS_POSIXACL),
        "async" => (true, MsFlags::MS_SYNCHRONOUS),
        "atime" => (true, MsFlags::MS_NOATIME),
        "bind" => (false, MsFlags::MS_BIND),
        "defaults" => (false, MsFlags::empty()),
        "dev" => (true, MsFlags::MS_NODEV),
        "diratime" => (true, MsFlags::MS_NODIRATIME),
        "dirsync" => (false, MsFlags::MS_DIRSYNC),
        "exec" => (true, MsFlags::MS_NOEXEC),
        "iversion" => (false, MsFlags::MS_I_VERSION),
        "lazytime" => (false, MsFlags::MS_LAZYTIME),
        "loud" => (true, MsFlags::MS_SILENT),
        "mand" => (false, MsFlags::MS_MANDLOCK),
        "noacl" => (true, MsFlags::MS_POSIXACL),
        "noatime" => (false, MsFlags::MS_NOATIME),
        "nodev" => (false, MsFlags::MS_NODEV),
        "nodiratime" => (false, MsFlags::MS_NODIRATIME),
        "noexec" => (false, MsFlags::MS_NOEXEC),
        "noiversion" => (true, MsFlags::MS_I_VERSION),
        "nolazytime" => (true, MsFlags::MS_LAZYTIME),
        "nomand" => (true, MsFlags::MS_MANDLOCK),
        "norelatime" => (true, MsFlags::MS_RELATIME),
        "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
        "nosuid" => (false, MsFlags::MS_NOSUID),
        "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
        "relatime" => (false, MsFlags::MS_RELATIME),
        "remount" => (false, MsFlags::MS_REMOUNT),
        "ro" => (false, MsFlags::MS_RDONLY),
        "rw" => (true, MsFlags::MS_RDONLY),
        "silent" => (false, MsFlags::MS_SILENT),
        "strictatime" => (false, MsFlags::MS_STRICTATIME),
        "suid" => (true, MsFlags::MS_NOSUID),
        "sync" => (false, MsFlags::MS_SYNCHRONOUS),
        _ => return None,
    })
}

/// Parses mount options as runc does: flag options set or clear flags (the
/// later one wins), propagation options set the propagation, the rest go to
/// the data string in their order.
pub fn parse_mount_options(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: String::new(),
        extensions: Vec::new(),
    };
    let mut data = Vec::new();
    for option in options {
        let option = option.as_str();
        if let Some((clear, flag)) = flag_option(option) {
            if clear {
                parsed.flags.remove(flag);
                parsed.cleared.insert(flag);
            } else {
                parsed.flags.insert(flag);
                parsed.cleared.remove(flag);
            }
        } else if let Some(flag) = propagation_flag(option) {
            parsed.propagation = flag;
        } else if EXTENSION_OPTIONS.contains(&option) {
            parsed.extensions.push(option.to_owned());
        } else if !option.is_empty() {
            data.push(option);
        }
    }
    parsed.data = data.join(",");
    parsed
}

/// One mount of the spec, ready for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub kind: MountKind,
    /// Where in the container: absolute (a relative destination is taken as
    /// relative to /, as runc does), not yet joined to the rootfs.
    pub destination: PathBuf,
    /// The source as written; for bind mounts, the host path, made
    /// absolute against the bundle directory.
    pub source: Option<PathBuf>,
    /// The type as written ("proc", "tmpfs", "bind", "none", ...).
    pub fs_type: Option<String>,
    /// The parsed options.
    pub options: MountOptions,
}

/// The spec's mounts in order, classified, with parsed options. A mount of
/// a type crabmigrate does not mount is [`SpecError::Unsupported`].
pub fn mounts(spec: &Spec, bundle_dir: &Path) -> Result<Vec<MountEntry>, SpecError> {
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(kind) = mount_kind(m) else {
            unsupported.push(format!(
                "mounts[{i}].type={}",
                m.typ().as_deref().unwrap_or("")
            ));
            continue;
        };
        let destination = Path::new("/").join(m.destination());
        let source = m.source().as_ref().map(|s| {
            if kind == MountKind::Bind {
                bundle_dir.join(s)
            } else {
                s.clone()
            }
        });
        out.push(MountEntry {
            kind,
            destination,
            source,
            fs_type: m.typ().clone(),
            options: parse_mount_options(m.options().as_deref().unwrap_or_default()),
        });
    }
    if unsupported.is_empty() {
        Ok(out)
    } else {
        Err(SpecError::Unsupported {
            fields: unsupported,
        })
    }
}

/// `linux.rootfsPropagation` as flags for mount(2) on "/": one of
/// MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_UNBINDABLE, with MS_REC for the
/// r-variants. Unset or empty gives runc's default, `rslave`.
pub fn rootfs_propagation(spec: &Spec) -> Result<MsFlags, SpecError> {
    let value = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("");
    if value.is_empty() {
        return Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    }
    propagation_flag(value).ok_or_else(|| {
        invalid(
            "linux.rootfsPropagation",
            format!(
                "{value:?} is not a propagation type; use private, rprivate, slave, rslave, \
                 shared, rshared, unbindable or runbindable"
            ),
        )
    })
}

fn propagation_flag(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}
