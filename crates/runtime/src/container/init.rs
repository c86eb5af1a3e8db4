//! The container's first processes.
//!
//! `create` forks an intermediate process, which joins the cgroup and the
//! namespaces, unshares the new ones and forks the init (pid 1 of a new pid
//! namespace). The intermediate reports the init's pid and exits; the init
//! builds the file system view, waits for `start` on the `exec.fifo`, and
//! execs the user process. Both talk to `create` over a socket:
//!
//! ```text
//! create                intermediate            init
//!   |--fork-------------->|                       |
//!   |                     |--join cgroup, setns
//!   |<--"userns"----------| (with a new user namespace: unshare it first)
//!   |--uid_map, gid_map-->|
//!   |--"go"-------------->|--setresuid(0), unshare the others
//!   |                     |--fork----------------->|
//!   |<--"pid N"-----------|                        |
//!   |                     x (exits)                |--mounts (before pivot)
//!   |<--"hooks"------------------------------------|
//!   |--prestart, createRuntime hooks               |
//!   |--"go"--------------------------------------->|
//!   |                                              |--pivot_root, masks, user
//!   |<--"ready"------------------------------------|
//!   x (create returns)                             |--opens exec.fifo (blocks)
//! start: opens exec.fifo, reads one byte --------->|--execve(process.args)
//! ```
//!
//! Any failure in a child is sent as `error TEXT` and the child exits.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::{Gid, Uid};

use super::console;
use super::rootfs::{self, MountEntry};
use crate::cgroups::Cgroup;
use crate::security::{ProcessSecurity, SecurityError};

/// Everything the children need, prepared by `create` before forking so
/// that the children only act.
#[derive(Debug)]
pub struct InitConfig {
    pub rootfs: PathBuf,
    pub cgroup: Option<Cgroup>,
    /// Namespaces to join: (kind flag, open namespace file).
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// Namespaces to create, the user namespace excepted.
    pub unshare: CloneFlags,
    /// Create a user namespace first (`create` writes its id maps).
    pub new_user_ns: bool,
    pub propagation: MsFlags,
    pub mounts: Vec<MountEntry>,
    /// Whether /dev is a tmpfs that needs the default device nodes.
    pub populate_dev: bool,
    pub devices: Vec<PathBuf>,
    pub masked: Vec<PathBuf>,
    pub readonly: Vec<PathBuf>,
    pub readonly_root: bool,
    pub hostname: Option<String>,
    pub rlimits: Vec<(Resource, u64, u64)>,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Capabilities, no_new_privs, seccomp, LSM labels, umask, OOM score.
    pub security: ProcessSecurity,
    /// Move the rootfs onto / and chroot instead of pivot_root.
    pub no_pivot: bool,
    /// `linux.sysctl`, checked to be namespaced.
    pub sysctl: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// Connected console socket when `process.terminal` is set.
    pub console: Option<UnixStream>,
    /// `exec.fifo`, opened O_PATH.
    pub fifo: OwnedFd,
}

/// One line of the create protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Pid(i32),
    /// The intermediate made the user namespace; its id maps are due.
    UserNs,
    Hooks,
    Ready,
    Error(String),
}

/// Reads one message; `None` on EOF.
pub fn read_message(reader: &mut BufReader<&UnixStream>) -> std::io::Result<Option<Message>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim_end();
    Ok(Some(match line.split_once(' ') {
        Some(("pid", n)) => Message::Pid(n.parse().unwrap_or(0)),
        Some(("error", text)) => Message::Error(text.to_owned()),
        _ if line == "hooks" => Message::Hooks,
        _ if line == "userns" => Message::UserNs,
        _ if line == "ready" => Message::Ready,
        _ => Message::Error(format!(
            "unexpected message from the container init: {line:?}"
        )),
    }))
}

pub(super) fn send(sock: &UnixStream, line: &str) {
    let mut s = sock;
    let _ = s.write_all(format!("{line}\n").as_bytes());
}

/// Ends a child process at once: no destructors, no atexit handlers, no
/// flushing of buffers copied from the parent.
pub(super) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe; skipping Rust
    // destructors is intended in a forked child.
    unsafe { libc::_exit(code) }
}

/// Reports `err` (the whole chain) to `create` and exits.
pub(super) fn fail(sock: &UnixStream, err: &dyn std::error::Error) -> ! {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    send(sock, &format!("error {}", text.replace('\n', " ")));
    exit_now(1)
}

/// Why a child step failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot join the container's cgroup")]
    Cgroup(#[source] crate::cgroups::CgroupError),
    #[error("cannot {0}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("cannot prepare the root file system")]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("cannot set up the terminal")]
    Console(#[from] console::ConsoleError),
    #[error("create went away before the container was ready")]
    Parent,
    #[error("cannot wait for start on exec.fifo")]
    Fifo(#[source] nix::Error),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("cannot set sysctl {key} to {value:?}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot execute {0:?} (not found in the container's PATH or not executable)")]
    Exec(String, #[source] nix::Error),
}

fn sys<T>(what: &'static str, r: nix::Result<T>) -> Result<T, InitError> {
    r.map_err(|e| InitError::Sys(what, e))
}

/// The intermediate process: joins, unshares, forks the init. Never returns.
pub fn intermediate(config: InitConfig, sock: UnixStream) -> ! {
    if let Err(e) = enter_namespaces(&config, &sock) {
        fail(&sock, &e);
    }
    // SAFETY: this process was forked from a single-threaded `create` and is
    // itself single-threaded, so the child may run ordinary code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            send(&sock, &format!("pid {child}"));
            exit_now(0)
        }
        Ok(nix::unistd::ForkResult::Child) => init(config, sock),
        Err(e) => fail(&sock, &InitError::Sys("fork the container init", e)),
    }
}

fn enter_namespaces(config: &InitConfig, sock: &UnixStream) -> Result<(), InitError> {
    if let Some(cgroup) = &config.cgroup {
        cgroup
            .add_process(std::process::id())
            .map_err(InitError::Cgroup)?;
    }
    // A joined user namespace comes first in `join` (it owns the others).
    for (kind, file) in &config.join {
        sys("join a namespace", nix::sched::setns(file, *kind))?;
    }
    if config.new_user_ns {
        // The user namespace first, so that it owns the others; `create`
        // writes its id maps, then this process becomes its root.
        sys(
            "create the user namespace",
            nix::sched::unshare(CloneFlags::CLONE_NEWUSER),
        )?;
        send(sock, "userns");
        let mut reply = String::new();
        match BufReader::new(sock).read_line(&mut reply) {
            Ok(n) if n > 0 && reply.trim_end() == "go" => {}
            _ => return Err(InitError::Parent),
        }
        let root = nix::unistd::Gid::from_raw(0);
        sys(
            "become root in the user namespace (gid)",
            nix::unistd::setresgid(root, root, root),
        )?;
        let root = nix::unistd::Uid::from_raw(0);
        sys(
            "become root in the user namespace (uid)",
            nix::unistd::setresuid(root, root, root),
        )?;
    }
    sys("create namespaces", nix::sched::unshare(config.unshare))
}

/// The init: file system, identity, then wait for start and exec.
fn init(config: InitConfig, sock: UnixStream) -> ! {
    let result = prepare(&config, &sock).and_then(|()| {
        // Find the program now, so that a missing one fails `create` with a
        // message (as runc does) rather than the init exiting silently
        // after `start`.
        let program = find_program(&config.args, &config.env)?;
        send(&sock, "ready");
        wait_for_start(&config)?;
        config.security.before_exec()?;
        exec(&config, &program)
    });
    match result {
        Ok(never) => match never {},
        Err(e) => fail(&sock, &e),
    }
}

fn prepare(config: &InitConfig, sock: &UnixStream) -> Result<(), InitError> {
    // The init leads its own session inside its namespaces, which CRIU needs.
    sys("start a new session", nix::unistd::setsid())?;
    let rootfs = &config.rootfs;
    let new_mount_ns = config.unshare.contains(CloneFlags::CLONE_NEWNS);
    let new_netns = config.unshare.contains(CloneFlags::CLONE_NEWNET);
    if new_mount_ns {
        rootfs::prepare_root(rootfs, config.propagation)?;
        for m in &config.mounts {
            if m.kind == rootfs::MountKind::Cgroup {
                super::cgroup_mount::mount(rootfs, m, config.cgroup.as_ref())?;
            } else {
                rootfs::mount_one(rootfs, m, new_netns)?;
            }
        }
        if config.populate_dev {
            rootfs::populate_dev(rootfs, &config.devices)?;
        }
    }
    // Hooks run now, with the namespaces in place and before pivot_root.
    send(sock, "hooks");
    let mut reply = String::new();
    match BufReader::new(sock).read_line(&mut reply) {
        Ok(n) if n > 0 && reply.trim_end() == "go" => {}
        _ => return Err(InitError::Parent),
    }
    let terminal = match &config.console {
        Some(socket) => {
            let (master, slave) = if new_mount_ns {
                // The container's own devpts instance.
                let ptmx = rootfs.join("dev/ptmx");
                open_pty_at(&ptmx)?
            } else {
                console::open_pty()?
            };
            console::send_master(socket, std::os::fd::AsFd::as_fd(&master))?;
            Some(slave)
        }
        None => None,
    };
    if new_mount_ns {
        if config.no_pivot {
            rootfs::move_root(rootfs)?;
        } else {
            rootfs::pivot_root(rootfs)?;
        }
        // After pivot_root the container's /proc is at /proc; before the
        // read-only paths, which usually include /proc/sys.
        write_sysctls(&config.sysctl)?;
        for path in &config.masked {
            rootfs::mask(path)?;
        }
        for path in &config.readonly {
            rootfs::make_readonly(path)?;
        }
        if config.readonly_root {
            rootfs::readonly_root()?;
        }
    }
    if let Some(slave) = &terminal {
        console::attach(slave)?;
    } else if new_mount_ns {
        reopen_null_stdio()?;
    }
    if let Some(name) = &config.hostname {
        sys("set the hostname", nix::unistd::sethostname(name))?;
    }
    for &(resource, soft, hard) in &config.rlimits {
        sys(
            "set a resource limit",
            nix::sys::resource::setrlimit(resource, soft, hard),
        )?;
    }
    config.security.before_user()?;
    let gids: Vec<Gid> = config
        .additional_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    sys("set supplementary groups", nix::unistd::setgroups(&gids))?;
    sys(
        "set the group id",
        nix::unistd::setgid(Gid::from_raw(config.gid)),
    )?;
    sys(
        "set the user id",
        nix::unistd::setuid(Uid::from_raw(config.uid)),
    )?;
    config.security.after_user()?;
    sys(
        "enter the working directory",
        nix::unistd::chdir(&config.cwd),
    )?;
    close_on_exec_from(3);
    Ok(())
}

/// Writes the sysctls through the container's /proc/sys.
fn write_sysctls(sysctls: &[(String, String)]) -> Result<(), InitError> {
    for (key, value) in sysctls {
        std::fs::write(crate::spec::sysctl_path(key), value).map_err(|source| {
            InitError::Sysctl {
                key: key.clone(),
                value: value.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Standard streams that are the host's /dev/null are reopened on the
/// container's /dev/null: a descriptor into a mount outside the container
/// would make CRIU refuse to checkpoint it ("Can't lookup mount").
fn reopen_null_stdio() -> Result<(), InitError> {
    use nix::sys::stat::{fstat, major, minor, SFlag};
    let is_null = |fd| {
        // SAFETY: 0..2 are this process's standard streams; fstat only reads.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        fstat(borrowed).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode).contains(SFlag::S_IFCHR)
                && major(st.st_rdev) == 1
                && minor(st.st_rdev) == 3
        })
    };
    let targets: Vec<i32> = (0..=2).filter(|&fd| is_null(fd)).collect();
    if targets.is_empty() {
        return Ok(());
    }
    let null = sys(
        "open the container's /dev/null",
        nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
    )?;
    for fd in targets {
        // SAFETY: dup2 onto a standard stream of this process, which no Rust
        // object owns here.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(InitError::Sys(
                "reopen a standard stream",
                nix::Error::last(),
            ));
        }
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the
/// runtime's caller leaked reaches the container (and CRIU never meets a
/// descriptor pointing outside it), as runc does.
pub(super) fn close_on_exec_from(first: i32) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only changes the flag of a descriptor number; an
        // already closed one (the directory iterator's own) gives EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Opens a pty through the container's `/dev/ptmx` (before pivot_root, by
/// its host path) so the slave lives in the container's devpts.
fn open_pty_at(ptmx: &std::path::Path) -> Result<(OwnedFd, OwnedFd), InitError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let master = sys(
        "open the container's /dev/ptmx",
        open(
            ptmx,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
    )?;
    // SAFETY: TIOCSPTLCK takes a pointer to an int; 0 unlocks the slave.
    let unlock = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &0i32) };
    if unlock < 0 {
        return Err(InitError::Sys("unlock the pty", nix::Error::last()));
    }
    // SAFETY: TIOCGPTPEER opens the slave of this master and returns a new
    // descriptor (or -1); the flags are plain open flags.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(InitError::Sys("open the pty slave", nix::Error::last()));
    }
    // SAFETY: TIOCGPTPEER returned a fresh descriptor nothing else owns.
    let slave = unsafe { std::os::fd::FromRawFd::from_raw_fd(slave) };
    Ok((master, slave))
}

/// Blocks until `start` opens exec.fifo for reading, then writes its byte.
fn wait_for_start(config: &InitConfig) -> Result<(), InitError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    // The O_PATH descriptor reopens the fifo wherever the root now is.
    let path = format!("/proc/self/fd/{}", config.fifo.as_raw_fd());
    let fifo = open(
        path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(InitError::Fifo)?;
    nix::unistd::write(&fifo, b"0").map_err(InitError::Fifo)?;
    Ok(())
}

/// The user program, which must be an executable file: `process.args[0]`
/// when it holds a '/', else the first such file of that name in the
/// container's PATH (not ours).
pub(super) fn find_program(args: &[CString], env: &[CString]) -> Result<CString, InitError> {
    let Some(program) = args.first() else {
        return Err(InitError::Exec(String::new(), nix::Error::EINVAL));
    };
    let name = program.to_string_lossy().into_owned();
    let candidates: Vec<CString> = if name.contains('/') {
        vec![program.clone()]
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.to_str().ok()?.strip_prefix("PATH=").map(str::to_owned))
            .unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
        path.split(':')
            .filter_map(|dir| CString::new(format!("{dir}/{name}")).ok())
            .collect()
    };
    let mut last = nix::Error::ENOENT;
    for candidate in candidates {
        let is_file = std::fs::metadata(std::ffi::OsStr::from_bytes(candidate.as_bytes()))
            .is_ok_and(|m| m.is_file());
        match nix::unistd::access(candidate.as_c_str(), nix::unistd::AccessFlags::X_OK) {
            Ok(()) if is_file => return Ok(candidate),
            Ok(()) => last = nix::Error::EACCES,
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => {}
            Err(e) => last = e,
        }
    }
    Err(InitError::Exec(name, last))
}

/// Replaces this process with the user process `program` (from
/// [`find_program`]).
fn exec(config: &InitConfig, program: &CString) -> Result<std::convert::Infallible, InitError> {
    match nix::unistd::execve(program, &config.args, &config.env) {
        Ok(never) => match never {},
        Err(e) => Err(InitError::Exec(program.to_string_lossy().into_owned(), e)),
    }
}
