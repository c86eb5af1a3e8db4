//! Random argument vectors fed to the `crabmigrate` binary: none may make it
//! panic, die of a signal, or print a raw control character.
//!
//! The vectors mix every command and flag with values a fuzzer likes
//! (empty, huge, negative, non-UTF-8-looking, escape sequences, paths that
//! exist and do not). They run fenced in, so no vector can touch the host:
//! the state root is a fresh temporary directory, CRIU is a stand-in that
//! exits at once (`$CRABMIGRATE_CRIU`, and `--criu` is never generated), the
//! working directory is deep inside the sandbox (relative paths, `..` and
//! `../..` included, land there), every absolute path is in the sandbox,
//! random words hold no `/` or `.`, and every run is killed after a bound
//! (an `agent` may listen). A random number can name a real process: CRIU
//! being the stand-in, nothing is dumped, and nothing else acts on a pid.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const COMMANDS: &[&str] = &[
    "check",
    "checkpoint",
    "pre-dump",
    "restore",
    "create",
    "start",
    "run",
    "state",
    "list",
    "ls",
    "ps",
    "kill",
    "delete",
    "pause",
    "resume",
    "keygen",
    "agent",
    "migrate",
    "page-server",
    "lazy-pages",
    "inspect",
    "export",
    "import",
    "network",
    "exec",
    "update",
    "events",
    "features",
    "spec",
    "help",
    "nonsense",
];

const FLAGS: &[&str] = &[
    "--pid",
    "--images-dir",
    "--work-dir",
    "--parent-dir",
    "--page-server",
    "--external",
    "--inherit-fd",
    "--bundle",
    "-b",
    "--pid-file",
    "--console-socket",
    "--port",
    "--address",
    "--listen",
    "--to",
    "--key-file",
    "--out",
    "-o",
    "--output",
    "--strategy",
    "--max-rounds",
    "--downtime-budget",
    "--health-tcp",
    "--status-fd",
    "--criu-log-level",
    "--log-level",
    "--network-lock",
    "--manage-cgroups-mode",
    "--compress",
    "--network",
    "--cni-config-dir",
    "--cni-plugin-dir",
    "--import",
    "--root",
    "--json",
    "--detach",
    "-d",
    "--force",
    "--all",
    "--leave-running",
    "--lazy-pages",
    "--tcp-established",
    "--shell-job",
    "--pre-dump",
    "--ps-tree",
    "--files",
    "--help",
    "--version",
    "-",
    "--",
];

/// Values that are not a real process, or are refused before use.
fn values(sandbox: &Path) -> Vec<String> {
    let s = |p: &str| sandbox.join(p).to_string_lossy().into_owned();
    vec![
        String::new(),
        "0".into(),
        "1".into(),
        "-1".into(),
        "4294967296".into(),
        "99999999999999999999".into(),
        "4194304".into(),
        "65535".into(),
        "NaN".into(),
        "SIGKILL".into(),
        "TERM".into(),
        "x".repeat(5000),
        "\u{1b}[2J\u{1b}[31m".into(),
        "..".into(),
        "../..".into(),
        "127.0.0.1:1".into(),
        "[::1]:0".into(),
        ":".into(),
        "host:".into(),
        "mnt[/x]:k".into(),
        "mnt[".into(),
        "fd[0]:x".into(),
        "fd[-3]:".into(),
        "tty[8800:1a]".into(),
        "stop-copy".into(),
        "iptables".into(),
        "zstd".into(),
        "a b\tc\nd".into(),
        "ünïcödé\u{202e}".into(),
        s("missing"),
        s("file"),
        s("dir"),
        s("dir/../dir"),
        "relative/path".into(),
    ]
}

fn argv(sandbox: &Path) -> impl Strategy<Value = Vec<String>> {
    let word = prop_oneof![
        3 => proptest::sample::select(FLAGS).prop_map(str::to_owned),
        3 => proptest::sample::select(values(sandbox)),
        // Printable, but without '/' and '.': a random word is at most a
        // file name in the sandbox, never a path out of it.
        1 => "[a-zA-Z0-9_=:,@ \\[\\]-]{0,12}",
    ];
    (
        proptest::sample::select(COMMANDS),
        proptest::collection::vec(word, 0..8),
    )
        .prop_map(|(command, rest)| {
            let mut v = vec![command.to_owned()];
            v.extend(rest);
            v
        })
}

/// Runs `crabmigrate ARGV` fenced in (see the module docs); returns the
/// exit code (or the signal) and stderr.
fn run_fenced(sandbox: &Path, root: &Path, criu: &Path, args: &[String]) -> (String, String) {
    // --root comes first so that a generated --root is refused as given
    // twice instead of pointing anywhere real.
    let mut child = testkit::crabmigrate()
        .arg("--root")
        .arg(root)
        .args(args)
        .env("CRABMIGRATE_CRIU", criu)
        .env_remove("RUST_LOG")
        .current_dir(sandbox)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crabmigrate runs");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(stderr, 1 << 20), &mut text);
        text
    });
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > until {
            // A listener (agent, page-server) waits for peers: stop it.
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(9)) => "killed after the bound".to_owned(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "ended".to_owned(),
    };
    (how, text)
}

#[test]
fn random_argument_vectors_never_panic() {
    let top = tempfile::tempdir().unwrap();
    let sandbox = top.path().join("a/b/c");
    std::fs::create_dir_all(&sandbox).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(sandbox.join("file"), "x").unwrap();
    std::fs::create_dir(sandbox.join("dir")).unwrap();
    let criu = testkit::standin_criu(top.path(), "exit-now");
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&argv(&sandbox), |args| {
        let (how, stderr) = run_fenced(&sandbox, root.path(), &criu, &args);
        prop_assert!(!stderr.contains("panicked"), "{args:?}: {how}: {stderr}");
        prop_assert!(
            how.starts_with("exit ") || how.starts_with("killed"),
            "{args:?}: {how}: {stderr}"
        );
        prop_assert!(how != "exit 101", "{args:?}: {stderr}");
        prop_assert!(
            !stderr.contains('\u{1b}'),
            "{args:?}: a raw escape on stderr: {stderr:?}"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Nothing escaped the sandbox's state root.
    for entry in std::fs::read_dir(root.path()).unwrap() {
        let entry = entry.unwrap();
        let _ = Command::new(testkit::program("crabmigrate"))
            .arg("--root")
            .arg(root.path())
            .args(["delete", "--force"])
            .arg(entry.file_name())
            .output();
    }
}
