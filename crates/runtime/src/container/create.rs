//! `create`: a container from a bundle, its init waiting for `start`.

use std::ffi::CString;
use std::io::{BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::hooks::{self, HookState};
use super::init::{self, InitConfig, Message};
use super::rootfs::MountKind;
use crate::cgroups::{default_allowed_devices, Cgroup, DeviceRule, Resources};
use crate::network;
use crate::security::{ProcessSecurity, SecurityError};
use crate::spec::{self, Bundle};
use crate::state::{State, StateRoot, Status};

/// What `create` needs besides the bundle.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Write the init's pid here.
    pub pid_file: Option<PathBuf>,
    /// With `process.terminal`, send the pty master to this unix socket.
    pub console_socket: Option<PathBuf>,
    /// Attach the container to this CNI network (`--network`).
    pub network: Option<network::NetworkRequest>,
    /// Use MS_MOVE and chroot instead of pivot_root (runc's `--no-pivot`).
    pub no_pivot: bool,
}

/// A created container and the spec fields crabmigrate accepted without
/// applying them.
#[derive(Debug)]
pub struct Created {
    pub state: State,
    pub warnings: Vec<String>,
}

/// Why `create` failed. Nothing is left behind: no state, cgroup or process.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("invalid container ID")]
    Id(#[source] spec::SpecError),
    #[error("cannot use the bundle {0}")]
    Bundle(PathBuf, #[source] spec::SpecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot create the container's cgroup")]
    Cgroup(#[source] crate::cgroups::CgroupError),
    #[error("process.terminal is set, so --console-socket is required (as with runc)")]
    NoConsoleSocket,
    #[error("cannot set up the terminal")]
    Console(#[from] super::console::ConsoleError),
    #[error("crabmigrate must create containers from a single-threaded process")]
    Threaded,
    #[error("cannot {0}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("cannot {0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("the container init failed: {0}")]
    Init(String),
    #[error("the container init exited without saying why")]
    InitVanished,
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("cannot apply the spec's process security")]
    Security(#[from] SecurityError),
    #[error("{field} {value:?} is not valid here")]
    Invalid { field: &'static str, value: String },
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    NetworkSpec(#[from] network::JoinError),
}

/// Removes what a failed `create` made.
struct Cleanup<'a> {
    root: &'a StateRoot,
    id: String,
    cgroup: Option<Cgroup>,
    init: Option<i32>,
    /// Released (DEL) when dropped.
    network: Option<network::Prepared>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.init {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.signal_all(libc::SIGKILL);
            let _ = cgroup.remove();
        }
        let _ = self.root.remove(&self.id);
    }
}

/// Creates container `id` from the bundle at `bundle_dir`.
pub fn create(
    root: &StateRoot,
    id: &str,
    bundle_dir: &Path,
    options: &CreateOptions,
) -> Result<Created, CreateError> {
    spec::validate_id(id).map_err(CreateError::Id)?;
    let mut bundle =
        spec::load(bundle_dir).map_err(|e| CreateError::Bundle(bundle_dir.into(), e))?;
    let warnings = bundle.warnings.clone();
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && options.console_socket.is_none() {
        return Err(CreateError::NoConsoleSocket);
    }
    if threads() != Some(1) {
        return Err(CreateError::Threaded);
    }
    // A bad network (unknown name, missing plugin) is refused before
    // anything is made.
    let net_config = match &options.network {
        Some(request) => {
            network::check_spec(&bundle.spec)?;
            let config = request.resolve()?;
            let ips: Vec<_> = request.addresses.ips.iter().map(|n| n.addr()).collect();
            network::addresses_free(root, &config, &ips, None)?;
            Some(config)
        }
        None => None,
    };

    let dir = root.create_dir(id)?;
    let mut cleanup = Cleanup {
        root,
        id: id.to_owned(),
        cgroup: None,
        init: None,
        network: None,
        armed: true,
    };
    let cgroup_path = spec::cgroup_path(&bundle.spec, id)
        .map_err(|e| CreateError::Bundle(bundle_dir.into(), e))?;
    let cgroup =
        Cgroup::create(&cgroup_path, &resources(&bundle.spec)).map_err(CreateError::Cgroup)?;
    cleanup.cgroup = Some(cgroup.clone());
    root.save_record(id, crate::state::CGROUP_RECORD, &cgroup)?;
    if let (Some(request), Some(config)) = (&options.network, &net_config) {
        let prepared = network::prepare(&request.cni, config, id, &request.addresses, false)?;
        let attachment = prepared.attachment();
        attachment.write(&dir.join(network::ATTACHMENT_FILE))?;
        network::join_in_spec(&mut bundle.spec, &attachment.netns)?;
        cleanup.network = Some(prepared);
    }

    let fifo_path = dir.join("exec.fifo");
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600))
        .map_err(|e| CreateError::Sys("create exec.fifo", e))?;
    // The init opens it for writing after taking process.user's uid (through
    // its O_PATH descriptor, so the 0700 state directory is no obstacle):
    // others may write, as with runc's 0622 (chmod, unlike mkfifo, ignores
    // the umask).
    std::fs::set_permissions(&fifo_path, std::fs::Permissions::from_mode(0o622))
        .map_err(|e| CreateError::Io("make exec.fifo writable for process.user", e))?;
    let fifo = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| CreateError::Sys("open exec.fifo", e))?;
    let console = match (terminal, &options.console_socket) {
        (true, Some(path)) => Some(super::console::connect(path)?),
        _ => None,
    };
    let mut config = init_config(&bundle, Some(cgroup.clone()), fifo, console)?;
    config.no_pivot = options.no_pivot;

    let (ours, theirs) =
        UnixStream::pair().map_err(|e| CreateError::Io("create a socket pair", e))?;
    // SAFETY: checked above that this process has one thread, so the child
    // may allocate and run ordinary code until it execs or exits.
    let intermediate = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ours);
            init::intermediate(config, theirs)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => return Err(CreateError::Sys("fork", e)),
    };
    drop(theirs);
    drop(config);
    let mut reader = BufReader::new(&ours);
    let mut init_pid = None;
    let result = loop {
        match init::read_message(&mut reader) {
            Ok(Some(Message::Pid(pid))) => {
                init_pid = Some(pid);
                cleanup.init = Some(pid);
            }
            Ok(Some(Message::UserNs)) => {
                write_id_maps(&bundle.spec, intermediate.as_raw())?;
                (&ours)
                    .write_all(b"go\n")
                    .map_err(|e| CreateError::Io("resume the intermediate process", e))?;
            }
            Ok(Some(Message::Hooks)) => {
                let pid = init_pid.unwrap_or(0) as u32;
                run_create_hooks(&bundle, id, pid)?;
                (&ours)
                    .write_all(b"go\n")
                    .map_err(|e| CreateError::Io("resume the container init", e))?;
            }
            Ok(Some(Message::Ready)) => break Ok(()),
            Ok(Some(Message::Error(text))) => break Err(CreateError::Init(text)),
            Ok(None) => break Err(CreateError::InitVanished),
            Err(e) => break Err(CreateError::Io("read from the container init", e)),
        }
    };
    let _ = nix::sys::wait::waitpid(intermediate, None);
    result?;
    let pid = init_pid.ok_or(CreateError::InitVanished)? as u32;

    let mut state = State::for_bundle(
        &bundle,
        id,
        Status::Created,
        pid,
        cgroup,
        namespace_paths(&bundle.spec, pid),
    );
    state.network = cleanup.network.as_ref().map(|n| n.attachment().clone());
    root.save(&state)?;
    if let Some(path) = &options.pid_file {
        write_pid_file(path, pid)?;
    }
    cleanup.armed = false;
    if let Some(prepared) = cleanup.network.take() {
        prepared.keep();
    }
    Ok(Created { state, warnings })
}

pub(crate) fn threads() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn write_pid_file(path: &Path, pid: u32) -> Result<(), CreateError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CreateError::Io("write the pid file", e))
}

fn run_create_hooks(bundle: &Bundle, id: &str, pid: u32) -> Result<(), CreateError> {
    let set = bundle.hooks();
    if set.prestart.is_empty() && set.create_runtime.is_empty() {
        return Ok(());
    }
    let annotations = bundle.annotations();
    let state = HookState {
        oci_version: bundle.spec.version(),
        id,
        status: "creating",
        pid,
        bundle: &bundle.dir,
        annotations: &annotations,
    };
    hooks::run("prestart", &set.prestart, &state)?;
    hooks::run("createRuntime", &set.create_runtime, &state)?;
    Ok(())
}

/// `/proc/PID/ns/KIND` for created namespaces, the spec's path for joined
/// ones.
pub(crate) fn namespace_paths(
    spec: &Spec,
    pid: u32,
) -> std::collections::BTreeMap<String, PathBuf> {
    let mut out = std::collections::BTreeMap::new();
    if let Ok(ns) = spec::namespaces(spec) {
        for kind in ns.create {
            out.insert(
                kind.proc_name().to_owned(),
                PathBuf::from(format!("/proc/{pid}/ns/{}", kind.proc_name())),
            );
        }
        for (kind, path) in ns.join {
            out.insert(kind.proc_name().to_owned(), path);
        }
    }
    out
}

/// The supported subset of `linux.resources`.
pub(crate) fn resources(spec: &Spec) -> Resources {
    let mut r = match spec::resources(spec) {
        Some(res) => resources_of(res),
        None => Resources::default(),
    };
    r.devices = device_rules(spec);
    r
}

/// The supported limits of a `linux.resources` object (no device rules).
pub(crate) fn resources_of(res: &oci_spec::runtime::LinuxResources) -> Resources {
    let mut r = Resources::default();
    if let Some(m) = res.memory() {
        r.memory_limit = m.limit();
        r.memory_swap = m.swap();
    }
    if let Some(c) = res.cpu() {
        r.cpu_shares = c.shares();
        r.cpu_quota = c.quota();
        r.cpu_period = c.period();
        r.cpuset_cpus = c.cpus().clone();
        r.cpuset_mems = c.mems().clone();
    }
    if let Some(p) = res.pids() {
        r.pids_limit = Some(p.limit());
    }
    r
}

/// `linux.resources.devices` in order, then allow rules for `linux.devices`
/// and the default devices (runc's way); nothing when the spec restricts
/// no devices.
pub(crate) fn device_rules(spec: &Spec) -> Vec<DeviceRule> {
    let listed = spec::resources(spec)
        .and_then(|r| r.devices().as_deref())
        .unwrap_or_default();
    if listed.is_empty() {
        return Vec::new();
    }
    let kind_char = |t: Option<LinuxDeviceType>| match t {
        None | Some(LinuxDeviceType::A) => 'a',
        Some(LinuxDeviceType::B) => 'b',
        // c, u (unbuffered character) and p (fifo) are character rules.
        Some(_) => 'c',
    };
    let mut rules: Vec<DeviceRule> = listed
        .iter()
        .map(|d| DeviceRule {
            allow: d.allow(),
            kind: kind_char(d.typ()),
            major: d.major(),
            minor: d.minor(),
            access: d.access().clone().unwrap_or_else(|| "rwm".to_owned()),
        })
        .collect();
    for dev in spec::devices(spec) {
        rules.push(DeviceRule::allow(
            kind_char(Some(dev.typ())),
            Some(dev.major()),
            Some(dev.minor()),
            "rwm",
        ));
    }
    rules.extend(default_allowed_devices());
    rules
}

/// Turns the spec into the children's instructions.
pub(crate) fn init_config(
    bundle: &Bundle,
    cgroup: Option<Cgroup>,
    fifo: OwnedFd,
    console: Option<UnixStream>,
) -> Result<InitConfig, CreateError> {
    let spec = &bundle.spec;
    let bad = |e| CreateError::Bundle(bundle.dir.clone(), e);
    let ns = spec::namespaces(spec).map_err(bad)?;
    let mut unshare = CloneFlags::empty();
    for kind in &ns.create {
        if *kind != spec::NamespaceKind::User {
            unshare |= kind.clone_flag();
        }
    }
    let new_user_ns = ns.create.contains(&spec::NamespaceKind::User);
    let mut join = Vec::new();
    // A joined user namespace first: it owns the others.
    let mut joined = ns.join.clone();
    joined.sort_by_key(|(kind, _)| *kind != spec::NamespaceKind::User);
    for (kind, path) in &joined {
        let file = open(
            path.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CreateError::Sys("open a namespace to join", e))?;
        join.push((kind.clone_flag(), file));
    }
    let process = spec.process().clone().unwrap_or_default();
    let mounts = bundle.mounts().map_err(bad)?;
    let populate_dev = mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev") && m.kind == MountKind::Tmpfs);
    let cstrings = |items: &[String], field: &'static str| {
        items
            .iter()
            .map(|s| {
                CString::new(s.as_bytes()).map_err(|_| CreateError::Invalid {
                    field,
                    value: s.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let rlimits = process
        .rlimits()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            rlimit_resource(&format!("{:?}", r.typ())).map(|res| (res, r.soft(), r.hard()))
        })
        .collect();
    let security = ProcessSecurity::from_spec(
        &process,
        spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
    )?;
    Ok(InitConfig {
        rootfs: bundle.rootfs.clone(),
        cgroup,
        join,
        unshare,
        new_user_ns,
        propagation: spec::rootfs_propagation(spec).map_err(bad)?,
        mounts,
        populate_dev,
        devices: spec::devices(spec)
            .iter()
            .map(|d| d.path().clone())
            .collect(),
        masked: spec::masked_paths(spec).iter().map(PathBuf::from).collect(),
        readonly: spec::readonly_paths(spec)
            .iter()
            .map(PathBuf::from)
            .collect(),
        readonly_root: bundle.readonly_rootfs(),
        hostname: spec
            .hostname()
            .clone()
            .filter(|_| unshare.contains(CloneFlags::CLONE_NEWUTS)),
        rlimits,
        uid: process.user().uid(),
        gid: process.user().gid(),
        additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
        security,
        no_pivot: false,
        sysctl: spec::sysctls(spec).map_err(bad)?,
        cwd: process.cwd().clone(),
        args: cstrings(&process.args().clone().unwrap_or_default(), "process.args")?,
        env: cstrings(&process.env().clone().unwrap_or_default(), "process.env")?,
        console,
        fifo,
    })
}

/// `RLIMIT_NOFILE` (as oci-spec debug-prints it, `RlimitNofile`) to nix's.
pub(crate) fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource::*;
    let key = name.to_ascii_uppercase().replace('_', "");
    Some(match key.trim_start_matches("RLIMIT") {
        "AS" => RLIMIT_AS,
        "CORE" => RLIMIT_CORE,
        "CPU" => RLIMIT_CPU,
        "DATA" => RLIMIT_DATA,
        "FSIZE" => RLIMIT_FSIZE,
        "LOCKS" => RLIMIT_LOCKS,
        "MEMLOCK" => RLIMIT_MEMLOCK,
        "MSGQUEUE" => RLIMIT_MSGQUEUE,
        "NICE" => RLIMIT_NICE,
        "NOFILE" => RLIMIT_NOFILE,
        "NPROC" => RLIMIT_NPROC,
        "RSS" => RLIMIT_RSS,
        "RTPRIO" => RLIMIT_RTPRIO,
        "RTTIME" => RLIMIT_RTTIME,
        "SIGPENDING" => RLIMIT_SIGPENDING,
        "STACK" => RLIMIT_STACK,
        _ => return None,
    })
}

/// Writes `linux.uidMappings` and `linux.gidMappings` to the new user
/// namespace of process `pid` (each file in one write, as the kernel
/// wants).
fn write_id_maps(spec: &Spec, pid: i32) -> Result<(), CreateError> {
    let (uids, gids) = spec::id_mappings(spec);
    for (file, list) in [("uid_map", uids), ("gid_map", gids)] {
        let text: String = list
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| CreateError::Io("write the user namespace's id maps", e))?;
    }
    Ok(())
}
