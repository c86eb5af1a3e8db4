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
    /// Checkpoint a running process tree into an images directory
    Checkpoint(CheckpointArgs),
    /// Copy the memory of a running process tree without stopping it (needs
    /// soft-dirty memory tracking in the kernel)
    PreDump(PreDumpArgs),
    /// Restore a process tree from an images directory
    Restore(RestoreArgs),
    /// Receive the pages of a checkpoint sent with --page-server
    PageServer(PageServerArgs),
    /// Serve a lazy restore: fetch pages on demand from a checkpoint's page
    /// server (post-copy)
    LazyPages(LazyPagesArgs),
}

/// Flags that select and shape the dumped tree (checkpoint and pre-dump).
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Root of the process tree
    #[arg(long)]
    pub pid: u32,
    /// Where the images go (created if missing)
    #[arg(long, value_name = "DIR")]
    pub images_dir: PathBuf,
    /// Where CRIU's log and statistics go [default: the images directory]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// A previous (pre-)dump to take unchanged pages from, relative to the
    /// images directory or absolute
    #[arg(long, value_name = "DIR")]
    pub parent_dir: Option<PathBuf>,
    /// Send the pages to a page server instead of writing them
    #[arg(long, value_name = "HOST:PORT")]
    pub page_server: Option<String>,
    /// Checkpoint established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Skip TCP connections that are half open
    #[arg(long)]
    pub tcp_skip_in_flight: bool,
    /// The tree is a shell job (its session and terminal come from outside)
    #[arg(long)]
    pub shell_job: bool,
    /// Allow unix sockets connected to processes outside the tree
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Checkpoint file locks
    #[arg(long)]
    pub file_locks: bool,
    /// Allow open files that were deleted (link-remap)
    #[arg(long)]
    pub link_remap: bool,
    /// How to lock the network of a tree with its own network namespace
    #[arg(long, value_enum)]
    pub network_lock: Option<NetworkLockArg>,
    /// An external resource in CRIU's syntax, e.g. mnt[/data]:data (repeatable)
    #[arg(long, value_name = "SPEC")]
    pub external: Vec<String>,
    /// How CRIU treats cgroups
    #[arg(long, value_enum)]
    pub manage_cgroups_mode: Option<CgroupModeArg>,
    /// Freeze through this cgroup instead of ptrace
    #[arg(long, value_name = "PATH")]
    pub freeze_cgroup: Option<PathBuf>,
    /// CRIU's log verbosity, 0 (silent) to 4 (debug)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub criu_log_level: u8,
    /// Print the result and CRIU's statistics as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub dump: DumpArgs,
    /// Keep the tree running after the checkpoint
    #[arg(long)]
    pub leave_running: bool,
    /// Post-copy: keep pages out of the images and serve them on --port to
    /// `crabmigrate lazy-pages` on the restoring side; returns once all are
    /// served
    #[arg(long, requires = "port", conflicts_with = "page_server")]
    pub lazy_pages: bool,
    /// The TCP port for --lazy-pages
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct PreDumpArgs {
    #[command(flatten)]
    pub dump: DumpArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The images to restore from
    #[arg(long, value_name = "DIR")]
    pub images_dir: PathBuf,
    /// Where CRIU's log and statistics go [default: the images directory]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Return once restored instead of waiting for the tree to exit
    #[arg(short, long)]
    pub detach: bool,
    /// Write the restored root's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Make the restored root a child of crabmigrate (implied without
    /// --detach, so that its exit status is crabmigrate's)
    #[arg(long)]
    pub restore_sibling: bool,
    /// Restore established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// The tree is a shell job
    #[arg(long)]
    pub shell_job: bool,
    /// Allow external unix sockets
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Restore file locks
    #[arg(long)]
    pub file_locks: bool,
    /// Allow link-remap files
    #[arg(long)]
    pub link_remap: bool,
    /// Post-copy: fetch pages through `crabmigrate lazy-pages` (same work
    /// directory)
    #[arg(long)]
    pub lazy_pages: bool,
    /// An external resource in CRIU's syntax, e.g. mnt[data]:/srv/data
    /// (repeatable)
    #[arg(long, value_name = "SPEC")]
    pub external: Vec<String>,
    /// Give one of crabmigrate's open descriptors to the restored tree for an
    /// image resource, as fd[N]:KEY (e.g. fd[5]:pipe:[12345]) (repeatable)
    #[arg(long, value_name = "fd[N]:KEY")]
    pub inherit_fd: Vec<String>,
    /// How CRIU treats cgroups
    #[arg(long, value_enum)]
    pub manage_cgroups_mode: Option<CgroupModeArg>,
    /// The network lock method used at checkpoint
    #[arg(long, value_enum)]
    pub network_lock: Option<NetworkLockArg>,
    /// CRIU's log verbosity, 0 (silent) to 4 (debug)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub criu_log_level: u8,
    /// Print the result and CRIU's statistics as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PageServerArgs {
    /// Where received pages go (created if missing)
    #[arg(long, value_name = "DIR")]
    pub images_dir: PathBuf,
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0")]
    pub address: String,
    /// Port to listen on (0: pick one and print it)
    #[arg(long)]
    pub port: u16,
    /// Serve the pages in the images directory on demand to a lazy-pages
    /// daemon instead of receiving pages
    #[arg(long)]
    pub lazy_pages: bool,
    /// A previous dump's directory, relative to the images directory
    #[arg(long, value_name = "DIR")]
    pub parent_dir: Option<String>,
    /// Print the listening port and the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LazyPagesArgs {
    /// The checkpoint's images (copied from the source, without lazy pages)
    #[arg(long, value_name = "DIR")]
    pub images_dir: PathBuf,
    /// Work directory, shared with the lazy restore [default: the images
    /// directory]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The checkpointing side's lazy page server
    #[arg(long, value_name = "HOST:PORT")]
    pub page_server: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NetworkLockArg {
    Iptables,
    Nftables,
    Skip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CgroupModeArg {
    Ignore,
    None,
    Props,
    Soft,
    Full,
    Strict,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON object instead of the human report
    #[arg(long)]
    pub json: bool,
}
