//! The hooks crabmigrate runs.

use oci_spec::runtime::{Hook, Spec};

/// The hooks crabmigrate runs, by stage, in the spec's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSet {
    /// `hooks.prestart` (deprecated by the spec; runc runs these with
    /// `createRuntime`, before them).
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

impl HookSet {
    /// Whether there are no hooks at all.
    pub fn is_empty(&self) -> bool {
        self.prestart.is_empty()
            && self.create_runtime.is_empty()
            && self.poststart.is_empty()
            && self.poststop.is_empty()
    }
}

/// The spec's hooks.
pub fn hooks(spec: &Spec) -> HookSet {
    let mut set = HookSet::default();
    for (stage, list) in all_hooks(spec) {
        let slot = match stage {
            "prestart" => &mut set.prestart,
            "createRuntime" => &mut set.create_runtime,
            "poststart" => &mut set.poststart,
            "poststop" => &mut set.poststop,
            _ => continue,
        };
        *slot = list.to_vec();
    }
    set
}

/// Every hook list of the spec with its name in config.json.
#[allow(deprecated)] // prestart is deprecated by the spec, still used
pub(super) fn all_hooks(spec: &Spec) -> Vec<(&'static str, &[Hook])> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    [
        ("prestart", h.prestart()),
        ("createRuntime", h.create_runtime()),
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
        ("poststart", h.poststart()),
        ("poststop", h.poststop()),
    ]
    .into_iter()
    .map(|(stage, list)| (stage, list.as_deref().unwrap_or_default()))
    .collect()
}
