//! runc's command line as engines use it (root needed; under CI=true
//! nothing skips).
//!
//! - `exec_runs_confined_in_the_container`: a foreground exec returns the
//!   process's exit status and sees the container's pid namespace, hostname,
//!   capabilities and seccomp filter; `exec --process FILE --detach
//!   --pid-file` (the way conmon and the containerd shim call it) leaves the
//!   process running in the container's cgroup, listed by `ps --format
//!   json`; exec into a stopped container is refused.
//! - `update_and_events`: `update` flags and `update -r -` (a
//!   linux.resources object on stdin) change the pids and memory limits,
//!   `events --stats` reports them; an unsupported resource is refused.
//! - `spec_and_features`: `spec` writes a config.json this runtime runs;
//!   `features` describes seccomp, capabilities and cgroups.
//! - `cgroup_mount_shows_the_containers_cgroup`: a `cgroup` mount holds
//!   read-only binds of the container's own cgroup directories (runc's
//!   way), before and after a checkpoint and restore.
//! - `state_log_and_global_flags`: `state` has runc's `created` (RFC 3339)
//!   and `owner`; `--log FILE --log-format json` ends with runc's error
//!   line, which says "does not exist" for a missing container;
//!   `--systemd-cgroup` is refused naming the fix.
//! - `quiet_as_runc_when_an_engine_calls`: checkpoint and restore print
//!   their summary with crabmigrate's `--images-dir`, nothing on stdout
//!   with runc's `--image-path` or with `--log` (the summary is in the log
//!   at info level), as engines need.
//! - `delete_kills_what_is_left_in_a_stopped_container`: a container
//!   without a pid namespace of its own stops while a process exec'd into
//!   it lives on in its cgroup; `delete` (no --force) kills it and removes
//!   the cgroup, as runc's delete does.

use std::fs;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{wait_until, Runtime};

use crate::containers::{alive, bundle_with, cli, fails, ok, path_str};

const PATIENCE: Duration = Duration::from_secs(20);

fn pid_of(rt: &Runtime, id: &str) -> u32 {
    u32::try_from(rt.state(id)["pid"].as_u64().expect("a pid")).unwrap()
}

/// A detached sleeper with a seccomp filter refusing mkdir and a reduced
/// capability set.
fn sleeper(rt: &Runtime, test: &str) -> (testkit::BusyboxBundle, String) {
    let b = bundle_with(&["sleep", "1000"], |c| {
        c["process"]["capabilities"] = json!({
            "bounding": ["CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
            "effective": ["CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
            "permitted": ["CAP_KILL", "CAP_SETUID", "CAP_SETGID"]
        });
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
    });
    for applet in ["grep", "mkdir"] {
        let link = b.rootfs().join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let id = testkit::container_id(test);
    ok(rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    (b, id)
}

#[test]
fn exec_runs_confined_in_the_container() {
    if testkit::real_criu("exec_runs_confined_in_the_container").is_none() {
        return;
    }
    let rt = Runtime::new();
    let (b, id) = sleeper(&rt, "exec");
    let init = pid_of(&rt, &id);

    // Foreground: exit status, namespaces, confinement.
    let out = cli(
        &rt,
        &[
            "exec",
            &id,
            "sh",
            "-c",
            "echo pid=$$; hostname; grep -E '^(CapEff|Seccomp):' /proc/self/status; \
             mkdir /tmp/x || echo refused; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_ne!(lines[0], "pid=1", "the exec'd shell is not the init");
    assert!(
        lines[0]
            .strip_prefix("pid=")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p < 100),
        "not in the container's pid namespace: {stdout}"
    );
    assert_eq!(lines[1], "crabmigrate-test");
    // CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7).
    assert_eq!(lines[2], "CapEff:\t00000000000000e0", "{stdout}");
    assert_eq!(lines[3], "Seccomp:\t2", "{stdout}");
    assert_eq!(lines[4], "refused", "{stdout}");

    // The way conmon and the shim call it: --process FILE --detach.
    let process = b.path().join("process.json");
    fs::write(
        &process,
        serde_json::to_vec(&json!({
            "user": {"uid": 0, "gid": 0},
            "args": ["sleep", "1000"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                             "permitted": ["CAP_KILL"]},
            "noNewPrivileges": true
        }))
        .unwrap(),
    )
    .unwrap();
    let pid_file = b.path().join("exec.pid");
    ok(
        &rt,
        &[
            "exec",
            "--process",
            path_str(&process),
            "--detach",
            "--pid-file",
            path_str(&pid_file),
            &id,
        ],
    );
    let exec_pid: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(exec_pid));
    let status = fs::read_to_string(format!("/proc/{exec_pid}/status")).unwrap();
    assert!(status.contains("CapEff:\t0000000000000020"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let pids: Vec<u32> = serde_json::from_str(&ok(&rt, &["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&init) && pids.contains(&exec_pid), "{pids:?}");

    ok(&rt, &["delete", "--force", &id]);
    assert!(
        wait_until(PATIENCE, || (!alive(exec_pid)).then_some(())).is_some(),
        "delete --force kills exec'd processes too"
    );

    // A stopped container: refused.
    let done = bundle_with(&["true"], |_| {});
    let stopped = testkit::container_id("exec-stopped");
    ok(
        &rt,
        &["run", "-d", "--bundle", path_str(done.path()), &stopped],
    );
    wait_until(PATIENCE, || {
        (rt.state(&stopped)["status"] == "stopped").then_some(())
    })
    .expect("the container stops");
    fails(
        &rt,
        &["exec", &stopped, "true"],
        &["exec needs it created or running"],
    );
    ok(&rt, &["delete", &stopped]);
}

#[test]
fn update_and_events() {
    if testkit::real_criu("update_and_events").is_none() {
        return;
    }
    let rt = Runtime::new();
    let (_b, id) = sleeper(&rt, "update");
    ok(
        &rt,
        &["update", "--pids-limit", "77", "--memory", "67108864", &id],
    );
    let event: Value = serde_json::from_str(&ok(&rt, &["events", "--stats", &id])).unwrap();
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["data"]["pids"]["limit"], 77, "{event}");
    assert!(
        event["data"]["pids"]["current"].as_u64() >= Some(1),
        "{event}"
    );
    assert_eq!(
        event["data"]["memory"]["usage"]["limit"], 67108864,
        "{event}"
    );

    // containerd's way: the resources on standard input.
    let mut child = rt
        .command(&["update", "-r", "-", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"pids": {"limit": 55}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let event: Value = serde_json::from_str(&ok(&rt, &["events", "--stats", &id])).unwrap();
    assert_eq!(event["data"]["pids"]["limit"], 55, "{event}");

    let blkio = tempfile::NamedTempFile::new().unwrap();
    fs::write(blkio.path(), br#"{"blockIO": {"weight": 100}}"#).unwrap();
    fails(
        &rt,
        &["update", "--resources", path_str(blkio.path()), &id],
        &["linux.resources.blockIO"],
    );
    ok(&rt, &["delete", "--force", &id]);
}

#[test]
fn spec_and_features() {
    if testkit::real_criu("spec_and_features").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = testkit::BusyboxBundle::new(&["true"]);
    fs::remove_file(b.path().join("config.json")).unwrap();
    ok(&rt, &["spec", "--bundle", path_str(b.path())]);
    fails(&rt, &["spec", "--bundle", path_str(b.path())], &["exists"]);
    let mut spec: Value =
        serde_json::from_slice(&fs::read(b.path().join("config.json")).unwrap()).unwrap();
    // Run `true` without a terminal instead of the default `sh`.
    assert_eq!(spec["process"]["args"], json!(["sh"]));
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["true"]);
    b.write_config(&spec);
    let id = testkit::container_id("spec");
    ok(&rt, &["run", "--bundle", path_str(b.path()), &id]);

    let features: Value = serde_json::from_str(&ok(&rt, &["features"])).unwrap();
    assert_eq!(features["linux"]["seccomp"]["enabled"], true);
    let caps = features["linux"]["capabilities"].as_array().unwrap();
    assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"), "{caps:?}");
    assert_eq!(features["linux"]["cgroup"]["systemd"], false);
    assert!(features["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h == "createRuntime"));
}

#[test]
fn state_log_and_global_flags() {
    if testkit::real_criu("state_log_and_global_flags").is_none() {
        return;
    }
    let rt = Runtime::new();
    let (_b, id) = sleeper(&rt, "state");
    let state = rt.state(&id);
    let created = state["created"].as_str().expect("created is a string");
    humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("{created}: {e}"));
    assert_eq!(state["owner"], "");
    assert_eq!(state["status"], "running");

    let log = tempfile::NamedTempFile::new().unwrap();
    let out = cli(
        &rt,
        &[
            "--log",
            path_str(log.path()),
            "--log-format",
            "json",
            "state",
            "no-such-container",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = fs::read_to_string(log.path()).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().expect("a log line")).unwrap();
    assert_eq!(last["level"], "error", "{text}");
    assert!(
        last["msg"].as_str().unwrap().contains("does not exist"),
        "{text}"
    );
    humantime::parse_rfc3339(last["time"].as_str().unwrap()).unwrap();

    fails(
        &rt,
        &["--systemd-cgroup", "state", &id],
        &["--systemd-cgroup is not supported", "cgroupfs"],
    );
    ok(&rt, &["delete", "--force", &id]);
}

#[test]
fn cgroup_mount_shows_the_containers_cgroup() {
    if testkit::real_criu("cgroup_mount_shows_the_containers_cgroup").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle_with(&["sh", "-c", "while :; do sleep 0.1; done"], |c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
        }));
        c["linux"]["resources"] = json!({"pids": {"limit": 321}});
    });
    let id = testkit::container_id("cgmount");
    crate::container_cr::run_detached(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let probe = "ls /sys/fs/cgroup; echo limit=$(cat /sys/fs/cgroup/pids/pids.max); \
                 echo x > /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo read-only";
    let check = |when: &str| {
        let seen = ok(&rt, &["exec", &id, "sh", "-c", probe]);
        if !std::path::Path::new("/sys/fs/cgroup/pids").is_dir() {
            return;
        }
        assert!(seen.lines().any(|l| l == "pids"), "{when}: {seen}");
        assert!(seen.lines().any(|l| l == "limit=321"), "{when}: {seen}");
        assert!(seen.lines().any(|l| l == "read-only"), "{when}: {seen}");
    };
    check("after run");
    let images = tempfile::tempdir().unwrap();
    let images_dir = path_str(images.path());
    ok(&rt, &["checkpoint", &id, "--images-dir", images_dir]);
    crate::container_cr::run_detached(
        &rt,
        &[
            "restore",
            &id,
            "--bundle",
            path_str(b.path()),
            "--images-dir",
            images_dir,
            "-d",
        ],
    );
    check("after restore");
    ok(&rt, &["delete", "--force", &id]);
}

#[test]
fn quiet_as_runc_when_an_engine_calls() {
    if testkit::real_criu("quiet_as_runc_when_an_engine_calls").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle_with(&["sh", "-c", "while :; do sleep 0.1; done"], |_| {});
    let id = testkit::container_id("quiet");
    let bundle = path_str(b.path());
    crate::container_cr::run_detached(&rt, &["run", "-d", "--bundle", bundle, &id]);
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = path_str(log.path());
    let mut round = 0;
    let mut images = || {
        round += 1;
        b.path().join(format!("images-{round}"))
    };
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let succeeded = |args: &[&str]| {
        let out = cli(&rt, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    // crabmigrate's own spelling: the summary, as before.
    let dir = images();
    let out = succeeded(&["checkpoint", &id, "--images-dir", path_str(&dir)]);
    assert!(
        stdout(&out).starts_with(&format!("checkpointed container {id}")),
        "{}",
        stdout(&out)
    );
    // runc's spelling (how Podman, conmon and containerd call): silent.
    let out = succeeded(&[
        "restore",
        &id,
        "--bundle",
        bundle,
        "--image-path",
        path_str(&dir),
        "--detach",
    ]);
    assert_eq!(stdout(&out), "");
    let dir = images();
    let out = succeeded(&["checkpoint", &id, "--image-path", path_str(&dir)]);
    assert_eq!(stdout(&out), "");
    // --log: silent, the summary in the log.
    let out = succeeded(&[
        "--log",
        log_path,
        "restore",
        &id,
        "--bundle",
        bundle,
        "--images-dir",
        path_str(&dir),
        "-d",
    ]);
    assert_eq!(stdout(&out), "");
    let dir = images();
    let out = succeeded(&[
        "--log",
        log_path,
        "--log-format",
        "json",
        "checkpoint",
        &id,
        "--images-dir",
        path_str(&dir),
    ]);
    assert_eq!(stdout(&out), "");
    let text = fs::read_to_string(log.path()).unwrap();
    assert!(
        text.lines().any(|l| l.contains("restored container")),
        "{text}"
    );
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "info", "{text}");
    assert!(
        last["msg"]
            .as_str()
            .unwrap()
            .starts_with(&format!("checkpointed container {id}")),
        "{text}"
    );
    ok(&rt, &["delete", &id]);
}

#[test]
fn delete_kills_what_is_left_in_a_stopped_container() {
    if testkit::real_criu("delete_kills_what_is_left_in_a_stopped_container").is_none() {
        return;
    }
    let rt = Runtime::new();
    // No pid namespace: an exec'd process does not die with the init.
    let b = bundle_with(&["sleep", "1000"], |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid");
    });
    let id = testkit::container_id("leftover");
    crate::container_cr::run_detached(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let init = pid_of(&rt, &id);
    let pid_file = b.path().join("exec.pid");
    ok(
        &rt,
        &[
            "exec",
            "--detach",
            "--pid-file",
            path_str(&pid_file),
            &id,
            "sleep",
            "2000",
        ],
    );
    let exec_pid: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(PATIENCE, || {
        (rt.state(&id)["status"] == "stopped").then_some(())
    })
    .expect("the container stops with its init");
    assert!(alive(exec_pid), "the exec'd process outlives the init");
    let pids: Vec<u32> = serde_json::from_str(&ok(&rt, &["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids, [exec_pid], "it is still in the container's cgroup");

    ok(&rt, &["delete", &id]);
    assert!(
        wait_until(PATIENCE, || (!alive(exec_pid)).then_some(())).is_some(),
        "delete kills what was left in the cgroup"
    );
    crate::containers::assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
}
