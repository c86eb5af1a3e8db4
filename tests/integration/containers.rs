//! The container lifecycle through the `crabmigrate` CLI, on busybox bundles
//! (root needed; under CI=true nothing skips).
//!
//! - `lifecycle`: create (the init waits: the counter file is absent), start
//!   (the counter advances), list, list --json, ps, kill TERM (stopped),
//!   delete (state and cgroup directories gone); `delete` of a running
//!   container is refused without --force.
//! - `run_in_foreground`: `run` without --detach returns the process's exit
//!   status and leaves no container; `run_forwards_signals`: SIGTERM to a
//!   foreground `run` reaches the container's process (as with runc).
//! - `pause_and_resume`: a paused counter stands still, resumed it advances;
//!   a paused container can be force-deleted.
//! - `hooks`: prestart, createRuntime, poststart and poststop run when they
//!   should, with the container's state (id, pid, status) on stdin; a
//!   failing createRuntime hook undoes `create`; a failing poststart hook
//!   is only a warning (OCI runtime spec).
//! - `spec_features`: hostname, bind mount, env, cwd, rlimits, read-only
//!   root, masked and read-only paths; `non_root_user`: process.user with
//!   additional groups and no_new_privs; `join_namespaces`: network and UTS
//!   namespaces joined by path; `resources`: memory and pids limits in a
//!   custom cgroupsPath; `terminal`: process.terminal with
//!   --console-socket, a shell talked to through the received pty master.
//! - `bad_input_*`: bad bundles, IDs and commands give one
//!   `crabmigrate: error:` line, exit status 1, and leave nothing behind (no
//!   state directory, no cgroup, no process); IDs that would reach outside
//!   the state root are refused by every command.
//!
//! `create` and `run -d` leave the container's init holding crabmigrate's
//! stdout and stderr (no terminal: stdio passes through, as with runc), so
//! every call here writes them to anonymous files, never to pipes the test
//! would wait on until the container exits.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{wait_until, BusyboxBundle, Runtime};

/// How long anything may take before the test gives up (not a timing
/// assertion: only a bound on waiting).
const PATIENCE: Duration = Duration::from_secs(20);

/// A shell loop that counts into /tmp/counter (written whole: a new file
/// renamed over the old one) and exits on SIGTERM (a pid-1 shell ignores
/// signals it has no handler for).
const COUNTER: &str = "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); \
                       echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; \
                       sleep 0.05; done";

/// Applets the tests use beyond those `BusyboxBundle` links.
const APPLETS: &[&str] = &["mv", "hostname", "pwd", "wc", "touch", "id"];

/// A busybox bundle running `args`, with the extra applets.
pub(crate) fn bundle(args: &[&str]) -> BusyboxBundle {
    let bundle = BusyboxBundle::new(args);
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bundle.rootfs().join("bin").join(applet)).unwrap();
    }
    bundle
}

/// A bundle running `args` with `edit` applied to its config.
pub(crate) fn bundle_with(args: &[&str], edit: impl FnOnce(&mut Value)) -> BusyboxBundle {
    let bundle = bundle(args);
    let mut config = BusyboxBundle::default_config(args);
    edit(&mut config);
    bundle.write_config(&config);
    bundle
}

/// `crabmigrate --root ROOT ARGS...` with stdout and stderr in anonymous
/// files (see the module comment), waited for and read back.
pub(crate) fn cli(rt: &Runtime, args: &[&str]) -> Output {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    let status = rt
        .command(args)
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .status()
        .expect("crabmigrate runs");
    let read = |f: &mut fs::File| {
        let mut bytes = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut bytes).unwrap();
        bytes
    };
    Output {
        status,
        stdout: read(&mut stdout),
        stderr: read(&mut stderr),
    }
}

/// Runs a command that must succeed; returns its stdout.
pub(crate) fn ok(rt: &Runtime, args: &[&str]) -> String {
    let out = cli(rt, args);
    assert!(
        out.status.success(),
        "{args:?}: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail cleanly: exit status 1, one line on stderr
/// starting `crabmigrate: error:` and holding every piece of `wants`.
/// Returns that line.
pub(crate) fn fails(rt: &Runtime, args: &[&str], wants: &[&str]) -> String {
    let out = cli(rt, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("crabmigrate: error: "),
        "{args:?}: {stderr}"
    );
    for want in wants {
        assert!(
            lines[0].contains(want),
            "{args:?}: no {want:?} in: {stderr}"
        );
    }
    lines[0].to_owned()
}

/// The status of `id` as `state` reports it.
fn status(rt: &Runtime, id: &str) -> String {
    rt.state(id)["status"].as_str().unwrap().to_owned()
}

/// The counter the container wrote last, if any.
fn counter(bundle: &BusyboxBundle) -> Option<u64> {
    fs::read_to_string(bundle.rootfs().join("tmp/counter"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Waits until the counter is above `above` and returns it.
fn counter_above(bundle: &BusyboxBundle, above: u64) -> u64 {
    wait_until(PATIENCE, || counter(bundle).filter(|&c| c > above))
        .unwrap_or_else(|| panic!("the counter did not pass {above}; at {:?}", counter(bundle)))
}

/// The directories of cgroup `path` ("crabmigrate/ID") that exist on the
/// host's hierarchies.
pub(crate) fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join(path))
        .filter(|p| p.is_dir())
        .collect()
}

/// Live processes whose cgroup (on any hierarchy) is `path` or below it.
fn processes_in(path: &str) -> Vec<u32> {
    let leaf = format!(":/{path}\n");
    let below = format!(":/{path}/");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&leaf) || c.contains(&below))
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Whether `pid` runs (exists and is not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Nothing of container `id` remains: no state directory, no cgroup
/// directory and no process in its cgroup `cgroup` ("crabmigrate/ID").
pub(crate) fn assert_gone(rt: &Runtime, id: &str, cgroup: &str) {
    assert!(
        !rt.root.path().join(id).exists(),
        "the state directory of {id} is left"
    );
    assert_eq!(
        cgroup_dirs(cgroup),
        Vec::<PathBuf>::new(),
        "cgroups of {id}"
    );
    assert_eq!(processes_in(cgroup), Vec::<u32>::new(), "processes of {id}");
}

/// The state root holds nothing at all.
fn assert_root_empty(rt: &Runtime) {
    let entries: Vec<_> = fs::read_dir(rt.root.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "left in the state root: {entries:?}");
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn lifecycle() {
    if testkit::real_criu("lifecycle").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle(&["sh", "-c", COUNTER]);
    let bundle_dir = path_str(b.path());
    let id = testkit::container_id("lifecycle");
    let cgroup = format!("crabmigrate/{id}");

    let pid_file = b.path().join("init.pid");
    ok(
        &rt,
        &[
            "create",
            "--bundle",
            bundle_dir,
            "--pid-file",
            path_str(&pid_file),
            &id,
        ],
    );
    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    let pid = state["pid"].as_u64().unwrap() as u32;
    assert!(pid > 0 && alive(pid), "{state}");
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    let dirs = cgroup_dirs(&cgroup);
    assert!(
        dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/freezer"))
            || dirs.iter().any(|d| d.starts_with("/sys/fs/cgroup/unified")),
        "no freezer cgroup for {id}: {dirs:?}"
    );
    assert_eq!(processes_in(&cgroup), vec![pid]);
    // The init waits for start: give a wrong runtime a moment to run the
    // program anyway.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        counter(&b),
        None,
        "the program ran before start ({})",
        status(&rt, &id)
    );

    ok(&rt, &["start", &id]);
    let first = counter_above(&b, 0);
    counter_above(&b, first);
    assert_eq!(status(&rt, &id), "running");

    let table = ok(&rt, &["list"]);
    assert!(
        table.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.first() == Some(&id.as_str())
                && cols.get(1) == Some(&pid.to_string().as_str())
                && cols.get(2) == Some(&"running")
        }),
        "{table}"
    );
    let list: Value = serde_json::from_str(&ok(&rt, &["list", "--json"])).unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["id"], id.as_str());
    assert_eq!(entries[0]["status"], "running");
    assert_eq!(entries[0]["pid"], pid);
    assert_eq!(
        entries[0]["bundle"],
        path_str(&fs::canonicalize(b.path()).unwrap())
    );

    let ps = ok(&rt, &["ps", &id]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string()) && l.contains("sh")),
        "{ps}"
    );
    let ps: Value = serde_json::from_str(&ok(&rt, &["ps", "--json", &id])).unwrap();
    assert!(
        ps.as_array().unwrap().iter().any(|p| p["pid"] == pid),
        "{ps}"
    );

    ok(&rt, &["kill", &id, "TERM"]);
    wait_until(PATIENCE, || (status(&rt, &id) == "stopped").then_some(()))
        .expect("the container stops after SIGTERM");
    assert_eq!(rt.state(&id)["pid"], 0);
    fails(&rt, &["start", &id], &["is stopped"]);

    ok(&rt, &["delete", &id]);
    assert_gone(&rt, &id, &cgroup);
    fails(&rt, &["state", &id], &["does not exist"]);
    assert_eq!(ok(&rt, &["list", "--json"]).trim(), "[]");

    // A running container is deleted only with --force.
    let id = testkit::container_id("lifecycle");
    let cgroup = format!("crabmigrate/{id}");
    ok(&rt, &["run", "--detach", "--bundle", bundle_dir, &id]);
    let pid = rt.state(&id)["pid"].as_u64().unwrap() as u32;
    let line = fails(&rt, &["delete", &id], &["is running", "--force"]);
    assert!(line.contains(&id), "{line}");
    assert_eq!(status(&rt, &id), "running");
    assert!(alive(pid));
    ok(&rt, &["delete", "--force", &id]);
    assert!(!alive(pid), "the init {pid} survived delete --force");
    assert_gone(&rt, &id, &cgroup);

    // A created container is deleted without --force; its waiting init is
    // killed.
    let id = testkit::container_id("lifecycle");
    let cgroup = format!("crabmigrate/{id}");
    ok(&rt, &["create", "--bundle", bundle_dir, &id]);
    let pid = rt.state(&id)["pid"].as_u64().unwrap() as u32;
    ok(&rt, &["delete", &id]);
    assert!(!alive(pid), "the init {pid} survived delete");
    assert_gone(&rt, &id, &cgroup);
    assert_root_empty(&rt);
}

#[test]
fn run_in_foreground() {
    if testkit::real_criu("run_in_foreground").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let id = testkit::container_id("run_in_foreground");
    // The container exits, so plain pipes are fine here.
    let out = rt
        .command(&["run", "--bundle", path_str(b.path()), &id])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}; stdout {:?}; stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(ok(&rt, &["list", "--json"]).trim(), "[]");
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_root_empty(&rt);
}

/// Whether process `pid` waits in sigwait (which unblocks the signals it
/// waits for while it waits), or blocks SIGTERM.
fn waits_for_signals(pid: u32) -> bool {
    let in_sigwait =
        fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("sigtimedwait"));
    let blocks_term = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (nix::sys::signal::Signal::SIGTERM as i32 - 1)) != 0);
    in_sigwait || blocks_term
}

/// A child process killed and reaped on drop unless taken out first (never
/// a bare pid, which could be reused once reaped).
struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn run_forwards_signals() {
    if testkit::real_criu("run_forwards_signals").is_none() {
        return;
    }
    let rt = Runtime::new();
    let script = "trap 'exit 4' TERM; touch /tmp/ready; while :; do sleep 0.05; done";
    let b = bundle(&["sh", "-c", script]);
    let id = testkit::container_id("run_forwards_signals");
    let log = tempfile::tempfile().unwrap();
    let child = rt
        .command(&["run", "--bundle", path_str(b.path()), &id])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    // Killed and reaped if the test fails before it ends by itself.
    let mut child = ChildGuard(Some(child));
    // Once the shell has its trap and crabmigrate waits with the signals
    // blocked for forwarding, SIGTERM to crabmigrate reaches the shell.
    wait_until(PATIENCE, || {
        (b.rootfs().join("tmp/ready").exists() && waits_for_signals(pid)).then_some(())
    })
    .expect("the container runs and crabmigrate waits for it");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(4), "{status}");
    assert_eq!(ok(&rt, &["list", "--json"]).trim(), "[]");
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}

#[test]
fn pause_and_resume() {
    if testkit::real_criu("pause_and_resume").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle(&["sh", "-c", COUNTER]);
    let id = testkit::container_id("pause_and_resume");
    ok(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let running = counter_above(&b, 1);

    ok(&rt, &["pause", &id]);
    assert_eq!(status(&rt, &id), "paused");
    let frozen = counter(&b).unwrap();
    assert!(frozen >= running);
    // Many ticks' worth of time: a running counter would move.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter(&b), Some(frozen), "the counter moved while paused");
    fails(&rt, &["pause", &id], &["is paused"]);
    fails(&rt, &["start", &id], &["is paused"]);

    ok(&rt, &["resume", &id]);
    assert_eq!(status(&rt, &id), "running");
    counter_above(&b, frozen);
    fails(&rt, &["resume", &id], &["is running"]);

    // A paused container is force-deleted (thawed, then killed).
    ok(&rt, &["pause", &id]);
    fails(&rt, &["delete", &id], &["is paused", "--force"]);
    ok(&rt, &["delete", "--force", &id]);
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}

/// A hook script that appends "STAGE <state JSON>" to `log`.
fn hook_script(dir: &Path, log: &Path) -> PathBuf {
    let script = dir.join("hook.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nstate=$(cat)\necho \"$1 $state\" >> '{}'\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The hook log: (stage, state) pairs in order.
fn hook_log(log: &Path) -> Vec<(String, Value)> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (stage, json) = l.split_once(' ').unwrap();
            (stage.to_owned(), serde_json::from_str(json).unwrap())
        })
        .collect()
}

#[test]
fn hooks() {
    if testkit::real_criu("hooks").is_none() {
        return;
    }
    let rt = Runtime::new();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("hooks.log");
    let script = hook_script(tmp.path(), &log);
    let script = path_str(&script).to_owned();
    let b = bundle_with(&["sh", "-c", COUNTER], |c| {
        let hook = |stage: &str| serde_json::json!([{"path": script, "args": ["hook.sh", stage]}]);
        c["hooks"] = serde_json::json!({
            "prestart": hook("prestart"),
            "createRuntime": hook("createRuntime"),
            "poststart": hook("poststart"),
            "poststop": hook("poststop"),
        });
        c["annotations"] = serde_json::json!({"org.example.test": "hooks"});
    });
    let id = testkit::container_id("hooks");

    ok(&rt, &["create", "--bundle", path_str(b.path()), &id]);
    let pid = rt.state(&id)["pid"].as_u64().unwrap();
    let entries = hook_log(&log);
    let stages: Vec<&str> = entries.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["prestart", "createRuntime"]);
    let bundle_dir = fs::canonicalize(b.path()).unwrap();
    for (stage, state) in &entries {
        assert_eq!(state["id"], id.as_str(), "{stage}: {state}");
        assert_eq!(state["pid"], pid, "{stage}: {state}");
        assert_eq!(state["status"], "creating", "{stage}: {state}");
        assert_eq!(state["bundle"], path_str(&bundle_dir), "{stage}: {state}");
        assert_eq!(state["ociVersion"], "1.0.2", "{stage}: {state}");
        assert_eq!(state["annotations"]["org.example.test"], "hooks");
    }

    ok(&rt, &["start", &id]);
    let entries = hook_log(&log);
    let stages: Vec<&str> = entries.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["prestart", "createRuntime", "poststart"]);
    let (_, poststart) = &entries[2];
    assert_eq!(poststart["pid"], pid, "{poststart}");
    assert_eq!(poststart["status"], "running", "{poststart}");
    counter_above(&b, 0);

    ok(&rt, &["delete", "--force", &id]);
    let entries = hook_log(&log);
    let stages: Vec<&str> = entries.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        stages,
        ["prestart", "createRuntime", "poststart", "poststop"]
    );
    let (_, poststop) = &entries[3];
    assert_eq!(poststop["id"], id.as_str(), "{poststop}");
    assert_eq!(poststop["status"], "stopped", "{poststop}");
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}

#[test]
fn hook_failure_undoes_create() {
    if testkit::real_criu("hook_failure_undoes_create").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle_with(&["sh", "-c", COUNTER], |c| {
        c["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]});
    });
    let id = testkit::container_id("hook_failure");
    fails(
        &rt,
        &["create", "--bundle", path_str(b.path()), &id],
        &["createRuntime hook /bin/false failed"],
    );
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_root_empty(&rt);
}

#[test]
fn poststart_failure_is_a_warning() {
    if testkit::real_criu("poststart_failure_is_a_warning").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle_with(&["sh", "-c", COUNTER], |c| {
        c["hooks"] = serde_json::json!({"poststart": [{"path": "/bin/false"}]});
    });
    let id = testkit::container_id("poststart_failure");
    // The OCI runtime spec: a failed poststart hook is logged and the
    // lifecycle continues.
    let out = cli(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.contains("poststart hook"), "{stderr}");
    assert_eq!(status(&rt, &id), "running");
    counter_above(&b, 0);
    ok(&rt, &["delete", "--force", &id]);
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}

#[test]
fn spec_features() {
    if testkit::real_criu("spec_features").is_none() {
        return;
    }
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    let data = path_str(host.path()).to_owned();
    let script = "\
        hostname > hostname; \
        echo \"$GREETING\" > env; \
        pwd > cwd; \
        ulimit -n > nofile; \
        if [ -e /proc/kcore ]; then wc -c < /proc/kcore > kcore; else echo absent > kcore; fi; \
        wc -c < /proc/timer_list > timer_list; \
        wc -c < /proc/uptime > uptime; \
        ls -A /sys/firmware | wc -l > firmware; \
        if (echo x > /proc/sys/kernel/hostname) 2>/dev/null; then echo rw; else echo ro; fi > proc_sys; \
        if touch /rootwrite 2>/dev/null; then echo rw; else echo ro; fi > root; \
        if touch /tmp/x 2>/dev/null; then echo rw; else echo ro; fi > tmp; \
        echo done > done";
    let b = bundle_with(&["sh", "-c", script], |c| {
        c["hostname"] = "spec-features".into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("GREETING=hello world".into());
        c["process"]["cwd"] = "/data".into();
        c["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1000, "soft": 321}]);
        c["root"]["readonly"] = true.into();
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!(
            {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]}
        ));
        mounts.push(serde_json::json!(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ));
    });
    let id = testkit::container_id("spec_features");
    let out = cli(&rt, &["run", "--bundle", path_str(b.path()), &id]);
    assert!(
        out.status.success(),
        "{}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| {
        fs::read_to_string(host.path().join(name))
            .unwrap_or_else(|e| panic!("the container wrote no {name}: {e}"))
            .trim()
            .to_owned()
    };
    assert_eq!(read("done"), "done");
    assert_eq!(read("hostname"), "spec-features");
    assert_eq!(read("env"), "hello world");
    assert_eq!(read("cwd"), "/data");
    assert_eq!(read("nofile"), "321");
    let kcore = if Path::new("/proc/kcore").exists() {
        "0"
    } else {
        "absent"
    };
    assert_eq!(read("kcore"), kcore, "masked /proc/kcore");
    assert_eq!(read("timer_list"), "0", "masked /proc/timer_list");
    assert_ne!(read("uptime"), "0", "unmasked /proc/uptime");
    assert_eq!(read("firmware"), "0", "masked /sys/firmware");
    assert_eq!(read("proc_sys"), "ro", "read-only /proc/sys");
    assert_eq!(read("root"), "ro", "read-only root");
    assert_eq!(read("tmp"), "rw", "tmpfs on a read-only root");
    assert!(!b.rootfs().join("rootwrite").exists());
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_root_empty(&rt);
}

#[test]
fn non_root_user() {
    if testkit::real_criu("non_root_user").is_none() {
        return;
    }
    let rt = Runtime::new();
    let host = tempfile::tempdir().unwrap();
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let data = path_str(host.path()).to_owned();
    let script = "id > /data/id; grep NoNewPrivs /proc/self/status > /data/nnp";
    let b = bundle_with(&["sh", "-c", script], |c| {
        c["process"]["user"] =
            serde_json::json!({"uid": 1000, "gid": 1001, "additionalGids": [10]});
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]}
        ));
    });
    let id = testkit::container_id("non_root_user");
    let out = cli(&rt, &["run", "--bundle", path_str(b.path()), &id]);
    assert!(
        out.status.success(),
        "{}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| fs::read_to_string(host.path().join(name)).unwrap();
    assert_eq!(read("id").trim(), "uid=1000 gid=1001 groups=10");
    assert_eq!(
        read("nnp").split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}

#[test]
fn join_namespaces() {
    if testkit::real_criu("join_namespaces").is_none() {
        return;
    }
    let rt = Runtime::new();
    let first = bundle(&["sh", "-c", COUNTER]);
    let first_id = testkit::container_id("join_namespaces");
    ok(
        &rt,
        &["run", "-d", "--bundle", path_str(first.path()), &first_id],
    );
    let pid = rt.state(&first_id)["pid"].as_u64().unwrap();
    let ns = |kind: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();

    let host = tempfile::tempdir().unwrap();
    let data = path_str(host.path()).to_owned();
    let script = "readlink /proc/self/ns/net > /data/net; readlink /proc/self/ns/uts > /data/uts; \
                  hostname > /data/hostname";
    let b = bundle_with(&["sh", "-c", script], |c| {
        c["linux"]["namespaces"] = serde_json::json!([
            {"type": "pid"},
            {"type": "mount"},
            {"type": "network", "path": format!("/proc/{pid}/ns/net")},
            {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
        ]);
        c.as_object_mut().unwrap().remove("hostname");
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]}
        ));
    });
    std::os::unix::fs::symlink("busybox", b.rootfs().join("bin/readlink")).unwrap();
    let id = testkit::container_id("join_namespaces");
    let out = cli(&rt, &["run", "--bundle", path_str(b.path()), &id]);
    assert!(
        out.status.success(),
        "{}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| fs::read_to_string(host.path().join(name)).unwrap();
    assert_eq!(read("net").trim(), path_str(&ns("net")));
    assert_eq!(read("uts").trim(), path_str(&ns("uts")));
    assert_eq!(read("hostname").trim(), "crabmigrate-test");
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_eq!(status(&rt, &first_id), "running");
    ok(&rt, &["delete", "--force", &first_id]);
    assert_gone(&rt, &first_id, &format!("crabmigrate/{first_id}"));
}

#[test]
fn resources() {
    if testkit::real_criu("resources").is_none() {
        return;
    }
    let rt = Runtime::new();
    let id = testkit::container_id("resources");
    let cgroup = format!("crabmigrate/custom-{id}");
    let cgroups_path = format!("/{cgroup}");
    let limit: u64 = 64 << 20;
    let b = bundle_with(&["sh", "-c", COUNTER], |c| {
        c["linux"]["cgroupsPath"] = cgroups_path.as_str().into();
        c["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": limit},
            "pids": {"limit": 100}
        });
    });
    ok(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let pid = rt.state(&id)["pid"].as_u64().unwrap() as u32;
    let read = |file: &str| {
        fs::read_to_string(Path::new("/sys/fs/cgroup").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .trim()
            .to_owned()
    };
    let v1 = Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let (memory, pids) = if v1 {
        (
            read(&format!("memory/{cgroup}/memory.limit_in_bytes")),
            read(&format!("pids/{cgroup}/pids.max")),
        )
    } else {
        (
            read(&format!("{cgroup}/memory.max")),
            read(&format!("{cgroup}/pids.max")),
        )
    };
    assert_eq!(memory, limit.to_string());
    assert_eq!(pids, "100");
    assert!(processes_in(&cgroup).contains(&pid));
    assert!(cgroup_dirs(&format!("crabmigrate/{id}")).is_empty());
    ok(&rt, &["delete", "--force", &id]);
    assert_gone(&rt, &id, &cgroup);
}

/// Receives the pty master `create` sends to the console socket.
fn receive_master(listener: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    listener.set_nonblocking(true).unwrap();
    let (stream, _) = wait_until(PATIENCE, || listener.accept().ok())
        .expect("create connects to the console socket");
    stream.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg on the console socket");
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(received) = c {
            fds.extend(received);
        }
    }
    let fds: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: SCM_RIGHTS just installed these descriptors for us; each
        // is owned once, here.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    assert_eq!(fds.len(), 1, "one descriptor on the console socket");
    fds.into_iter().next().unwrap()
}

/// Writes `line` to the terminal and reads until `answer` appears.
fn converse(master: &OwnedFd, line: &str, answer: &str) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut file = fs::File::from(master.try_clone().unwrap());
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut seen = Vec::new();
    let until = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&seen).contains(answer) {
        assert!(
            Instant::now() < until,
            "no {answer:?} from the terminal; read {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(200u16)).unwrap() == 0 {
            continue;
        }
        let mut buf = [0u8; 256];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => panic!(
                "the terminal hung up; read {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => panic!("read from the terminal: {e}"),
        }
    }
}

#[test]
fn terminal() {
    if testkit::real_criu("terminal").is_none() {
        return;
    }
    let rt = Runtime::new();
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let b = bundle_with(&["sh"], |c| c["process"]["terminal"] = true.into());
    let id = testkit::container_id("terminal");
    ok(
        &rt,
        &[
            "create",
            "--bundle",
            path_str(b.path()),
            "--console-socket",
            path_str(&socket),
            &id,
        ],
    );
    let master = receive_master(&listener);
    ok(&rt, &["start", &id]);
    // The terminal echoes the command first; the answer is on a line of its
    // own.
    converse(&master, "echo hi", "\nhi\r\n");
    converse(&master, "tty", "/dev/pts/0");
    assert_eq!(status(&rt, &id), "running");
    ok(&rt, &["delete", "--force", &id]);
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}

/// `create` of the bundle `b` as a fresh ID fails with `wants` and leaves
/// nothing behind.
fn create_fails(b: &Path, wants: &[&str]) -> String {
    let rt = Runtime::new();
    let id = testkit::container_id("bad");
    let line = fails(&rt, &["create", "--bundle", path_str(b), &id], wants);
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_root_empty(&rt);
    line
}

#[test]
fn bad_input_bundles() {
    if testkit::real_criu("bad_input_bundles").is_none() {
        return;
    }
    // No config.json.
    let b = bundle(&["true"]);
    fs::remove_file(b.path().join("config.json")).unwrap();
    create_fails(b.path(), &["no config.json"]);

    // Not JSON.
    fs::write(
        b.path().join("config.json"),
        "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": }\n",
    )
    .unwrap();
    create_fails(b.path(), &["not valid JSON", "line 3 column"]);

    // A bundle that does not exist.
    let missing = b.path().join("missing");
    create_fails(&missing, &["does not exist"]);

    // A rootfs that does not exist.
    let b = bundle_with(&["true"], |c| c["root"]["path"] = "no-such-rootfs".into());
    create_fails(b.path(), &["no-such-rootfs", "does not exist"]);

    // An unknown namespace type.
    let b = bundle_with(&["true"], |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "foo"}));
    });
    create_fails(b.path(), &["\"foo\"", "namespace"]);

    // Unsupported fields, all listed.
    let b = bundle_with(&["true"], |c| {
        c["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0".into();
        c["domainname"] = "example.org".into();
    });
    create_fails(b.path(), &["linux.mountLabel", "domainname", "not support"]);

    // process.terminal without a console socket.
    let b = bundle_with(&["sh"], |c| c["process"]["terminal"] = true.into());
    create_fails(b.path(), &["--console-socket"]);
    // ... or with one nobody listens on.
    let rt = Runtime::new();
    let id = testkit::container_id("bad");
    let socket = b.path().join("no-such.sock");
    fails(
        &rt,
        &[
            "create",
            "--bundle",
            path_str(b.path()),
            "--console-socket",
            path_str(&socket),
            &id,
        ],
        &["console socket", "no-such.sock"],
    );
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_root_empty(&rt);

    // A program the container does not have: create fails, as with runc.
    let b = bundle(&["no-such-program"]);
    create_fails(b.path(), &["no-such-program", "cannot execute"]);
    let b = bundle(&["/bin/no-such-program"]);
    create_fails(b.path(), &["/bin/no-such-program", "cannot execute"]);
    let b = bundle(&["/tmp"]);
    create_fails(b.path(), &["\"/tmp\"", "cannot execute"]);

    // A bind mount of a missing host path: the init fails after it was
    // forked and put in its cgroup.
    let b = bundle_with(&["true"], |c| {
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "bind", "source": "/no-such-host-dir", "options": ["rbind"]}
        ));
    });
    create_fails(b.path(), &["/data", "container init failed"]);
}

#[test]
fn bad_input_ids() {
    if testkit::real_criu("bad_input_ids").is_none() {
        return;
    }
    let b = bundle(&["sh", "-c", COUNTER]);
    for id in ["a/b", "..", "../x", "", "x y"] {
        let rt = Runtime::new();
        fails(
            &rt,
            &["create", "--bundle", path_str(b.path()), id],
            &["invalid container ID"],
        );
        assert_root_empty(&rt);
    }
    assert_eq!(counter(&b), None);

    // Lifecycle commands refuse IDs that would reach outside the state root:
    // a container in another root stays untouched.
    let other = Runtime::new();
    let victim = testkit::container_id("victim");
    ok(
        &other,
        &["run", "-d", "--bundle", path_str(b.path()), &victim],
    );
    let rt = Runtime::new();
    let sneaky = format!(
        "../{}/{victim}",
        other.root.path().file_name().unwrap().to_str().unwrap()
    );
    for args in [
        vec!["state", sneaky.as_str()],
        vec!["delete", "--force", &sneaky],
        vec!["kill", &sneaky, "KILL"],
        vec!["pause", &sneaky],
        vec!["ps", &sneaky],
        vec!["delete", "--force", ".."],
    ] {
        fails(&rt, &args, &["invalid container ID"]);
    }
    assert_eq!(status(&other, &victim), "running");

    // The ID is taken.
    fails(
        &other,
        &["create", "--bundle", path_str(b.path()), &victim],
        &["already exists"],
    );
    assert_eq!(status(&other, &victim), "running");
    ok(&other, &["delete", "--force", &victim]);
    assert_gone(&other, &victim, &format!("crabmigrate/{victim}"));
}

#[test]
fn bad_input_commands() {
    if testkit::real_criu("bad_input_commands").is_none() {
        return;
    }
    let rt = Runtime::new();
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["start", "no-such-container"],
        vec!["state", "no-such-container"],
        vec!["kill", "no-such-container"],
        vec!["delete", "no-such-container"],
        vec!["pause", "no-such-container"],
    ] {
        fails(&rt, &args, &["no-such-container", "does not exist"]);
    }
    // As runc: a forced delete of nothing succeeds (engines clean up so).
    ok(&rt, &["delete", "--force", "no-such-container"]);
    fails(
        &rt,
        &["kill", "no-such-container", "NOPE"],
        &["NOPE", "signal"],
    );

    let b = bundle(&["sh", "-c", COUNTER]);
    let id = testkit::container_id("bad_commands");
    ok(&rt, &["create", "--bundle", path_str(b.path()), &id]);
    let images = tmp.path().join("images");
    fails(
        &rt,
        &["checkpoint", "--images-dir", path_str(&images), &id],
        &[&id, "is created", "running"],
    );
    fails(&rt, &["pause", &id], &["is created", "running"]);
    fails(&rt, &["resume", &id], &["is created", "paused"]);
    assert_eq!(status(&rt, &id), "created");
    ok(&rt, &["kill", &id, "KILL"]);
    wait_until(PATIENCE, || (status(&rt, &id) == "stopped").then_some(()))
        .expect("the container stops after SIGKILL");
    fails(
        &rt,
        &["checkpoint", "--images-dir", path_str(&images), &id],
        &[&id, "is stopped", "running"],
    );
    fails(&rt, &["kill", &id], &["is stopped"]);
    ok(&rt, &["delete", &id]);
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));

    // Restore from a directory that holds no checkpoint.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let id = testkit::container_id("bad_commands");
    fails(
        &rt,
        &[
            "restore",
            "--bundle",
            path_str(b.path()),
            "--images-dir",
            path_str(&empty),
            "--detach",
            &id,
        ],
        &["no checkpoint"],
    );
    assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    assert_root_empty(&rt);
}
