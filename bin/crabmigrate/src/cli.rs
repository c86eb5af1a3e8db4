//! Command-line arguments (clap derive). Flag names follow runc and CRIU
//! where the concept is the same.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod oci;
pub use oci::{EventsArgs, ExecArgs, LogFormat, PsFormat, SpecArgs, UpdateArgs};

/// Checkpoint, restore and live-migrate Linux processes and containers,
/// built on CRIU.
/// A flag given twice takes the last value, as runc's (Go's flag parsing):
/// Podman passes `--leave-running` twice to `checkpoint --leave-running`.
#[derive(Debug, Parser)]
#[command(
    name = "crabmigrate",
    version,
    about,
    max_term_width = 100,
    args_override_self = true
)]
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

    /// Where container state lives
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/run/crabmigrate"
    )]
    pub root: PathBuf,

    /// How much to log (RUST_LOG overrides it) [default: warn on stderr,
    /// info into --log]
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<LogLevel>,

    /// Where CNI network configuration lists are (for --network)
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/etc/cni/net.d"
    )]
    pub cni_config_dir: PathBuf,

    /// Where CNI plugins are (repeatable, searched in order) [default:
    /// /usr/lib/cni, then /opt/cni/bin]
    #[arg(long, global = true, value_name = "DIR")]
    pub cni_plugin_dir: Vec<PathBuf>,
    /// Write logs (and the error that ends the command) to this file
    /// instead of stderr, as runc does for engines
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// The format of --log: text, or JSON lines {"level","msg","time"}
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log at debug level
    #[arg(long, global = true)]
    pub debug: bool,

    /// Use systemd's cgroup driver (refused: crabmigrate manages cgroupfs
    /// cgroups only)
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
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
    /// Checkpoint a running container (ID) or process tree (--pid) into an
    /// images directory
    Checkpoint(CheckpointArgs),
    /// Copy the memory of a running container or process tree without
    /// stopping it (needs soft-dirty memory tracking in the kernel)
    PreDump(PreDumpArgs),
    /// Restore a container (ID, with --bundle) or a process tree from an
    /// images directory
    Restore(RestoreArgs),
    /// Create a container from an OCI bundle; its process waits for `start`
    Create(CreateArgs),
    /// Start a created container's process
    Start(IdArgs),
    /// Create and start a container; without --detach, wait for it and
    /// delete it when it exits
    Run(RunArgs),
    /// Print a container's state as JSON
    State(IdArgs),
    /// List containers
    #[command(alias = "ls")]
    List(ListArgs),
    /// List the processes of a container
    Ps(PsArgs),
    /// Send a signal to a container's process (default SIGTERM)
    Kill(KillArgs),
    /// Delete a container: its state, cgroup and (with --force) processes
    Delete(DeleteArgs),
    /// Run another process in a running container
    Exec(ExecArgs),
    /// Change a running container's cgroup limits
    Update(UpdateArgs),
    /// Print a container's resource usage as JSON events
    Events(EventsArgs),
    /// Print what this runtime supports, as JSON (runc's `features`)
    Features,
    /// Write a default config.json for a bundle
    Spec(SpecArgs),
    /// Freeze every process of a container
    Pause(IdArgs),
    /// Thaw a paused container
    Resume(IdArgs),
    /// CNI networks: list them, check a container's attachment
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Make a key file for migrations (give the same file to both hosts)
    Keygen(KeygenArgs),
    /// Accept migrations on this host (the destination)
    Agent(AgentArgs),
    /// Move a running container or process tree to another host's agent
    Migrate(MigrateArgs),
    /// List migrations in doubt on this host (the source), and resume or
    /// discard the stopped workload of one
    Recover(RecoverArgs),
    /// Receive the pages of a checkpoint sent with --page-server
    PageServer(PageServerArgs),
    /// Serve a lazy restore: fetch pages on demand from a checkpoint's page
    /// server (post-copy)
    LazyPages(LazyPagesArgs),
    /// Show what a checkpoint holds: processes, memory, open files, mounts,
    /// statistics and images (a summary of all without a section flag)
    Inspect(InspectArgs),
    /// Write a checkpoint (a container's last one, or an images directory)
    /// into one archive with a sha256 manifest (Podman's layout)
    Export(ExportArgs),
    /// Check a checkpoint archive and extract it into an images directory
    Import(ImportArgs),
    /// Internal: the process `check` dumps to find out whether CRIU handles
    /// TCP and UDP sockets
    #[command(name = "__hold-sockets", hide = true)]
    HoldSockets,
}

/// Flags that select and shape the dumped tree (checkpoint and pre-dump).
#[derive(Debug, Clone, Args)]
pub struct DumpArgs {
    /// Root of the process tree (instead of a container ID)
    #[arg(long, required_unless_present = "id", conflicts_with = "id")]
    pub pid: Option<u32>,
    /// Where the images go (created if missing)
    #[arg(long, visible_alias = "image-path", value_name = "DIR")]
    pub images_dir: PathBuf,
    /// Where CRIU's log and statistics go [default: the images directory]
    #[arg(long, visible_alias = "work-path", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// A previous (pre-)dump to take unchanged pages from, relative to the
    /// images directory or absolute
    #[arg(long, visible_alias = "parent-path", value_name = "DIR")]
    pub parent_dir: Option<PathBuf>,
    /// Send the pages to a page server instead of writing them
    #[arg(long, value_name = "HOST:PORT")]
    pub page_server: Option<String>,
    /// Checkpoint established TCP connections (restore with
    /// --tcp-established too); CRIU locks the network meanwhile
    #[arg(long, conflicts_with = "tcp_close")]
    pub tcp_established: bool,
    /// Dump established TCP connections without their state; they are
    /// restored closed (restore with --tcp-close too)
    #[arg(long)]
    pub tcp_close: bool,
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
    /// How CRIU locks the network while it dumps established connections or
    /// a network namespace [default: iptables if iptables-restore is
    /// installed, else nftables if CRIU can]
    #[arg(long, value_enum)]
    pub network_lock: Option<NetworkLockArg>,
    /// An external resource in CRIU's syntax, e.g. mnt[/data]:data (repeatable)
    #[arg(long, value_name = "SPEC")]
    pub external: Vec<String>,
    /// How CRIU treats cgroups
    #[arg(long, value_enum)]
    pub manage_cgroups_mode: Option<CgroupModeArg>,
    /// Do not checkpoint the contents of this namespace (runc's
    /// `--empty-ns network`: a hook recreates the network on restore)
    #[arg(long, value_enum, value_name = "NS")]
    pub empty_ns: Option<EmptyNsArg>,
    /// Punch pages out of the parent images once they are in this dump
    #[arg(long)]
    pub auto_dedup: bool,
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

#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    /// The container to checkpoint (or give --pid)
    pub id: Option<String>,
    #[command(flatten)]
    pub dump: DumpArgs,
    /// Copy memory only and leave the tree running (same as `pre-dump`)
    #[arg(long, conflicts_with_all = ["leave_running", "lazy_pages"])]
    pub pre_dump: bool,
    /// With --lazy-pages: CRIU writes one byte to this descriptor of
    /// crabmigrate once it serves pages
    #[arg(long, value_name = "FD", requires = "lazy_pages")]
    pub status_fd: Option<i32>,
    /// Keep the tree running after the checkpoint
    #[arg(long)]
    pub leave_running: bool,
    /// Post-copy: keep pages out of the images and serve them on --port
    /// (or runc's --page-server ADDR:PORT) to `crabmigrate lazy-pages` on
    /// the restoring side; returns once all are served
    #[arg(long)]
    pub lazy_pages: bool,
    /// The TCP port for --lazy-pages
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct PreDumpArgs {
    /// The container to pre-dump (or give --pid)
    pub id: Option<String>,
    #[command(flatten)]
    pub dump: DumpArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Restore as this container (needs --bundle); without it, a process
    /// tree is restored
    #[arg(requires = "bundle")]
    pub id: Option<String>,
    /// The container's bundle (config.json and rootfs)
    #[arg(long, short, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Send a restored container terminal's pty master to this unix socket
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// The images to restore from (with --import: where the archive is
    /// extracted [default: BUNDLE/checkpoint])
    #[arg(
        long,
        visible_alias = "image-path",
        value_name = "DIR",
        required_unless_present = "import",
        default_value_os = "",
        hide_default_value = true,
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            PathBuf::from
        )
    )]
    pub images_dir: PathBuf,
    /// Restore from a checkpoint archive (from `crabmigrate export` or
    /// `podman container checkpoint --export`): check and extract it, apply
    /// its rootfs changes to the bundle, then restore. A Podman archive
    /// restored into a bundle without config.json gets one written from
    /// the archive's spec (BUNDLE/rootfs must hold the image's files)
    #[arg(long, value_name = "FILE")]
    pub import: Option<PathBuf>,
    /// Where CRIU's log and statistics go [default: the images directory]
    #[arg(long, visible_alias = "work-path", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root for the restored
    /// rootfs (accepted for runc compatibility: CRIU restores the mounts)
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not become a subreaper (accepted for runc compatibility: the
    /// restored init is crabmigrate's child anyway)
    #[arg(long)]
    pub no_subreaper: bool,
    /// Restore this namespace empty (runc's `--empty-ns network`)
    #[arg(long, value_enum, value_name = "NS")]
    pub empty_ns: Option<EmptyNsArg>,
    /// Punch pages out of the images as they are restored
    #[arg(long)]
    pub auto_dedup: bool,
    /// The LSM profile of the restored tree, TYPE:NAME (apparmor:P,
    /// selinux:LABEL)
    #[arg(long, value_name = "TYPE:NAME")]
    pub lsm_profile: Option<String>,
    /// The SELinux mount context of the restored tree's mounts
    #[arg(long, value_name = "CONTEXT")]
    pub lsm_mount_context: Option<String>,
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
    /// Restore established TCP connections (checkpointed with
    /// --tcp-established)
    #[arg(long, conflicts_with = "tcp_close")]
    pub tcp_established: bool,
    /// Restore established TCP connections closed (needed for a checkpoint
    /// taken with --tcp-close; also takes one taken with --tcp-established)
    #[arg(long)]
    pub tcp_close: bool,
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
    /// The network lock method used at checkpoint [default: the one the
    /// checkpoint records]
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

/// Namespaces `--empty-ns` can name (CRIU supports the network one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmptyNsArg {
    Network,
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

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The container
    pub id: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The new container's ID
    pub id: String,
    /// The bundle: config.json and the rootfs it names
    #[arg(long, short, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container process's pid to this file
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// With process.terminal: send the pty master to this unix socket
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Attach the container to this CNI network (the configuration list of
    /// that name in --cni-config-dir): a network namespace of its own with
    /// an interface eth0 and addresses from the network
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
    /// With --network: ask for this address, ADDR or ADDR/PREFIX (CNI
    /// capability "ips"; repeatable)
    #[arg(long, value_name = "ADDR", requires = "network")]
    pub ip: Vec<String>,
    /// With --network: give the container's interface this MAC (CNI
    /// capability "mac")
    #[arg(long, value_name = "MAC", requires = "network")]
    pub mac: Option<String>,
    /// Use MS_MOVE and chroot instead of pivot_root (for a rootfs on a
    /// ramdisk)
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: crabmigrate never creates a session
    /// keyring for the container
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N to the container process (only 0 is
    /// supported)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List the networks in --cni-config-dir: name, CNI version, plugins
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Run CNI CHECK on a container's network: exit status 0 when every
    /// plugin finds the attachment as ADD made it
    Check(IdArgs),
}

#[derive(Debug, Args)]
pub struct NetworkLsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once started instead of waiting for the container to exit
    #[arg(long, short)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// The container
    pub id: String,
    /// Print JSON (pid and command of each process) instead of a table
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// runc's formats: a table, or a JSON array of pids
    #[arg(long, short, value_enum)]
    pub format: Option<PsFormat>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The container
    pub id: String,
    /// Signal name or number (TERM, SIGKILL, 9, ...)
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Signal every process of the container, not only its init
    #[arg(long, short)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The container
    pub id: String,
    /// Kill a running container first
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (created with mode 0600; never overwritten)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address and port to listen on
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// The shared key (see `crabmigrate keygen`)
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Where incoming images are kept during a migration, and received
    /// bundles live (one agent per directory)
    #[arg(long, value_name = "DIR", default_value = "/var/lib/crabmigrate/agent")]
    pub work_dir: PathBuf,
    /// A health check sources may name (`migrate --health-check NAME`):
    /// COMMAND runs with `sh -c` once the workload runs here, with
    /// CRABMIGRATE_PID set to its pid; the migration commits only if it
    /// exits 0 within 10 s (repeatable)
    #[arg(long, value_name = "NAME=COMMAND")]
    pub health_check: Vec<String>,
    /// Migrations at once; more are refused with a reason
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_sessions: u32,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The container to move (from the state root, --root)
    #[arg(required_unless_present = "pid")]
    pub id: Option<String>,
    /// Root of the process tree to move (instead of a container ID)
    #[arg(long, conflicts_with = "id")]
    pub pid: Option<u32>,
    /// The destination agent
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// The shared key (see `crabmigrate keygen`)
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// How memory moves
    #[arg(long, value_enum, default_value_t = StrategyArg::Auto)]
    pub strategy: StrategyArg,
    /// Pre-copy: rounds while the workload runs, at most
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_rounds: u32,
    /// Pre-copy: stop the rounds once the final one should fit in this
    /// many milliseconds
    #[arg(long, value_name = "MS")]
    pub downtime_budget: Option<u64>,
    /// Containers: both hosts see the rootfs at the same path, so it is not
    /// sent
    #[arg(long, conflicts_with = "pid")]
    pub shared_rootfs: bool,
    /// Containers: the ID on the destination [default: the same]
    #[arg(long, value_name = "ID", conflicts_with = "pid")]
    pub target_id: Option<String>,
    /// Keep established TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Run the destination agent's health check NAME (its `--health-check
    /// NAME=COMMAND`) once the workload runs there; commit only if it
    /// passes within 10 s, else roll back
    #[arg(long, value_name = "NAME", conflicts_with = "health_tcp")]
    pub health_check: Option<String>,
    /// Commit only if this TCP port on the destination's loopback accepts
    /// within 10 s, else roll back
    #[arg(long, value_name = "PORT")]
    pub health_tcp: Option<u16>,
    /// Where the source keeps its images during the migration, and its
    /// in-doubt records (see `recover`)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/crabmigrate/migrate"
    )]
    pub work_dir: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Write progress events as JSON lines to FILE ("-": standard output,
    /// where a --json report then follows as the last line)
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The migrate work directory holding the records
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/crabmigrate/migrate"
    )]
    pub work_dir: PathBuf,
    /// Resume the stopped source of this migration (the destination does
    /// not run the workload)
    #[arg(long, value_name = "SESSION", conflicts_with = "discard")]
    pub resume: Option<String>,
    /// Discard the stopped source of this migration (the destination runs
    /// the workload)
    #[arg(long, value_name = "SESSION")]
    pub discard: Option<String>,
    /// Print the list as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    /// Post-copy where both hosts can, else stop-copy
    Auto,
    /// Freeze, stream every page, restore
    StopCopy,
    /// Freeze briefly, restore at once, fetch pages on demand
    PostCopy,
    /// Copy while running in rounds of content-hashed chunks, then a short
    /// final round
    PreCopy,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The images directory
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    /// The process tree: pids, states, threads, commands
    #[arg(long)]
    pub ps_tree: bool,
    /// Open files per process (paths, pipes, sockets, terminals)
    #[arg(long)]
    pub files: bool,
    /// The mounts of each dumped mount namespace
    #[arg(long)]
    pub mounts: bool,
    /// Memory per process: mapped, dumped, in the parent, lazy
    #[arg(long)]
    pub memory: bool,
    /// CRIU's dump and restore statistics
    #[arg(long)]
    pub stats: bool,
    /// Every file of the directory with its kind and size
    #[arg(long)]
    pub images: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The container whose last checkpoint to export (with its spec and
    /// rootfs changes), or give --images-dir
    #[arg(required_unless_present = "images_dir", conflicts_with = "images_dir")]
    pub id: Option<String>,
    /// The images directory to export
    #[arg(long, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// The archive to write (replaced if it exists)
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// How to compress the archive
    #[arg(long, value_enum, default_value_t = CompressArg::Zstd)]
    pub compress: CompressArg,
    /// The image the container's rootfs came from, as Podman names it
    /// (localhost/app:1): `podman container restore --import` needs it to
    /// rebuild the rootfs before it applies the archive's changes
    #[arg(long, value_name = "NAME", requires = "id")]
    pub image: Option<String>,
    /// That image's ID in the importing Podman's storage [default: the name,
    /// which Podman resolves]
    #[arg(long, value_name = "ID", requires = "image")]
    pub image_id: Option<String>,
    /// The name the importing Podman knows crabmigrate by (its --runtime,
    /// or its name in containers.conf [engine.runtimes])
    #[arg(long, value_name = "NAME", default_value = "crabmigrate")]
    pub runtime_name: String,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive (from `crabmigrate export`, or `podman container
    /// checkpoint --export`)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Where the images go: a new or empty directory
    #[arg(long, value_name = "DIR")]
    pub images_dir: PathBuf,
    /// Apply the archive's rootfs changes (rootfs-diff.tar, deleted.files)
    /// to this rootfs
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}
