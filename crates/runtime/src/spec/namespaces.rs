//! The namespaces to create and to join.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::validate::invalid;
use super::SpecError;

/// A namespace type crabmigrate can create or join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    Pid,
    Mount,
    Uts,
    Ipc,
    Network,
    Cgroup,
    /// A user namespace: created with `linux.uidMappings`/`gidMappings`,
    /// before the others so that it owns them.
    User,
}

impl NamespaceKind {
    /// All of them.
    pub const ALL: [NamespaceKind; 7] = [
        NamespaceKind::Pid,
        NamespaceKind::Mount,
        NamespaceKind::Uts,
        NamespaceKind::Ipc,
        NamespaceKind::Network,
        NamespaceKind::Cgroup,
        NamespaceKind::User,
    ];

    /// The clone(2)/unshare(2)/setns(2) flag.
    pub fn clone_flag(self) -> CloneFlags {
        match self {
            NamespaceKind::Pid => CloneFlags::CLONE_NEWPID,
            NamespaceKind::Mount => CloneFlags::CLONE_NEWNS,
            NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
            NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NamespaceKind::Network => CloneFlags::CLONE_NEWNET,
            NamespaceKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            NamespaceKind::User => CloneFlags::CLONE_NEWUSER,
        }
    }

    /// The name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Network => "net",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::User => "user",
        }
    }

    /// The name in config.json's linux.namespaces.
    pub fn spec_name(self) -> &'static str {
        match self {
            NamespaceKind::Pid => "pid",
            NamespaceKind::Mount => "mount",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Network => "network",
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::User => "user",
        }
    }

    /// The kind for an oci-spec type; `None` for time.
    pub fn from_oci(typ: LinuxNamespaceType) -> Option<Self> {
        match typ {
            LinuxNamespaceType::Pid => Some(NamespaceKind::Pid),
            LinuxNamespaceType::Mount => Some(NamespaceKind::Mount),
            LinuxNamespaceType::Uts => Some(NamespaceKind::Uts),
            LinuxNamespaceType::Ipc => Some(NamespaceKind::Ipc),
            LinuxNamespaceType::Network => Some(NamespaceKind::Network),
            LinuxNamespaceType::Cgroup => Some(NamespaceKind::Cgroup),
            LinuxNamespaceType::User => Some(NamespaceKind::User),
            LinuxNamespaceType::Time => None,
        }
    }
}

impl fmt::Display for NamespaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec_name())
    }
}

/// The spec's name for any oci-spec namespace type (oci-spec's Display
/// gives the /proc names "mnt" and "net").
pub(super) fn oci_namespace_name(typ: LinuxNamespaceType) -> &'static str {
    match NamespaceKind::from_oci(typ) {
        Some(kind) => kind.spec_name(),
        None if typ == LinuxNamespaceType::User => "user",
        None => "time",
    }
}

/// The namespaces to create (no path) and to join (with path), in the
/// spec's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub create: Vec<NamespaceKind>,
    pub join: Vec<(NamespaceKind, PathBuf)>,
}

impl Namespaces {
    /// The flags for clone(2) or unshare(2) of the namespaces to create.
    pub fn clone_flags(&self) -> CloneFlags {
        self.create
            .iter()
            .fold(CloneFlags::empty(), |flags, kind| flags | kind.clone_flag())
    }

    /// Whether the container gets a namespace of this kind, new or joined;
    /// without one it shares the runtime's.
    pub fn contains(&self, kind: NamespaceKind) -> bool {
        self.create.contains(&kind) || self.join.iter().any(|(k, _)| *k == kind)
    }

    /// The path to join for this kind, if it is joined.
    pub fn join_path(&self, kind: NamespaceKind) -> Option<&Path> {
        self.join
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.as_path())
    }
}

/// The namespaces to create and to join. User and time namespaces are
/// [`SpecError::Unsupported`]; a type listed twice or a relative path is an
/// error.
pub fn namespaces(spec: &Spec) -> Result<Namespaces, SpecError> {
    let (ns, unsupported) = collect_namespaces(spec)?;
    if unsupported.is_empty() {
        Ok(ns)
    } else {
        Err(SpecError::Unsupported {
            fields: unsupported,
        })
    }
}

pub(super) fn collect_namespaces(spec: &Spec) -> Result<(Namespaces, Vec<String>), SpecError> {
    let mut ns = Namespaces::default();
    let mut unsupported = Vec::new();
    let mut seen = HashSet::new();
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default();
    for (i, entry) in list.iter().enumerate() {
        let Some(kind) = NamespaceKind::from_oci(entry.typ()) else {
            unsupported.push(format!(
                "linux.namespaces[{}]",
                oci_namespace_name(entry.typ())
            ));
            continue;
        };
        if !seen.insert(kind) {
            return Err(SpecError::DuplicateNamespace { kind });
        }
        match entry.path().as_ref().filter(|p| !p.as_os_str().is_empty()) {
            None => ns.create.push(kind),
            Some(path) if path.is_absolute() => ns.join.push((kind, path.clone())),
            Some(path) => {
                return Err(invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} is not absolute", path.display()),
                ))
            }
        }
    }
    Ok((ns, unsupported))
}
