//! Arguments of the commands engines call the way they call runc: `exec`,
//! `update`, `events`, `features`, `spec`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The container
    pub id: String,
    /// The program and its arguments (or give --process)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
    /// A process.json (the OCI `process` object) describing what to run
    #[arg(long, short, value_name = "FILE", conflicts_with = "command")]
    pub process: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it
    #[arg(long, short)]
    pub detach: bool,
    /// Write the process's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// With --tty: send the pty master to this unix socket
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Give the process a terminal
    #[arg(long, short)]
    pub tty: bool,
    /// Set an environment variable, KEY=VALUE (repeatable)
    #[arg(long, short, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The working directory in the container
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// The user, UID[:GID]
    #[arg(long, short, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// More group ids (repeatable)
    #[arg(long, short = 'g', value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability to the process's sets (repeatable)
    #[arg(long, short, value_name = "CAP")]
    pub cap: Vec<String>,
    /// Set no_new_privs
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass descriptors 3..3+N to the process
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// AppArmor profile for the process
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// SELinux label for the process
    #[arg(long, value_name = "LABEL")]
    pub process_label: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The container
    pub id: String,
    /// A `linux.resources` JSON object ("-": standard input)
    #[arg(long, short, value_name = "FILE|-")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited)
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long, value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period (-1: none)
    #[arg(long, value_name = "US", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds
    #[arg(long, value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CPUs to use, e.g. 0-3
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use, e.g. 0
    #[arg(long, value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Maximum number of tasks (-1: unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The container
    pub id: String,
    /// Print the statistics once and exit
    #[arg(long)]
    pub stats: bool,
    /// How often to print statistics, e.g. 5s or 500ms
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Where to write config.json
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// A spec for a container without root (user namespace); not supported
    #[arg(long)]
    pub rootless: bool,
}

/// `ps` output formats, as runc's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PsFormat {
    /// A PID and COMMAND table
    Table,
    /// A JSON array of the pids (what containerd reads)
    Json,
}

/// `--log-format`, as runc's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line: {"level", "msg", "time"}
    Json,
}
