//! The commands engines call as they call runc: exec, update, events,
//! features, spec.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{bail, Context};
use crabmigrate_runtime::container::{self, ExecOptions};
use crabmigrate_runtime::oci_spec::runtime::{
    Capabilities, Capability, LinuxResources, Process, Spec,
};

use crate::cli::{EventsArgs, ExecArgs, Global, SpecArgs, UpdateArgs};

pub fn exec(global: &Global, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let root = super::state_root(global);
    let process = exec_process(global, args)?;
    if !args.detach {
        // The process is our grandchild; as a subreaper we inherit it when
        // the intermediate exits, and can wait for it.
        nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;
    }
    let executed = container::exec(
        &root,
        &args.id,
        &ExecOptions {
            process,
            console_socket: args.console_socket.clone(),
            pid_file: args.pid_file.clone(),
            preserve_fds: args.preserve_fds,
        },
    )
    .with_context(|| format!("cannot exec in container {}", args.id))?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    super::container::wait_for(executed.pid)
}

/// The process to run: `--process FILE`, or the container's own process
/// (as runc does) with the command line's args and overrides.
fn exec_process(global: &Global, args: &ExecArgs) -> anyhow::Result<Process> {
    let mut process: Process = match &args.process {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read the process file {}", path.display()))?;
            serde_json::from_slice(&text)
                .with_context(|| format!("{} is not an OCI process object", path.display()))?
        }
        None => {
            if args.command.is_empty() {
                bail!("exec needs a command to run (or --process FILE)");
            }
            let state = container::oci_state(&super::state_root(global), &args.id)?;
            let bundle = crabmigrate_runtime::spec::load(&state.bundle)
                .with_context(|| format!("cannot read the bundle of container {}", args.id))?;
            let mut p = bundle.spec.process().clone().unwrap_or_default();
            p.set_args(Some(args.command.clone()));
            p.set_terminal(Some(false));
            p
        }
    };
    if args.tty {
        process.set_terminal(Some(true));
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for kv in &args.env {
            if !kv.contains('=') {
                bail!("--env {kv:?} is not of the form KEY=VALUE");
            }
            env.push(kv.clone());
        }
        process.set_env(Some(env));
    }
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let mut u = process.user().clone();
        u.set_uid(
            uid.parse()
                .with_context(|| format!("--user {user:?}: the uid must be a number"))?,
        );
        if let Some(g) = gid {
            u.set_gid(
                g.parse()
                    .with_context(|| format!("--user {user:?}: the gid must be a number"))?,
            );
        }
        process.set_user(u);
    }
    if !args.additional_gids.is_empty() {
        let mut u = process.user().clone();
        u.set_additional_gids(Some(args.additional_gids.clone()));
        process.set_user(u);
    }
    if !args.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let canonical = if name.to_ascii_uppercase().starts_with("CAP_") {
                name.to_ascii_uppercase()
            } else {
                format!("CAP_{}", name.to_ascii_uppercase())
            };
            let cap: Capability = serde_json::from_value(serde_json::Value::String(canonical))
                .with_context(|| format!("--cap {name:?} is not a capability"))?;
            let add = |set: &Option<Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (bounding, effective, permitted) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(bounding);
            caps.set_effective(effective);
            caps.set_permitted(permitted);
        }
        process.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        process.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        process.set_selinux_label(Some(label.clone()));
    }
    Ok(process)
}

pub fn update(global: &Global, args: &UpdateArgs) -> anyhow::Result<ExitCode> {
    let mut resources: LinuxResources = match &args.resources {
        Some(path) => {
            let mut text = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut text)
                    .context("cannot read the resources from standard input")?;
            } else {
                text = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
            }
            serde_json::from_slice(&text)
                .context("the resources are not an OCI linux.resources object")?
        }
        None => LinuxResources::default(),
    };
    let mut memory = (*resources.memory()).unwrap_or_default();
    if let Some(v) = args.memory {
        memory.set_limit(Some(v));
    }
    if let Some(v) = args.memory_swap {
        memory.set_swap(Some(v));
    }
    if memory != Default::default() {
        resources.set_memory(Some(memory));
    }
    let mut cpu = resources.cpu().clone().unwrap_or_default();
    if let Some(v) = args.cpu_shares {
        cpu.set_shares(Some(v));
    }
    if let Some(v) = args.cpu_quota {
        cpu.set_quota(Some(v));
    }
    if let Some(v) = args.cpu_period {
        cpu.set_period(Some(v));
    }
    if let Some(v) = &args.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
    }
    if let Some(v) = &args.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
    }
    if cpu != Default::default() {
        resources.set_cpu(Some(cpu));
    }
    if let Some(limit) = args.pids_limit {
        let mut pids = (*resources.pids()).unwrap_or_default();
        pids.set_limit(limit);
        resources.set_pids(Some(pids));
    }
    container::update(&super::state_root(global), &args.id, &resources)
        .with_context(|| format!("cannot update container {}", args.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn events(global: &Global, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let root = super::state_root(global);
    if args.interval.is_zero() {
        bail!("--interval must be longer than zero");
    }
    loop {
        let stats = container::stats(&root, &args.id)
            .with_context(|| format!("cannot read the statistics of container {}", args.id))?;
        let event = serde_json::json!({"type": "stats", "id": args.id, "data": stats});
        println!("{event}");
        if args.stats {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(args.interval);
    }
}

pub fn features() -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(&super::features::features())?
    );
    Ok(ExitCode::SUCCESS)
}

pub fn spec(args: &SpecArgs) -> anyhow::Result<ExitCode> {
    if args.rootless {
        bail!("--rootless specs are not supported: crabmigrate runs containers as root");
    }
    let path = args.bundle.join("config.json");
    if path.exists() {
        bail!("{} exists; remove it first", path.display());
    }
    let spec = default_spec();
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// runc's default spec (oci-spec builds the same one), with the cgroup
/// namespace newer runc versions add and our hostname.
pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("crabmigrate".to_owned()));
    if let Some(linux) = spec.linux_mut() {
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        let has_cgroup = ns
            .iter()
            .any(|n| n.typ() == crabmigrate_runtime::oci_spec::runtime::LinuxNamespaceType::Cgroup);
        if !has_cgroup {
            let mut cgroup = crabmigrate_runtime::oci_spec::runtime::LinuxNamespace::default();
            cgroup.set_typ(crabmigrate_runtime::oci_spec::runtime::LinuxNamespaceType::Cgroup);
            ns.push(cgroup);
        }
        linux.set_namespaces(Some(ns));
    }
    spec
}
