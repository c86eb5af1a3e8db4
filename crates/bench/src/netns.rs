//! Two namespace "hosts" joined by a veth pair, as the migration tests
//! build them (`tests/integration/netns.rs`). Namespaces are entered with
//! `setns` (never `ip netns exec`, which also makes a new mount namespace,
//! so CRIU and its target would disagree); everything is deleted on drop.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why a namespace host could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `ip` or `tc` failed.
    #[error("`{command}` failed: {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// Its error output.
        stderr: String,
    },
    /// `ip` or `tc` could not run at all.
    #[error("cannot run `{command}`; install iproute2 (scripts/setup.sh does)")]
    Missing {
        /// The command line.
        command: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The namespace file could not be opened or entered.
    #[error("cannot enter network namespace {path}")]
    Enter {
        /// `/run/netns/NAME`.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `program ARGS` (ip, tc) and fails with its error output.
pub fn tool(program: &str, args: &[&str]) -> Result<(), NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Missing {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Tool {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A named network namespace with `lo` up; deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// `cmb-PID-N-TAG`.
    pub fn new(tag: &str) -> Result<Self, NetError> {
        let name = format!(
            "cmb-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        tool("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        // CRIU's kernel probing fails in a namespace whose lo is down.
        tool("ip", &["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name for `ip -n` and `tc -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn open(&self) -> Result<File, NetError> {
        File::open(self.path()).map_err(|source| NetError::Enter {
            path: self.path(),
            source,
        })
    }

    /// A command that runs `program` inside this namespace (setns between
    /// fork and exec; nothing else changes).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, NetError> {
        let ns = self.open()?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the child between fork and exec; setns
        // is a plain system call (async-signal-safe) on a descriptor opened
        // before the fork and moved into the closure, so nothing is
        // allocated or locked there.
        unsafe {
            cmd.pre_exec(move || {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }

    /// Spawns a thread that enters this namespace and runs `f` (the network
    /// namespace is per thread; the caller's thread is unaffected).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, NetError>>, NetError> {
        let ns = self.open()?;
        let path = self.path();
        Ok(std::thread::spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Enter {
                path,
                source: e.into(),
            })?;
            Ok(f())
        }))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = tool("ip", &["netns", "del", &self.name]);
    }
}

/// Two hosts, `src` (address `src_addr` on `src_dev`) and `dst`
/// (`dst_addr`), joined by a veth pair with a private /30. Dropping it
/// deletes the link, then the namespaces.
#[derive(Debug)]
pub struct TwoHosts {
    /// The source end's interface, in `src`.
    pub src_dev: String,
    /// The source's address.
    pub src_addr: String,
    /// The destination's address.
    pub dst_addr: String,
    /// The source host.
    pub src: NetNs,
    /// The destination host.
    pub dst: NetNs,
}

impl TwoHosts {
    /// New namespaces and the link between them.
    pub fn new(tag: &str) -> Result<Self, NetError> {
        let src = NetNs::new(&format!("{tag}-s"))?;
        let dst = NetNs::new(&format!("{tag}-d"))?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // IFNAMSIZ: at most 15 characters.
        let src_dev = format!("cb{}x{id}a", pid % 100_000);
        let dst_dev = format!("cb{}x{id}b", pid % 100_000);
        let block = id % 16384 * 4;
        let prefix = format!("10.{}.{}", 200 + pid % 50, block / 256);
        let hosts = Self {
            src_addr: format!("{prefix}.{}", block % 256 + 1),
            dst_addr: format!("{prefix}.{}", block % 256 + 2),
            src_dev,
            src,
            dst,
        };
        tool(
            "ip",
            &[
                "link",
                "add",
                &hosts.src_dev,
                "netns",
                hosts.src.name(),
                "type",
                "veth",
                "peer",
                "name",
                &dst_dev,
                "netns",
                hosts.dst.name(),
            ],
        )?;
        for (ns, dev, addr) in [
            (hosts.src.name(), hosts.src_dev.as_str(), &hosts.src_addr),
            (hosts.dst.name(), dst_dev.as_str(), &hosts.dst_addr),
        ] {
            tool(
                "ip",
                &["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev],
            )?;
            tool("ip", &["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(hosts)
    }

    /// Limits the source's sending rate with a token bucket
    /// (`tc qdisc add dev SRC root tbf rate RATE burst 256kb latency 50ms`).
    pub fn shape(&self, rate: &str) -> Result<(), NetError> {
        tool(
            "tc",
            &[
                "-n",
                self.src.name(),
                "qdisc",
                "add",
                "dev",
                &self.src_dev,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "256kb",
                "latency",
                "50ms",
            ],
        )
    }

    /// Removes the shaping again.
    pub fn unshape(&self) -> Result<(), NetError> {
        tool(
            "tc",
            &[
                "-n",
                self.src.name(),
                "qdisc",
                "del",
                "dev",
                &self.src_dev,
                "root",
            ],
        )
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        let _ = tool("ip", &["-n", self.src.name(), "link", "del", &self.src_dev]);
    }
}
