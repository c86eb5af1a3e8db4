//! Written by a helper.
//! OCI runtime bundles: loading `config.json`, checking it against what
//! crabmigrate's runtime supports, and turning its parts (namespaces, mounts,
//! hooks, the cgroup path) into forms the runtime can use directly.
//!
//! crabmigrate reads a subset of the OCI runtime spec 1.x. Every field that
//! is present and outside that subset is reported when the bundle is loaded,
//! either as an error ([`SpecError::Unsupported`], listing all of them at
//! once) or, for fields that nearly every generated spec carries and that
//! crabmigrate accepts without applying (capabilities, the device cgroup,
//! seccomp, LSM labels), as a warning the CLI prints once. Fields that
//! neither crabmigrate nor the `oci-spec` crate know are warnings too: the
//! runtime spec says unknown properties must be ignored, not rejected.
//!
//! Empty values (an empty list, map or string) count as absent.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::{
    Hook, LinuxDevice, LinuxDeviceType, LinuxNamespaceType, LinuxResources, Mount, Process, Spec,
};
use serde_json::Value;

/// The longest container ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 1024;

/// The cgroup directory containers go to when the spec names none.
pub const DEFAULT_CGROUP_PARENT: &str = "/crabmigrate";

/// The namespace types crabmigrate can create or join, as the spec names them.
const SUPPORTED_NAMESPACE_NAMES: &str = "pid, network, mount, ipc, uts, cgroup";

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
    /// What is accepted but not applied, and unknown fields that are
    /// ignored; the CLI prints these once.
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

// ---------------------------------------------------------------------------
// Validation: what makes a spec wrong, whatever the runtime supports.

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

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
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

/// The container process: `process` must be present.
pub fn process(spec: &Spec) -> Result<&Process, SpecError> {
    spec.process()
        .as_ref()
        .ok_or(SpecError::Missing { field: "process" })
}

// ---------------------------------------------------------------------------
// The supported subset.

/// What crabmigrate supports of the spec. Anything else that is present is
/// reported: fields crabmigrate cannot honour make an
/// [`SpecError::Unsupported`] error listing all of them; fields it accepts
/// without applying them come back as warnings for the CLI to print once.
///
/// | field | verdict |
/// |---|---|
/// | ociVersion 1.x, root, hostname, annotations | supported |
/// | process: args, env, cwd, terminal, user.uid/gid/additionalGids, rlimits, noNewPrivileges, consoleSize | supported |
/// | process.capabilities, apparmorProfile, selinuxLabel, oomScoreAdj | warning: not applied |
/// | process.user.umask/username, commandLine, ioPriority, scheduler, execCPUAffinity | unsupported |
/// | mounts of type proc, sysfs, tmpfs, devpts, mqueue, cgroup, bind (type or option) | supported |
/// | other mount types, mount uid/gidMappings, recursive/idmap/tmpcopyup options | unsupported |
/// | linux.namespaces pid/network/mount/ipc/uts/cgroup (new or joined) | supported |
/// | linux.namespaces user/time, uidMappings, gidMappings | unsupported |
/// | linux.resources memory.limit/swap, cpu.shares/quota/period/cpus/mems, pids.limit | supported |
/// | linux.resources.devices | warning: not enforced |
/// | other linux.resources (blockIO, hugepageLimits, network, rdma, unified, ...) | unsupported |
/// | linux.cgroupsPath, maskedPaths, readonlyPaths, devices, rootfsPropagation | supported |
/// | linux.seccomp | warning: not applied |
/// | linux.sysctl, mountLabel, intelRdt, personality, memoryPolicy, netDevices, timeOffsets | unsupported |
/// | hooks prestart/createRuntime/poststart/poststop | supported |
/// | hooks createContainer/startContainer | unsupported |
/// | domainname, solaris, windows, vm, zos | unsupported |
#[allow(deprecated)] // reads the deprecated top-level uidMappings/gidMappings
pub fn check_supported(spec: &Spec) -> Result<Vec<String>, SpecError> {
    let mut unsupported = Vec::new();
    let mut warnings = Vec::new();

    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        unsupported.push("domainname".to_owned());
    }
    for (field, present) in [
        ("solaris", spec.solaris().is_some()),
        ("windows", spec.windows().is_some()),
        ("vm", spec.vm().is_some()),
        ("zos", spec.zos().is_some()),
        (
            "uidMappings",
            spec.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
        ),
        (
            "gidMappings",
            spec.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
        ),
    ] {
        if present {
            unsupported.push(field.to_owned());
        }
    }

    if let Some(process) = spec.process() {
        check_process(process, &mut unsupported, &mut warnings);
    }

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if mount_kind(m).is_none() {
            let typ = m.typ().as_deref().unwrap_or("");
            unsupported.push(format!("mounts[{i}].type={typ}"));
        }
        if m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty()) {
            unsupported.push(format!("mounts[{i}].uidMappings"));
        }
        if m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty()) {
            unsupported.push(format!("mounts[{i}].gidMappings"));
        }
        let options = parse_mount_options(m.options().as_deref().unwrap_or_default());
        for ext in options.extensions {
            unsupported.push(format!("mounts[{i}].options={ext}"));
        }
        if !m.destination().is_absolute() && !m.destination().as_os_str().is_empty() {
            warnings.push(format!(
                "mounts[{i}].destination {} is not absolute; it is taken as relative to /",
                m.destination().display()
            ));
        }
    }

    if let Some(linux) = spec.linux() {
        let present = |b: bool, field: &str, list: &mut Vec<String>| {
            if b {
                list.push(field.to_owned());
            }
        };
        present(
            linux.net_devices().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.netDevices",
            &mut unsupported,
        );
        present(
            linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.uidMappings",
            &mut unsupported,
        );
        present(
            linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.gidMappings",
            &mut unsupported,
        );
        present(
            linux.sysctl().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.sysctl",
            &mut unsupported,
        );
        if let Some(resources) = linux.resources() {
            check_resources(resources, &mut unsupported, &mut warnings);
        }
        for ns in linux.namespaces().iter().flatten() {
            if NamespaceKind::from_oci(ns.typ()).is_none() {
                unsupported.push(format!(
                    "linux.namespaces[{}]",
                    oci_namespace_name(ns.typ())
                ));
            }
        }
        if linux.seccomp().is_some() {
            warnings.push(
                "linux.seccomp is not applied: the container runs without a seccomp filter"
                    .to_owned(),
            );
        }
        present(
            linux
                .mount_label()
                .as_deref()
                .is_some_and(|l| !l.is_empty()),
            "linux.mountLabel",
            &mut unsupported,
        );
        present(
            linux.intel_rdt().is_some(),
            "linux.intelRdt",
            &mut unsupported,
        );
        present(
            linux.personality().is_some(),
            "linux.personality",
            &mut unsupported,
        );
        present(
            linux.memory_policy().is_some(),
            "linux.memoryPolicy",
            &mut unsupported,
        );
        present(
            linux.time_offsets().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.timeOffsets",
            &mut unsupported,
        );
    }

    if let Some(hooks) = spec.hooks() {
        if hooks
            .create_container()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        {
            unsupported.push("hooks.createContainer".to_owned());
        }
        if hooks
            .start_container()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        {
            unsupported.push("hooks.startContainer".to_owned());
        }
    }

    if unsupported.is_empty() {
        Ok(warnings)
    } else {
        Err(SpecError::Unsupported {
            fields: unsupported,
        })
    }
}

fn check_process(process: &Process, unsupported: &mut Vec<String>, warnings: &mut Vec<String>) {
    if process.capabilities().is_some() {
        warnings.push(
            "process.capabilities is not applied: the process keeps every capability its user has"
                .to_owned(),
        );
    }
    if process
        .apparmor_profile()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        warnings.push("process.apparmorProfile is not applied".to_owned());
    }
    if process
        .selinux_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        warnings.push("process.selinuxLabel is not applied".to_owned());
    }
    if process.oom_score_adj().is_some() {
        warnings.push("process.oomScoreAdj is not applied".to_owned());
    }
    let user = process.user();
    for (field, present) in [
        ("process.user.umask", user.umask().is_some()),
        (
            "process.user.username",
            user.username().as_deref().is_some_and(|u| !u.is_empty()),
        ),
        (
            "process.commandLine",
            process
                .command_line()
                .as_deref()
                .is_some_and(|c| !c.is_empty()),
        ),
        ("process.ioPriority", process.io_priority().is_some()),
        ("process.scheduler", process.scheduler().is_some()),
        (
            "process.execCPUAffinity",
            process.exec_cpu_affinity().is_some(),
        ),
    ] {
        if present {
            unsupported.push(field.to_owned());
        }
    }
}

#[allow(deprecated)] // reads the deprecated memory.kernel
fn check_resources(r: &LinuxResources, unsupported: &mut Vec<String>, warnings: &mut Vec<String>) {
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        warnings.push(
            "linux.resources.devices is not enforced: crabmigrate sets up no device cgroup"
                .to_owned(),
        );
    }
    let mut push = |present: bool, field: &str| {
        if present {
            unsupported.push(format!("linux.resources.{field}"));
        }
    };
    if let Some(m) = r.memory() {
        push(m.reservation().is_some(), "memory.reservation");
        push(m.kernel().is_some(), "memory.kernel");
        push(m.kernel_tcp().is_some(), "memory.kernelTCP");
        push(m.swappiness().is_some(), "memory.swappiness");
        push(m.disable_oom_killer().is_some(), "memory.disableOOMKiller");
        push(m.use_hierarchy().is_some(), "memory.useHierarchy");
        push(
            m.check_before_update().is_some(),
            "memory.checkBeforeUpdate",
        );
    }
    if let Some(c) = r.cpu() {
        push(c.idle().is_some(), "cpu.idle");
        push(c.burst().is_some(), "cpu.burst");
        push(c.realtime_runtime().is_some(), "cpu.realtimeRuntime");
        push(c.realtime_period().is_some(), "cpu.realtimePeriod");
    }
    push(
        r.block_io()
            .as_ref()
            .is_some_and(|b| *b != Default::default()),
        "blockIO",
    );
    push(
        r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        "hugepageLimits",
    );
    push(
        r.network()
            .as_ref()
            .is_some_and(|n| *n != Default::default()),
        "network",
    );
    push(r.rdma().as_ref().is_some_and(|m| !m.is_empty()), "rdma");
    push(
        r.unified().as_ref().is_some_and(|m| !m.is_empty()),
        "unified",
    );
}

/// `linux.resources` as written, for the cgroup code.
pub fn resources(spec: &Spec) -> Option<&LinuxResources> {
    spec.linux().as_ref().and_then(|l| l.resources().as_ref())
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

// ---------------------------------------------------------------------------
// Container IDs and cgroups.

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

// ---------------------------------------------------------------------------
// Namespaces.

/// A namespace type crabmigrate can create or join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    Pid,
    Mount,
    Uts,
    Ipc,
    Network,
    Cgroup,
}

impl NamespaceKind {
    /// All of them.
    pub const ALL: [NamespaceKind; 6] = [
        NamespaceKind::Pid,
        NamespaceKind::Mount,
        NamespaceKind::Uts,
        NamespaceKind::Ipc,
        NamespaceKind::Network,
        NamespaceKind::Cgroup,
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
        }
    }

    /// The kind for an oci-spec type; `None` for user and time.
    pub fn from_oci(typ: LinuxNamespaceType) -> Option<Self> {
        match typ {
            LinuxNamespaceType::Pid => Some(NamespaceKind::Pid),
            LinuxNamespaceType::Mount => Some(NamespaceKind::Mount),
            LinuxNamespaceType::Uts => Some(NamespaceKind::Uts),
            LinuxNamespaceType::Ipc => Some(NamespaceKind::Ipc),
            LinuxNamespaceType::Network => Some(NamespaceKind::Network),
            LinuxNamespaceType::Cgroup => Some(NamespaceKind::Cgroup),
            LinuxNamespaceType::User | LinuxNamespaceType::Time => None,
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
fn oci_namespace_name(typ: LinuxNamespaceType) -> &'static str {
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

fn collect_namespaces(spec: &Spec) -> Result<(Namespaces, Vec<String>), SpecError> {
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

// ---------------------------------------------------------------------------
// Mounts.

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

// ---------------------------------------------------------------------------
// Hooks.

/// The hooks crabmigrate runs, by stage, in the spec's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSet {
    /// `hooks.prestart` (deprecated by the spec; runc runs these with
    /// `createRuntime`, before them).
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

impl HookSet {
    /// Whether there are no hooks at all.
    pub fn is_empty(&self) -> bool {
        self.prestart.is_empty()
            && self.create_runtime.is_empty()
            && self.poststart.is_empty()
            && self.poststop.is_empty()
    }
}

/// The spec's hooks.
pub fn hooks(spec: &Spec) -> HookSet {
    let mut set = HookSet::default();
    for (stage, list) in all_hooks(spec) {
        let slot = match stage {
            "prestart" => &mut set.prestart,
            "createRuntime" => &mut set.create_runtime,
            "poststart" => &mut set.poststart,
            "poststop" => &mut set.poststop,
            _ => continue,
        };
        *slot = list.to_vec();
    }
    set
}

/// Every hook list of the spec with its name in config.json.
#[allow(deprecated)] // prestart is deprecated by the spec, still used
fn all_hooks(spec: &Spec) -> Vec<(&'static str, &[Hook])> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    [
        ("prestart", h.prestart()),
        ("createRuntime", h.create_runtime()),
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
        ("poststart", h.poststart()),
        ("poststop", h.poststop()),
    ]
    .into_iter()
    .map(|(stage, list)| (stage, list.as_deref().unwrap_or_default()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `runc spec` of runc 1.1, with the cgroup namespace of newer versions.
    const RUNC_DEFAULT: &str = r#"{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			"sh"
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "rootfs",
		"readonly": true
	},
	"hostname": "runc",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": ["nosuid", "noexec", "nodev"]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": ["nosuid", "noexec", "nodev", "ro"]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
		}
	],
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{"type": "pid"},
			{"type": "network"},
			{"type": "ipc"},
			{"type": "uts"},
			{"type": "mount"},
			{"type": "cgroup"}
		],
		"maskedPaths": [
			"/proc/acpi",
			"/proc/asound",
			"/proc/kcore",
			"/proc/keys",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}"#;

    fn base() -> Value {
        serde_json::from_str(RUNC_DEFAULT).expect("the literal is JSON")
    }

    /// `value` with the field at JSON pointer `pointer` set (parents are
    /// created as objects).
    fn with(mut value: Value, pointer: &str, field: Value) -> Value {
        let mut at = &mut value;
        for key in pointer.trim_start_matches('/').split('/') {
            at = match at {
                Value::Array(list) => {
                    let index = key.parse::<usize>().expect("array index");
                    if index == list.len() {
                        list.push(Value::Null);
                    }
                    &mut list[index]
                }
                other => other
                    .as_object_mut()
                    .expect("an object on the way")
                    .entry(key.to_owned())
                    .or_insert(Value::Object(Default::default())),
            };
        }
        *at = field;
        value
    }

    fn spec_of(value: &Value) -> Spec {
        serde_json::from_value(value.clone()).expect("a spec")
    }

    /// A bundle directory with `config` as config.json and an empty rootfs.
    fn bundle(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("config.json"), config).expect("write config.json");
        fs::create_dir(dir.path().join("rootfs")).expect("create rootfs");
        dir
    }

    fn unsupported_fields(result: Result<Vec<String>, SpecError>) -> Vec<String> {
        match result {
            Err(SpecError::Unsupported { fields }) => fields,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn runc_default_loads_with_two_warnings() {
        let dir = bundle(RUNC_DEFAULT);
        let b = load(dir.path()).expect("the default spec loads");
        let canonical = fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(b.dir, canonical);
        assert_eq!(b.rootfs, canonical.join("rootfs"));
        assert!(b.readonly_rootfs());
        assert_eq!(b.warnings.len(), 2, "{:?}", b.warnings);
        assert!(b.warnings[0].starts_with("process.capabilities is not applied"));
        assert!(b.warnings[1].starts_with("linux.resources.devices is not enforced"));
        assert_eq!(
            b.process().expect("process").args().as_deref(),
            Some(&["sh".to_owned()][..])
        );
        assert_eq!(masked_paths(&b.spec).len(), 10);
        assert_eq!(readonly_paths(&b.spec).len(), 5);
        assert!(devices(&b.spec).is_empty());
        assert!(resources(&b.spec).is_some());
        assert_eq!(
            rootfs_propagation(&b.spec).expect("default propagation"),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert!(b.hooks().is_empty());
        assert_eq!(
            b.cgroup_path("web-1").expect("cgroup path"),
            "/crabmigrate/web-1"
        );
    }

    #[test]
    fn load_accepts_a_relative_bundle_path_and_canonicalises_it() {
        let dir = bundle(RUNC_DEFAULT);
        let dotted = dir.path().join(".").join("rootfs").join("..");
        let b = load(&dotted).expect("loads");
        assert_eq!(b.dir, fs::canonicalize(dir.path()).expect("canonical"));
        assert_eq!(b.config_path(), b.dir.join("config.json"));
    }

    #[test]
    fn each_unsupported_field_is_reported() {
        let cases: &[(&str, Value, &str)] = &[
            ("/domainname", json!("example.org"), "domainname"),
            ("/solaris", json!({}), "solaris"),
            ("/windows", json!({"layerFolders": []}), "windows"),
            ("/vm", json!({"kernel": {"path": "/k"}}), "vm"),
            ("/process/user/umask", json!(18), "process.user.umask"),
            (
                "/process/user/username",
                json!("root"),
                "process.user.username",
            ),
            ("/process/commandLine", json!("sh"), "process.commandLine"),
            (
                "/process/ioPriority",
                json!({"class": "IOPRIO_CLASS_RT", "priority": 1}),
                "process.ioPriority",
            ),
            (
                "/process/scheduler",
                json!({"policy": "SCHED_OTHER"}),
                "process.scheduler",
            ),
            ("/mounts/0/type", json!("overlay"), "mounts[0].type=overlay"),
            ("/mounts/1/options", json!(["rro"]), "mounts[1].options=rro"),
            (
                "/mounts/1/uidMappings",
                json!([{"hostID": 1000, "containerID": 0, "size": 1}]),
                "mounts[1].uidMappings",
            ),
            (
                "/linux/namespaces/0",
                json!({"type": "user"}),
                "linux.namespaces[user]",
            ),
            (
                "/linux/namespaces/0",
                json!({"type": "time"}),
                "linux.namespaces[time]",
            ),
            (
                "/linux/uidMappings",
                json!([{"hostID": 1000, "containerID": 0, "size": 1}]),
                "linux.uidMappings",
            ),
            (
                "/linux/gidMappings",
                json!([{"hostID": 1000, "containerID": 0, "size": 1}]),
                "linux.gidMappings",
            ),
            (
                "/linux/sysctl",
                json!({"net.ipv4.ip_forward": "1"}),
                "linux.sysctl",
            ),
            (
                "/linux/mountLabel",
                json!("system_u:object_r:container_file_t:s0"),
                "linux.mountLabel",
            ),
            ("/linux/intelRdt", json!({"closID": "x"}), "linux.intelRdt"),
            (
                "/linux/personality",
                json!({"domain": "LINUX32"}),
                "linux.personality",
            ),
            ("/linux/netDevices", json!({"eth1": {}}), "linux.netDevices"),
            (
                "/linux/timeOffsets",
                json!({"monotonic": {"secs": 1}}),
                "linux.timeOffsets",
            ),
            (
                "/linux/resources/blockIO",
                json!({"weight": 10}),
                "linux.resources.blockIO",
            ),
            (
                "/linux/resources/hugepageLimits",
                json!([{"pageSize": "2MB", "limit": 1}]),
                "linux.resources.hugepageLimits",
            ),
            (
                "/linux/resources/network",
                json!({"classID": 1}),
                "linux.resources.network",
            ),
            (
                "/linux/resources/rdma",
                json!({"mlx5_1": {"hcaHandles": 3}}),
                "linux.resources.rdma",
            ),
            (
                "/linux/resources/unified",
                json!({"io.weight": "10"}),
                "linux.resources.unified",
            ),
            (
                "/linux/resources/memory",
                json!({"limit": 1, "reservation": 1}),
                "linux.resources.memory.reservation",
            ),
            (
                "/linux/resources/memory",
                json!({"swappiness": 10}),
                "linux.resources.memory.swappiness",
            ),
            (
                "/linux/resources/cpu",
                json!({"shares": 2, "realtimeRuntime": 5}),
                "linux.resources.cpu.realtimeRuntime",
            ),
            (
                "/hooks/createContainer",
                json!([{"path": "/bin/true"}]),
                "hooks.createContainer",
            ),
            (
                "/hooks/startContainer",
                json!([{"path": "/bin/true"}]),
                "hooks.startContainer",
            ),
        ];
        for (pointer, value, expected) in cases {
            let spec = spec_of(&with(base(), pointer, value.clone()));
            let fields = unsupported_fields(check_supported(&spec));
            assert_eq!(fields, vec![expected.to_string()], "setting {pointer}");
        }
    }

    #[test]
    fn all_unsupported_fields_are_listed_at_once() {
        let v = with(base(), "/linux/sysctl", json!({"kernel.shmmax": "1"}));
        let v = with(v, "/domainname", json!("example.org"));
        let v = with(v, "/linux/namespaces/1", json!({"type": "user"}));
        let dir = bundle(&v.to_string());
        let err = load(dir.path()).expect_err("unsupported");
        assert_eq!(
            err.to_string(),
            "config.json uses what crabmigrate does not support: domainname, \
             linux.sysctl, linux.namespaces[user]; remove these fields"
        );
    }

    #[test]
    fn supported_resources_and_fields_pass() {
        let v = with(
            base(),
            "/linux/resources",
            json!({
                "memory": {"limit": 1048576, "swap": 2097152},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
                "pids": {"limit": 100}
            }),
        );
        let v = with(v, "/linux/cgroupsPath", json!("/mine/c1"));
        let v = with(v, "/linux/rootfsPropagation", json!("rprivate"));
        let v = with(
            v,
            "/linux/devices",
            json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]),
        );
        let v = with(v, "/process/user/additionalGids", json!([5, 6]));
        let v = with(
            v,
            "/process/consoleSize",
            json!({"height": 24, "width": 80}),
        );
        let v = with(v, "/annotations", json!({"org.example.key": "value"}));
        let v = with(
            v,
            "/hooks",
            json!({
                "prestart": [{"path": "/bin/true"}],
                "createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 5}],
                "poststart": [{"path": "/bin/true"}],
                "poststop": [{"path": "/bin/true"}]
            }),
        );
        let v = with(v, "/process/capabilities", Value::Null);
        let spec = spec_of(&v);
        validate(&spec).expect("valid");
        assert_eq!(
            check_supported(&spec).expect("supported"),
            Vec::<String>::new()
        );
        assert_eq!(cgroup_path(&spec, "c1").expect("path"), "/mine/c1");
        assert_eq!(
            rootfs_propagation(&spec).expect("propagation"),
            MsFlags::MS_PRIVATE | MsFlags::MS_REC
        );
        assert_eq!(devices(&spec).len(), 1);
        let h = hooks(&spec);
        assert_eq!(
            (
                h.prestart.len(),
                h.create_runtime.len(),
                h.poststart.len(),
                h.poststop.len()
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(h.create_runtime[0].timeout(), Some(5));
    }

    #[test]
    fn accepted_but_not_applied_fields_are_warnings() {
        let v = with(
            base(),
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        );
        let v = with(v, "/process/apparmorProfile", json!("docker-default"));
        let v = with(
            v,
            "/process/selinuxLabel",
            json!("system_u:system_r:container_t:s0"),
        );
        let v = with(v, "/process/oomScoreAdj", json!(100));
        let v = with(v, "/mounts/0/destination", json!("proc"));
        let warnings = check_supported(&spec_of(&v)).expect("warnings only");
        let starts: Vec<&str> = warnings
            .iter()
            .map(|w| w.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(
            starts,
            [
                "process.capabilities",
                "process.apparmorProfile",
                "process.selinuxLabel",
                "process.oomScoreAdj",
                "mounts[0].destination",
                "linux.resources.devices",
                "linux.seccomp",
            ]
        );
    }

    #[test]
    fn empty_values_count_as_absent() {
        let v = with(base(), "/linux/sysctl", json!({}));
        let v = with(v, "/linux/mountLabel", json!(""));
        let v = with(v, "/linux/resources/blockIO", json!({}));
        let v = with(v, "/linux/resources/devices", json!([]));
        let v = with(v, "/hooks/createContainer", json!([]));
        let v = with(v, "/process/apparmorProfile", json!(""));
        let warnings = check_supported(&spec_of(&v)).expect("supported");
        assert_eq!(warnings.len(), 1, "{warnings:?}"); // capabilities
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let v = with(base(), "/process/fooBar", json!(1));
        let v = with(v, "/mounts/2/extra", json!("x"));
        let v = with(v, "/linux/somethingNew", json!({"a": 1}));
        let v = with(v, "/linux/ignoredNull", Value::Null);
        let v = with(v, "/annotations", json!({"any.key": "kept"}));
        let dir = bundle(&v.to_string());
        let b = load(dir.path()).expect("loads");
        let unknown: Vec<&String> = b
            .warnings
            .iter()
            .filter(|w| w.starts_with("unknown"))
            .collect();
        assert_eq!(
            unknown,
            [
                "unknown field linux.somethingNew is ignored",
                "unknown field mounts[2].extra is ignored",
                "unknown field process.fooBar is ignored",
            ]
        );
    }

    #[test]
    fn missing_config_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(dir.path()).expect_err("no config");
        assert!(matches!(err, SpecError::NoConfig { .. }));
        let canonical = fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(
            err.to_string(),
            format!(
                "bundle {} has no config.json; create one with `runc spec`",
                canonical.display()
            )
        );
    }

    #[test]
    fn missing_bundle_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone");
        let err = load(&gone).expect_err("no bundle");
        assert_eq!(
            err.to_string(),
            format!("bundle {} does not exist", gone.display())
        );
        let file = dir.path().join("file");
        fs::write(&file, "").expect("write");
        assert!(matches!(load(&file), Err(SpecError::BundleNotDir { .. })));
    }

    #[test]
    fn bad_json_reports_line_and_column() {
        let dir = bundle("{\n  \"ociVersion\": \"1.0.2\",\n  \"process\" {}\n}\n");
        let err = load(dir.path()).expect_err("bad JSON");
        match &err {
            SpecError::InvalidJson {
                line,
                column,
                reason,
                ..
            } => {
                assert_eq!((*line, *column), (3, 13));
                assert_eq!(reason, "expected `:`");
            }
            other => panic!("expected InvalidJson, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.ends_with("config.json is not valid JSON at line 3 column 13: expected `:`"),
            "{msg}"
        );

        let dir = bundle("{\"ociVersion\": \"1.0.2\"");
        match load(dir.path()) {
            Err(SpecError::InvalidJson {
                line: 1, reason, ..
            }) => {
                assert_eq!(reason, "EOF while parsing an object");
            }
            other => panic!("expected InvalidJson, got {other:?}"),
        }
    }

    #[test]
    fn json_that_is_not_a_spec() {
        // process.cwd is required.
        let v = with(base(), "/process/cwd", Value::Null);
        let mut text = serde_json::to_string_pretty(&v).expect("to JSON");
        text = text.replace("\"cwd\": null,", "");
        let dir = bundle(&text);
        let err = load(dir.path()).expect_err("no cwd");
        match &err {
            SpecError::InvalidSpec { reason, line, .. } => {
                assert_eq!(reason, "missing field `cwd`");
                assert!(*line > 1);
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
        assert!(err
            .to_string()
            .contains("is not a valid OCI runtime spec at line"));

        // A wrong type.
        let dir = bundle(&with(base(), "/process/args", json!("sh")).to_string());
        match load(dir.path()) {
            Err(SpecError::InvalidSpec { reason, .. }) => {
                assert!(
                    reason.starts_with("invalid type: string \"sh\""),
                    "{reason}"
                );
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        }

        // No process, no root, no version.
        for (pointer, field) in [
            ("/process", "process"),
            ("/root", "root"),
            ("/ociVersion", "ociVersion"),
        ] {
            let mut v = base();
            v.as_object_mut().expect("object").remove(&pointer[1..]);
            let spec = spec_of(&v);
            match validate(&spec) {
                Err(SpecError::Missing { field: f }) => assert_eq!(f, field),
                other => panic!("expected Missing {field}, got {other:?}"),
            }
        }
        let spec = spec_of(&with(base(), "/ociVersion", json!("2.0.0")));
        assert_eq!(
            validate(&spec).expect_err("version 2").to_string(),
            "ociVersion \"2.0.0\" is not supported; crabmigrate reads specs of version 1.x"
        );
    }

    #[test]
    fn unknown_namespace_type_is_named() {
        let v = with(base(), "/linux/namespaces/2", json!({"type": "foo"}));
        let dir = bundle(&v.to_string());
        let err = load(dir.path()).expect_err("foo");
        assert_eq!(
            err.to_string(),
            "linux.namespaces[2].type \"foo\" is not a namespace type; \
             use one of pid, network, mount, ipc, uts, cgroup"
        );
        // The /proc names are not the spec's.
        let v = with(base(), "/linux/namespaces/1", json!({"type": "net"}));
        assert!(matches!(
            parse_config(v.to_string().as_bytes(), Path::new("config.json")),
            Err(SpecError::UnknownNamespace { index: 1, .. })
        ));
    }

    #[test]
    fn rootfs_must_be_a_directory() {
        let dir = bundle(RUNC_DEFAULT);
        fs::remove_dir(dir.path().join("rootfs")).expect("remove rootfs");
        let err = load(dir.path()).expect_err("no rootfs");
        let canonical = fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(
            err.to_string(),
            format!(
                "the rootfs {} does not exist",
                canonical.join("rootfs").display()
            )
        );
        fs::write(dir.path().join("rootfs"), "").expect("write file");
        assert!(matches!(
            load(dir.path()),
            Err(SpecError::RootfsNotDir { .. })
        ));

        // An absolute root.path is used as it is.
        let other = tempfile::tempdir().expect("tempdir");
        let v = with(base(), "/root/path", json!(other.path()));
        fs::write(dir.path().join("config.json"), v.to_string()).expect("write");
        let b = load(dir.path()).expect("absolute rootfs");
        assert_eq!(b.rootfs, fs::canonicalize(other.path()).expect("canonical"));
    }

    #[test]
    fn process_checks() {
        let spec = spec_of(&with(base(), "/process/args", json!([])));
        assert!(matches!(validate(&spec), Err(SpecError::EmptyArgs)));
        let spec = spec_of(&with(base(), "/process/args", json!([""])));
        assert!(matches!(validate(&spec), Err(SpecError::EmptyArgs)));
        let spec = spec_of(&with(base(), "/process/args", Value::Null));
        assert_eq!(
            validate(&spec).expect_err("no args").to_string(),
            "process.args is empty; it must name the program to run"
        );
        let spec = spec_of(&with(base(), "/process/cwd", json!("home")));
        assert_eq!(
            validate(&spec).expect_err("relative cwd").to_string(),
            "process.cwd home is not absolute"
        );
        let spec = spec_of(&with(base(), "/process/env/1", json!("NOEQUALS")));
        assert_eq!(
            validate(&spec).expect_err("bad env").to_string(),
            "process.env[1] \"NOEQUALS\" is not of the form KEY=VALUE"
        );
    }

    #[test]
    fn other_validation() {
        let err = |v: Value| validate(&spec_of(&v)).expect_err("invalid").to_string();
        assert_eq!(
            err(with(base(), "/linux/namespaces/4", json!({"type": "pid"}))),
            "linux.namespaces lists the pid namespace more than once"
        );
        assert_eq!(
            err(with(
                base(),
                "/linux/namespaces/4",
                json!({"type": "cgroup"})
            )),
            "linux.namespaces lists the cgroup namespace more than once"
        );
        assert!(err(with(
            base(),
            "/linux/namespaces",
            json!([{"type": "pid"}, {"type": "uts"}])
        ))
        .starts_with("linux.namespaces has no mount namespace"));
        assert_eq!(
            err(with(
                base(),
                "/linux/namespaces",
                json!([{"type": "mount"}])
            )),
            "hostname needs a UTS namespace; add {\"type\": \"uts\"} to linux.namespaces"
        );
        assert_eq!(
            err(with(
                base(),
                "/linux/namespaces/1/path",
                json!("proc/1/ns/net")
            )),
            "linux.namespaces[1].path proc/1/ns/net is not absolute"
        );
        assert_eq!(
            err(with(base(), "/linux/rootfsPropagation", json!("sideways"))),
            "linux.rootfsPropagation \"sideways\" is not a propagation type; use private, \
             rprivate, slave, rslave, shared, rshared, unbindable or runbindable"
        );
        assert_eq!(
            err(with(base(), "/linux/cgroupsPath", json!("relative/path"))),
            "linux.cgroupsPath \"relative/path\" is not absolute; use an absolute path such as /crabmigrate/ID"
        );
        assert_eq!(
            err(with(
                base(),
                "/hooks/poststop",
                json!([{"path": "bin/true"}])
            )),
            "hooks.poststop[0].path bin/true is not absolute"
        );
        assert_eq!(
            err(with(base(), "/mounts/0", json!({"destination": "/data", "type": "bind"}))),
            "mounts[0] is a bind mount of nothing; set its source to the host path to mount at /data"
        );
        assert_eq!(
            err(with(
                base(),
                "/linux/devices",
                json!([{"path": "/tmp/x", "type": "c"}])
            )),
            "linux.devices[0].path /tmp/x is not a path under /dev"
        );
        assert_eq!(
            err(with(
                base(),
                "/linux/devices",
                json!([{"path": "/dev/x", "type": "a"}])
            )),
            "linux.devices[0].type \"a\" is not a device type; use c, b, u or p"
        );
    }

    #[test]
    fn id_validation() {
        let long_ok = "a".repeat(MAX_ID_LEN);
        let too_long = "a".repeat(MAX_ID_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("web", true),
            ("Web_1.2+3-4", true),
            ("a..b", true),
            ("...", true),
            (&long_ok, true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("/", false),
            ("a b", false),
            ("ä", false),
            ("a:b", false),
            ("a\0b", false),
            ("a\nb", false),
            (&too_long, false),
        ];
        for (id, ok) in cases {
            assert_eq!(validate_id(id).is_ok(), *ok, "{id:?}");
        }
        assert_eq!(
            validate_id("a/b").expect_err("slash").to_string(),
            "the container id \"a/b\" contains '/'; use only letters, digits, '_', '.', '+' and '-'"
        );
        assert_eq!(
            validate_id("").expect_err("empty").to_string(),
            "the container id is empty"
        );
        assert_eq!(
            validate_id(&too_long).expect_err("long").to_string(),
            "the container id is 1025 bytes long; the limit is 1024"
        );
    }

    #[test]
    fn mount_option_parsing() {
        let flags = |opts: &[&str]| {
            let owned: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
            parse_mount_options(&owned)
        };
        use MsFlags as F;
        let cases: &[(&[&str], MsFlags, MsFlags, MsFlags, &str)] = &[
            // options, flags, cleared, propagation, data
            (&[], F::empty(), F::empty(), F::empty(), ""),
            (&["ro"], F::MS_RDONLY, F::empty(), F::empty(), ""),
            (&["ro", "rw"], F::empty(), F::MS_RDONLY, F::empty(), ""),
            (&["rw", "ro"], F::MS_RDONLY, F::empty(), F::empty(), ""),
            (
                &["nosuid", "nodev", "noexec", "relatime"],
                F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC | F::MS_RELATIME,
                F::empty(),
                F::empty(),
                "",
            ),
            (
                &["suid", "dev", "exec", "norelatime"],
                F::empty(),
                F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC | F::MS_RELATIME,
                F::empty(),
                "",
            ),
            (
                &["strictatime"],
                F::MS_STRICTATIME,
                F::empty(),
                F::empty(),
                "",
            ),
            (&["bind"], F::MS_BIND, F::empty(), F::empty(), ""),
            (
                &["rbind"],
                F::MS_BIND | F::MS_REC,
                F::empty(),
                F::empty(),
                "",
            ),
            (
                &["rbind", "rprivate"],
                F::MS_BIND | F::MS_REC,
                F::empty(),
                F::MS_PRIVATE | F::MS_REC,
                "",
            ),
            (&["private"], F::empty(), F::empty(), F::MS_PRIVATE, ""),
            (&["slave"], F::empty(), F::empty(), F::MS_SLAVE, ""),
            (
                &["rslave"],
                F::empty(),
                F::empty(),
                F::MS_SLAVE | F::MS_REC,
                "",
            ),
            (&["shared"], F::empty(), F::empty(), F::MS_SHARED, ""),
            (
                &["rshared", "private"],
                F::empty(),
                F::empty(),
                F::MS_PRIVATE,
                "",
            ),
            (
                &["remount", "ro"],
                F::MS_REMOUNT | F::MS_RDONLY,
                F::empty(),
                F::empty(),
                "",
            ),
            (
                &["sync", "dirsync", "mand"],
                F::MS_SYNCHRONOUS | F::MS_DIRSYNC | F::MS_MANDLOCK,
                F::empty(),
                F::empty(),
                "",
            ),
            (&["defaults"], F::empty(), F::empty(), F::empty(), ""),
            (
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
                F::MS_NOSUID | F::MS_STRICTATIME,
                F::empty(),
                F::empty(),
                "mode=755,size=65536k",
            ),
            (
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
                F::MS_NOSUID | F::MS_NOEXEC,
                F::empty(),
                F::empty(),
                "newinstance,ptmxmode=0666,mode=0620,gid=5",
            ),
        ];
        for (opts, f, cleared, prop, data) in cases {
            let parsed = flags(opts);
            assert_eq!(parsed.flags, *f, "{opts:?} flags");
            assert_eq!(parsed.cleared, *cleared, "{opts:?} cleared");
            assert_eq!(parsed.propagation, *prop, "{opts:?} propagation");
            assert_eq!(parsed.data, *data, "{opts:?} data");
            assert!(parsed.extensions.is_empty());
        }
        let parsed = flags(&["rro", "idmap", "size=1m"]);
        assert_eq!(parsed.extensions, ["rro", "idmap"]);
        assert_eq!(parsed.data(), Some("size=1m"));
        assert_eq!(flags(&["ro"]).data(), None);
        assert!(flags(&["rbind"]).is_bind() && flags(&["rbind"]).is_recursive());
    }

    #[test]
    fn mounts_are_classified() {
        let v = with(
            base(),
            "/mounts/7",
            json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro"]}),
        );
        let v = with(
            v,
            "/mounts/8",
            json!({"destination": "etc/hosts", "type": "none", "source": "/etc/hosts", "options": ["bind"]}),
        );
        let spec = spec_of(&v);
        let list = mounts(&spec, Path::new("/bundle")).expect("mounts");
        let kinds: Vec<MountKind> = list.iter().map(|m| m.kind).collect();
        use MountKind::*;
        assert_eq!(
            kinds,
            [Proc, Tmpfs, Devpts, Tmpfs, Mqueue, Sysfs, Cgroup, Bind, Bind]
        );
        assert_eq!(list[7].source.as_deref(), Some(Path::new("/bundle/data")));
        assert_eq!(
            list[7].options.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(list[8].source.as_deref(), Some(Path::new("/etc/hosts")));
        assert_eq!(list[8].destination, Path::new("/etc/hosts"));
        assert_eq!(list[0].source.as_deref(), Some(Path::new("proc")));
        assert_eq!(
            list[6].options.flags,
            MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_NODEV
                | MsFlags::MS_RELATIME
                | MsFlags::MS_RDONLY
        );

        let spec = spec_of(&with(base(), "/mounts/3/type", json!("nfs")));
        match mounts(&spec, Path::new("/b")) {
            Err(SpecError::Unsupported { fields }) => assert_eq!(fields, ["mounts[3].type=nfs"]),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn namespaces_split_create_and_join() {
        let v = with(base(), "/linux/namespaces/1/path", json!("/proc/42/ns/net"));
        let v = with(v, "/linux/namespaces/2/path", json!("/run/ipcns"));
        let ns = namespaces(&spec_of(&v)).expect("namespaces");
        assert_eq!(
            ns.create,
            [
                NamespaceKind::Pid,
                NamespaceKind::Uts,
                NamespaceKind::Mount,
                NamespaceKind::Cgroup
            ]
        );
        assert_eq!(
            ns.join,
            [
                (NamespaceKind::Network, PathBuf::from("/proc/42/ns/net")),
                (NamespaceKind::Ipc, PathBuf::from("/run/ipcns")),
            ]
        );
        assert_eq!(
            ns.clone_flags(),
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWCGROUP
        );
        assert!(ns.contains(NamespaceKind::Network));
        assert_eq!(
            ns.join_path(NamespaceKind::Ipc),
            Some(Path::new("/run/ipcns"))
        );
        assert_eq!(ns.join_path(NamespaceKind::Pid), None);

        let names: Vec<(&str, &str)> = NamespaceKind::ALL
            .iter()
            .map(|k| (k.spec_name(), k.proc_name()))
            .collect();
        assert_eq!(
            names,
            [
                ("pid", "pid"),
                ("mount", "mnt"),
                ("uts", "uts"),
                ("ipc", "ipc"),
                ("network", "net"),
                ("cgroup", "cgroup")
            ]
        );

        let v = with(base(), "/linux/namespaces/5", json!({"type": "user"}));
        match namespaces(&spec_of(&v)) {
            Err(SpecError::Unsupported { fields }) => {
                assert_eq!(fields, ["linux.namespaces[user]"])
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
        let mut v = base();
        v["linux"]
            .as_object_mut()
            .expect("linux")
            .remove("namespaces");
        assert_eq!(
            namespaces(&spec_of(&v)).expect("none"),
            Namespaces::default()
        );
    }

    #[test]
    fn cgroup_paths() {
        let spec = spec_of(&base());
        assert_eq!(
            cgroup_path(&spec, "c1").expect("default"),
            "/crabmigrate/c1"
        );
        assert!(matches!(
            cgroup_path(&spec, "../x"),
            Err(SpecError::BadId { .. })
        ));
        let with_path = |p: &str| spec_of(&with(base(), "/linux/cgroupsPath", json!(p)));
        assert_eq!(cgroup_path(&with_path("/a/b"), "x").expect("given"), "/a/b");
        assert_eq!(
            cgroup_path(&with_path("//a/./b/"), "x").expect("normalised"),
            "/a/b"
        );
        assert_eq!(
            cgroup_path(&with_path(""), "x").expect("empty is unset"),
            "/crabmigrate/x"
        );
        for (path, reason) in [
            ("a/b", "is not absolute"),
            (
                "system.slice:crabmigrate:x",
                "looks like a systemd slice:prefix:name",
            ),
            ("/a/../b", "contains \"..\""),
            ("/", "is the cgroup root"),
        ] {
            match cgroup_path(&with_path(path), "x") {
                Err(SpecError::BadCgroupsPath { reason: r, .. }) => {
                    assert!(r.starts_with(reason), "{path}: {r}")
                }
                other => panic!("{path}: expected BadCgroupsPath, got {other:?}"),
            }
        }
    }

    #[test]
    fn runc_spec_output_loads() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let runc = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin"].map(PathBuf::from))
            .map(|dir| dir.join("runc"))
            .find(|p| p.is_file());
        let Some(runc) = runc else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("runc is not installed; scripts/setup.sh installs it");
            }
            println!("SKIPPED runc_spec_output_loads: runc is not installed");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new(runc)
            .arg("spec")
            .current_dir(dir.path())
            .status()
            .expect("run runc spec");
        assert!(status.success(), "runc spec: {status}");
        fs::create_dir(dir.path().join("rootfs")).expect("rootfs");
        let b = load(dir.path()).expect("runc's spec loads");
        assert!(
            b.warnings
                .iter()
                .any(|w| w.starts_with("process.capabilities")),
            "{:?}",
            b.warnings
        );
        assert!(
            !b.warnings.iter().any(|w| w.starts_with("unknown field")),
            "{:?}",
            b.warnings
        );
        let ns = b.namespaces().expect("namespaces");
        assert!(ns.contains(NamespaceKind::Mount) && ns.contains(NamespaceKind::Pid));
        assert!(ns.join.is_empty());
        b.mounts().expect("mounts");
    }
}
