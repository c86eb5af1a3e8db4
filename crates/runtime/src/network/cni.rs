//! Running CNI plugins, per the CNI specification (1.0):
//!
//! - each plugin is executed with `CNI_COMMAND`, `CNI_CONTAINERID`,
//!   `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and `CNI_PATH` in its
//!   environment and its configuration on standard input;
//! - a list is chained: ADD runs the plugins in order, each getting the
//!   previous one's result as `prevResult`; DEL runs them in reverse and
//!   CHECK in order, both with the result ADD returned;
//! - the list's `name` and `cniVersion` are put into each plugin's
//!   configuration, and the runtime capabilities a plugin declares
//!   (`ips`, `mac`) are passed in its `runtimeConfig`;
//! - a plugin that fails prints an error object (`code`, `msg`, `details`),
//!   turned into [`PluginError::Refused`] with a typed [`ErrorCode`].
//!
//! Plugins create host-side devices in the network namespace they run in:
//! they are started in the host namespace recorded with the attachment
//! (see [`Invocation::host_netns`]).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use super::config::{find_plugin, ConfigError, NetworkConfig};

/// The CNI operations a runtime calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Del,
    Check,
}

impl Op {
    /// `CNI_COMMAND`'s value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error codes of the CNI specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the plugin does not support the configuration's CNI version.
    IncompatibleVersion,
    /// 2: a field of the configuration is not supported.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: an environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure.
    Io,
    /// 6: the configuration could not be decoded.
    Decode,
    /// 7: the configuration is invalid.
    InvalidConfig,
    /// 11: a transient condition; try again later.
    TryAgainLater,
    /// Any other code (100 and up are the plugin's own; the reference
    /// plugins use 999 for everything else).
    Other(u32),
}

impl ErrorCode {
    /// The code as the specification numbers it.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::IncompatibleVersion,
            2 => Self::UnsupportedField,
            3 => Self::UnknownContainer,
            4 => Self::InvalidEnvironment,
            5 => Self::Io,
            6 => Self::Decode,
            7 => Self::InvalidConfig,
            11 => Self::TryAgainLater,
            other => Self::Other(other),
        }
    }

    /// The number.
    pub fn code(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidConfig => 7,
            Self::TryAgainLater => 11,
            Self::Other(n) => n,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            Self::IncompatibleVersion => "incompatible CNI version",
            Self::UnsupportedField => "unsupported field",
            Self::UnknownContainer => "unknown container",
            Self::InvalidEnvironment => "invalid environment",
            Self::Io => "I/O failure",
            Self::Decode => "cannot decode",
            Self::InvalidConfig => "invalid configuration",
            Self::TryAgainLater => "try again later",
            Self::Other(_) => "plugin error",
        };
        write!(f, "CNI error {}, {what}", self.code())
    }
}

/// Why a plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Missing(#[from] ConfigError),
    #[error("cannot run the CNI plugin {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} refused {op} on network {network}: {msg}{details} ({code})")]
    Refused {
        network: String,
        plugin: String,
        op: Op,
        code: ErrorCode,
        msg: String,
        /// `": DETAILS"` when the plugin gave details.
        details: String,
    },
    #[error("CNI plugin {plugin} failed {op} on network {network} ({status}) without an error object: {output}")]
    Crashed {
        network: String,
        plugin: String,
        op: Op,
        status: std::process::ExitStatus,
        /// Its standard error (or output), trimmed.
        output: String,
    },
    #[error(
        "CNI plugin {plugin} answered {op} on network {network} with no valid result: {problem}"
    )]
    BadResult {
        network: String,
        plugin: String,
        op: Op,
        problem: String,
    },
    #[error("cannot enter the host network namespace {0} to run CNI plugins")]
    HostNetns(PathBuf, #[source] std::io::Error),
    #[error(
        "network {network} has CNI version {version}, which has no CHECK (it came with 0.4.0)"
    )]
    CheckUnsupported { network: String, version: String },
}

/// What a plugin call is about.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`: the container's network namespace file.
    pub netns: &'a Path,
    /// `CNI_IFNAME`: the interface inside the container.
    pub ifname: &'a str,
    /// `CNI_PATH`.
    pub plugin_dirs: &'a [PathBuf],
    /// Runtime capabilities to pass (`runtimeConfig`).
    pub runtime_config: &'a RuntimeConfig,
    /// Run the plugins in this network namespace (the "host" the
    /// network's bridge lives in); `None`: the caller's.
    pub host_netns: Option<&'a Path>,
}

/// The runtime capabilities crabmigrate passes to plugins that declare
/// them: `ips` (addresses in CIDR form) and `mac`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub ips: Vec<String>,
    pub mac: Option<String>,
}

impl RuntimeConfig {
    /// The `runtimeConfig` object for a plugin declaring `capabilities`.
    fn for_plugin(&self, plugin: &Value) -> Option<Value> {
        let declares = |cap: &str| {
            plugin
                .get("capabilities")
                .and_then(|c| c.get(cap))
                .and_then(Value::as_bool)
                == Some(true)
        };
        let mut out = serde_json::Map::new();
        if declares("ips") && !self.ips.is_empty() {
            out.insert("ips".into(), serde_json::json!(self.ips));
        }
        if declares("mac") {
            if let Some(mac) = &self.mac {
                out.insert("mac".into(), Value::String(mac.clone()));
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

/// ADD: runs the list in order and returns the last plugin's result.
pub fn add(config: &NetworkConfig, inv: &Invocation<'_>) -> Result<Value, PluginError> {
    let mut prev: Option<Value> = None;
    for plugin in config.plugins() {
        let out = exec(config, plugin, Op::Add, prev.as_ref(), inv)?;
        let kind = plugin_type(plugin);
        let bad = |problem: String| PluginError::BadResult {
            network: config.name.clone(),
            plugin: kind.to_owned(),
            op: Op::Add,
            problem,
        };
        let result: Value = serde_json::from_slice(&out).map_err(|e| bad(e.to_string()))?;
        if !result.is_object() {
            return Err(bad("not a JSON object".to_owned()));
        }
        serde_json::from_value::<rscni_types::types::CNIResult>(result.clone())
            .map_err(|e| bad(e.to_string()))?;
        prev = Some(result);
    }
    prev.ok_or_else(|| PluginError::BadResult {
        network: config.name.clone(),
        plugin: String::new(),
        op: Op::Add,
        problem: "the list has no plugins".to_owned(),
    })
}

/// DEL: runs the list in reverse with `prev` (ADD's result) as
/// `prevResult`. Every plugin runs even when one fails; the first failure
/// is returned.
pub fn del(
    config: &NetworkConfig,
    inv: &Invocation<'_>,
    prev: Option<&Value>,
) -> Result<(), PluginError> {
    let mut first = None;
    for plugin in config.plugins().iter().rev() {
        if let Err(e) = exec(config, plugin, Op::Del, prev, inv) {
            tracing::warn!(network = %config.name, plugin = plugin_type(plugin), error = %e, "CNI DEL failed");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// CHECK: runs the list in order with `prev` (ADD's result). Returns
/// `false` without running anything when the list sets `disableCheck`.
pub fn check(
    config: &NetworkConfig,
    inv: &Invocation<'_>,
    prev: &Value,
) -> Result<bool, PluginError> {
    if config.disable_check {
        return Ok(false);
    }
    let legacy = matches!(
        config.cni_version.as_str(),
        "" | "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1"
    );
    if legacy {
        return Err(PluginError::CheckUnsupported {
            network: config.name.clone(),
            version: config.cni_version.clone(),
        });
    }
    for plugin in config.plugins() {
        exec(config, plugin, Op::Check, Some(prev), inv)?;
    }
    Ok(true)
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The configuration one plugin reads: its object from the list plus the
/// list's name and version, `prevResult` and `runtimeConfig`.
pub(crate) fn plugin_config(
    config: &NetworkConfig,
    plugin: &Value,
    prev: Option<&Value>,
    runtime: &RuntimeConfig,
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(config.name.clone()));
    conf.insert(
        "cniVersion".into(),
        Value::String(config.cni_version.clone()),
    );
    match prev {
        Some(p) => {
            conf.insert("prevResult".into(), p.clone());
        }
        None => {
            conf.remove("prevResult");
        }
    }
    if let Some(rc) = runtime.for_plugin(plugin) {
        conf.insert("runtimeConfig".into(), rc);
    }
    Value::Object(conf)
}

/// Runs one plugin and returns its standard output.
fn exec(
    config: &NetworkConfig,
    plugin: &Value,
    op: Op,
    prev: Option<&Value>,
    inv: &Invocation<'_>,
) -> Result<Vec<u8>, PluginError> {
    let kind = plugin_type(plugin);
    let path = find_plugin(&config.name, kind, inv.plugin_dirs)?;
    let stdin = serde_json::to_vec(&plugin_config(config, plugin, prev, inv.runtime_config))
        .unwrap_or_default();
    let cni_path = std::env::join_paths(inv.plugin_dirs)
        .unwrap_or_default()
        .into_string()
        .unwrap_or_default();
    let mut cmd = std::process::Command::new(&path);
    for key in ENV {
        cmd.env_remove(key);
    }
    cmd.env("CNI_COMMAND", op.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", "IgnoreUnknown=1")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(host) = inv.host_netns {
        let ns: OwnedFd = std::fs::File::open(host)
            .map_err(|e| PluginError::HostNetns(host.to_path_buf(), e))?
            .into();
        // SAFETY: the closure runs in the child between fork and exec; setns
        // is a plain system call (async-signal-safe) on a descriptor opened
        // before the fork, so nothing is allocated or locked.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    tracing::debug!(network = %config.name, plugin = kind, op = op.as_str(), container = inv.container_id, "running a CNI plugin");
    let spawn = |source| PluginError::Spawn {
        path: path.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn)?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading gives EPIPE; its status says
        // why.
        let _ = input.write_all(&stdin);
    }
    let output = child.wait_with_output().map_err(spawn)?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    #[derive(serde::Deserialize)]
    struct ErrorObject {
        code: u32,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<ErrorObject>(&output.stdout) {
        Ok(e) => Err(PluginError::Refused {
            network: config.name.clone(),
            plugin: kind.to_owned(),
            op,
            code: ErrorCode::from_code(e.code),
            msg: e.msg.trim().to_owned(),
            details: if e.details.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", e.details.trim())
            },
        }),
        Err(_) => {
            let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
                &output.stderr
            } else {
                &output.stdout
            };
            let mut text = String::from_utf8_lossy(text).trim().replace('\n', " ");
            text.truncate(2000);
            Err(PluginError::Crashed {
                network: config.name.clone(),
                plugin: kind.to_owned(),
                op,
                status: output.status,
                output: text,
            })
        }
    }
}

/// The variables a runtime sets for a plugin.
const ENV: [&str; 6] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in plugin: records its environment and input in DIR/log,
    /// then answers ADD with a result naming itself (or chains the
    /// previous one), and fails when its config says `"fail": CODE`.
    const PLUGIN: &str = r#"#!/bin/sh
dir=$(dirname "$0")
input=$(cat)
name=$(basename "$0")
{ echo "$name $CNI_COMMAND $CNI_CONTAINERID $CNI_NETNS $CNI_IFNAME $CNI_ARGS $CNI_PATH"; echo "$input"; } >> "$dir/log"
case "$input" in
  *'"fail":'*) echo '{"code":7,"msg":"bad thing","details":"it is wrong"}'; exit 1;;
  *'"crash":'*) echo 'panic: boom' >&2; exit 2;;
esac
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"interface":0,"address":"10.9.0.2/24"}],"note":"'"$name"'"}'
fi
"#;

    fn setup(plugins: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        for p in plugins {
            let path = dir.path().join(p);
            std::fs::write(&path, PLUGIN).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dirs = vec![dir.path().to_path_buf()];
        (dir, dirs)
    }

    fn list(plugins: Value) -> NetworkConfig {
        NetworkConfig::from_value(
            serde_json::json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": plugins}),
            "test.conflist".into(),
        )
        .unwrap()
    }

    fn inv<'a>(dirs: &'a [PathBuf], rc: &'a RuntimeConfig) -> Invocation<'a> {
        Invocation {
            container_id: "ctr1",
            netns: Path::new("/run/netns/x"),
            ifname: "eth0",
            plugin_dirs: dirs,
            runtime_config: rc,
            host_netns: None,
        }
    }

    #[test]
    fn add_chains_prev_result_and_passes_declared_capabilities_only() {
        let (dir, dirs) = setup(&["first", "second"]);
        let config = list(serde_json::json!([
            {"type": "first", "capabilities": {"ips": true}, "x": 1},
            {"type": "second", "capabilities": {"mac": true}}
        ]));
        let rc = RuntimeConfig {
            ips: vec!["10.9.0.2/24".into()],
            mac: Some("02:00:00:00:00:01".into()),
        };
        let result = add(&config, &inv(&dirs, &rc)).unwrap();
        assert_eq!(result["note"], "second");
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        let path = dir.path().display().to_string();
        assert_eq!(
            lines[0],
            format!("first ADD ctr1 /run/netns/x eth0 IgnoreUnknown=1 {path}")
        );
        let first: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(first["name"], "testnet");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["x"], 1);
        assert_eq!(
            first["runtimeConfig"],
            serde_json::json!({"ips": ["10.9.0.2/24"]})
        );
        assert!(first.get("prevResult").is_none());
        let second: Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(second["prevResult"]["note"], "first");
        assert_eq!(
            second["runtimeConfig"],
            serde_json::json!({"mac": "02:00:00:00:00:01"})
        );
    }

    #[test]
    fn del_runs_in_reverse_with_the_result_and_check_in_order() {
        let (dir, dirs) = setup(&["first", "second"]);
        let config = list(serde_json::json!([{"type": "first"}, {"type": "second"}]));
        let rc = RuntimeConfig::default();
        let prev = serde_json::json!({"cniVersion": "1.0.0", "note": "kept"});
        del(&config, &inv(&dirs, &rc), Some(&prev)).unwrap();
        assert!(check(&config, &inv(&dirs, &rc), &prev).unwrap());
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let order: Vec<String> = log
            .lines()
            .step_by(2)
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            order,
            ["second DEL", "first DEL", "first CHECK", "second CHECK"]
        );
        for input in log.lines().skip(1).step_by(2) {
            let v: Value = serde_json::from_str(input).unwrap();
            assert_eq!(v["prevResult"]["note"], "kept");
        }
    }

    #[test]
    fn errors_are_typed_and_name_the_plugin() {
        let (_dir, dirs) = setup(&["ok", "bad"]);
        let rc = RuntimeConfig::default();
        let config = list(serde_json::json!([{"type": "ok"}, {"type": "bad", "fail": 1}]));
        let err = add(&config, &inv(&dirs, &rc)).unwrap_err();
        match &err {
            PluginError::Refused { code, plugin, .. } => {
                assert_eq!(*code, ErrorCode::InvalidConfig);
                assert_eq!(plugin, "bad");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "CNI plugin bad refused ADD on network testnet: bad thing: it is wrong (CNI error 7, invalid configuration)"
        );
        let config = list(serde_json::json!([{"type": "ok", "crash": 1}]));
        let err = add(&config, &inv(&dirs, &rc)).unwrap_err().to_string();
        assert!(err.contains("panic: boom"), "{err}");
        let config = list(serde_json::json!([{"type": "absent"}]));
        let err = add(&config, &inv(&dirs, &rc)).unwrap_err();
        assert!(matches!(err, PluginError::Missing(_)), "{err:?}");
        // DEL goes on past a failing plugin and reports the failure.
        let config = list(serde_json::json!([{"type": "ok"}, {"type": "bad", "fail": 1}]));
        assert!(del(&config, &inv(&dirs, &rc), None).is_err());
    }

    #[test]
    fn check_is_skipped_when_disabled_and_refused_before_0_4() {
        let (_dir, dirs) = setup(&["ok"]);
        let rc = RuntimeConfig::default();
        let disabled = NetworkConfig::from_value(
            serde_json::json!({"cniVersion": "1.0.0", "name": "n", "disableCheck": true, "plugins": [{"type": "ok"}]}),
            "x".into(),
        )
        .unwrap();
        assert!(!check(&disabled, &inv(&dirs, &rc), &Value::Null).unwrap());
        let old = NetworkConfig::from_value(
            serde_json::json!({"cniVersion": "0.3.1", "name": "n", "plugins": [{"type": "ok"}]}),
            "x".into(),
        )
        .unwrap();
        assert!(matches!(
            check(&old, &inv(&dirs, &rc), &Value::Null),
            Err(PluginError::CheckUnsupported { .. })
        ));
    }
}
