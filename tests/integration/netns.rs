//! Network namespaces as test "hosts": [`NetNs`] (a named namespace under
//! `/run/netns` with `lo` up, deleted on drop), [`Veth`] (a link between two
//! of them with a private /30), and ways to run a program, a closure or
//! CRIU itself inside one.
//!
//! Names, interface names and addresses are unique per test process and
//! per call, so tests can run in parallel threads. Everything is undone by
//! `Drop`, also when a test panics. Namespaces are entered with `setns` on
//! `/run/netns/NAME` (never `ip netns exec`, which also creates a new mount
//! namespace, so CRIU and its target would see different mounts).

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

/// Runs `ip ARGS` and panics with its error output if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
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
    pub fn new(tag: &str) -> Self {
        let name = format!("cm-{}-{}-{tag}", std::process::id(), next_id());
        {
            let _turn = IP_NETNS.lock().unwrap_or_else(|e| e.into_inner());
            ip(&["netns", "add", &name]);
        }
        let ns = Self { name };
        // CRIU's kernel probing fails in a namespace whose lo is down.
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Its name for `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn open(&self) -> File {
        File::open(self.path()).expect("netns file opens")
    }

    /// A command that runs `program` inside this namespace (setns between
    /// fork and exec; nothing else changes).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let ns = self.open();
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the child between fork and exec; setns
        // is a plain system call (async-signal-safe) and the descriptor was
        // opened before the fork and is moved into the closure, so nothing
        // is allocated or locked here.
        unsafe {
            cmd.pre_exec(move || {
                setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace (the network
    /// namespace is per thread, so the caller's thread is unaffected).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.open();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
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
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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

/// A veth pair between two namespaces, `A` end `10.P.Q.(R+1)/30`, `B` end
/// `.(R+2)/30`, both up. Dropping it deletes the pair (deleting either
/// namespace would too).
#[derive(Debug)]
pub struct Veth {
    a_ns: String,
    a_dev: String,
    /// Address of the `a` end.
    pub a_addr: String,
    /// Address of the `b` end.
    pub b_addr: String,
}

impl Veth {
    /// Links `a` and `b`.
    pub fn new(a: &NetNs, b: &NetNs) -> Self {
        let id = next_id();
        let pid = std::process::id();
        // IFNAMSIZ: at most 15 characters.
        let a_dev = format!("cm{pid}x{id}a");
        let b_dev = format!("cm{pid}x{id}b");
        let block = id % 16384 * 4;
        let prefix = format!("10.{}.{}", 100 + pid % 100, block / 256);
        let a_addr = format!("{prefix}.{}", block % 256 + 1);
        let b_addr = format!("{prefix}.{}", block % 256 + 2);
        ip(&[
            "link",
            "add",
            &a_dev,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_dev,
            "netns",
            b.name(),
        ]);
        let veth = Self {
            a_ns: a.name().to_owned(),
            a_dev,
            a_addr,
            b_addr,
        };
        for (ns, dev, addr) in [
            (a.name(), &veth.a_dev, &veth.a_addr),
            (b.name(), &b_dev, &veth.b_addr),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.a_ns, "link", "del", &self.a_dev])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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
    pub fn new(tag: &str) -> Self {
        let src = NetNs::new(&format!("{tag}-src"));
        let dst = NetNs::new(&format!("{tag}-dst"));
        let veth = Veth::new(&src, &dst);
        Self { veth, src, dst }
    }
}

#[test]
fn veth_joins_two_namespaces_and_cleanup_removes_them() {
    if testkit::real_criu("veth_joins_two_namespaces_and_cleanup_removes_them").is_none() {
        return;
    }
    let hosts = TwoHosts::new("veth");
    let path = hosts.src.path();
    // A listener in dst is reachable from src over the link, and only there.
    let listener = hosts
        .dst
        .run(|| std::net::TcpListener::bind((hosts.veth.b_addr.as_str(), 0)).expect("bind in dst"));
    let port = listener.local_addr().unwrap().port();
    let target = format!("{}:{port}", hosts.veth.b_addr);
    let from_src = hosts
        .src
        .run(|| std::net::TcpStream::connect(target.as_str()).map(|_| ()));
    from_src.expect("src reaches dst over the veth");
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip().to_string(), hosts.veth.a_addr);

    // A program started in src sees the link's address and a running lo.
    let out = hosts
        .src
        .command("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}/30", hosts.veth.a_addr)),
        "{text}"
    );
    assert!(text.contains("127.0.0.1/8"), "lo is up: {text}");

    drop(hosts);
    assert!(!path.exists(), "{} left behind", path.display());
}
