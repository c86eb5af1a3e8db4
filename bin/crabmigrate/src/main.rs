//! The `crabmigrate` command line: parses arguments, sets up logging, runs
//! one command and prints its error chain once.
//!
//! Error rule (shared by every crate): messages are lower case without a
//! trailing period and never repeat their source; `main` prints the whole
//! chain on one line, `error: outer: inner: root cause`.

mod cli;
mod commands;
mod output;
mod runc_log;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse_from(runc_args(std::env::args_os()));
    let logging_to_file = init_logging(&cli.global);
    output::init(&cli.global, logging_to_file);
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

/// runc (through Go's flag parsing) takes long options with one dash as
/// well, and containerd's go-runc passes `-no-subreaper` to every restore
/// that way: it is rewritten to `--no-subreaper` (before any `--`).
fn runc_args<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Vec<std::ffi::OsString> {
    let mut after_separator = false;
    args.into_iter()
        .map(|a| {
            if a == "--" {
                after_separator = true;
            }
            if !after_separator && a == "-no-subreaper" {
                "--no-subreaper".into()
            } else {
                a
            }
        })
        .collect()
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
    // runc logs at info into --log; on a terminal only warnings and errors.
    let level = match (global.debug, global.log_level, &global.log) {
        (true, _, _) => "debug",
        (false, Some(level), _) => level.as_str(),
        (false, None, Some(_)) => "info",
        (false, None, None) => "warn",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_runc_single_dash_flag_is_taken() {
        let args =
            |list: &[&str]| -> Vec<std::ffi::OsString> { runc_args(list.iter().map(Into::into)) };
        assert_eq!(
            args(&["crabmigrate", "restore", "-no-subreaper", "id"])[2],
            "--no-subreaper"
        );
        assert_eq!(
            args(&["crabmigrate", "exec", "id", "--", "-no-subreaper"])[4],
            "-no-subreaper"
        );
        let cli = Cli::try_parse_from(args(&[
            "crabmigrate",
            "restore",
            "--bundle",
            "/b",
            "--image-path",
            "/i",
            "-no-subreaper",
            "--detach",
            "id",
        ]))
        .unwrap();
        assert!(matches!(cli.command, cli::Command::Restore(ref r) if r.no_subreaper && r.detach));
    }

    #[test]
    fn a_flag_given_twice_is_taken_as_runc_takes_it() {
        // podman container checkpoint --leave-running passes it twice.
        let cli = Cli::try_parse_from([
            "crabmigrate",
            "checkpoint",
            "--image-path",
            "/i",
            "--leave-running",
            "--leave-running",
            "--work-path",
            "/a",
            "--work-path",
            "/w",
            "id",
        ])
        .unwrap();
        let cli::Command::Checkpoint(c) = cli.command else {
            panic!("not a checkpoint");
        };
        assert!(c.leave_running);
        assert_eq!(c.dump.work_dir.as_deref(), Some(std::path::Path::new("/w")));
        // Repeatable options still collect every value.
        let cli = Cli::try_parse_from([
            "crabmigrate",
            "restore",
            "--images-dir",
            "/i",
            "--external",
            "a",
            "--external",
            "b",
        ])
        .unwrap();
        assert!(matches!(cli.command, cli::Command::Restore(ref r) if r.external == ["a", "b"]));
    }
}
