//! `crabmigrate-bench --quick` on the debug binaries: every benchmark runs
//! once at 16 MiB, and the result file lists each one with a result or an
//! explained "unavailable" reason. Nothing about timing is asserted.

use std::process::{Command, Stdio};

/// Every benchmark the harness knows.
const BENCHMARKS: [&str; 6] = [
    "checkpoint-overhead",
    "restore-overhead",
    "container-cr",
    "migration-downtime",
    "transfer-throughput",
    "content-hash-retransfer",
];

#[test]
fn quick_bench_reports_every_benchmark() {
    if testkit::real_criu("quick_bench_reports_every_benchmark").is_none() {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(testkit::program("crabmigrate-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(out_dir.path())
        .arg("--crabmigrate")
        .arg(testkit::program("crabmigrate"))
        .arg("--workload")
        .arg(testkit::program("crabmigrate-workload"))
        .stdin(Stdio::null())
        .output()
        .expect("crabmigrate-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("crabmigrate-bench --quick took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "crabmigrate-bench --quick failed ({}): {stderr}",
        out.status
    );

    let json = std::fs::read(out_dir.path().join("results.json")).expect("results.json written");
    let results: serde_json::Value = serde_json::from_slice(&json).expect("results.json is JSON");
    assert_eq!(results["settings"]["quick"], true);
    let benches = results["benchmarks"].as_array().expect("a benchmarks list");
    for name in BENCHMARKS {
        let bench = benches
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from results.json: {results}"));
        let reason = bench["reason"].as_str().unwrap_or_default();
        match bench["status"].as_str() {
            Some("ok") => {
                let cases = bench["cases"].as_array().expect("cases");
                assert!(!cases.is_empty(), "{name}: ok without cases");
                for case in cases {
                    match case["status"].as_str() {
                        Some("ok") => assert!(
                            !case["comparison"].is_null()
                                || case["metrics"].as_object().is_some_and(|m| !m.is_empty()),
                            "{name}: an ok case without figures: {case}"
                        ),
                        Some("unavailable") => assert!(
                            case["reason"].as_str().is_some_and(|r| !r.is_empty()),
                            "{name}: an unavailable case without a reason: {case}"
                        ),
                        other => panic!("{name}: case status {other:?}: {case}"),
                    }
                }
            }
            Some("unavailable") => {
                assert!(!reason.is_empty(), "{name}: unavailable without a reason");
                println!("{name} unavailable: {reason}");
            }
            other => panic!("{name}: status {other:?}: {reason}"),
        }
    }

    let md = std::fs::read_to_string(out_dir.path().join("results.md")).expect("results.md");
    for name in BENCHMARKS {
        assert!(md.contains(name), "{name} missing from results.md");
    }
    let migration = benches
        .iter()
        .find(|b| b["name"] == "migration-downtime")
        .unwrap();
    if migration["status"] == "ok" {
        let svg =
            std::fs::read_to_string(out_dir.path().join("downtime.svg")).expect("downtime.svg");
        assert!(svg.starts_with("<svg"), "downtime.svg is an SVG");
    }
}
