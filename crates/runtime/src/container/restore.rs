//! `restore`: a container from CRIU images and its bundle, as runc's
//! libcontainer does it.
//!
//! - The rootfs is bind-mounted onto a private mount point in the state
//!   directory (CRIU needs a mount point whose parent is not over-mounted);
//!   mount points missing in the rootfs are created as at create time.
//! - External mounts go back to their sources: bind mounts to the spec's
//!   sources, masked files and device nodes to the host's.
//! - A joined network or pid namespace is handed over with inherit-fd under
//!   the key used at checkpoint; other joined namespaces with join_ns.
//! - CRIU itself is put into the container's cgroup before it restores, and
//!   `cg_root` points the restored tree at the new cgroup: per v1
//!   controller, plus a default root for the v2 hierarchy.
//! - Pipes among the init's stdio (`descriptors.json`) are replaced with
//!   crabmigrate's own stdio through inherit-fd, and so are the terminals
//!   the checkpoint left outside (see [`crate::terminals`]).
//! - The restored init is the caller's child (rst_sibling).
//! - Notifications: setup-namespaces runs the prestart and createRuntime
//!   hooks with the new pid, post-restore records it, orphan-pts-master goes
//!   to the console socket, network-unlock unlocks a recreated CNI network.
//! - A checkpoint with a CNI network gets a new namespace with the same
//!   addresses and MAC, locked until CRIU's network-unlock
//!   (`restore_network.rs`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;

use criu_rpc::{
    CgroupMode, Criu, ExecLauncher, External, InheritFd, JoinNamespace, LaunchSpec, Launcher,
    LogLevel, NetworkLock, Notify, NotifyResult, RestoreRequest, RestoreStats,
};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::checkpoint::{masked_is_file, DESCRIPTORS, EXT_NET_NS, EXT_PID_NS};
use super::hooks::{self, HookState};
use super::restore_network;
use super::rootfs::{secure_join, MountKind, DEFAULT_DEVICES};
use crate::cgroups::Cgroup;
use crate::network::{self, Prepared};
use crate::spec::{self, Bundle};
use crate::state::{State, StateRoot, Status};

/// How to restore a container.
#[derive(Debug, Default)]
pub struct RestoreOptions {
    /// The bundle (its config and rootfs).
    pub bundle: PathBuf,
    /// The checkpoint.
    pub images_dir: PathBuf,
    /// CRIU's work directory; the images directory if `None`.
    pub work_dir: Option<PathBuf>,
    /// Write the restored init's pid here.
    pub pid_file: Option<PathBuf>,
    /// Send a restored terminal's master here.
    pub console_socket: Option<PathBuf>,
    pub tcp_established: bool,
    /// Restore established connections closed.
    pub tcp_close: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub link_remap: bool,
    /// Post-copy: pages come from `criu lazy-pages` in the work directory.
    pub lazy_pages: bool,
    pub network_lock: Option<NetworkLock>,
    pub manage_cgroups_mode: Option<CgroupMode>,
    /// More externals, in CRIU's syntax.
    pub external: Vec<External>,
    /// Punch pages out of the images as they are restored.
    pub auto_dedup: bool,
    /// Restore into an empty network namespace (runc's `--empty-ns`).
    pub empty_net_ns: bool,
    /// The restored tree's LSM profile, `apparmor:NAME` or `selinux:LABEL`.
    pub lsm_profile: Option<String>,
    /// The SELinux context of the restored mounts.
    pub lsm_mount_context: Option<String>,
    pub log_level: LogLevel,
    /// The host's CNI setup, for a checkpoint with a network.
    pub cni: network::Cni,
}

/// A restored container.
#[derive(Debug)]
pub struct Restored {
    pub state: State,
    pub stats: Option<RestoreStats>,
    pub log_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// Why a container restore failed. A new ID leaves nothing behind.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("invalid container ID")]
    Id(#[source] spec::SpecError),
    #[error("container {0} is {1}; delete it or restore under another ID")]
    Live(String, Status),
    #[error("cannot use the bundle {0}")]
    Bundle(PathBuf, #[source] spec::SpecError),
    #[error("{0} holds no checkpoint (no inventory.img); point --images-dir at a directory written by checkpoint")]
    NoImages(PathBuf),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot create the container's cgroup")]
    Cgroup(#[source] crate::cgroups::CgroupError),
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] io::Error),
    #[error("cannot mount the rootfs for CRIU at {0}")]
    Mount(PathBuf, #[source] nix::Error),
    #[error(transparent)]
    Criu(#[from] criu_rpc::RestoreError),
    #[error("cannot connect to the console socket {0}")]
    Console(PathBuf, #[source] io::Error),
    #[error("process.terminal is set, so --console-socket is required to receive the restored terminal (as with runc)")]
    NoConsoleSocket,
    #[error(transparent)]
    Terminal(#[from] crate::terminals::TerminalError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    NetworkSpec(#[from] network::JoinError),
}

/// Restores container `id` from `opts.images_dir` with `opts.bundle`.
/// `observer`, if given, sees CRIU's restore notifications after the
/// runtime's own handling; refusing `post-restore` kills the restored tree
/// and undoes the restore (the migration destination holds the container
/// there until the source commits).
pub fn restore(
    criu: &Criu,
    root: &StateRoot,
    id: &str,
    opts: &RestoreOptions,
    observer: Option<&mut dyn Notify>,
) -> Result<Restored, RestoreError> {
    restore_networked(criu, root, id, opts, None, observer)
}

/// [`restore`] into a network namespace prepared beforehand (a migration
/// destination prepares it, locked, before the source freezes): `network`
/// replaces the one the checkpoint's `network.status` would get. It is
/// unlocked in CRIU's network-unlock notification and released if the
/// restore fails.
pub fn restore_networked(
    criu: &Criu,
    root: &StateRoot,
    id: &str,
    opts: &RestoreOptions,
    network: Option<Prepared>,
    observer: Option<&mut dyn Notify>,
) -> Result<Restored, RestoreError> {
    spec::validate_id(id).map_err(RestoreError::Id)?;
    if !opts.images_dir.join("inventory.img").is_file() {
        return Err(RestoreError::NoImages(opts.images_dir.clone()));
    }
    // An existing ID may be restored only when nothing of it runs.
    let previous = match root.load(id) {
        Ok(mut s) => {
            s.refresh();
            if matches!(s.status, Status::Created | Status::Running | Status::Paused) {
                return Err(RestoreError::Live(id.to_owned(), s.status));
            }
            Some(s)
        }
        Err(crate::state::StateError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let mut bundle =
        spec::load(&opts.bundle).map_err(|e| RestoreError::Bundle(opts.bundle.clone(), e))?;
    // The terminal's new master can only go to a console socket; without
    // one CRIU fails obscurely ("Found slave peer index N without
    // correspond master peer").
    if super::checkpoint::has_terminal(&bundle) && opts.console_socket.is_none() {
        return Err(RestoreError::NoConsoleSocket);
    }
    // Checked before anything is created: the terminals the checkpoint
    // left outside need one of ours in their place.
    let terminals = crate::terminals::stand_ins(&crate::terminals::load(&opts.images_dir)?)?;
    // The checkpoint's network, its plugins and free addresses: checked
    // before anything is touched.
    let net_plan = match &network {
        Some(_) => None,
        None => restore_network::plan(root, id, opts, previous.as_ref(), &bundle.spec)?,
    };
    let dir = match &previous {
        Some(_) => root.container_dir(id),
        None => root.create_dir(id)?,
    };
    let mut cleanup = Cleanup {
        root,
        id,
        remove_state: previous.is_none(),
        cgroup: None,
        mount: None,
    };
    let cgroup_path = spec::cgroup_path(&bundle.spec, id)
        .map_err(|e| RestoreError::Bundle(opts.bundle.clone(), e))?;
    let cgroup = Cgroup::create(&cgroup_path, &super::create::resources(&bundle.spec))
        .map_err(RestoreError::Cgroup)?;
    if previous.is_none() {
        cleanup.cgroup = Some(cgroup.clone());
    }
    // Released (DEL) if the restore fails.
    let mut network = match (network, net_plan) {
        (Some(prepared), _) => Some(prepared),
        (None, Some(plan)) => Some(plan.prepare(opts, id, previous.as_ref())?),
        (None, None) => None,
    };
    if let Some(prepared) = &network {
        restore_network::adopt(prepared, &mut bundle.spec, &dir)?;
    }
    create_mount_points(&bundle)?;
    let criu_root = dir.join("criu-root");
    mount_rootfs(&bundle.rootfs, &criu_root)?;
    cleanup.mount = Some(criu_root.clone());

    let images = open(&opts.images_dir)?;
    let work = opts.work_dir.as_deref().map(open).transpose()?;
    let joined = open_joined(&bundle)?;
    let stdio = stdio_pipes(&opts.images_dir);
    let console = opts
        .console_socket
        .as_ref()
        .map(|p| UnixStream::connect(p).map_err(|e| RestoreError::Console(p.clone(), e)))
        .transpose()?;

    let mut request = RestoreRequest::new(images.as_fd());
    request.common.work_dir = work.as_ref().map(AsFd::as_fd);
    request.common.log_level = opts.log_level;
    request.common.config_file = bundle
        .spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(super::checkpoint::CRIU_CONFIG_ANNOTATION))
        .map(PathBuf::from);
    let o = &mut request.options;
    o.root = Some(criu_root.clone());
    o.rst_sibling = true;
    o.tcp_established = opts.tcp_established;
    o.tcp_close = opts.tcp_close;
    o.ext_unix_sk = opts.ext_unix_sk;
    o.shell_job = opts.shell_job;
    o.file_locks = opts.file_locks;
    o.link_remap = opts.link_remap;
    o.lazy_pages = opts.lazy_pages;
    o.auto_dedup = opts.auto_dedup;
    o.empty_net_ns = opts.empty_net_ns;
    o.lsm_profile = opts.lsm_profile.clone();
    o.lsm_mount_context = opts.lsm_mount_context.clone();
    o.network_lock = opts.network_lock;
    o.orphan_pts_master = console.is_some();
    o.cgroups.mode = Some(opts.manage_cgroups_mode.unwrap_or(CgroupMode::Soft));
    o.cgroups.roots = cgroup
        .v1_roots()
        .into_iter()
        .map(|(ctrl, path)| (Some(ctrl), path))
        .collect();
    // A root without a controller covers the hierarchies not named above:
    // the v2 one (CRIU calls it ""), hybrid or pure. Without it CRIU puts
    // the tree back into the checkpoint's v2 path (another ID's, or
    // another runtime's) and creates that cgroup, which nobody removes.
    if !cgroup.paths().is_empty() {
        o.cgroups.roots.push((None, cgroup.path().to_owned()));
    }
    o.external = restore_externals(&bundle, &cgroup)?;
    o.external.extend(opts.external.iter().cloned());
    for (kind, file) in &joined {
        match *kind {
            "net" => o.inherit_fds.push(InheritFd {
                key: EXT_NET_NS,
                fd: file.as_fd(),
            }),
            "pid" => o.inherit_fds.push(InheritFd {
                key: EXT_PID_NS,
                fd: file.as_fd(),
            }),
            _ => {}
        }
    }
    let ns = bundle
        .namespaces()
        .map_err(|e| RestoreError::Bundle(opts.bundle.clone(), e))?;
    for (kind, path) in &ns.join {
        if !matches!(kind.proc_name(), "net" | "pid") {
            o.join_ns.push(JoinNamespace {
                kind: kind.proc_name().to_owned(),
                file: path.to_string_lossy().into_owned(),
                extra: None,
            });
        }
    }
    for (key, fd) in stdio.iter().chain(&terminals) {
        o.inherit_fds.push(InheritFd { key, fd: *fd });
    }

    let mut notify = RestoreNotify {
        bundle: &bundle,
        id,
        console,
        pid: None,
        network: network.as_mut(),
        observer,
    };
    let in_cgroup = criu.clone().with_launcher(Arc::new(CgroupLauncher {
        cgroup: cgroup.clone(),
    }));
    let outcome = in_cgroup.restore(&request, Some(&mut notify))?;
    drop(notify);
    if let Some(prepared) = network.as_mut().filter(|p| p.is_locked()) {
        // CRIU sends network-unlock only for a tree with its own network
        // namespace; never leave the workload locked.
        tracing::warn!(
            id,
            "CRIU sent no network-unlock; unlocking after the restore"
        );
        restore_network::unlock(prepared)?;
    }
    if let Some(path) = cleanup.mount.take() {
        unmount(&path);
    }

    let pid = outcome.pid as u32;
    let mut state = State::for_bundle(
        &bundle,
        id,
        Status::Running,
        pid,
        cgroup,
        super::create::namespace_paths(&bundle.spec, pid),
    );
    state.checkpoint = Some(opts.images_dir.clone());
    state.network = network.map(Prepared::keep);
    root.save(&state)?;
    if let Some(path) = &opts.pid_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, pid.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| RestoreError::Io("write", path.clone(), e))?;
    }
    cleanup.remove_state = false;
    cleanup.cgroup = None;
    if let Err(e) = super::lifecycle::run_hooks(&state, "poststart") {
        tracing::warn!(id, error = %e, "poststart hook failed after restore");
    }
    Ok(Restored {
        state,
        stats: outcome.stats,
        log_file: outcome.log_file,
        warnings: bundle.warnings.clone(),
    })
}

/// Undoes a failed restore.
struct Cleanup<'a> {
    root: &'a StateRoot,
    id: &'a str,
    remove_state: bool,
    cgroup: Option<Cgroup>,
    mount: Option<PathBuf>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.mount.take() {
            unmount(&path);
        }
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.signal_all(libc::SIGKILL);
            let _ = cgroup.remove();
        }
        if self.remove_state {
            let _ = self.root.remove(self.id);
        }
    }
}

fn open(path: &Path) -> Result<std::fs::File, RestoreError> {
    std::fs::File::open(path).map_err(|e| RestoreError::Io("open", path.to_path_buf(), e))
}

fn unmount(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(path);
}

/// Bind-mounts the rootfs at `target`, privately, for CRIU's `root`.
fn mount_rootfs(rootfs: &Path, target: &Path) -> Result<(), RestoreError> {
    std::fs::create_dir_all(target).map_err(|e| RestoreError::Io("create", target.into(), e))?;
    let fail = |e| RestoreError::Mount(target.to_path_buf(), e);
    mount(
        Some(rootfs),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail)?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(fail)
}

/// Creates mount points missing in the rootfs, as create would, except
/// inside tmpfs mounts (CRIU restores those with their content).
fn create_mount_points(bundle: &Bundle) -> Result<(), RestoreError> {
    let mounts = bundle
        .mounts()
        .map_err(|e| RestoreError::Bundle(bundle.dir.clone(), e))?;
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.kind == MountKind::Tmpfs)
        .map(|m| m.destination.as_path())
        .collect();
    for m in &mounts {
        if tmpfs
            .iter()
            .any(|t| m.destination != *t && m.destination.starts_with(t))
        {
            continue;
        }
        let target = secure_join(&bundle.rootfs, &m.destination).map_err(|e| {
            RestoreError::Io(
                "resolve",
                m.destination.clone(),
                io::Error::other(e.to_string()),
            )
        })?;
        let is_file = m.kind == MountKind::Bind
            && m.source
                .as_deref()
                .and_then(|s| std::fs::metadata(s).ok())
                .is_some_and(|md| !md.is_dir());
        let made = if is_file {
            target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&target)
                        .map(drop)
                })
        } else {
            std::fs::create_dir_all(&target)
        };
        made.map_err(|e| RestoreError::Io("create the mount point", target.clone(), e))?;
    }
    // CRIU moves the old root aside into the new root's /tmp when it
    // restores mounts; without /tmp it makes a directory there, which a
    // read-only root (runc spec's default) refuses: "mnt: Can't create a
    // temporary directory: Read-only file system". A minimal rootfs often
    // has no /tmp; make it, as runc's rootfs would have one.
    let tmp = bundle.rootfs.join("tmp");
    if std::fs::symlink_metadata(&tmp).is_err() {
        std::fs::create_dir(&tmp)
            .map_err(|e| RestoreError::Io("create the mount point", tmp.clone(), e))?;
    }
    Ok(())
}

/// Externals mapped back to their sources.
fn restore_externals(bundle: &Bundle, cgroup: &Cgroup) -> Result<Vec<External>, RestoreError> {
    let mut out = Vec::new();
    let mounts = bundle
        .mounts()
        .map_err(|e| RestoreError::Bundle(bundle.dir.clone(), e))?;
    // A `cgroup` mount's views go to the restored container's cgroup.
    for m in mounts.iter().filter(|m| m.kind == MountKind::Cgroup) {
        for (inside, dir) in super::cgroup_mount::binds(cgroup, &m.destination) {
            out.push(External::raw(format!(
                "mnt[{}]:{}",
                inside.display(),
                dir.display()
            )));
        }
    }
    for m in mounts.iter().filter(|m| m.kind == MountKind::Bind) {
        let key = m.destination.to_string_lossy();
        let source = m.source.as_deref().unwrap_or(Path::new("/"));
        out.push(External::raw(format!("mnt[{key}]:{}", source.display())));
    }
    if mounts
        .iter()
        .any(|m| m.kind == MountKind::Tmpfs && m.destination == Path::new("/dev"))
    {
        for node in DEFAULT_DEVICES {
            out.push(External::raw(format!("mnt[{node}]:{node}")));
        }
    }
    for device in spec::devices(&bundle.spec) {
        let path = device.path().to_string_lossy().into_owned();
        out.push(External::raw(format!("mnt[{path}]:{path}")));
    }
    for masked in spec::masked_paths(&bundle.spec) {
        if masked_is_file(masked) {
            out.push(External::raw(format!("mnt[{masked}]:/dev/null")));
        }
    }
    Ok(out)
}

/// Opens the namespaces the container joins: (proc name, file).
fn open_joined(bundle: &Bundle) -> Result<Vec<(&'static str, OwnedFd)>, RestoreError> {
    let ns = bundle
        .namespaces()
        .map_err(|e| RestoreError::Bundle(bundle.dir.clone(), e))?;
    ns.join
        .iter()
        .map(|(kind, path)| {
            std::fs::File::open(path)
                .map(|f| (kind.proc_name(), OwnedFd::from(f)))
                .map_err(|e| RestoreError::Io("open", path.clone(), e))
        })
        .collect()
}

/// The init's stdio pipes from `descriptors.json`, each paired with our own
/// descriptor of the same number.
fn stdio_pipes(images_dir: &Path) -> Vec<(String, BorrowedFd<'static>)> {
    let Ok(text) = std::fs::read(images_dir.join(DESCRIPTORS)) else {
        return Vec::new();
    };
    let Ok(links) = serde_json::from_slice::<Vec<String>>(&text) else {
        return Vec::new();
    };
    links
        .into_iter()
        .enumerate()
        .take(3)
        .filter(|(_, link)| link.starts_with("pipe:"))
        .map(|(fd, link)| {
            // SAFETY: 0, 1 and 2 are this process's standard streams, open
            // for its whole life and never closed by crabmigrate.
            (link, unsafe { BorrowedFd::borrow_raw(fd as i32) })
        })
        .collect()
}

/// Puts CRIU into the container's cgroup before it receives the request, so
/// the restored tree starts there.
#[derive(Debug)]
struct CgroupLauncher {
    cgroup: Cgroup,
}

impl Launcher for CgroupLauncher {
    fn launch(&self, spec: LaunchSpec<'_>) -> io::Result<Child> {
        let mut child = ExecLauncher.launch(spec)?;
        if let Err(e) = self.cgroup.add_process(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "cannot put CRIU into the container's cgroup: {e}"
            )));
        }
        Ok(child)
    }
}

/// Answers CRIU's notifications during a container restore.
struct RestoreNotify<'a, 'o> {
    bundle: &'a Bundle,
    id: &'a str,
    console: Option<UnixStream>,
    pid: Option<i32>,
    /// A recreated CNI network, locked until network-unlock.
    network: Option<&'a mut Prepared>,
    observer: Option<&'o mut dyn Notify>,
}

impl Notify for RestoreNotify<'_, '_> {
    fn setup_namespaces(&mut self, pid: i32) -> NotifyResult {
        let set = self.bundle.hooks();
        let annotations = self.bundle.annotations();
        let state = HookState {
            oci_version: self.bundle.spec.version(),
            id: self.id,
            status: "creating",
            pid: pid as u32,
            bundle: &self.bundle.dir,
            annotations: &annotations,
        };
        hooks::run("prestart", &set.prestart, &state)?;
        hooks::run("createRuntime", &set.create_runtime, &state)?;
        self.observer
            .as_mut()
            .map_or(Ok(()), |o| o.setup_namespaces(pid))
    }

    fn pre_restore(&mut self) -> NotifyResult {
        self.observer.as_mut().map_or(Ok(()), |o| o.pre_restore())
    }

    fn post_setup_namespaces(&mut self) -> NotifyResult {
        self.observer
            .as_mut()
            .map_or(Ok(()), |o| o.post_setup_namespaces())
    }

    fn post_restore(&mut self, pid: i32) -> NotifyResult {
        self.pid = Some(pid);
        self.observer
            .as_mut()
            .map_or(Ok(()), |o| o.post_restore(pid))
    }

    fn network_unlock(&mut self) -> NotifyResult {
        if let Some(prepared) = self.network.as_deref_mut() {
            restore_network::unlock(prepared)?;
        }
        self.observer
            .as_mut()
            .map_or(Ok(()), |o| o.network_unlock())
    }

    fn pre_resume(&mut self) -> NotifyResult {
        self.observer.as_mut().map_or(Ok(()), |o| o.pre_resume())
    }

    fn post_resume(&mut self) -> NotifyResult {
        self.observer.as_mut().map_or(Ok(()), |o| o.post_resume())
    }

    fn orphan_pts_master(&mut self, master: OwnedFd) -> NotifyResult {
        match &self.console {
            Some(socket) => {
                use std::os::fd::AsRawFd;
                let fds = [master.as_raw_fd()];
                let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
                let iov = [io::IoSlice::new(b"/dev/ptmx")];
                nix::sys::socket::sendmsg::<()>(
                    socket.as_raw_fd(),
                    &iov,
                    &cmsg,
                    nix::sys::socket::MsgFlags::empty(),
                    None,
                )?;
                Ok(())
            }
            None => Err("CRIU sent a terminal but no --console-socket was given".into()),
        }
    }
}
