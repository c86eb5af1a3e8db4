//! Typed options, one request value per operation.
//!
//! Each request is a plain struct: required parts are constructor
//! arguments, everything else is a public field with a sensible default.
//! The client only reads a request, so a value can be reused and nothing
//! survives a call. Every field of CRIU's `criu_opts` is reachable from the
//! request that uses it; [`Common`] holds what all of them share.
//!
//! Descriptors are borrowed: CRIU opens the images and work directories
//! through `/proc/<our pid>/fd/N`, so they must stay open for the call, and
//! the borrow checker makes sure they do. Descriptors CRIU must inherit
//! (inherit-fd, a connected page-server socket) are placed in CRIU's
//! descriptor table at start; the client picks their numbers.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;

use criu_proto::rpc::{
    CgroupRoot, CriuCgMode, CriuNetworkLockMethod, CriuOpts, CriuPageServerInfo, CriuPreDumpMode,
    CriuVethPair, ExtMountMap, InheritFd as ProtoInheritFd, JoinNamespace as ProtoJoinNamespace,
    UnixSk,
};

use crate::launcher::PassFd;
use crate::version::CriuVersion;

/// CRIU's log verbosity (`-v0` .. `-v4`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only messages CRIU always prints.
    Silent = 0,
    /// Errors.
    Errors = 1,
    /// Errors and warnings (CRIU's default).
    #[default]
    Warnings = 2,
    /// Also informational messages.
    Info = 3,
    /// Everything (large logs, slower dumps).
    Debug = 4,
}

/// How CRIU treats cgroups (`--manage-cgroups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Ignore cgroups completely.
    Ignore,
    /// Do not restore properties; the cgroups must exist.
    None,
    /// Restore properties; the cgroups must exist.
    Props,
    /// Restore properties only of cgroups CRIU created (CRIU's default).
    Soft,
    /// Always restore every cgroup and property.
    Full,
    /// Recreate everything; the cgroups must not exist yet.
    Strict,
}

impl CgroupMode {
    fn to_proto(self) -> CriuCgMode {
        match self {
            Self::Ignore => CriuCgMode::Ignore,
            Self::None => CriuCgMode::CgNone,
            Self::Props => CriuCgMode::Props,
            Self::Soft => CriuCgMode::Soft,
            Self::Full => CriuCgMode::Full,
            Self::Strict => CriuCgMode::Strict,
        }
    }
}

/// How CRIU locks the network while it dumps: a dumped network namespace,
/// or each established TCP connection of a tree sharing CRIU's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkLock {
    /// iptables-restore (CRIU's default; needs the iptables package).
    Iptables,
    /// nftables through libnftables (CRIU 3.16+).
    Nftables,
    /// No locking: the caller takes care (CRIU 3.19+).
    Skip,
}

impl std::fmt::Display for NetworkLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
            Self::Skip => "skip",
        })
    }
}

impl NetworkLock {
    fn to_proto(self) -> CriuNetworkLockMethod {
        match self {
            Self::Iptables => CriuNetworkLockMethod::Iptables,
            Self::Nftables => CriuNetworkLockMethod::Nftables,
            Self::Skip => CriuNetworkLockMethod::Skip,
        }
    }

    fn since(self) -> CriuVersion {
        match self {
            Self::Iptables | Self::Nftables => CriuVersion::new(3, 16, 0),
            Self::Skip => CriuVersion::new(3, 19, 0),
        }
    }
}

/// How pre-dump reads memory (CRIU 3.14+).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreDumpMode {
    /// Parasite code and splice (CRIU's default).
    #[default]
    Splice,
    /// `process_vm_readv` after the tasks are unfrozen: a shorter freeze.
    VmRead,
}

/// An external resource, in CRIU's `--external` syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct External(String);

impl External {
    /// A mount at `mountpoint` dumped as external under `key` (`mnt[PATH]:KEY`);
    /// at restore, `mount(key, source)` maps the key back to a source path.
    pub fn mount(mountpoint: &str, key: &str) -> Self {
        Self(format!("mnt[{mountpoint}]:{key}"))
    }

    /// A device `major:minor` known as `name` (`dev[MAJ/MIN]:NAME`).
    pub fn device(major: u32, minor: u32, name: &str) -> Self {
        Self(format!("dev[{major}/{minor}]:{name}"))
    }

    /// A file by mount id and inode (`file[MNT_ID:INODE]`).
    pub fn file(mnt_id: u64, inode: u64) -> Self {
        Self(format!("file[{mnt_id:x}:{inode:x}]"))
    }

    /// A tty by rdev and dev (`tty[RDEV:DEV]`).
    pub fn tty(rdev: u64, dev: u64) -> Self {
        Self(format!("tty[{rdev:x}:{dev:x}]"))
    }

    /// A unix socket by inode (`unix[INODE]`).
    pub fn unix_socket(inode: u64) -> Self {
        Self(format!("unix[{inode}]"))
    }

    /// A network namespace by inode, restored from inherit-fd `label`
    /// (`net[INODE]:LABEL`).
    pub fn net_namespace(inode: u64, label: &str) -> Self {
        Self(format!("net[{inode}]:{label}"))
    }

    /// A pid namespace by inode, restored from inherit-fd `label`
    /// (`pid[INODE]:LABEL`; CRIU 3.15+).
    pub fn pid_namespace(inode: u64, label: &str) -> Self {
        Self(format!("pid[{inode}]:{label}"))
    }

    /// A veth pair: `inside` in the restored namespace, `outside` on the host
    /// (`veth[INSIDE]:OUTSIDE`).
    pub fn veth(inside: &str, outside: &str) -> Self {
        Self(format!("veth[{inside}]:{outside}"))
    }

    /// A macvlan device (`macvlan[INSIDE]:OUTSIDE`).
    pub fn macvlan(inside: &str, outside: &str) -> Self {
        Self(format!("macvlan[{inside}]:{outside}"))
    }

    /// Any specification CRIU accepts, as written on its command line.
    pub fn raw(spec: impl Into<String>) -> Self {
        Self(spec.into())
    }

    /// The specification text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn since(&self) -> Option<(&'static str, CriuVersion)> {
        self.0
            .starts_with("pid[")
            .then_some(("external pid namespace", CriuVersion::new(3, 15, 0)))
    }
}

impl std::fmt::Display for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a dump sends its pages.
#[derive(Debug, Clone, Copy)]
pub enum PageServerTarget<'a> {
    /// Connect to a page server.
    Address {
        /// Host name or address.
        address: &'a str,
        /// TCP port.
        port: u16,
    },
    /// Use this connected socket (placed in CRIU's descriptor table).
    Socket(BorrowedFd<'a>),
}

/// TLS for page-server connections (CRIU 3.13+). Paths are in CRIU's view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Certificate revocation list.
    pub ca_crl: Option<PathBuf>,
    /// Our certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Our private key (PEM).
    pub key: Option<PathBuf>,
    /// Do not check the peer's common name.
    pub no_cn_verify: bool,
}

/// Cgroup handling shared by dump and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cgroups {
    /// `--manage-cgroups` mode; CRIU's default is soft.
    pub mode: Option<CgroupMode>,
    /// Restore: new root per controller (`None` means every controller).
    pub roots: Vec<(Option<String>, String)>,
    /// Properties to restore, inline (CRIU's YAML-like format).
    pub props: Option<String>,
    /// Properties to restore, from a file.
    pub props_file: Option<PathBuf>,
    /// Dump only these controllers.
    pub dump_controllers: Vec<String>,
    /// A pre-mounted cgroup yard (CRIU 3.14+).
    pub yard: Option<PathBuf>,
}

/// Mount handling shared by dump and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// Detect external mounts automatically.
    pub auto_ext_mnt: bool,
    /// Allow external shared mounts.
    pub ext_sharing: bool,
    /// Allow external master mounts.
    pub ext_masters: bool,
    /// Mount points to skip.
    pub skip: Vec<String>,
    /// File systems to dump as-is ("all" is allowed).
    pub enable_fs: Vec<String>,
    /// Deprecated key/value mount map (`ext_mnt`); prefer [`External::mount`].
    pub ext_mount_map: Vec<(String, String)>,
    /// Use CRIU's old mount engine (CRIU 3.17+).
    pub compat_mode: bool,
}

/// What every request with options shares: logging and the work directory.
#[derive(Debug, Clone, Default)]
pub struct Common<'a> {
    /// Where CRIU writes its log and statistics; the images directory if
    /// `None`.
    pub work_dir: Option<BorrowedFd<'a>>,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log file name inside the work directory (a bare name); the client
    /// picks one per request type when `None`.
    pub log_file: Option<String>,
    /// Log to CRIU's standard error instead of a file (CRIU 3.19+).
    pub log_to_stderr: bool,
    /// A CRIU configuration file whose options override these (CRIU 3.11+).
    pub config_file: Option<PathBuf>,
    /// CRIU's non-root mode with CAP_CHECKPOINT_RESTORE (CRIU 3.18+).
    pub unprivileged: bool,
    /// Print statistics on CRIU's standard output (CRIU 3.19+).
    pub display_stats: bool,
    /// Skip the access-mode check of opened files (CRIU 3.18+).
    pub skip_file_rwx_check: bool,
    /// CPU capabilities to check (`--cpu-cap`), CRIU's bitmask.
    pub cpu_cap: Option<u32>,
}

/// Dump options shared by DUMP, PRE_DUMP and SINGLE_PRE_DUMP.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions<'a> {
    /// Keep the tree running after the dump.
    pub leave_running: bool,
    /// Leave the tree stopped after the dump (CRIU 3.19+; wins over
    /// `leave_running`).
    pub leave_stopped: bool,
    /// Checkpoint established TCP connections (repair mode).
    pub tcp_established: bool,
    /// Dump established TCP connections without their state; a restore
    /// gives them back closed (CRIU 3.12+).
    pub tcp_close: bool,
    /// Skip half-open TCP sockets.
    pub tcp_skip_in_flight: bool,
    /// Allow external unix sockets.
    pub ext_unix_sk: bool,
    /// Deprecated list of external unix socket inodes.
    pub ext_unix_sk_inodes: Vec<u32>,
    /// The tree is a shell job (session, process group and tty from CRIU).
    pub shell_job: bool,
    /// Dump file locks.
    pub file_locks: bool,
    /// Allow link-remap of unlinked but open files.
    pub link_remap: bool,
    /// Use any path to a device file whose original path is gone.
    pub evasive_devices: bool,
    /// Resolve inotify/fanotify watch paths.
    pub force_irmap: bool,
    /// Where to look for inotify/fanotify paths.
    pub irmap_scan_paths: Vec<String>,
    /// Punch superseded pages out of the parent images.
    pub auto_dedup: bool,
    /// Do not dump the network namespace's contents (`--empty-ns net`).
    pub empty_net_ns: bool,
    /// Turn on soft-dirty memory tracking (needs kernel support).
    pub track_mem: bool,
    /// Parent images directory, relative to the images directory.
    pub parent_img: Option<String>,
    /// Send pages to a page server instead of writing them.
    pub page_server: Option<PageServerTarget<'a>>,
    /// External resources.
    pub external: Vec<External>,
    /// Mount handling.
    pub mounts: Mounts,
    /// Cgroup handling.
    pub cgroups: Cgroups,
    /// Freeze through this cgroup instead of ptrace interrupts.
    pub freeze_cgroup: Option<PathBuf>,
    /// Seconds allowed for freezing (CRIU's default 10).
    pub freeze_timeout: Option<u32>,
    /// Largest deleted file carried in the images, in bytes.
    pub ghost_limit: Option<u32>,
    /// How to lock the network.
    pub network_lock: Option<NetworkLock>,
    /// TLS for the page-server connection.
    pub tls: Option<Tls>,
    /// An AF_UNIX datagram socket keeping pidfds across iterations (CRIU 3.16+).
    pub pidfd_store: Option<BorrowedFd<'a>>,
}

/// DUMP: checkpoint the tree rooted at `pid`.
#[derive(Debug, Clone)]
pub struct DumpRequest<'a> {
    /// Root of the tree.
    pub pid: u32,
    /// Where the images go.
    pub images_dir: BorrowedFd<'a>,
    /// Logging and work directory.
    pub common: Common<'a>,
    /// How to dump.
    pub options: DumpOptions<'a>,
    /// Post-copy: keep lazily restorable pages out of the images and serve
    /// them on this TCP port after the dump (CRIU 3.5+).
    pub lazy_pages_port: Option<u16>,
    /// Where CRIU writes one byte when a lazy-pages server is ready
    /// (obsolete in CRIU; prefer the status-ready notification).
    pub status_fd: Option<BorrowedFd<'a>>,
}

impl<'a> DumpRequest<'a> {
    /// A dump of `pid` into `images_dir` with default options.
    pub fn new(pid: u32, images_dir: BorrowedFd<'a>) -> Self {
        Self {
            pid,
            images_dir,
            common: Common::default(),
            options: DumpOptions::default(),
            lazy_pages_port: None,
            status_fd: None,
        }
    }
}

/// PRE_DUMP (in a session) or SINGLE_PRE_DUMP: copy memory while the tree
/// keeps running. Needs soft-dirty memory tracking.
#[derive(Debug, Clone)]
pub struct PreDumpRequest<'a> {
    /// Root of the tree.
    pub pid: u32,
    /// Where the images go.
    pub images_dir: BorrowedFd<'a>,
    /// Logging and work directory.
    pub common: Common<'a>,
    /// How to dump (`track_mem` is forced on by CRIU).
    pub options: DumpOptions<'a>,
    /// How memory is read.
    pub mode: PreDumpMode,
}

impl<'a> PreDumpRequest<'a> {
    /// A pre-dump of `pid` into `images_dir` with default options.
    pub fn new(pid: u32, images_dir: BorrowedFd<'a>) -> Self {
        Self {
            pid,
            images_dir,
            common: Common::default(),
            options: DumpOptions::default(),
            mode: PreDumpMode::default(),
        }
    }
}

/// A descriptor CRIU inherits and uses for an image resource.
#[derive(Debug, Clone, Copy)]
pub struct InheritFd<'a> {
    /// The resource key in the images, e.g. `pipe:[12345]`.
    pub key: &'a str,
    /// The descriptor to use for it.
    pub fd: BorrowedFd<'a>,
}

/// A namespace to restore into (`--join-ns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinNamespace {
    /// `ipc`, `net`, `time`, `user` or `uts`.
    pub kind: String,
    /// A path (`/proc/PID/ns/net`) or a pid.
    pub file: String,
    /// For `user`: `UID,GID`.
    pub extra: Option<String>,
}

/// Restore options.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions<'a> {
    /// Root directory of the restored tree.
    pub root: Option<PathBuf>,
    /// Restore the root as a child of the caller (so the caller can wait for
    /// it and is told of its exit).
    pub rst_sibling: bool,
    /// Descriptors for external resources.
    pub inherit_fds: Vec<InheritFd<'a>>,
    /// Existing namespaces to restore into.
    pub join_ns: Vec<JoinNamespace>,
    /// Deprecated veth pairs; prefer [`External::veth`].
    pub veths: Vec<(String, String)>,
    /// Start with an empty network namespace.
    pub empty_net_ns: bool,
    /// After a successful restore, CRIU's process execs this command.
    pub exec_cmd: Vec<String>,
    /// Restore established TCP connections.
    pub tcp_established: bool,
    /// Restore connected TCP sockets closed (CRIU 3.12+).
    pub tcp_close: bool,
    /// Allow external unix sockets.
    pub ext_unix_sk: bool,
    /// The tree is a shell job.
    pub shell_job: bool,
    /// Restore file locks.
    pub file_locks: bool,
    /// Allow link-remap files.
    pub link_remap: bool,
    /// Use any path to a device file whose original path is gone.
    pub evasive_devices: bool,
    /// Skip sysctls this kernel lacks.
    pub weak_sysctls: bool,
    /// Hand the master side of an inherited pty to the caller through the
    /// orphan-pts-master notification (needs notifications).
    pub orphan_pts_master: bool,
    /// Post-copy: fetch pages on demand through `criu lazy-pages`.
    pub lazy_pages: bool,
    /// Punch pages out of the images as they are restored.
    pub auto_dedup: bool,
    /// External resources (e.g. `mnt[KEY]:SOURCE` for mounts).
    pub external: Vec<External>,
    /// Mount handling.
    pub mounts: Mounts,
    /// Cgroup handling.
    pub cgroups: Cgroups,
    /// The lock method used at dump, so that the right one is released.
    pub network_lock: Option<NetworkLock>,
    /// LSM profile, `apparmor:NAME` or `selinux:CONTEXT` (CRIU 3.12+).
    pub lsm_profile: Option<String>,
    /// LSM mount context (CRIU 3.16+).
    pub lsm_mount_context: Option<String>,
    /// Where CRIU writes one byte when ready (obsolete in CRIU).
    pub status_fd: Option<BorrowedFd<'a>>,
}

/// RESTORE: recreate a tree from images.
#[derive(Debug, Clone)]
pub struct RestoreRequest<'a> {
    /// The images.
    pub images_dir: BorrowedFd<'a>,
    /// Logging and work directory.
    pub common: Common<'a>,
    /// How to restore.
    pub options: RestoreOptions<'a>,
}

impl<'a> RestoreRequest<'a> {
    /// A restore from `images_dir` with default options.
    pub fn new(images_dir: BorrowedFd<'a>) -> Self {
        Self {
            images_dir,
            common: Common::default(),
            options: RestoreOptions::default(),
        }
    }
}

/// How a page server runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageServerMode {
    /// A child of this session's CRIU (PAGE_SERVER_CHLD): its pid is known
    /// and [`crate::Session::wait_pid`] waits for it.
    #[default]
    Child,
    /// A daemon (PAGE_SERVER); CRIU 4.1 reports no pid for it.
    Daemon,
}

/// PAGE_SERVER / PAGE_SERVER_CHLD: receive pages into `images_dir`.
#[derive(Debug, Clone)]
pub struct PageServerRequest<'a> {
    /// Where received pages go.
    pub images_dir: BorrowedFd<'a>,
    /// Logging and work directory.
    pub common: Common<'a>,
    /// Where to listen, or a connected socket to serve.
    pub listen: PageServerTarget<'a>,
    /// Child or daemon.
    pub mode: PageServerMode,
    /// Parent images directory, relative to the images directory.
    pub parent_img: Option<String>,
    /// Punch superseded pages out of the parent images.
    pub auto_dedup: bool,
    /// Serve the pages of existing images on demand to a `criu lazy-pages`
    /// daemon instead of receiving pages.
    pub lazy_pages: bool,
    /// TLS for the connection.
    pub tls: Option<Tls>,
    /// Where CRIU writes one byte when it listens (obsolete in CRIU).
    pub status_fd: Option<BorrowedFd<'a>>,
}

impl<'a> PageServerRequest<'a> {
    /// A page server on `address:port` (port 0: the kernel picks one).
    pub fn listen(images_dir: BorrowedFd<'a>, address: &'a str, port: u16) -> Self {
        Self {
            images_dir,
            common: Common::default(),
            listen: PageServerTarget::Address { address, port },
            mode: PageServerMode::Child,
            parent_img: None,
            auto_dedup: false,
            lazy_pages: false,
            tls: None,
            status_fd: None,
        }
    }
}

/// CHECK, CPUINFO_DUMP and CPUINFO_CHECK: a request that needs only an
/// images directory (CPUINFO reads and writes `cpuinfo.img` there).
#[derive(Debug, Clone)]
pub struct ImagesRequest<'a> {
    /// The images directory.
    pub images_dir: BorrowedFd<'a>,
    /// Logging and work directory.
    pub common: Common<'a>,
}

impl<'a> ImagesRequest<'a> {
    /// A request on `images_dir` with default options.
    pub fn new(images_dir: BorrowedFd<'a>) -> Self {
        Self {
            images_dir,
            common: Common::default(),
        }
    }
}

/// A request option the options cannot express, found before CRIU starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// CRIU takes only a bare name and creates it in the work directory.
    #[error(
        "log file {0:?} must be a bare file name without '/'; set the work directory to place it"
    )]
    LogFilePath(String),
    /// PID 0 means "dump yourself" to CRIU, which is never what a caller wants.
    #[error("pid 0 is not a process; give the pid of the tree's root")]
    ZeroPid,
    /// Two options that exclude each other.
    #[error("{0} and {1} cannot be used together")]
    Conflict(&'static str, &'static str),
    /// The parent images path must be relative to the images directory.
    #[error(
        "parent images path {0:?} must be relative to the images directory (for example ../1)"
    )]
    AbsoluteParent(String),
}

/// An option the running CRIU is too old for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The option, as a user would name it.
    pub option: &'static str,
    /// The first CRIU that has it.
    pub since: CriuVersion,
}

/// Collects descriptors CRIU must inherit and numbers them from 4 up
/// (3 is the RPC socket).
#[derive(Debug, Default)]
pub(crate) struct FdPlan<'a> {
    pub passed: Vec<PassFd<'a>>,
}

impl<'a> FdPlan<'a> {
    fn pass(&mut self, fd: BorrowedFd<'a>) -> i32 {
        let target = crate::transport::SWRK_FD + 1 + self.passed.len() as RawFd;
        self.passed.push(PassFd { fd, target });
        target
    }
}

/// A request that becomes `criu_opts`.
pub(crate) trait IntoOpts<'a> {
    /// Builds the options, placing inherited descriptors in `fds`.
    fn to_opts(&self, fds: &mut FdPlan<'a>) -> Result<CriuOpts, OptionError>;
    /// Options that need a CRIU newer than 3.0.
    fn gates(&self) -> Vec<Gate>;
    /// The common part (work directory, log file).
    fn common(&self) -> &Common<'a>;
    /// The images directory.
    fn images_dir(&self) -> BorrowedFd<'a>;
}

fn gate(gates: &mut Vec<Gate>, used: bool, option: &'static str, since: (u32, u32, u32)) {
    if used {
        gates.push(Gate {
            option,
            since: CriuVersion::new(since.0, since.1, since.2),
        });
    }
}

fn path_string(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

fn set_if(flag: bool) -> Option<bool> {
    flag.then_some(true)
}

impl Common<'_> {
    fn apply(&self, opts: &mut CriuOpts, default_log: &str) -> Result<(), OptionError> {
        let log_file = self.log_file.as_deref().unwrap_or(default_log);
        if log_file.contains('/') {
            return Err(OptionError::LogFilePath(log_file.to_owned()));
        }
        opts.log_level = Some(self.log_level as i32);
        if self.log_to_stderr {
            opts.log_to_stderr = Some(true);
        } else {
            opts.log_file = Some(log_file.to_owned());
        }
        opts.work_dir_fd = self.work_dir.map(|fd| fd.as_raw_fd());
        opts.config_file = self.config_file.as_deref().map(path_string);
        opts.unprivileged = set_if(self.unprivileged);
        opts.display_stats = set_if(self.display_stats);
        opts.skip_file_rwx_check = set_if(self.skip_file_rwx_check);
        opts.cpu_cap = self.cpu_cap;
        Ok(())
    }

    fn gates(&self, gates: &mut Vec<Gate>) {
        gate(gates, self.log_to_stderr, "log to stderr", (3, 19, 0));
        gate(gates, self.config_file.is_some(), "config file", (3, 11, 0));
        gate(gates, self.unprivileged, "unprivileged mode", (3, 18, 0));
        gate(gates, self.display_stats, "display stats", (3, 19, 0));
        gate(
            gates,
            self.skip_file_rwx_check,
            "skip file rwx check",
            (3, 18, 0),
        );
    }
}

impl Tls {
    fn apply(&self, opts: &mut CriuOpts) {
        opts.tls = Some(true);
        opts.tls_cacert = self.ca_cert.as_deref().map(path_string);
        opts.tls_cacrl = self.ca_crl.as_deref().map(path_string);
        opts.tls_cert = self.cert.as_deref().map(path_string);
        opts.tls_key = self.key.as_deref().map(path_string);
        opts.tls_no_cn_verify = set_if(self.no_cn_verify);
    }
}

impl Cgroups {
    fn apply(&self, opts: &mut CriuOpts) {
        if let Some(mode) = self.mode {
            opts.set_manage_cgroups_mode(mode.to_proto());
        }
        opts.cg_root = self
            .roots
            .iter()
            .map(|(ctrl, path)| CgroupRoot {
                ctrl: ctrl.clone(),
                path: path.clone(),
            })
            .collect();
        opts.cgroup_props = self.props.clone();
        opts.cgroup_props_file = self.props_file.as_deref().map(path_string);
        opts.cgroup_dump_controller = self.dump_controllers.clone();
        opts.cgroup_yard = self.yard.as_deref().map(path_string);
    }

    fn gates(&self, gates: &mut Vec<Gate>) {
        gate(gates, self.yard.is_some(), "cgroup yard", (3, 14, 0));
    }
}

impl Mounts {
    fn apply(&self, opts: &mut CriuOpts) {
        opts.auto_ext_mnt = set_if(self.auto_ext_mnt);
        opts.ext_sharing = set_if(self.ext_sharing);
        opts.ext_masters = set_if(self.ext_masters);
        opts.skip_mnt = self.skip.clone();
        opts.enable_fs = self.enable_fs.clone();
        opts.ext_mnt = self
            .ext_mount_map
            .iter()
            .map(|(key, val)| ExtMountMap {
                key: key.clone(),
                val: val.clone(),
            })
            .collect();
        opts.mntns_compat_mode = set_if(self.compat_mode);
    }

    fn gates(&self, gates: &mut Vec<Gate>) {
        gate(
            gates,
            self.compat_mode,
            "mount namespace compat mode",
            (3, 17, 0),
        );
    }
}

fn external_gates(external: &[External], gates: &mut Vec<Gate>) {
    for (option, since) in external.iter().filter_map(External::since) {
        gates.push(Gate { option, since });
    }
}

fn check_parent(parent: &Option<String>) -> Result<(), OptionError> {
    match parent {
        Some(p) if p.starts_with('/') => Err(OptionError::AbsoluteParent(p.clone())),
        _ => Ok(()),
    }
}

fn page_server_info<'a>(target: &PageServerTarget<'a>, fds: &mut FdPlan<'a>) -> CriuPageServerInfo {
    match *target {
        PageServerTarget::Address { address, port } => CriuPageServerInfo {
            address: Some(address.to_owned()),
            port: Some(i32::from(port)),
            ..Default::default()
        },
        PageServerTarget::Socket(fd) => CriuPageServerInfo {
            fd: Some(fds.pass(fd)),
            ..Default::default()
        },
    }
}

impl<'a> DumpOptions<'a> {
    fn apply(&self, opts: &mut CriuOpts, fds: &mut FdPlan<'a>) -> Result<(), OptionError> {
        check_parent(&self.parent_img)?;
        opts.leave_running = set_if(self.leave_running);
        opts.leave_stopped = set_if(self.leave_stopped);
        opts.tcp_established = set_if(self.tcp_established);
        opts.tcp_close = set_if(self.tcp_close);
        opts.tcp_skip_in_flight = set_if(self.tcp_skip_in_flight);
        opts.ext_unix_sk = set_if(self.ext_unix_sk || !self.ext_unix_sk_inodes.is_empty());
        opts.unix_sk_ino = self
            .ext_unix_sk_inodes
            .iter()
            .map(|&inode| UnixSk { inode })
            .collect();
        opts.shell_job = set_if(self.shell_job);
        opts.file_locks = set_if(self.file_locks);
        opts.link_remap = set_if(self.link_remap);
        opts.evasive_devices = set_if(self.evasive_devices);
        opts.force_irmap = set_if(self.force_irmap);
        opts.irmap_scan_paths = self.irmap_scan_paths.clone();
        opts.auto_dedup = set_if(self.auto_dedup);
        opts.track_mem = set_if(self.track_mem);
        opts.empty_ns = self.empty_net_ns.then_some(libc::CLONE_NEWNET as u32);
        opts.parent_img = self.parent_img.clone();
        opts.ps = self.page_server.as_ref().map(|t| page_server_info(t, fds));
        opts.external = self.external.iter().map(|e| e.0.clone()).collect();
        self.mounts.apply(opts);
        self.cgroups.apply(opts);
        opts.freeze_cgroup = self.freeze_cgroup.as_deref().map(path_string);
        opts.timeout = self.freeze_timeout;
        opts.ghost_limit = self.ghost_limit;
        if let Some(lock) = self.network_lock {
            opts.set_network_lock(lock.to_proto());
        }
        if let Some(tls) = &self.tls {
            tls.apply(opts);
        }
        opts.pidfd_store_sk = self.pidfd_store.map(|fd| fd.as_raw_fd());
        Ok(())
    }

    fn gates(&self, gates: &mut Vec<Gate>) {
        gate(gates, self.leave_stopped, "leave stopped", (3, 19, 0));
        gate(gates, self.tcp_close, "tcp-close", (3, 12, 0));
        gate(gates, self.tls.is_some(), "TLS", (3, 13, 0));
        gate(gates, self.pidfd_store.is_some(), "pidfd store", (3, 16, 0));
        if let Some(lock) = self.network_lock {
            gates.push(Gate {
                option: "network lock method",
                since: lock.since(),
            });
        }
        external_gates(&self.external, gates);
        self.mounts.gates(gates);
        self.cgroups.gates(gates);
    }
}

impl<'a> IntoOpts<'a> for DumpRequest<'a> {
    fn to_opts(&self, fds: &mut FdPlan<'a>) -> Result<CriuOpts, OptionError> {
        if self.pid == 0 {
            return Err(OptionError::ZeroPid);
        }
        if self.lazy_pages_port.is_some() && self.options.page_server.is_some() {
            return Err(OptionError::Conflict("lazy pages", "a page server"));
        }
        if self.options.tcp_close && self.options.tcp_established {
            return Err(OptionError::Conflict("tcp-close", "tcp-established"));
        }
        let mut opts = CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            pid: Some(self.pid as i32),
            ..Default::default()
        };
        self.common.apply(&mut opts, "dump.log")?;
        self.options.apply(&mut opts, fds)?;
        if let Some(port) = self.lazy_pages_port {
            opts.lazy_pages = Some(true);
            opts.ps = Some(CriuPageServerInfo {
                port: Some(i32::from(port)),
                ..Default::default()
            });
        }
        opts.status_fd = self.status_fd.map(|fd| fd.as_raw_fd());
        Ok(opts)
    }

    fn gates(&self) -> Vec<Gate> {
        let mut gates = Vec::new();
        self.common.gates(&mut gates);
        self.options.gates(&mut gates);
        gate(
            &mut gates,
            self.lazy_pages_port.is_some(),
            "lazy pages",
            (3, 5, 0),
        );
        gates
    }

    fn common(&self) -> &Common<'a> {
        &self.common
    }

    fn images_dir(&self) -> BorrowedFd<'a> {
        self.images_dir
    }
}

impl<'a> IntoOpts<'a> for PreDumpRequest<'a> {
    fn to_opts(&self, fds: &mut FdPlan<'a>) -> Result<CriuOpts, OptionError> {
        if self.pid == 0 {
            return Err(OptionError::ZeroPid);
        }
        let mut opts = CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            pid: Some(self.pid as i32),
            ..Default::default()
        };
        self.common.apply(&mut opts, "pre-dump.log")?;
        self.options.apply(&mut opts, fds)?;
        // CRIU forces tracking on for pre-dumps; saying so keeps the parent
        // inventory usable for pid-reuse detection.
        opts.track_mem = Some(true);
        opts.set_pre_dump_mode(match self.mode {
            PreDumpMode::Splice => CriuPreDumpMode::Splice,
            PreDumpMode::VmRead => CriuPreDumpMode::VmRead,
        });
        Ok(opts)
    }

    fn gates(&self) -> Vec<Gate> {
        let mut gates = Vec::new();
        self.common.gates(&mut gates);
        self.options.gates(&mut gates);
        gate(
            &mut gates,
            self.mode != PreDumpMode::Splice,
            "pre-dump mode",
            (3, 14, 0),
        );
        gates
    }

    fn common(&self) -> &Common<'a> {
        &self.common
    }

    fn images_dir(&self) -> BorrowedFd<'a> {
        self.images_dir
    }
}

impl<'a> IntoOpts<'a> for RestoreRequest<'a> {
    fn to_opts(&self, fds: &mut FdPlan<'a>) -> Result<CriuOpts, OptionError> {
        let o = &self.options;
        if o.tcp_close && o.tcp_established {
            return Err(OptionError::Conflict("tcp-close", "tcp-established"));
        }
        let mut opts = CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            ..Default::default()
        };
        self.common.apply(&mut opts, "restore.log")?;
        opts.root = o.root.as_deref().map(path_string);
        opts.rst_sibling = set_if(o.rst_sibling);
        opts.inherit_fd = o
            .inherit_fds
            .iter()
            .map(|i| ProtoInheritFd {
                key: i.key.to_owned(),
                fd: fds.pass(i.fd),
            })
            .collect();
        opts.join_ns = o
            .join_ns
            .iter()
            .map(|j| ProtoJoinNamespace {
                ns: j.kind.clone(),
                ns_file: j.file.clone(),
                extra_opt: j.extra.clone(),
            })
            .collect();
        opts.veths = o
            .veths
            .iter()
            .map(|(inside, outside)| CriuVethPair {
                if_in: inside.clone(),
                if_out: outside.clone(),
            })
            .collect();
        // CRIU accepts only CLONE_NEWNET here.
        opts.empty_ns = o.empty_net_ns.then_some(libc::CLONE_NEWNET as u32);
        opts.exec_cmd = o.exec_cmd.clone();
        opts.tcp_established = set_if(o.tcp_established);
        opts.tcp_close = set_if(o.tcp_close);
        opts.ext_unix_sk = set_if(o.ext_unix_sk);
        opts.shell_job = set_if(o.shell_job);
        opts.file_locks = set_if(o.file_locks);
        opts.link_remap = set_if(o.link_remap);
        opts.evasive_devices = set_if(o.evasive_devices);
        opts.weak_sysctls = set_if(o.weak_sysctls);
        opts.orphan_pts_master = set_if(o.orphan_pts_master);
        opts.lazy_pages = set_if(o.lazy_pages);
        opts.auto_dedup = set_if(o.auto_dedup);
        opts.external = o.external.iter().map(|e| e.0.clone()).collect();
        o.mounts.apply(&mut opts);
        o.cgroups.apply(&mut opts);
        if let Some(lock) = o.network_lock {
            opts.set_network_lock(lock.to_proto());
        }
        opts.lsm_profile = o.lsm_profile.clone();
        opts.lsm_mount_context = o.lsm_mount_context.clone();
        opts.status_fd = o.status_fd.map(|fd| fd.as_raw_fd());
        Ok(opts)
    }

    fn gates(&self) -> Vec<Gate> {
        let o = &self.options;
        let mut gates = Vec::new();
        self.common.gates(&mut gates);
        gate(&mut gates, o.tcp_close, "tcp-close", (3, 12, 0));
        gate(&mut gates, o.lazy_pages, "lazy pages", (3, 5, 0));
        gate(
            &mut gates,
            o.lsm_profile.is_some(),
            "LSM profile",
            (3, 12, 0),
        );
        gate(
            &mut gates,
            o.lsm_mount_context.is_some(),
            "LSM mount context",
            (3, 16, 0),
        );
        if let Some(lock) = o.network_lock {
            gates.push(Gate {
                option: "network lock method",
                since: lock.since(),
            });
        }
        external_gates(&o.external, &mut gates);
        o.mounts.gates(&mut gates);
        o.cgroups.gates(&mut gates);
        gates
    }

    fn common(&self) -> &Common<'a> {
        &self.common
    }

    fn images_dir(&self) -> BorrowedFd<'a> {
        self.images_dir
    }
}

impl<'a> IntoOpts<'a> for PageServerRequest<'a> {
    fn to_opts(&self, fds: &mut FdPlan<'a>) -> Result<CriuOpts, OptionError> {
        check_parent(&self.parent_img)?;
        let mut opts = CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            ..Default::default()
        };
        self.common.apply(&mut opts, "page-server.log")?;
        opts.ps = Some(page_server_info(&self.listen, fds));
        opts.parent_img = self.parent_img.clone();
        opts.auto_dedup = set_if(self.auto_dedup);
        opts.lazy_pages = set_if(self.lazy_pages);
        if let Some(tls) = &self.tls {
            tls.apply(&mut opts);
        }
        opts.status_fd = self.status_fd.map(|fd| fd.as_raw_fd());
        Ok(opts)
    }

    fn gates(&self) -> Vec<Gate> {
        let mut gates = Vec::new();
        self.common.gates(&mut gates);
        gate(&mut gates, self.tls.is_some(), "TLS", (3, 13, 0));
        gate(
            &mut gates,
            self.mode == PageServerMode::Child,
            "page server as a child",
            (3, 7, 0),
        );
        gates
    }

    fn common(&self) -> &Common<'a> {
        &self.common
    }

    fn images_dir(&self) -> BorrowedFd<'a> {
        self.images_dir
    }
}

impl<'a> IntoOpts<'a> for ImagesRequest<'a> {
    fn to_opts(&self, _fds: &mut FdPlan<'a>) -> Result<CriuOpts, OptionError> {
        let mut opts = CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            ..Default::default()
        };
        self.common.apply(&mut opts, "images.log")?;
        Ok(opts)
    }

    fn gates(&self) -> Vec<Gate> {
        let mut gates = Vec::new();
        self.common.gates(&mut gates);
        gates
    }

    fn common(&self) -> &Common<'a> {
        &self.common
    }

    fn images_dir(&self) -> BorrowedFd<'a> {
        self.images_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn dump_options_map_to_criu_fields() {
        let dir = std::fs::File::open("/").unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut req = DumpRequest::new(42, dir.as_fd());
        req.options.leave_running = true;
        req.options.tcp_established = true;
        req.options.external = vec![External::mount("/data", "data"), External::unix_socket(7)];
        req.options.page_server = Some(PageServerTarget::Socket(a.as_fd()));
        req.options.network_lock = Some(NetworkLock::Nftables);
        req.options.cgroups.mode = Some(CgroupMode::Full);
        req.common.log_level = LogLevel::Debug;
        let mut plan = FdPlan::default();
        let opts = req.to_opts(&mut plan).unwrap();
        assert_eq!(opts.images_dir_fd, dir.as_raw_fd());
        assert_eq!(opts.pid, Some(42));
        assert_eq!(opts.leave_running, Some(true));
        assert_eq!(opts.tcp_established, Some(true));
        assert_eq!(opts.shell_job, None, "unset flags stay off the wire");
        assert_eq!(opts.external, vec!["mnt[/data]:data", "unix[7]"]);
        // The socket is numbered in CRIU's table, right after the RPC socket.
        assert_eq!(opts.ps.as_ref().unwrap().fd, Some(4));
        assert_eq!(plan.passed.len(), 1);
        assert_eq!(opts.network_lock(), CriuNetworkLockMethod::Nftables);
        assert_eq!(opts.manage_cgroups_mode(), CriuCgMode::Full);
        assert_eq!(
            (opts.log_level, opts.log_file.as_deref()),
            (Some(4), Some("dump.log"))
        );
        drop(b);
        let gates = req.gates();
        assert!(gates.iter().any(|g| g.option == "network lock method"));
    }

    #[test]
    fn restore_numbers_inherited_fds_in_criu_table() {
        let dir = std::fs::File::open("/").unwrap();
        let (r1, w1) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut req = RestoreRequest::new(dir.as_fd());
        req.options.inherit_fds = vec![
            InheritFd {
                key: "pipe:[1]",
                fd: r1.as_fd(),
            },
            InheritFd {
                key: "pipe:[2]",
                fd: w1.as_fd(),
            },
        ];
        req.options.rst_sibling = true;
        req.options.empty_net_ns = true;
        let mut plan = FdPlan::default();
        let opts = req.to_opts(&mut plan).unwrap();
        let numbers: Vec<i32> = opts.inherit_fd.iter().map(|i| i.fd).collect();
        assert_eq!(numbers, vec![4, 5]);
        assert_eq!(
            plan.passed.iter().map(|p| p.target).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(opts.empty_ns, Some(0x4000_0000));
        assert_eq!(opts.rst_sibling, Some(true));
        assert_eq!(opts.pid, None);
    }

    #[test]
    fn bad_options_are_refused_before_criu_starts() {
        let dir = std::fs::File::open("/").unwrap();
        let mut req = DumpRequest::new(1, dir.as_fd());
        req.common.log_file = Some("logs/dump.log".into());
        assert!(matches!(
            req.to_opts(&mut FdPlan::default()),
            Err(OptionError::LogFilePath(_))
        ));
        let req = DumpRequest::new(0, dir.as_fd());
        assert_eq!(
            req.to_opts(&mut FdPlan::default()).unwrap_err(),
            OptionError::ZeroPid
        );
        let mut req = DumpRequest::new(1, dir.as_fd());
        req.options.parent_img = Some("/abs".into());
        assert!(matches!(
            req.to_opts(&mut FdPlan::default()),
            Err(OptionError::AbsoluteParent(_))
        ));
        let mut req = DumpRequest::new(1, dir.as_fd());
        req.lazy_pages_port = Some(1234);
        req.options.page_server = Some(PageServerTarget::Address {
            address: "h",
            port: 1,
        });
        assert!(matches!(
            req.to_opts(&mut FdPlan::default()),
            Err(OptionError::Conflict(..))
        ));
    }

    #[test]
    fn pre_dump_forces_tracking_and_sets_mode() {
        let dir = std::fs::File::open("/").unwrap();
        let mut req = PreDumpRequest::new(9, dir.as_fd());
        req.mode = PreDumpMode::VmRead;
        req.options.parent_img = Some("../1".into());
        let opts = req.to_opts(&mut FdPlan::default()).unwrap();
        assert_eq!(opts.track_mem, Some(true));
        assert_eq!(opts.pre_dump_mode(), CriuPreDumpMode::VmRead);
        assert_eq!(opts.parent_img.as_deref(), Some("../1"));
        assert_eq!(opts.log_file.as_deref(), Some("pre-dump.log"));
    }

    #[test]
    fn external_helpers_write_criu_syntax() {
        assert_eq!(External::device(1, 3, "null").as_str(), "dev[1/3]:null");
        assert_eq!(
            External::net_namespace(4026531993, "extRootNetNS").as_str(),
            "net[4026531993]:extRootNetNS"
        );
        assert_eq!(
            External::veth("eth0", "veth42").as_str(),
            "veth[eth0]:veth42"
        );
        assert_eq!(
            External::pid_namespace(1, "x").since().unwrap().1,
            CriuVersion::new(3, 15, 0)
        );
    }
}
