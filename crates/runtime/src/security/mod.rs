//! The spec's process security, applied, never warned away: capabilities
//! (all five sets), no_new_privs, the seccomp filter, the LSM labels
//! (AppArmor, SELinux), the umask and the OOM score adjustment.
//!
//! Everything that can be wrong with the spec is found in [`ProcessSecurity::
//! from_spec`], before anything is forked: unknown capabilities, a seccomp
//! filter libseccomp cannot build, an LSM this kernel lacks. The container's
//! init (and `exec`'s process) then applies it in three steps, in runc's
//! order:
//!
//! 1. [`ProcessSecurity::before_user`], still with every capability: the OOM
//!    score, the seccomp filter when no_new_privs is off (loading a filter
//!    then needs CAP_SYS_ADMIN), the bounding set, `PR_SET_KEEPCAPS`;
//! 2. the caller switches to `process.user`;
//! 3. [`ProcessSecurity::after_user`]: the effective, permitted, inheritable
//!    and ambient sets, no_new_privs, the umask;
//! 4. [`ProcessSecurity::before_exec`], the last step before execve: the LSM
//!    exec labels and, with no_new_privs, the seccomp filter (so that the
//!    runtime's own last system calls are not filtered).
//!
//! A restored container needs none of this: CRIU restores credentials,
//! capabilities, no_new_privs and seccomp filters as they were dumped.

mod capabilities;
mod lsm;
mod seccomp;

pub use capabilities::{mask as capability_mask, CapabilitySets};
pub use lsm::{apparmor_enabled, selinux_enabled};
pub use seccomp::SeccompFilter;

use oci_spec::runtime::{LinuxSeccomp, Process};

/// Why the spec's security cannot be set up or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    #[error("{field} names {name:?}, which is not a capability; use names such as CAP_CHOWN")]
    UnknownCapability { field: String, name: String },
    #[error("cannot {action} the {set} capability set")]
    Capabilities {
        action: &'static str,
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("linux.seccomp {reason}")]
    SeccompSpec { reason: String },
    #[error("cannot build the seccomp filter ({what})")]
    SeccompBuild {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot load the seccomp filter")]
    SeccompLoad(#[source] libseccomp::error::SeccompError),
    #[error(
        "{field} asks for {value:?}, but this kernel has no {lsm}; remove the field \
         (with podman: --security-opt {option}=unconfined)"
    )]
    LsmMissing {
        field: &'static str,
        value: String,
        lsm: &'static str,
        option: &'static str,
    },
    #[error("cannot set the {lsm} exec label {label:?}")]
    LsmApply {
        lsm: &'static str,
        label: String,
        #[source]
        source: std::io::Error,
    },
    #[error("process.user.umask {0:#o} is not a file mode creation mask; use a value up to 0777")]
    BadUmask(u32),
    #[error("cannot set process.oomScoreAdj to {value}; lowering it needs CAP_SYS_RESOURCE")]
    OomScoreAdj {
        value: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("process.oomScoreAdj {0} is outside -1000..=1000")]
    BadOomScoreAdj(i32),
    #[error("cannot {0}")]
    Sys(&'static str, #[source] nix::Error),
}

/// What to apply to a container process, prepared from the spec.
#[derive(Debug, Default)]
pub struct ProcessSecurity {
    /// `process.capabilities`; `None` leaves the process's sets as they are.
    pub capabilities: Option<CapabilitySets>,
    /// `process.noNewPrivileges`.
    pub no_new_privileges: bool,
    /// `linux.seccomp`, compiled.
    pub seccomp: Option<SeccompFilter>,
    /// `process.apparmorProfile`.
    pub apparmor_profile: Option<String>,
    /// `process.selinuxLabel`.
    pub selinux_label: Option<String>,
    /// `process.user.umask`; runc's 0022 when absent.
    pub umask: u32,
    /// `process.oomScoreAdj`.
    pub oom_score_adj: Option<i32>,
}

/// Every capability name this runtime knows, sorted (`features`).
pub fn known_capabilities() -> Vec<String> {
    let mut all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    all.sort();
    all
}

/// The version of the libseccomp in use, `2.5.4`.
pub fn libseccomp_version() -> String {
    libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// runc's umask when the spec gives none.
pub const DEFAULT_UMASK: u32 = 0o022;

impl ProcessSecurity {
    /// Checks and prepares the security of `process` with the container's
    /// `seccomp` filter.
    pub fn from_spec(
        process: &Process,
        seccomp: Option<&LinuxSeccomp>,
    ) -> Result<Self, SecurityError> {
        let capabilities = process
            .capabilities()
            .as_ref()
            .map(CapabilitySets::from_spec)
            .transpose()?;
        let seccomp = seccomp.map(SeccompFilter::compile).transpose()?;
        let apparmor_profile = process.apparmor_profile().clone().filter(|p| !p.is_empty());
        if let Some(profile) = &apparmor_profile {
            lsm::check_apparmor(profile)?;
        }
        let selinux_label = process.selinux_label().clone().filter(|l| !l.is_empty());
        if let Some(label) = &selinux_label {
            lsm::check_selinux("process.selinuxLabel", label)?;
        }
        let umask = process.user().umask().unwrap_or(DEFAULT_UMASK);
        if umask > 0o777 {
            return Err(SecurityError::BadUmask(umask));
        }
        let oom_score_adj = process.oom_score_adj();
        if let Some(value) = oom_score_adj {
            if !(-1000..=1000).contains(&value) {
                return Err(SecurityError::BadOomScoreAdj(value));
            }
        }
        Ok(Self {
            capabilities,
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
            seccomp,
            apparmor_profile,
            selinux_label,
            umask,
            oom_score_adj,
        })
    }

    /// Step 1, with every capability still held (see the module docs).
    pub fn before_user(&self) -> Result<(), SecurityError> {
        if let Some(value) = self.oom_score_adj {
            write_oom_score_adj(value)?;
        }
        if !self.no_new_privileges {
            if let Some(filter) = &self.seccomp {
                filter.load()?;
            }
        }
        if let Some(sets) = &self.capabilities {
            sets.apply_bounding()?;
            // Keep the permitted set across the switch to process.user.
            nix::sys::prctl::set_keepcaps(true)
                .map_err(|e| SecurityError::Sys("set PR_SET_KEEPCAPS", e))?;
        }
        Ok(())
    }

    /// Step 3, after the switch to `process.user`.
    pub fn after_user(&self) -> Result<(), SecurityError> {
        if let Some(sets) = &self.capabilities {
            nix::sys::prctl::set_keepcaps(false)
                .map_err(|e| SecurityError::Sys("clear PR_SET_KEEPCAPS", e))?;
            sets.apply()?;
        }
        if self.no_new_privileges {
            nix::sys::prctl::set_no_new_privs()
                .map_err(|e| SecurityError::Sys("set no_new_privs", e))?;
        }
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(self.umask));
        Ok(())
    }

    /// Step 4, right before execve.
    pub fn before_exec(&self) -> Result<(), SecurityError> {
        if let Some(profile) = &self.apparmor_profile {
            lsm::set_apparmor_exec(profile)?;
        }
        if let Some(label) = &self.selinux_label {
            lsm::set_selinux_exec(label)?;
        }
        if self.no_new_privileges {
            if let Some(filter) = &self.seccomp {
                filter.load()?;
            }
        }
        Ok(())
    }
}

fn write_oom_score_adj(value: i32) -> Result<(), SecurityError> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|source| SecurityError::OomScoreAdj { value, source })
}

#[cfg(test)]
mod tests;
