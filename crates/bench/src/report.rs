//! The result file (`results.json`) and its Markdown rendering
//! (`results.md`), so that no figure is ever typed by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Summary;

/// Version of the result file's layout.
pub const SCHEMA: u32 = 1;

/// Whether a benchmark or case produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured.
    Ok,
    /// Cannot run here or yet; `reason` says why.
    Unavailable,
    /// Should have worked but did not; `reason` says what failed.
    Failed,
}

/// Everything one run of the bench measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// [`SCHEMA`].
    pub schema: u32,
    /// When the run started (UTC).
    pub date: String,
    /// The command line.
    pub command: String,
    /// The machine.
    pub host: Host,
    /// What was asked for.
    pub settings: Settings,
    /// One entry per benchmark, in the order they ran.
    pub benchmarks: Vec<Benchmark>,
}

/// Facts about the machine.
#[derive(Debug, Serialize)]
pub struct Host {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cores: usize,
    /// MemTotal.
    pub memory_mib: u64,
    /// `criu --version`.
    pub criu_version: String,
    /// `runc --version` (first line), if runc is there.
    pub runc_version: Option<String>,
    /// `crabmigrate --version`.
    pub crabmigrate_version: String,
    /// /proc/loadavg (1, 5, 15 min) before the first benchmark: other
    /// work on the machine shows here.
    pub load_before: String,
    /// /proc/loadavg after the last benchmark.
    pub load_after: String,
    /// The programs used.
    pub crabmigrate: String,
    /// The CRIU executable.
    pub criu: String,
    /// The workload program (copied before each use).
    pub workload: String,
}

/// The knobs of the run.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// Counted pairs per comparison.
    pub pairs: usize,
    /// Warm-up pairs (not counted).
    pub warmup_pairs: usize,
    /// Sizes of the wrapper benchmarks.
    pub sizes_mib: Vec<u64>,
    /// Sizes of the migration benchmark.
    pub migration_sizes_mib: Vec<u64>,
    /// Size of the throughput benchmark.
    pub throughput_mib: u64,
    /// Size of the content-hash re-transfer.
    pub retransfer_mib: u64,
    /// The extra rate-limited link of the throughput benchmark.
    pub link_rate: Option<String>,
    /// Where images were written.
    pub scratch: String,
}

/// One benchmark.
#[derive(Debug, Serialize)]
pub struct Benchmark {
    /// Stable identifier (`checkpoint-overhead`, ...).
    pub name: String,
    /// One line: what is compared.
    pub title: String,
    /// Ok when any case is, failed when any case failed, else unavailable.
    pub status: Status,
    /// Why it is unavailable or failed.
    pub reason: Option<String>,
    /// The target from the issue, for the reader.
    pub goal: Option<String>,
    /// Waits for a feature that is being built.
    pub pending: bool,
    /// The measured cases.
    pub cases: Vec<Case>,
}

impl Benchmark {
    /// A benchmark with `cases`; its status and reason follow from them.
    pub fn new(name: &str, title: &str, goal: Option<&str>, cases: Vec<Case>) -> Self {
        let failed = cases.iter().find(|c| c.status == Status::Failed);
        let ok = cases.iter().any(|c| c.status == Status::Ok);
        let (status, reason) = match (failed, ok) {
            (Some(c), _) => (Status::Failed, c.reason.clone()),
            (None, true) => (Status::Ok, None),
            (None, false) => (
                Status::Unavailable,
                Some(
                    cases
                        .iter()
                        .find_map(|c| c.reason.clone())
                        .unwrap_or_else(|| "no case ran".to_owned()),
                ),
            ),
        };
        Self {
            name: name.to_owned(),
            title: title.to_owned(),
            status,
            reason,
            goal: goal.map(str::to_owned),
            pending: false,
            cases,
        }
    }

    /// A benchmark that could not run at all.
    pub fn unavailable(name: &str, title: &str, goal: Option<&str>, reason: String) -> Self {
        let mut bench = Self::new(name, title, goal, Vec::new());
        bench.reason = Some(reason);
        bench
    }

    /// A benchmark whose setup failed.
    pub fn failed(name: &str, title: &str, goal: Option<&str>, reason: String) -> Self {
        let mut bench = Self::new(name, title, goal, Vec::new());
        bench.status = Status::Failed;
        bench.reason = Some(reason);
        bench
    }
}

/// One measured case (a size, a strategy, a phase).
#[derive(Debug, Serialize)]
pub struct Case {
    /// What it is, e.g. `64 MiB` or `post-copy 256 MiB`.
    pub label: String,
    /// The workload's memory.
    pub size_mib: Option<u64>,
    /// The migration strategy, if any.
    pub strategy: Option<String>,
    /// Whether it produced a result.
    pub status: Status,
    /// Why not, or a caveat.
    pub reason: Option<String>,
    /// For cases without a comparison: the table they go in (cases with
    /// other quantities get their own table); `None` for the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The side-by-side comparison, if this case is one.
    pub comparison: Option<Comparison>,
    /// Other measured quantities (name with unit -> summary).
    pub metrics: BTreeMap<String, Summary>,
    /// Every counted run, with CRIU's statistics.
    pub runs: Vec<serde_json::Value>,
}

impl Case {
    /// An empty case that is ok until told otherwise.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            size_mib: None,
            strategy: None,
            status: Status::Ok,
            reason: None,
            table: None,
            comparison: None,
            metrics: BTreeMap::new(),
            runs: Vec::new(),
        }
    }

    /// Sets the size.
    pub fn size(mut self, mib: u64) -> Self {
        self.size_mib = Some(mib);
        self
    }

    /// Marks it unavailable with `reason`.
    pub fn unavailable(mut self, reason: impl Into<String>) -> Self {
        self.status = Status::Unavailable;
        self.reason = Some(reason.into());
        self
    }

    /// Marks it failed with `reason`.
    pub fn failed(mut self, reason: impl Into<String>) -> Self {
        self.status = Status::Failed;
        self.reason = Some(reason.into());
        self
    }

    /// Adds the summary of `samples` as metric `name` (nothing without
    /// samples).
    pub fn metric(&mut self, name: &str, samples: &[f64]) {
        if let Some(s) = Summary::of(samples) {
            self.metrics.insert(name.to_owned(), s);
        }
    }
}

/// A against B, measured in pairs.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// What A is.
    pub a: String,
    /// What B is.
    pub b: String,
    /// The unit of the values (`ms`, `MiB/s`).
    pub unit: String,
    /// Whether lower values are better.
    pub lower_is_better: bool,
    /// A's value in each counted pair.
    pub a_values: Vec<f64>,
    /// B's value in each counted pair.
    pub b_values: Vec<f64>,
    /// A's values.
    pub a_summary: Option<Summary>,
    /// B's values.
    pub b_summary: Option<Summary>,
    /// A / B per pair.
    pub ratio: Option<Summary>,
    /// A - B per pair.
    pub difference: Option<Summary>,
}

impl Comparison {
    /// Summarises paired values (`a[i]` and `b[i]` ran in the same pair).
    pub fn new(a: &str, b: &str, unit: &str, a_values: Vec<f64>, b_values: Vec<f64>) -> Self {
        let ratios: Vec<f64> = a_values.iter().zip(&b_values).map(|(a, b)| a / b).collect();
        let diffs: Vec<f64> = a_values.iter().zip(&b_values).map(|(a, b)| a - b).collect();
        Self {
            a: a.to_owned(),
            b: b.to_owned(),
            unit: unit.to_owned(),
            lower_is_better: unit == "ms",
            a_summary: Summary::of(&a_values),
            b_summary: Summary::of(&b_values),
            ratio: Summary::of(&ratios),
            difference: Summary::of(&diffs),
            a_values,
            b_values,
        }
    }
}

/// A number for a table: 3 significant-ish digits.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x == 0.0 || x.abs() >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.1e}")
    }
}

fn range(s: &Summary) -> String {
    format!("{} ({}–{})", num(s.median), num(s.min), num(s.max))
}

fn ratio(s: &Summary) -> String {
    format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max)
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Unavailable => "unavailable",
        Status::Failed => "FAILED",
    }
}

/// One line, pipes escaped, for a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Renders `results` as Markdown: the run's facts, then one table per
/// benchmark.
pub fn markdown(results: &Results) -> String {
    let mut md = String::new();
    let h = &results.host;
    let _ = writeln!(
        md,
        "Measured {} on Linux {}, {} cores, {} MiB RAM; CRIU {}, runc {}, crabmigrate {}.",
        results.date,
        h.kernel,
        h.cores,
        h.memory_mib,
        h.criu_version,
        h.runc_version.as_deref().unwrap_or("absent"),
        h.crabmigrate_version
    );
    let _ = writeln!(
        md,
        "Load average before {}, after {}.",
        h.load_before, h.load_after
    );
    let s = &results.settings;
    let _ = writeln!(
        md,
        "{} counted pairs after {} warm-up pair(s), interleaved A B B A; images in {}.",
        s.pairs, s.warmup_pairs, s.scratch
    );
    let _ = writeln!(md, "\nCommand: `{}`", results.command);
    for bench in &results.benchmarks {
        let _ = writeln!(md, "\n### {} — {}\n", bench.name, bench.title);
        let _ = write!(md, "Status: {}", status_word(bench.status));
        if bench.pending {
            md.push_str(" (pending: waits for a feature being built)");
        }
        if let Some(reason) = &bench.reason {
            let _ = write!(md, ": {}", cell(reason));
        }
        md.push('\n');
        if let Some(goal) = &bench.goal {
            let _ = writeln!(md, "Goal: {goal}");
        }
        let compared: Vec<&Case> = bench
            .cases
            .iter()
            .filter(|c| c.comparison.is_some())
            .collect();
        let measured: Vec<&Case> = bench
            .cases
            .iter()
            .filter(|c| c.comparison.is_none())
            .collect();
        if !compared.is_empty() {
            comparison_table(&mut md, &compared);
        }
        // One table per `table` name, in the order of their first case.
        let mut tables: Vec<Option<&str>> = Vec::new();
        for case in &measured {
            if !tables.contains(&case.table.as_deref()) {
                tables.push(case.table.as_deref());
            }
        }
        for table in tables {
            let cases: Vec<&Case> = measured
                .iter()
                .copied()
                .filter(|c| c.table.as_deref() == table)
                .collect();
            if let Some(title) = table {
                let _ = writeln!(md, "\n{title}:");
            }
            metrics_table(&mut md, &cases);
        }
    }
    md
}

/// The status and reason of a case, for its notes column.
fn notes(case: &Case) -> Vec<String> {
    match (case.status, &case.reason) {
        (Status::Ok, Some(reason)) => vec![format!("note: {reason}")],
        (Status::Ok, None) => Vec::new(),
        (status, reason) => vec![format!(
            "**{}**: {}",
            status_word(status),
            reason.as_deref().unwrap_or("")
        )],
    }
}

/// Cases with an A/B comparison: one row each, CRIU's figures in the last
/// column.
fn comparison_table(md: &mut String, cases: &[&Case]) {
    md.push_str("\n| case | A | B | A median (min–max) | B median (min–max) | ratio A/B median (min–max) | A−B median | notes, CRIU's figures (median, min–max) |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for case in cases {
        let Some(c) = &case.comparison else {
            continue;
        };
        let unit = &c.unit;
        let with_unit =
            |s: &Option<Summary>| s.map_or("-".into(), |s| format!("{} {unit}", range(&s)));
        let mut other = notes(case);
        other.extend(
            case.metrics
                .iter()
                .map(|(name, s)| format!("{name} {}", range(s))),
        );
        let row = [
            cell(&case.label),
            cell(&c.a),
            cell(&c.b),
            with_unit(&c.a_summary),
            with_unit(&c.b_summary),
            c.ratio.as_ref().map_or("-".into(), ratio),
            c.difference
                .map_or("-".into(), |s| format!("{} {unit}", num(s.median))),
            cell(&other.join("; ")),
        ];
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
}

/// Cases without a comparison: one column per measured quantity.
fn metrics_table(md: &mut String, cases: &[&Case]) {
    let mut names: Vec<&str> = Vec::new();
    for case in cases {
        for name in case.metrics.keys() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    let _ = writeln!(
        md,
        "\n| case | {} | notes |",
        names
            .iter()
            .map(|n| format!("{n} (median, min–max)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|{}", " --- |".repeat(names.len() + 2));
    for case in cases {
        let mut row = vec![cell(&case.label)];
        row.extend(
            names
                .iter()
                .map(|n| case.metrics.get(*n).map_or("-".to_owned(), range)),
        );
        row.push(cell(&notes(case).join("; ")));
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
}

/// Days since 1970-01-01 to a civil (year, month, day), after Howard
/// Hinnant's algorithm.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
    }

    #[test]
    fn benchmark_status_follows_cases() {
        let ok = Benchmark::new("x", "x", None, vec![Case::new("a")]);
        assert_eq!(ok.status, Status::Ok);
        let un = Benchmark::new("x", "x", None, vec![Case::new("a").unavailable("why")]);
        assert_eq!(un.status, Status::Unavailable);
        assert_eq!(un.reason.as_deref(), Some("why"));
        let failed = Benchmark::new(
            "x",
            "x",
            None,
            vec![Case::new("a"), Case::new("b").failed("broke")],
        );
        assert_eq!(failed.status, Status::Failed);
    }

    #[test]
    fn comparison_ratios_are_per_pair() {
        let c = Comparison::new("a", "b", "ms", vec![2.0, 3.0, 4.0], vec![1.0, 3.0, 2.0]);
        let r = c.ratio.expect("ratios");
        assert_eq!((r.median, r.min, r.max), (2.0, 1.0, 2.0));
    }
}
