//! Facts about the host that decide what checkpoint/restore can do here.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The smallest `fs.pipe-max-size` with which CRIU's lazy-pages server works
/// without CAP_SYS_RESOURCE: it sizes a pipe to 819 pages (3,354,624 bytes).
pub const LAZY_PAGES_PIPE_SIZE: u64 = 819 * 4096;
/// What setup writes to `fs.pipe-max-size`.
pub const RECOMMENDED_PIPE_MAX_SIZE: u64 = 4 * 1024 * 1024;

const PIPE_MAX_SIZE: &str = "/proc/sys/fs/pipe-max-size";

/// Which cgroup hierarchies the host mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Only the unified (v2) hierarchy, at /sys/fs/cgroup.
    V2,
    /// Only per-controller (v1) hierarchies.
    V1,
    /// v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// No cgroup hierarchy is mounted.
    None,
}

impl std::fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V2 => "v2 (unified)",
            Self::V1 => "v1",
            Self::Hybrid => "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)",
            Self::None => "none mounted",
        })
    }
}

/// Reads the cgroup layout from `/proc/self/mountinfo`.
pub fn cgroup_layout() -> CgroupLayout {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cgroup_layout_from(&mountinfo)
}

fn cgroup_layout_from(mountinfo: &str) -> CgroupLayout {
    let (mut v1, mut v2_root, mut v2_elsewhere) = (false, false, false);
    for line in mountinfo.lines() {
        // Fields: ... mount-point (5th) ... " - " fstype source options.
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        match right.split(' ').next() {
            Some("cgroup") => v1 = true,
            Some("cgroup2") if mount_point == "/sys/fs/cgroup" => v2_root = true,
            Some("cgroup2") => v2_elsewhere = true,
            _ => {}
        }
    }
    match (v1, v2_root || v2_elsewhere) {
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::V1,
        (false, true) => CgroupLayout::V2,
        (false, false) => CgroupLayout::None,
    }
}

/// `fs.pipe-max-size`, if readable.
pub fn pipe_max_size() -> Option<u64> {
    std::fs::read_to_string(PIPE_MAX_SIZE)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Who we run as, as far as checkpoint/restore cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Privilege {
    /// Effective uid 0.
    pub root: bool,
    /// CAP_SYS_ADMIN in the effective set (what CRIU needs as root).
    pub cap_sys_admin: bool,
    /// CAP_CHECKPOINT_RESTORE in the effective set (CRIU's non-root mode).
    pub cap_checkpoint_restore: bool,
    /// CAP_SYS_RESOURCE: without it, `fs.pipe-max-size` limits lazy pages.
    pub cap_sys_resource: bool,
}

/// Reads the effective uid and capabilities of this process.
pub fn privilege() -> Privilege {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| cap_eff & (1 << bit) != 0;
    Privilege {
        root: nix::unistd::geteuid().is_root(),
        cap_sys_admin: has(21),
        cap_checkpoint_restore: has(40),
        cap_sys_resource: has(24),
    }
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Finds an executable on `PATH` or in the sbin directories (which a
/// non-login root shell may lack on its `PATH`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Sets `IFF_UP` on the interface `name` of the calling thread's network
/// namespace (`ip link set NAME up`), through `socket` (any inet socket).
pub fn set_interface_up(socket: BorrowedFd<'_>, name: &str) -> std::io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    // SAFETY: ifreq is plain data (a name and a union of integers and
    // addresses); all zeroes is a valid value of it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the
    // flags into the request, which lives across the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled ifru_flags, the union's active field.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads the request.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `ip` is an address of this network namespace: binding a socket
/// to it works (EADDRNOTAVAIL says it is not here). IPv6 link-local
/// addresses need an interface and are taken as present.
pub fn address_is_local(ip: std::net::IpAddr) -> bool {
    if let std::net::IpAddr::V6(v6) = ip {
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return true;
        }
    }
    match std::net::UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / / rw - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";

    #[test]
    fn reads_cgroup_layouts() {
        assert_eq!(cgroup_layout_from(HYBRID), CgroupLayout::Hybrid);
        assert_eq!(
            cgroup_layout_from("31 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            CgroupLayout::V2
        );
        assert_eq!(
            cgroup_layout_from("32 1 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            CgroupLayout::V1
        );
        assert_eq!(cgroup_layout_from("garbage\n\n"), CgroupLayout::None);
    }

    #[test]
    fn lazy_pages_pipe_size_matches_criu() {
        assert_eq!(LAZY_PAGES_PIPE_SIZE, 3_354_624);
        const { assert!(RECOMMENDED_PIPE_MAX_SIZE >= LAZY_PAGES_PIPE_SIZE) };
    }
}
