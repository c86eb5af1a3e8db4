//! Container networking through CNI.
//!
//! A container with a network joins a persistent network namespace
//! (`/run/netns/crabmigrate-ID-*`) that CNI plugins attached to the
//! network (ADD). The result (interfaces, addresses, MAC, routes) is kept
//! as an [`Attachment`] in `state.json` and in every checkpoint
//! (`network.status`); DEL releases it when the container is deleted or
//! checkpointed.
//!
//! Building blocks, also for a migration destination:
//!
//! - [`Cni::find`]: does a network of this name exist (and its plugins,
//!   [`Cni::check_plugins`]);
//! - [`addresses_free`]: are these addresses free here, naming the holder;
//! - [`prepare`]: a new namespace attached with given addresses and MAC
//!   (CNI capabilities `ips`, `mac`), locked if asked — traffic to the
//!   addresses dropped before they exist;
//! - [`Prepared::unlock`] and [`Prepared::announce`] (gratuitous ARP,
//!   unsolicited neighbour advertisement) once the workload is back;
//! - [`release`]: DEL and the namespace removed;
//! - [`check`]: CNI CHECK of an attachment.
//!
//! Plugins create host-side devices in the network namespace crabmigrate
//! runs in; the attachment records that namespace, and DEL and CHECK run
//! the plugins there again.

mod announce;
mod cni;
mod config;
mod lock;
pub mod netns;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rscni_types::ipnet::IpNet;
use rscni_types::types::CNIResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use announce::{parse_mac, AnnounceError};
pub use cni::{ErrorCode, Op, PluginError, RuntimeConfig};
pub use config::{
    valid_name, Cni, ConfigError, NetworkConfig, DEFAULT_CONFIG_DIR, DEFAULT_PLUGIN_DIRS,
};
pub use lock::{LockError, CHAIN_IN, CHAIN_OUT};

use crate::state::StateRoot;

/// The interface a container gets (`CNI_IFNAME`).
pub const DEFAULT_IFNAME: &str = "eth0";
/// The file in a checkpoint's images directory holding the container's
/// network attachment (named as in Podman's checkpoint archives).
pub const NETWORK_STATUS: &str = "network.status";
/// The attachment record in a container's state directory, written right
/// after ADD so that `delete --force` can release the network even if
/// crabmigrate died before `state.json` was written.
pub const ATTACHMENT_FILE: &str = "network.json";

/// A container's network attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// `CNI_CONTAINERID` (the container's ID at ADD).
    pub container_id: String,
    /// The container's interface (`CNI_IFNAME`).
    pub ifname: String,
    /// The namespace file the container joins.
    pub netns: PathBuf,
    /// The CNI result of ADD, as the last plugin returned it.
    pub result: Value,
    /// Whether the network was released (DEL) since: after a checkpoint
    /// that stopped the container.
    #[serde(default)]
    pub released: bool,
    /// The configuration list ADD used; DEL and CHECK use it again (as
    /// libcni caches it), whatever the configuration directory says now.
    pub config: Value,
    /// The plugin directories ADD used.
    pub plugin_dirs: Vec<PathBuf>,
    /// The network namespace the plugins ran in (the host side of the
    /// network), when it has a path others can open.
    #[serde(default)]
    pub host_netns: Option<PathBuf>,
    /// That namespace's inode, to recognise it.
    #[serde(default)]
    pub host_netns_inode: Option<u64>,
}

/// What `state` shows of an attachment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkStatus {
    pub name: String,
    pub interface: String,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    pub netns: PathBuf,
    pub released: bool,
    /// The CNI result.
    pub result: Value,
}

impl Attachment {
    /// The CNI result, typed.
    pub fn parsed(&self) -> Option<CNIResult> {
        serde_json::from_value(self.result.clone()).ok()
    }

    /// The container's addresses with their prefix length.
    pub fn addresses(&self) -> Vec<IpNet> {
        self.parsed()
            .map(|r| r.ips.iter().map(|ip| ip.address).collect())
            .unwrap_or_default()
    }

    /// The container's addresses.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses().iter().map(IpNet::addr).collect()
    }

    /// The MAC of the container's interface (the one in its namespace).
    pub fn mac(&self) -> Option<String> {
        let result = self.parsed()?;
        result
            .interfaces
            .iter()
            .find(|i| i.name == self.ifname && i.sandbox.is_some())
            .or_else(|| result.interfaces.iter().find(|i| i.sandbox.is_some()))
            .map(|i| i.mac.clone())
            .filter(|m| !m.is_empty())
    }

    /// The view `state` prints.
    pub fn status(&self) -> NetworkStatus {
        NetworkStatus {
            name: self.network.clone(),
            interface: self.ifname.clone(),
            mac: self.mac(),
            addresses: self.addresses().iter().map(ToString::to_string).collect(),
            netns: self.netns.clone(),
            released: self.released,
            result: self.result.clone(),
        }
    }

    /// The configuration list recorded at ADD.
    fn recorded_config(&self) -> Result<NetworkConfig, ConfigError> {
        NetworkConfig::from_value(self.config.clone(), PathBuf::from("(recorded at ADD)"))
    }

    /// Where the plugins must run for this attachment: `None` for the
    /// caller's namespace.
    fn host_for_plugins(&self) -> Result<Option<&Path>, NetworkError> {
        let (Some(path), Some(ino)) = (&self.host_netns, self.host_netns_inode) else {
            return Ok(None);
        };
        if netns::current_inode() == Some(ino) {
            return Ok(None);
        }
        if netns::inode(path) == Some(ino) {
            return Ok(Some(path.as_path()));
        }
        Err(NetworkError::HostGone {
            network: self.network.clone(),
            host: path.clone(),
        })
    }

    /// Reads an attachment file (`network.status`, `network.json`).
    pub fn read(path: &Path) -> Result<Option<Self>, NetworkError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(NetworkError::Io {
                    what: "read",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| NetworkError::Corrupt {
                path: path.to_path_buf(),
                problem: e.to_string(),
            })
    }

    /// Writes it as `path` (through a temporary file).
    pub fn write(&self, path: &Path) -> Result<(), NetworkError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| NetworkError::Io {
                what: "write",
                path: path.to_path_buf(),
                source,
            })
    }
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(Box<PluginError>),
    #[error("cannot make the container's network namespace")]
    Netns(#[from] netns::NetnsError),
    #[error("cannot lock the container's network")]
    Lock(#[source] LockError),
    #[error("cannot unlock the container's network")]
    Unlock(#[source] LockError),
    #[error("cannot announce the container's addresses")]
    Announce(#[from] AnnounceError),
    #[error("address {address} of network {network} is taken by {holder}; release it there first (delete or checkpoint that container)")]
    Taken {
        address: IpAddr,
        network: String,
        holder: String,
    },
    #[error("network {network} gave the container {got} instead of the requested {wanted}; its IPAM plugin must support the \"ips\" capability (host-local and static do)")]
    NotAsRequested {
        network: String,
        wanted: String,
        got: String,
    },
    #[error("network {network} gave the container MAC {got} instead of {wanted}; a plugin of the list must declare the \"mac\" capability (bridge and tuning do)")]
    MacNotAsRequested {
        network: String,
        wanted: String,
        got: String,
    },
    #[error("network {network} was attached from the network namespace {host}, which is gone; its CNI plugins cannot undo it")]
    HostGone { network: String, host: PathBuf },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid network attachment: {problem}")]
    Corrupt { path: PathBuf, problem: String },
}

/// A network asked for by name (`--network NAME`) on a host's CNI setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    pub cni: Cni,
    pub name: String,
    /// Addresses and MAC to ask for (`--ip`, `--mac`); empty: the
    /// network's IPAM picks.
    pub addresses: AddressRequest,
}

impl NetworkRequest {
    /// The network's configuration, its plugins checked to be installed.
    pub fn resolve(&self) -> Result<NetworkConfig, NetworkError> {
        let config = self.cni.find(&self.name)?;
        self.cni.check_plugins(&config)?;
        Ok(config)
    }
}

impl From<PluginError> for NetworkError {
    fn from(e: PluginError) -> Self {
        Self::Plugin(Box::new(e))
    }
}

impl AddressRequest {
    /// Parses `--ip` values (`ADDR` or `ADDR/PREFIX`) and a `--mac`.
    pub fn parse(ips: &[String], mac: Option<&str>) -> Result<Self, RequestError> {
        let ips = ips
            .iter()
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| RequestError::Ip(text.clone()))
            })
            .collect::<Result<_, _>>()?;
        if let Some(m) = mac {
            let bytes = parse_mac(m).map_err(|_| RequestError::Mac(m.to_owned()))?;
            if bytes[0] & 1 == 1 {
                return Err(RequestError::Mac(m.to_owned()));
            }
        }
        Ok(Self {
            ips,
            mac: mac.map(str::to_ascii_lowercase),
        })
    }
}

/// Why `--ip` or `--mac` is refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("--ip {0:?} is not an address (e.g. 10.88.0.5 or 10.88.0.5/24)")]
    Ip(String),
    #[error("--mac {0:?} is not a unicast MAC address (e.g. 02:42:0a:58:00:05)")]
    Mac(String),
}

/// Addresses and MAC to ask the network for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressRequest {
    /// Addresses with their prefix (`10.88.0.5/24`): the CNI `ips`
    /// capability.
    pub ips: Vec<IpNet>,
    /// The MAC: the CNI `mac` capability.
    pub mac: Option<String>,
}

impl AddressRequest {
    /// The addresses and MAC an attachment had (to recreate it).
    pub fn same_as(attachment: &Attachment) -> Self {
        Self {
            ips: attachment.addresses(),
            mac: attachment.mac(),
        }
    }
}

/// A namespace attached to a network, not yet owned by a container.
/// Dropped without [`Prepared::keep`], it is released (DEL, namespace
/// removed).
#[derive(Debug)]
pub struct Prepared {
    attachment: Attachment,
    locked: Vec<IpAddr>,
    armed: bool,
}

/// Attaches a new namespace for `container_id` to network `config`, with
/// the requested addresses and MAC, locked first when `lock` is set (the
/// requested addresses dropped before any interface exists).
pub fn prepare(
    cni: &Cni,
    config: &NetworkConfig,
    container_id: &str,
    request: &AddressRequest,
    lock: bool,
) -> Result<Prepared, NetworkError> {
    cni.check_plugins(config)?;
    let path = netns::new_path(container_id);
    netns::create(&path)?;
    let host_netns = netns::current_path();
    let mut prepared = Prepared {
        attachment: Attachment {
            network: config.name.clone(),
            container_id: container_id.to_owned(),
            ifname: DEFAULT_IFNAME.to_owned(),
            netns: path.clone(),
            result: Value::Null,
            released: false,
            config: config.raw.clone(),
            plugin_dirs: cni.plugin_dirs.clone(),
            host_netns_inode: host_netns.as_deref().and_then(netns::inode),
            host_netns,
        },
        locked: Vec::new(),
        armed: true,
    };
    if lock && !request.ips.is_empty() {
        let ips: Vec<IpAddr> = request.ips.iter().map(IpNet::addr).collect();
        lock::lock(&path, &ips).map_err(NetworkError::Lock)?;
        prepared.locked = ips;
    }
    let runtime = RuntimeConfig {
        ips: request.ips.iter().map(ToString::to_string).collect(),
        mac: request.mac.clone(),
    };
    let result = cni::add(
        config,
        &cni::Invocation {
            container_id,
            netns: &path,
            ifname: DEFAULT_IFNAME,
            plugin_dirs: &cni.plugin_dirs,
            runtime_config: &runtime,
            host_netns: None,
        },
    )?;
    prepared.attachment.result = result;
    let got = prepared.attachment.addresses();
    for wanted in &request.ips {
        if !got.iter().any(|g| g.addr() == wanted.addr()) {
            return Err(NetworkError::NotAsRequested {
                network: config.name.clone(),
                wanted: wanted.to_string(),
                got: got
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    if let Some(wanted) = &request.mac {
        let got = prepared.attachment.mac().unwrap_or_default();
        if !got.eq_ignore_ascii_case(wanted) {
            return Err(NetworkError::MacNotAsRequested {
                network: config.name.clone(),
                wanted: wanted.clone(),
                got,
            });
        }
    }
    tracing::info!(network = %config.name, container = container_id, netns = %path.display(), addresses = ?got, locked = !prepared.locked.is_empty(), "attached a network namespace");
    Ok(prepared)
}

impl Prepared {
    /// The attachment (its result, namespace, ...).
    pub fn attachment(&self) -> &Attachment {
        &self.attachment
    }

    /// Whether traffic to its addresses is still dropped.
    pub fn is_locked(&self) -> bool {
        !self.locked.is_empty()
    }

    /// Lets traffic to the addresses through again.
    pub fn unlock(&mut self) -> Result<(), NetworkError> {
        if self.locked.is_empty() {
            return Ok(());
        }
        lock::unlock(&self.attachment.netns, &self.locked).map_err(NetworkError::Unlock)?;
        self.locked.clear();
        Ok(())
    }

    /// Announces the addresses on the link (gratuitous ARP, unsolicited
    /// neighbour advertisement).
    pub fn announce(&self) -> Result<(), NetworkError> {
        announce_attachment(&self.attachment)
    }

    /// Hands the attachment over (to a container's state): no longer
    /// released on drop.
    pub fn keep(mut self) -> Attachment {
        self.armed = false;
        std::mem::replace(
            &mut self.attachment,
            Attachment {
                network: String::new(),
                container_id: String::new(),
                ifname: String::new(),
                netns: PathBuf::new(),
                result: Value::Null,
                released: true,
                config: Value::Null,
                plugin_dirs: Vec::new(),
                host_netns: None,
                host_netns_inode: None,
            },
        )
    }

    /// Releases it now (DEL, namespace removed).
    pub fn release(mut self) -> Result<(), NetworkError> {
        self.armed = false;
        release(&self.attachment)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = release(&self.attachment) {
                tracing::warn!(network = %self.attachment.network, error = %e, "cannot release a prepared network");
            }
        }
    }
}

/// Announces an attachment's addresses from its namespace.
pub fn announce_attachment(attachment: &Attachment) -> Result<(), NetworkError> {
    let Some(mac) = attachment.mac() else {
        return Ok(());
    };
    announce::announce(
        &attachment.netns,
        &attachment.ifname,
        &mac,
        &attachment.ips(),
    )?;
    Ok(())
}

/// Releases an attachment: DEL through the recorded configuration (in the
/// recorded host namespace), then the namespace is removed. DEL runs even
/// if the namespace is gone (IPAM still releases the addresses).
pub fn release(attachment: &Attachment) -> Result<(), NetworkError> {
    let config = attachment.recorded_config()?;
    let host = attachment.host_for_plugins()?;
    let netns_path = if netns::exists(&attachment.netns) {
        attachment.netns.clone()
    } else {
        PathBuf::new()
    };
    let result = cni::del(
        &config,
        &cni::Invocation {
            container_id: &attachment.container_id,
            netns: &netns_path,
            ifname: &attachment.ifname,
            plugin_dirs: &attachment.plugin_dirs,
            runtime_config: &RuntimeConfig::default(),
            host_netns: host,
        },
        (!attachment.result.is_null()).then_some(&attachment.result),
    );
    netns::remove(&attachment.netns)?;
    result?;
    tracing::info!(network = %attachment.network, container = %attachment.container_id, "released a network attachment");
    Ok(())
}

/// CNI CHECK of an attachment: `Ok(false)` when the network disables
/// CHECK.
pub fn check(attachment: &Attachment) -> Result<bool, NetworkError> {
    let config = attachment.recorded_config()?;
    let host = attachment.host_for_plugins()?;
    Ok(cni::check(
        &config,
        &cni::Invocation {
            container_id: &attachment.container_id,
            netns: &attachment.netns,
            ifname: &attachment.ifname,
            plugin_dirs: &attachment.plugin_dirs,
            runtime_config: &RuntimeConfig::default(),
            host_netns: host,
        },
        &attachment.result,
    )?)
}

/// Checks that `addresses` of network `config` are free on this host:
/// held by no container of the state root (but `except`) and, for
/// host-local IPAM, by no lease. The error names the holder.
pub fn addresses_free(
    root: &StateRoot,
    config: &NetworkConfig,
    addresses: &[IpAddr],
    except: Option<&str>,
) -> Result<(), NetworkError> {
    let taken = |address: IpAddr, holder: String| NetworkError::Taken {
        address,
        network: config.name.clone(),
        holder,
    };
    for id in root.ids().unwrap_or_default() {
        if Some(id.as_str()) == except {
            continue;
        }
        let Ok(mut state) = root.load(&id) else {
            continue;
        };
        state.refresh();
        let Some(net) = state.network.as_ref().filter(|n| !n.released) else {
            continue;
        };
        if net.network != config.name {
            continue;
        }
        if let Some(a) = net.ips().into_iter().find(|a| addresses.contains(a)) {
            return Err(taken(a, format!("container {id} ({})", state.status)));
        }
    }
    if let Some(leases) = config.host_local_leases() {
        for address in addresses {
            let file = leases.join(address.to_string());
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let owner = text.lines().next().unwrap_or("").trim().to_owned();
            if Some(owner.as_str()) == except {
                continue;
            }
            return Err(taken(
                *address,
                format!(
                    "CNI container {owner:?} (host-local lease {})",
                    file.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Makes `spec` join the namespace at `netns` for its network: the
/// network entry of `linux.namespaces` gets that path (one is added if the
/// spec has none). A spec that already joins another network namespace is
/// refused.
pub fn join_in_spec(spec: &mut oci_spec::runtime::Spec, netns: &Path) -> Result<(), JoinError> {
    use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let list = linux.namespaces_mut().get_or_insert_with(Vec::new);
    match list
        .iter_mut()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
    {
        Some(entry) => match entry.path() {
            Some(p) if !p.as_os_str().is_empty() && p != netns => {
                return Err(JoinError::AlreadyJoins(p.clone()))
            }
            _ => {
                entry.set_path(Some(netns.to_path_buf()));
            }
        },
        None => {
            let mut entry = LinuxNamespace::default();
            entry.set_typ(LinuxNamespaceType::Network);
            entry.set_path(Some(netns.to_path_buf()));
            list.push(entry);
        }
    }
    Ok(())
}

/// Refuses a spec that joins a network namespace of its own (it cannot
/// also get a network).
pub fn check_spec(spec: &oci_spec::runtime::Spec) -> Result<(), JoinError> {
    let joined = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|list| {
            list.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        })
        .and_then(|n| n.path().clone())
        .filter(|p| !p.as_os_str().is_empty());
    match joined {
        Some(path) => Err(JoinError::AlreadyJoins(path)),
        None => Ok(()),
    }
}

/// Releases the network recorded in a container directory without a
/// state (crabmigrate died between ADD and writing `state.json`). Returns
/// whether there was one.
pub fn release_leftover(root: &StateRoot, id: &str) -> Result<bool, NetworkError> {
    let record = root.container_dir(id).join(ATTACHMENT_FILE);
    match Attachment::read(&record)? {
        Some(attachment) if !attachment.released => {
            release(&attachment)?;
            Ok(true)
        }
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// Why a spec cannot join a network's namespace.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the bundle's config.json joins the network namespace {0}, so the container cannot get a network of its own; remove that path or drop --network")]
    AlreadyJoins(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment() -> Attachment {
        Attachment {
            network: "net1".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            result: serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "br0", "mac": "aa:aa:aa:aa:aa:aa"},
                    {"name": "eth0", "mac": "02:42:0a:58:00:07", "sandbox": "/run/netns/x"}
                ],
                "ips": [{"interface": 1, "address": "10.88.7.7/24", "gateway": "10.88.7.1"}],
                "routes": [{"dst": "0.0.0.0/0"}]
            }),
            released: false,
            config: serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "plugins": [{"type": "bridge"}]}),
            plugin_dirs: vec![],
            host_netns: None,
            host_netns_inode: None,
        }
    }

    #[test]
    fn an_attachment_knows_its_addresses_and_mac() {
        let a = attachment();
        assert_eq!(a.ips(), vec!["10.88.7.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.mac().as_deref(), Some("02:42:0a:58:00:07"));
        let req = AddressRequest::same_as(&a);
        assert_eq!(req.ips[0].to_string(), "10.88.7.7/24");
        let status = a.status();
        assert_eq!(status.addresses, ["10.88.7.7/24"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(NETWORK_STATUS);
        assert!(Attachment::read(&file).unwrap().is_none());
        a.write(&file).unwrap();
        assert_eq!(Attachment::read(&file).unwrap(), Some(a));
        std::fs::write(&file, "{").unwrap();
        assert!(Attachment::read(&file).is_err());
    }

    #[test]
    fn the_spec_joins_the_namespace() {
        let mut spec = oci_spec::runtime::Spec::default();
        join_in_spec(&mut spec, Path::new("/run/netns/a")).unwrap();
        let ns = crate::spec::namespaces(&spec).unwrap();
        assert!(ns
            .join
            .iter()
            .any(|(k, p)| k.proc_name() == "net" && p == Path::new("/run/netns/a")));
        // Joining the same one again is fine, another is refused.
        join_in_spec(&mut spec, Path::new("/run/netns/a")).unwrap();
        assert!(check_spec(&spec).is_err());
        assert!(check_spec(&oci_spec::runtime::Spec::default()).is_ok());
        let err = join_in_spec(&mut spec, Path::new("/run/netns/b")).unwrap_err();
        assert!(err.to_string().contains("/run/netns/a"), "{err}");
    }

    #[test]
    fn taken_addresses_name_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path().join("root"));
        let leases = dir.path().join("ipam");
        let config = NetworkConfig::from_value(
            serde_json::json!({"cniVersion": "1.0.0", "name": "net1", "plugins": [
                {"type": "bridge", "ipam": {"type": "host-local", "dataDir": leases}}]}),
            "x".into(),
        )
        .unwrap();
        let ip: IpAddr = "10.88.7.7".parse().unwrap();
        addresses_free(&root, &config, &[ip], None).unwrap();
        std::fs::create_dir_all(leases.join("net1")).unwrap();
        std::fs::write(leases.join("net1/10.88.7.7"), "other\r\neth0").unwrap();
        let err = addresses_free(&root, &config, &[ip], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CNI container \"other\""), "{err}");
        addresses_free(&root, &config, &[ip], Some("other")).unwrap();
    }
}
