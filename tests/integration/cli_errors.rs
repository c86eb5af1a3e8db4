//! Each bad CRIU gives one line on stderr that names the cause, a non-zero
//! exit status, and no panic. These use stand-in programs: no root needed.

fn one_error_line(args: &[&str]) -> String {
    let out = testkit::run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "{args:?}: exit status");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got:\n{stderr}");
    assert!(lines[0].starts_with("crabmigrate: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_owned()
}

#[test]
fn nonexistent_criu_is_named() {
    let line = one_error_line(&["check", "--criu", "/nonexistent"]);
    assert!(line.contains("/nonexistent"), "{line}");
    assert!(line.contains("scripts/setup.sh"), "{line}");
}

#[test]
fn criu_3_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let criu = testkit::standin_criu(dir.path(), "criu-3.17");
    let line = one_error_line(&["check", "--criu", criu.to_str().unwrap()]);
    assert!(
        line.contains("3.17.1") && line.contains("too old"),
        "{line}"
    );
    assert!(line.contains("4.0 or newer"), "{line}");
}

#[test]
fn criu_that_exits_at_once_reports_its_status_and_words() {
    let dir = tempfile::tempdir().unwrap();
    let criu = testkit::standin_criu(dir.path(), "exit-now");
    let line = one_error_line(&["check", "--criu", criu.to_str().unwrap()]);
    assert!(
        line.contains("exited with status 1 before answering"),
        "{line}"
    );
    assert!(line.contains("stand-in refuses to start"), "{line}");
}

#[test]
fn check_json_still_prints_a_report_when_criu_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let criu = testkit::standin_criu(dir.path(), "criu-3.17");
    let out = testkit::run(&["check", "--json", "--criu", criu.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["criu"]["version"], "3.17.1");
    assert_eq!(report["criu"]["supported"], false);
    assert_eq!(report["verdicts"]["checkpoint_restore"]["available"], false);
}
