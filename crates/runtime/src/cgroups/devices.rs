//! The devices cgroup: which device nodes the container may open, read,
//! write or create (`linux.resources.devices`), enforced by the v1
//! `devices` controller.
//!
//! Rules are written in the spec's order, then allow rules for the spec's
//! `linux.devices` and runc's default devices (null, zero, full, random,
//! urandom, tty, the pty nodes, tun), as runc does. A host without a v1
//! devices hierarchy (pure cgroup v2, where the kernel wants an eBPF
//! program) is refused rather than left unenforced.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::hierarchy::Hierarchy;
use super::{write_file, Cgroup, CgroupError};

/// One device rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// Allow (true) or deny (false).
    pub allow: bool,
    /// 'a' (all), 'c' (character) or 'b' (block).
    pub kind: char,
    /// `None` for any major number.
    pub major: Option<i64>,
    /// `None` for any minor number.
    pub minor: Option<i64>,
    /// Some of "rwm" (read, write, mknod).
    pub access: String,
}

impl DeviceRule {
    /// An allow rule for one node.
    pub fn allow(kind: char, major: Option<i64>, minor: Option<i64>, access: &str) -> Self {
        Self {
            allow: true,
            kind,
            major,
            minor,
            access: access.to_owned(),
        }
    }

    /// Checks the type and the access string.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.kind, 'a' | 'c' | 'b') {
            return Err(format!("type {:?} is not a, c or b", self.kind));
        }
        if self.access.is_empty() || !self.access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(format!(
                "access {:?} is not made of r, w and m",
                self.access
            ));
        }
        for n in [self.major, self.minor].into_iter().flatten() {
            if n < -1 {
                return Err(format!("device number {n} is negative"));
            }
        }
        Ok(())
    }
}

/// The v1 form: `c 1:3 rwm`, `a *:* rwm`.
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |n: Option<i64>| match n {
            Some(n) if n >= 0 => n.to_string(),
            _ => "*".to_owned(),
        };
        write!(
            f,
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// The devices every container may use (runc's list).
pub fn default_allowed() -> Vec<DeviceRule> {
    vec![
        // mknod of any node (opening it still needs a rule).
        DeviceRule::allow('c', None, None, "m"),
        DeviceRule::allow('b', None, None, "m"),
        DeviceRule::allow('c', Some(1), Some(3), "rwm"), // /dev/null
        DeviceRule::allow('c', Some(1), Some(8), "rwm"), // /dev/random
        DeviceRule::allow('c', Some(1), Some(7), "rwm"), // /dev/full
        DeviceRule::allow('c', Some(5), Some(0), "rwm"), // /dev/tty
        DeviceRule::allow('c', Some(1), Some(5), "rwm"), // /dev/zero
        DeviceRule::allow('c', Some(1), Some(9), "rwm"), // /dev/urandom
        DeviceRule::allow('c', Some(136), None, "rwm"),  // /dev/pts/*
        DeviceRule::allow('c', Some(5), Some(2), "rwm"), // /dev/ptmx
        DeviceRule::allow('c', Some(10), Some(200), "rwm"), // /dev/net/tun
    ]
}

impl Cgroup {
    /// Writes `rules` to the v1 devices hierarchy, in order.
    pub(super) fn apply_devices(
        &self,
        hierarchies: &[Hierarchy],
        rules: &[DeviceRule],
    ) -> Result<(), CgroupError> {
        if rules.is_empty() {
            return Ok(());
        }
        let dir = hierarchies
            .iter()
            .find(|h| h.has_v1_controller("devices"))
            .and_then(|h| self.paths.get(&h.name))
            .ok_or(CgroupError::NoDevicesController)?;
        for rule in rules {
            rule.validate().map_err(|reason| {
                CgroupError::InvalidResources(format!("device rule {rule}: {reason}"))
            })?;
            let file = if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write_file(&dir.join(file), &rule.to_string())?;
        }
        Ok(())
    }
}
