//! Usage figures of a cgroup (for `events --stats`) and changing its limits
//! later (`update`).

use std::path::Path;

use serde::Serialize;

use super::hierarchy::{has_controller, hierarchies};
use super::{read_optional, validate_path, Cgroup, CgroupError, Resources, UNIFIED};

/// What a container uses, in runc's `events` layout (the fields crabmigrate
/// reads; absent controllers leave zeros).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuStats {
    pub usage: CpuUsage,
}

/// CPU time in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuUsage {
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    pub usage: MemoryEntry,
}

/// Bytes: in use, the most used (v1 only), the limit (0: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEntry {
    pub usage: u64,
    pub max: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PidsStats {
    pub current: u64,
    /// 0: no limit.
    pub limit: u64,
}

/// A number in a cgroup file; "max" and absent files are 0.
fn number(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let text = read_optional(&dir.join(file))?;
    Ok(text.trim().parse().unwrap_or(0))
}

impl Cgroup {
    /// The directory of the hierarchy holding `controller` (a v1 one, else
    /// the v2 one).
    fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.paths
            .iter()
            .find(|(k, _)| *k != UNIFIED && has_controller(k, controller))
            .or_else(|| self.paths.get_key_value(UNIFIED))
            .map(|(_, d)| d.as_path())
    }

    /// Current usage.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        if let Some(dir) = self.controller_dir("cpuacct") {
            stats.cpu.usage.total = if dir.join("cpuacct.usage").exists() {
                number(dir, "cpuacct.usage")?
            } else {
                let cpu = read_optional(&dir.join("cpu.stat"))?;
                cpu.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    .saturating_mul(1000)
            };
        }
        if let Some(dir) = self.controller_dir("memory") {
            let entry = &mut stats.memory.usage;
            if dir.join("memory.usage_in_bytes").exists() {
                entry.usage = number(dir, "memory.usage_in_bytes")?;
                entry.max = number(dir, "memory.max_usage_in_bytes")?;
                entry.limit = number(dir, "memory.limit_in_bytes")?;
            } else {
                entry.usage = number(dir, "memory.current")?;
                entry.max = number(dir, "memory.peak")?;
                entry.limit = number(dir, "memory.max")?;
            }
        }
        if let Some(dir) = self.controller_dir("pids") {
            stats.pids.current = number(dir, "pids.current")?;
            stats.pids.limit = number(dir, "pids.max")?;
        }
        Ok(stats)
    }

    /// Writes new limits to the existing cgroup (`update`). Device rules
    /// are not changed (as with runc).
    pub fn update(&self, resources: &Resources) -> Result<(), CgroupError> {
        let hierarchies = hierarchies()?;
        let components = validate_path(&self.path)?;
        self.apply(&hierarchies, &components, resources)
    }
}
