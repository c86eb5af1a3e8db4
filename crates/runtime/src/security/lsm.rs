//! AppArmor and SELinux exec labels: applied where the kernel has the LSM,
//! refused where it does not (a profile asked for must never be dropped
//! silently).

use std::path::Path;

use super::SecurityError;

/// Whether AppArmor is enabled in this kernel.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim_start().starts_with('Y'))
}

/// Whether SELinux is enabled (selinuxfs is mounted).
pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

pub(super) fn check_apparmor(profile: &str) -> Result<(), SecurityError> {
    // "unconfined" asks for nothing; runc accepts it anywhere too.
    if profile == "unconfined" || apparmor_enabled() {
        return Ok(());
    }
    Err(SecurityError::LsmMissing {
        field: "process.apparmorProfile",
        value: profile.to_owned(),
        lsm: "AppArmor",
        option: "apparmor",
    })
}

pub(super) fn check_selinux(field: &'static str, label: &str) -> Result<(), SecurityError> {
    if selinux_enabled() {
        return Ok(());
    }
    Err(SecurityError::LsmMissing {
        field,
        value: label.to_owned(),
        lsm: "SELinux",
        option: "label",
    })
}

/// Asks AppArmor to confine the next execve with `profile`.
pub(super) fn set_apparmor_exec(profile: &str) -> Result<(), SecurityError> {
    if profile == "unconfined" && !apparmor_enabled() {
        return Ok(());
    }
    let value = format!("exec {profile}");
    // The LSM-specific file since Linux 5.8, the shared one before.
    let result = std::fs::write("/proc/self/attr/apparmor/exec", &value)
        .or_else(|_| std::fs::write("/proc/self/attr/exec", &value));
    result.map_err(|source| SecurityError::LsmApply {
        lsm: "AppArmor",
        label: profile.to_owned(),
        source,
    })
}

/// Asks SELinux to label the next execve with `label`.
pub(super) fn set_selinux_exec(label: &str) -> Result<(), SecurityError> {
    std::fs::write("/proc/self/attr/exec", label).map_err(|source| SecurityError::LsmApply {
        lsm: "SELinux",
        label: label.to_owned(),
        source,
    })
}
