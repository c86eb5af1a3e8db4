//! Podman's checkpoint archives, both ways.
//!
//! `podman container checkpoint --export` writes a tar (zstd by default) of
//! the container's work directory: `checkpoint/` (CRIU's images, written by
//! the OCI runtime), `config.dump` (libpod's container configuration),
//! `spec.dump` (the OCI spec), `network.status`, `stats-dump`,
//! `devshm-checkpoint.tar` (the contents of `/dev/shm`), `rootfs-diff.tar`
//! and `deleted.files` (the rootfs changes), `ctr.log`, `artifacts/` and,
//! with named volumes, `volumes/NAME.tar`. There is no manifest and no
//! digest, so nothing proves the members are the ones Podman wrote: import
//! checks what can be checked (member names, types and sizes, paths, the
//! JSON documents, every CRIU image's magic and the decodable images) and
//! says that the contents are not verified.
//!
//! `podman container restore --import` (Podman 4.3) reads `config.dump` as
//! libpod's `ContainerConfig`: `runtime` must name the runtime Podman is
//! given, `rootfsImageName` is pulled (unless present) and the container is
//! created from `rootfsImageID` (an ID or a name Podman's storage resolves),
//! `id` and `name` become the new container's, `rootfs` must be absent when
//! an image is named. [`config_dump`] writes such a document.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::import::ImportError;
use super::{
    CONFIG_DUMP, DELETED_FILES, MAX_MANIFEST_BYTES, MAX_MEMBER_BYTES, NETWORK_STATUS, ROOTFS_DIFF,
    SPEC_DUMP,
};

/// Podman's copy of the container's `/dev/shm`.
pub const DEVSHM_TAR: &str = "devshm-checkpoint.tar";
/// Where import keeps a Podman `network.status` that names networks: the
/// runtime's own `network.status` has another format.
pub const PODMAN_NETWORK_STATUS: &str = "podman-network.status";

/// The largest JSON document (`config.dump`, `spec.dump`, ...) read.
const MAX_DOCUMENT_BYTES: u64 = MAX_MANIFEST_BYTES;

/// What `config.dump` says about the container Podman checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodmanContainer {
    pub id: String,
    pub name: String,
    /// The OCI runtime Podman ran it with (`runc`, `crun`, `crabmigrate`).
    pub runtime: String,
    /// The image its rootfs came from.
    pub image: Option<String>,
}

/// What happens to one member of a Podman archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Nothing is written: the archive's root, `checkpoint/` itself (the
    /// extraction root), or a member left out.
    Skip,
    /// A file written as `target`, at most `limit` bytes.
    File { target: String, limit: u64 },
}

/// Admits the members of a Podman archive by name and type, collecting
/// notes on what is left out.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub(crate) notes: Vec<String>,
}

impl Layout {
    /// `./checkpoint/x` and `checkpoint/x` are the same member; `.` and
    /// `./` are the archive's root.
    pub(crate) fn normalize(raw: &str) -> String {
        let trimmed = raw.trim_end_matches('/');
        let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
        if trimmed == "." {
            String::new()
        } else {
            trimmed.to_owned()
        }
    }

    /// Decides what to do with `member` (normalised, plain relative), a
    /// directory when `dir`.
    pub(crate) fn admit(&mut self, member: &str, dir: bool) -> Result<Admit, ImportError> {
        if member.is_empty() {
            return Ok(Admit::Skip);
        }
        let (top, rest) = match member.split_once('/') {
            Some((top, rest)) => (top, Some(rest)),
            None => (member, None),
        };
        match (top, rest, dir) {
            ("checkpoint", None, true) => Ok(Admit::Skip),
            ("checkpoint", Some(name), false) if !name.contains('/') => Ok(Admit::File {
                target: name.to_owned(),
                limit: MAX_MEMBER_BYTES,
            }),
            ("checkpoint", Some(_), _) => Err(ImportError::Special {
                member: member.to_owned(),
                kind: "nested entry below checkpoint/ (CRIU's images are one flat directory)"
                    .into(),
            }),
            ("checkpointed.pods" | "pod.options" | "pod.dump", None, false) => {
                Err(ImportError::Pod(member.to_owned()))
            }
            (CONFIG_DUMP | SPEC_DUMP | DELETED_FILES | NETWORK_STATUS, None, false) => {
                Ok(Admit::File {
                    target: member.to_owned(),
                    limit: MAX_DOCUMENT_BYTES,
                })
            }
            (
                ROOTFS_DIFF | DEVSHM_TAR | "stats-dump" | "stats-restore" | "dump.log"
                | "restore.log",
                None,
                false,
            ) => Ok(Admit::File {
                target: member.to_owned(),
                limit: MAX_MEMBER_BYTES,
            }),
            ("artifacts", _, _) => Ok(Admit::Skip),
            ("ctr.log", None, false) => {
                self.notes
                    .push("ctr.log (the container's log under Podman) was left out".into());
                Ok(Admit::Skip)
            }
            ("volumes", None, true) => Ok(Admit::Skip),
            ("volumes", Some(tar), false) => {
                self.notes.push(format!(
                    "the named volume {} was left out: crabmigrate has no volumes; unpack \
                     volumes/{tar} from the archive where the restored container's bind mount \
                     finds it",
                    tar.trim_end_matches(".tar")
                ));
                Ok(Admit::Skip)
            }
            _ => {
                self.notes.push(format!(
                    "{member} is not part of a Podman container checkpoint as crabmigrate knows \
                     it and was left out"
                ));
                Ok(Admit::Skip)
            }
        }
    }

    /// Checks the extracted archive in `root` before it is moved into
    /// place: the JSON documents parse, the CRIU images open; a
    /// `network.status` without networks is dropped, one with networks
    /// kept as [`PODMAN_NETWORK_STATUS`].
    pub(crate) fn finish(&mut self, root: &Path) -> Result<PodmanContainer, ImportError> {
        for required in [CONFIG_DUMP, SPEC_DUMP, "inventory.img"] {
            if !root.join(required).is_file() {
                return Err(ImportError::NotCheckpointArchive {
                    missing: if required == "inventory.img" {
                        "checkpoint/inventory.img"
                    } else {
                        required
                    },
                });
            }
        }
        let config = document(root, CONFIG_DUMP)?;
        let text = |key: &str| {
            config
                .get(key)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let container = PodmanContainer {
            id: text("id").unwrap_or_default(),
            name: text("name").unwrap_or_default(),
            runtime: text("runtime").unwrap_or_default(),
            image: text("rootfsImageName"),
        };
        let spec = document(root, SPEC_DUMP)?;
        if spec.get("ociVersion").and_then(|v| v.as_str()).is_none() {
            return Err(ImportError::BadDocument {
                member: SPEC_DUMP,
                problem: "it has no ociVersion, so it is no OCI runtime spec".into(),
            });
        }
        if root.join(DELETED_FILES).is_file() {
            let text = std::fs::read(root.join(DELETED_FILES))
                .map_err(super::import::io_err("read", &root.join(DELETED_FILES)))?;
            if serde_json::from_slice::<Vec<String>>(&text).is_err() {
                return Err(ImportError::BadDocument {
                    member: DELETED_FILES,
                    problem: "it is not a JSON list of paths".into(),
                });
            }
        }
        let status = root.join(NETWORK_STATUS);
        if status.is_file() {
            let value = document(root, NETWORK_STATUS)?;
            let empty = match &value {
                serde_json::Value::Null => true,
                serde_json::Value::Object(map) => map.is_empty(),
                _ => false,
            };
            if empty {
                std::fs::remove_file(&status).map_err(super::import::io_err("remove", &status))?;
            } else {
                let kept = root.join(PODMAN_NETWORK_STATUS);
                std::fs::rename(&status, &kept)
                    .map_err(super::import::io_err("rename", &status))?;
                self.notes.push(format!(
                    "the container was on Podman networks ({PODMAN_NETWORK_STATUS} keeps them); \
                     a crabmigrate restore does not recreate Podman's networks"
                ));
            }
        }
        crate::Checkpoint::open(root).map_err(ImportError::Images)?;
        Ok(container)
    }
}

/// Reads a JSON document of the extracted archive.
fn document(root: &Path, member: &'static str) -> Result<serde_json::Value, ImportError> {
    let path = root.join(member);
    let text = std::fs::read(&path).map_err(super::import::io_err("read", &path))?;
    serde_json::from_slice(&text).map_err(|e| ImportError::BadDocument {
        member,
        problem: e.to_string(),
    })
}

/// What crabmigrate knows of a container it exports, for `config.dump`.
#[derive(Debug, Clone)]
pub struct ConfigDump {
    /// crabmigrate's container ID (Podman's name for it).
    pub id: String,
    /// When it was created, seconds since the epoch.
    pub created: u64,
    /// When it was checkpointed, seconds since the epoch.
    pub checkpointed: u64,
    /// The OCI runtime name Podman must be given to restore it.
    pub runtime: String,
    /// The image the rootfs came from, as Podman names it
    /// (`localhost/app:1`), and optionally its image ID there.
    pub image: Option<(String, Option<String>)>,
    /// The container's command (`process.args`), for `podman ps`.
    pub command: Vec<String>,
    /// crabmigrate's own facts: the bundle, rootfs and annotations.
    pub crabmigrate: serde_json::Value,
}

/// `config.dump` as Podman 4.3's `ContainerConfig` reads it. Podman's ID is
/// 64 hex digits: derived from the container's ID and creation time, so
/// that one container exported twice has one ID.
pub fn config_dump(c: &ConfigDump) -> serde_json::Value {
    let digest = Sha256::digest(format!("crabmigrate:{}:{}", c.id, c.created).as_bytes());
    let mut doc = serde_json::json!({
        "id": hex::encode(digest),
        "name": c.id,
        "runtime": c.runtime,
        "createdTime": super::rfc3339(c.created),
        "checkpointedTime": super::rfc3339(c.checkpointed),
        "command": c.command,
        "stopSignal": 15,
        "stopTimeout": 10,
        "crabmigrate": c.crabmigrate,
    });
    if let Some((name, id)) = &c.image {
        doc["rootfsImageName"] = name.clone().into();
        doc["RawImageName"] = name.clone().into();
        // Podman's storage resolves a name where it expects an ID.
        doc["rootfsImageID"] = id.clone().unwrap_or_else(|| name.clone()).into();
    }
    doc
}

/// The extracted archive's `devshm-checkpoint.tar`, if it had one.
pub fn devshm(images_dir: &Path) -> Option<PathBuf> {
    Some(images_dir.join(DEVSHM_TAR)).filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_admitted_by_name_and_type() {
        let mut l = Layout::default();
        assert_eq!(Layout::normalize("./checkpoint/"), "checkpoint");
        assert_eq!(Layout::normalize("./"), "");
        assert_eq!(l.admit("", true).unwrap(), Admit::Skip);
        assert_eq!(l.admit("checkpoint", true).unwrap(), Admit::Skip);
        assert!(matches!(
            l.admit("checkpoint/core-1.img", false).unwrap(),
            Admit::File { target, .. } if target == "core-1.img"
        ));
        assert!(matches!(
            l.admit("spec.dump", false).unwrap(),
            Admit::File { limit, .. } if limit == MAX_DOCUMENT_BYTES
        ));
        assert!(l.admit("checkpoint/a/b", false).is_err());
        assert!(matches!(
            l.admit("pod.options", false),
            Err(ImportError::Pod(_))
        ));
        assert_eq!(l.admit("volumes/data.tar", false).unwrap(), Admit::Skip);
        assert_eq!(l.admit("unknown.bin", false).unwrap(), Admit::Skip);
        assert_eq!(l.notes.len(), 2, "{:?}", l.notes);
    }

    #[test]
    fn config_dump_names_the_image_and_a_podman_id() {
        let c = ConfigDump {
            id: "web".into(),
            created: 1_700_000_000,
            checkpointed: 1_700_000_100,
            runtime: "crabmigrate".into(),
            image: Some(("localhost/app:1".into(), None)),
            command: vec!["sh".into()],
            crabmigrate: serde_json::json!({}),
        };
        let doc = config_dump(&c);
        assert_eq!(doc["id"].as_str().unwrap().len(), 64);
        assert_eq!(doc["name"], "web");
        assert_eq!(doc["rootfsImageID"], "localhost/app:1");
        assert!(
            doc.get("rootfs").is_none(),
            "Podman refuses rootfs with an image"
        );
        let none = config_dump(&ConfigDump { image: None, ..c });
        assert!(none.get("rootfsImageName").is_none());
    }
}
