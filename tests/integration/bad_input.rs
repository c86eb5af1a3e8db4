//! The bad-input suite: every command fed input a newcomer gets wrong.
//!
//! Each case gives its exit status (1 for a refusal, 2 for what the
//! argument parser rejects), the start of its first line on stderr (a
//! `crabmigrate: error:` naming the cause, escaped), and leaves everything as
//! it was: a running workload keeps its pid and goes on counting, a running
//! container stays running, and no file or directory appears, disappears or
//! changes in the sandbox or the state root (only the paths a case names as
//! CRIU's log may appear, for the one case that reaches CRIU). A test also
//! checks that every command of `crabmigrate --help` has a case here.
//!
//! Deeper cases follow the table: the library's classification of CRIU's
//! own failures, a truncated inventory, a broken container's state.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use criu_rpc::{DumpRequest, KnownFailure, RestoreRequest};

use crate::bad_input_cases::cases;
use testkit::{container_id, BusyboxBundle, KillOnDrop, Runtime, Tick, Workload};

const LIMIT: Duration = Duration::from_secs(30);

/// The pid of a child that has exited and been reaped, so no process has it.
pub(crate) fn vanished_pid() -> u32 {
    for _ in 0..10 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return pid;
        }
    }
    panic!("every reaped pid was reused at once");
}

/// Every file and directory under `dir` with its kind, size and
/// modification time: what "nothing changed" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (bool, u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (m.is_dir(), m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

/// One bad input.
pub(crate) struct Case {
    /// Arguments after `crabmigrate --root ROOT`.
    pub(crate) args: Vec<String>,
    /// The exit status.
    pub(crate) code: i32,
    /// The start of the first line on stderr.
    pub(crate) starts: &'static str,
    /// Words the first line must hold.
    pub(crate) holds: Vec<String>,
    /// Directories that may appear, with what is in them (the images
    /// directory with CRIU's log, for a case that reaches CRIU).
    pub(crate) may_create: Vec<PathBuf>,
    /// Run as the user nobody (privilege cases).
    pub(crate) as_nobody: bool,
}

pub(crate) fn refuse(args: &[&str], holds: &[&str]) -> Case {
    Case {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code: 1,
        starts: "crabmigrate: error: ",
        holds: holds.iter().map(|h| (*h).to_owned()).collect(),
        may_create: Vec::new(),
        as_nobody: false,
    }
}

pub(crate) fn usage(args: &[&str], holds: &[&str]) -> Case {
    Case {
        code: 2,
        starts: "error: ",
        ..refuse(args, holds)
    }
}

/// What the cases act on: a running workload and container, good and
/// damaged checkpoints, files of every kind.
pub(crate) struct Fixture {
    pub(crate) sandbox: tempfile::TempDir,
    /// Not compared: the workloads' state files change all the time.
    pub(crate) live: tempfile::TempDir,
    pub(crate) rt: Runtime,
    pub(crate) workload: Workload,
    pub(crate) bundle: BusyboxBundle,
    pub(crate) container: String,
    pub(crate) container_pid: u64,
    pub(crate) nobody_binary: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let sandbox = tempfile::Builder::new()
            .prefix("crabmigrate-bad-input-")
            .tempdir()
            .unwrap();
        let live = tempfile::tempdir().unwrap();
        let s = sandbox.path();
        let workload = Workload::start(1, &live.path().join("w.state"));

        // A good checkpoint, of a second workload that is gone since.
        let mut second = Workload::start(1, &live.path().join("w2.state"));
        let good = s.join("good");
        let out = testkit::run(&[
            "checkpoint",
            "--pid",
            &second.pid().to_string(),
            "--images-dir",
            good.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        second.reap();
        let copy = |name: &str| {
            let dir = s.join(name);
            std::fs::create_dir(&dir).unwrap();
            for e in std::fs::read_dir(&good).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            }
            dir
        };
        let empty_tree = copy("empty-pstree");
        let header = std::fs::read(good.join("pstree.img")).unwrap();
        std::fs::write(empty_tree.join("pstree.img"), &header[..8]).unwrap();
        let no_core = copy("no-core");
        for e in std::fs::read_dir(&no_core).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("core-")
            {
                std::fs::remove_file(p).unwrap();
            }
        }
        let cut = copy("cut-inventory");
        File::options()
            .write(true)
            .open(cut.join("inventory.img"))
            .unwrap()
            .set_len(5)
            .unwrap();
        std::fs::create_dir(s.join("empty")).unwrap();
        std::fs::write(s.join("file"), "a file").unwrap();
        std::fs::write(s.join("not-a-tar"), {
            // What random bytes look like to tar: a header with garbage.
            let mut b = vec![0xffu8; 1024];
            b[100..108].copy_from_slice(b"\x1b[31m\x00\x01\x02");
            b
        })
        .unwrap();
        std::fs::write(s.join("evil\x1b[2J.tar"), "hello").unwrap();
        std::fs::write(s.join("key"), "x").unwrap();
        std::fs::set_permissions(s.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();

        // A running container (its stdio is /dev/null: a pipe would tie it
        // to this test) and a broken one.
        let rt = Runtime::new();
        let bundle = BusyboxBundle::new(&["sh", "-c", "while true; do sleep 0.2; done"]);
        let container = container_id("bad-input");
        let status = rt
            .command(&[
                "run",
                "-d",
                "--bundle",
                bundle.path().to_str().unwrap(),
                &container,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "run -d {container}");
        let container_pid = rt.state(&container)["pid"].as_u64().unwrap();
        let broken = rt.root.path().join("broken");
        std::fs::create_dir(&broken).unwrap();
        std::fs::write(broken.join("state.json"), "{\"pid\": 4").unwrap();

        // crabmigrate where the user nobody may run it.
        std::fs::set_permissions(live.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody_binary = live.path().join("crabmigrate");
        std::fs::copy(testkit::program("crabmigrate"), &nobody_binary).unwrap();
        Self {
            sandbox,
            live,
            rt,
            workload,
            bundle,
            container,
            container_pid,
            nobody_binary,
        }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.sandbox
            .path()
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    fn run(&self, case: &Case) -> std::process::Output {
        let mut cmd = if case.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&self.nobody_binary);
            c
        } else {
            testkit::crabmigrate()
        };
        cmd.arg("--root")
            .arg(self.rt.root.path())
            .args(&case.args)
            .current_dir(self.sandbox.path())
            .stdin(Stdio::null())
            .output()
            .expect("crabmigrate runs")
    }

    /// The workload and the container run as before.
    fn untouched(&self) -> Result<(), String> {
        let pid = self.workload.pid();
        let now = self.workload.tick();
        let later = testkit::wait_until(LIMIT, || {
            Tick::read(&self.workload.state).filter(|t| t.counter > now.counter)
        })
        .ok_or_else(|| format!("workload {pid} stopped counting"))?;
        if later.pid != pid {
            return Err(format!("workload {pid} is now {}", later.pid));
        }
        let state = self.rt.state(&self.container);
        if state["status"] != "running" || state["pid"] != self.container_pid {
            return Err(format!("container {} changed: {state}", self.container));
        }
        Ok(())
    }
}

#[test]
fn every_bad_input_is_refused_with_its_cause_and_changes_nothing() {
    if testkit::real_criu("every_bad_input_is_refused_with_its_cause_and_changes_nothing").is_none()
    {
        return;
    }
    let f = Fixture::new();
    let cases = cases(&f);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let before = (snapshot(f.sandbox.path()), snapshot(f.rt.root.path()));
        let out = f.run(case);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let first = stderr.lines().next().unwrap_or_default();
        let mut wrong = Vec::new();
        if out.status.code() != Some(case.code) {
            wrong.push(format!(
                "exit status {:?}, want {}",
                out.status.code(),
                case.code
            ));
        }
        if !first.starts_with(case.starts) {
            wrong.push(format!("first line does not start with {:?}", case.starts));
        }
        for word in &case.holds {
            if !first.contains(word.as_str()) {
                wrong.push(format!("first line lacks {word:?}"));
            }
        }
        if stderr.contains("panicked") || stderr.chars().any(|c| c == '\x1b') {
            wrong.push("a panic or a raw escape on stderr".to_owned());
        }
        let after = (snapshot(f.sandbox.path()), snapshot(f.rt.root.path()));
        for (path, meta) in after.0.iter().chain(&after.1) {
            let was = before.0.get(path).or_else(|| before.1.get(path));
            if was != Some(meta) && !case.may_create.iter().any(|m| path.starts_with(m)) {
                wrong.push(format!("{} appeared or changed", path.display()));
            }
        }
        for path in before.0.keys().chain(before.1.keys()) {
            if !after.0.contains_key(path) && !after.1.contains_key(path) {
                wrong.push(format!("{} disappeared", path.display()));
            }
        }
        for path in &case.may_create {
            let _ = std::fs::remove_dir_all(path);
        }
        if let Err(e) = f.untouched() {
            wrong.push(e);
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "crabmigrate {}\n    {}\n    stderr: {stderr}",
                case.args.join(" "),
                wrong.join("\n    ")
            ));
        }
    }
    drop(f.live);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_command_has_a_bad_input_case() {
    let help = testkit::run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    let commands: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() > 10, "{text}");
    let source = include_str!("bad_input_cases.rs");
    // The table without whitespace, as rustfmt may break a case anywhere.
    let table: String = source[source.find("fn cases(").unwrap()..]
        .split_whitespace()
        .collect();
    for command in commands {
        assert!(
            table.contains(&format!("&[\"{command}\",")),
            "no bad-input case for `{command}`"
        );
    }
}

#[test]
fn library_dump_of_a_missing_process_is_classified() {
    let Some(criu) = testkit::real_criu("library_dump_of_a_missing_process_is_classified") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let images = File::open(tmp.path()).unwrap();
    let pid = vanished_pid();
    let err = criu
        .dump(&DumpRequest::new(pid, images.as_fd()), None)
        .expect_err("no such process");
    assert_eq!(err.pid, pid);
    assert_eq!(
        err.source.known_failure(),
        Some(KnownFailure::NoSuchProcess),
        "{:?}",
        err.source
    );
}

#[test]
fn a_truncated_inventory_is_refused_by_crabmigrate_and_classified_by_the_library() {
    let Some(criu) = testkit::real_criu(
        "a_truncated_inventory_is_refused_by_crabmigrate_and_classified_by_the_library",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&good).unwrap();
    std::fs::create_dir(&bad).unwrap();
    let mut workload = Workload::start(4, &state);
    let pid = workload.pid();
    workload.wait_tick(2, LIMIT);
    let images = File::open(&good).unwrap();
    criu.dump(&DumpRequest::new(pid, images.as_fd()), None)
        .expect("dump");
    workload.reap();
    let at_dump = Tick::read(&state).unwrap();
    for entry in std::fs::read_dir(&good).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bad.join(entry.file_name())).unwrap();
    }
    File::options()
        .write(true)
        .open(bad.join("inventory.img"))
        .unwrap()
        .set_len(5)
        .unwrap();

    // Whatever comes back under the pid must not outlive the test.
    let _guard = KillOnDrop(pid as i32);
    let out = testkit::run(&["restore", "--images-dir", bad.to_str().unwrap(), "--detach"]);
    let line = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(
        line.contains("inventory.img") && line.contains("damaged"),
        "{line}"
    );
    assert!(!bad.join("restore.log").exists(), "CRIU never ran: {line}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{line}");

    // CRIU itself, through the library, fails the same way, recognised.
    let bad_dir = File::open(&bad).unwrap();
    let err = criu
        .restore(&RestoreRequest::new(bad_dir.as_fd()), None)
        .expect_err("truncated inventory");
    assert_eq!(
        err.source.known_failure(),
        Some(KnownFailure::BadImages),
        "{:?}",
        err.source
    );

    // The failed attempts left nothing behind: the intact images restore.
    let restored = criu
        .restore(&RestoreRequest::new(images.as_fd()), None)
        .expect("restore of the intact images");
    assert_eq!(restored.pid, pid as i32);
    let after = testkit::wait_until(LIMIT, || {
        Tick::read(&state).filter(|t| t.counter > at_dump.counter)
    })
    .expect("the restored workload counts on");
    assert_eq!(after.pid, pid);
}

#[test]
fn a_running_container_with_a_damaged_state_is_listed_and_force_deleted_whole() {
    if testkit::real_criu(
        "a_running_container_with_a_damaged_state_is_listed_and_force_deleted_whole",
    )
    .is_none()
    {
        return;
    }
    let rt = Runtime::new();
    let id = container_id("damaged");
    let bundle = BusyboxBundle::new(&["sh", "-c", "while true; do sleep 0.2; done"]);
    let status = rt
        .command(&[
            "run",
            "-d",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let state_file = rt.root.path().join(&id).join("state.json");
    let whole = std::fs::read_to_string(&state_file).unwrap();
    let state: serde_json::Value = serde_json::from_str(&whole).unwrap();
    let pid = state["pid"].as_u64().unwrap() as u32;
    let cgroup_dirs: Vec<PathBuf> = state["cgroup"]["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert!(cgroup_dirs.iter().all(|d| d.is_dir()));
    // Cut off after the cgroup: the file no longer parses.
    let cut = whole.find("\"annotations\"").unwrap_or(whole.len() - 1);
    std::fs::write(&state_file, &whole[..cut]).unwrap();

    let list = rt.run(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not listed: {rows}"));
    assert_eq!(row["status"], "broken", "{row}");
    assert!(row["reason"].as_str().unwrap().contains("damaged"), "{row}");

    let out = rt.run(&["delete", "--force", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = testkit::wait_until(LIMIT, || {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
            .unwrap_or(false);
        (!alive).then_some(())
    });
    assert!(gone.is_some(), "the container's init {pid} still runs");
    assert!(!rt.root.path().join(&id).exists());
    for dir in cgroup_dirs {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
