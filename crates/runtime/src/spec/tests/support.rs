use super::*;
use serde_json::json;

#[test]
fn each_unsupported_field_is_reported() {
    let cases: &[(&str, Value, &str)] = &[
        ("/domainname", json!("example.org"), "domainname"),
        ("/solaris", json!({}), "solaris"),
        ("/windows", json!({"layerFolders": []}), "windows"),
        ("/vm", json!({"kernel": {"path": "/k"}}), "vm"),
        (
            "/process/user/username",
            json!("root"),
            "process.user.username",
        ),
        ("/process/commandLine", json!("sh"), "process.commandLine"),
        (
            "/process/ioPriority",
            json!({"class": "IOPRIO_CLASS_RT", "priority": 1}),
            "process.ioPriority",
        ),
        (
            "/process/scheduler",
            json!({"policy": "SCHED_OTHER"}),
            "process.scheduler",
        ),
        ("/mounts/0/type", json!("overlay"), "mounts[0].type=overlay"),
        ("/mounts/1/options", json!(["rro"]), "mounts[1].options=rro"),
        (
            "/mounts/1/uidMappings",
            json!([{"hostID": 1000, "containerID": 0, "size": 1}]),
            "mounts[1].uidMappings",
        ),
        (
            "/linux/namespaces/0",
            json!({"type": "time"}),
            "linux.namespaces[time]",
        ),
        (
            "/linux/mountLabel",
            json!("system_u:object_r:container_file_t:s0"),
            "linux.mountLabel",
        ),
        ("/linux/intelRdt", json!({"closID": "x"}), "linux.intelRdt"),
        (
            "/linux/personality",
            json!({"domain": "LINUX32"}),
            "linux.personality",
        ),
        ("/linux/netDevices", json!({"eth1": {}}), "linux.netDevices"),
        (
            "/linux/timeOffsets",
            json!({"monotonic": {"secs": 1}}),
            "linux.timeOffsets",
        ),
        (
            "/linux/resources/blockIO",
            json!({"weight": 10}),
            "linux.resources.blockIO",
        ),
        (
            "/linux/resources/hugepageLimits",
            json!([{"pageSize": "2MB", "limit": 1}]),
            "linux.resources.hugepageLimits",
        ),
        (
            "/linux/resources/network",
            json!({"classID": 1}),
            "linux.resources.network",
        ),
        (
            "/linux/resources/rdma",
            json!({"mlx5_1": {"hcaHandles": 3}}),
            "linux.resources.rdma",
        ),
        (
            "/linux/resources/unified",
            json!({"io.weight": "10"}),
            "linux.resources.unified",
        ),
        (
            "/linux/resources/memory",
            json!({"limit": 1, "reservation": 1}),
            "linux.resources.memory.reservation",
        ),
        (
            "/linux/resources/memory",
            json!({"swappiness": 10}),
            "linux.resources.memory.swappiness",
        ),
        (
            "/linux/resources/cpu",
            json!({"shares": 2, "realtimeRuntime": 5}),
            "linux.resources.cpu.realtimeRuntime",
        ),
        (
            "/hooks/createContainer",
            json!([{"path": "/bin/true"}]),
            "hooks.createContainer",
        ),
        (
            "/hooks/startContainer",
            json!([{"path": "/bin/true"}]),
            "hooks.startContainer",
        ),
    ];
    for (pointer, value, expected) in cases {
        let spec = spec_of(&with(base(), pointer, value.clone()));
        let fields = unsupported_fields(check_supported(&spec));
        assert_eq!(fields, vec![expected.to_string()], "setting {pointer}");
    }
}

#[test]
fn all_unsupported_fields_are_listed_at_once() {
    let v = with(base(), "/linux/mountLabel", json!("x_t"));
    let v = with(v, "/domainname", json!("example.org"));
    let v = with(v, "/linux/namespaces/1", json!({"type": "time"}));
    let dir = bundle(&v.to_string());
    let err = load(dir.path()).expect_err("unsupported");
    assert_eq!(
        err.to_string(),
        "config.json uses what crabmigrate does not support: domainname, \
         linux.namespaces[time], linux.mountLabel; remove these fields"
    );
}

#[test]
fn supported_resources_and_fields_pass() {
    let v = with(
        base(),
        "/linux/resources",
        json!({
            "memory": {"limit": 1048576, "swap": 2097152},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
            "pids": {"limit": 100}
        }),
    );
    let v = with(v, "/linux/cgroupsPath", json!("/mine/c1"));
    let v = with(v, "/linux/rootfsPropagation", json!("rprivate"));
    let v = with(
        v,
        "/linux/devices",
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]),
    );
    let v = with(v, "/process/user/additionalGids", json!([5, 6]));
    let v = with(
        v,
        "/process/consoleSize",
        json!({"height": 24, "width": 80}),
    );
    let v = with(v, "/annotations", json!({"org.example.key": "value"}));
    let v = with(
        v,
        "/hooks",
        json!({
            "prestart": [{"path": "/bin/true"}],
            "createRuntime": [{"path": "/bin/true", "args": ["true"], "timeout": 5}],
            "poststart": [{"path": "/bin/true"}],
            "poststop": [{"path": "/bin/true"}]
        }),
    );
    let v = with(v, "/process/capabilities", Value::Null);
    let spec = spec_of(&v);
    validate(&spec).expect("valid");
    assert_eq!(
        check_supported(&spec).expect("supported"),
        Vec::<String>::new()
    );
    assert_eq!(cgroup_path(&spec, "c1").expect("path"), "/mine/c1");
    assert_eq!(
        rootfs_propagation(&spec).expect("propagation"),
        MsFlags::MS_PRIVATE | MsFlags::MS_REC
    );
    assert_eq!(devices(&spec).len(), 1);
    let h = hooks(&spec);
    assert_eq!(
        (
            h.prestart.len(),
            h.create_runtime.len(),
            h.poststart.len(),
            h.poststop.len()
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(h.create_runtime[0].timeout(), Some(5));
}

#[test]
fn security_fields_are_supported_without_warnings() {
    let v = with(
        base(),
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ALLOW"}),
    );
    let v = with(v, "/process/apparmorProfile", json!("docker-default"));
    let v = with(
        v,
        "/process/selinuxLabel",
        json!("system_u:system_r:container_t:s0"),
    );
    let v = with(v, "/process/oomScoreAdj", json!(100));
    let v = with(v, "/process/user/umask", json!(18));
    let v = with(v, "/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}));
    let v = with(v, "/mounts/0/destination", json!("proc"));
    // The security fields are applied (an LSM the kernel lacks is refused
    // when the container is created); only the relative destination warns.
    let warnings = check_supported(&spec_of(&v)).expect("supported");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("mounts[0].destination"),
        "{warnings:?}"
    );
}

#[test]
fn sysctls_must_be_namespaced() {
    let err = |sysctl: Value, drop_ns: Option<&str>| {
        let mut v = with(base(), "/linux/sysctl", sysctl);
        if let Some(kind) = drop_ns {
            let list = v["linux"]["namespaces"].as_array_mut().expect("namespaces");
            list.retain(|ns| ns["type"] != kind);
        }
        validate(&spec_of(&v))
            .map(|()| String::new())
            .unwrap_or_else(|e| e.to_string())
    };
    // Namespaced ones pass, sorted by key.
    let v = with(
        base(),
        "/linux/sysctl",
        json!({"net.ipv4.ping_group_range": "0 0", "kernel.shmmax": "65536", "fs.mqueue.msg_max": "20", "kernel.domainname": "x"}),
    );
    let list = sysctls(&spec_of(&v)).expect("namespaced");
    assert_eq!(list.len(), 4);
    assert_eq!(list[0].0, "fs.mqueue.msg_max");
    assert_eq!(
        sysctl_path("net.ipv4.ping_group_range"),
        "/proc/sys/net/ipv4/ping_group_range"
    );
    let host = err(json!({"vm.overcommit_memory": "1"}), None);
    assert!(
        host.contains("linux.sysctl[vm.overcommit_memory] is not namespaced"),
        "{host}"
    );
    let net = err(json!({"net.ipv4.ip_forward": "1"}), Some("network"));
    assert!(net.contains("belongs to the network namespace"), "{net}");
    assert!(net.contains("add {\"type\": \"network\"}"), "{net}");
    let ipc = err(json!({"kernel.sem": "1 2 3 4"}), Some("ipc"));
    assert!(ipc.contains("the ipc namespace"), "{ipc}");
    let name = err(json!({"net/../../x": "1"}), None);
    assert!(name.contains("is not a kernel parameter name"), "{name}");
}

#[test]
fn empty_values_count_as_absent() {
    let v = with(base(), "/linux/sysctl", json!({}));
    let v = with(v, "/linux/mountLabel", json!(""));
    let v = with(v, "/linux/resources/blockIO", json!({}));
    let v = with(v, "/linux/resources/devices", json!([]));
    let v = with(v, "/hooks/createContainer", json!([]));
    let v = with(v, "/process/apparmorProfile", json!(""));
    let warnings = check_supported(&spec_of(&v)).expect("supported");
    assert!(warnings.is_empty(), "{warnings:?}");
}
