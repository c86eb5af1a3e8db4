//! `linux.sysctl`: only kernel parameters that belong to a namespace the
//! container has of its own may be set (runc's rule): the IPC ones with a
//! new IPC namespace, `net.*` with a network namespace, the host and
//! domain names with a UTS namespace. Anything else would change the host.

use oci_spec::runtime::Spec;

use super::namespaces::{collect_namespaces, NamespaceKind};
use super::validate::invalid;
use super::SpecError;

/// IPC parameters (besides `fs.mqueue.*`).
const IPC: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a parameter belongs to; `None` for a host-wide one.
fn namespace_of(key: &str) -> Option<NamespaceKind> {
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(NamespaceKind::Ipc)
    } else if key.starts_with("net.") {
        Some(NamespaceKind::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NamespaceKind::Uts)
    } else {
        None
    }
}

/// The spec's sysctls, sorted by key, each checked to belong to a
/// namespace the container creates (or joins, for the network) and to name
/// a plain file under /proc/sys.
pub fn sysctls(spec: &Spec) -> Result<Vec<(String, String)>, SpecError> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(Vec::new());
    };
    let (ns, _) = collect_namespaces(spec)?;
    let mut out: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.sort();
    for (key, _) in &out {
        let field = format!("linux.sysctl[{key}]");
        let bad_name = key.is_empty()
            || key.starts_with('.')
            || key.ends_with('.')
            || key.contains("..")
            || key.contains('/')
            || key.contains('\0');
        if bad_name {
            return Err(invalid(
                field,
                "is not a kernel parameter name such as net.ipv4.ip_forward",
            ));
        }
        let Some(kind) = namespace_of(key) else {
            return Err(invalid(
                field,
                "is not namespaced: setting it would change the host; remove it",
            ));
        };
        // A network namespace may also be joined (a CNI plugin made it);
        // the IPC and UTS ones must be the container's own.
        let own = ns.create.contains(&kind)
            || (kind == NamespaceKind::Network && ns.join_path(kind).is_some());
        if !own {
            return Err(invalid(
                field,
                format!(
                    "belongs to the {kind} namespace, which the container shares with the host; \
                     add {{\"type\": \"{kind}\"}} to linux.namespaces or remove the sysctl"
                ),
            ));
        }
    }
    Ok(out)
}

/// The file under /proc/sys for `key` (`net.ipv4.ip_forward` ->
/// `net/ipv4/ip_forward`).
pub fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}
