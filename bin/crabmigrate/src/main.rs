//! The `crabmigrate` command line: parses arguments, sets up logging, runs
//! one command and prints its error chain once.
//!
//! Error rule (shared by every crate): messages are lower case without a
//! trailing period and never repeat their source; `main` prints the whole
//! chain on one line, `error: outer: inner: root cause`.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("crabmigrate: error: {}", commands::escape(&chain(&err)));
            ExitCode::FAILURE
        }
    }
}

/// `outer: inner: root`, each cause once.
fn chain(err: &anyhow::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Logs go to stderr; `--log-level` or `RUST_LOG` choose how much.
fn init_logging(global: &cli::Global) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(global.log_level.as_str()));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
