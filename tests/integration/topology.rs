//! A three-party network built from namespaces, for networked containers
//! and (later) their migration:
//!
//! ```text
//!               switch (netns, bridge sw0)
//!              /            |            \
//!   host A (netns)     host B (netns)     client (netns, SUBNET.250)
//!   bridge cni0        bridge cni0
//!   CNI config dir A   CNI config dir B
//!   IPAM dir A         IPAM dir B
//! ```
//!
//! Both hosts have a network of the same name on one subnet
//! (`SUBNET.0/24`); host-local hands out A's range (.10-.99) first on A and
//! B's (.100-.199) first on B, and accepts a requested address from either,
//! so an address can move between them. The bridge plugin reuses each
//! host's `cni0`, which is plugged into the switch. Nothing has an address
//! on the hosts themselves: containers and the client talk over the
//! switch.
//!
//! crabmigrate runs inside a host's namespace ([`Host::command`]), with
//! that host's `--cni-config-dir` and its own state root. Names and
//! subnets are unique per test process and call; everything is removed on
//! drop, containers first (their CNI DEL runs in their host), also when a
//! test panics.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use testkit::Runtime;

use crate::netns::{ip, NetNs};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One host: a namespace with a bridge on the switch, a CNI setup and a
/// state root. Fields drop in order: containers (state root) first.
#[derive(Debug)]
pub struct Host {
    /// The host's state root (`--root`); dropping it force-deletes its
    /// containers.
    pub rt: Runtime,
    /// The host's network namespace.
    pub ns: NetNs,
    /// `--cni-config-dir`, and `ipam/` beside it for host-local.
    pub cni: tempfile::TempDir,
    /// The network's name (the same on every host of the topology).
    pub network: String,
}

impl Host {
    /// The CNI configuration directory.
    pub fn config_dir(&self) -> PathBuf {
        self.cni.path().join("net.d")
    }

    /// host-local's lease directory for the network.
    pub fn leases(&self) -> PathBuf {
        self.cni.path().join("ipam").join(&self.network)
    }

    /// The addresses host-local has leased here.
    pub fn leased(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.leases())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// `crabmigrate --root ROOT --cni-config-dir DIR ARGS` inside the host
    /// (stdin from /dev/null).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.ns.command(testkit::program("crabmigrate"));
        cmd.arg("--root")
            .arg(self.rt.root.path())
            .arg("--cni-config-dir")
            .arg(self.config_dir())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs [`Host::command`] to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("crabmigrate runs")
    }

    /// Writes another configuration list into the host's directory.
    pub fn write_config(&self, file: &str, config: &serde_json::Value) {
        std::fs::write(
            self.config_dir().join(file),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }
}

/// The client: a namespace on the switch with one address.
#[derive(Debug)]
pub struct Client {
    pub ns: NetNs,
    pub addr: String,
}

/// The whole topology. Fields drop in order: hosts (their containers),
/// the client, then the switch.
#[derive(Debug)]
pub struct Topology {
    pub a: Host,
    pub b: Host,
    pub client: Client,
    pub switch: NetNs,
    /// The first three octets of the subnet (`10.X.Y`).
    pub subnet: String,
}

/// Plugs a new veth from `ns` (named `dev`, up, enslaved to `master` if
/// given) into the switch's bridge.
fn plug(switch: &NetNs, ns: &NetNs, dev: &str, master: Option<&str>) {
    let peer = format!("{dev}s");
    ip(&[
        "link",
        "add",
        dev,
        "netns",
        ns.name(),
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        switch.name(),
    ]);
    ip(&["-n", switch.name(), "link", "set", &peer, "master", "sw0"]);
    ip(&["-n", switch.name(), "link", "set", &peer, "up"]);
    if let Some(m) = master {
        ip(&["-n", ns.name(), "link", "set", dev, "master", m]);
    }
    ip(&["-n", ns.name(), "link", "set", dev, "up"]);
}

impl Topology {
    /// A new topology; `tag` goes into the namespaces' names.
    pub fn new(tag: &str) -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = format!("10.{}.{}", 150 + pid % 50, id % 250);
        let network = format!("cmnet{pid}x{id}");
        let switch = NetNs::new(&format!("{tag}-sw"));
        ip(&["-n", switch.name(), "link", "add", "sw0", "type", "bridge"]);
        ip(&["-n", switch.name(), "link", "set", "sw0", "up"]);
        let host = |name: &str, ranges: [(u8, u8); 2]| {
            let ns = NetNs::new(&format!("{tag}-{name}"));
            ip(&["-n", ns.name(), "link", "add", "cni0", "type", "bridge"]);
            ip(&["-n", ns.name(), "link", "set", "cni0", "up"]);
            plug(&switch, &ns, &format!("cm{pid}x{id}{name}"), Some("cni0"));
            let cni = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(cni.path().join("net.d")).unwrap();
            let host = Host {
                rt: Runtime::new(),
                ns,
                cni,
                network: network.clone(),
            };
            let range = |(start, end): (u8, u8)| {
                serde_json::json!({
                    "subnet": format!("{subnet}.0/24"),
                    "rangeStart": format!("{subnet}.{start}"),
                    "rangeEnd": format!("{subnet}.{end}"),
                })
            };
            host.write_config(
                "10-test.conflist",
                &serde_json::json!({
                    "cniVersion": "1.0.0",
                    "name": network,
                    "plugins": [{
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": false,
                        "ipMasq": false,
                        "capabilities": {"ips": true, "mac": true},
                        "ipam": {
                            "type": "host-local",
                            "dataDir": host.cni.path().join("ipam"),
                            "ranges": [[range(ranges[0]), range(ranges[1])]]
                        }
                    }]
                }),
            );
            host
        };
        let a = host("a", [(10, 99), (100, 199)]);
        let b = host("b", [(100, 199), (10, 99)]);
        let client_ns = NetNs::new(&format!("{tag}-cl"));
        let dev = format!("cm{pid}x{id}c");
        plug(&switch, &client_ns, &dev, None);
        let addr = format!("{subnet}.250");
        ip(&[
            "-n",
            client_ns.name(),
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &dev,
        ]);
        Self {
            a,
            b,
            client: Client {
                ns: client_ns,
                addr,
            },
            switch,
            subnet,
        }
    }
}

/// The `network` object of `crabmigrate state` output.
pub fn network_of(state: &serde_json::Value) -> &serde_json::Value {
    &state["network"]
}

/// The container's first address without its prefix.
pub fn address_of(state: &serde_json::Value) -> String {
    let text = network_of(state)["addresses"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {state}"));
    text.split('/').next().unwrap_or_default().to_owned()
}
