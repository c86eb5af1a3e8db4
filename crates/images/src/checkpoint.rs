//! Opening an images directory: every file's magic is checked, then the
//! images crabmigrate understands are decoded into a [`Checkpoint`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use criu_proto::images::{
    CoreEntry, FdinfoEntry, FileEntry, FsEntry, InventoryEntry, MmEntry, MntEntry, PagemapEntry,
    PagemapHead, PstreeEntry, TaskKobjIdsEntry, TtyInfoEntry,
};

use crate::magic;
use crate::model::*;
use crate::read::{self, ImageError};

/// The most files looked at in one directory.
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// The most processes decoded.
pub const MAX_PROCESSES: usize = 1 << 16;

/// Pagemap flags (CRIU `criu/include/pagemap.h`).
pub const PE_PARENT: u32 = 1 << 0;
pub const PE_LAZY: u32 = 1 << 1;
pub const PE_PRESENT: u32 = 1 << 2;

/// VMA status bits (CRIU `criu/include/image.h`).
const VMA_FILE_PRIVATE: u32 = 1 << 6;
const VMA_FILE_SHARED: u32 = 1 << 7;
const VMA_ANON_SHARED: u32 = 1 << 8;
const VMA_ANON_PRIVATE: u32 = 1 << 9;
const VMA_AREA_SYSVIPC: u32 = 1 << 10;
const VMA_AREA_MEMFD: u32 = 1 << 14;

/// Why a directory could not be opened as a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be listed.
    #[error("cannot list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a checkpoint at all.
    #[error(
        "{0} holds no checkpoint (no inventory.img); point at a directory written by checkpoint"
    )]
    NotCheckpoint(PathBuf),
    /// More files than any checkpoint has.
    #[error("{0} holds more than {MAX_DIR_ENTRIES} files")]
    TooManyFiles(PathBuf),
    /// An image is damaged or of an unknown kind.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The image format is one crabmigrate does not read.
    #[error("{path} is in image format version {version}; crabmigrate reads version 2 (CRIU 1.1 and later)")]
    Version { path: PathBuf, version: u32 },
    /// A statistics file is damaged.
    #[error(transparent)]
    Stats(#[from] criu_rpc::StatsError),
}

/// One file of the directory as first seen.
struct Listed {
    name: String,
    size: u64,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: checks every image's magic and
    /// decodes what crabmigrate understands.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let listed = list(dir)?;
        if !listed.iter().any(|f| f.name == "inventory.img") {
            return Err(OpenError::NotCheckpoint(dir.to_path_buf()));
        }
        let images = check_magics(dir, &listed)?;
        let page_size = host_page_size();
        let mut cp = Checkpoint {
            dir: dir.to_path_buf(),
            inventory: Inventory::default(),
            criu_version: None,
            arch: None,
            page_size,
            processes: Vec::new(),
            mount_namespaces: Vec::new(),
            dump_stats: None,
            restore_stats: None,
            images,
            summary: Summary::default(),
            warnings: Vec::new(),
        };
        let inventory_path = dir.join("inventory.img");
        let inv: InventoryEntry = read::single(&inventory_path, magic::INVENTORY, "inventory")?;
        if inv.img_version != 2 {
            return Err(OpenError::Version {
                path: inventory_path,
                version: inv.img_version,
            });
        }
        cp.inventory = inventory(&inv);

        let tree: Vec<PstreeEntry> =
            read::entries(&dir.join("pstree.img"), magic::PSTREE, "pstree")?;
        if tree.len() > MAX_PROCESSES {
            cp.warnings.push(format!(
                "pstree.img lists {} processes; only the first {MAX_PROCESSES} are shown",
                tree.len()
            ));
        }
        let names: std::collections::HashSet<&str> =
            cp.images.iter().map(|i| i.name.as_str()).collect();
        let has = |n: &str| names.contains(n);
        let files = if has("files.img") {
            read::entries::<FileEntry>(&dir.join("files.img"), magic::FILES, "file")?
                .into_iter()
                .map(|f| (f.id, f))
                .collect()
        } else {
            HashMap::new()
        };
        let ttys: HashMap<u32, TtyInfoEntry> = if has("tty-info.img") {
            read::entries::<TtyInfoEntry>(&dir.join("tty-info.img"), magic::TTY_INFO, "tty-info")?
                .into_iter()
                .map(|t| (t.id, t))
                .collect()
        } else {
            HashMap::new()
        };
        let ctx = Context {
            dir,
            files: &files,
            ttys: &ttys,
            page_size,
        };
        let mut fdinfo_cache: HashMap<String, Vec<FdinfoEntry>> = HashMap::new();
        let mut pages_by_id: BTreeMap<u32, u64> = BTreeMap::new();
        for entry in tree.iter().take(MAX_PROCESSES) {
            let p = ctx.process(
                entry,
                &has,
                cp.inventory.fdinfo_per_id,
                &mut fdinfo_cache,
                &mut pages_by_id,
                &mut cp.arch,
            )?;
            cp.processes.push(p);
        }
        // Cross-check: each page file holds exactly the dumped pages of the
        // pagemaps that name it.
        for (id, pages) in &pages_by_id {
            let name = format!("pages-{id}.img");
            let Some(size) = cp.images.iter().find(|i| i.name == name).map(|i| i.size) else {
                if *pages > 0 {
                    cp.warnings.push(format!(
                        "{name} is missing but the pagemaps say it holds {pages} pages"
                    ));
                }
                continue;
            };
            let want = pages.saturating_mul(page_size);
            if size != want {
                cp.warnings.push(format!(
                    "{name} is {size} bytes but the pagemaps account for {pages} pages ({want} bytes)"
                ));
            }
        }
        for image in &cp.images {
            let Some(id) = image
                .name
                .strip_prefix("mountpoints-")
                .and_then(|s| s.strip_suffix(".img"))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let mounts: Vec<MntEntry> =
                read::entries(&dir.join(&image.name), magic::MNTS, "mount")?;
            cp.mount_namespaces.push(MountNamespace {
                id,
                mounts: {
                    let mut list: Vec<Mount> = mounts.iter().map(mount).collect();
                    list.sort_by_key(|m| m.id);
                    list
                },
            });
        }
        if has("stats-dump") {
            cp.dump_stats = criu_rpc::read_dump_stats(dir)?;
        }
        if has("stats-restore") {
            cp.restore_stats = criu_rpc::read_restore_stats(dir)?;
        }
        cp.criu_version = criu_version(dir);
        cp.summary = summarise(&cp);
        Ok(cp)
    }
}

/// Lists the regular files of `dir` (sorted by name).
fn list(dir: &Path) -> Result<Vec<Listed>, OpenError> {
    let list_err = |source| OpenError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        if out.len() >= MAX_DIR_ENTRIES {
            return Err(OpenError::TooManyFiles(dir.to_path_buf()));
        }
        let entry = entry.map_err(list_err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = entry.metadata().map_err(list_err)?;
        if !meta.is_file() {
            continue;
        }
        out.push(Listed {
            name,
            size: meta.len(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Checks the header of every image and names its kind.
fn check_magics(dir: &Path, listed: &[Listed]) -> Result<Vec<ImageInfo>, OpenError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(listed.len());
    for f in listed {
        let is_img = f.name.ends_with(".img");
        let is_stats = f.name == "stats-dump" || f.name == "stats-restore";
        let kind = if f.name.starts_with("pages-") && is_img {
            "pages".to_owned()
        } else if is_img && magic::is_raw(&f.name) {
            "raw".to_owned()
        } else if is_img || is_stats || f.name == "irmap-cache" {
            let path = dir.join(&f.name);
            let mut head = [0u8; 8];
            let mut file = std::fs::File::open(&path).map_err(|source| ImageError::Read {
                path: path.clone(),
                source,
            })?;
            let mut got = 0;
            while got < head.len() {
                match file.read(&mut head[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(ImageError::Read {
                            path: path.clone(),
                            source,
                        }
                        .into())
                    }
                }
            }
            let header = read::header(&path, &head[..got])?;
            let expected = if is_stats {
                Some(magic::STATS)
            } else {
                magic::expected_for(&f.name)
            };
            if let Some(expected) = expected {
                read::expect_header(&path, &head[..got], expected)?;
            }
            magic::name(header.magic()).unwrap_or("unknown").to_owned()
        } else {
            "other".to_owned()
        };
        out.push(ImageInfo {
            name: f.name.clone(),
            kind,
            size: f.size,
        });
    }
    Ok(out)
}

fn inventory(inv: &InventoryEntry) -> Inventory {
    Inventory {
        img_version: inv.img_version,
        fdinfo_per_id: inv.fdinfo_per_id.unwrap_or(false),
        ns_per_id: inv.ns_per_id.unwrap_or(false),
        lsm: inv.lsmtype.map(|l| {
            match l {
                0 => "none",
                1 => "selinux",
                2 => "apparmor",
                _ => "unknown",
            }
            .to_owned()
        }),
        tcp_close: inv.tcp_close.unwrap_or(false),
        network_lock: inv.network_lock_method.map(|m| {
            match m {
                // CRIU's own numbering here, not the RPC one.
                0 => "iptables".to_owned(),
                1 => "nftables".to_owned(),
                2 => "skip".to_owned(),
                other => format!("method {other}"),
            }
        }),
        pre_dump_mode: inv.pre_dump_mode.map(|m| match m {
            1 => "splice".to_owned(),
            2 => "read".to_owned(),
            other => format!("mode {other}"),
        }),
        dump_uptime_us: inv.dump_uptime,
        criu_run_id: inv.dump_criu_run_id.clone(),
    }
}

/// What the per-process decoding shares.
struct Context<'a> {
    dir: &'a Path,
    files: &'a HashMap<u32, FileEntry>,
    ttys: &'a HashMap<u32, TtyInfoEntry>,
    page_size: u64,
}

impl Context<'_> {
    fn process(
        &self,
        entry: &PstreeEntry,
        has: &dyn Fn(&str) -> bool,
        fdinfo_per_id: bool,
        fdinfo_cache: &mut HashMap<String, Vec<FdinfoEntry>>,
        pages_by_id: &mut BTreeMap<u32, u64>,
        arch: &mut Option<String>,
    ) -> Result<Process, OpenError> {
        let pid = entry.pid;
        let core: CoreEntry = read::single(
            &self.dir.join(format!("core-{pid}.img")),
            magic::CORE,
            "core",
        )?;
        if arch.is_none() {
            *arch = Some(arch_name(core.mtype));
        }
        let tc = core.tc.unwrap_or_default();
        let state = task_state(tc.task_state);
        let ids = match core.ids {
            Some(ids) => Some(ids),
            None if has(&format!("ids-{pid}.img")) => Some(read::single::<TaskKobjIdsEntry>(
                &self.dir.join(format!("ids-{pid}.img")),
                magic::IDS,
                "ids",
            )?),
            None => None,
        };
        let mut p = Process {
            pid,
            ppid: entry.ppid,
            pgid: entry.pgid,
            sid: entry.sid,
            threads: if entry.threads.is_empty() {
                vec![pid]
            } else {
                entry.threads.clone()
            },
            command: tc.comm.clone(),
            exit_code: matches!(tc.task_state, 2 | 6).then_some(tc.exit_code),
            state: state.to_owned(),
            exe: None,
            cwd: None,
            root: None,
            mnt_ns_id: ids.as_ref().and_then(|i| i.mnt_ns_id),
            memory: None,
            files: Vec::new(),
        };
        let mm_name = format!("mm-{pid}.img");
        if has(&mm_name) {
            let mm: MmEntry = read::single(&self.dir.join(&mm_name), magic::MM, "mm")?;
            p.exe = self.path_of(mm.exe_file_id);
            let mut memory = memory_of(&mm);
            let pagemap = format!("pagemap-{pid}.img");
            if has(&pagemap) {
                self.pages(&pagemap, &mut memory, pages_by_id)?;
            }
            p.memory = Some(memory);
        }
        let fs_name = format!("fs-{pid}.img");
        if has(&fs_name) {
            let fs: FsEntry = read::single(&self.dir.join(&fs_name), magic::FS, "fs")?;
            p.cwd = self.path_of(fs.cwd_id);
            p.root = self.path_of(fs.root_id);
        }
        let fdinfo = match (&ids, fdinfo_per_id) {
            (Some(ids), true) => format!("fdinfo-{}.img", ids.files_id),
            _ => format!("fdinfo-{pid}.img"),
        };
        if has(&fdinfo) {
            if !fdinfo_cache.contains_key(&fdinfo) {
                let fds: Vec<FdinfoEntry> =
                    read::entries(&self.dir.join(&fdinfo), magic::FDINFO, "fdinfo")?;
                fdinfo_cache.insert(fdinfo.clone(), fds);
            }
            if let Some(fds) = fdinfo_cache.get(&fdinfo) {
                p.files = fds.iter().map(|fd| self.open_file(fd)).collect();
                p.files.sort_by_key(|f| f.fd);
            }
        }
        Ok(p)
    }

    /// Adds the pagemap's counts to `memory`.
    fn pages(
        &self,
        name: &str,
        memory: &mut Memory,
        pages_by_id: &mut BTreeMap<u32, u64>,
    ) -> Result<(), OpenError> {
        let path = self.dir.join(name);
        let bytes = read::read_file(&path)?;
        let header = read::expect_header(&path, &bytes, magic::PAGEMAP)?;
        let raw = read::raw_entries(&path, &bytes, header.size())?;
        let Some((head, rest)) = raw.split_first() else {
            return Err(ImageError::Entry {
                path,
                offset: header.size(),
                why: "no pagemap head".into(),
            }
            .into());
        };
        let head: PagemapHead = read::decode(&path, head, "pagemap head")?;
        memory.pages_image = Some(format!("pages-{}.img", head.pages_id));
        for body in rest {
            let e: PagemapEntry = read::decode(&path, body, "pagemap")?;
            let pages = e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages));
            let flags = e.flags.unwrap_or(if e.in_parent.unwrap_or(false) {
                PE_PARENT
            } else {
                PE_PRESENT
            });
            if flags & PE_PRESENT != 0 {
                memory.pages_dumped = memory.pages_dumped.saturating_add(pages);
                if flags & PE_LAZY != 0 {
                    memory.pages_lazy_capable = memory.pages_lazy_capable.saturating_add(pages);
                }
            } else if flags & PE_PARENT != 0 {
                memory.pages_in_parent = memory.pages_in_parent.saturating_add(pages);
            } else if flags & PE_LAZY != 0 {
                memory.pages_lazy = memory.pages_lazy.saturating_add(pages);
            }
        }
        memory.dumped_bytes = memory.pages_dumped.saturating_mul(self.page_size);
        let total = pages_by_id.entry(head.pages_id).or_default();
        *total = total.saturating_add(memory.pages_dumped);
        Ok(())
    }

    /// The path of regular file `id`.
    fn path_of(&self, id: u32) -> Option<String> {
        self.files
            .get(&id)
            .and_then(|f| f.reg.as_ref())
            .map(|r| r.name.clone())
    }

    fn open_file(&self, fd: &FdinfoEntry) -> OpenFile {
        const FD_CLOEXEC: u32 = 1;
        let file = self.files.get(&fd.id);
        let (kind, access, description) = match file {
            Some(f) => self.describe(f),
            None => (
                fd_type_name(fd.r#type).to_owned(),
                None,
                format!("file {} (not in files.img)", fd.id),
            ),
        };
        OpenFile {
            fd: fd.fd,
            kind,
            access,
            description,
            cloexec: fd.flags & FD_CLOEXEC != 0,
        }
    }

    fn describe(&self, f: &FileEntry) -> (String, Option<String>, String) {
        let access = |flags: u32| {
            Some(
                match flags & 3 {
                    0 => "r",
                    1 => "w",
                    _ => "rw",
                }
                .to_owned(),
            )
        };
        let kind = fd_type_name(f.r#type).to_owned();
        match f.r#type {
            1 => match &f.reg {
                Some(r) => ("file".into(), access(r.flags), r.name.clone()),
                None => (kind, None, "regular file (no details)".into()),
            },
            2 => match &f.pipe {
                Some(p) => (
                    "pipe".into(),
                    access(p.flags),
                    format!("pipe:[{}]", p.pipe_id),
                ),
                None => (kind, None, "pipe".into()),
            },
            3 => match &f.fifo {
                Some(p) => {
                    let path = p.regf_id.and_then(|id| self.path_of(id));
                    let access = p
                        .regf_id
                        .and_then(|id| self.files.get(&id))
                        .and_then(|r| r.reg.as_ref())
                        .and_then(|r| access(r.flags));
                    let desc = match path {
                        Some(path) => format!("{path} (fifo:[{}])", p.pipe_id),
                        None => format!("fifo:[{}]", p.pipe_id),
                    };
                    ("fifo".into(), access, desc)
                }
                None => (kind, None, "fifo".into()),
            },
            4 => match &f.isk {
                Some(s) => inet(s),
                None => (kind, None, "inet socket".into()),
            },
            5 => match &f.usk {
                Some(s) => ("unix".into(), None, unix(s)),
                None => (kind, None, "unix socket".into()),
            },
            11 => match &f.tty {
                Some(t) => {
                    let path = t
                        .regf_id
                        .and_then(|id| self.path_of(id))
                        .or_else(|| self.ttys.get(&t.tty_info_id).map(tty_path));
                    (
                        "tty".into(),
                        access(t.flags),
                        path.unwrap_or_else(|| format!("tty {}", t.tty_info_id)),
                    )
                }
                None => (kind, None, "terminal".into()),
            },
            18 => match &f.memfd {
                Some(m) => (
                    "memfd".into(),
                    access(m.flags),
                    format!("memfd (inode {})", m.inode_id),
                ),
                None => (kind, None, "memfd".into()),
            },
            16 => (
                "external".into(),
                None,
                "external file (given at restore)".into(),
            ),
            _ => {
                let desc = kind.clone();
                (kind, None, desc)
            }
        }
    }
}

fn memory_of(mm: &MmEntry) -> Memory {
    let mut m = Memory {
        vmas: mm.vmas.len(),
        ..Memory::default()
    };
    for v in &mm.vmas {
        let len = v.end.saturating_sub(v.start);
        m.mapped_bytes = m.mapped_bytes.saturating_add(len);
        if v.status & (VMA_ANON_SHARED | VMA_AREA_SYSVIPC) != 0 {
            m.anon_shared_bytes = m.anon_shared_bytes.saturating_add(len);
        } else if v.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED | VMA_AREA_MEMFD) != 0 {
            m.file_bytes = m.file_bytes.saturating_add(len);
        } else if v.status & VMA_ANON_PRIVATE != 0 {
            m.anon_private_bytes = m.anon_private_bytes.saturating_add(len);
        }
    }
    m
}

fn inet(s: &criu_proto::images::InetSkEntry) -> (String, Option<String>, String) {
    let kind = match (s.proto, s.r#type) {
        (6, _) | (_, 1) => "tcp",
        (17, _) | (_, 2) => "udp",
        (136, _) => "udplite",
        _ => "inet",
    };
    let kind = if s.family == 10 {
        format!("{kind}6")
    } else {
        kind.to_owned()
    };
    let addr = |words: &[u32], port: u32| -> String {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        match bytes.len() {
            4 => format!("{}.{}.{}.{}:{port}", bytes[0], bytes[1], bytes[2], bytes[3]),
            16 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&bytes);
                format!("[{}]:{port}", std::net::Ipv6Addr::from(octets))
            }
            0 => format!("*:{port}"),
            _ => format!("?:{port}"),
        }
    };
    let state = tcp_state(s.state);
    let local = addr(&s.src_addr, s.src_port);
    let desc = if s.state == 10 || s.dst_port == 0 {
        format!("{local} ({state})")
    } else {
        format!("{local} -> {} ({state})", addr(&s.dst_addr, s.dst_port))
    };
    (kind, None, desc)
}

fn tcp_state(state: u32) -> &'static str {
    match state {
        1 => "established",
        2 => "syn-sent",
        3 => "syn-recv",
        4 => "fin-wait1",
        5 => "fin-wait2",
        6 => "time-wait",
        7 => "close",
        8 => "close-wait",
        9 => "last-ack",
        10 => "listen",
        11 => "closing",
        _ => "unknown state",
    }
}

fn unix(s: &criu_proto::images::UnixSkEntry) -> String {
    let ty = match s.r#type {
        1 => "stream",
        2 => "dgram",
        5 => "seqpacket",
        _ => "socket",
    };
    let name = match s.name.first() {
        None => String::new(),
        Some(0) => format!(
            "@{}",
            String::from_utf8_lossy(&s.name[1..]).trim_end_matches('\0')
        ),
        Some(_) => {
            let n = String::from_utf8_lossy(&s.name)
                .trim_end_matches('\0')
                .to_owned();
            match &s.name_dir {
                Some(dir) if !n.starts_with('/') => format!("{dir}/{n}"),
                _ => n,
            }
        }
    };
    let state = match s.state {
        1 => "connected",
        7 => "unconnected",
        10 => "listening",
        _ => "",
    };
    let mut out = format!("{ty} [{}]", s.ino);
    if !name.is_empty() {
        out.push(' ');
        out.push_str(&name);
    }
    if s.peer != 0 {
        out.push_str(&format!(" -> [{}]", s.peer));
    }
    if !state.is_empty() {
        out.push_str(&format!(" ({state})"));
    }
    if s.deleted.unwrap_or(false) {
        out.push_str(" (deleted)");
    }
    out
}

fn tty_path(t: &TtyInfoEntry) -> String {
    match (t.r#type, &t.pty) {
        (1, Some(pty)) => format!("/dev/pts/{}", pty.index),
        (1, None) => "/dev/pts/?".into(),
        (2, _) => "/dev/console".into(),
        (3, _) => "/dev/tty (virtual terminal)".into(),
        (4, _) => "/dev/tty".into(),
        (5, _) => "external terminal".into(),
        (6, _) => "serial terminal".into(),
        _ => "terminal".into(),
    }
}

fn mount(m: &MntEntry) -> Mount {
    let mountpoint = match m.mountpoint.strip_prefix('.') {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => m.mountpoint.clone(),
    };
    Mount {
        id: m.mnt_id,
        parent_id: m.parent_mnt_id,
        mountpoint,
        root: m.root.clone(),
        fstype: match m.fsname.as_deref() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => fstype_name(m.fstype).to_owned(),
        },
        source: m.source.clone(),
        options: m.options.clone(),
        external: m.ext_mount.unwrap_or(false) || m.ext_key.is_some(),
        external_key: m.ext_key.clone(),
    }
}

/// CRIU's file-system numbers (`fstype` in mnt.proto).
fn fstype_name(n: u32) -> &'static str {
    match n {
        1 => "proc",
        2 => "sysfs",
        3 => "devtmpfs",
        4 => "binfmt_misc",
        5 => "tmpfs",
        6 => "devpts",
        7 => "simfs",
        8 => "pstore",
        9 => "securityfs",
        10 => "fusectl",
        11 => "debugfs",
        12 => "cgroup",
        13 => "aufs",
        14 => "mqueue",
        15 => "fuse",
        16 => "auto",
        17 => "overlay",
        18 => "autofs",
        19 => "tracefs",
        23 => "cgroup2",
        _ => "unsupported",
    }
}

/// Names of CRIU's descriptor types (`fd_types`).
pub fn fd_type_name(t: u32) -> &'static str {
    match t {
        1 => "file",
        2 => "pipe",
        3 => "fifo",
        4 => "inet",
        5 => "unix",
        6 => "eventfd",
        7 => "eventpoll",
        8 => "inotify",
        9 => "signalfd",
        10 => "packet",
        11 => "tty",
        12 => "fanotify",
        13 => "netlink",
        14 => "namespace",
        15 => "tun",
        16 => "external",
        17 => "timerfd",
        18 => "memfd",
        19 => "bpfmap",
        20 => "pidfd",
        _ => "unknown",
    }
}

fn task_state(s: u32) -> &'static str {
    match s {
        1 => "alive",
        2 => "dead",
        3 => "stopped",
        4 => "helper",
        5 => "thread",
        6 => "zombie",
        _ => "unknown",
    }
}

fn arch_name(mtype: u32) -> String {
    match mtype {
        1 => "x86_64",
        2 => "arm",
        3 => "aarch64",
        4 => "ppc64",
        5 => "s390",
        6 => "mips",
        7 => "loongarch64",
        8 => "riscv64",
        _ => "unknown",
    }
    .to_owned()
}

fn host_page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(4096)
}

/// The CRIU version, from the dump log's "Version:" line or an archive
/// manifest left by `import`.
fn criu_version(dir: &Path) -> Option<String> {
    use std::io::Read;
    for log in ["dump.log", "pre-dump.log"] {
        let Ok(file) = std::fs::File::open(dir.join(log)) else {
            continue;
        };
        let mut head = Vec::new();
        if file.take(64 * 1024).read_to_end(&mut head).is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&head);
        if let Some(v) = text
            .lines()
            .find_map(|l| l.split_once("Version: ").map(|(_, v)| v.trim().to_owned()))
        {
            return Some(v);
        }
    }
    crate::archive::Manifest::read(&dir.join(crate::archive::MANIFEST))
        .ok()
        .and_then(|m| m.criu_version)
}

fn summarise(cp: &Checkpoint) -> Summary {
    let mut s = Summary {
        processes: cp.processes.len(),
        threads: cp.processes.iter().map(|p| p.threads.len()).sum(),
        image_files: cp.images.len(),
        mounts: cp.mount_namespaces.iter().map(|n| n.mounts.len()).sum(),
        open_files: cp.processes.iter().map(|p| p.files.len()).sum(),
        ..Summary::default()
    };
    for i in &cp.images {
        s.image_bytes = s.image_bytes.saturating_add(i.size);
        if i.kind == "pages" {
            s.pages_bytes = s.pages_bytes.saturating_add(i.size);
        }
    }
    for m in cp.processes.iter().filter_map(|p| p.memory.as_ref()) {
        s.mapped_bytes = s.mapped_bytes.saturating_add(m.mapped_bytes);
        s.pages_dumped = s.pages_dumped.saturating_add(m.pages_dumped);
        s.dumped_bytes = s.dumped_bytes.saturating_add(m.dumped_bytes);
        s.pages_in_parent = s.pages_in_parent.saturating_add(m.pages_in_parent);
        s.pages_lazy = s.pages_lazy.saturating_add(m.pages_lazy);
    }
    s
}
