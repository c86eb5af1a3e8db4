//! `checkpoint`: a running container into CRIU images, as runc's
//! libcontainer does it.
//!
//! What a container adds to a process-tree dump:
//! - CRIU freezes through the container's freezer cgroup and manages its
//!   cgroups;
//! - bind mounts, masked files (bound /dev/null) and device nodes are
//!   external mounts, keyed by their path in the container;
//! - a network or pid namespace the container joined (a `path` in the spec)
//!   is external, keyed `extRootNetNS` / `extRootPidNS`;
//! - `descriptors.json` in the images records the init's stdio, for restore;
//! - a container with a terminal is dumped as a shell job: the pty master
//!   is outside the container;
//! - any other terminal a process of the container holds without its
//!   master (stderr left on the caller's terminal by `run -d`) is external
//!   and recorded for restore (see [`crate::terminals`]);
//! - the `org.criu.config` annotation names a CRIU configuration file;
//! - a container with a CNI network joined its namespace, which is
//!   external too; the attachment goes into the images (`network.status`)
//!   and, once the container is gone, the network is released (DEL) so a
//!   restore can take the same addresses.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use criu_rpc::{
    CgroupMode, Criu, DumpOptions, DumpRequest, DumpStats, External, LogLevel, NetworkLock, Notify,
    PageServerTarget, PreDumpRequest,
};

use super::lifecycle::load;
use super::rootfs::MountKind;
use crate::spec;
use crate::state::{StateRoot, Status};

/// The key CRIU uses for an external network namespace (same as runc).
pub const EXT_NET_NS: &str = "extRootNetNS";
/// The key for an external pid namespace.
pub const EXT_PID_NS: &str = "extRootPidNS";
/// The annotation naming a CRIU configuration file (same as runc).
pub const CRIU_CONFIG_ANNOTATION: &str = "org.criu.config";
/// The file in the images directory recording the init's stdio.
pub const DESCRIPTORS: &str = "descriptors.json";

/// How to checkpoint a container.
#[derive(Debug, Default)]
pub struct CheckpointOptions<'a> {
    /// Where the images go (created if missing).
    pub images_dir: PathBuf,
    /// CRIU's work directory (log, statistics); the images directory if
    /// `None`.
    pub work_dir: Option<PathBuf>,
    /// A previous dump, relative to the images directory.
    pub parent_path: Option<PathBuf>,
    /// Copy memory only, leaving the container running (needs soft-dirty).
    pub pre_dump: bool,
    /// Keep the container running after the checkpoint.
    pub leave_running: bool,
    pub tcp_established: bool,
    /// Dump established connections without their state (restored closed).
    pub tcp_close: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub link_remap: bool,
    /// Send pages to this page server.
    pub page_server: Option<(String, u16)>,
    /// Send pages over this connected socket instead (wins over
    /// `page_server`).
    pub page_server_socket: Option<BorrowedFd<'a>>,
    /// Post-copy: serve lazy pages on this port.
    pub lazy_pages_port: Option<u16>,
    /// With lazy pages: where CRIU writes a byte once it serves.
    pub status_fd: Option<BorrowedFd<'a>>,
    pub network_lock: Option<NetworkLock>,
    /// CRIU's cgroup mode; soft if `None`.
    pub manage_cgroups_mode: Option<CgroupMode>,
    /// More externals, in CRIU's syntax.
    pub external: Vec<External>,
    /// Punch pages out of the parent images once they are in this dump.
    pub auto_dedup: bool,
    /// Leave the network namespace's contents out (runc's `--empty-ns
    /// network`).
    pub empty_net_ns: bool,
    pub log_level: LogLevel,
}

/// A finished checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOutcome {
    pub stats: Option<DumpStats>,
    pub log_file: Option<PathBuf>,
}

/// Why a container checkpoint failed. The container is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Lifecycle(#[from] super::LifecycleError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("container {id} is {status}; only a running or paused container can be checkpointed")]
    NotRunning { id: String, status: Status },
    #[error("cannot read the bundle of container {0}")]
    Bundle(String, #[source] spec::SpecError),
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
    #[error("the parent path {0} must be a directory relative to the images directory")]
    Parent(PathBuf),
    #[error(transparent)]
    Dump(#[from] criu_rpc::DumpError),
    #[error(transparent)]
    PreDump(#[from] criu_rpc::PreDumpError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    NetworkSpec(#[from] crate::network::JoinError),
}

/// Checkpoints container `id`. `notify`, if given, sees CRIU's dump
/// notifications; refusing `post-dump` resumes the container (the migration
/// source holds the frozen container there until the destination runs it).
pub fn checkpoint(
    criu: &Criu,
    root: &StateRoot,
    id: &str,
    opts: &CheckpointOptions<'_>,
    notify: Option<&mut dyn Notify>,
) -> Result<CheckpointOutcome, CheckpointError> {
    let mut state = load(root, id)?;
    if !matches!(state.status, Status::Running | Status::Paused) {
        return Err(CheckpointError::NotRunning {
            id: id.to_owned(),
            status: state.status,
        });
    }
    let mut bundle =
        spec::load(&state.bundle).map_err(|e| CheckpointError::Bundle(id.to_owned(), e))?;
    let network = state.network.clone().filter(|n| !n.released);
    if let Some(net) = &network {
        crate::network::join_in_spec(&mut bundle.spec, &net.netns)?;
    }
    let parent = match &opts.parent_path {
        Some(p) if p.is_absolute() => return Err(CheckpointError::Parent(p.clone())),
        Some(p) if !opts.images_dir.join(p).is_dir() => {
            return Err(CheckpointError::Parent(opts.images_dir.join(p)))
        }
        Some(p) => Some(p.to_string_lossy().into_owned()),
        None => None,
    };
    let images = open_dir(&opts.images_dir)?;
    let work = opts.work_dir.as_deref().map(open_dir).transpose()?;
    write_descriptors(&opts.images_dir, state.pid)?;

    let mut options = DumpOptions {
        leave_running: opts.leave_running,
        tcp_established: opts.tcp_established,
        tcp_close: opts.tcp_close,
        ext_unix_sk: opts.ext_unix_sk,
        // The master of a container's terminal is outside the container
        // (the console socket's receiver has it): CRIU dumps the orphaned
        // slave only as a shell job ("Found slave peer index N without
        // correspond master peer" otherwise). Restore hands a new master to
        // the console socket (orphan-pts-master).
        shell_job: opts.shell_job || has_terminal(&bundle),
        file_locks: opts.file_locks,
        link_remap: opts.link_remap,
        // With a parent, only memory changed since it is dumped: CRIU
        // needs its dirty-page tracking for that, as runc asks for it.
        track_mem: parent.is_some(),
        parent_img: parent,
        auto_dedup: opts.auto_dedup,
        empty_net_ns: opts.empty_net_ns,
        page_server: match (opts.page_server_socket, &opts.page_server) {
            (Some(fd), _) => Some(PageServerTarget::Socket(fd)),
            (None, Some((address, port))) => Some(PageServerTarget::Address {
                address,
                port: *port,
            }),
            (None, None) => None,
        },
        network_lock: opts.network_lock,
        external: container_externals(&bundle, state.cgroup.as_ref())?,
        ..Default::default()
    };
    options.external.extend(opts.external.iter().cloned());
    if !options.shell_job {
        let terminals = crate::terminals::find(&crate::terminals::tree_pids(state.pid));
        crate::terminals::record(&opts.images_dir, &terminals).map_err(|e| {
            CheckpointError::Io("write", opts.images_dir.join(crate::terminals::RECORD), e)
        })?;
        options.external.extend(
            terminals
                .iter()
                .map(crate::terminals::ExternalTerminal::external),
        );
    }
    options.cgroups.mode = Some(opts.manage_cgroups_mode.unwrap_or(CgroupMode::Soft));
    // Freezing through the cgroup is atomic for the whole container; a
    // container paused beforehand is already frozen there.
    options.freeze_cgroup = state
        .cgroup
        .as_ref()
        .and_then(|c| c.freezer_path().map(Path::to_path_buf));
    let config_file = state
        .annotations
        .get(CRIU_CONFIG_ANNOTATION)
        .map(PathBuf::from);

    if opts.pre_dump {
        let mut request = PreDumpRequest::new(state.pid, images.as_fd());
        request.common.work_dir = work.as_ref().map(AsFd::as_fd);
        request.common.log_level = opts.log_level;
        request.common.config_file = config_file;
        request.options = options;
        request.options.leave_running = false;
        let stats = criu.single_pre_dump(&request)?;
        return Ok(CheckpointOutcome {
            stats,
            log_file: None,
        });
    }
    let mut request = DumpRequest::new(state.pid, images.as_fd());
    request.common.work_dir = work.as_ref().map(AsFd::as_fd);
    request.common.log_level = opts.log_level;
    request.common.config_file = config_file;
    request.options = options;
    request.lazy_pages_port = opts.lazy_pages_port;
    request.status_fd = opts.status_fd;
    if let Some(net) = &network {
        net.write(&opts.images_dir.join(crate::network::NETWORK_STATUS))?;
    }
    let outcome = criu.dump(&request, notify)?;
    // The state records the last checkpoint (export takes it), also one
    // after which the container runs on.
    if !opts.leave_running {
        state.status = Status::Checkpointed;
        // The processes are gone: the addresses go back to the network,
        // for the restore to take them again.
        if let (Some(net), Some(kept)) = (&network, state.network.as_mut()) {
            match crate::network::release(net) {
                Ok(()) => kept.released = true,
                Err(e) => {
                    tracing::warn!(id, error = %e, "cannot release the network of the checkpointed container; delete releases it")
                }
            }
        }
    }
    state.checkpoint = Some(opts.images_dir.clone());
    root.save(&state)?;
    Ok(CheckpointOutcome {
        stats: outcome.stats,
        log_file: outcome.log_file,
    })
}

/// Whether the container's process has a terminal (`process.terminal`).
pub(crate) fn has_terminal(bundle: &spec::Bundle) -> bool {
    bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

fn open_dir(path: &Path) -> Result<std::fs::File, CheckpointError> {
    std::fs::create_dir_all(path)
        .and_then(|()| std::fs::File::open(path))
        .map_err(|e| CheckpointError::Io("open", path.to_path_buf(), e))
}

/// Records where the init's stdin, stdout and stderr point
/// (`/dev/null`, `pipe:[123]`, ...), as runc does.
fn write_descriptors(images_dir: &Path, pid: u32) -> Result<(), CheckpointError> {
    let links: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "/dev/null".to_owned())
        })
        .collect();
    let path = images_dir.join(DESCRIPTORS);
    let json = serde_json::to_vec(&links).unwrap_or_default();
    std::fs::write(&path, json).map_err(|e| CheckpointError::Io("write", path, e))
}

/// External mounts and namespaces of a container (see the module docs).
pub(crate) fn container_externals(
    bundle: &spec::Bundle,
    cgroup: Option<&crate::cgroups::Cgroup>,
) -> Result<Vec<External>, CheckpointError> {
    let spec = &bundle.spec;
    let mut out = Vec::new();
    let planned = bundle
        .mounts()
        .map_err(|e| CheckpointError::Bundle(String::new(), e))?;
    // The cgroup views bound into a `cgroup` mount (see cgroup_mount.rs).
    if let Some(cgroup) = cgroup {
        for m in planned.iter().filter(|m| m.kind == MountKind::Cgroup) {
            for (inside, _) in super::cgroup_mount::binds(cgroup, &m.destination) {
                let inside = inside.to_string_lossy();
                out.push(External::mount(&inside, &inside));
            }
        }
    }
    for m in planned.iter().filter(|m| m.kind == MountKind::Bind) {
        let dest = m.destination.to_string_lossy();
        out.push(External::mount(&dest, &dest));
    }
    if planned
        .iter()
        .any(|m| m.kind == MountKind::Tmpfs && m.destination == Path::new("/dev"))
    {
        for node in super::rootfs::DEFAULT_DEVICES {
            out.push(External::mount(node, node));
        }
    }
    for device in spec::devices(spec) {
        let path = device.path().to_string_lossy().into_owned();
        out.push(External::mount(&path, &path));
    }
    for masked in spec::masked_paths(spec) {
        // Masked files are /dev/null bind mounts; masked directories are
        // tmpfs mounts CRIU dumps itself.
        if masked_is_file(masked) {
            out.push(External::mount(masked, masked));
        }
    }
    let ns = spec::namespaces(spec).map_err(|e| CheckpointError::Bundle(String::new(), e))?;
    for (kind, path) in &ns.join {
        let key = match kind.proc_name() {
            "net" => EXT_NET_NS,
            "pid" => EXT_PID_NS,
            _ => continue,
        };
        let inode = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(|e| CheckpointError::Io("inspect", path.clone(), e))?;
        out.push(if key == EXT_NET_NS {
            External::net_namespace(inode, key)
        } else {
            External::pid_namespace(inode, key)
        });
    }
    Ok(out)
}

/// Whether a masked path is a file: the common /proc entries are; the
/// directories in runc's default list are not.
pub(crate) fn masked_is_file(path: &str) -> bool {
    !matches!(
        path,
        "/proc/acpi" | "/proc/scsi" | "/sys/firmware" | "/sys/devices/virtual/powercap"
    ) && !path.ends_with('/')
        && std::fs::metadata(path).map(|m| !m.is_dir()).unwrap_or(true)
}
