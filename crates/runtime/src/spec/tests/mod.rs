//! Tests of bundle loading and the spec's parts, with shared fixtures.

mod load;
mod parts;
mod support;
mod validate;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::*;

/// `runc spec` of runc 1.1, with the cgroup namespace of newer versions.
pub(super) const RUNC_DEFAULT: &str = r#"{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			"sh"
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
			"ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "rootfs",
		"readonly": true
	},
	"hostname": "runc",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": ["nosuid", "noexec", "nodev"]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": ["nosuid", "noexec", "nodev", "ro"]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
		}
	],
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{"type": "pid"},
			{"type": "network"},
			{"type": "ipc"},
			{"type": "uts"},
			{"type": "mount"},
			{"type": "cgroup"}
		],
		"maskedPaths": [
			"/proc/acpi",
			"/proc/asound",
			"/proc/kcore",
			"/proc/keys",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}"#;

pub(super) fn base() -> Value {
    serde_json::from_str(RUNC_DEFAULT).expect("the literal is JSON")
}

/// `value` with the field at JSON pointer `pointer` set (parents are
/// created as objects).
pub(super) fn with(mut value: Value, pointer: &str, field: Value) -> Value {
    let mut at = &mut value;
    for key in pointer.trim_start_matches('/').split('/') {
        at = match at {
            Value::Array(list) => {
                let index = key.parse::<usize>().expect("array index");
                if index == list.len() {
                    list.push(Value::Null);
                }
                &mut list[index]
            }
            other => other
                .as_object_mut()
                .expect("an object on the way")
                .entry(key.to_owned())
                .or_insert(Value::Object(Default::default())),
        };
    }
    *at = field;
    value
}

pub(super) fn spec_of(value: &Value) -> Spec {
    serde_json::from_value(value.clone()).expect("a spec")
}

/// A bundle directory with `config` as config.json and an empty rootfs.
pub(super) fn bundle(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("config.json"), config).expect("write config.json");
    fs::create_dir(dir.path().join("rootfs")).expect("create rootfs");
    dir
}

pub(super) fn unsupported_fields(result: Result<Vec<String>, SpecError>) -> Vec<String> {
    match result {
        Err(SpecError::Unsupported { fields }) => fields,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
