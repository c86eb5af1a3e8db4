//! A bundle for a checkpoint another engine made: `config.json` written
//! from the spec the engine ran the container with (Podman's `spec.dump`).
//!
//! The checkpoint needs the same mounts at the same places (the runtime
//! declared every bind mount external when it dumped), so the spec is kept
//! as it was, except for what belonged to the engine's own container
//! directory on the source host:
//!
//! - `root.path` becomes `rootfs` (the bundle's; the caller puts the image's
//!   files there and applies the checkpoint's rootfs changes);
//! - the files Podman makes for every container and binds in
//!   (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
//!   `/run/.containerenv`, the `/dev/shm` directory) are made anew in
//!   `BUNDLE/container-files/`, as Podman's own `restore --import` makes
//!   them anew: hostname from the spec, localhost entries, this host's
//!   resolver configuration, an empty `.containerenv`, an empty shm
//!   directory (the caller fills it from `devshm-checkpoint.tar`);
//! - `linux.cgroupsPath` is dropped (it names the engine's cgroup of the
//!   old container): crabmigrate's default `/crabmigrate/ID` serves;
//! - `hooks` are dropped: they would run on this host, outside the
//!   container, chosen by whoever wrote the archive (Podman writes none).
//!
//! Any other bind mount whose source does not exist here, or a namespace
//! to join that does not exist here, is refused, naming it: the restore
//! could not give the checkpoint what it had.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the stand-ins for an engine's per-container files go, in the
/// bundle.
pub const CONTAINER_FILES: &str = "container-files";

/// The largest spec read.
const MAX_SPEC_BYTES: u64 = 16 << 20;

/// A written bundle configuration.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// `BUNDLE/config.json`.
    pub config: PathBuf,
    /// The directory bound to `/dev/shm`, when the spec binds one.
    pub shm: Option<PathBuf>,
    /// What was changed, for the user.
    pub notes: Vec<String>,
}

/// Why no configuration could be written.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not an OCI runtime spec: {problem}", path.display())]
    NotSpec { path: PathBuf, problem: String },
    #[error("{} does not exist; put the files of the image the container ran from there (e.g. podman export, or podman image mount and copy), then restore again", path.display())]
    NoRootfs { path: PathBuf },
    #[error("{} exists; remove it to have one written from the checkpoint's spec, or restore with it as it is", path.display())]
    ConfigExists { path: PathBuf },
    #[error("the checkpoint's spec binds {from} to {destination}, and {from} does not exist on this host; write BUNDLE/config.json yourself with a source for {destination}")]
    MissingSource { from: String, destination: String },
    #[error("the checkpoint's spec joins the {kind} namespace {path}, which does not exist on this host (the engine made it); restore with that engine, or write BUNDLE/config.json yourself")]
    MissingNamespace { kind: String, path: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AdoptError {
    let path = path.to_path_buf();
    move |source| AdoptError::Io { what, path, source }
}

/// What an engine's per-container file is made of here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StandIn {
    Hosts,
    Hostname,
    ResolvConf,
    ContainerEnv,
    Shm,
}

impl StandIn {
    fn for_destination(dest: &str) -> Option<Self> {
        Some(match dest.trim_end_matches('/') {
            "/etc/hosts" => Self::Hosts,
            "/etc/hostname" => Self::Hostname,
            "/etc/resolv.conf" => Self::ResolvConf,
            "/run/.containerenv" => Self::ContainerEnv,
            "/dev/shm" => Self::Shm,
            _ => return None,
        })
    }

    fn file_name(self) -> &'static str {
        match self {
            Self::Hosts => "hosts",
            Self::Hostname => "hostname",
            Self::ResolvConf => "resolv.conf",
            Self::ContainerEnv => ".containerenv",
            Self::Shm => "shm",
        }
    }

    /// Makes it in `dir`; returns its path.
    fn make(self, dir: &Path, hostname: &str) -> Result<PathBuf, AdoptError> {
        let path = dir.join(self.file_name());
        let contents = match self {
            Self::Shm => {
                std::fs::create_dir_all(&path).map_err(io_err("create", &path))?;
                return Ok(path);
            }
            Self::Hosts => format!(
                "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost localhost.localdomain\n{}",
                if hostname.is_empty() {
                    String::new()
                } else {
                    format!("127.0.1.1\t{hostname}\n")
                }
            ),
            Self::Hostname => format!("{hostname}\n"),
            Self::ResolvConf => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            Self::ContainerEnv => String::new(),
        };
        std::fs::write(&path, contents).map_err(io_err("write", &path))?;
        Ok(path)
    }
}

/// Whether a bind mount (by its type or options).
fn is_bind(mount: &Value) -> bool {
    mount.get("type").and_then(Value::as_str) == Some("bind")
        || mount
            .get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|v| v == "bind" || v == "rbind"))
}

/// Refuses, before anything is written, a spec whose bind sources (other
/// than the engine's per-container files) or namespaces to join are not on
/// this host.
fn check_restorable(spec: &Value) -> Result<(), AdoptError> {
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for mount in spec
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| is_bind(m))
    {
        let destination = text(mount, "destination");
        let source = text(mount, "source");
        if StandIn::for_destination(&destination).is_none() && !Path::new(&source).exists() {
            return Err(AdoptError::MissingSource {
                from: source,
                destination,
            });
        }
    }
    for ns in spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let path = text(ns, "path");
        if !path.is_empty() && !Path::new(&path).exists() {
            return Err(AdoptError::MissingNamespace {
                kind: text(ns, "type"),
                path,
            });
        }
    }
    Ok(())
}

/// Writes `BUNDLE/config.json` from `spec_dump` (see the module's rules).
/// `BUNDLE/rootfs` must exist; `BUNDLE/config.json` must not.
pub fn adopt_engine_spec(spec_dump: &Path, bundle: &Path) -> Result<Adopted, AdoptError> {
    let config = bundle.join("config.json");
    if config.exists() {
        return Err(AdoptError::ConfigExists { path: config });
    }
    let rootfs = bundle.join("rootfs");
    if !rootfs.is_dir() {
        return Err(AdoptError::NoRootfs { path: rootfs });
    }
    // Mount sources are absolute: config.json may be read from elsewhere.
    let bundle = &bundle.canonicalize().map_err(io_err("resolve", bundle))?;
    let not_spec = |problem: String| AdoptError::NotSpec {
        path: spec_dump.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(spec_dump).map_err(io_err("open", spec_dump))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_SPEC_BYTES + 1), &mut bytes)
        .map_err(io_err("read", spec_dump))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(not_spec(format!(
            "it is larger than {MAX_SPEC_BYTES} bytes"
        )));
    }
    let mut spec: Value = serde_json::from_slice(&bytes).map_err(|e| not_spec(e.to_string()))?;
    if spec.get("ociVersion").and_then(Value::as_str).is_none() {
        return Err(not_spec("it has no ociVersion".into()));
    }
    let mut notes = Vec::new();
    let hostname = spec
        .get("hostname")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match spec.get_mut("root") {
        Some(Value::Object(root)) => {
            root.insert("path".into(), "rootfs".into());
        }
        _ => return Err(not_spec("it has no root".into())),
    }

    check_restorable(&spec)?;
    let files = bundle.join(CONTAINER_FILES);
    let mut shm = None;
    if let Some(Value::Array(mounts)) = spec.get_mut("mounts") {
        for mount in mounts.iter_mut() {
            if !is_bind(mount) {
                continue;
            }
            let dest = mount
                .get("destination")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(stand_in) = StandIn::for_destination(&dest) {
                std::fs::create_dir_all(&files).map_err(io_err("create", &files))?;
                let made = stand_in.make(&files, &hostname)?;
                if stand_in == StandIn::Shm {
                    shm = Some(made.clone());
                }
                mount["source"] = made.to_string_lossy().into_owned().into();
                notes.push(format!(
                    "{dest} is bound from {} (the engine's own file on the source host is not in the checkpoint)",
                    made.display()
                ));
            }
        }
    }
    // Hooks run on this host, outside the container, before anything of
    // the checkpoint is checked by a restore: an archive does not get to
    // choose programs for crabmigrate to run. (Podman adds none of its own.)
    if let Some(Value::Object(hooks)) = spec.as_object_mut().and_then(|o| o.remove("hooks")) {
        if !hooks.is_empty() {
            let stages: Vec<&str> = hooks.keys().map(String::as_str).collect();
            notes.push(format!(
                "the spec's hooks ({}) were dropped: they would run on this host; add them to \
                 config.json yourself if you trust them",
                stages.join(", ")
            ));
        }
    }
    if let Some(Value::Object(linux)) = spec.get_mut("linux") {
        if let Some(old) = linux.remove("cgroupsPath") {
            notes.push(format!(
                "linux.cgroupsPath {old} (the engine's cgroup on the source host) was dropped; \
                 crabmigrate's default cgroup is used"
            ));
        }
    }
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| not_spec(e.to_string()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config)
        .and_then(|mut f| io::Write::write_all(&mut f, &text))
        .map_err(io_err("write", &config))?;
    Ok(Adopted { config, shm, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn podman_spec(dir: &Path) -> PathBuf {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2-dev",
            "hostname": "c1",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "/var/lib/containers/storage/vfs/dir/abc"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind",
                 "source": "/run/containers/storage/x/userdata/hosts", "options": ["bind", "rprivate"]},
                {"destination": "/dev/shm", "type": "bind",
                 "source": "/var/lib/containers/storage/x/userdata/shm", "options": ["bind"]},
                {"destination": "/data", "type": "bind", "source": "/", "options": ["rbind"]}
            ],
            "hooks": {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "touch /tmp/pwned"]}]},
            "linux": {"cgroupsPath": "/libpod_parent/libpod-abc",
                      "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]}
        });
        let path = dir.join("spec.dump");
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
        path
    }

    #[test]
    fn engine_files_are_made_anew_and_the_cgroup_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spec = podman_spec(dir.path());
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let adopted = adopt_engine_spec(&spec, &bundle).unwrap();
        let written: Value =
            serde_json::from_slice(&std::fs::read(&adopted.config).unwrap()).unwrap();
        assert_eq!(written["root"]["path"], "rootfs");
        assert!(written["linux"].get("cgroupsPath").is_none());
        assert!(written.get("hooks").is_none());
        assert!(adopted.notes.iter().any(|n| n.contains("prestart")));
        let files = bundle.join(CONTAINER_FILES);
        assert_eq!(
            written["mounts"][1]["source"],
            files.join("hosts").to_string_lossy().as_ref()
        );
        assert_eq!(written["mounts"][1]["options"][1], "rprivate");
        assert!(std::fs::read_to_string(files.join("hosts"))
            .unwrap()
            .contains("c1"));
        assert_eq!(adopted.shm.as_deref(), Some(files.join("shm").as_path()));
        assert!(files.join("shm").is_dir());
        // A source that exists here is kept.
        assert_eq!(written["mounts"][3]["source"], "/");
        // The bundle loads.
        crate::spec::load(&bundle).unwrap();
        // Never over a config.json of the user's.
        let again = adopt_engine_spec(&spec, &bundle).unwrap_err();
        assert!(matches!(again, AdoptError::ConfigExists { .. }));
    }

    #[test]
    fn what_cannot_be_given_back_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec_path = podman_spec(dir.path());
        let bundle = dir.path().join("bundle");
        let err = adopt_engine_spec(&spec_path, &bundle).unwrap_err();
        assert!(err.to_string().contains("podman export"), "{err}");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
        spec["mounts"][3]["source"] = "/var/lib/containers/storage/volumes/v/_data".into();
        std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
        let err = adopt_engine_spec(&spec_path, &bundle).unwrap_err();
        assert!(matches!(err, AdoptError::MissingSource { .. }), "{err}");
        assert!(err.to_string().contains("/data"), "{err}");
        spec["mounts"].as_array_mut().unwrap().truncate(3);
        spec["linux"]["namespaces"][0]["path"] = "/run/netns/netns-gone".into();
        std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
        let err = adopt_engine_spec(&spec_path, &bundle).unwrap_err();
        assert!(matches!(err, AdoptError::MissingNamespace { .. }), "{err}");
        assert!(!bundle.join("config.json").exists());
    }
}
