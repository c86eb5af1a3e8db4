//! Container commands: create, start, run, state, list, ps, kill, delete,
//! pause, resume.

use std::os::fd::BorrowedFd;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{bail, Context};
use crabmigrate_runtime::container::{self, CreateOptions};
use crabmigrate_runtime::network::{AddressRequest, NetworkRequest};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::cli::{
    CreateArgs, DeleteArgs, Global, IdArgs, KillArgs, ListArgs, PsArgs, PsFormat, RunArgs,
};

pub fn create(global: &Global, args: &CreateArgs) -> anyhow::Result<ExitCode> {
    create_container(global, args)?;
    Ok(ExitCode::SUCCESS)
}

fn create_container(global: &Global, args: &CreateArgs) -> anyhow::Result<u32> {
    if args.preserve_fds != 0 {
        bail!(
            "--preserve-fds {} is not supported for create or run: the container gets only its \
             standard streams",
            args.preserve_fds
        );
    }
    let root = super::state_root(global);
    let network = match &args.network {
        Some(name) => Some(NetworkRequest {
            cni: super::cni(global),
            name: name.clone(),
            addresses: AddressRequest::parse(&args.ip, args.mac.as_deref())?,
        }),
        None => None,
    };
    let created = container::create(
        &root,
        &args.id,
        &args.bundle,
        &CreateOptions {
            pid_file: args.pid_file.clone(),
            console_socket: args.console_socket.clone(),
            network,
            no_pivot: args.no_pivot,
        },
    )
    .with_context(|| format!("cannot create container {}", args.id))?;
    for warning in &created.warnings {
        crate::output::warning(warning);
    }
    Ok(created.state.pid)
}

pub fn start(global: &Global, args: &IdArgs) -> anyhow::Result<ExitCode> {
    container::start(&super::state_root(global), &args.id)
        .with_context(|| format!("cannot start container {}", args.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(global: &Global, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let root = super::state_root(global);
    let id = &args.create.id;
    if !args.detach {
        // The container's init is our grandchild; as a subreaper we inherit
        // it when the intermediate exits, and can wait for it.
        nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;
    }
    let pid = create_container(global, &args.create)?;
    if let Err(e) = container::start(&root, id) {
        let _ = container::delete(&root, id, true);
        return Err(e).with_context(|| format!("cannot start container {id}"));
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let code = wait_for(pid)?;
    container::delete(&root, id, true).with_context(|| format!("cannot delete container {id}"))?;
    Ok(code)
}

/// Signals a foreground `run` passes on to the container's process, as
/// runc does, instead of dying of them and leaving the container behind.
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Waits for `pid` (our child) and turns its end into an exit code
/// (128+signal). Meanwhile the signals in [`FORWARDED`] are sent on to it.
pub fn wait_for(pid: u32) -> anyhow::Result<ExitCode> {
    let target = Pid::from_raw(pid as i32);
    // Blocked, the forwarded signals and SIGCHLD (the child's end) queue up
    // for sigwait; the check below catches an end that came before.
    let mut signals = SigSet::empty();
    for &signal in FORWARDED {
        signals.add(signal);
    }
    signals.add(Signal::SIGCHLD);
    signals
        .thread_block()
        .context("cannot block the signals to forward")?;
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitCode::from(code as u8)),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Ok(ExitCode::from(128u8.wrapping_add(signal as u8)))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot wait for process {pid}")),
        }
        let signal = signals.wait().context("cannot wait for signals")?;
        if signal != Signal::SIGCHLD {
            let _ = nix::sys::signal::kill(target, signal);
        }
    }
}

pub fn state(global: &Global, args: &IdArgs) -> anyhow::Result<ExitCode> {
    let state = container::oci_state(&super::state_root(global), &args.id)?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(ExitCode::SUCCESS)
}

/// One row of `list`: a container, or one whose state cannot be read.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Listed {
    Container(Box<container::OciState>),
    Broken {
        id: String,
        status: &'static str,
        reason: String,
    },
}

pub fn list(global: &Global, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let root = super::state_root(global);
    // Every container directory is listed: a damaged or missing state is
    // shown as broken with its reason, never left out.
    let rows: Vec<Listed> = root
        .all_ids()?
        .into_iter()
        .map(|id| match container::oci_state(&root, &id) {
            Ok(state) => Listed::Container(Box::new(state)),
            Err(e) => Listed::Broken {
                reason: container::broken_reason(&root, &id).unwrap_or_else(|| e.to_string()),
                id,
                status: "broken",
            },
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<8} {:<13} {:<20} BUNDLE",
        "ID", "PID", "STATUS", "CREATED"
    );
    for row in rows {
        match row {
            Listed::Container(s) => println!(
                "{:<24} {:<8} {:<13} {:<20} {}",
                super::escape(&s.id),
                s.pid,
                s.status.to_string(),
                s.created,
                super::escape(&s.bundle.display().to_string())
            ),
            Listed::Broken { id, reason, .. } => println!(
                "{:<24} {:<8} {:<13} {:<20} ({}; crabmigrate delete --force {})",
                super::escape(&id),
                "-",
                "broken",
                "-",
                super::escape(&reason),
                super::escape(&id)
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ps(global: &Global, args: &PsArgs) -> anyhow::Result<ExitCode> {
    let processes = container::ps(&super::state_root(global), &args.id)?;
    if args.format == Some(PsFormat::Json) {
        let pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
        println!("{}", serde_json::to_string(&pids)?);
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&processes)?);
    } else {
        println!("{:<8} COMMAND", "PID");
        for p in processes {
            println!("{:<8} {}", p.pid, p.command);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(global: &Global, args: &KillArgs) -> anyhow::Result<ExitCode> {
    let signal = parse_signal(&args.signal)?;
    container::kill(&super::state_root(global), &args.id, signal, args.all)
        .with_context(|| format!("cannot kill container {}", args.id))?;
    Ok(ExitCode::SUCCESS)
}

/// `TERM`, `SIGTERM`, `15`.
fn parse_signal(text: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("{n} is not a signal number"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .with_context(|| format!("{text:?} is not a signal name (e.g. TERM, KILL)"))
}

pub fn delete(global: &Global, args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let root = super::state_root(global);
    let broken = crabmigrate_runtime::spec::validate_id(&args.id).is_ok()
        && root.container_dir(&args.id).is_dir()
        && container::broken_reason(&root, &args.id).is_some();
    if broken && args.force {
        let salvage = container::delete_broken(&root, &args.id)
            .with_context(|| format!("cannot delete container {}", args.id))?;
        crate::output::warning(&format!(
            "container {} had a damaged or missing state; removed it{}{}{}",
            args.id,
            if salvage.killed.is_empty() {
                String::new()
            } else {
                format!(", killed processes {:?}", salvage.killed)
            },
            salvage
                .cgroup
                .map(|c| format!(", removed cgroup {c}"))
                .unwrap_or_default(),
            if salvage.unmounted.is_empty() {
                String::new()
            } else {
                format!(", unmounted {:?}", salvage.unmounted)
            }
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if broken {
        bail!(
            "cannot delete container {}: {}; crabmigrate delete --force {} removes it and whatever of it can still be found",
            args.id,
            container::broken_reason(&root, &args.id).unwrap_or_default(),
            args.id
        );
    }
    container::delete(&root, &args.id, args.force)
        .with_context(|| format!("cannot delete container {}", args.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn pause(global: &Global, args: &IdArgs) -> anyhow::Result<ExitCode> {
    container::pause(&super::state_root(global), &args.id)
        .with_context(|| format!("cannot pause container {}", args.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn resume(global: &Global, args: &IdArgs) -> anyhow::Result<ExitCode> {
    container::resume(&super::state_root(global), &args.id)
        .with_context(|| format!("cannot resume container {}", args.id))?;
    Ok(ExitCode::SUCCESS)
}

/// One of crabmigrate's open descriptors, named by number on the command
/// line (`--status-fd 3`).
pub fn borrow_fd(fd: i32) -> anyhow::Result<BorrowedFd<'static>> {
    if fd < 0 {
        bail!("descriptor {fd} is not valid");
    }
    // SAFETY: only probed with F_GETFD, which is harmless on any number.
    let probe = unsafe { BorrowedFd::borrow_raw(fd) };
    if nix::fcntl::fcntl(probe, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        bail!("descriptor {fd} is not open in crabmigrate");
    }
    // SAFETY: descriptor `fd` is open (checked above), inherited by this
    // process and never closed by crabmigrate, so it outlives every use.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}
