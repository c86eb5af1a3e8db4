//! `process.capabilities`: the five sets, through the `caps` crate.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use super::SecurityError;

/// The five capability sets of a process; an absent set in the spec is
/// empty (as in runc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapabilitySets {
    /// The sets of `process.capabilities`. A name `caps` does not know is an
    /// error naming it.
    pub fn from_spec(spec: &LinuxCapabilities) -> Result<Self, SecurityError> {
        let set = |field: &str, list: &Option<Capabilities>| {
            list.iter()
                .flatten()
                .map(|cap| parse(&format!("process.capabilities.{field}"), cap))
                .collect::<Result<CapsHashSet, _>>()
        };
        Ok(Self {
            bounding: set("bounding", spec.bounding())?,
            effective: set("effective", spec.effective())?,
            permitted: set("permitted", spec.permitted())?,
            inheritable: set("inheritable", spec.inheritable())?,
            ambient: set("ambient", spec.ambient())?,
        })
    }

    /// Drops every capability outside `bounding` from the bounding set
    /// (needs CAP_SETPCAP, so before the switch to process.user).
    pub(super) fn apply_bounding(&self) -> Result<(), SecurityError> {
        for cap in caps::runtime::thread_all_supported() {
            if self.bounding.contains(&cap) {
                continue;
            }
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| {
                SecurityError::Capabilities {
                    action: "drop from",
                    set: "bounding",
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Sets the inheritable, effective and permitted sets (in an order the
    /// kernel accepts while they shrink), then raises the ambient ones.
    pub(super) fn apply(&self) -> Result<(), SecurityError> {
        let supported = caps::runtime::thread_all_supported();
        let only_supported = |set: &CapsHashSet| {
            set.intersection(&supported)
                .copied()
                .collect::<CapsHashSet>()
        };
        for (name, cset, value) in [
            ("inheritable", CapSet::Inheritable, &self.inheritable),
            ("effective", CapSet::Effective, &self.effective),
            ("permitted", CapSet::Permitted, &self.permitted),
        ] {
            caps::set(None, cset, &only_supported(value)).map_err(|source| {
                SecurityError::Capabilities {
                    action: "set",
                    set: name,
                    source,
                }
            })?;
        }
        caps::clear(None, CapSet::Ambient).map_err(|source| SecurityError::Capabilities {
            action: "clear",
            set: "ambient",
            source,
        })?;
        // The kernel raises an ambient capability only if it is in the
        // permitted and inheritable sets. runc skips one it cannot raise
        // with a warning, and engines rely on that: Podman's exec drops the
        // inheritable set but keeps the spec's ambient list. Skipping it
        // leaves the process with less, never more.
        for cap in only_supported(&self.ambient) {
            if let Err(error) = caps::raise(None, CapSet::Ambient, cap) {
                tracing::warn!(capability = %cap, %error, "cannot raise the ambient capability; skipped (it is not in the inheritable and permitted sets)");
            }
        }
        Ok(())
    }
}

/// oci-spec's capability as `caps`' one, through its spec name.
fn parse(field: &str, cap: &oci_spec::runtime::Capability) -> Result<Capability, SecurityError> {
    let name = serde_json::to_value(cap)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("CAP_{cap}"));
    Capability::from_str(&name).map_err(|_| SecurityError::UnknownCapability {
        field: field.to_owned(),
        name,
    })
}

/// The bits of a set as `/proc/PID/status` prints them (`CapEff:` ...).
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, cap| m | cap.bitmask())
}
