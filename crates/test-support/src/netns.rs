//! Network namespaces as test "hosts": [`NetNs`] (a named namespace under
//! `/run/netns` with `lo` up, deleted on drop), [`Veth`] (a link between two
//! of them with a private /30), [`TwoHosts`] (both, with a link that can be
//! shaped), and ways to run a program, a closure or CRIU inside one.
//!
//! Names, interface names and addresses are unique per process and per
//! call, so tests can run in parallel threads. Everything is undone by
//! `Drop`. Namespaces are entered with `setns` on `/run/netns/NAME` (never
//! `ip netns exec`, which also creates a new mount namespace, so CRIU and
//! its target would see different mounts).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use criu_rpc::{Criu, ExecLauncher, LaunchSpec, Launcher};
use nix::sched::{setns, CloneFlags};

/// Per-process counter behind every unique name and address.
static NEXT: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` creates and bind-mounts `/run/netns` on first use; two at
/// once could stack that mount, so they take turns.
static IP_NETNS: Mutex<()> = Mutex::new(());

fn next_id() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a namespace host could not be set up or entered.
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
        source: io::Error,
    },
    /// The namespace file could not be opened or entered.
    #[error("cannot enter network namespace {path}")]
    Enter {
        /// `/run/netns/NAME`.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The thread running a closure in the namespace panicked.
    #[error("the thread running in network namespace {0} panicked")]
    Panicked(PathBuf),
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

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    tool("ip", args)
}

/// A named network namespace (`/run/netns/NAME`) with `lo` up. Dropping
/// it runs `ip netns del`; the namespace itself lives on only while a
/// process is still inside it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new namespace named `cm-PID-N-TAG`.
    pub fn new(tag: &str) -> Result<Self, NetError> {
        let name = format!("cm-{}-{}-{tag}", std::process::id(), next_id());
        {
            let _turn = IP_NETNS.lock().unwrap_or_else(|e| e.into_inner());
            ip(&["netns", "add", &name])?;
        }
        let ns = Self { name };
        // CRIU's kernel probing fails in a namespace whose lo is down.
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
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
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        Ok(cmd)
    }

    /// Runs `f` on a thread that has entered this namespace (the network
    /// namespace is per thread, so the caller's thread is unaffected) and
    /// waits for it.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetError> {
        let ns = self.open()?;
        let path = self.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Enter {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| Err(NetError::Panicked(self.path())))
        })
    }

    /// Spawns a thread that enters this namespace and runs `f`.
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

    /// `criu` with every CRIU process it starts (swrk, lazy-pages) placed in
    /// this namespace.
    pub fn criu(&self, criu: &Criu) -> Criu {
        criu.clone()
            .with_launcher(Arc::new(NetnsLauncher { netns: self.path() }))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _turn = IP_NETNS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Starts CRIU as [`ExecLauncher`] does, but through `nsenter --net=PATH`,
/// which enters the namespace and execs CRIU in the same process: the pid,
/// the passed descriptors and the parent-death signal all stay as the
/// launcher contract wants them.
#[derive(Debug)]
pub struct NetnsLauncher {
    netns: PathBuf,
}

impl Launcher for NetnsLauncher {
    fn launch(&self, spec: LaunchSpec<'_>) -> io::Result<Child> {
        let mut net = OsString::from("--net=");
        net.push(&self.netns);
        let mut args = vec![net, "--".into(), spec.program.as_os_str().to_owned()];
        args.extend(spec.args);
        ExecLauncher.launch(LaunchSpec {
            program: Path::new("nsenter"),
            args,
            fds: spec.fds,
            output: spec.output,
        })
    }
}

/// A veth pair between two namespaces, `a` end `10.P.Q.(R+1)/30`, `b` end
/// `.(R+2)/30`, both up. Dropping it deletes the pair (deleting either
/// namespace would too).
#[derive(Debug)]
pub struct Veth {
    a_ns: String,
    /// The `a` end's interface, in `a`.
    pub a_dev: String,
    /// Address of the `a` end.
    pub a_addr: String,
    /// Address of the `b` end.
    pub b_addr: String,
}

impl Veth {
    /// Links `a` and `b`.
    pub fn new(a: &NetNs, b: &NetNs) -> Result<Self, NetError> {
        let id = next_id();
        let pid = std::process::id();
        // IFNAMSIZ: at most 15 characters.
        let a_dev = format!("cm{}x{id}a", pid % 100_000);
        let b_dev = format!("cm{}x{id}b", pid % 100_000);
        let block = id % 16384 * 4;
        let prefix = format!("10.{}.{}", 100 + pid % 100, block / 256);
        let veth = Self {
            a_ns: a.name().to_owned(),
            a_addr: format!("{prefix}.{}", block % 256 + 1),
            b_addr: format!("{prefix}.{}", block % 256 + 2),
            a_dev,
        };
        ip(&[
            "link",
            "add",
            &veth.a_dev,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_dev,
            "netns",
            b.name(),
        ])?;
        for (ns, dev, addr) in [
            (a.name(), &veth.a_dev, &veth.a_addr),
            (b.name(), &b_dev, &veth.b_addr),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["-n", &self.a_ns, "link", "del", &self.a_dev]);
    }
}

/// Two "hosts" joined by a veth: `src` (address `veth.a_addr`) and `dst`
/// (`veth.b_addr`). Fields drop in order: the link, then the namespaces.
#[derive(Debug)]
pub struct TwoHosts {
    pub veth: Veth,
    pub src: NetNs,
    pub dst: NetNs,
}

impl TwoHosts {
    /// New namespaces `TAG-src` and `TAG-dst` and the link between them.
    pub fn new(tag: &str) -> Result<Self, NetError> {
        let src = NetNs::new(&format!("{tag}-src"))?;
        let dst = NetNs::new(&format!("{tag}-dst"))?;
        let veth = Veth::new(&src, &dst)?;
        Ok(Self { veth, src, dst })
    }

    /// Limits the source's sending rate with a token bucket
    /// (`tc qdisc add dev SRC root tbf rate RATE burst 256kb latency 50ms`).
    pub fn shape(&self, rate: &str) -> Result<(), NetError> {
        let dev = &self.veth.a_dev;
        tool(
            "tc",
            &[
                "-n",
                self.src.name(),
                "qdisc",
                "add",
                "dev",
                dev,
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
        let dev = &self.veth.a_dev;
        tool(
            "tc",
            &["-n", self.src.name(), "qdisc", "del", "dev", dev, "root"],
        )
    }
}
