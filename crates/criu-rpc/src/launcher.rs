//! Starting the CRIU process.
//!
//! The client never calls `fork`/`exec` itself: it describes what to start in
//! a [`LaunchSpec`] and hands it to a [`Launcher`]. The default,
//! [`ExecLauncher`], starts the program directly. Another launcher can start
//! CRIU differently (inside a namespace, under a supervisor) or start a
//! stand-in program in tests.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::Signal;
use nix::unistd::{getpid, Pid};

/// A descriptor to place at a fixed number in the new process.
#[derive(Debug)]
pub struct PassFd<'a> {
    /// The caller's descriptor.
    pub fd: BorrowedFd<'a>,
    /// Its number in the new process (3 or more).
    pub target: RawFd,
}

/// Everything needed to start one CRIU process.
#[derive(Debug)]
pub struct LaunchSpec<'a> {
    /// The executable.
    pub program: &'a Path,
    /// Its arguments (without the program name), e.g. `swrk 3`.
    pub args: Vec<OsString>,
    /// Descriptors to pass, at the numbers CRIU is told about.
    pub fds: Vec<PassFd<'a>>,
    /// Where CRIU's standard output and error go.
    pub output: BorrowedFd<'a>,
}

/// Starts CRIU processes. Implementations must keep the contract of
/// [`ExecLauncher`]: the descriptors in [`LaunchSpec::fds`] at their target
/// numbers, standard input from `/dev/null`, both output streams into
/// [`LaunchSpec::output`], and the process killed when its parent dies.
pub trait Launcher: fmt::Debug + Send + Sync {
    /// Starts the process described by `spec`.
    fn launch(&self, spec: LaunchSpec<'_>) -> io::Result<Child>;
}

/// Starts the program directly with `fork` and `exec`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecLauncher;

impl Launcher for ExecLauncher {
    fn launch(&self, spec: LaunchSpec<'_>) -> io::Result<Child> {
        launch(spec, None)
    }
}

/// Starts the program like [`ExecLauncher`], in a process group of its own
/// (a terminal's Ctrl-C reaches only the caller, which decides what CRIU
/// does) and, first, moved into the cgroups whose `cgroup.procs` files are
/// listed, so that everything it forks (a restored tree) lives there.
#[derive(Debug, Default, Clone)]
pub struct IsolatedLauncher {
    /// `cgroup.procs` files to write the new process into.
    pub cgroup_procs: Vec<std::path::PathBuf>,
}

impl Launcher for IsolatedLauncher {
    fn launch(&self, spec: LaunchSpec<'_>) -> io::Result<Child> {
        let procs = self
            .cgroup_procs
            .iter()
            .map(|p| {
                std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|_| io::Error::other("a cgroup path holds a NUL byte"))
            })
            .collect::<io::Result<Vec<_>>>()?;
        launch(spec, Some(&procs))
    }
}

/// Starts `spec`; with `isolate`, in a new process group and moved into
/// the cgroups of those `cgroup.procs` paths.
fn launch(spec: LaunchSpec<'_>, isolate: Option<&[std::ffi::CString]>) -> io::Result<Child> {
    // Copy every descriptor above the highest target number first, so that
    // no dup2 in the child can overwrite a source that is still needed.
    let floor = spec.fds.iter().map(|p| p.target).max().unwrap_or(2) + 1;
    let sources: Vec<(OwnedFd, RawFd)> = spec
        .fds
        .iter()
        .map(|p| dup_above(p.fd, floor).map(|fd| (fd, p.target)))
        .collect::<io::Result<_>>()?;
    let moves: Vec<(RawFd, RawFd)> = sources
        .iter()
        .map(|(fd, target)| (fd.as_raw_fd(), *target))
        .collect();
    let parent = getpid();

    let mut command = Command::new(spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(spec.output.try_clone_to_owned()?))
        .stderr(Stdio::from(spec.output.try_clone_to_owned()?));
    // SAFETY: the closure runs in the child between fork and exec, so it
    // may only make async-signal-safe calls: prctl, getppid, dup2 and _exit
    // are. It allocates nothing; `moves` was built before the fork.
    if let Some(procs) = isolate {
        command.process_group(0);
        let procs = procs.to_vec();
        // SAFETY: as above; open, write and close are async-signal-safe
        // and the paths were made before the fork.
        unsafe {
            command.pre_exec(move || enter_cgroups(&procs));
        }
    }
    // SAFETY: the closure runs in the child between fork and exec, so it
    // may only make async-signal-safe calls: prctl, getppid, dup2 and _exit
    // are. It allocates nothing; `moves` was built before the fork.
    unsafe {
        command.pre_exec(move || child_setup(parent, &moves));
    }
    let child = command.spawn();
    drop(sources);
    child
}

/// Runs in the child after fork: writes "0" (this process) into each
/// `cgroup.procs`.
fn enter_cgroups(procs: &[std::ffi::CString]) -> io::Result<()> {
    for path in procs {
        // SAFETY: `path` is a NUL-terminated string that lives through the
        // call; open has no other preconditions.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and the buffer is one valid byte.
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let error = io::Error::last_os_error();
        // SAFETY: `fd` is ours and closed once.
        unsafe { libc::close(fd) };
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Runs in the child after fork: never outlive the parent, then place the
/// descriptors. `dup2` clears close-on-exec on the copy, the source copies
/// keep theirs and vanish at exec.
fn child_setup(parent: Pid, moves: &[(RawFd, RawFd)]) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The parent may have died before the death signal was armed.
    if nix::unistd::getppid() != parent {
        return Err(io::Error::other("parent exited before CRIU started"));
    }
    for &(source, target) in moves {
        // SAFETY: `source` is open (inherited from the parent's `sources`
        // list); dup2 atomically replaces whatever `target` was. The copy
        // belongs to the program about to be exec'd, so Rust never owns it.
        if unsafe { libc::dup2(source, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn dup_above(fd: BorrowedFd<'_>, floor: RawFd) -> io::Result<OwnedFd> {
    let raw = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(floor))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
}
