//! `crabmigrate-bench`: side-by-side benchmarks of crabmigrate against the
//! CRIU command line and runc, and of its migration strategies.
//!
//! It drives the real programs as subprocesses (`crabmigrate`, `criu`,
//! `runc`, `crabmigrate-workload`), interleaves the two sides of every
//! comparison (A B, B A, ...) after a warm-up pair, and writes
//! `results.json`, `results.md` and SVG plots into `--out`. See
//! docs/benchmarks.md.

mod container;
mod dedup;
mod migration;
mod plot;
mod proc;
mod report;
mod stats;
mod throughput;
mod workload;
mod wrapper;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
/// Namespace hosts, shared with the integration tests.
use test_support::netns;

use anyhow::{bail, Context as _};
use clap::Parser;

use report::{Benchmark, Results, Status};

/// Side-by-side benchmarks of crabmigrate (run as root; see
/// docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "crabmigrate-bench", version)]
struct Args {
    /// Where results.json, results.md and the SVG plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Counted pairs per comparison (after one warm-up pair).
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Workload sizes (MiB) for the checkpoint and restore overhead.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    sizes: Vec<u64>,
    /// Workload sizes (MiB) for the migration downtime.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    migration_sizes: Vec<u64>,
    /// Workload size (MiB) for the transfer throughput.
    #[arg(long, default_value_t = 256)]
    throughput_mib: u64,
    /// Size (MiB) of the page image of the content-hash re-transfer.
    #[arg(long, default_value_t = 256)]
    retransfer_mib: u64,
    /// A second throughput case on a link limited with tc tbf to this rate
    /// ("none" for no such case).
    #[arg(long, default_value = "1gbit")]
    link_rate: String,
    /// Each benchmark once at 16 MiB, no warm-up: checks that everything
    /// works, measures nothing worth quoting.
    #[arg(long)]
    quick: bool,
    /// Run only these benchmarks (repeatable): checkpoint-overhead and
    /// restore-overhead (together), container-cr, migration-downtime,
    /// transfer-throughput, content-hash-retransfer.
    #[arg(long)]
    only: Vec<String>,
    /// The crabmigrate program [default: next to this program].
    #[arg(long)]
    crabmigrate: Option<PathBuf>,
    /// The workload program [default: crabmigrate-workload next to this
    /// program].
    #[arg(long)]
    workload: Option<PathBuf>,
    /// The CRIU executable [default: $CRABMIGRATE_CRIU, then
    /// /opt/crabmigrate/criu/bin/criu, then criu on PATH].
    #[arg(long)]
    criu: Option<PathBuf>,
    /// The runc executable [default: runc on PATH].
    #[arg(long)]
    runc: Option<PathBuf>,
    /// A tmpfs for images and workload state (measure CRIU, not the disk).
    #[arg(long, default_value = "/dev/shm")]
    scratch: PathBuf,
}

/// What every benchmark needs.
#[derive(Debug)]
pub struct Ctx {
    /// The crabmigrate program.
    pub crabmigrate: PathBuf,
    /// The CRIU executable.
    pub criu: PathBuf,
    /// runc, if installed.
    pub runc: Option<PathBuf>,
    /// The private copy of the workload.
    pub workload: PathBuf,
    /// Counted pairs.
    pub pairs: usize,
    /// Warm-up pairs.
    pub warmup: usize,
    /// `--quick`.
    pub quick: bool,
    /// Wrapper sizes.
    pub sizes: Vec<u64>,
    /// Migration sizes.
    pub migration_sizes: Vec<u64>,
    /// Throughput size.
    pub throughput_mib: u64,
    /// Content-hash re-transfer size.
    pub retransfer_mib: u64,
    /// The shaped link's rate.
    pub link_rate: Option<String>,
    /// On the tmpfs: images, state files.
    scratch: tempfile::TempDir,
    /// On disk: bundles, state roots, the workload copy.
    tmp: tempfile::TempDir,
}

impl Ctx {
    /// `crabmigrate --criu CRIU`.
    pub fn crabmigrate(&self) -> Command {
        let mut cmd = Command::new(&self.crabmigrate);
        cmd.arg("--criu").arg(&self.criu);
        cmd
    }

    /// A new directory on the scratch tmpfs.
    pub fn dir(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.scratch.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A new directory on disk.
    pub fn tmp_dir(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Touches and frees `mib` MiB (at most 4 GiB), so that memory the
    /// machine never used is not first touched inside a measurement (fresh
    /// guest memory is 2x slower to touch here).
    pub fn prewarm(&self, mib: u64) {
        let bytes = usize::try_from(mib.min(4096) << 20).unwrap_or(usize::MAX);
        let mut block: Vec<u8> = Vec::new();
        if block.try_reserve_exact(bytes).is_ok() {
            block.resize(bytes, 1);
            std::hint::black_box(&block);
        }
    }

    /// Progress on stderr.
    pub fn log(&self, line: &str) {
        eprintln!("crabmigrate-bench: {line}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crabmigrate-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The directory this program lives in (`target/release`).
fn own_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("this program's path has no directory")
}

const BUILD: &str = "cargo build --release -p crabmigrate -p crabmigrate-tests";

/// An explicit program, or `name` next to this program; refused with the
/// build command if it is not there.
fn program(explicit: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => own_dir()?.join(name),
    };
    if !path.is_file() {
        bail!(
            "{} is not built; run `{BUILD}` first (or pass --{})",
            path.display(),
            if name == "crabmigrate" {
                "crabmigrate"
            } else {
                "workload"
            }
        );
    }
    Ok(path)
}

/// `runc` from `--runc` or PATH, if it runs.
fn find_runc(explicit: Option<&Path>) -> Option<PathBuf> {
    let candidate = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("runc"))
            .find(|p| p.is_file())?,
    };
    candidate.is_file().then_some(candidate)
}

/// The first line of `PROGRAM ARGS`' output.
fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_owned())
}

fn memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmarks need root (CRIU, network namespaces, containers); run as root");
    }
    let crabmigrate = program(args.crabmigrate.as_deref(), "crabmigrate")?;
    let workload_built = program(args.workload.as_deref(), "crabmigrate-workload")?;
    let criu = criu_rpc::CriuBinary::locate(args.criu.as_deref())
        .context("cannot find CRIU; run scripts/setup.sh (or pass --criu)")?
        .path()
        .to_path_buf();
    let runc = find_runc(args.runc.as_deref());
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    let scratch = tempfile::Builder::new()
        .prefix("crabmigrate-bench-")
        .tempdir_in(&args.scratch)
        .with_context(|| format!("cannot make a directory in {}", args.scratch.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("crabmigrate-bench-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let workload = workload::private_copy(&workload_built, tmp.path())?;
    // One crabmigrate for the whole run, even if a build replaces the file.
    let crabmigrate_copy = tmp.path().join("crabmigrate");
    std::fs::copy(&crabmigrate, &crabmigrate_copy)
        .with_context(|| format!("cannot copy {}", crabmigrate.display()))?;
    proc::become_subreaper().context("cannot become a child subreaper")?;

    let link_rate = Some(args.link_rate.clone()).filter(|r| r != "none" && !r.is_empty());
    let ctx = Ctx {
        crabmigrate: crabmigrate_copy.clone(),
        criu: criu.clone(),
        runc: runc.clone(),
        workload,
        pairs: if args.quick { 1 } else { args.pairs },
        warmup: if args.quick { 0 } else { 1 },
        quick: args.quick,
        sizes: if args.quick {
            vec![16]
        } else {
            args.sizes.clone()
        },
        migration_sizes: if args.quick {
            vec![16]
        } else {
            args.migration_sizes.clone()
        },
        throughput_mib: if args.quick { 16 } else { args.throughput_mib },
        retransfer_mib: if args.quick { 16 } else { args.retransfer_mib },
        link_rate,
        scratch,
        tmp,
    };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let known = [
        wrapper::CHECKPOINT,
        wrapper::RESTORE,
        container::NAME,
        migration::NAME,
        throughput::NAME,
        dedup::NAME,
    ];
    if let Some(bad) = args.only.iter().find(|o| !known.contains(&o.as_str())) {
        bail!(
            "--only {bad}: no such benchmark; known: {}",
            known.join(", ")
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let load_before = load_average();
    let mut benchmarks: Vec<Benchmark> = Vec::new();
    if wanted(wrapper::CHECKPOINT) || wanted(wrapper::RESTORE) {
        let (c, r) = wrapper::run(&ctx);
        benchmarks.push(c);
        benchmarks.push(r);
        proc::reap_orphans();
    }
    if wanted(container::NAME) {
        benchmarks.push(container::run(&ctx));
        proc::reap_orphans();
    }
    if wanted(migration::NAME) {
        benchmarks.push(migration::run(&ctx));
        proc::reap_orphans();
    }
    if wanted(throughput::NAME) {
        benchmarks.push(throughput::run(&ctx));
        proc::reap_orphans();
    }
    if wanted(dedup::NAME) {
        benchmarks.push(dedup::run(&ctx));
        proc::reap_orphans();
    }

    let results = Results {
        schema: report::SCHEMA,
        date: report::now_utc(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        host: report::Host {
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_mib: memory_mib(),
            criu_version: first_line(&criu, &["--version"])
                .map(|v| v.trim_start_matches("Version:").trim().to_owned())
                .unwrap_or_default(),
            runc_version: runc
                .as_deref()
                .and_then(|r| first_line(r, &["--version"]))
                .map(|v| v.trim_start_matches("runc version").trim().to_owned()),
            crabmigrate_version: first_line(&crabmigrate_copy, &["--version"])
                .map(|v| v.trim_start_matches("crabmigrate").trim().to_owned())
                .unwrap_or_default(),
            load_before,
            load_after: load_average(),
            crabmigrate: crabmigrate.display().to_string(),
            criu: criu.display().to_string(),
            workload: workload_built.display().to_string(),
        },
        settings: report::Settings {
            quick: ctx.quick,
            pairs: ctx.pairs,
            warmup_pairs: ctx.warmup,
            sizes_mib: ctx.sizes.clone(),
            migration_sizes_mib: ctx.migration_sizes.clone(),
            throughput_mib: ctx.throughput_mib,
            retransfer_mib: ctx.retransfer_mib,
            link_rate: ctx.link_rate.clone(),
            scratch: args.scratch.display().to_string(),
        },
        benchmarks,
    };
    write_outputs(&args.out, &results)?;
    // Remove the scratch directories before the netns and tmpfs go.
    drop(ctx);
    proc::reap_orphans();

    let mut failed = 0;
    for b in &results.benchmarks {
        let word = match b.status {
            Status::Ok => "ok",
            Status::Unavailable => "unavailable",
            Status::Failed => {
                failed += 1;
                "FAILED"
            }
        };
        eprintln!(
            "crabmigrate-bench: {:<26} {word}{}",
            b.name,
            b.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    eprintln!(
        "crabmigrate-bench: results in {}",
        args.out.join("results.json").display()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// results.json, results.md and the plots.
fn write_outputs(out: &Path, results: &Results) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(results).context("cannot encode the results")?;
    let path = out.join("results.json");
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    let mut md = report::markdown(results);
    let mut plots = Vec::new();
    if let Some(series) = downtime_series(results) {
        let path = out.join("downtime.svg");
        match plot::downtime(
            &path,
            "Migration downtime vs memory (median, min–max)",
            &series,
        ) {
            Ok(()) => plots.push("downtime.svg".to_owned()),
            Err(e) => eprintln!("crabmigrate-bench: {e}"),
        }
    }
    for bench in &results.benchmarks {
        let name = format!("ratios-{}.svg", bench.name);
        match plot::ratios(&out.join(&name), bench) {
            Ok(true) => plots.push(name),
            Ok(false) => {}
            Err(e) => eprintln!("crabmigrate-bench: {e}"),
        }
    }
    if !plots.is_empty() {
        md.push_str("\nPlots: ");
        md.push_str(
            &plots
                .iter()
                .map(|p| format!("[{p}]({p})"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        md.push('\n');
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reported downtime and external gap per strategy, from the migration
/// benchmark.
fn downtime_series(results: &Results) -> Option<Vec<plot::Series>> {
    let bench = results
        .benchmarks
        .iter()
        .find(|b| b.name == migration::NAME)?;
    let mut series = Vec::new();
    for (metric, suffix, secondary) in [
        ("downtime ms", "reported downtime", false),
        ("external gap ms", "external gap", true),
    ] {
        for strategy in migration::STRATEGIES {
            let points: Vec<(f64, f64, f64, f64)> = bench
                .cases
                .iter()
                .filter(|c| c.status == Status::Ok && c.strategy.as_deref() == Some(strategy))
                .filter_map(|c| {
                    let s = c.metrics.get(metric)?;
                    Some((c.size_mib? as f64, s.median, s.min, s.max))
                })
                .collect();
            if !points.is_empty() {
                series.push(plot::Series {
                    name: format!("{strategy}: {suffix}"),
                    points,
                    secondary,
                });
            }
        }
    }
    (!series.is_empty()).then_some(series)
}
