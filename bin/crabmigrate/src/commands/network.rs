//! `crabmigrate network ls` and `crabmigrate network check ID`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use crabmigrate_runtime::network;

use crate::cli::{Global, IdArgs, NetworkCommand, NetworkLsArgs};

pub fn run(global: &Global, command: &NetworkCommand) -> anyhow::Result<ExitCode> {
    match command {
        NetworkCommand::Ls(args) => ls(global, args),
        NetworkCommand::Check(args) => check(global, args),
    }
}

fn ls(global: &Global, args: &NetworkLsArgs) -> anyhow::Result<ExitCode> {
    let cni = super::cni(global);
    let found = cni.list()?;
    let mut rows = Vec::new();
    for entry in found {
        match entry {
            Ok(config) => {
                let missing: Vec<String> = config
                    .plugin_types()
                    .into_iter()
                    .filter(|kind| cni.plugin(&config.name, kind).is_err())
                    .collect();
                rows.push(serde_json::json!({
                    "name": config.name,
                    "cniVersion": config.cni_version,
                    "plugins": config.plugin_types(),
                    "capabilities": config.capabilities(),
                    "missingPlugins": missing,
                    "file": config.file,
                }));
            }
            Err(e) => eprintln!("crabmigrate: warning: {e}"),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20} {:<8} {:<40} FILE", "NAME", "VERSION", "PLUGINS");
    for row in rows {
        let list = |key: &str| {
            row[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        let mut plugins = list("plugins");
        let missing = list("missingPlugins");
        if !missing.is_empty() {
            plugins.push_str(&format!(" (missing: {missing})"));
        }
        println!(
            "{:<20} {:<8} {:<40} {}",
            row["name"].as_str().unwrap_or(""),
            row["cniVersion"].as_str().unwrap_or(""),
            plugins,
            row["file"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check(global: &Global, args: &IdArgs) -> anyhow::Result<ExitCode> {
    let id = &args.id;
    crabmigrate_runtime::spec::validate_id(id).context("invalid container ID")?;
    let mut state = super::state_root(global).load(id)?;
    state.refresh();
    let Some(attachment) = state.network.filter(|n| !n.released) else {
        bail!("container {id} has no network attached; create it with --network NAME");
    };
    let checked = network::check(&attachment).with_context(|| {
        format!(
            "network {} of container {id} failed CNI CHECK",
            attachment.network
        )
    })?;
    if checked {
        println!(
            "network {} of container {id}: CHECK passed ({})",
            attachment.network,
            attachment
                .addresses()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        println!(
            "network {} of container {id}: CHECK is disabled in its configuration (disableCheck)",
            attachment.network
        );
    }
    Ok(ExitCode::SUCCESS)
}
