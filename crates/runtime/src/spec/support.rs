//! What crabmigrate supports of the spec.

use oci_spec::runtime::{LinuxResources, Process, Spec};

use super::mounts::{mount_kind, parse_mount_options};
use super::namespaces::{oci_namespace_name, NamespaceKind};
use super::SpecError;

/// What crabmigrate supports of the spec. Anything else that is present is
/// reported: fields crabmigrate cannot honour make an
/// [`SpecError::Unsupported`] error listing all of them; fields it accepts
/// without applying them come back as warnings for the CLI to print once.
///
/// | field | verdict |
/// |---|---|
/// | ociVersion 1.x, root, hostname, annotations | supported |
/// | process: args, env, cwd, terminal, user.uid/gid/additionalGids, rlimits, noNewPrivileges, consoleSize | supported |
/// | process.capabilities, apparmorProfile, selinuxLabel, oomScoreAdj, user.umask | applied (`security`; an LSM the kernel lacks is refused there) |
/// | process.user.username, commandLine, ioPriority, scheduler, execCPUAffinity | unsupported |
/// | mounts of type proc, sysfs, tmpfs, devpts, mqueue, cgroup, bind (type or option) | supported |
/// | other mount types, mount uid/gidMappings, recursive/idmap/tmpcopyup options | unsupported |
/// | linux.namespaces pid/network/mount/ipc/uts/cgroup/user (new or joined), linux.uidMappings/gidMappings | supported |
/// | linux.namespaces time, top-level uidMappings/gidMappings | unsupported |
/// | linux.resources memory.limit/swap, cpu.shares/quota/period/cpus/mems, pids.limit | supported |
/// | linux.resources.devices | applied (the v1 devices controller; refused on a host without one) |
/// | other linux.resources (blockIO, hugepageLimits, network, rdma, unified, ...) | unsupported |
/// | linux.cgroupsPath, maskedPaths, readonlyPaths, devices, rootfsPropagation | supported |
/// | linux.seccomp | applied (`security`) |
/// | linux.sysctl | applied when namespaced (see `sysctl.rs`) |
/// | linux.mountLabel, intelRdt, personality, memoryPolicy, netDevices, timeOffsets | unsupported |
/// | hooks prestart/createRuntime/poststart/poststop | supported |
/// | hooks createContainer/startContainer | unsupported |
/// | domainname, solaris, windows, vm, zos | unsupported |
#[allow(deprecated)] // reads the deprecated top-level uidMappings/gidMappings
pub fn check_supported(spec: &Spec) -> Result<Vec<String>, SpecError> {
    let mut unsupported = Vec::new();
    let mut warnings = Vec::new();

    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        unsupported.push("domainname".to_owned());
    }
    for (field, present) in [
        ("solaris", spec.solaris().is_some()),
        ("windows", spec.windows().is_some()),
        ("vm", spec.vm().is_some()),
        ("zos", spec.zos().is_some()),
        (
            "uidMappings",
            spec.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
        ),
        (
            "gidMappings",
            spec.gid_mappings().as_ref().is_some_and(|m| !m.is_empty()),
        ),
    ] {
        if present {
            unsupported.push(field.to_owned());
        }
    }

    if let Some(process) = spec.process() {
        check_process(process, &mut unsupported);
    }

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if mount_kind(m).is_none() {
            let typ = m.typ().as_deref().unwrap_or("");
            unsupported.push(format!("mounts[{i}].type={typ}"));
        }
        if m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty()) {
            unsupported.push(format!("mounts[{i}].uidMappings"));
        }
        if m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty()) {
            unsupported.push(format!("mounts[{i}].gidMappings"));
        }
        let options = parse_mount_options(m.options().as_deref().unwrap_or_default());
        for ext in options.extensions {
            unsupported.push(format!("mounts[{i}].options={ext}"));
        }
        if !m.destination().is_absolute() && !m.destination().as_os_str().is_empty() {
            warnings.push(format!(
                "mounts[{i}].destination {} is not absolute; it is taken as relative to /",
                m.destination().display()
            ));
        }
    }

    if let Some(linux) = spec.linux() {
        let present = |b: bool, field: &str, list: &mut Vec<String>| {
            if b {
                list.push(field.to_owned());
            }
        };
        present(
            linux.net_devices().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.netDevices",
            &mut unsupported,
        );
        if let Some(resources) = linux.resources() {
            check_resources(resources, &mut unsupported);
        }
        for ns in linux.namespaces().iter().flatten() {
            if NamespaceKind::from_oci(ns.typ()).is_none() {
                unsupported.push(format!(
                    "linux.namespaces[{}]",
                    oci_namespace_name(ns.typ())
                ));
            }
        }
        present(
            linux
                .mount_label()
                .as_deref()
                .is_some_and(|l| !l.is_empty()),
            "linux.mountLabel",
            &mut unsupported,
        );
        present(
            linux.intel_rdt().is_some(),
            "linux.intelRdt",
            &mut unsupported,
        );
        present(
            linux.personality().is_some(),
            "linux.personality",
            &mut unsupported,
        );
        present(
            linux.memory_policy().is_some(),
            "linux.memoryPolicy",
            &mut unsupported,
        );
        present(
            linux.time_offsets().as_ref().is_some_and(|m| !m.is_empty()),
            "linux.timeOffsets",
            &mut unsupported,
        );
    }

    if let Some(hooks) = spec.hooks() {
        if hooks
            .create_container()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        {
            unsupported.push("hooks.createContainer".to_owned());
        }
        if hooks
            .start_container()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        {
            unsupported.push("hooks.startContainer".to_owned());
        }
    }

    if unsupported.is_empty() {
        Ok(warnings)
    } else {
        Err(SpecError::Unsupported {
            fields: unsupported,
        })
    }
}

fn check_process(process: &Process, unsupported: &mut Vec<String>) {
    let user = process.user();
    for (field, present) in [
        (
            "process.user.username",
            user.username().as_deref().is_some_and(|u| !u.is_empty()),
        ),
        (
            "process.commandLine",
            process
                .command_line()
                .as_deref()
                .is_some_and(|c| !c.is_empty()),
        ),
        ("process.ioPriority", process.io_priority().is_some()),
        ("process.scheduler", process.scheduler().is_some()),
        (
            "process.execCPUAffinity",
            process.exec_cpu_affinity().is_some(),
        ),
    ] {
        if present {
            unsupported.push(field.to_owned());
        }
    }
}

/// The fields of a `linux.resources` object that crabmigrate cannot apply,
/// as paths (`linux.resources.blockIO`); `update` refuses them.
pub fn unsupported_resources(r: &LinuxResources) -> Vec<String> {
    let mut out = Vec::new();
    check_resources(r, &mut out);
    out
}

#[allow(deprecated)] // reads the deprecated memory.kernel
fn check_resources(r: &LinuxResources, unsupported: &mut Vec<String>) {
    let mut push = |present: bool, field: &str| {
        if present {
            unsupported.push(format!("linux.resources.{field}"));
        }
    };
    if let Some(m) = r.memory() {
        push(m.reservation().is_some(), "memory.reservation");
        push(m.kernel().is_some(), "memory.kernel");
        push(m.kernel_tcp().is_some(), "memory.kernelTCP");
        push(m.swappiness().is_some(), "memory.swappiness");
        push(m.disable_oom_killer().is_some(), "memory.disableOOMKiller");
        push(m.use_hierarchy().is_some(), "memory.useHierarchy");
        push(
            m.check_before_update().is_some(),
            "memory.checkBeforeUpdate",
        );
    }
    if let Some(c) = r.cpu() {
        push(c.idle().is_some(), "cpu.idle");
        push(c.burst().is_some(), "cpu.burst");
        push(c.realtime_runtime().is_some(), "cpu.realtimeRuntime");
        push(c.realtime_period().is_some(), "cpu.realtimePeriod");
    }
    push(
        r.block_io()
            .as_ref()
            .is_some_and(|b| *b != Default::default()),
        "blockIO",
    );
    push(
        r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        "hugepageLimits",
    );
    push(
        r.network()
            .as_ref()
            .is_some_and(|n| *n != Default::default()),
        "network",
    );
    push(r.rdma().as_ref().is_some_and(|m| !m.is_empty()), "rdma");
    push(
        r.unified().as_ref().is_some_and(|m| !m.is_empty()),
        "unified",
    );
}
