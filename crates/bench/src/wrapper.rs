//! Benchmarks 1a and 1b: what crabmigrate adds over the CRIU command line.
//!
//! 1a: `crabmigrate checkpoint --pid P --images-dir D --leave-running`
//! against `criu --no-default-config dump -t P -D D --leave-running -v2 -o
//! dump.log`, the options crabmigrate's RPC request carries (CRIU's default
//! log level and a log file in the images directory; no shell job: the
//! workload leads its own session).
//!
//! 1b: `crabmigrate restore --images-dir D --detach --pid-file F` against
//! `criu --no-default-config restore -D D -d -v2 -o restore.log --pidfile F`
//! on the same images. The workload is pid 1 of its own pid namespace, so
//! every restore makes a new namespace and never waits for a pid.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::proc::{self, Finished, RunError};
use crate::report::{Benchmark, Case, Comparison};
use crate::stats::a_first;
use crate::workload::{ms, Workload};
use crate::Ctx;

/// Bound on one checkpoint or restore.
const LIMIT: Duration = Duration::from_secs(300);
/// Tick interval of the workload here: slow, so that its checksum (a read
/// of all its memory each tick) leaves the CPUs to CRIU.
const INTERVAL_MS: u64 = 500;

pub const CHECKPOINT: &str = "checkpoint-overhead";
pub const CHECKPOINT_TITLE: &str =
    "crabmigrate checkpoint --pid vs criu dump (CLI), same process, images on tmpfs";
pub const CHECKPOINT_GOAL: &str = "ratio ≤ 1.05 (≤ 5 ms added at 16 MiB)";
pub const RESTORE: &str = "restore-overhead";
pub const RESTORE_TITLE: &str =
    "crabmigrate restore --detach vs criu restore -d (CLI), same images on tmpfs";

/// Runs both benchmarks over `ctx.sizes`.
pub fn run(ctx: &Ctx) -> (Benchmark, Benchmark) {
    let mut checkpoints = Vec::new();
    let mut restores = Vec::new();
    for &size in &ctx.sizes {
        let (c, r) = match one_size(ctx, size) {
            Ok(pair) => pair,
            Err(e) => {
                let why = format!("{e:#}");
                (
                    Case::new(format!("{size} MiB"))
                        .size(size)
                        .failed(why.clone()),
                    Case::new(format!("{size} MiB")).size(size).failed(why),
                )
            }
        };
        checkpoints.push(c);
        restores.push(r);
    }
    (
        Benchmark::new(
            CHECKPOINT,
            CHECKPOINT_TITLE,
            Some(CHECKPOINT_GOAL),
            checkpoints,
        ),
        Benchmark::new(RESTORE, RESTORE_TITLE, Some(CHECKPOINT_GOAL), restores),
    )
}

fn one_size(ctx: &Ctx, size: u64) -> anyhow::Result<(Case, Case)> {
    let dir = ctx.dir(&format!("wrapper-{size}"))?;
    ctx.prewarm(size * 3);
    let mut workload = Workload::start(
        &ctx.workload,
        size,
        INTERVAL_MS,
        &dir.join("state"),
        None,
        3,
    )?;
    let label = format!("{size} MiB");
    let checkpoint = checkpoints(ctx, size, &workload, &dir)
        .unwrap_or_else(|e| Case::new(&label).size(size).failed(format!("{e:#}")));
    let restore = restores(ctx, size, &mut workload, &dir)
        .unwrap_or_else(|e| Case::new(&label).size(size).failed(format!("{e:#}")));
    Ok((checkpoint, restore))
}

/// 1a: checkpoints with --leave-running, interleaved.
fn checkpoints(ctx: &Ctx, size: u64, workload: &Workload, dir: &Path) -> anyhow::Result<Case> {
    let pid = workload.root;
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut runs = Vec::new();
    for i in 0..ctx.warmup + ctx.pairs {
        let counted = i >= ctx.warmup;
        let one = |ours: bool| -> anyhow::Result<(f64, serde_json::Value)> {
            let images = dir.join(format!("ckpt-{i}-{}", side(ours)));
            let _ = std::fs::remove_dir_all(&images);
            std::fs::create_dir_all(&images)?;
            let done = if ours {
                ours_checkpoint(ctx, pid, &images, dir)?
            } else {
                criu_dump(ctx, pid, &images, dir)?
            };
            let stats = criu_rpc::read_dump_stats(&images)?;
            let _ = std::fs::remove_dir_all(&images);
            anyhow::ensure!(
                workload.root_alive(),
                "the workload died during a --leave-running checkpoint"
            );
            let wall = ms(done.wall);
            Ok((
                wall,
                json!({"side": side(ours), "pair": i, "wall_ms": wall, "criu": stats}),
            ))
        };
        let order = if a_first(i) {
            [true, false]
        } else {
            [false, true]
        };
        let mut pair = [0.0; 2];
        for ours in order {
            let (wall, record) = one(ours)?;
            pair[usize::from(!ours)] = wall;
            if counted {
                runs.push(record);
            }
        }
        ctx.log(&format!(
            "{CHECKPOINT} {size} MiB pair {i}{}: crabmigrate {:.1} ms, criu {:.1} ms",
            if counted { "" } else { " (warm-up)" },
            pair[0],
            pair[1]
        ));
        if counted {
            a.push(pair[0]);
            b.push(pair[1]);
        }
    }
    let mut case = Case::new(format!("{size} MiB")).size(size);
    case.comparison = Some(Comparison::new(
        "crabmigrate checkpoint",
        "criu dump",
        "ms",
        a,
        b,
    ));
    add_dump_metrics(&mut case, &runs);
    case.runs = runs;
    Ok(case)
}

/// 1b: one final dump (the workload stops), then restores of it.
fn restores(ctx: &Ctx, size: u64, workload: &mut Workload, dir: &Path) -> anyhow::Result<Case> {
    let images = dir.join("restore-images");
    std::fs::create_dir_all(&images)?;
    criu_dump_final(ctx, workload.root, &images, dir)?;
    workload.wait_gone(Duration::from_secs(10));
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut runs = Vec::new();
    for i in 0..ctx.warmup + ctx.pairs {
        let counted = i >= ctx.warmup;
        let order = if a_first(i) {
            [true, false]
        } else {
            [false, true]
        };
        let mut pair = [0.0; 2];
        for ours in order {
            let pid_file = dir.join("restored.pid");
            let _ = std::fs::remove_file(&pid_file);
            let done = if ours {
                ours_restore(ctx, &images, &pid_file, dir)
            } else {
                criu_restore(ctx, &images, &pid_file, dir)
            };
            let restored: u32 = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            proc::kill_and_reap(restored, None, Duration::from_secs(10));
            let done = done?;
            anyhow::ensure!(restored > 0, "the restore wrote no pid file");
            let stats = criu_rpc::read_restore_stats(&images)?;
            let wall = ms(done.wall);
            pair[usize::from(!ours)] = wall;
            if counted {
                runs.push(json!({"side": side(ours), "pair": i, "wall_ms": wall, "criu": stats}));
            }
        }
        ctx.log(&format!(
            "{RESTORE} {size} MiB pair {i}{}: crabmigrate {:.1} ms, criu {:.1} ms",
            if counted { "" } else { " (warm-up)" },
            pair[0],
            pair[1]
        ));
        if counted {
            a.push(pair[0]);
            b.push(pair[1]);
        }
    }
    let _ = std::fs::remove_dir_all(&images);
    let mut case = Case::new(format!("{size} MiB")).size(size);
    case.comparison = Some(Comparison::new(
        "crabmigrate restore",
        "criu restore",
        "ms",
        a,
        b,
    ));
    add_restore_metrics(&mut case, &runs);
    case.runs = runs;
    Ok(case)
}

fn side(ours: bool) -> &'static str {
    if ours {
        "crabmigrate"
    } else {
        "criu"
    }
}

/// CRIU's own times for each side, so that a difference in wall time can
/// be told apart from a difference in CRIU's work.
fn add_dump_metrics(case: &mut Case, runs: &[serde_json::Value]) {
    for (who, short) in [("crabmigrate", "A"), ("criu", "B")] {
        for (field, name) in [
            ("frozen_time_us", "frozen"),
            ("memdump_time_us", "memdump"),
            ("memwrite_time_us", "memwrite"),
        ] {
            let v = values(runs, who, field);
            case.metric(&format!("{short} criu {name} ms"), &v);
        }
    }
}

fn add_restore_metrics(case: &mut Case, runs: &[serde_json::Value]) {
    for (who, short) in [("crabmigrate", "A"), ("criu", "B")] {
        let v = values(runs, who, "restore_time_us");
        case.metric(&format!("{short} criu restore_time ms"), &v);
    }
}

fn values(runs: &[serde_json::Value], who: &str, field: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r["side"] == who)
        .filter_map(|r| r["criu"][field].as_f64())
        .map(|us| us / 1000.0)
        .collect()
}

fn ours_checkpoint(ctx: &Ctx, pid: u32, images: &Path, dir: &Path) -> Result<Finished, RunError> {
    let mut cmd = ctx.crabmigrate();
    cmd.args(["checkpoint", "--pid", &pid.to_string(), "--images-dir"])
        .arg(images)
        .arg("--leave-running");
    proc::run(&mut cmd, dir, LIMIT)?.ok("crabmigrate checkpoint")
}

fn criu(ctx: &Ctx) -> Command {
    let mut cmd = Command::new(&ctx.criu);
    cmd.arg("--no-default-config");
    cmd
}

fn criu_dump(ctx: &Ctx, pid: u32, images: &Path, dir: &Path) -> Result<Finished, RunError> {
    let mut cmd = criu(ctx);
    cmd.args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(images)
        .args(["--leave-running", "-v2", "-o", "dump.log"]);
    proc::run(&mut cmd, dir, LIMIT)?.ok("criu dump")
}

/// The dump the restores use: the workload stops (is killed) after it.
fn criu_dump_final(ctx: &Ctx, pid: u32, images: &Path, dir: &Path) -> Result<Finished, RunError> {
    let mut cmd = criu(ctx);
    cmd.args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(images)
        .args(["-v2", "-o", "dump.log"]);
    proc::run(&mut cmd, dir, LIMIT)?.ok("criu dump")
}

fn ours_restore(
    ctx: &Ctx,
    images: &Path,
    pid_file: &Path,
    dir: &Path,
) -> Result<Finished, RunError> {
    let mut cmd = ctx.crabmigrate();
    cmd.args(["restore", "--images-dir"])
        .arg(images)
        .arg("--detach")
        .arg("--pid-file")
        .arg(pid_file);
    proc::run(&mut cmd, dir, LIMIT)?.ok("crabmigrate restore")
}

fn criu_restore(
    ctx: &Ctx,
    images: &Path,
    pid_file: &Path,
    dir: &Path,
) -> Result<Finished, RunError> {
    let mut cmd = criu(ctx);
    cmd.args(["restore", "-D"])
        .arg(images)
        .args(["-d", "-v2", "-o", "restore.log", "--pidfile"])
        .arg(pid_file);
    proc::run(&mut cmd, dir, LIMIT)?.ok("criu restore")
}
