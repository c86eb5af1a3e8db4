//! Benchmark 3: migration downtime against memory size for each strategy,
//! between two network-namespace hosts, plus the lab (hosts, key, agent)
//! and the single migration that benchmarks 4 and 5 reuse.
//!
//! The workload runs in `src` as pid 1 of its own pid namespace, so the
//! destination can restore it while the source still exists; `crabmigrate
//! agent` runs in `dst`. Downtime comes twice: from the report
//! (`downtime_ms`, frozen until the destination runs) and from outside —
//! the workload ticks every millisecond and a watcher polls its state file
//! every millisecond, taking the largest gap between counter changes
//! across the migration. (A network client would be the classic observer,
//! but CRIU 4.1.1 cannot dump inet sockets on Linux ≥ 6.16, criu #2705,
//! and the workload serves nothing.) The workload re-reads all its memory
//! for every tick's checksum, so the gap's resolution is one tick (reported
//! as `tick ms`) and, with post-copy, its first tick after the switch waits
//! for every page.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::netns::TwoHosts;
use crate::proc::{self, Background};
use crate::report::{Benchmark, Case, Comparison, Status};
use crate::stats::a_first;
use crate::workload::{self, ms, Gap, TickWatch, Workload};
use crate::Ctx;

pub const NAME: &str = "migration-downtime";
pub const TITLE: &str =
    "migration downtime vs memory: stop-copy, post-copy, pre-copy between two netns hosts";
const GOAL: &str =
    "post-copy downtime nearly flat in memory size; post-copy / stop-copy ≤ 0.2 at 1 GiB";
/// The agent's port (its namespace is ours alone).
const PORT: u16 = 7070;
/// Bound on one migration.
const LIMIT: Duration = Duration::from_secs(600);

/// The strategies, in the order of an A-first round.
pub const STRATEGIES: [&str; 3] = ["stop-copy", "post-copy", "pre-copy"];

/// Two hosts, a shared key and an agent in `dst`.
#[derive(Debug)]
pub struct Lab {
    /// Declared first: stopped before the namespaces go.
    agent: Background,
    /// The hosts.
    pub hosts: TwoHosts,
    /// The key both sides use.
    pub key: PathBuf,
    /// Scratch for this lab.
    pub dir: PathBuf,
    runs: std::cell::Cell<u32>,
}

impl Lab {
    /// Sets up the hosts and starts the agent.
    pub fn new(ctx: &Ctx, tag: &str) -> anyhow::Result<Self> {
        let hosts = TwoHosts::new(tag)?;
        let dir = ctx.dir(&format!("lab-{tag}"))?;
        let key = dir.join("key");
        let _ = std::fs::remove_file(&key);
        let mut keygen = ctx.crabmigrate();
        keygen.arg("keygen").arg("--out").arg(&key);
        proc::run(&mut keygen, &dir, Duration::from_secs(30))?.ok("crabmigrate keygen")?;
        let work = dir.join("agent-work");
        std::fs::create_dir_all(&work)?;
        let mut cmd = hosts.dst.command(&ctx.crabmigrate)?;
        cmd.arg("--criu")
            .arg(&ctx.criu)
            .args(["--log-level", "info", "--root"])
            .arg(ctx.tmp_dir(&format!("agent-root-{tag}"))?)
            .args([
                "agent",
                "--listen",
                &format!("{}:{PORT}", hosts.veth.b_addr),
            ])
            .arg("--key-file")
            .arg(&key)
            .arg("--work-dir")
            .arg(&work);
        let mut agent = Background::start(&mut cmd, Some(&dir.join("agent.log")))?;
        let ready = proc::wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
            (agent.stderr().contains("agent listening on") || !agent.running()).then_some(())
        });
        anyhow::ensure!(
            ready.is_some() && agent.running(),
            "the agent did not start listening: {}",
            proc::tail(&agent.stderr())
        );
        Ok(Self {
            agent,
            hosts,
            key,
            dir,
            runs: std::cell::Cell::new(0),
        })
    }

    /// The agent's address.
    pub fn addr(&self) -> String {
        format!("{}:{PORT}", self.hosts.veth.b_addr)
    }

    /// The last lines of the agent's log.
    pub fn agent_log(&self) -> String {
        proc::tail(&self.agent.stderr())
    }

    fn migrate_command(&self, ctx: &Ctx, pid: u32, strategy: &str) -> anyhow::Result<Command> {
        let work = self.dir.join("migrate-work");
        std::fs::create_dir_all(&work)?;
        let mut cmd = self.hosts.src.command(&ctx.crabmigrate)?;
        cmd.arg("--criu")
            .arg(&ctx.criu)
            .args(["migrate", "--pid", &pid.to_string(), "--to", &self.addr()])
            .arg("--key-file")
            .arg(&self.key)
            .args(["--strategy", strategy, "--json", "--work-dir"])
            .arg(work);
        Ok(cmd)
    }

    /// Migrates a fresh workload of `size` MiB (ticking every
    /// `interval_ms`) with `strategy`.
    pub fn migrate_once(
        &self,
        ctx: &Ctx,
        size: u64,
        strategy: &str,
        interval_ms: u64,
    ) -> anyhow::Result<Migration> {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let dir = self.dir.join(format!("run-{n}"));
        std::fs::create_dir_all(&dir)?;
        let result = self.migrate_in(ctx, size, strategy, interval_ms, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        proc::reap_orphans();
        result
    }

    fn migrate_in(
        &self,
        ctx: &Ctx,
        size: u64,
        strategy: &str,
        interval_ms: u64,
        dir: &Path,
    ) -> anyhow::Result<Migration> {
        let state = dir.join("state");
        let mut workload = Workload::start(
            &ctx.workload,
            size,
            interval_ms,
            &state,
            Some(&self.hosts.src),
            3,
        )?;
        let watch = TickWatch::start(&state);
        // A baseline of a few ticks, for the gap's resolution.
        watch.wait_changes_after(Instant::now(), 3, Duration::from_secs(60));
        let mut cmd = self.migrate_command(ctx, workload.root, strategy)?;
        let start = Instant::now();
        let done = proc::run(&mut cmd, dir, LIMIT)?;
        let end = Instant::now();
        if !done.status.success() {
            let error = done
                .stderr
                .lines()
                .find(|l| l.starts_with("crabmigrate: error:"))
                .map(str::to_owned)
                .unwrap_or_else(|| proc::tail(&done.stderr));
            let still_there = workload.root_alive();
            return Ok(Migration::Refused {
                error,
                source_runs: still_there,
            });
        }
        let report: serde_json::Value = serde_json::from_str(&done.stdout)
            .with_context(|| format!("the migrate report is not JSON: {}", done.stdout))?;
        let dest = report["destination_pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let dest_started = proc::start_time(dest);
        watch.wait_changes_after(end, 1, Duration::from_secs(120));
        let changes = watch.finish();
        let gap = workload::gap(&changes, start, end);
        proc::kill_and_reap(dest, dest_started, Duration::from_secs(10));
        workload.wait_gone(Duration::from_secs(10));
        Ok(Migration::Done {
            report,
            gap,
            wall_ms: ms(done.wall),
        })
    }
}

/// How one migration went.
#[derive(Debug)]
pub enum Migration {
    /// It worked: the report and what the watcher saw.
    Done {
        /// `migrate --json`'s report.
        report: serde_json::Value,
        /// The external gap, if the watcher saw ticks on both sides.
        gap: Option<Gap>,
        /// The wall time of `migrate`.
        wall_ms: f64,
    },
    /// `migrate` failed or refused.
    Refused {
        /// Its error line.
        error: String,
        /// Whether the workload still runs on the source (a clean refusal).
        source_runs: bool,
    },
}

/// A number from a report, if present.
pub fn field(report: &serde_json::Value, name: &str) -> Option<f64> {
    report.get(name).and_then(serde_json::Value::as_f64)
}

/// Whether `error` says the strategy is not there yet, rather than that a
/// migration broke.
pub fn not_built(error: &str) -> bool {
    let e = error.to_lowercase();
    e.contains("not implemented")
        || e.contains("not supported")
        || e.contains("invalid value")
        || e.contains("soft-dirty")
        || e.contains("unsupported")
}

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Benchmark {
    let lab = match Lab::new(ctx, "dt") {
        Ok(lab) => lab,
        Err(e) => return Benchmark::failed(NAME, TITLE, Some(GOAL), format!("{e:#}")),
    };
    let mut cases = Vec::new();
    let mut pre_copy_refused: Option<String> = None;
    for &size in &ctx.migration_sizes {
        ctx.prewarm(size * 3);
        // strategy -> (round, record)
        let mut done: BTreeMap<&str, Vec<(usize, serde_json::Value)>> = BTreeMap::new();
        let mut broken: BTreeMap<&str, String> = BTreeMap::new();
        for i in 0..ctx.warmup + ctx.pairs {
            let counted = i >= ctx.warmup;
            let mut order = if a_first(i) {
                [STRATEGIES[0], STRATEGIES[1]]
            } else {
                [STRATEGIES[1], STRATEGIES[0]]
            }
            .to_vec();
            order.push(STRATEGIES[2]);
            for strategy in order {
                if broken.contains_key(strategy)
                    || (strategy == "pre-copy" && pre_copy_refused.is_some())
                {
                    continue;
                }
                match lab.migrate_once(ctx, size, strategy, 1) {
                    Ok(Migration::Done {
                        report,
                        gap,
                        wall_ms,
                    }) => {
                        ctx.log(&format!(
                            "{NAME} {strategy} {size} MiB round {i}{}: downtime {} ms, external gap {} ms (tick {} ms), total {} ms",
                            if counted { "" } else { " (warm-up)" },
                            field(&report, "downtime_ms").map_or("-".into(), |v| format!("{v:.1}")),
                            gap.map_or("-".into(), |g| format!("{:.1}", g.gap_ms)),
                            gap.map_or("-".into(), |g| format!("{:.1}", g.tick_ms)),
                            field(&report, "total_ms").map_or("-".into(), |v| format!("{v:.1}")),
                        ));
                        if counted {
                            done.entry(strategy).or_default().push((
                                i,
                                json!({"round": i, "wall_ms": wall_ms, "report": report,
                                       "external_gap_ms": gap.map(|g| g.gap_ms),
                                       "tick_ms": gap.map(|g| g.tick_ms),
                                       "continued_with_same_memory": gap.map(|g| g.continued)}),
                            ));
                        }
                    }
                    Ok(Migration::Refused { error, source_runs }) => {
                        ctx.log(&format!("{NAME} {strategy} {size} MiB: {error}"));
                        if strategy == "pre-copy" && source_runs && not_built(&error) {
                            pre_copy_refused = Some(error);
                        } else {
                            broken.insert(
                                strategy,
                                format!(
                                    "{error}{}; agent: {}",
                                    if source_runs {
                                        ""
                                    } else {
                                        " (the workload no longer runs on the source)"
                                    },
                                    lab.agent_log()
                                ),
                            );
                        }
                    }
                    Err(e) => {
                        broken.insert(strategy, format!("{e:#}"));
                    }
                }
            }
        }
        for strategy in STRATEGIES {
            let mut case = Case::new(format!("{strategy} {size} MiB")).size(size);
            case.strategy = Some(strategy.to_owned());
            let records: Vec<serde_json::Value> = done
                .get(strategy)
                .map(|v| v.iter().map(|(_, r)| r.clone()).collect())
                .unwrap_or_default();
            add_metrics(&mut case, &records);
            case.runs = records;
            if let Some(why) = broken.get(strategy) {
                case = case.failed(why.clone());
            } else if strategy == "pre-copy" && pre_copy_refused.is_some() {
                case = case.unavailable(format!(
                    "crabmigrate migrate --strategy pre-copy refuses: {}",
                    pre_copy_refused.as_deref().unwrap_or_default()
                ));
            } else if case.runs.is_empty() {
                case = case.failed("no migration completed");
            } else if case
                .runs
                .iter()
                .any(|r| r["continued_with_same_memory"] == json!(false))
            {
                case.reason =
                    Some("a restored workload did not continue with the same checksum".to_owned());
                case.status = Status::Failed;
            }
            cases.push(case);
        }
        // post-copy / stop-copy downtime, paired by round.
        let by_round = |s: &str| -> BTreeMap<usize, f64> {
            done.get(s)
                .map(|v| {
                    v.iter()
                        .filter_map(|(i, r)| Some((*i, field(&r["report"], "downtime_ms")?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (post, stop) = (by_round("post-copy"), by_round("stop-copy"));
        let (a, b): (Vec<f64>, Vec<f64>) = post
            .iter()
            .filter_map(|(i, p)| Some((*p, *stop.get(i)?)))
            .unzip();
        if !a.is_empty() {
            let mut case = Case::new(format!("{size} MiB")).size(size);
            case.comparison = Some(Comparison::new(
                "post-copy downtime",
                "stop-copy downtime",
                "ms",
                a,
                b,
            ));
            cases.push(case);
        }
    }
    Benchmark::new(NAME, TITLE, Some(GOAL), cases)
}

/// The report's figures and the watcher's, summarised over the runs.
fn add_metrics(case: &mut Case, runs: &[serde_json::Value]) {
    let from_report = |name: &str, scale: f64| -> Vec<f64> {
        runs.iter()
            .filter_map(|r| field(&r["report"], name))
            .map(|v| v / scale)
            .collect()
    };
    case.metric("downtime ms", &from_report("downtime_ms", 1.0));
    case.metric("criu_frozen ms", &from_report("criu_frozen_ms", 1.0));
    case.metric("dependent ms", &from_report("dependent_ms", 1.0));
    case.metric("total ms", &from_report("total_ms", 1.0));
    let pages: Vec<f64> = from_report("page_bytes", 1_048_576.0)
        .into_iter()
        .filter(|&p| p > 0.0)
        .collect();
    case.metric("pages MiB", &pages);
    case.metric("wire MiB", &from_report("bytes_on_wire", 1_048_576.0));
    let watched =
        |name: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[name].as_f64()).collect() };
    case.metric("external gap ms", &watched("external_gap_ms"));
    case.metric("tick ms", &watched("tick_ms"));
}
