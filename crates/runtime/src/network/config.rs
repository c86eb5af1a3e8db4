//! CNI network configuration lists: finding one by name in a configuration
//! directory, as libcni does, and the plugins it names.
//!
//! A directory holds `*.conflist` files (a list of plugins) and, for older
//! setups, `*.conf` / `*.json` files (one plugin, read as a list of one).
//! Files are read in name order; the first whose `name` matches wins.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rscni_types::types::NetConfList;
use serde_json::Value;

/// Where CNI configuration lists live unless `--cni-config-dir` says
/// otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/cni/net.d";
/// Where CNI plugins are looked for unless `--cni-plugin-dir` says otherwise:
/// Debian's containernetworking-plugins, then the upstream location.
pub const DEFAULT_PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];
/// The largest configuration file read.
const MAX_CONFIG: u64 = 1 << 20;
/// Where the host-local IPAM plugin keeps its leases unless `dataDir` says
/// otherwise.
pub const HOST_LOCAL_DATA_DIR: &str = "/var/lib/cni/networks";

/// Where a host's CNI configuration and plugins are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cni {
    /// The directory of configuration lists.
    pub config_dir: PathBuf,
    /// The directories searched for plugins, in order (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
}

impl Default for Cni {
    fn default() -> Self {
        Self {
            config_dir: DEFAULT_CONFIG_DIR.into(),
            plugin_dirs: DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// A network configuration list, found by name.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The network's name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The list's `cniVersion`.
    pub cni_version: String,
    /// `disableCheck`: CHECK must not be called.
    pub disable_check: bool,
    /// The list as read, every key kept (plugins get their part verbatim).
    pub raw: Value,
}

/// Why a network could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the network name {0:?} is not valid; use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    BadName(String),
    #[error(
        "cannot read the CNI configuration directory {dir}; create it or pass --cni-config-dir"
    )]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no CNI network named {name} in {dir} ({known}); add a configuration list with \"name\": \"{name}\" there or pass --cni-config-dir")]
    NotFound {
        name: String,
        dir: PathBuf,
        /// The networks that are there, and files skipped as unreadable.
        known: String,
    },
    #[error("{file} is not a valid CNI configuration: {problem}")]
    Invalid { file: PathBuf, problem: String },
    #[error("the CNI plugin {plugin:?} of network {network} is not in {dirs}; install it (Debian: containernetworking-plugins) or pass --cni-plugin-dir")]
    PluginMissing {
        network: String,
        plugin: String,
        dirs: String,
    },
}

impl Cni {
    /// The configuration list of network `name`.
    pub fn find(&self, name: &str) -> Result<NetworkConfig, ConfigError> {
        if !valid_name(name) {
            return Err(ConfigError::BadName(name.to_owned()));
        }
        let dir = &self.config_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
            dir: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        // Lists first, then single configurations, each in name order (as
        // libcni looks).
        files.sort_by_key(|p| (p.extension().is_none_or(|e| e != "conflist"), p.clone()));
        let mut names = Vec::new();
        let mut skipped = Vec::new();
        for file in files {
            match read(&file) {
                Ok(config) if config.name == name => return Ok(config),
                Ok(config) => names.push(config.name),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "skipping a CNI configuration");
                    skipped.push(file.file_name().map_or_else(
                        || file.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    ));
                }
            }
        }
        let mut known = if names.is_empty() {
            "it has none".to_owned()
        } else {
            format!("it has {}", names.join(", "))
        };
        if !skipped.is_empty() {
            known.push_str(&format!("; unreadable: {}", skipped.join(", ")));
        }
        Err(ConfigError::NotFound {
            name: name.to_owned(),
            dir: dir.clone(),
            known,
        })
    }

    /// Every network in the configuration directory, with the problem of
    /// each file that is not a valid configuration.
    pub fn list(&self) -> Result<Vec<Result<NetworkConfig, ConfigError>>, ConfigError> {
        let dir = &self.config_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
            dir: dir.clone(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        Ok(files.iter().map(|f| read(f)).collect())
    }

    /// The path of plugin `kind` (a plugin's `type`): the first of the
    /// plugin directories that has it.
    pub fn plugin(&self, network: &str, kind: &str) -> Result<PathBuf, ConfigError> {
        find_plugin(network, kind, &self.plugin_dirs)
    }

    /// Checks that every plugin of `config` (IPAM plugins included) is
    /// installed.
    pub fn check_plugins(&self, config: &NetworkConfig) -> Result<(), ConfigError> {
        for kind in config.plugin_types() {
            self.plugin(&config.name, &kind)?;
        }
        Ok(())
    }
}

/// The first executable file named `kind` in `dirs`.
pub(crate) fn find_plugin(
    network: &str,
    kind: &str,
    dirs: &[PathBuf],
) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let missing = || ConfigError::PluginMissing {
        network: network.to_owned(),
        plugin: kind.to_owned(),
        dirs: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    if !valid_plugin_type(kind) {
        return Err(missing());
    }
    dirs.iter()
        .map(|d| d.join(kind))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(missing)
}

impl NetworkConfig {
    /// The plugin objects, in order.
    pub fn plugins(&self) -> &[Value] {
        self.raw
            .get("plugins")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// Every plugin type the list runs: each plugin and its IPAM plugin.
    pub fn plugin_types(&self) -> Vec<String> {
        let mut out = Vec::new();
        for plugin in self.plugins() {
            for kind in [
                plugin.get("type"),
                plugin.get("ipam").and_then(|i| i.get("type")),
            ]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            {
                if !out.iter().any(|k| k == kind) {
                    out.push(kind.to_owned());
                }
            }
        }
        out
    }

    /// The runtime capabilities (`ips`, `mac`, `portMappings`, ...) some
    /// plugin of the list declares.
    pub fn capabilities(&self) -> BTreeSet<String> {
        self.plugins()
            .iter()
            .filter_map(|p| p.get("capabilities").and_then(Value::as_object))
            .flat_map(|caps| {
                caps.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
            })
            .collect()
    }

    /// Where host-local IPAM keeps this network's leases, if a plugin of the
    /// list uses host-local (`DATADIR/NAME`, one file per address holding the
    /// container ID).
    pub fn host_local_leases(&self) -> Option<PathBuf> {
        self.plugins().iter().find_map(|p| {
            let ipam = p.get("ipam")?;
            (ipam.get("type")?.as_str()? == "host-local").then(|| {
                ipam.get("dataDir")
                    .and_then(Value::as_str)
                    .map_or_else(|| PathBuf::from(HOST_LOCAL_DATA_DIR), PathBuf::from)
                    .join(&self.name)
            })
        })
    }

    /// A list read back from a JSON value (a configuration kept in state).
    pub fn from_value(raw: Value, file: PathBuf) -> Result<Self, ConfigError> {
        parse(raw, &file)
    }
}

/// Reads one configuration file: a list, or a single plugin configuration
/// turned into a list of one.
fn read(file: &Path) -> Result<NetworkConfig, ConfigError> {
    use std::io::Read;
    let invalid = |problem: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        problem,
    };
    let mut text = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_CONFIG).read_to_end(&mut text))
        .map_err(|e| invalid(format!("cannot read it: {e}")))?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let value = if value.get("plugins").is_none() && value.get("type").is_some() {
        single_to_list(value)
    } else {
        value
    };
    parse(value, file)
}

/// `{"cniVersion", "name", "type", ...}` as a list of one plugin.
fn single_to_list(single: Value) -> Value {
    let mut list = serde_json::Map::new();
    for key in ["cniVersion", "name"] {
        if let Some(v) = single.get(key) {
            list.insert(key.to_owned(), v.clone());
        }
    }
    list.insert("plugins".to_owned(), Value::Array(vec![single]));
    Value::Object(list)
}

fn parse(raw: Value, file: &Path) -> Result<NetworkConfig, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        problem,
    };
    let list: NetConfList =
        serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))?;
    if !valid_name(&list.name) {
        return Err(invalid(format!("the name {:?} is not valid", list.name)));
    }
    list.version()
        .map_err(|e| invalid(format!("cniVersion {:?}: {e:?}", list.cni_version)))?;
    if list.plugins.is_empty() {
        return Err(invalid("it lists no plugins".to_owned()));
    }
    for (i, plugin) in list.plugins.iter().enumerate() {
        if !valid_plugin_type(&plugin.r#type) {
            return Err(invalid(format!(
                "plugins[{i}].type {:?} is not a plugin name",
                plugin.r#type
            )));
        }
        if let Some(ipam) = &plugin.ipam {
            if !valid_plugin_type(&ipam.r#type) {
                return Err(invalid(format!(
                    "plugins[{i}].ipam.type {:?} is not a plugin name",
                    ipam.r#type
                )));
            }
        }
    }
    Ok(NetworkConfig {
        name: list.name,
        file: file.to_path_buf(),
        cni_version: list.cni_version,
        disable_check: list.disable_check,
        raw,
    })
}

/// The CNI rule for network names: an ASCII letter or digit, then letters,
/// digits, `_`, `.` and `-`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

/// A plugin type must be a plain file name.
fn valid_plugin_type(kind: &str) -> bool {
    !kind.is_empty() && kind != "." && kind != ".." && !kind.contains('/') && !kind.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn finds_lists_and_single_configurations_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"alpha","plugins":[{"type":"bridge","ipam":{"type":"host-local","dataDir":"/x"}},{"type":"tuning","capabilities":{"mac":true}}]}"#,
        );
        write(
            dir.path(),
            "20-b.conf",
            r#"{"cniVersion":"0.4.0","name":"beta","type":"ptp","capabilities":{"ips":true}}"#,
        );
        write(dir.path(), "30-broken.conflist", "{");
        write(dir.path(), "ignored.txt", "{}");
        let cni = Cni {
            config_dir: dir.path().into(),
            plugin_dirs: vec![],
        };
        let alpha = cni.find("alpha").unwrap();
        assert_eq!(alpha.plugin_types(), ["bridge", "host-local", "tuning"]);
        assert_eq!(
            alpha.capabilities().into_iter().collect::<Vec<_>>(),
            ["mac"]
        );
        assert_eq!(alpha.host_local_leases(), Some(PathBuf::from("/x/alpha")));
        let beta = cni.find("beta").unwrap();
        assert_eq!(beta.cni_version, "0.4.0");
        assert_eq!(beta.plugins().len(), 1);
        assert_eq!(beta.host_local_leases(), None);
        let missing = cni.find("gamma").unwrap_err().to_string();
        assert!(missing.contains("no CNI network named gamma"), "{missing}");
        assert!(missing.contains("alpha, beta"), "{missing}");
        assert!(
            missing.contains("unreadable: 30-broken.conflist"),
            "{missing}"
        );
        assert!(matches!(cni.find("../x"), Err(ConfigError::BadName(_))));
        assert_eq!(cni.list().unwrap().len(), 3);
    }

    #[test]
    fn refuses_bad_plugin_types_and_empty_lists() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.conflist",
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"../../bin/sh"}]}"#,
        );
        write(
            dir.path(),
            "b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[]}"#,
        );
        let cni = Cni {
            config_dir: dir.path().into(),
            plugin_dirs: vec![],
        };
        let err = read(&dir.path().join("a.conflist"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a plugin name"), "{err}");
        let err = read(&dir.path().join("b.conflist"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no plugins"), "{err}");
        assert!(cni.find("a").is_err());
    }

    #[test]
    fn plugins_are_found_in_order_and_missing_ones_named() {
        use std::os::unix::fs::PermissionsExt;
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let make = |dir: &Path, mode| {
            let p = dir.join("bridge");
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        make(first.path(), 0o644);
        let good = make(second.path(), 0o755);
        let dirs = vec![first.path().to_path_buf(), second.path().to_path_buf()];
        assert_eq!(find_plugin("n", "bridge", &dirs).unwrap(), good);
        let err = find_plugin("n", "macvlan", &dirs).unwrap_err().to_string();
        assert!(err.contains("\"macvlan\" of network n is not in"), "{err}");
        assert!(find_plugin("n", "../bridge", &dirs).is_err());
    }
}
