//! Resource limits: `linux.resources` written to the controllers' files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::devices::DeviceRule;
use super::hierarchy::Hierarchy;
use super::{read_file, read_optional, write_file, Cgroup, CgroupError};

/// Resource limits from the OCI spec's `linux.resources` (the supported
/// subset).
///
/// As in runc, zero means "not set" for every number; -1 (any negative
/// number for `pids_limit`) means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes (OCI semantics, as in cgroup v1).
    pub memory_swap: Option<i64>,
    /// CPU shares (v1 `cpu.shares`; converted to `cpu.weight` on v2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CPUs the container may use, e.g. "0-3,6".
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use, e.g. "0".
    pub cpuset_mems: Option<String>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
    /// Device rules, in order (see `devices.rs`); empty leaves the devices
    /// cgroup as inherited.
    #[serde(default)]
    pub devices: Vec<DeviceRule>,
}

impl Cgroup {
    /// Writes `resources`, each to the hierarchy that has its controller.
    pub(super) fn apply(
        &self,
        hierarchies: &[Hierarchy],
        components: &[&str],
        r: &Resources,
    ) -> Result<(), CgroupError> {
        let set = |v: Option<i64>| v.filter(|&v| v != 0);
        let memory = set(r.memory_limit);
        let swap = set(r.memory_swap);
        let shares = r.cpu_shares.filter(|&v| v != 0);
        let quota = set(r.cpu_quota);
        let period = r.cpu_period.filter(|&v| v != 0);
        let cpus = r.cpuset_cpus.as_deref().filter(|s| !s.is_empty());
        let mems = r.cpuset_mems.as_deref().filter(|s| !s.is_empty());
        let pids = set(r.pids_limit);

        let wanted: [(&'static str, &'static str, bool); 4] = [
            ("memory", "memory", memory.is_some() || swap.is_some()),
            (
                "cpu",
                "cpu",
                shares.is_some() || quota.is_some() || period.is_some(),
            ),
            ("cpuset", "cpuset", cpus.is_some() || mems.is_some()),
            ("pids", "pids", pids.is_some()),
        ];
        let unified = hierarchies.iter().find(|h| h.is_unified());
        let v2_available: Vec<String> = match unified {
            Some(h) => read_optional(&h.mount_point.join("cgroup.controllers"))?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        let mut v1_targets: BTreeMap<&str, &Path> = BTreeMap::new();
        let mut v2_needed: Vec<&str> = Vec::new();
        for (resource, controller, asked) in wanted {
            if !asked {
                continue;
            }
            if let Some(h) = hierarchies.iter().find(|h| h.has_v1_controller(controller)) {
                if let Some(dir) = self.paths.get(&h.name) {
                    v1_targets.insert(controller, dir);
                }
            } else if v2_available.iter().any(|c| c == controller) {
                v2_needed.push(controller);
            } else {
                return Err(CgroupError::NoController {
                    resource,
                    controller,
                });
            }
        }

        if let Some(dir) = v1_targets.get("memory") {
            v1_memory(dir, memory, swap)?;
        }
        if let Some(dir) = v1_targets.get("cpu") {
            if let Some(shares) = shares {
                write_file(&dir.join("cpu.shares"), &shares.to_string())?;
            }
            if let Some(period) = period {
                write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            }
            if let Some(quota) = quota {
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let Some(dir) = v1_targets.get("cpuset") {
            if let Some(cpus) = cpus {
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = mems {
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let (Some(dir), Some(pids)) = (v1_targets.get("pids"), pids) {
            write_file(&dir.join("pids.max"), &max_or(pids))?;
        }

        let (Some(h), false) = (unified, v2_needed.is_empty()) else {
            return Ok(());
        };
        // Enable the controllers from the root down to the parent.
        let mut ancestor = h.mount_point.clone();
        for c in components {
            enable_controllers(&ancestor, &v2_needed)?;
            ancestor.push(c);
        }
        let dir = &ancestor;
        if v2_needed.contains(&"memory") {
            if let Some(memory) = memory {
                write_file(&dir.join("memory.max"), &max_or(memory))?;
            }
            let swap_max = dir.join("memory.swap.max");
            match v2_swap(swap, memory)? {
                Some(value) if swap_max.exists() => write_file(&swap_max, &max_or(value))?,
                Some(_) => {
                    debug!(file = %swap_max.display(), "no swap accounting; swap limit ignored")
                }
                None => {}
            }
        }
        if v2_needed.contains(&"cpu") {
            if let Some(shares) = shares {
                write_file(
                    &dir.join("cpu.weight"),
                    &shares_to_weight(shares).to_string(),
                )?;
            }
            if quota.is_some() || period.is_some() {
                let mut value = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_owned(),
                };
                if let Some(p) = period {
                    value.push_str(&format!(" {p}"));
                }
                write_file(&dir.join("cpu.max"), &value)?;
            }
        }
        if v2_needed.contains(&"cpuset") {
            if let Some(cpus) = cpus {
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = mems {
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let (true, Some(pids)) = (v2_needed.contains(&"pids"), pids) {
            write_file(&dir.join("pids.max"), &max_or(pids))?;
        }
        Ok(())
    }
}

/// Gives a new v1 cpuset the parent's CPUs and memory nodes (a cpuset with
/// empty ones cannot take tasks).
pub(super) fn init_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if !read_optional(&own)?.trim().is_empty() {
            continue;
        }
        let inherited = read_file(&parent.join(file))?;
        let inherited = inherited.trim();
        if !inherited.is_empty() {
            write_file(&own, inherited)?;
        }
    }
    Ok(())
}

/// v1 memory and memory+swap limits, in an order the kernel accepts (the
/// memory limit may never exceed memory+swap).
fn v1_memory(dir: &Path, memory: Option<i64>, swap: Option<i64>) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    // Unlimited memory with no swap limit means unlimited swap too.
    let swap = match (memory, swap) {
        (Some(-1), None) => Some(-1),
        _ => swap,
    };
    let swap = match swap {
        Some(_) if !memsw_file.exists() => {
            debug!(file = %memsw_file.display(), "no swap accounting; swap limit ignored");
            None
        }
        s => s,
    };
    let write_memory = || match memory {
        Some(m) => write_file(&limit_file, &m.to_string()),
        None => Ok(()),
    };
    let write_swap = || match swap {
        Some(s) => write_file(&memsw_file, &s.to_string()),
        None => Ok(()),
    };
    // Unreadable means "as on a new cgroup": unlimited.
    let current: u64 = std::fs::read_to_string(&limit_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let swap_first = match (memory, swap) {
        (Some(_), Some(-1)) => true,
        (Some(_), Some(s)) => u64::try_from(s).is_ok_and(|s| current < s),
        _ => false,
    };
    if swap_first {
        write_swap()?;
        write_memory()
    } else {
        write_memory()?;
        write_swap()
    }
}

/// The v2 `memory.swap.max` for OCI's memory+swap `swap` (runc's rules):
/// `None` to leave it, `Some(-1)` for unlimited.
pub(super) fn v2_swap(swap: Option<i64>, memory: Option<i64>) -> Result<Option<i64>, CgroupError> {
    match (swap, memory) {
        (None, Some(-1)) => Ok(Some(-1)),
        (None, _) => Ok(None),
        (Some(s), _) if s < 0 => Ok(Some(-1)),
        (Some(_), None | Some(-1)) => Err(CgroupError::InvalidResources(
            "a swap limit needs a memory limit".to_owned(),
        )),
        (Some(_), Some(m)) if m < 0 => Err(CgroupError::InvalidResources(format!(
            "memory limit {m} is negative"
        ))),
        (Some(s), Some(m)) if s < m => Err(CgroupError::InvalidResources(format!(
            "memory+swap limit {s} is below the memory limit {m}"
        ))),
        (Some(s), Some(m)) => Ok(Some(s - m)),
    }
}

/// v1 CPU shares as a v2 CPU weight (the conversion runc and crun use):
/// 2..=262144 maps onto 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// "max" for a negative limit, else the number.
fn max_or(value: i64) -> String {
    if value < 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}

/// Enables `controllers` in `dir`'s `cgroup.subtree_control` where missing.
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_optional(&file)?;
    let enabled: Vec<&str> = enabled
        .split_whitespace()
        .map(|c| c.trim_start_matches('+'))
        .collect();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&file, &missing.join(" "))
}
