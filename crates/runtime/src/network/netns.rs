//! Persistent network namespaces: a namespace bound to a file under
//! `/run/netns`, as `ip netns add` makes them (so `ip netns` and `nsenter
//! --net=` see them). A container with a network joins such a namespace;
//! CRIU treats it as external, and a restore gets a new one.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the namespaces' files are.
pub const NETNS_DIR: &str = "/run/netns";

/// Why a namespace could not be made, entered or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what} for {path}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A fresh path under [`NETNS_DIR`] for a container's namespace:
/// `crabmigrate-ID-XXXXXXXX` (unique across state roots and hosts made of
/// namespaces on one machine).
pub fn new_path(container_id: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut id: String = container_id.chars().take(200).collect();
    if id.starts_with('.') {
        id.insert(0, '_');
    }
    Path::new(NETNS_DIR).join(format!("crabmigrate-{id}-{tag:08x}"))
}

/// Creates a new network namespace bound to `path` (which must not exist),
/// with its loopback up.
///
/// A child process unshares the namespace, brings `lo` up and bind-mounts
/// its `/proc/self/ns/net` onto the file; only system calls run between
/// fork and exit, so the caller may have threads.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    let io = |what, source| NetnsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io("create", e))?;
    let result = bind_new_namespace(path);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn bind_new_namespace(path: &Path) -> Result<(), NetnsError> {
    let sys = |what, source| NetnsError::Sys {
        what,
        path: path.to_path_buf(),
        source,
    };
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| sys("name a namespace file", nix::Error::EINVAL))?;
    let source = c"/proc/self/ns/net";
    // SAFETY: the child only makes system calls (unshare, socket, ioctl,
    // mount, _exit) on data prepared before the fork, which is
    // async-signal-safe even if this process has other threads.
    match unsafe { nix::unistd::fork() }.map_err(|e| sys("fork", e))? {
        nix::unistd::ForkResult::Child => {
            let code = child_make_namespace(source, &target);
            // SAFETY: _exit ends the child at once, skipping destructors of
            // data copied from the parent, as a forked child must.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).map_err(|e| sys("wait for", e))? {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                nix::sys::wait::WaitStatus::Exited(_, code) => {
                    let (what, errno) = match code {
                        1..=99 => ("create a network namespace", code),
                        100..=199 => ("bring up the loopback", code - 100),
                        _ => ("bind-mount the namespace", code - 200),
                    };
                    Err(sys(what, nix::Error::from_raw(errno)))
                }
                _ => Err(sys("create a network namespace", nix::Error::ECHILD)),
            }
        }
    }
}

/// In the forked child: the exit code says which step failed and its errno
/// (0 success; 1..99 unshare, 100.. lo, 200.. mount).
fn child_make_namespace(source: &std::ffi::CStr, target: &CString) -> i32 {
    let errno = || nix::Error::last_raw().clamp(1, 99);
    // SAFETY: unshare takes flags only; it affects this (child) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return errno();
    }
    if let Err(e) = loopback_up() {
        return 100 + (e as i32).clamp(1, 99);
    }
    // SAFETY: both paths are NUL-terminated strings that outlive the call;
    // the other arguments are null or plain flags.
    let mounted = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if mounted != 0 {
        return 200 + errno().min(55);
    }
    0
}

/// Sets `lo` up in the calling process's namespace (SIOCSIFFLAGS).
fn loopback_up() -> Result<(), nix::Error> {
    // SAFETY: socket takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: `fd` was just returned by socket and nothing else owns it.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data, valid when zeroed.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCSIFFLAGS reads an ifreq, which `req` is, for the
    // lifetime of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Unbinds and removes the namespace file; a missing one is fine. The
/// namespace itself ends when nothing else holds it.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Sys {
                what: "unmount the network namespace",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Io {
            what: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The inode of a namespace file (`/proc/PID/ns/net` or a bound file).
pub fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether `path` is a bound network namespace (not just a leftover file).
pub fn exists(path: &Path) -> bool {
    // A bound namespace file lives on nsfs and is not the empty regular
    // file left behind on tmpfs.
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(dir))) => m.dev() != dir.dev(),
        _ => false,
    }
}

/// The calling thread's network namespace inode.
pub fn current_inode() -> Option<u64> {
    inode(Path::new("/proc/thread-self/ns/net"))
}

/// A path naming the calling thread's network namespace that other
/// processes can open later: a file under [`NETNS_DIR`] bound to it, or
/// `/proc/1/ns/net` when it is the initial one. `None` when neither.
pub fn current_path() -> Option<PathBuf> {
    let ino = current_inode()?;
    let init = PathBuf::from("/proc/1/ns/net");
    if inode(&init) == Some(ino) {
        return Some(init);
    }
    std::fs::read_dir(NETNS_DIR)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| inode(p) == Some(ino))
}

/// Opens a namespace file.
pub fn open(path: &Path) -> Result<OwnedFd, NetnsError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| NetnsError::Io {
            what: "open the network namespace",
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f` on a new thread that has entered the namespace at `path` (the
/// network namespace is per thread; the caller's thread is unaffected).
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let ns = open(path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |source| NetnsError::Sys {
                        what: "enter the network namespace",
                        path: path.to_path_buf(),
                        source,
                    },
                )?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A command that runs in the namespace at `path` (setns between fork and
/// exec).
pub fn command_in(
    path: &Path,
    program: impl AsRef<std::ffi::OsStr>,
) -> Result<std::process::Command, NetnsError> {
    use std::os::unix::process::CommandExt;
    let ns = open(path)?;
    let mut cmd = std::process::Command::new(program);
    // SAFETY: the closure runs in the child between fork and exec; setns is
    // a plain system call (async-signal-safe) on a descriptor opened before
    // the fork, so nothing is allocated or locked.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_unique_and_stay_in_the_directory() {
        let a = new_path("web");
        let b = new_path("web");
        assert_ne!(a, b);
        assert!(a.starts_with(NETNS_DIR));
        let name = new_path("..x")
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("crabmigrate-"), "{name}");
    }

    #[test]
    fn create_enter_and_remove_a_namespace() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED create_enter_and_remove_a_namespace: needs root");
            return;
        }
        let path = new_path("unit-test");
        create(&path).unwrap();
        assert!(exists(&path));
        assert_ne!(inode(&path), current_inode());
        let inside = run_in(&path, current_inode).unwrap();
        assert_eq!(inside, inode(&path));
        // A new namespace's lo has 127.0.0.1 only once it is up.
        let bound = run_in(&path, || std::net::UdpSocket::bind("127.0.0.1:0").is_ok()).unwrap();
        assert!(bound, "lo is up in the new namespace");
        assert!(create(&path).is_err(), "an existing file is refused");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
