//! docs/troubleshooting.md and the error model stay in step: every cause
//! the code knows has its section, in the order of `KnownFailure::ALL`,
//! with the cause and the fix word for word as crabmigrate prints them, and
//! no section names a cause the code does not know.

use criu_rpc::KnownFailure;

fn page() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/troubleshooting.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `### `code`` sections of the page, with their text.
fn sections(page: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in page.lines() {
        if let Some(code) = line
            .strip_prefix("### `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            out.push((code.to_owned(), String::new()));
        } else if line.starts_with("## ") || line.starts_with("### ") {
            out.push((String::new(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out.retain(|(code, _)| !code.is_empty());
    out
}

#[test]
fn every_cause_has_its_section_with_the_printed_cause_and_fix() {
    let page = page();
    let sections = sections(&page);
    let codes: Vec<&str> = sections.iter().map(|(c, _)| c.as_str()).collect();
    let known: Vec<&str> = KnownFailure::ALL.iter().map(|k| k.code()).collect();
    assert_eq!(
        codes, known,
        "docs/troubleshooting.md's sections and KnownFailure::ALL differ"
    );
    for (known, (_, text)) in KnownFailure::ALL.iter().zip(&sections) {
        let cause = format!("- Cause: {}\n", known.cause());
        let fix = format!("- Fix: {}\n", known.remedy());
        assert!(
            text.contains(&cause),
            "{}: the page does not say {cause:?}",
            known.code()
        );
        assert!(
            text.contains(&fix),
            "{}: the page does not say {fix:?}",
            known.code()
        );
        assert!(
            text.contains("- CRIU says: "),
            "{}: the page does not quote CRIU",
            known.code()
        );
    }
}
