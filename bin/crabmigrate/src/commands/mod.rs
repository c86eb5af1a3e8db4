//! One module per command; each turns parsed arguments into library calls.

mod check;
mod checkpoint;
mod common;
mod page_server;
mod restore;

use std::process::ExitCode;

use anyhow::Context;
use criu_rpc::{Criu, CriuBinary};

use crate::cli::{Cli, Command, Global};

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&cli.global, &args),
        Command::Checkpoint(args) => checkpoint::run(&cli.global, &args),
        Command::PreDump(args) => checkpoint::run_pre_dump(&cli.global, &args),
        Command::Restore(args) => restore::run(&cli.global, &args),
        Command::PageServer(args) => page_server::run(&cli.global, &args),
        Command::LazyPages(args) => page_server::run_lazy(&cli.global, &args),
    }
}

/// The CRIU client for `--criu`, the environment, the prefix or PATH.
pub fn criu(global: &Global) -> anyhow::Result<Criu> {
    let binary = CriuBinary::locate(global.criu.as_deref()).context("cannot find CRIU")?;
    Ok(Criu::new(binary))
}
