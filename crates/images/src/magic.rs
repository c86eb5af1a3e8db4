//! Image magics: the first words of every file CRIU writes, and which file
//! names carry which magic.
//!
//! Values follow CRIU's `criu/include/magic.h` (4.1.1, plus the few added
//! up to 4.2). All words are in host byte order.

/// First word of a regular image.
pub const IMG_COMMON: u32 = 0x5456_4319;
/// First word of a service file (`stats-*`, `irmap-cache`).
pub const IMG_SERVICE: u32 = 0x5510_5940;
/// `inventory.img` starts with this instead of [`IMG_COMMON`].
pub const INVENTORY: u32 = 0x5831_3116;
/// `pstree.img`.
pub const PSTREE: u32 = 0x5027_3030;
/// `core-<tid>.img`.
pub const CORE: u32 = 0x5505_3847;
/// `ids-<pid>.img`.
pub const IDS: u32 = 0x5443_2030;
/// `mm-<pid>.img`.
pub const MM: u32 = 0x5749_2820;
/// `pagemap-<pid>.img` and `pagemap-shmem-<id>.img`.
pub const PAGEMAP: u32 = 0x5608_4025;
/// `fdinfo-<files_id>.img`.
pub const FDINFO: u32 = 0x5621_3732;
/// `files.img`.
pub const FILES: u32 = 0x5630_3138;
/// `fs-<pid>.img`.
pub const FS: u32 = 0x5140_3912;
/// `mountpoints-<mnt_ns_id>.img`.
pub const MNTS: u32 = 0x5556_3928;
/// `tty-info.img`.
pub const TTY_INFO: u32 = 0x5945_3036;
/// `stats-dump` and `stats-restore`, after [`IMG_SERVICE`].
pub const STATS: u32 = 0x5709_3306;

/// Every type magic CRIU writes after [`IMG_COMMON`] or [`IMG_SERVICE`],
/// with its name.
pub const KNOWN: &[(u32, &str)] = &[
    (INVENTORY, "inventory"),
    (PSTREE, "pstree"),
    (FDINFO, "fdinfo"),
    (PAGEMAP, "pagemap"),
    (CORE, "core"),
    (IDS, "ids"),
    (0x5412_3737, "vmas"),
    (0x5651_3555, "pipes"),
    (0x5645_3709, "pipes-data"),
    (0x5836_4939, "fifo"),
    (0x5933_3054, "fifo-data"),
    (0x5534_4201, "sigacts"),
    (0x5437_3943, "unixsk"),
    (0x5644_3851, "inetsk"),
    (0x6045_4618, "packetsk"),
    (0x5746_4056, "itimers"),
    (0x5260_3957, "posix-timers"),
    (0x5626_4026, "sk-queues"),
    (0x5447_3203, "utsns"),
    (0x5402_3547, "creds"),
    (0x5311_5007, "ipcns-var"),
    (0x4628_3044, "ipcns-shm"),
    (0x5545_3737, "ipcns-msg"),
    (0x5957_3019, "ipcns-sem"),
    (0x5036_3636, "reg-files"),
    (0x5925_5641, "ext-files"),
    (FS, "fs"),
    (MM, "mm"),
    (0x5913_3954, "remap-fpath"),
    (0x5258_3605, "ghost-file"),
    (0x5146_5506, "tcp-stream"),
    (0x4452_3722, "eventfd"),
    (0x4502_3858, "eventpoll"),
    (0x4443_3746, "eventpoll-tfd"),
    (0x5732_3820, "signalfd"),
    (0x4842_4431, "inotify"),
    (0x5456_2009, "inotify-wd"),
    (MNTS, "mountpoints"),
    (0x5737_3951, "netdev"),
    (0x5593_3752, "netns"),
    (0x5943_3025, "tty"),
    (TTY_INFO, "tty-info"),
    (0x5941_3026, "tty-data"),
    (0x5432_3616, "filelocks"),
    (0x5711_3925, "rlimit"),
    (0x5509_6122, "fanotify"),
    (0x5650_6035, "fanotify-mark"),
    (0x5925_5647, "signal"),
    (0x5800_5614, "netlinksk"),
    (0x6139_4011, "ns-files"),
    (0x5714_3751, "tunfile"),
    (0x5938_3330, "cgroup"),
    (0x5049_3712, "timerfd"),
    (0x6140_4013, "cpuinfo"),
    (0x5547_4906, "userns"),
    (0x6441_3049, "seccomp"),
    (0x6734_3323, "binfmt-misc"),
    (0x4935_3943, "autofs"),
    (FILES, "files"),
    (0x4311_4433, "timens"),
    (0x6115_7326, "pidns"),
    (0x4845_3499, "memfd"),
    (0x5750_6142, "bpfmap-file"),
    (0x6432_4033, "bpfmap-data"),
    (0x5942_3047, "apparmor"),
    (0x5443_5556, "pidfd"),
    (STATS, "stats"),
    (0x5700_4059, "irmap-cache"),
];

/// The name of a type magic, if CRIU writes it.
pub fn name(magic: u32) -> Option<&'static str> {
    KNOWN.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// Prefixes of images CRIU writes without any header (raw data): pages,
/// network state dumped by `ip`/`iptables`/`nft`, tmpfs tarballs.
const RAW_PREFIXES: &[&str] = &[
    "pages-",
    "ifaddr-",
    "route-",
    "route6-",
    "rule-",
    "iptables-",
    "ip6tables-",
    "nftables-",
    "netns-ct-",
    "netns-exp-",
    "tmpfs-",
];

/// Whether `file` (a name in the images directory) is a raw image.
pub fn is_raw(file: &str) -> bool {
    RAW_PREFIXES.iter().any(|p| file.starts_with(p))
}

/// The magic CRIU writes into an image named `file`, when the name tells.
pub fn expected_for(file: &str) -> Option<u32> {
    let stem = file.strip_suffix(".img")?;
    // Per-object images are NAME-<number>.img; pagemap-shmem-<id> is a
    // pagemap too.
    let kind = match stem.rsplit_once('-') {
        Some((kind, id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) => kind,
        _ => stem,
    };
    let kind = match kind {
        "pagemap-shmem" | "pagemap-secretmem" => "pagemap",
        "sigacts" => "sigacts",
        "signal-s" | "signal-p" => "signal",
        other => other,
    };
    KNOWN.iter().find(|(_, n)| *n == kind).map(|(m, _)| *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_magics() {
        assert_eq!(expected_for("core-12.img"), Some(CORE));
        assert_eq!(expected_for("pagemap-shmem-4096.img"), Some(PAGEMAP));
        assert_eq!(expected_for("pagemap-7.img"), Some(PAGEMAP));
        assert_eq!(expected_for("files.img"), Some(FILES));
        assert_eq!(expected_for("tty-info.img"), Some(TTY_INFO));
        assert_eq!(expected_for("ghost-file-1a.img"), Some(0x5258_3605));
        assert_eq!(expected_for("mystery.img"), None);
        assert!(is_raw("pages-1.img"));
        assert!(!is_raw("pagemap-1.img"));
        assert_eq!(name(MNTS), Some("mountpoints"));
    }

    #[test]
    fn magics_are_unique() {
        for (i, (m, n)) in KNOWN.iter().enumerate() {
            assert!(
                KNOWN[i + 1..].iter().all(|(o, _)| o != m),
                "{n} duplicates {m:#x}"
            );
        }
    }
}
