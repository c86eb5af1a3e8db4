//! What a checkpoint holds, as plain serialisable values.

use std::path::PathBuf;

use criu_rpc::{DumpStats, RestoreStats};
use serde::Serialize;

/// One checkpoint: the decoded contents of an images directory.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpoint {
    /// The images directory.
    pub dir: PathBuf,
    /// `inventory.img`.
    pub inventory: Inventory,
    /// The CRIU that wrote the images, when known (from its dump log or the
    /// archive manifest; CRIU does not record it in the images).
    pub criu_version: Option<String>,
    /// The architecture of the dumped tasks (`x86_64`, `aarch64`, ...).
    pub arch: Option<String>,
    /// The page size used for byte counts (this host's).
    pub page_size: u64,
    /// Every process, in `pstree.img` order (parents before children).
    pub processes: Vec<Process>,
    /// Every dumped mount namespace.
    pub mount_namespaces: Vec<MountNamespace>,
    /// `stats-dump`, when the directory holds it.
    pub dump_stats: Option<DumpStats>,
    /// `stats-restore`, when the directory holds it.
    pub restore_stats: Option<RestoreStats>,
    /// Every file of the directory, with its kind and size.
    pub images: Vec<ImageInfo>,
    /// Totals over processes and images.
    pub summary: Summary,
    /// Things that look wrong but do not stop the decoding.
    pub warnings: Vec<String>,
}

/// `inventory.img`: how the images were written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// 2 is the current format ("v1.1").
    pub img_version: u32,
    /// `fdinfo-*.img` are per files id (else per pid).
    pub fdinfo_per_id: bool,
    /// Namespace images are per namespace id.
    pub ns_per_id: bool,
    /// The LSM the tasks ran under (`none`, `selinux`, `apparmor`).
    pub lsm: Option<String>,
    /// TCP connections are closed at restore.
    pub tcp_close: bool,
    /// How the network was locked (`iptables`, `nftables`, `skip`).
    pub network_lock: Option<String>,
    /// The pre-dump mode of a pre-dump (`splice`, `read`).
    pub pre_dump_mode: Option<String>,
    /// System uptime at dump time in microseconds (with memory tracking).
    pub dump_uptime_us: Option<u64>,
    /// CRIU's identifier of the dump run (CRIU 4.0+).
    pub criu_run_id: Option<String>,
}

/// One process of the tree.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// Pid inside the dumped pid namespace.
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    /// Every thread id, the leader first.
    pub threads: Vec<u32>,
    /// The command name (`/proc/PID/comm`, at most 15 characters).
    pub command: String,
    /// `alive`, `stopped`, `zombie`, `dead`, `helper`.
    pub state: String,
    /// The exit code of a zombie or dead task.
    pub exit_code: Option<u32>,
    /// The executable's path.
    pub exe: Option<String>,
    /// The working directory.
    pub cwd: Option<String>,
    /// The root directory.
    pub root: Option<String>,
    /// The id of its mount namespace (names `mountpoints-<id>.img`).
    pub mnt_ns_id: Option<u32>,
    /// The address space, absent for zombies.
    pub memory: Option<Memory>,
    /// Open descriptors, by number.
    pub files: Vec<OpenFile>,
}

/// The address space of one process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Mapped regions.
    pub vmas: usize,
    /// Bytes mapped (sum of the regions' sizes).
    pub mapped_bytes: u64,
    /// Of those, private anonymous memory (heap, stacks, `malloc`).
    pub anon_private_bytes: u64,
    /// Of those, shared anonymous memory and SysV shared memory.
    pub anon_shared_bytes: u64,
    /// Of those, file mappings (executables, libraries, `mmap`ed files).
    pub file_bytes: u64,
    /// Pages whose contents are in the images (`pages-<id>.img`).
    pub pages_dumped: u64,
    /// Bytes of those pages.
    pub dumped_bytes: u64,
    /// Of the dumped pages, those a lazy restore may fetch on demand.
    pub pages_lazy_capable: u64,
    /// Pages left out because the parent images have them.
    pub pages_in_parent: u64,
    /// Pages left out for a lazy (post-copy) restore: they are not in the
    /// images and come from the source's page server.
    pub pages_lazy: u64,
    /// The page file (`pages-<id>.img`).
    pub pages_image: Option<String>,
}

/// One open descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct OpenFile {
    pub fd: u32,
    /// `file`, `pipe`, `fifo`, `tcp`, `udp`, `unix`, `tty`, `memfd`,
    /// `eventfd`, `eventpoll`, `inotify`, `signalfd`, `timerfd`, ...
    pub kind: String,
    /// `r`, `w` or `rw`, when known.
    pub access: Option<String>,
    /// A path, `pipe:[ino]`, socket addresses, a terminal...
    pub description: String,
    /// Closed on exec.
    pub cloexec: bool,
}

/// The mounts of one mount namespace.
#[derive(Debug, Clone, Serialize)]
pub struct MountNamespace {
    pub id: u32,
    pub mounts: Vec<Mount>,
}

/// One mount.
#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub id: u32,
    pub parent_id: u32,
    /// Where, relative to the namespace's root (`/`, `/proc`, ...).
    pub mountpoint: String,
    /// The root of the mount inside its file system.
    pub root: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
    /// Mounted from outside the dumped tree; CRIU needs it given back at
    /// restore.
    pub external: bool,
    /// The key of an external mount.
    pub external_key: Option<String>,
}

/// One file of the images directory.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    /// The image type from its magic (`core`, `pagemap`, ...), `pages`
    /// (raw page data), `raw`, or `other` (logs, JSON).
    pub kind: String,
    pub size: u64,
}

/// Totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub processes: usize,
    pub threads: usize,
    pub image_files: usize,
    pub image_bytes: u64,
    /// Bytes in `pages-*.img`.
    pub pages_bytes: u64,
    pub mapped_bytes: u64,
    pub pages_dumped: u64,
    pub dumped_bytes: u64,
    pub pages_in_parent: u64,
    pub pages_lazy: u64,
    pub open_files: usize,
    pub mounts: usize,
}
