//! The spec's security, applied (root needed; under CI=true nothing skips).
//!
//! - `security_matches_runc`: a non-root process with all five capability
//!   sets (ambient included), no_new_privs, a seccomp filter with an
//!   argument condition, a umask, an OOM score, a namespaced sysctl and a
//!   deny-all device list: /proc/self/status and the other readings are
//!   exactly those of the same bundle under runc, and the mkdir the filter
//!   refuses fails with the filter's errno.
//! - `confinement_survives_checkpoint_and_restore`: a container with
//!   Podman's capabilities and seccomp profile (no_new_privs off, the other
//!   seccomp path) has the same capability sets, no_new_privs and seccomp
//!   mode in /proc/PID/status after a checkpoint and a restore.
//! - `user_namespace_with_id_mappings`: container root is host uid 100000
//!   (uid_map inside, file ownership on the host), `exec` joins the user
//!   namespace, and a checkpoint and restore keep the mapping while the
//!   counter goes on.
//! - `security_refusals`: an AppArmor profile on a host without AppArmor, a
//!   seccomp notify rule, a sysctl that is not namespaced: each refused at
//!   create with the field named, nothing left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{wait_until, BusyboxBundle, Runtime};

use crate::containers::{assert_gone, bundle_with, fails, ok, path_str};

const PATIENCE: Duration = Duration::from_secs(20);

/// The /proc/self/status lines that describe confinement.
const STATUS_KEYS: &[&str] = &[
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
];

/// The confinement lines of /proc/PID/status.
fn confinement(pid: u32) -> Vec<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| STATUS_KEYS.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .map(str::to_owned)
        .collect()
}

/// A script writing what the process sees into /data/out (one reading per
/// line), then trying what the filter refuses.
const PROBE: &str = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' \
                     /proc/self/status > /data/out; umask >> /data/out; \
                     cat /proc/sys/net/ipv4/ip_forward >> /data/out; \
                     cat /proc/self/oom_score_adj >> /data/out; id -u >> /data/out; \
                     mkdir /tmp/refused 2>> /data/out || echo mkdir-failed >> /data/out; \
                     echo > /dev/null && echo devnull-ok >> /data/out";

fn secured(config: &mut Value) {
    config["process"]["user"] = json!({"uid": 1000, "gid": 1000, "umask": 0o027});
    config["process"]["oomScoreAdj"] = json!(500);
    config["process"]["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"]
    });
    config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    config["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            // Only personality(0xffffffff) (a query) is refused.
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]}
        ]
    });
}

/// Runs `bundle` in the foreground under `runtime` (a program taking
/// runc's arguments) and returns /data/out.
fn probe_with(runtime: &[&str], bundle: &BusyboxBundle, id: &str) -> Vec<String> {
    let out_file = bundle.rootfs().join("data/out");
    let _ = fs::remove_file(&out_file);
    let status = std::process::Command::new(runtime[0])
        .args(&runtime[1..])
        .args(["run", "--bundle", path_str(bundle.path()), id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("the runtime runs");
    assert!(status.success(), "{runtime:?} run: {status}");
    fs::read_to_string(&out_file)
        .unwrap_or_else(|e| panic!("{runtime:?} left no {}: {e}", out_file.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn security_matches_runc() {
    if testkit::real_criu("security_matches_runc").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle_with(&["sh", "-c", PROBE], secured);
    for applet in ["grep", "mkdir", "id"] {
        let link = b.rootfs().join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    fs::set_permissions(b.rootfs().join("data"), fs::Permissions::from_mode(0o777)).unwrap();
    let id = testkit::container_id("security");
    let root = rt.root.path().to_str().unwrap().to_owned();
    let ours = probe_with(
        &[
            testkit::bin_dir().join("crabmigrate").to_str().unwrap(),
            "--root",
            &root,
        ],
        &b,
        &id,
    );
    // Non-root with ambient CAP_NET_BIND_SERVICE (bit 10): it is the
    // effective, permitted and inheritable set after exec; the bounding set
    // keeps CHOWN (bit 0), KILL (bit 5) and NET_BIND_SERVICE.
    for want in [
        "CapInh:\t0000000000000400",
        "CapPrm:\t0000000000000400",
        "CapEff:\t0000000000000400",
        "CapBnd:\t0000000000000421",
        "CapAmb:\t0000000000000400",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "0027",
        "500",
        "1000",
        "mkdir-failed",
        "devnull-ok",
    ] {
        assert!(ours.iter().any(|l| l == want), "no {want:?} in {ours:?}");
    }
    // The sysctl was written in the container's own network namespace.
    assert_eq!(ours[8], "1", "{ours:?}");
    assert!(
        ours.iter().any(|l| l.contains("Function not implemented")),
        "mkdir refused with the filter's errno 38: {ours:?}"
    );
    let cgroup = format!("crabmigrate/{id}");
    assert_gone(&rt, &id, &cgroup);

    // The same bundle under runc (a peer: setup installs it) sees the same.
    if which("runc").is_none() {
        assert!(!testkit::in_ci(), "runc is missing under CI=true");
        return;
    }
    let runc_root = tempfile::tempdir().unwrap();
    let theirs = probe_with(
        &["runc", "--root", runc_root.path().to_str().unwrap()],
        &b,
        &format!("{id}-runc"),
    );
    assert_eq!(ours, theirs, "crabmigrate and runc disagree");
}

/// While a container with a deny-all device list runs, its devices cgroup
/// lists only the allowed devices (checked on the host).
#[test]
fn device_cgroup_is_enforced() {
    if testkit::real_criu("device_cgroup_is_enforced").is_none() {
        return;
    }
    let rt = Runtime::new();
    let b = bundle_with(&["sleep", "1000"], |c| {
        c["linux"]["resources"] = json!({"devices": [{"allow": false, "access": "rwm"}]});
    });
    let id = testkit::container_id("devices");
    ok(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let list = Path::new("/sys/fs/cgroup/devices/crabmigrate")
        .join(&id)
        .join("devices.list");
    if !list.parent().unwrap().is_dir() {
        assert!(!testkit::in_ci(), "no v1 devices hierarchy under CI=true");
        println!("SKIPPED device_cgroup_is_enforced: no v1 devices hierarchy");
        return;
    }
    let rules = fs::read_to_string(&list).unwrap();
    assert!(!rules.contains("a *:* rwm"), "{rules}");
    for want in ["c 1:3 rwm", "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm"] {
        assert!(rules.lines().any(|l| l == want), "no {want} in {rules}");
    }
    assert!(!rules.lines().any(|l| l.starts_with("b 8:")), "{rules}");
    ok(&rt, &["delete", "--force", &id]);
}

#[test]
fn confinement_survives_checkpoint_and_restore() {
    if testkit::real_criu("confinement_survives_checkpoint_and_restore").is_none() {
        return;
    }
    let rt = Runtime::new();
    let podman: Value = serde_json::from_str(include_str!(
        "../../crates/runtime/testdata/podman-4.3-config.json"
    ))
    .unwrap();
    let b = bundle_with(&["sh", "-c", "while :; do sleep 0.1; done"], |c| {
        c["process"]["noNewPrivileges"] = json!(false);
        c["process"]["capabilities"] = podman["process"]["capabilities"].clone();
        c["linux"]["seccomp"] = podman["linux"]["seccomp"].clone();
    });
    let id = testkit::container_id("confined");
    let images = tempfile::tempdir().unwrap();
    let images_dir = path_str(images.path());
    crate::container_cr::run_detached(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let pid = pid_of(&rt, &id);
    let before = confinement(pid);
    assert!(before.contains(&"Seccomp:\t2".to_owned()), "{before:?}");
    assert!(
        before.contains(&"CapEff:\t00000000800405fb".to_owned()),
        "{before:?}"
    );
    assert!(before.contains(&"NoNewPrivs:\t0".to_owned()), "{before:?}");

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
    let restored = pid_of(&rt, &id);
    let after = confinement(restored);
    assert_eq!(before, after, "the restored init is confined differently");
    // The filter still works: the restored shell cannot call what the
    // profile refuses (an exec'd process gets the container's filter too).
    let status_line = wait_until(PATIENCE, || {
        let s = fs::read_to_string(format!("/proc/{restored}/status")).ok()?;
        s.lines()
            .find(|l| l.starts_with("Seccomp_filters:"))
            .map(str::to_owned)
    });
    assert_eq!(status_line.as_deref(), Some("Seccomp_filters:\t1"));
    ok(&rt, &["delete", "--force", &id]);
}

fn pid_of(rt: &Runtime, id: &str) -> u32 {
    u32::try_from(rt.state(id)["pid"].as_u64().expect("a pid")).unwrap()
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A change to a test bundle's config.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn security_refusals() {
    if testkit::real_criu("security_refusals").is_none() {
        return;
    }
    let rt = Runtime::new();
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            Box::new(|c: &mut Value| c["linux"]["sysctl"] = json!({"vm.overcommit_memory": "1"})),
            &["linux.sysctl[vm.overcommit_memory] is not namespaced"],
        ),
        (
            Box::new(|c: &mut Value| {
                c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]})
            }),
            &["linux.seccomp syscalls[0] is SCMP_ACT_NOTIFY"],
        ),
        (
            Box::new(|c: &mut Value| {
                c["process"]["capabilities"] = json!({"bounding": ["CAP_NO_SUCH"]})
            }),
            &["config.json", "CAP_NO_SUCH"],
        ),
    ];
    let mut all = cases;
    if !Path::new("/sys/module/apparmor/parameters/enabled").exists() {
        all.push((
            Box::new(|c: &mut Value| c["process"]["apparmorProfile"] = json!("docker-default")),
            &["process.apparmorProfile", "no AppArmor"],
        ));
    }
    for (i, (edit, wants)) in all.iter().enumerate() {
        let b = bundle_with(&["true"], |c| edit(c));
        let id = testkit::container_id(&format!("refused{i}"));
        fails(&rt, &["create", "--bundle", path_str(b.path()), &id], wants);
        assert_gone(&rt, &id, &format!("crabmigrate/{id}"));
    }
}

#[test]
fn user_namespace_with_id_mappings() {
    if testkit::real_criu("user_namespace_with_id_mappings").is_none() {
        return;
    }
    let rt = Runtime::new();
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; \
                   sleep 0.05; done";
    let b = bundle_with(&["sh", "-c", counter], |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map.clone();
    });
    // The container's root owns its rootfs (as an engine would chown it).
    let status = std::process::Command::new("chown")
        .args(["-R", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .unwrap();
    assert!(status.success());
    let id = testkit::container_id("userns");
    crate::container_cr::run_detached(&rt, &["run", "-d", "--bundle", path_str(b.path()), &id]);
    let pid = pid_of(&rt, &id);
    let uid_map = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/uid_map"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(uid_map(pid), "0 100000 65536");
    let n = b.rootfs().join("tmp/n");
    wait_until(PATIENCE, || fs::metadata(&n).ok()).expect("the counter runs");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&fs::metadata(&n).unwrap()),
        100000
    );
    let inside = ok(&rt, &["exec", &id, "cat", "/proc/self/uid_map"]);
    assert_eq!(
        inside.split_whitespace().collect::<Vec<_>>().join(" "),
        "0 100000 65536"
    );

    let images = tempfile::tempdir().unwrap();
    let images_dir = path_str(images.path());
    let read = || -> Option<u64> { fs::read_to_string(&n).ok()?.trim().parse().ok() };
    ok(&rt, &["checkpoint", &id, "--images-dir", images_dir]);
    let stopped_at = read().expect("a count");
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
    let restored = pid_of(&rt, &id);
    assert_eq!(uid_map(restored), "0 100000 65536");
    wait_until(PATIENCE, || read().filter(|&c| c > stopped_at)).expect("the counter goes on");
    ok(&rt, &["delete", "--force", &id]);
}
