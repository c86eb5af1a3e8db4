use super::*;

// ---- tests on the real /sys/fs/cgroup (root only) ----------------

/// Whether a real-host test can run; prints SKIPPED otherwise. Under
/// CI=true a missing requirement fails the test.
fn real_host(name: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("needs root")
    } else if cgroup_layout() == CgroupLayout::None {
        Some("no cgroup hierarchy is mounted")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if ci => panic!("{name}: {reason} (CI=true)"),
        Some(reason) => {
            eprintln!("SKIPPED {name}: {reason}");
            false
        }
    }
}

/// Kills the sleeper and removes the cgroup even when the test panics.
struct Guard {
    cgroup: Option<Cgroup>,
    child: Option<Child>,
    parent: PathBuf,
}

impl Guard {
    fn new(path: &str) -> Self {
        Self {
            cgroup: None,
            child: None,
            parent: PathBuf::from(path.rsplit_once('/').map_or("/", |(p, _)| p)),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cg) = &self.cgroup {
            // A frozen task would not die, and waiting for it would hang.
            let _ = cg.thaw();
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.remove();
            // The shared parent goes when the last test leaves it.
            for dir in cg.paths().values() {
                let mut d = dir.as_path();
                for _ in self.parent.components().skip(1) {
                    match d.parent() {
                        Some(p) => {
                            let _ = fs::remove_dir(p);
                            d = p;
                        }
                        None => break,
                    }
                }
            }
        }
    }
}

fn test_path(test: &str) -> String {
    format!("/crabmigrate-test/{test}-{}", std::process::id())
}

fn sleeper() -> Child {
    Command::new("sleep").arg("30").spawn().unwrap()
}

/// The third field of /proc/PID/stat (after the parenthesised comm).
fn proc_state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(") ").unwrap().1;
    after.chars().next().unwrap()
}

/// The cgroup path of `pid` on the hierarchy with `key` (v2: "").
fn proc_cgroup(pid: u32, key: &str) -> Option<String> {
    let content = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    content.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, k, p) = (f.next()?, f.next()?, f.next()?);
        (k == key).then(|| p.to_owned())
    })
}

#[test]
fn real_cgroup_lifecycle() {
    let name = "real_cgroup_lifecycle";
    if !real_host(name) {
        return;
    }
    let path = test_path(name);
    let mut guard = Guard::new(&path);
    let hs = hierarchies().unwrap();
    let layout = cgroup_layout();
    let resources = Resources {
        memory_limit: Some(64 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(100),
        ..Resources::default()
    };
    let cg = Cgroup::create(&path, &resources).unwrap();
    guard.cgroup = Some(cg.clone());
    assert_eq!(cg.layout(), layout);
    assert_eq!(cg.paths().len(), hs.len());
    for dir in cg.paths().values() {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }

    // The memory limit reads back.
    let memory = match cg
        .paths()
        .iter()
        .find(|(k, _)| *k != UNIFIED && has_controller(k, "memory"))
    {
        Some((_, dir)) => read(&dir.join("memory.limit_in_bytes")),
        None => read(&cg.paths()[UNIFIED].join("memory.max")),
    };
    assert_eq!(memory, (64u64 << 20).to_string());
    let v1 = |controller: &str| {
        cg.paths()
            .iter()
            .find(|(k, _)| *k != UNIFIED && has_controller(k, controller))
            .map(|(_, d)| d.clone())
    };
    if let Some(dir) = v1("cpu") {
        assert_eq!(read(&dir.join("cpu.shares")), "512");
        assert_eq!(read(&dir.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&dir.join("cpu.cfs_period_us")), "100000");
    }
    if let Some(dir) = v1("pids") {
        assert_eq!(read(&dir.join("pids.max")), "100");
    }
    if let Some(dir) = v1("cpuset") {
        // Initialised from the parents, so tasks can join.
        assert!(!read(&dir.join("cpuset.cpus")).is_empty());
        assert!(!read(&dir.join("cpuset.mems")).is_empty());
    }

    let child = guard.child.insert(sleeper());
    let pid = child.id();
    cg.add_process(pid).unwrap();
    assert!(cg.pids().unwrap().contains(&pid));
    let freezer_key = cg
        .paths()
        .keys()
        .find(|k| *k != UNIFIED && has_controller(k, "freezer"))
        .cloned();
    let key = freezer_key.clone().unwrap_or_default();
    assert_eq!(proc_cgroup(pid, &key).as_deref(), Some(path.as_str()));
    if cg.paths().contains_key(UNIFIED) {
        assert_eq!(proc_cgroup(pid, "").as_deref(), Some(path.as_str()));
    }

    // A second create of the same, busy cgroup is refused.
    let err = Cgroup::create(&path, &Resources::default()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::InUse { pids, .. } if pids.contains(&pid)),
        "{err}"
    );

    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    let state = proc_state(pid);
    eprintln!("{name}: frozen sleep is in state {state}");
    if freezer_key.is_some() {
        // A task frozen by the v1 freezer reports D (TASK_FROZEN).
        assert_eq!(state, 'D');
    }
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert_ne!(proc_state(pid), 'D');

    // Killing a frozen cgroup: signal_all thaws so the task can die.
    cg.freeze().unwrap();
    cg.signal_all(libc::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    guard.child = None;
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

    cg.remove().unwrap();
    for dir in cg.paths().values() {
        assert!(!dir.exists(), "{} still there", dir.display());
    }
    cg.remove().unwrap();
}

/// The v2 side on its own (on a hybrid host: the unified hierarchy,
/// which has no controllers but does have cgroup.freeze).
#[test]
fn real_v2_freezer() {
    let name = "real_v2_freezer";
    if !real_host(name) {
        return;
    }
    let Some(unified) = hierarchies()
        .unwrap()
        .into_iter()
        .find(Hierarchy::is_unified)
    else {
        eprintln!("SKIPPED {name}: no cgroup v2 hierarchy is mounted");
        return;
    };
    let path = test_path(name);
    let mut guard = Guard::new(&path);
    let cg = Cgroup::create_in(CgroupLayout::V2, &[unified], &path, &Resources::default()).unwrap();
    guard.cgroup = Some(cg.clone());
    let dir = cg.paths()[UNIFIED].clone();
    assert_eq!(cg.freezer_path(), Some(dir.as_path()));

    let child = guard.child.insert(sleeper());
    let pid = child.id();
    cg.add_process(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), [pid]);
    assert_eq!(proc_cgroup(pid, "").as_deref(), Some(path.as_str()));

    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    assert!(read(&dir.join("cgroup.events")).contains("frozen 1"));
    eprintln!("{name}: frozen sleep is in state {}", proc_state(pid));
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);

    // A signal other than SIGKILL leaves a paused cgroup paused. (On v2
    // a fatal signal kills a frozen task at once anyway, so the state
    // may read freezing while it exits: check the request, not it.)
    cg.freeze().unwrap();
    cg.signal_all(libc::SIGTERM).unwrap();
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    cg.thaw().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    guard.child = None;

    cg.remove().unwrap();
    assert!(!dir.exists());
}
