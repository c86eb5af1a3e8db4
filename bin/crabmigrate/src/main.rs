//! The `crabmigrate` command line: parses arguments, sets up logging, runs
//! one command and prints its error chain once.
//!
//! Error rule (shared by every crate): messages are lower case without a
//! trailing period and never repeat their source; `main` prints the whole
//! chain on one line, `error: outer: inner: root cause`.

mod cli;
mod commands;
mod runc_log;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging_to_file = init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let chain = commands::escape(&chain(&err)).into_owned();
            if logging_to_file {
                // Engines read the last error of the log (runc's way).
                tracing::error!("{chain}");
            }
            eprintln!("crabmigrate: error: {chain}");
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

/// Logs go to stderr, or to `--log` (text, or runc's JSON lines with
/// `--log-format json`); `--log-level`, `--debug` or `RUST_LOG` choose how
/// much. Returns whether they go to a file.
fn init_logging(global: &cli::Global) -> bool {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let level = if global.debug {
        "debug"
    } else {
        global.log_level.as_str()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let file = global.log.as_ref().and_then(|path| {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!(
                    "crabmigrate: warning: cannot open the log {}: {e}; logging to stderr",
                    path.display()
                );
                None
            }
        }
    });
    let Some(file) = file else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
        return false;
    };
    let file = std::sync::Mutex::new(file);
    let _ = match global.log_format {
        cli::LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(file)
            .event_format(runc_log::RuncJson)
            .try_init(),
        cli::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(file)
            .with_target(false)
            .try_init(),
    };
    true
}
