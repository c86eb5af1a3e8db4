//! Command-line arguments (clap derive). Flag names follow runc and CRIU
//! where the concept is the same.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Checkpoint, restore and live-migrate Linux processes and containers,
/// built on CRIU.
#[derive(Debug, Parser)]
#[command(name = "crabmigrate", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// CRIU executable to use [default: $CRABMIGRATE_CRIU, then
    /// /opt/crabmigrate/criu/bin/criu, then criu on PATH]
    #[arg(long, global = true, value_name = "PATH")]
    pub criu: Option<PathBuf>,

    /// How much to log on stderr (RUST_LOG overrides it)
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Warn)]
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report what this host can do: CRIU, kernel features, settings, and a
    /// verdict per capability (exit status 0 when checkpoint/restore works)
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON object instead of the human report
    #[arg(long)]
    pub json: bool,
}
