//! Unit tests against a fake cgroupfs of plain directories, and tests on
//! the real /sys/fs/cgroup (root only).

mod real;
mod units;

use super::hierarchy::hierarchies_from;
use super::resources::v2_swap;
use super::*;

use std::fs;
use std::process::{Child, Command};

// ---- fake cgroupfs ------------------------------------------------

pub(super) fn write(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

pub(super) fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A hybrid host: v1 controllers, a named hierarchy, and a v2
/// hierarchy with `v2_controllers`.
pub(super) fn fake_hybrid(root: &Path, v2_controllers: &str) -> Vec<Hierarchy> {
    let mut hs = Vec::new();
    for name in ["cpu,cpuacct", "cpuset", "memory", "freezer", "pids"] {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        hs.push(Hierarchy::v1(name, dir));
    }
    write(&root.join("cpuset/cpuset.cpus"), "0-3\n");
    write(&root.join("cpuset/cpuset.mems"), "0\n");
    fs::create_dir_all(root.join("systemd")).unwrap();
    hs.push(Hierarchy::v1("name=systemd", root.join("systemd")));
    write(&root.join("unified/cgroup.controllers"), v2_controllers);
    hs.push(Hierarchy::unified(root.join("unified")));
    hs
}

/// A pure v2 host with the usual controllers.
pub(super) fn fake_v2(root: &Path) -> Vec<Hierarchy> {
    write(
        &root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    write(&root.join("cgroup.subtree_control"), "");
    vec![Hierarchy::unified(root)]
}

pub(super) fn all_resources() -> Resources {
    Resources {
        memory_limit: Some(1 << 20),
        memory_swap: Some(2 << 20),
        cpu_shares: Some(1024),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("1-2".to_owned()),
        cpuset_mems: Some("0".to_owned()),
        pids_limit: Some(-1),
        devices: Vec::new(),
    }
}
