//! Kernel probes that CRIU offers only on its command line:
//! `criu check` and `criu check --feature NAME`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MFdFlags};
use serde::Serialize;

use crate::client::Criu;
use crate::error::TransportError;
use crate::launcher::LaunchSpec;

/// Kernel features `criu check --feature` knows, among others.
pub mod feature {
    /// Soft-dirty bits: memory tracking for pre-copy.
    pub const MEM_DIRTY_TRACK: &str = "mem_dirty_track";
    /// userfaultfd: lazy pages.
    pub const UFFD: &str = "uffd";
    /// Non-cooperative userfaultfd: lazy pages for forking trees.
    pub const UFFD_NONCOOP: &str = "uffd-noncoop";
    /// Locking the network through nftables (libnftables) instead of
    /// iptables-restore.
    pub const NETWORK_LOCK_NFTABLES: &str = "network_lock_nftables";
}

/// The answer to one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    /// Whether CRIU said yes (exit status 0).
    pub ok: bool,
    /// What CRIU printed, warnings and errors included, one entry a line.
    pub output: Vec<String>,
}

impl ProbeResult {
    /// The most telling line: for a "no", the last error or warning; else
    /// the last line.
    pub fn reason(&self) -> Option<&str> {
        let complaint = |l: &&String| l.starts_with("Error") || l.starts_with("Warn");
        let telling = if self.ok {
            None
        } else {
            self.output.iter().rev().find(complaint)
        };
        telling.or(self.output.last()).map(|l| strip_location(l))
    }
}

/// `Warn  (criu/cr-check.c:824): Dirty ...` -> `Dirty ...`.
fn strip_location(line: &str) -> &str {
    match (
        line.find("): "),
        line.starts_with("Error") || line.starts_with("Warn"),
    ) {
        (Some(i), true) => &line[i + 3..],
        _ => line,
    }
}

/// Why a probe could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// CRIU could not be started, or did not finish in time.
    #[error("cannot run `criu {args}`")]
    Run {
        /// The arguments after `criu`.
        args: String,
        /// What went wrong.
        #[source]
        source: TransportError,
    },
}

/// How long one probe may take (CRIU's kernel checks take well under 1 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl Criu {
    /// `criu check`: whether this kernel can checkpoint and restore at all.
    pub fn check_kernel(&self) -> Result<ProbeResult, ProbeError> {
        self.run_probe(&["check"])
    }

    /// `criu check --feature NAME` (see [`feature`] for names).
    pub fn check_feature(&self, name: &str) -> Result<ProbeResult, ProbeError> {
        self.run_probe(&["check", "--feature", name])
    }

    fn run_probe(&self, args: &[&str]) -> Result<ProbeResult, ProbeError> {
        let wrap = |source| ProbeError::Run {
            args: args.join(" "),
            source,
        };
        let output = memfd_create(c"criu-probe", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| wrap(TransportError::Setup(e.into())))?;
        let mut output = File::from(output);
        let mut argv: Vec<std::ffi::OsString> = vec!["--no-default-config".into()];
        argv.extend(args.iter().map(Into::into));
        let mut child = self
            .launcher()
            .launch(LaunchSpec {
                program: self.binary().path(),
                args: argv,
                fds: Vec::new(),
                output: output.as_fd(),
            })
            .map_err(|source| {
                wrap(TransportError::Spawn {
                    program: self.binary().path().to_path_buf(),
                    source,
                })
            })?;
        let until = Instant::now() + PROBE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(wrap(TransportError::TimedOut {
                        timeout: PROBE_TIMEOUT,
                    }));
                }
                Err(e) => return Err(wrap(TransportError::Receive(e))),
            }
        };
        let mut text = String::new();
        let _ = output.seek(SeekFrom::Start(0));
        let _ = output.read_to_string(&mut text);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            // Printed on every run where CAP_SYS_RESOURCE is missing; harmless.
            .filter(|l| !l.contains("Can't setup RLIMIT_NOFILE"))
            .map(str::to_owned)
            .collect();
        Ok(ProbeResult {
            ok: status.success(),
            output: lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_prefers_the_last_warning_without_its_location() {
        let probe = ProbeResult {
            ok: false,
            output: vec![
                "Warn  (criu/kerndat.c:1285): Can't keep kdat cache on non-tempfs".into(),
                "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work."
                    .into(),
            ],
        };
        assert_eq!(
            probe.reason(),
            Some("Dirty tracking is OFF. Memory snapshot will not work.")
        );
        let plain = ProbeResult {
            ok: true,
            output: vec!["uffd is supported".into()],
        };
        assert_eq!(plain.reason(), Some("uffd is supported"));
    }
}
