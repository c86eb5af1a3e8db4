use oci_spec::runtime::{LinuxSeccomp, Spec};
use serde_json::{json, Value};

use super::*;

/// The config.json Podman 4.3 wrote for `podman create` of a busybox
/// image (cgroupfs manager, `--network none`), its paths renamed.
const PODMAN: &str = include_str!("../../testdata/podman-4.3-config.json");

fn podman() -> Spec {
    serde_json::from_str(PODMAN).expect("Podman's spec parses")
}

fn seccomp(value: Value) -> LinuxSeccomp {
    serde_json::from_value(value).expect("a seccomp section")
}

fn seccomp_error(value: Value) -> String {
    SeccompFilter::compile(&seccomp(value))
        .expect_err("refused")
        .to_string()
}

#[test]
fn podman_security_is_prepared() {
    let spec = podman();
    let process = spec.process().as_ref().expect("process");
    let linux = spec.linux().as_ref().expect("linux");
    let security = ProcessSecurity::from_spec(process, linux.seccomp().as_ref()).expect("prepared");
    let caps = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.bounding.len(), 11);
    assert!(caps
        .bounding
        .contains(&caps::Capability::CAP_NET_BIND_SERVICE));
    assert!(!caps.bounding.contains(&caps::Capability::CAP_SYS_ADMIN));
    assert_eq!(caps.effective, caps.permitted);
    assert!(caps.ambient.is_empty() && caps.inheritable.is_empty());
    assert_eq!(security.umask, 0o022);
    assert!(!security.no_new_privileges);
    let filter = security.seccomp.as_ref().expect("a filter");
    assert!(filter.rules > 300, "{filter:?}");
    // Podman's profile lists 32-bit-only calls that libseccomp resolves
    // through its pseudo numbers, so nearly nothing is skipped.
    assert!(filter.unknown.len() < 10, "{:?}", filter.unknown);
}

#[test]
fn capability_masks_match_proc_status() {
    let sets = CapabilitySets::from_spec(
        &serde_json::from_value(json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"]
        }))
        .expect("capabilities"),
    )
    .expect("parsed");
    // CAP_CHOWN is bit 0, CAP_KILL bit 5.
    assert_eq!(capability_mask(&sets.bounding), 0b100001);
    assert_eq!(capability_mask(&sets.effective), 0b100000);
    assert!(sets.permitted.is_empty());
}

#[test]
fn every_action_and_operator_compiles() {
    let filter = SeccompFilter::compile(&seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["getpgrp"], "action": "SCMP_ACT_KILL"},
            {"names": ["getsid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["setsid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["acct"], "action": "SCMP_ACT_TRACE"},
            {"names": ["syslog"], "action": "SCMP_ACT_LOG"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_NE"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_LT"}
            ]},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                {"index": 2, "value": 9, "op": "SCMP_CMP_GE"}
            ]},
            {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
            ]},
            {"names": ["open"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 1, "value": 1, "op": "SCMP_CMP_LE"},
                {"index": 2, "value": 1, "op": "SCMP_CMP_GT"}
            ]},
            {"names": ["getpid", "no_such_call_at_all"], "action": "SCMP_ACT_ALLOW"}
        ]
    })))
    .expect("compiled");
    // personality: two alternatives on argument 0; the allow rule is the
    // default action and adds nothing.
    assert_eq!(filter.rules, 6 + 2 + 1 + 1 + 1);
    assert_eq!(filter.unknown, Vec::<String>::new());
}

#[test]
fn unknown_system_calls_are_skipped() {
    let filter = SeccompFilter::compile(&seccomp(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "no_such_call_at_all"], "action": "SCMP_ACT_ALLOW"}]
    })))
    .expect("compiled");
    assert_eq!(filter.rules, 1);
    assert_eq!(filter.unknown, ["no_such_call_at_all"]);
}

#[test]
fn a_seccomp_agent_is_refused() {
    let notify = seccomp_error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    assert!(
        notify.contains("syscalls[0] is SCMP_ACT_NOTIFY"),
        "{notify}"
    );
    let listener = seccomp_error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock"
    }));
    assert!(listener.contains("listenerPath"), "{listener}");
    let flag = seccomp_error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    }));
    assert!(flag.contains("WAIT_KILLABLE_RECV"), "{flag}");
}

#[test]
fn bad_arguments_are_refused() {
    let index = seccomp_error(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]
    }));
    assert!(index.contains("args[0].index 6"), "{index}");
    let errno = seccomp_error(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 70000
    }));
    assert!(errno.contains("defaultAction errno 70000"), "{errno}");
}

#[test]
fn umask_and_oom_score_are_checked() {
    let process = |value: Value| -> oci_spec::runtime::Process {
        serde_json::from_value(value).expect("a process")
    };
    let umask = ProcessSecurity::from_spec(
        &process(json!({"user": {"uid": 0, "gid": 0, "umask": 0o1000}, "cwd": "/"})),
        None,
    )
    .expect_err("refused");
    assert!(umask.to_string().contains("0o1000"), "{umask}");
    let oom = ProcessSecurity::from_spec(
        &process(json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "oomScoreAdj": 1001})),
        None,
    )
    .expect_err("refused");
    assert!(oom.to_string().contains("1001"), "{oom}");
    let fine = ProcessSecurity::from_spec(
        &process(
            json!({"user": {"uid": 0, "gid": 0, "umask": 0o077}, "cwd": "/", "oomScoreAdj": 500}),
        ),
        None,
    )
    .expect("accepted");
    assert_eq!((fine.umask, fine.oom_score_adj), (0o077, Some(500)));
}

#[test]
fn an_lsm_this_kernel_lacks_is_refused() {
    let process = |field: &str| -> oci_spec::runtime::Process {
        serde_json::from_value(json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", field: "x_t"}))
            .expect("a process")
    };
    if !apparmor_enabled() {
        let err = ProcessSecurity::from_spec(&process("apparmorProfile"), None)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("no AppArmor"), "{err}");
        assert!(err.contains("--security-opt apparmor=unconfined"), "{err}");
    }
    if !selinux_enabled() {
        let err = ProcessSecurity::from_spec(&process("selinuxLabel"), None)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("no SELinux"), "{err}");
    }
    // "unconfined" asks for nothing and is accepted everywhere.
    let unconfined: oci_spec::runtime::Process = serde_json::from_value(
        json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "apparmorProfile": "unconfined"}),
    )
    .expect("a process");
    ProcessSecurity::from_spec(&unconfined, None).expect("accepted");
}
