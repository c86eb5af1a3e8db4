//! Benchmark 5 (pending): content-hashed re-transfer in pre-copy.
//!
//! Pre-copy with sha256-hashed 4 KiB chunks is being built in
//! `crates/migrate`: the destination keeps a chunk store and only chunks
//! whose digest it lacks are sent. Its report is to carry
//! `rounds: [{round, bytes_sent, bytes_total}]`. This benchmark migrates a
//! workload whose memory does not change after it started (it only reads
//! it) with `--strategy pre-copy` and reads those rounds: after the first
//! round, almost nothing should be sent again. Until the CLI accepts
//! pre-copy, the benchmark records the CLI's refusal as "unavailable".

use serde_json::json;

use crate::migration::{field, not_built, Lab, Migration};
use crate::report::{Benchmark, Case};
use crate::Ctx;

pub const NAME: &str = "content-hash-retransfer";
pub const TITLE: &str =
    "pre-copy with content-hashed chunks: bytes re-sent after the first round (pending)";
const GOAL: &str = "bytes sent in later rounds ≤ fraction of memory written + 1 %";

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Benchmark {
    let mut bench = match measure(ctx) {
        Ok(case) => Benchmark::new(NAME, TITLE, Some(GOAL), vec![case]),
        Err(e) => Benchmark::failed(NAME, TITLE, Some(GOAL), format!("{e:#}")),
    };
    bench.pending = true;
    bench
}

fn measure(ctx: &Ctx) -> anyhow::Result<Case> {
    let size = if ctx.quick { 16 } else { 64 };
    let repeats = if ctx.quick { 1 } else { ctx.pairs.clamp(1, 3) };
    let lab = Lab::new(ctx, "cd")?;
    let mut case = Case::new(format!("pre-copy {size} MiB, memory unchanged")).size(size);
    case.strategy = Some("pre-copy".to_owned());
    let mut runs = Vec::new();
    for i in 0..repeats {
        match lab.migrate_once(ctx, size, "pre-copy", 100)? {
            Migration::Refused { error, source_runs } => {
                ctx.log(&format!("{NAME}: {error}"));
                return Ok(if source_runs && not_built(&error) {
                    case.unavailable(format!(
                        "crabmigrate migrate --strategy pre-copy refuses: {error}"
                    ))
                } else {
                    case.failed(format!("{error}; agent: {}", lab.agent_log()))
                });
            }
            Migration::Done { report, gap, .. } => {
                let Some(rounds) = report.get("rounds").and_then(|r| r.as_array()) else {
                    return Ok(case.unavailable(
                        "the pre-copy report has no `rounds` (bytes_sent, bytes_total per round) yet",
                    ));
                };
                let sent: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| r["bytes_sent"].as_f64())
                    .collect();
                let total: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| r["bytes_total"].as_f64())
                    .collect();
                let later_sent: f64 = sent.iter().skip(1).sum();
                let later_total: f64 = total.iter().skip(1).sum();
                let record = json!({
                    "run": i,
                    "report": report,
                    "rounds": rounds.len(),
                    "later_rounds_sent_percent": (later_total > 0.0).then(|| 100.0 * later_sent / later_total),
                    "first_round_sent_mib": sent.first().map(|b| b / 1_048_576.0),
                    "external_gap_ms": gap.map(|g| g.gap_ms),
                });
                ctx.log(&format!("{NAME} run {i}: {record}"));
                runs.push(record);
            }
        }
    }
    let pick = |name: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[name].as_f64()).collect() };
    case.metric("rounds", &pick("rounds"));
    case.metric("later rounds re-sent %", &pick("later_rounds_sent_percent"));
    case.metric("first round sent MiB", &pick("first_round_sent_mib"));
    case.metric("external gap ms", &pick("external_gap_ms"));
    let downtime: Vec<f64> = runs
        .iter()
        .filter_map(|r| field(&r["report"], "downtime_ms"))
        .collect();
    case.metric("downtime ms", &downtime);
    case.runs = runs;
    Ok(case)
}
