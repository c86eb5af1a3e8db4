//! `crabmigrate restore --images-dir`.

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crabmigrate_runtime::terminals;
use criu_rpc::{ExternalSide, InheritFd, RestoreRequest, RestoreStats};
use serde::Serialize;

use super::{common, validate};
use crate::cli::{Global, RestoreArgs};

#[derive(Serialize)]
struct Report<'a> {
    pid: i32,
    images_dir: &'a std::path::Path,
    stats: Option<RestoreStats>,
    log_file: Option<std::path::PathBuf>,
}

pub fn run(global: &Global, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    check_restore_flags(args)?;
    if let Some(file) = &args.import {
        // Extract the archive, then restore from the images it held.
        return run(global, &super::archive::restore_import(args, file)?);
    }
    validate::existing_dir(&args.images_dir, "--images-dir")?;
    crabmigrate_images::validate::check_restorable(&args.images_dir)
        .with_context(|| format!("cannot restore from {}", args.images_dir.display()))?;
    if let Some(id) = &args.id {
        return run_container(global, id, args);
    }
    let images = common::open_dir(&args.images_dir, "images directory", false)?;
    let externals = validate::externals(&args.external, ExternalSide::Restore)?;
    // The terminals the checkpoint left outside get ours in their place.
    let terminals = terminals::stand_ins(&terminals::load(&args.images_dir)?)?;
    let inherited = args
        .inherit_fd
        .iter()
        .map(|spec| parse_inherit_fd(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Refusals come before the work directory is created.
    check_sockets(&args.images_dir, args)?;
    let criu = super::criu(global)?;
    let work = args
        .work_dir
        .as_deref()
        .map(|w| common::open_dir(w, "work directory", true))
        .transpose()?;

    let mut request = RestoreRequest::new(images.as_fd());
    request.common.work_dir = work.as_ref().map(AsFd::as_fd);
    request.common.log_level = common::log_level(args.criu_log_level);
    let o = &mut request.options;
    // Without --detach we wait for the tree, so it must be our child.
    o.rst_sibling = args.restore_sibling || !args.detach;
    o.tcp_established = args.tcp_established;
    o.tcp_close = args.tcp_close;
    o.shell_job = args.shell_job;
    o.ext_unix_sk = args.ext_unix_sk;
    o.file_locks = args.file_locks;
    o.link_remap = args.link_remap;
    o.lazy_pages = args.lazy_pages;
    o.external = externals;
    o.network_lock = common::network_lock(args.network_lock);
    o.cgroups.mode = common::cgroup_mode(args.manage_cgroups_mode);
    o.inherit_fds = inherited
        .iter()
        .map(|(fd, key)| InheritFd { key, fd: *fd })
        .chain(terminals.iter().map(|(key, fd)| InheritFd { key, fd: *fd }))
        .collect();

    wait_for_free_pids(&args.images_dir)?;
    let outcome = criu.restore(&request, None)?;
    if let Some(path) = &args.pid_file {
        common::write_pid_file(path, outcome.pid)?;
    }
    let report = Report {
        pid: outcome.pid,
        images_dir: &args.images_dir,
        stats: outcome.stats,
        log_file: outcome.log_file,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let what = args.images_dir.display().to_string();
        crate::output::summary(&summary(&what, outcome.pid, report.stats.as_ref()));
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    super::container::wait_for(outcome.pid as u32)
}

/// What a restore checks before it extracts, creates or starts anything
/// (the images are checked next): the files it will write have a
/// directory, the externals are well formed.
fn check_restore_flags(args: &RestoreArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.pid_file {
        validate::output_file(path, "--pid-file")?;
    }
    if let Some(work) = &args.work_dir {
        validate::creatable_dir(work, "--work-dir")?;
    }
    validate::externals(&args.external, ExternalSide::Restore)?;
    Ok(())
}

/// "restored WHAT as pid N: P pages, restore X ms (forking Y ms)".
fn summary(what: &str, pid: impl std::fmt::Display, stats: Option<&RestoreStats>) -> String {
    let mut line = format!("restored {what} as pid {pid}");
    if let Some(s) = stats {
        line.push_str(&format!(
            ": {} pages, restore {} (forking {})",
            s.pages_restored,
            common::ms(s.restore_time_us),
            common::ms(s.forking_time_us)
        ));
    }
    line
}

/// How long a restore waits for exited processes that still hold the
/// checkpoint's pids (zombies their parents have not reaped yet).
const ZOMBIE_WAIT: Duration = Duration::from_secs(10);

/// Makes sure the pids the checkpoint needs are free, waiting a while for
/// zombies: right after a checkpoint, the killed tasks can linger until
/// their parent (or a slow init) reaps them, and CRIU would fail with
/// "Can't fork ... File exists". A tree whose root is pid 1 had its own pid
/// namespace and gets a new one, so its pids cannot clash.
fn wait_for_free_pids(images_dir: &std::path::Path) -> anyhow::Result<()> {
    let tree =
        criu_rpc::read_pstree(images_dir).context("cannot read the checkpoint's process tree")?;
    if tree.first().is_none_or(|root| root.pid == 1) {
        return Ok(());
    }
    let until = Instant::now() + ZOMBIE_WAIT;
    for pid in criu_rpc::checkpoint_pids(&tree) {
        loop {
            match process_state(pid) {
                None => break,
                Some('Z') if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Some('Z') => bail!(
                    "pid {pid} of the checkpoint is still held by an exited process that its parent has not reaped; reap it (wait for it) and restore again"
                ),
                Some(_) => bail!(
                    "pid {pid} of the checkpoint is in use by a running process ({}); stop it first, or restore on a host where the pid is free",
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim()
                ),
            }
        }
    }
    Ok(())
}

/// Refuses, before CRIU starts, a restore whose sockets cannot come back
/// here: an established connection without --tcp-established or
/// --tcp-close, or a socket bound to an address this network namespace
/// lacks (CRIU would only say "Can't bind inet socket (id N)"). A
/// checkpoint with its own network namespace brings its addresses along.
fn check_sockets(images_dir: &std::path::Path, args: &RestoreArgs) -> anyhow::Result<()> {
    let own_netns = std::fs::read_dir(images_dir)
        .with_context(|| format!("cannot list {}", images_dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("netns-"));
    if own_netns {
        return Ok(());
    }
    let damaged = |what: &str| {
        format!(
            "the images directory holds no complete checkpoint ({what} is damaged); point --images-dir at a directory written by checkpoint"
        )
    };
    let sockets = crabmigrate_images::sockets::inet_sockets(images_dir)
        .with_context(|| damaged("files.img"))?;
    let established = |s: &&crabmigrate_images::sockets::InetSocket| {
        s.tcp == Some(crabmigrate_images::sockets::TcpRole::Established)
    };
    let tcp_close_dump = crabmigrate_images::sockets::dumped_with_tcp_close(images_dir)
        .with_context(|| damaged("inventory.img"))?;
    if tcp_close_dump && !args.tcp_close {
        bail!("the checkpoint was taken with --tcp-close; restore it with --tcp-close");
    }
    if !args.tcp_established && !args.tcp_close {
        if let Some(connection) = sockets.iter().find(established) {
            bail!(
                "the checkpoint holds an established {connection}; restore with --tcp-established to keep it (it was checkpointed with it), or --tcp-close to get it back closed"
            );
        }
    }
    for socket in &sockets {
        if args.tcp_close && established(&socket) {
            continue;
        }
        if let Some(ip) = socket.specific_local_address() {
            if !crabmigrate_runtime::host::address_is_local(ip) {
                bail!(
                    "the checkpoint's {socket} needs the address {ip}, which this host (network namespace) does not have; add it (ip addr add {ip}/PREFIX dev DEVICE) or restore in the namespace that has it"
                );
            }
        }
    }
    Ok(())
}

/// The state letter of a process (`R`, `S`, `Z`, ...), or `None` if there is
/// no such process.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command, which is in parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// `fd[N]:KEY` -> one of our open descriptors and the image key.
fn parse_inherit_fd(spec: &str) -> anyhow::Result<(BorrowedFd<'static>, String)> {
    let bad = || format!("--inherit-fd {spec:?} is not fd[N]:KEY (e.g. fd[5]:pipe:[12345])");
    let rest = spec.strip_prefix("fd[").with_context(bad)?;
    let (number, key) = rest.split_once("]:").with_context(bad)?;
    let fd: RawFd = number.parse().ok().filter(|&n| n >= 0).with_context(bad)?;
    if key.is_empty() {
        bail!(bad());
    }
    if nix::fcntl::fcntl(
        // SAFETY: only used for the F_GETFD probe below, which is harmless
        // on any number; an invalid one gives EBADF.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_err()
    {
        bail!("--inherit-fd names descriptor {fd}, which crabmigrate does not have open");
    }
    // SAFETY: descriptor `fd` is open (checked above) and was inherited by
    // this process; nothing in crabmigrate closes it, so it outlives the
    // restore.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok((borrowed, key.to_owned()))
}

/// `restore ID --bundle DIR`: a container.
fn run_container(global: &Global, id: &str, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    use crabmigrate_runtime::container;
    let criu = super::criu(global)?;
    let root = super::state_root(global);
    let bundle = args
        .bundle
        .clone()
        .context("restoring a container needs --bundle")?;
    let opts = container::RestoreOptions {
        bundle,
        images_dir: args.images_dir.clone(),
        work_dir: args.work_dir.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        tcp_established: args.tcp_established,
        tcp_close: args.tcp_close,
        ext_unix_sk: args.ext_unix_sk,
        shell_job: args.shell_job,
        file_locks: args.file_locks,
        link_remap: args.link_remap,
        lazy_pages: args.lazy_pages,
        network_lock: common::network_lock(args.network_lock),
        manage_cgroups_mode: common::cgroup_mode(args.manage_cgroups_mode),
        external: validate::externals(&args.external, ExternalSide::Restore)?,
        cni: super::cni(global),
        auto_dedup: args.auto_dedup,
        empty_net_ns: args.empty_ns.is_some(),
        lsm_profile: args.lsm_profile.clone(),
        lsm_mount_context: args.lsm_mount_context.clone(),
        log_level: common::log_level(args.criu_log_level),
    };
    let restored = container::restore(&criu, &root, id, &opts, None)
        .with_context(|| format!("cannot restore container {id}"))?;
    for warning in &restored.warnings {
        crate::output::warning(warning);
    }
    let pid = restored.state.pid;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": id,
                "pid": pid,
                "images_dir": args.images_dir,
                "stats": restored.stats,
                "log_file": restored.log_file,
            }))?
        );
    } else {
        crate::output::summary(&summary(
            &format!("container {id}"),
            pid,
            restored.stats.as_ref(),
        ));
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    // The restored init is our child (rst_sibling): wait, then clean up as
    // runc does for a foreground restore.
    let code = super::container::wait_for(pid)?;
    container::delete(&root, id, true).with_context(|| format!("cannot delete container {id}"))?;
    Ok(code)
}
