//! A busybox OCI bundle in a temporary directory: `runc spec`-like
//! defaults (pid, network, ipc, uts, mount namespaces; proc, tmpfs /dev,
//! devpts, /dev/shm, mqueue, sysfs mounts; masked and read-only paths), a
//! writable rootfs made of busybox-static, and the given process.

use std::path::{Path, PathBuf};

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("busybox-static is not installed (/bin/busybox or /usr/bin/busybox); scripts/setup.sh installs it")]
    NoBusybox,
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |e| BundleError::Io(what, path, e)
}

/// The applets linked into every rootfs.
pub const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "ls", "ps", "nc", "date", "true", "read",
];

/// A bundle; its directory goes on drop.
#[derive(Debug)]
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle running `args` (e.g. `["sh", "-c", "..."]`).
    pub fn new(args: &[&str]) -> Result<Self, BundleError> {
        let dir = tempfile::tempdir().map_err(io("create", Path::new("a temporary directory")))?;
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "tmp", "proc", "sys", "dev", "etc", "data"] {
            let d = rootfs.join(sub);
            std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .ok_or(BundleError::NoBusybox)?;
        let target = rootfs.join("bin/busybox");
        std::fs::copy(busybox, &target).map_err(io("copy busybox to", &target))?;
        let bundle = Self { dir };
        bundle.link_applets(APPLETS)?;
        bundle.write_config(&Self::default_config(args))?;
        Ok(bundle)
    }

    /// Links more busybox applets into `rootfs/bin`.
    pub fn link_applets(&self, applets: &[&str]) -> Result<(), BundleError> {
        for applet in applets {
            let link = self.rootfs().join("bin").join(applet);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink("busybox", &link).map_err(io("link", &link))?;
            }
        }
        Ok(())
    }

    /// The spec `new` writes, for callers to edit and write back.
    pub fn default_config(args: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/",
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "crabmigrate-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                    {"type": "uts"}, {"type": "mount"}
                ],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/sys", "/proc/sysrq-trigger"]
            }
        })
    }

    /// Replaces config.json.
    pub fn write_config(&self, config: &serde_json::Value) -> Result<(), BundleError> {
        let path = self.dir.path().join("config.json");
        let bytes = serde_json::to_vec_pretty(config)
            .map_err(|e| BundleError::Io("encode", path.clone(), e.into()))?;
        std::fs::write(&path, bytes).map_err(io("write", &path))
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}
