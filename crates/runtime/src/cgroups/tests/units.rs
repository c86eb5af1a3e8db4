use super::*;

// ---- unit tests ---------------------------------------------------

#[test]
fn creates_the_directory_on_every_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    let cg = Cgroup::create_in(
        CgroupLayout::Hybrid,
        &hs,
        "/crabmigrate/c1",
        &Resources::default(),
    )
    .unwrap();
    assert_eq!(cg.paths().len(), hs.len());
    for h in &hs {
        let dir = &cg.paths()[&h.name];
        assert_eq!(dir, &h.mount_point.join("crabmigrate/c1"));
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    assert_eq!(cg.path(), "/crabmigrate/c1");
    assert_eq!(cg.layout(), CgroupLayout::Hybrid);
    // No limits were asked for: nothing written outside cpuset.
    assert!(!tmp
        .path()
        .join("memory/crabmigrate/c1/memory.limit_in_bytes")
        .exists());
    assert!(!tmp.path().join("unified/cgroup.subtree_control").exists());
}

#[test]
fn v1_resources_land_in_v1_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hs = fake_hybrid(root, "");
    // The kernel provides memsw only with swap accounting.
    write(
        &root.join("memory/crabmigrate/c1/memory.memsw.limit_in_bytes"),
        "9223372036854771712\n",
    );
    Cgroup::create_in(
        CgroupLayout::Hybrid,
        &hs,
        "/crabmigrate/c1",
        &all_resources(),
    )
    .unwrap();
    let leaf = |h: &str, f: &str| read(&root.join(h).join("crabmigrate/c1").join(f));
    assert_eq!(leaf("memory", "memory.limit_in_bytes"), "1048576");
    assert_eq!(leaf("memory", "memory.memsw.limit_in_bytes"), "2097152");
    assert_eq!(leaf("cpu,cpuacct", "cpu.shares"), "1024");
    assert_eq!(leaf("cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
    assert_eq!(leaf("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert_eq!(leaf("cpuset", "cpuset.cpus"), "1-2");
    assert_eq!(leaf("cpuset", "cpuset.mems"), "0");
    assert_eq!(leaf("pids", "pids.max"), "max");
    // The v2 hierarchy of a hybrid host has no controllers: only the dir.
    let v2 = root.join("unified/crabmigrate/c1");
    assert!(v2.is_dir());
    assert_eq!(fs::read_dir(&v2).unwrap().count(), 0);
    assert!(!root.join("unified/cgroup.subtree_control").exists());
    assert_eq!(
        fs::read_dir(root.join("systemd/crabmigrate/c1"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn v1_swap_is_skipped_without_swap_accounting() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/c2", &all_resources()).unwrap();
    assert_eq!(
        read(&tmp.path().join("memory/c2/memory.limit_in_bytes")),
        "1048576"
    );
    assert!(!tmp
        .path()
        .join("memory/c2/memory.memsw.limit_in_bytes")
        .exists());
}

#[test]
fn v2_resources_land_in_v2_files_and_controllers_are_enabled() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hs = fake_v2(root);
    write(&root.join("crabmigrate/c1/memory.swap.max"), "max\n");
    let cg = Cgroup::create_in(CgroupLayout::V2, &hs, "/crabmigrate/c1", &all_resources()).unwrap();
    let leaf = |f: &str| read(&root.join("crabmigrate/c1").join(f));
    assert_eq!(leaf("memory.max"), "1048576");
    assert_eq!(leaf("memory.swap.max"), "1048576"); // memory+swap minus memory
    assert_eq!(leaf("cpu.weight"), "39");
    assert_eq!(leaf("cpu.max"), "50000 100000");
    assert_eq!(leaf("cpuset.cpus"), "1-2");
    assert_eq!(leaf("cpuset.mems"), "0");
    assert_eq!(leaf("pids.max"), "max");
    for dir in [root.to_path_buf(), root.join("crabmigrate")] {
        let mut enabled: Vec<String> = read(&dir.join("cgroup.subtree_control"))
            .split_whitespace()
            .map(|c| c.trim_start_matches('+').to_owned())
            .collect();
        enabled.sort();
        assert_eq!(
            enabled,
            ["cpu", "cpuset", "memory", "pids"],
            "in {}",
            dir.display()
        );
    }
    // The leaf's own subtree_control is left alone.
    assert!(!root.join("crabmigrate/c1/cgroup.subtree_control").exists());
    assert_eq!(cg.paths().keys().collect::<Vec<_>>(), [UNIFIED]);
    assert!(cg.v1_roots().is_empty());
    assert_eq!(
        cg.freezer_path(),
        Some(root.join("crabmigrate/c1").as_path())
    );
}

#[test]
fn v2_only_enables_missing_controllers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hs = fake_v2(root);
    write(&root.join("cgroup.subtree_control"), "memory pids\n");
    let r = Resources {
        memory_limit: Some(-1),
        cpu_quota: Some(-1),
        ..Resources::default()
    };
    Cgroup::create_in(CgroupLayout::V2, &hs, "/c", &r).unwrap();
    assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpu");
    assert_eq!(read(&root.join("c/memory.max")), "max");
    assert_eq!(read(&root.join("c/cpu.max")), "max");
}

#[test]
fn missing_controller_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Hybrid, but without a pids hierarchy and no v2 controllers.
    let hs: Vec<Hierarchy> = fake_hybrid(root, "")
        .into_iter()
        .filter(|h| h.name != "pids")
        .collect();
    let r = Resources {
        pids_limit: Some(10),
        ..Resources::default()
    };
    let err = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/c", &r).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::NoController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot set the pids limit: no cgroup hierarchy has the pids controller"
    );
    // The half-made cgroup is gone again.
    assert!(!root.join("memory/c").exists());
    // With pids on the v2 side instead, it goes there.
    let hs: Vec<Hierarchy> = fake_hybrid(root, "pids")
        .into_iter()
        .filter(|h| h.name != "pids")
        .collect();
    Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/c", &r).unwrap();
    assert_eq!(read(&root.join("unified/c/pids.max")), "10");
    assert_eq!(read(&root.join("unified/cgroup.subtree_control")), "+pids");
}

#[test]
fn cpuset_parents_are_initialised() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let hs = fake_hybrid(root, "");
    let r = Resources {
        cpuset_cpus: Some("2".to_owned()),
        ..Resources::default()
    };
    Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/a/b/c", &r).unwrap();
    for mid in ["a", "a/b"] {
        assert_eq!(
            read(&root.join("cpuset").join(mid).join("cpuset.cpus")),
            "0-3"
        );
        assert_eq!(
            read(&root.join("cpuset").join(mid).join("cpuset.mems")),
            "0"
        );
    }
    assert_eq!(read(&root.join("cpuset/a/b/c/cpuset.cpus")), "2");
    assert_eq!(read(&root.join("cpuset/a/b/c/cpuset.mems")), "0");
    // Existing values are kept.
    write(&root.join("cpuset/x/cpuset.cpus"), "3\n");
    Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/x/y", &Resources::default()).unwrap();
    assert_eq!(read(&root.join("cpuset/x/cpuset.cpus")), "3");
    assert_eq!(read(&root.join("cpuset/x/y/cpuset.cpus")), "3");
}

#[test]
fn shares_convert_to_weight() {
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(1), 1);
    assert_eq!(shares_to_weight(1 << 40), 10_000);
}

#[test]
fn v2_swap_conversion() {
    assert_eq!(v2_swap(None, None).unwrap(), None);
    assert_eq!(v2_swap(None, Some(-1)).unwrap(), Some(-1));
    assert_eq!(v2_swap(Some(-1), Some(100)).unwrap(), Some(-1));
    assert_eq!(v2_swap(Some(300), Some(100)).unwrap(), Some(200));
    assert!(v2_swap(Some(300), None).is_err());
    assert!(v2_swap(Some(50), Some(100)).is_err());
}

#[test]
fn paths_are_validated() {
    for bad in [
        "",
        "relative/x",
        "/",
        "//",
        "/a/../b",
        "/..",
        "/a/./b",
        "/a\0b",
    ] {
        let err = validate_path(bad).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidPath { .. }), "{bad:?}");
    }
    assert_eq!(validate_path("//a//b/").unwrap(), ["a", "b"]);
    assert_eq!(validate_path("/a..b/.c").unwrap(), ["a..b", ".c"]);
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    let err = Cgroup::create_in(
        CgroupLayout::Hybrid,
        &hs,
        "../escape",
        &Resources::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cgroup path \"../escape\": it must be absolute"
    );
    let err = Cgroup::create_in(
        CgroupLayout::Hybrid,
        &hs,
        "/a/../../escape",
        &Resources::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains(".. components"), "{err}");
    let cg =
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "//n//m/", &Resources::default()).unwrap();
    assert_eq!(cg.path(), "/n/m");
}

#[test]
fn existing_cgroup_with_processes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    write(&tmp.path().join("freezer/busy/cgroup.procs"), "4242\n");
    let err =
        Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/busy", &Resources::default()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::InUse { pids, .. } if pids == &[4242]),
        "{err}"
    );
    assert!(err.to_string().contains("freezer/busy"), "{err}");
    // Nothing was created elsewhere.
    assert!(!tmp.path().join("memory/busy").exists());
    // An existing empty one is reused.
    write(&tmp.path().join("freezer/idle/cgroup.procs"), "");
    Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/idle", &Resources::default()).unwrap();
}

#[test]
fn write_errors_name_file_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    // A directory where the file should be makes the write fail.
    fs::create_dir_all(tmp.path().join("memory/w/memory.limit_in_bytes")).unwrap();
    let r = Resources {
        memory_limit: Some(1_048_576),
        ..Resources::default()
    };
    let err = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/w", &r).unwrap_err();
    let file = tmp.path().join("memory/w/memory.limit_in_bytes");
    assert_eq!(
        err.to_string(),
        format!("cannot write 1048576 to {}", file.display())
    );
}

#[test]
fn remove_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Without cpuset, nothing but directories is written.
    let hs: Vec<Hierarchy> = fake_hybrid(root, "")
        .into_iter()
        .filter(|h| h.name != "cpuset")
        .collect();
    let cg = Cgroup::create_in(
        CgroupLayout::Hybrid,
        &hs,
        "/crabmigrate/r",
        &Resources::default(),
    )
    .unwrap();
    // A sub-cgroup the container made.
    fs::create_dir(root.join("memory/crabmigrate/r/sub")).unwrap();
    cg.remove().unwrap();
    for dir in cg.paths().values() {
        assert!(!dir.exists(), "{} still there", dir.display());
        assert!(dir.parent().unwrap().is_dir(), "the parent must stay");
    }
    cg.remove().unwrap();
    assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
}

#[test]
fn freezer_states_parse() {
    assert_eq!(
        FreezerState::from_v1("THAWED\n"),
        Some(FreezerState::Thawed)
    );
    assert_eq!(
        FreezerState::from_v1("FREEZING\n"),
        Some(FreezerState::Freezing)
    );
    assert_eq!(FreezerState::from_v1("FROZEN"), Some(FreezerState::Frozen));
    assert_eq!(FreezerState::from_v1("frozen"), None);
    let events = |f| format!("populated 1\nfrozen {f}\n");
    assert_eq!(
        FreezerState::from_v2("0\n", &events(0)),
        Some(FreezerState::Thawed)
    );
    assert_eq!(
        FreezerState::from_v2("1\n", &events(0)),
        Some(FreezerState::Freezing)
    );
    assert_eq!(
        FreezerState::from_v2("1\n", &events(1)),
        Some(FreezerState::Frozen)
    );
    // Frozen by an ancestor.
    assert_eq!(
        FreezerState::from_v2("0\n", &events(1)),
        Some(FreezerState::Frozen)
    );
    assert_eq!(FreezerState::from_v2("1\n", "populated 1\n"), None);
    assert_eq!(FreezerState::Freezing.to_string(), "freezing");
}

#[test]
fn freezer_state_reads_the_right_files() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    let cg = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/f", &Resources::default()).unwrap();
    // Hybrid prefers the v1 freezer.
    assert_eq!(
        cg.freezer_path(),
        Some(tmp.path().join("freezer/f").as_path())
    );
    write(&tmp.path().join("freezer/f/freezer.state"), "FREEZING\n");
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Freezing);
    write(&tmp.path().join("freezer/f/freezer.state"), "BOGUS\n");
    assert!(matches!(cg.freezer_state(), Err(CgroupError::Parse { .. })));
    // Without a v1 freezer, the v2 one.
    let mut paths = cg.paths().clone();
    paths.remove("freezer");
    let cg = Cgroup::from_paths(CgroupLayout::Hybrid, "/f", paths);
    assert_eq!(
        cg.freezer_path(),
        Some(tmp.path().join("unified/f").as_path())
    );
    write(&tmp.path().join("unified/f/cgroup.freeze"), "1\n");
    write(
        &tmp.path().join("unified/f/cgroup.events"),
        "populated 0\nfrozen 1\n",
    );
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    // Nothing at all.
    let none = Cgroup::from_paths(CgroupLayout::None, "/f", BTreeMap::new());
    assert!(matches!(none.freeze(), Err(CgroupError::NoFreezer)));
    assert_eq!(none.freezer_path(), None);
}

#[test]
fn pids_come_from_the_freezer_and_skip_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    let cg = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/p", &Resources::default()).unwrap();
    write(&tmp.path().join("freezer/p/cgroup.procs"), "12\n0\n7\n");
    write(&tmp.path().join("freezer/p/sub/cgroup.procs"), "99\n");
    write(&tmp.path().join("memory/p/cgroup.procs"), "555\n");
    assert_eq!(cg.pids().unwrap(), [12, 7]);
    assert_eq!(cg.all_pids().unwrap(), [7, 12, 99]);
    cg.add_process(31).unwrap();
    for dir in cg.paths().values() {
        assert_eq!(read(&dir.join("cgroup.procs")), "31");
    }
    assert!(matches!(
        cg.signal_all(12345),
        Err(CgroupError::InvalidSignal(12345))
    ));
}

#[test]
fn v1_roots_list_every_controller() {
    let paths: BTreeMap<String, PathBuf> = [
        ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/c/x"),
        ("memory", "/sys/fs/cgroup/memory/c/x"),
        ("name=systemd", "/sys/fs/cgroup/systemd/c/x"),
        (UNIFIED, "/sys/fs/cgroup/unified/c/x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), PathBuf::from(v)))
    .collect();
    let cg = Cgroup::from_paths(CgroupLayout::Hybrid, "/c/x", paths);
    let expected: Vec<(String, String)> = ["cpu", "cpuacct", "memory", "name=systemd"]
        .into_iter()
        .map(|c| (c.to_owned(), "/c/x".to_owned()))
        .collect();
    assert_eq!(cg.v1_roots(), expected);
}

#[test]
fn serializes_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_hybrid(tmp.path(), "");
    let cg = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/s/t", &Resources::default()).unwrap();
    let json = serde_json::to_string(&cg).unwrap();
    assert!(json.contains("\"layout\":\"hybrid\""), "{json}");
    assert!(json.contains("\"name=systemd\""), "{json}");
    let back: Cgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cg);
    for layout in [CgroupLayout::V1, CgroupLayout::V2, CgroupLayout::None] {
        let cg = Cgroup::from_paths(layout, "/x", BTreeMap::new());
        let back: Cgroup = serde_json::from_str(&serde_json::to_string(&cg).unwrap()).unwrap();
        assert_eq!(back.layout(), layout);
    }
    assert!(serde_json::from_str::<Cgroup>(r#"{"layout":"v3","path":"/x","paths":{}}"#).is_err());
    let r = all_resources();
    let back: Resources = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn hierarchies_come_from_mountinfo() {
    let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:34 / /sys/fs/cgroup/freezer2 rw,relatime - cgroup cgroup rw,freezer
50 23 0:40 / /tmp/criu\\040mnt rw - cgroup cgroup rw,memory
";
    let hs = hierarchies_from(hybrid, Path::new(CGROUP_ROOT));
    let names: Vec<&str> = hs.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["cpu,cpuacct", "cpuset", "freezer", "name=systemd", UNIFIED]
    );
    assert_eq!(hs[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    assert!(hs[4].is_unified());
    assert!(hs[0].has_v1_controller("cpuacct") && !hs[0].has_v1_controller("cpuset"));

    let v2 =
        "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
    assert_eq!(
        hierarchies_from(v2, Path::new(CGROUP_ROOT)),
        [Hierarchy::unified("/sys/fs/cgroup")]
    );
    let escaped = "50 23 0:40 / /tmp/criu\\040mnt rw - cgroup cgroup rw,memory\n";
    assert_eq!(
        hierarchies_from(escaped, Path::new("/tmp"))[0].mount_point,
        Path::new("/tmp/criu mnt")
    );
    assert!(hierarchies_from("garbage\n", Path::new(CGROUP_ROOT)).is_empty());
}

#[test]
fn no_hierarchies_is_an_error() {
    let err = Cgroup::create_in(CgroupLayout::None, &[], "/x", &Resources::default()).unwrap_err();
    assert!(matches!(err, CgroupError::NoHierarchies));
}

#[test]
fn device_rules_go_to_the_v1_devices_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut hs = fake_hybrid(root, "");
    fs::create_dir_all(root.join("devices")).unwrap();
    hs.push(Hierarchy::v1("devices", root.join("devices")));
    let mut rules = vec![DeviceRule {
        allow: false,
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".to_owned(),
    }];
    rules.extend(default_allowed_devices());
    let resources = Resources {
        devices: rules,
        ..Resources::default()
    };
    Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/crabmigrate/d1", &resources).unwrap();
    let leaf = |f: &str| read(&root.join("devices/crabmigrate/d1").join(f));
    // Each write replaces the fake file: the deny-all and the last allow.
    assert_eq!(leaf("devices.deny"), "a *:* rwm");
    assert_eq!(leaf("devices.allow"), "c 10:200 rwm");
    assert_eq!(default_allowed_devices()[0].to_string(), "c *:* m");
    assert_eq!(default_allowed_devices()[8].to_string(), "c 136:* rwm");
}

#[test]
fn device_rules_without_a_devices_controller_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hs = fake_v2(tmp.path());
    let resources = Resources {
        devices: default_allowed_devices(),
        ..Resources::default()
    };
    let err = Cgroup::create_in(CgroupLayout::V2, &hs, "/crabmigrate/d2", &resources)
        .expect_err("refused");
    assert!(matches!(err, CgroupError::NoDevicesController), "{err}");
    // Nothing is left behind.
    assert!(!tmp.path().join("crabmigrate/d2").exists());
    let bad = Resources {
        devices: vec![DeviceRule::allow('x', None, None, "rwm")],
        ..Resources::default()
    };
    let mut hs = fake_hybrid(tmp.path(), "");
    fs::create_dir_all(tmp.path().join("devices")).unwrap();
    hs.push(Hierarchy::v1("devices", tmp.path().join("devices")));
    let err = Cgroup::create_in(CgroupLayout::Hybrid, &hs, "/crabmigrate/d3", &bad)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("type 'x' is not a, c or b"), "{err}");
}
