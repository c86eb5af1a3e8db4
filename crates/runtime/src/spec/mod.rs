//! OCI runtime bundles: loading `config.json`, checking it against what
//! crabmigrate's runtime supports, and turning its parts (namespaces, mounts,
//! hooks, the cgroup path) into forms the runtime can use directly.
//!
//! crabmigrate reads a subset of the OCI runtime spec 1.x. Every field that
//! is present and outside that subset is reported when the bundle is loaded,
//! as an error ([`SpecError::Unsupported`], listing all of them at once):
//! nothing the spec asks for is dropped, least of all its security
//! (capabilities, seccomp, LSM labels, the devices cgroup), which the
//! `security` module and the cgroup code apply. Fields that neither
//! crabmigrate nor the `oci-spec` crate know are warnings: the runtime spec
//! says unknown properties must be ignored, not rejected.
//!
//! Empty values (an empty list, map or string) count as absent.
//!
//! The parts, one file each: `validate.rs` (the spec's own rules, IDs, the
//! cgroup path), `support.rs` (what crabmigrate supports), `sysctl.rs`, `namespaces.rs`,
//! `mounts.rs` (with the rootfs propagation), `hooks.rs`, and `adopt.rs`
//! (a bundle configuration from another engine's checkpointed spec).

mod adopt;
mod hooks;
mod mounts;
mod namespaces;
mod support;
mod sysctl;
mod validate;

pub use adopt::{adopt_engine_spec, AdoptError, Adopted, CONTAINER_FILES};
pub use hooks::{hooks, HookSet};
pub use mounts::{
    mount_kind, mounts, parse_mount_options, rootfs_propagation, MountEntry, MountKind,
    MountOptions,
};
pub use namespaces::{namespaces, NamespaceKind, Namespaces};
pub use support::{check_supported, unsupported_resources};
pub use sysctl::{proc_path as sysctl_path, sysctls};
pub use validate::{cgroup_path, validate, validate_id};

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxIdMapping, LinuxResources, Process, Spec};
use serde_json::Value;

/// The longest container ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 1024;

/// The cgroup directory containers go to when the spec names none.
pub const DEFAULT_CGROUP_PARENT: &str = "/crabmigrate";

/// The namespace types crabmigrate can create or join, as the spec names them.
const SUPPORTED_NAMESPACE_NAMES: &str = "pid, network, mount, ipc, uts, cgroup, user";

/// Why a bundle or a spec is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error("bundle {} does not exist", dir.display())]
    BundleMissing { dir: PathBuf },

    #[error("bundle {} is not a directory", dir.display())]
    BundleNotDir { dir: PathBuf },

    #[error("cannot open bundle {}", dir.display())]
    Bundle {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("bundle {} has no config.json; create one with `runc spec`", dir.display())]
    NoConfig { dir: PathBuf },

    #[error("cannot read {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is not JSON at all; `reason` is serde_json's, without its
    /// position.
    #[error("{} is not valid JSON at line {line} column {column}: {reason}", path.display())]
    InvalidJson {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },

    /// The file is JSON but not an OCI runtime spec (a required field is
    /// missing, a value has the wrong type or an unknown enum value).
    #[error(
        "{} is not a valid OCI runtime spec at line {line} column {column}: {reason}",
        path.display()
    )]
    InvalidSpec {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },

    #[error(
        "linux.namespaces[{index}].type {value:?} is not a namespace type; \
         use one of {SUPPORTED_NAMESPACE_NAMES}"
    )]
    UnknownNamespace { index: usize, value: String },

    #[error("ociVersion {version:?} is not supported; crabmigrate reads specs of version 1.x")]
    UnsupportedVersion { version: String },

    /// A field the runtime needs is absent (`ociVersion`, `root`,
    /// `root.path`, `process`).
    #[error("config.json has no {field}")]
    Missing { field: &'static str },

    #[error("process.args is empty; it must name the program to run")]
    EmptyArgs,

    #[error("process.cwd {} is not absolute", cwd.display())]
    RelativeCwd { cwd: PathBuf },

    #[error("linux.namespaces lists the {kind} namespace more than once")]
    DuplicateNamespace { kind: NamespaceKind },

    #[error("linux.cgroupsPath {path:?} {reason}")]
    BadCgroupsPath { path: String, reason: &'static str },

    /// Any other value that breaks the spec's rules; `field` is its path in
    /// config.json and `reason` completes the sentence.
    #[error("{field} {reason}")]
    Invalid { field: String, reason: String },

    #[error("the rootfs {} does not exist", path.display())]
    RootfsMissing { path: PathBuf },

    #[error("the rootfs {} is not a directory", path.display())]
    RootfsNotDir { path: PathBuf },

    #[error("cannot open the rootfs {}", path.display())]
    Rootfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Every present field crabmigrate does not support, as paths in
    /// config.json (`linux.seccomp`, `linux.namespaces[user]`,
    /// `mounts[3].type=overlay`).
    #[error(
        "config.json uses what crabmigrate does not support: {}; remove these fields",
        fields.join(", ")
    )]
    Unsupported { fields: Vec<String> },

    /// `reason` is a whole sentence about the ID.
    #[error("{reason}")]
    BadId { reason: String },
}

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory, absolute and canonical.
    pub dir: PathBuf,
    /// Its config.json.
    pub spec: Spec,
    /// `root.path` resolved against `dir`, absolute and canonical.
    pub rootfs: PathBuf,
    /// Unknown fields (ignored) and relative mount destinations (taken as
    /// relative to /); the CLI prints these once.
    pub warnings: Vec<String>,
}

impl Bundle {
    /// The path of config.json.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Whether `root.readonly` asks for a read-only rootfs.
    pub fn readonly_rootfs(&self) -> bool {
        self.spec
            .root()
            .as_ref()
            .and_then(|root| root.readonly())
            .unwrap_or(false)
    }

    /// The container process (present: `load` checked it).
    pub fn process(&self) -> Result<&Process, SpecError> {
        process(&self.spec)
    }

    /// See [`namespaces`].
    pub fn namespaces(&self) -> Result<Namespaces, SpecError> {
        namespaces(&self.spec)
    }

    /// See [`mounts`]; bind sources are resolved against the bundle.
    pub fn mounts(&self) -> Result<Vec<MountEntry>, SpecError> {
        mounts(&self.spec, &self.dir)
    }

    /// See [`hooks`].
    pub fn hooks(&self) -> HookSet {
        hooks(&self.spec)
    }

    /// The spec's annotations, sorted.
    pub fn annotations(&self) -> std::collections::BTreeMap<String, String> {
        self.spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    /// See [`cgroup_path`].
    pub fn cgroup_path(&self, id: &str) -> Result<String, SpecError> {
        cgroup_path(&self.spec, id)
    }
}

/// Loads DIR/config.json and checks it: [`validate`], [`check_supported`],
/// fields unknown to the spec (warnings), and the rootfs.
pub fn load(dir: &Path) -> Result<Bundle, SpecError> {
    let canonical = fs::canonicalize(dir).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            SpecError::BundleMissing {
                dir: dir.to_path_buf(),
            }
        } else {
            SpecError::Bundle {
                dir: dir.to_path_buf(),
                source,
            }
        }
    })?;
    if !canonical.is_dir() {
        return Err(SpecError::BundleNotDir { dir: canonical });
    }
    let path = canonical.join("config.json");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            return Err(SpecError::NoConfig { dir: canonical })
        }
        Err(source) => return Err(SpecError::ReadConfig { path, source }),
    };
    let (spec, unknown) = parse_config(&bytes, &path)?;
    validate(&spec)?;
    let mut warnings = check_supported(&spec)?;
    warnings.extend(
        unknown
            .into_iter()
            .map(|field| format!("unknown field {field} is ignored")),
    );
    let rootfs = rootfs_of(&spec, &canonical)?;
    tracing::debug!(
        bundle = %canonical.display(),
        rootfs = %rootfs.display(),
        warnings = warnings.len(),
        "loaded bundle"
    );
    Ok(Bundle {
        dir: canonical,
        spec,
        rootfs,
        warnings,
    })
}

/// Parses config.json's bytes (`path` names it in errors). Returns the spec
/// and the paths of the fields that `oci-spec` dropped because it does not
/// know them.
pub fn parse_config(bytes: &[u8], path: &Path) -> Result<(Spec, Vec<String>), SpecError> {
    // JSON first, for syntax errors with their position.
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
        let (line, column, reason) = split_json_error(&e);
        SpecError::InvalidJson {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        }
    })?;
    // serde would reject an unknown namespace type with the list of enum
    // variants; name the field and the supported types instead.
    check_namespace_names(&raw)?;
    // From the bytes again (not from `raw`), so that errors keep positions.
    let spec: Spec = serde_json::from_slice(bytes).map_err(|e| {
        let (line, column, reason) = split_json_error(&e);
        SpecError::InvalidSpec {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        }
    })?;
    let unknown = unknown_fields(&raw, &spec);
    Ok((spec, unknown))
}

/// serde_json's message ends with " at line L column C"; keep the position
/// as numbers and the message without it.
fn split_json_error(e: &serde_json::Error) -> (usize, usize, String) {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    (e.line(), e.column(), reason)
}

fn check_namespace_names(raw: &Value) -> Result<(), SpecError> {
    const KNOWN: &[&str] = &[
        "pid", "network", "mount", "ipc", "uts", "cgroup", "user", "time",
    ];
    let Some(list) = raw.pointer("/linux/namespaces").and_then(Value::as_array) else {
        return Ok(());
    };
    for (index, ns) in list.iter().enumerate() {
        if let Some(value) = ns.get("type").and_then(Value::as_str) {
            if !KNOWN.contains(&value) {
                return Err(SpecError::UnknownNamespace {
                    index,
                    value: value.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// The fields of `raw` that did not survive deserialisation into `spec`.
fn unknown_fields(raw: &Value, spec: &Spec) -> Vec<String> {
    let Ok(known) = serde_json::to_value(spec) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff_fields(raw, &known, "", &mut out);
    out
}

fn diff_fields(raw: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (raw, known) {
        (Value::Object(raw), Value::Object(known)) => {
            for (key, value) in raw {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(known) => diff_fields(value, known, &here, out),
                    None if is_empty_json(value) => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(raw), Value::Array(known)) => {
            for (i, (value, known)) in raw.iter().zip(known).enumerate() {
                diff_fields(value, known, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_json(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn rootfs_of(spec: &Spec, dir: &Path) -> Result<PathBuf, SpecError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or(SpecError::Missing { field: "root" })?;
    let path = dir.join(root.path());
    let canonical = fs::canonicalize(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            SpecError::RootfsMissing { path: path.clone() }
        } else {
            SpecError::Rootfs {
                path: path.clone(),
                source,
            }
        }
    })?;
    if !canonical.is_dir() {
        return Err(SpecError::RootfsNotDir { path });
    }
    Ok(canonical)
}

/// The container process: `process` must be present.
pub fn process(spec: &Spec) -> Result<&Process, SpecError> {
    spec.process()
        .as_ref()
        .ok_or(SpecError::Missing { field: "process" })
}

/// `linux.resources` as written, for the cgroup code.
pub fn resources(spec: &Spec) -> Option<&LinuxResources> {
    spec.linux().as_ref().and_then(|l| l.resources().as_ref())
}

/// `linux.uidMappings` and `linux.gidMappings` (empty when absent).
pub fn id_mappings(spec: &Spec) -> (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>) {
    let linux = spec.linux().as_ref();
    (
        linux
            .and_then(|l| l.uid_mappings().clone())
            .unwrap_or_default(),
        linux
            .and_then(|l| l.gid_mappings().clone())
            .unwrap_or_default(),
    )
}

/// `linux.devices`: extra device nodes to create in the container's /dev.
pub fn devices(spec: &Spec) -> &[LinuxDevice] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or_default()
}

/// `linux.maskedPaths`.
pub fn masked_paths(spec: &Spec) -> &[String] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or_default()
}

/// `linux.readonlyPaths`.
pub fn readonly_paths(spec: &Spec) -> &[String] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
