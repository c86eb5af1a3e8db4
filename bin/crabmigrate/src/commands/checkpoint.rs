//! `crabmigrate checkpoint --pid` and `crabmigrate pre-dump --pid`.

use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{bail, Context};
use crabmigrate_runtime::terminals::{self, ExternalTerminal};
use criu_rpc::{
    DumpOptions, DumpRequest, DumpStats, External, ExternalSide, Notify, NotifyResult,
    PageServerTarget, PreDumpRequest,
};
use serde::Serialize;

use super::{common, validate};
use crate::cli::{CheckpointArgs, DumpArgs, Global, PreDumpArgs};

#[derive(Serialize)]
struct Report<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    pid: u32,
    images_dir: &'a std::path::Path,
    leave_running: bool,
    /// How CRIU locked the network (established connections, a netns).
    network_lock: Option<criu_rpc::NetworkLock>,
    tcp_established: bool,
    stats: Option<DumpStats>,
    log_file: Option<std::path::PathBuf>,
}

/// Says where lazy pages are served, once CRIU listens.
struct LazyAnnouncer {
    port: u16,
    quiet: bool,
}

impl Notify for LazyAnnouncer {
    fn status_ready(&mut self) -> NotifyResult {
        if !self.quiet {
            crate::output::note(&format!("serving lazy pages on port {}", self.port));
        }
        Ok(())
    }
}

pub fn run(global: &Global, args: &CheckpointArgs) -> anyhow::Result<ExitCode> {
    let args = &runc_lazy_pages(args)?;
    if args.lazy_pages {
        validate::port(args.port.unwrap_or(0), "--port")?;
    }
    if let Some(id) = &args.id {
        return run_container(global, id, &args.dump, args);
    }
    if args.pre_dump {
        return run_pre_dump(
            global,
            &PreDumpArgs {
                id: None,
                dump: args.dump.clone(),
            },
        );
    }
    let d = &args.dump;
    let target = Target::prepare(global, d)?;
    let pid = target.pid;
    let mut request = DumpRequest::new(pid, target.images.as_fd());
    request.common = target.common(d);
    request.options = target.options(d)?;
    request.options.leave_running = args.leave_running;
    target.record_terminals(d)?;
    let mut announcer = LazyAnnouncer {
        port: args.port.unwrap_or(0),
        quiet: d.json,
    };
    let notify: Option<&mut dyn Notify> = if args.lazy_pages {
        request.lazy_pages_port = args.port;
        Some(&mut announcer)
    } else {
        None
    };
    let outcome = target.criu.dump(&request, notify)?;
    let report = Report {
        id: None,
        pid,
        images_dir: &d.images_dir,
        leave_running: args.leave_running,
        network_lock: request.options.network_lock,
        tcp_established: d.tcp_established,
        stats: outcome.stats,
        log_file: outcome.log_file,
    };
    print_report(d.json, "checkpointed", &report)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_pre_dump(global: &Global, args: &PreDumpArgs) -> anyhow::Result<ExitCode> {
    let d = &args.dump;
    if let Some(id) = &args.id {
        let checkpoint = CheckpointArgs {
            id: Some(id.clone()),
            dump: d.clone(),
            pre_dump: true,
            status_fd: None,
            leave_running: false,
            lazy_pages: false,
            port: None,
        };
        return run_container(global, id, d, &checkpoint);
    }
    let target = Target::prepare(global, d)?;
    let pid = target.pid;
    let mut request = PreDumpRequest::new(pid, target.images.as_fd());
    request.common = target.common(d);
    request.options = target.options(d)?;
    let stats = target.criu.single_pre_dump(&request)?;
    let report = Report {
        id: None,
        pid,
        images_dir: &d.images_dir,
        leave_running: true,
        network_lock: request.options.network_lock,
        tcp_established: d.tcp_established,
        stats,
        log_file: None,
    };
    print_report(d.json, "pre-dumped", &report)?;
    Ok(ExitCode::SUCCESS)
}

/// `checkpoint ID` / `pre-dump ID`: a container.
fn run_container(
    global: &Global,
    id: &str,
    d: &DumpArgs,
    args: &CheckpointArgs,
) -> anyhow::Result<ExitCode> {
    let checked = Checked::new(d)?;
    let criu = super::criu(global)?;
    let root = super::state_root(global);
    let network_lock = common::dump_network_lock(d.network_lock, &criu);
    let page_server = checked.page_server;
    let status_fd = args
        .status_fd
        .map(super::container::borrow_fd)
        .transpose()?;
    let parent_path = d
        .parent_dir
        .as_deref()
        .map(|p| common::parent_relative(&d.images_dir, p))
        .transpose()?
        .map(std::path::PathBuf::from);
    let opts = crabmigrate_runtime::container::CheckpointOptions {
        images_dir: d.images_dir.clone(),
        work_dir: d.work_dir.clone(),
        parent_path,
        pre_dump: args.pre_dump,
        leave_running: args.leave_running,
        tcp_established: d.tcp_established,
        tcp_close: d.tcp_close,
        ext_unix_sk: d.ext_unix_sk,
        shell_job: d.shell_job,
        file_locks: d.file_locks,
        link_remap: d.link_remap,
        page_server,
        page_server_socket: None,
        lazy_pages_port: if args.lazy_pages { args.port } else { None },
        auto_dedup: d.auto_dedup,
        empty_net_ns: d.empty_ns.is_some(),
        status_fd,
        network_lock,
        manage_cgroups_mode: common::cgroup_mode(d.manage_cgroups_mode),
        external: checked.externals,
        log_level: common::log_level(d.criu_log_level),
    };
    let pid = crabmigrate_runtime::container::oci_state(&root, id)
        .map(|s| s.pid)
        .unwrap_or(0);
    let outcome = crabmigrate_runtime::container::checkpoint(&criu, &root, id, &opts, None)
        .with_context(|| format!("cannot checkpoint container {id}"))?;
    let report = Report {
        id: Some(id),
        pid,
        images_dir: &d.images_dir,
        leave_running: args.leave_running || args.pre_dump,
        network_lock,
        tcp_established: d.tcp_established,
        stats: outcome.stats,
        log_file: outcome.log_file,
    };
    let verb = if args.pre_dump {
        "pre-dumped"
    } else {
        "checkpointed"
    };
    print_report(d.json, verb, &report)?;
    Ok(ExitCode::SUCCESS)
}

/// The dump flags of a checkpoint or pre-dump, checked before anything is
/// created or frozen, so a typo leaves nothing behind.
struct Checked {
    externals: Vec<External>,
    page_server: Option<(String, u16)>,
}

impl Checked {
    fn new(d: &DumpArgs) -> anyhow::Result<Self> {
        let externals = validate::externals(&d.external, ExternalSide::Dump)?;
        let page_server = d
            .page_server
            .as_deref()
            .map(|a| validate::address(a, "--page-server"))
            .transpose()?;
        validate::creatable_dir(&d.images_dir, "--images-dir")?;
        if let Some(work) = &d.work_dir {
            validate::creatable_dir(work, "--work-dir")?;
        }
        if let Some(parent) = &d.parent_dir {
            let absolute = if parent.is_absolute() {
                parent.clone()
            } else {
                d.images_dir.join(parent)
            };
            if !absolute.is_dir() {
                bail!(
                    "the parent images directory {} does not exist; give --parent-dir a directory written by pre-dump",
                    absolute.display()
                );
            }
        }
        Ok(Self {
            externals,
            page_server,
        })
    }
}

/// What `checkpoint --pid` and `pre-dump --pid` share: the checked pid and
/// flags, CRIU, the open directories and the terminals left outside.
struct Target {
    pid: u32,
    criu: criu_rpc::Criu,
    page_server: Option<(String, u16)>,
    externals: Vec<External>,
    terminals: Vec<ExternalTerminal>,
    images: std::fs::File,
    work: Option<std::fs::File>,
}

impl Target {
    fn prepare(global: &Global, d: &DumpArgs) -> anyhow::Result<Self> {
        let pid = d.pid.context("give a container ID or --pid")?;
        let checked = Checked::new(d)?;
        validate::pid(pid)?;
        // A terminal the tree inherited (setsid server & in a shell) is
        // left outside and handed over at restore; a shell job's terminal
        // is CRIU's to handle.
        let terminals = if d.shell_job {
            Vec::new()
        } else {
            terminals::find(&terminals::tree_pids(pid))
        };
        let criu = super::criu(global)?;
        let images = common::open_dir(&d.images_dir, "images directory", true)?;
        let work = d
            .work_dir
            .as_deref()
            .map(|w| common::open_dir(w, "work directory", true))
            .transpose()?;
        Ok(Self {
            pid,
            criu,
            page_server: checked.page_server,
            externals: checked.externals,
            terminals,
            images,
            work,
        })
    }

    /// Lists the terminals left outside in the images, for restore.
    fn record_terminals(&self, d: &DumpArgs) -> anyhow::Result<()> {
        terminals::record(&d.images_dir, &self.terminals).with_context(|| {
            format!(
                "cannot write {}",
                d.images_dir.join(terminals::RECORD).display()
            )
        })
    }

    fn common(&self, d: &DumpArgs) -> criu_rpc::Common<'_> {
        criu_rpc::Common {
            work_dir: self.work.as_ref().map(AsFd::as_fd),
            log_level: common::log_level(d.criu_log_level),
            ..Default::default()
        }
    }

    fn options(&self, d: &DumpArgs) -> anyhow::Result<DumpOptions<'_>> {
        let mut options = dump_options(d, common::dump_network_lock(d.network_lock, &self.criu))?;
        options.external = self.externals.clone();
        options
            .external
            .extend(self.terminals.iter().map(ExternalTerminal::external));
        options.page_server =
            self.page_server
                .as_ref()
                .map(|(address, port)| PageServerTarget::Address {
                    address,
                    port: *port,
                });
        Ok(options)
    }
}

/// The options both commands share.
fn dump_options(
    d: &DumpArgs,
    network_lock: Option<criu_rpc::NetworkLock>,
) -> anyhow::Result<DumpOptions<'static>> {
    let parent_img = d
        .parent_dir
        .as_deref()
        .map(|p| common::parent_relative(&d.images_dir, p))
        .transpose()?;
    Ok(DumpOptions {
        tcp_established: d.tcp_established,
        tcp_close: d.tcp_close,
        tcp_skip_in_flight: d.tcp_skip_in_flight,
        shell_job: d.shell_job,
        ext_unix_sk: d.ext_unix_sk,
        file_locks: d.file_locks,
        link_remap: d.link_remap,
        track_mem: parent_img.is_some(),
        parent_img,
        auto_dedup: d.auto_dedup,
        empty_net_ns: d.empty_ns.is_some(),
        network_lock,
        freeze_cgroup: d.freeze_cgroup.clone(),
        cgroups: criu_rpc::Cgroups {
            mode: common::cgroup_mode(d.manage_cgroups_mode),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn print_report(json: bool, verb: &str, report: &Report<'_>) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("cannot encode the report")?
        );
        return Ok(());
    }
    let what = match report.id {
        Some(id) => format!("container {id}"),
        None => format!("process {}", report.pid),
    };
    let mut line = format!("{verb} {what} into {}", report.images_dir.display());
    if let Some(s) = &report.stats {
        line.push_str(&format!(
            ": {} pages written ({} MiB), frozen {} (freezing {}, memdump {}, memwrite {})",
            s.pages_written,
            s.pages_written * 4096 / (1 << 20),
            common::ms(s.frozen_time_us),
            common::ms(s.freezing_time_us),
            common::ms(s.memdump_time_us),
            common::ms(s.memwrite_time_us),
        ));
        if s.pages_lazy > 0 {
            line.push_str(&format!(", {} pages served lazily", s.pages_lazy));
        }
    }
    if report.tcp_established {
        match report.network_lock {
            Some(lock) => line.push_str(&format!(
                "; established TCP connections kept (network locked with {lock} until the restore)"
            )),
            None => line.push_str("; established TCP connections kept"),
        }
    }
    if report.leave_running {
        line.push_str("; the tree keeps running");
    }
    crate::output::summary(&line);
    Ok(())
}

/// runc's form of a lazy checkpoint, `--lazy-pages --page-server ADDR:PORT`
/// (CRIU serves the pages there), as crabmigrate's `--lazy-pages --port P`.
fn runc_lazy_pages(args: &CheckpointArgs) -> anyhow::Result<CheckpointArgs> {
    let mut args = args.clone();
    if !args.lazy_pages || args.port.is_some() {
        return Ok(args);
    }
    let Some(server) = args.dump.page_server.take() else {
        anyhow::bail!("--lazy-pages needs the port to serve pages on: give --port P (or runc's --page-server ADDR:PORT)");
    };
    let (_, port) = common::host_port(&server)?;
    args.port = Some(port);
    Ok(args)
}
