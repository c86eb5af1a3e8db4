//! `linux.seccomp`: the spec's filter compiled by libseccomp, with runc's
//! rules for what the spec leaves open.
//!
//! - Every architecture listed is added (Podman lists x86_64, x86 and x32),
//!   so a 32-bit program is filtered by its own system call numbers.
//! - A system call name libseccomp does not know is skipped (the kernel
//!   cannot have it either), as runc does.
//! - Several conditions on the same argument make one rule each (they are
//!   ORed); conditions on different arguments make one rule (ANDed).
//! - A rule whose action is the default action is skipped (libseccomp
//!   refuses it, and it changes nothing).
//! - libseccomp does not set no_new_privs itself: that is the spec's
//!   `noNewPrivileges`, applied separately.
//! - `SCMP_ACT_NOTIFY` and a listener path need a seccomp agent, which
//!   crabmigrate does not run: refused.

use std::str::FromStr;

use libseccomp::ScmpSyscall;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};

use super::SecurityError;

/// A compiled filter, ready to load.
pub struct SeccompFilter {
    context: ScmpFilterContext,
    /// How many rules were added (for logs and tests).
    pub rules: usize,
    /// Names skipped because libseccomp does not know them.
    pub unknown: Vec<String>,
}

impl std::fmt::Debug for SeccompFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompFilter")
            .field("rules", &self.rules)
            .field("unknown", &self.unknown.len())
            .finish()
    }
}

fn spec_error(reason: impl Into<String>) -> SecurityError {
    SecurityError::SeccompSpec {
        reason: reason.into(),
    }
}

fn build(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SecurityError {
    let what = what.into();
    move |source| SecurityError::SeccompBuild { what, source }
}

impl SeccompFilter {
    /// Compiles the spec's filter; every problem is an error naming the
    /// field.
    pub fn compile(spec: &LinuxSeccomp) -> Result<Self, SecurityError> {
        if spec.listener_path().is_some() {
            return Err(spec_error(
                "names a listenerPath (a seccomp agent), which crabmigrate does not support; \
                 remove it and the SCMP_ACT_NOTIFY rules",
            ));
        }
        let default = action(
            spec.default_action(),
            spec.default_errno_ret(),
            "defaultAction",
        )?;
        let mut context =
            ScmpFilterContext::new(default).map_err(build("create the filter context"))?;
        // no_new_privs is process.noNewPrivileges' business.
        context
            .set_ctl_nnp(false)
            .map_err(build("leave no_new_privs to process.noNewPrivileges"))?;
        for flag in spec.flags().iter().flatten() {
            let result = match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => context.set_ctl_log(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => context.set_ctl_tsync(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => context.set_ctl_ssb(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    return Err(spec_error(
                        "flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to a seccomp \
                         agent, which crabmigrate does not support; remove it",
                    ))
                }
            };
            result.map_err(build(format!("set flag {flag}")))?;
        }
        for arch in spec.architectures().iter().flatten() {
            let name = serde_json::to_value(arch)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let scmp = ScmpArch::from_str(&name).map_err(|_| {
                spec_error(format!(
                    "architecture {name:?} is not one libseccomp knows; use names such as \
                     SCMP_ARCH_X86_64"
                ))
            })?;
            // The native architecture is in every new context already.
            if !context.is_arch_present(scmp).unwrap_or(false) {
                context
                    .add_arch(scmp)
                    .map_err(build(format!("add architecture {name}")))?;
            }
        }
        let mut filter = Self {
            context,
            rules: 0,
            unknown: Vec::new(),
        };
        for (i, syscall) in spec.syscalls().iter().flatten().enumerate() {
            filter.add(i, syscall, default)?;
        }
        Ok(filter)
    }

    fn add(
        &mut self,
        index: usize,
        syscall: &LinuxSyscall,
        default: ScmpAction,
    ) -> Result<(), SecurityError> {
        let field = format!("syscalls[{index}]");
        let act = action(syscall.action(), syscall.errno_ret(), &field)?;
        if act == default {
            return Ok(());
        }
        let args = syscall.args().as_deref().unwrap_or_default();
        let mut conditions = Vec::new();
        for (j, arg) in args.iter().enumerate() {
            let index = u32::try_from(arg.index())
                .ok()
                .filter(|&i| i < 6)
                .ok_or_else(|| {
                    spec_error(format!(
                        "{field}.args[{j}].index {} is not a system call argument (0 to 5)",
                        arg.index()
                    ))
                })?;
            let op = match arg.op() {
                LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                // The spec's value is the mask, valueTwo the datum.
                LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
            };
            let datum = match arg.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
                _ => arg.value(),
            };
            conditions.push((index, ScmpArgCompare::new(index, op, datum)));
        }
        // All on one argument: alternatives, one rule each. Otherwise one
        // rule with every condition.
        let same_argument =
            conditions.len() > 1 && conditions.iter().all(|(i, _)| *i == conditions[0].0);
        let rule_sets: Vec<Vec<ScmpArgCompare>> = if same_argument {
            conditions.iter().map(|(_, c)| vec![*c]).collect()
        } else {
            vec![conditions.iter().map(|(_, c)| *c).collect()]
        };
        for name in syscall.names() {
            let Ok(number) = ScmpSyscall::from_name(name) else {
                tracing::debug!(syscall = %name, "seccomp: libseccomp does not know this system call; skipped");
                self.unknown.push(name.clone());
                continue;
            };
            for rule in &rule_sets {
                self.context
                    .add_rule_conditional(act, number, rule)
                    .map_err(build(format!("add {field} for {name}")))?;
                self.rules += 1;
            }
        }
        Ok(())
    }

    /// Loads the filter into this process (and its future children).
    pub fn load(&self) -> Result<(), SecurityError> {
        self.context.load().map_err(SecurityError::SeccompLoad)
    }
}

/// The spec's action as libseccomp's. ERRNO and TRACE return `errno`
/// (EPERM when the spec gives none, as runc).
fn action(
    action: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
) -> Result<ScmpAction, SecurityError> {
    let ret = errno.unwrap_or(libc::EPERM as u32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(
            i32::try_from(ret)
                .ok()
                .filter(|&r| r <= 0xffff)
                .ok_or_else(|| {
                    spec_error(format!("{field} errno {ret} is out of range (0 to 65535)"))
                })?,
        ),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(ret).map_err(|_| {
                spec_error(format!("{field} errno {ret} is out of range (0 to 65535)"))
            })?)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(spec_error(format!(
                "{field} is SCMP_ACT_NOTIFY, which needs a seccomp agent; crabmigrate does not \
                 support one (nor can CRIU checkpoint a notify listener); use another action"
            )))
        }
    })
}
