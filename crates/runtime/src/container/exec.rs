//! `exec`: another process in a running container, confined like its init.
//!
//! The caller forks an intermediate process, which joins the container's
//! cgroup and namespaces (user first, mount last) and forks the new
//! process, so that it is inside the pid namespace too. That process takes
//! the container's seccomp filter and the process spec's capabilities,
//! user, no_new_privs, umask and LSM label (the same code as the init), and
//! execs. The socket to the caller is close-on-exec: end of file without a
//! message means the exec succeeded.
//!
//! Without `detach` the caller (a child subreaper) inherits the process and
//! can wait for it; with `detach` it returns once the process runs, and the
//! process goes to the caller's own subreaper (conmon, a containerd shim).

use std::ffi::CString;
use std::io::BufReader;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Process;

use super::console;
use super::create::{rlimit_resource, write_pid_file, CreateError};
use super::init::{self, exit_now, fail, send, InitError, Message};
use super::lifecycle::load;
use crate::cgroups::Cgroup;
use crate::security::{ProcessSecurity, SecurityError};
use crate::state::{StateRoot, Status};

/// How to run the process.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// What to run (args, env, cwd, user, capabilities, ...).
    pub process: Process,
    /// With `process.terminal`, where to send the pty master.
    pub console_socket: Option<PathBuf>,
    /// Write the process's host pid here.
    pub pid_file: Option<PathBuf>,
    /// Descriptors 3..3+N the process inherits (runc's `--preserve-fds`).
    pub preserve_fds: u32,
}

/// A started process.
#[derive(Debug, Clone, Copy)]
pub struct Executed {
    /// Its pid on the host.
    pub pid: u32,
}

/// Why `exec` failed. Nothing runs in the container afterwards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    #[error(transparent)]
    Lifecycle(#[from] super::LifecycleError),
    #[error("container {id} is {status}; exec needs it created or running")]
    NotRunning { id: String, status: Status },
    #[error("cannot read the bundle of container {0}")]
    Bundle(String, #[source] crate::spec::SpecError),
    #[error("process.args is empty; name the program to run")]
    NoArgs,
    #[error("process.terminal is set, so --console-socket is required (as with runc)")]
    NoConsoleSocket,
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("{field} {value:?} contains a NUL byte")]
    Nul { field: &'static str, value: String },
    #[error("crabmigrate must exec from a single-threaded process")]
    Threaded,
    #[error("cannot open the container's {kind} namespace")]
    Namespace {
        kind: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot {0}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("cannot {0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("the process could not start: {0}")]
    Child(String),
    #[error(transparent)]
    PidFile(#[from] CreateError),
}

/// What the intermediate and the new process need, prepared before forking.
#[derive(Debug)]
struct ExecConfig {
    cgroup: Option<Cgroup>,
    namespaces: Vec<(CloneFlags, OwnedFd)>,
    console: Option<UnixStream>,
    args: Vec<CString>,
    env: Vec<CString>,
    cwd: PathBuf,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    security: ProcessSecurity,
    preserve_fds: u32,
}

/// Starts `opts.process` in container `id`.
pub fn exec(root: &StateRoot, id: &str, opts: &ExecOptions) -> Result<Executed, ExecError> {
    let state = load(root, id)?;
    if !matches!(state.status, Status::Created | Status::Running) || !state.init_alive() {
        return Err(ExecError::NotRunning {
            id: id.to_owned(),
            status: state.status,
        });
    }
    let bundle =
        crate::spec::load(&state.bundle).map_err(|e| ExecError::Bundle(id.to_owned(), e))?;
    let process = &opts.process;
    let cstrings = |items: &[String], field: &'static str| {
        items
            .iter()
            .map(|s| {
                CString::new(s.as_bytes()).map_err(|_| ExecError::Nul {
                    field,
                    value: s.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let args = cstrings(
        process.args().as_deref().unwrap_or_default(),
        "process.args",
    )?;
    if args.first().is_none_or(|a| a.as_bytes().is_empty()) {
        return Err(ExecError::NoArgs);
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() {
        return Err(ExecError::NoConsoleSocket);
    }
    let security = ProcessSecurity::from_spec(
        process,
        bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref()),
    )?;
    let console = match (terminal, &opts.console_socket) {
        (true, Some(path)) => {
            Some(console::connect(path).map_err(|e| ExecError::Child(e.to_string()))?)
        }
        _ => None,
    };
    let config = ExecConfig {
        cgroup: state.cgroup.clone(),
        namespaces: open_namespaces(state.pid, &state.namespaces)?,
        console,
        args,
        env: cstrings(process.env().as_deref().unwrap_or_default(), "process.env")?,
        cwd: process.cwd().clone(),
        uid: process.user().uid(),
        gid: process.user().gid(),
        additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .filter_map(|r| {
                rlimit_resource(&format!("{:?}", r.typ())).map(|res| (res, r.soft(), r.hard()))
            })
            .collect(),
        security,
        preserve_fds: opts.preserve_fds,
    };
    if super::create::threads() != Some(1) {
        return Err(ExecError::Threaded);
    }
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| ExecError::Io("create a socket pair", e))?;
    // SAFETY: this process is single-threaded (checked above), so the child
    // may run ordinary code until it execs or exits.
    let intermediate = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ours);
            intermediate_main(config, theirs)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => return Err(ExecError::Sys("fork", e)),
    };
    drop(theirs);
    drop(config);
    let mut reader = BufReader::new(&ours);
    let mut pid = None;
    let result = loop {
        match init::read_message(&mut reader) {
            Ok(Some(Message::Pid(p))) => pid = Some(p),
            Ok(Some(Message::Error(text))) => break Err(ExecError::Child(text)),
            Ok(Some(_)) => {}
            // The socket closed on exec: the process runs.
            Ok(None) => break Ok(()),
            Err(e) => break Err(ExecError::Io("read from the exec process", e)),
        }
    };
    let _ = nix::sys::wait::waitpid(intermediate, None);
    result?;
    let pid = pid.ok_or_else(|| ExecError::Child("the process vanished before exec".into()))?;
    let pid = u32::try_from(pid).map_err(|_| ExecError::Child(format!("bad pid {pid}")))?;
    if let Some(path) = &opts.pid_file {
        write_pid_file(path, pid)?;
    }
    tracing::debug!(id, pid, "exec started a process");
    Ok(Executed { pid })
}

/// The container's namespaces as open files, ordered for setns: user
/// first (it owns the others), mount last (it changes the root).
fn open_namespaces(
    init: u32,
    recorded: &std::collections::BTreeMap<String, PathBuf>,
) -> Result<Vec<(CloneFlags, OwnedFd)>, ExecError> {
    const ORDER: &[(&str, CloneFlags)] = &[
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut out = Vec::new();
    for &(kind, flag) in ORDER {
        if !recorded.contains_key(kind) {
            continue;
        }
        // The init's own file, whether the namespace was made or joined.
        let path = format!("/proc/{init}/ns/{kind}");
        let file = open(
            Path::new(&path),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| ExecError::Namespace {
            kind: kind.to_owned(),
            source,
        })?;
        out.push((flag, file));
    }
    Ok(out)
}

fn intermediate_main(config: ExecConfig, sock: UnixStream) -> ! {
    let entered = (|| -> Result<(), InitError> {
        if let Some(cgroup) = &config.cgroup {
            cgroup
                .add_process(std::process::id())
                .map_err(InitError::Cgroup)?;
        }
        for (flag, file) in &config.namespaces {
            nix::sched::setns(file.as_fd(), *flag)
                .map_err(|e| InitError::Sys("join a namespace of the container", e))?;
        }
        Ok(())
    })();
    if let Err(e) = entered {
        fail(&sock, &e);
    }
    // SAFETY: forked from a single-threaded process and single-threaded
    // itself.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            send(&sock, &format!("pid {child}"));
            exit_now(0)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            let result = process_main(&config, &sock);
            match result {
                Ok(never) => match never {},
                Err(e) => fail(&sock, &e),
            }
        }
        Err(e) => fail(&sock, &InitError::Sys("fork the exec process", e)),
    }
}

fn process_main(
    config: &ExecConfig,
    sock: &UnixStream,
) -> Result<std::convert::Infallible, InitError> {
    let sys = |what, r: nix::Result<()>| r.map_err(|e| InitError::Sys(what, e));
    sys("start a new session", nix::unistd::setsid().map(drop))?;
    if let Some(socket) = &config.console {
        let (master, slave) = console::open_pty()?;
        console::send_master(socket, master.as_fd())?;
        console::attach(&slave)?;
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
    let program = init::find_program(&config.args, &config.env)?;
    // Everything above the preserved descriptors closes on exec, the
    // socket to the caller included: end of file tells it exec succeeded.
    let keep = 3 + i32::try_from(config.preserve_fds).unwrap_or(0);
    init::close_on_exec_from(keep);
    let raw = sock.as_raw_fd();
    if raw < keep {
        // SAFETY: F_SETFD only changes the close-on-exec flag of the
        // socket this process owns.
        unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    config.security.before_exec()?;
    match nix::unistd::execve(&program, &config.args, &config.env) {
        Ok(never) => match never {},
        Err(e) => Err(InitError::Exec(program.to_string_lossy().into_owned(), e)),
    }
}
