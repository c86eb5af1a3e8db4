//! `crabmigrate check`: what this host can do, and why not.
//!
//! Every fact comes from the source that decides it: CRIU's version from the
//! VERSION request, its features from its FEATURE_CHECK answer, kernel
//! support from `criu check`, host settings from /proc. The verdicts combine
//! them; each "no" says why and how to fix it.

use std::path::PathBuf;
use std::process::Command;

use criu_rpc::{feature, Criu, CriuSource, CriuVersion, Features, ProbeResult};
use serde::Serialize;

use crate::host::{self, CgroupLayout, Privilege};
use crate::sockets::{self, NetworkLockChoice};

/// The first CRIU that dumps TCP and UDP sockets on Linux 6.16 and newer.
pub const SOCKETS_CRIU: CriuVersion = CriuVersion::new(4, 2, 0);

/// The whole report, as printed by `crabmigrate check [--json]`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The CRIU executable and its version.
    pub criu: CriuFacts,
    /// CRIU's FEATURE_CHECK answer (absent when CRIU could not be asked).
    pub features: Option<Features>,
    /// Kernel support, as `criu check` sees it.
    pub kernel: KernelFacts,
    /// Host settings that CRIU depends on.
    pub host: HostFacts,
    /// Whether a process holding sockets really dumps.
    pub sockets: SocketFacts,
    /// What works here.
    pub verdicts: Verdicts,
}

/// The CRIU executable.
#[derive(Debug, Clone, Serialize)]
pub struct CriuFacts {
    /// Its path.
    pub path: PathBuf,
    /// Where it was found.
    pub found_by: CriuSource,
    /// Its version from the VERSION request, e.g. "4.1.1".
    pub version: Option<String>,
    /// The same as one number (40101).
    pub version_number: Option<u32>,
    /// Whether crabmigrate supports this version (4.0 or newer).
    pub supported: bool,
    /// Why CRIU could not be asked, when it could not.
    pub error: Option<String>,
}

/// Kernel support through `criu check`.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// `criu check`.
    pub criu_check: Option<Probe>,
    /// `criu check --feature mem_dirty_track` (soft-dirty bits).
    pub mem_dirty_track: Option<Probe>,
    /// `criu check --feature uffd`.
    pub uffd: Option<Probe>,
    /// `criu check --feature uffd-noncoop`.
    pub uffd_noncoop: Option<Probe>,
}

/// One `criu check` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// CRIU said yes.
    pub ok: bool,
    /// Its most telling line.
    pub detail: Option<String>,
}

impl From<ProbeResult> for Probe {
    fn from(result: ProbeResult) -> Self {
        Self {
            ok: result.ok,
            detail: result.reason().map(str::to_owned),
        }
    }
}

/// Host settings.
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    /// `fs.pipe-max-size` in bytes.
    pub pipe_max_size: Option<u64>,
    /// `iptables-restore`, CRIU's default network lock.
    pub iptables_restore: Option<PathBuf>,
    /// Which cgroup hierarchies are mounted.
    pub cgroup_layout: CgroupLayout,
    /// Who we run as.
    pub privilege: Privilege,
}

/// The socket probe: a throwaway process holding a TCP listener, an
/// established loopback connection and a UDP socket, dumped for real with
/// tcp-established (see [`crate::sockets`]).
#[derive(Debug, Clone, Serialize)]
pub struct SocketFacts {
    /// The probe's outcome; absent when it could not run (CRIU does not
    /// answer, or no privilege).
    pub probe: Option<Probe>,
    /// The network lock CRIU uses for established connections and network
    /// namespaces, chosen here.
    pub network_lock: NetworkLockChoice,
}

/// What works on this host.
#[derive(Debug, Clone, Serialize)]
pub struct Verdicts {
    /// Checkpoint and restore of a process tree or container.
    pub checkpoint_restore: Verdict,
    /// Checkpoint and restore of processes holding TCP or UDP sockets
    /// (servers, clients, established connections).
    pub sockets: Verdict,
    /// CRIU's pre-dump (memory copied while the tree runs, through the
    /// kernel's soft-dirty tracking). Named `pre_dump` in JSON, as `check`
    /// prints it: live migration's pre-copy does not need it
    /// (content-hashed rounds).
    #[serde(rename = "pre_dump")]
    pub pre_copy: Verdict,
    /// Post-copy: restore first, pages on demand (lazy pages).
    pub post_copy: Verdict,
    /// Streaming pages to a page server on another host.
    pub page_server: Verdict,
}

/// One capability: available, or why not and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether it works here.
    pub available: bool,
    /// What does not work even though it is available (e.g. checkpoint and
    /// restore work, but not for processes holding sockets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limitation: Option<String>,
    /// Why not.
    pub reason: Option<String>,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Verdict {
    fn yes() -> Self {
        Self {
            available: true,
            limitation: None,
            reason: None,
            fix: None,
        }
    }

    fn no(reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            available: false,
            limitation: None,
            reason: Some(reason.into()),
            fix: Some(fix.into()),
        }
    }

    /// `self` if it holds, otherwise the first failed prerequisite.
    fn requires(self, prerequisite: &Verdict) -> Self {
        if prerequisite.available {
            self
        } else {
            Self {
                available: false,
                limitation: None,
                reason: Some(format!(
                    "checkpoint/restore does not work: {}",
                    prerequisite.reason.as_deref().unwrap_or("unknown")
                )),
                fix: prerequisite.fix.clone(),
            }
        }
    }
}

const SETUP: &str = "run scripts/setup.sh as root";

/// Gathers every fact and judges. CRIU is asked concurrently (each CRIU
/// start re-reads kernel facts, so the probes run side by side).
/// `socket_holder` starts a process that runs [`sockets::hold_sockets`]
/// (the binary re-executes itself); the socket probe dumps it.
pub fn run(criu: &Criu, socket_holder: Command) -> CheckReport {
    let privileged = {
        let p = host::privilege();
        p.root || p.cap_checkpoint_restore
    };
    let network_lock = sockets::choose_network_lock(criu);
    let lock = network_lock.method;
    let (session, criu_check, dirty, uffd, noncoop, socket_probe) = std::thread::scope(|s| {
        let socket_probe = s.spawn(move || {
            privileged.then(|| match sockets::probe(criu, socket_holder, lock) {
                Ok(()) => Probe {
                    ok: true,
                    detail: Some(
                        "dumped a TCP listener, an established connection and a UDP socket".into(),
                    ),
                },
                Err(e) => Probe {
                    ok: false,
                    detail: Some(match e.criu_words() {
                        Some(words) => format!("{e}: {words}"),
                        None => error_chain(&e),
                    }),
                },
            })
        });
        let session = s.spawn(|| ask_criu(criu));
        let probe =
            |name: &'static str| s.spawn(move || criu.check_feature(name).ok().map(Probe::from));
        let dirty = probe(feature::MEM_DIRTY_TRACK);
        let uffd = probe(feature::UFFD);
        let noncoop = probe(feature::UFFD_NONCOOP);
        let check = criu.check_kernel().ok().map(Probe::from);
        (
            session
                .join()
                .unwrap_or_else(|_| Err("probe thread panicked".into())),
            check,
            dirty.join().ok().flatten(),
            uffd.join().ok().flatten(),
            noncoop.join().ok().flatten(),
            socket_probe.join().ok().flatten(),
        )
    });
    let (version, features, error) = match session {
        Ok((version, features)) => (Some(version), Some(features), None),
        Err(e) => (None, None, Some(e)),
    };
    let facts = CriuFacts {
        path: criu.binary().path().to_path_buf(),
        found_by: criu.binary().source(),
        supported: version.as_ref().is_some_and(|v| v.is_supported()),
        version_number: version.as_ref().map(|v| v.as_number()),
        version: version.map(|v| v.to_string()),
        error,
    };
    let kernel = KernelFacts {
        release: host::kernel_release(),
        criu_check,
        mem_dirty_track: dirty,
        uffd,
        uffd_noncoop: noncoop,
    };
    let host = HostFacts {
        pipe_max_size: host::pipe_max_size(),
        iptables_restore: host::find_tool("iptables-restore"),
        cgroup_layout: host::cgroup_layout(),
        privilege: host::privilege(),
    };
    let sockets = SocketFacts {
        probe: socket_probe,
        network_lock,
    };
    let verdicts = judge(&facts, features.as_ref(), &kernel, &host, &sockets);
    CheckReport {
        criu: facts,
        features,
        kernel,
        host,
        sockets,
        verdicts,
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// VERSION and FEATURE_CHECK on one swrk. The error text is the whole chain.
fn ask_criu(criu: &Criu) -> Result<(criu_rpc::CriuVersion, Features), String> {
    let chain = |e: &dyn std::error::Error| error_chain(e);
    let mut session = criu.session().map_err(|e| chain(&e))?;
    let version = session.version().map_err(|e| chain(&e))?;
    let features = session
        .feature_check(Features::ALL)
        .map_err(|e| chain(&e))?;
    Ok((version, features))
}

fn judge(
    criu: &CriuFacts,
    features: Option<&Features>,
    kernel: &KernelFacts,
    host: &HostFacts,
    sockets: &SocketFacts,
) -> Verdicts {
    // Privilege first: without it CRIU refuses to start at all, and its
    // refusal must not read as a missing CRIU.
    let checkpoint_restore = if !host.privilege.root && !host.privilege.cap_checkpoint_restore {
        Verdict::no(
            "not running as root and without CAP_CHECKPOINT_RESTORE",
            "run crabmigrate as root (sudo crabmigrate check)",
        )
    } else if let Some(error) = &criu.error {
        Verdict::no(
            format!("CRIU at {} does not answer: {error}", criu.path.display()),
            format!("{SETUP} to install CRIU 4.2, or pass --criu PATH"),
        )
    } else if !criu.supported {
        Verdict::no(
            format!(
                "CRIU {} at {} is too old; crabmigrate needs 4.0 or newer",
                criu.version.as_deref().unwrap_or("?"),
                criu.path.display()
            ),
            format!("{SETUP} to install CRIU 4.2 into a private prefix, or pass --criu PATH"),
        )
    } else if let Some(probe) = kernel.criu_check.as_ref().filter(|p| !p.ok) {
        Verdict::no(
            format!(
                "`criu check` fails: {}",
                probe.detail.as_deref().unwrap_or("no reason given")
            ),
            "use a kernel with CONFIG_CHECKPOINT_RESTORE and the options `criu check --all` lists",
        )
    } else if kernel.criu_check.is_none() {
        Verdict::no("`criu check` could not run", SETUP)
    } else {
        Verdict::yes()
    };

    let pre_copy = match (features, &kernel.mem_dirty_track) {
        (Some(f), Some(p)) if f.mem_track && p.ok => Verdict::yes(),
        (_, probe) => Verdict::no(
            format!(
                "the kernel has no dirty-page tracking (soft-dirty): {}",
                probe
                    .as_ref()
                    .and_then(|p| p.detail.as_deref())
                    .unwrap_or("CRIU reports mem_track unavailable")
            ),
            "boot a kernel built with CONFIG_MEM_SOFT_DIRTY=y for CRIU's pre-dump; `migrate --strategy pre-copy` works without it (content-hashed rounds)",
        ),
    }
    .requires(&checkpoint_restore);

    let uffd_ok = kernel.uffd.as_ref().is_some_and(|p| p.ok)
        && kernel.uffd_noncoop.as_ref().is_some_and(|p| p.ok);
    let pipe_ok = host.privilege.cap_sys_resource
        || host
            .pipe_max_size
            .is_some_and(|s| s >= host::LAZY_PAGES_PIPE_SIZE);
    let post_copy = if !(features.is_some_and(|f| f.lazy_pages) && uffd_ok) {
        Verdict::no(
            "the kernel lacks non-cooperative userfaultfd (CRIU reports lazy_pages unavailable)",
            "boot a kernel with CONFIG_USERFAULTFD=y and set vm.unprivileged_userfaultfd=1 if not root",
        )
    } else if !pipe_ok {
        Verdict::no(
            format!(
                "fs.pipe-max-size is {} bytes and CAP_SYS_RESOURCE is missing; CRIU's lazy-pages server needs {} bytes",
                host.pipe_max_size.map_or("unknown".into(), |s| s.to_string()),
                host::LAZY_PAGES_PIPE_SIZE
            ),
            format!(
                "{SETUP}, or: echo {} > /proc/sys/fs/pipe-max-size",
                host::RECOMMENDED_PIPE_MAX_SIZE
            ),
        )
    } else {
        Verdict::yes()
    }
    .requires(&checkpoint_restore);

    let page_server = Verdict::yes().requires(&checkpoint_restore);

    let sockets_verdict = judge_sockets(criu, sockets).requires(&checkpoint_restore);
    let mut checkpoint_restore = checkpoint_restore;
    if checkpoint_restore.available && !sockets_verdict.available {
        checkpoint_restore.limitation =
            Some("not for processes holding TCP or UDP sockets (see TCP/UDP sockets)".into());
    }

    Verdicts {
        checkpoint_restore,
        sockets: sockets_verdict,
        pre_copy,
        post_copy,
        page_server,
    }
}

fn judge_sockets(criu: &CriuFacts, sockets: &SocketFacts) -> Verdict {
    let too_old = criu
        .version_number
        .is_some_and(|n| n < SOCKETS_CRIU.as_number());
    let upgrade = format!(
        "CRIU {SOCKETS_CRIU} or newer is needed: {SETUP} (it installs CRIU 4.2 into /opt/crabmigrate/criu) or pass --criu PATH"
    );
    if sockets.network_lock.method.is_none() {
        return Verdict::no(
            format!(
                "CRIU has no way to lock the network: {}",
                sockets.network_lock.why
            ),
            "apt-get install iptables",
        );
    }
    match &sockets.probe {
        Some(p) if p.ok => Verdict::yes(),
        Some(p) => {
            let why = p.detail.clone().unwrap_or_else(|| "no reason given".into());
            if too_old {
                Verdict::no(
                    format!(
                        "CRIU {} is older than {SOCKETS_CRIU} ({why})",
                        criu.version.as_deref().unwrap_or("?")
                    ),
                    upgrade,
                )
            } else {
                Verdict::no(why, "read CRIU's words above; `criu check --all` lists what the kernel lacks")
            }
        }
        None if too_old => Verdict::no(
            format!(
                "CRIU {} is older than {SOCKETS_CRIU}, which cannot dump TCP or UDP sockets on Linux 6.16 and newer",
                criu.version.as_deref().unwrap_or("?")
            ),
            upgrade,
        ),
        None => Verdict::no("the socket probe could not run", "run crabmigrate check as root"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ok: bool, detail: &str) -> Option<Probe> {
        Some(Probe {
            ok,
            detail: Some(detail.into()),
        })
    }

    fn sockets_ok() -> SocketFacts {
        SocketFacts {
            probe: probe(true, "dumped"),
            network_lock: NetworkLockChoice {
                method: Some(criu_rpc::NetworkLock::Iptables),
                why: "iptables-restore is at /usr/sbin/iptables-restore".into(),
            },
        }
    }

    fn this_machine() -> (CriuFacts, Features, KernelFacts, HostFacts) {
        (
            CriuFacts {
                path: "/opt/crabmigrate/criu/bin/criu".into(),
                found_by: CriuSource::Prefix,
                version: Some("4.2.1".into()),
                version_number: Some(40201),
                supported: true,
                error: None,
            },
            Features {
                mem_track: false,
                lazy_pages: true,
                pidfd_store: true,
            },
            KernelFacts {
                release: "6.18".into(),
                criu_check: probe(true, "Looks good."),
                mem_dirty_track: probe(
                    false,
                    "Dirty tracking is OFF. Memory snapshot will not work.",
                ),
                uffd: probe(true, "uffd is supported"),
                uffd_noncoop: probe(true, "uffd-noncoop is supported"),
            },
            HostFacts {
                pipe_max_size: Some(4 << 20),
                iptables_restore: Some("/usr/sbin/iptables-restore".into()),
                cgroup_layout: CgroupLayout::Hybrid,
                privilege: Privilege {
                    root: true,
                    cap_sys_admin: true,
                    cap_checkpoint_restore: true,
                    cap_sys_resource: false,
                },
            },
        )
    }

    #[test]
    fn this_machine_has_checkpoint_and_post_copy_but_no_pre_copy() {
        let (criu, features, kernel, host) = this_machine();
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        assert!(v.checkpoint_restore.available && v.post_copy.available && v.page_server.available);
        assert!(!v.pre_copy.available);
        assert!(v
            .pre_copy
            .reason
            .as_deref()
            .unwrap()
            .contains("Dirty tracking is OFF"));
    }

    #[test]
    fn small_pipe_max_size_blocks_post_copy_with_the_fix() {
        let (criu, features, kernel, mut host) = this_machine();
        host.pipe_max_size = Some(1 << 20);
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        assert!(!v.post_copy.available);
        assert!(v
            .post_copy
            .fix
            .as_deref()
            .unwrap()
            .contains("pipe-max-size"));
        host.privilege.cap_sys_resource = true;
        assert!(
            judge(&criu, Some(&features), &kernel, &host, &sockets_ok())
                .post_copy
                .available
        );
    }

    #[test]
    fn old_criu_fails_everything_with_the_same_fix() {
        let (mut criu, features, kernel, host) = this_machine();
        criu.version = Some("3.17.1".into());
        criu.supported = false;
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        for verdict in [
            &v.checkpoint_restore,
            &v.pre_copy,
            &v.post_copy,
            &v.page_server,
        ] {
            assert!(!verdict.available);
            assert!(
                verdict.reason.as_deref().unwrap().contains("3.17.1 at"),
                "{verdict:?}"
            );
            assert!(verdict.fix.as_deref().unwrap().contains("scripts/setup.sh"));
        }
    }

    #[test]
    fn without_privilege_the_cause_is_privilege_not_a_missing_criu() {
        let (mut criu, features, kernel, mut host) = this_machine();
        // What a non-root check sees: CRIU refuses to start.
        criu.error = Some("CRIU exited with status 1 before answering".into());
        criu.version = None;
        criu.supported = false;
        host.privilege.root = false;
        host.privilege.cap_checkpoint_restore = false;
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        assert!(!v.checkpoint_restore.available);
        let reason = v.checkpoint_restore.reason.as_deref().unwrap();
        assert!(reason.contains("not running as root"), "{reason}");
        let fix = v.checkpoint_restore.fix.as_deref().unwrap();
        assert!(
            fix.contains("as root") && !fix.contains("setup.sh"),
            "{fix}"
        );
    }

    #[test]
    fn failing_criu_check_is_reported_with_its_words() {
        let (criu, features, mut kernel, host) = this_machine();
        kernel.criu_check = probe(false, "vdso: Unexpected rt vDSO area bounds");
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        assert!(!v.checkpoint_restore.available);
        assert!(v
            .checkpoint_restore
            .reason
            .as_deref()
            .unwrap()
            .contains("vDSO"));
    }

    #[test]
    fn sockets_work_with_a_passing_probe() {
        let (criu, features, kernel, host) = this_machine();
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        assert!(v.sockets.available);
        assert_eq!(v.checkpoint_restore.limitation, None);
    }

    #[test]
    fn criu_4_1_on_a_new_kernel_limits_checkpoint_and_names_the_upgrade() {
        let (mut criu, features, kernel, host) = this_machine();
        criu.version = Some("4.1.1".into());
        criu.version_number = Some(40101);
        let mut sockets = sockets_ok();
        sockets.probe = probe(
            false,
            "CRIU cannot dump a process holding TCP and UDP sockets: sockets: Can't get 1:16 opt: Operation not supported",
        );
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets);
        assert!(v.checkpoint_restore.available);
        assert!(v
            .checkpoint_restore
            .limitation
            .as_deref()
            .unwrap()
            .contains("TCP or UDP sockets"));
        assert!(!v.sockets.available);
        let reason = v.sockets.reason.as_deref().unwrap();
        assert!(reason.contains("4.1.1 is older than 4.2"), "{reason}");
        assert!(reason.contains("Can't get 1:16 opt"), "{reason}");
        assert!(v
            .sockets
            .fix
            .as_deref()
            .unwrap()
            .contains("scripts/setup.sh"));
    }

    #[test]
    fn a_failing_probe_on_a_new_criu_quotes_criu() {
        let (criu, features, kernel, host) = this_machine();
        let mut sockets = sockets_ok();
        sockets.probe = probe(false, "CRIU cannot dump: Locking network failed");
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets);
        assert!(!v.sockets.available);
        assert!(v
            .sockets
            .reason
            .as_deref()
            .unwrap()
            .contains("Locking network failed"));
    }

    #[test]
    fn no_network_lock_means_no_sockets() {
        let (criu, features, kernel, host) = this_machine();
        let mut sockets = sockets_ok();
        sockets.network_lock = NetworkLockChoice {
            method: None,
            why: "iptables-restore is missing".into(),
        };
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets);
        assert!(!v.sockets.available);
        assert!(v.sockets.fix.as_deref().unwrap().contains("iptables"));
    }

    #[test]
    fn sockets_need_checkpoint_restore_first() {
        let (criu, features, kernel, mut host) = this_machine();
        host.privilege.root = false;
        host.privilege.cap_checkpoint_restore = false;
        let v = judge(&criu, Some(&features), &kernel, &host, &sockets_ok());
        assert!(!v.sockets.available);
        assert!(v
            .sockets
            .reason
            .as_deref()
            .unwrap()
            .starts_with("checkpoint/restore does not work"));
    }
}
