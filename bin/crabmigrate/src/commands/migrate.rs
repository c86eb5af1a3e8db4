//! `crabmigrate agent` and `crabmigrate migrate`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use crabmigrate_migrate::agent::{self, AgentOptions};
use crabmigrate_migrate::key::Key;
use crabmigrate_migrate::source::{self, Health, MigrateRequest, Strategy};

use crate::cli::{AgentArgs, Global, MigrateArgs, StrategyArg};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn agent(global: &Global, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let key = Key::load(&args.key_file)?;
    let listen = args
        .listen
        .parse()
        .with_context(|| format!("{:?} is not ADDR:PORT (e.g. 0.0.0.0:7070)", args.listen))?;
    let criu = super::criu(global)?;
    let opts = AgentOptions {
        listen,
        key,
        work_dir: args.work_dir.clone(),
        state_root: global.root.clone(),
        criu,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    runtime()?.block_on(async move {
        let announce = tokio::spawn(async move {
            if let Ok(addr) = ready_rx.await {
                eprintln!("agent listening on {addr}");
            }
        });
        let served = agent::serve(opts, Some(ready_tx)).await;
        announce.abort();
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn migrate(global: &Global, args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    if let Some(id) = &args.id {
        bail!("migrating container {id} is not supported yet; move a process tree with --pid");
    }
    let pid = args
        .pid
        .context("give --pid PID (the root of the tree to move)")?;
    let key = Key::load(&args.key_file)?;
    let criu = super::criu(global)?;
    let request = MigrateRequest {
        to: args.to.clone(),
        key,
        pid,
        strategy: match args.strategy {
            StrategyArg::Auto => Strategy::Auto,
            StrategyArg::StopCopy => Strategy::StopCopy,
            StrategyArg::PostCopy => Strategy::PostCopy,
            StrategyArg::PreCopy => Strategy::PreCopy,
        },
        tcp_established: args.tcp_established,
        work_dir: args.work_dir.clone(),
        health: match (&args.health_cmd, args.health_tcp) {
            (Some(cmd), _) => Health::Command(cmd.clone()),
            (None, Some(port)) => Health::Tcp(port),
            (None, None) => Health::None,
        },
    };
    let report = runtime()?
        .block_on(source::migrate_process(criu, request))
        .with_context(|| format!("cannot migrate process {pid} to {}", args.to))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut line = format!(
            "migrated process {pid} to {} (pid {} there) with {} ({}): downtime {:.1} ms, total {:.1} ms, {} MiB of pages and {} KiB of other images sent",
            args.to,
            report.destination_pid,
            report.strategy,
            report.why,
            report.downtime_ms,
            report.total_ms,
            report.page_bytes >> 20,
            report.image_bytes >> 10
        );
        if let Some(ms) = report.dependent_ms {
            line.push_str(&format!(
                "; the last page arrived {ms:.1} ms after the destination started"
            ));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
