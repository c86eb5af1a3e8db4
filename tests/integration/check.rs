use serde_json::Value;

#[test]
fn check_json_reports_this_hosts_capabilities() {
    if testkit::real_criu("check_json_reports_this_hosts_capabilities").is_none() {
        return;
    }
    let out = testkit::run(&["check", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    let version = report["criu"]["version"].as_str().unwrap();
    assert!(version.starts_with('4'), "CRIU {version}");
    assert!(report["criu"]["version_number"].as_u64().unwrap() >= 40000);
    assert_eq!(report["criu"]["supported"], true);

    let verdicts = &report["verdicts"];
    assert_eq!(
        verdicts["checkpoint_restore"]["available"], true,
        "{verdicts}"
    );
    assert_eq!(verdicts["page_server"]["available"], true);
    // This kernel has no soft-dirty bits, and setup raised fs.pipe-max-size.
    assert_eq!(verdicts["pre_dump"]["available"], false);
    let why = verdicts["pre_dump"]["reason"].as_str().unwrap();
    assert!(why.contains("dirty-page tracking"), "{why}");
    assert_eq!(verdicts["post_copy"]["available"], true, "{verdicts}");
    // The socket probe dumped a TCP listener, an established connection and
    // a UDP socket for real (CI provisions CRIU 4.2).
    assert_eq!(verdicts["sockets"]["available"], true, "{verdicts}");
    assert_eq!(report["sockets"]["probe"]["ok"], true, "{report}");
    assert!(verdicts["checkpoint_restore"].get("limitation").is_none());
    assert_eq!(report["sockets"]["network_lock"]["method"], "iptables");

    // Facts taken from CRIU's answers, not from what we asked.
    assert_eq!(report["features"]["mem_track"], false);
    assert_eq!(report["features"]["lazy_pages"], true);
    assert_eq!(report["kernel"]["criu_check"]["ok"], true);
    assert_eq!(report["kernel"]["mem_dirty_track"]["ok"], false);
    assert_eq!(report["kernel"]["uffd"]["ok"], true);
    assert!(report["host"]["pipe_max_size"].as_u64().unwrap() >= 3_354_624);
}

#[test]
fn check_human_report_names_every_capability() {
    if testkit::real_criu("check_human_report_names_every_capability").is_none() {
        return;
    }
    let out = testkit::run(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "checkpoint/restore  yes\n",
        "TCP/UDP sockets     yes",
        "network lock        iptables",
        "pre-dump            no",
        "post-copy           yes",
        "page server         yes",
        "fs.pipe-max-size",
        "Dirty tracking is OFF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
