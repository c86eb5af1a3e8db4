//! Network namespaces as test "hosts", over [`test_support::netns`]:
//! [`NetNs`] (a named namespace under `/run/netns` with `lo` up, deleted on
//! drop), [`Veth`] (a link between two of them with a private /30),
//! [`TwoHosts`], and ways to run a program, a closure or CRIU inside one.
//! The support crate returns errors; these wrappers make a failure a test
//! failure.
//!
//! Names, interface names and addresses are unique per test process and
//! per call, so tests can run in parallel threads. Everything is undone by
//! `Drop`, also when a test panics. Namespaces are entered with `setns` on
//! `/run/netns/NAME` (never `ip netns exec`, which also creates a new mount
//! namespace, so CRIU and its target would see different mounts).

use std::path::PathBuf;
use std::process::Command;

use criu_rpc::Criu;

/// Runs `ip ARGS` and panics with its error output if it fails.
pub fn ip(args: &[&str]) {
    test_support::netns::ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// A named network namespace (`/run/netns/NAME`) with `lo` up.
#[derive(Debug)]
pub struct NetNs(pub test_support::netns::NetNs);

impl NetNs {
    /// A new namespace named `cm-PID-N-TAG`.
    pub fn new(tag: &str) -> Self {
        Self(test_support::netns::NetNs::new(tag).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Its name for `ip -n`.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        self.0.path()
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.0.command(program).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `f` on a thread that has entered this namespace; a panic in
    /// `f` is the test's.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let mut out = None;
        let slot = &mut out;
        let ran = std::panic::AssertUnwindSafe(|| {
            self.0
                .run(move || {
                    *slot = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
                })
                .unwrap_or_else(|e| panic!("{e}"))
        });
        ran();
        match out {
            Some(Ok(v)) => v,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => panic!("the namespace thread did not run"),
        }
    }

    /// `criu` with every CRIU process it starts placed in this namespace.
    pub fn criu(&self, criu: &Criu) -> Criu {
        self.0.criu(criu)
    }
}

/// A veth pair between two namespaces.
#[derive(Debug)]
pub struct Veth {
    /// Address of the `a` end.
    pub a_addr: String,
    /// Address of the `b` end.
    pub b_addr: String,
    _link: test_support::netns::Veth,
}

impl Veth {
    /// Links `a` and `b`.
    pub fn new(a: &NetNs, b: &NetNs) -> Self {
        let link = test_support::netns::Veth::new(&a.0, &b.0).unwrap_or_else(|e| panic!("{e}"));
        Self {
            a_addr: link.a_addr.clone(),
            b_addr: link.b_addr.clone(),
            _link: link,
        }
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
