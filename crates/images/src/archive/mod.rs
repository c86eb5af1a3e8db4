//! Checkpoint archives: one file holding a checkpoint and what a restore
//! elsewhere needs, laid out like Podman's and CRI-O's where the concepts
//! overlap, plus a manifest with the sha256 of every member.
//!
//! ```text
//! crabmigrate-manifest.json   first member: every other member, its size and sha256
//! checkpoint/                 CRIU's images
//! config.dump                 the container's metadata (id, name, createdTime, ...)
//! spec.dump                   the container's OCI spec (its config.json)
//! rootfs-diff.tar             files of the rootfs changed since the container started
//! deleted.files               JSON list of rootfs files deleted (always empty, see docs)
//! network.status              the container's CNI network attachment, when it has one
//! stats-dump                  CRIU's dump statistics
//! ```
//!
//! [`export()`] writes one; [`import()`] checks one while it extracts it and
//! leaves nothing behind when it refuses it. [`import()`] also takes
//! Podman's archives (`podman container checkpoint --export`), which carry
//! no manifest, and `config.dump` is written so that `podman container
//! restore --import` takes crabmigrate's (see [`podman`]).

mod export;
mod import;
pub mod podman;
mod rootfs;

use std::io::Read;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

pub use export::{export, ContainerExport, ExportError, ExportOptions, Exported};
pub use import::{import, ArchiveFormat, ImportError, Imported};
pub use podman::{config_dump, ConfigDump, PodmanContainer};
pub use rootfs::{apply_rootfs_diff, write_rootfs_diff, RootfsApplied, RootfsDiff, RootfsError};

/// The manifest's name, first in every archive.
pub const MANIFEST: &str = "crabmigrate-manifest.json";
/// The directory holding CRIU's images (as in Podman's archives).
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The container's metadata (Podman: `config.dump`).
pub const CONFIG_DUMP: &str = "config.dump";
/// The container's OCI spec (Podman: `spec.dump`).
pub const SPEC_DUMP: &str = "spec.dump";
/// Changed rootfs files (Podman: `rootfs-diff.tar`).
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
/// Deleted rootfs files, a JSON list (Podman: `deleted.files`).
pub const DELETED_FILES: &str = "deleted.files";
/// The container's CNI network attachment (Podman: `network.status`); the
/// runtime writes it into the images directory, the archive keeps it at
/// the top and import puts it back beside the images.
pub const NETWORK_STATUS: &str = "network.status";
/// The `format` field of every manifest.
pub const FORMAT: &str = "crabmigrate-checkpoint-archive";
/// The manifest version written and read.
pub const VERSION: u32 = 1;
/// The largest manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// The most members an archive may have.
pub const MAX_MEMBERS: usize = 1 << 20;
/// The largest member (a pages file of a very large process).
pub const MAX_MEMBER_BYTES: u64 = 1 << 42;

/// Members that sit at the top of an archive, beside `checkpoint/`.
pub(crate) const TOP_LEVEL: &[&str] = &[
    MANIFEST,
    CONFIG_DUMP,
    SPEC_DUMP,
    ROOTFS_DIFF,
    DELETED_FILES,
    NETWORK_STATUS,
    "stats-dump",
    "stats-restore",
];

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (Podman's default).
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// A plain tar (as CRI-O writes).
    None,
}

impl Compression {
    /// Recognises the compression from an archive's first bytes.
    pub fn sniff(head: &[u8]) -> Self {
        match head {
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            [0x1f, 0x8b, ..] => Self::Gzip,
            _ => Self::None,
        }
    }
}

/// Reports progress of a long export or import. Every method has an empty
/// default.
pub trait Progress {
    /// The work is `total` bytes.
    fn begin(&mut self, _total: u64) {}
    /// `bytes` more are done.
    fn advance(&mut self, _bytes: u64) {}
    /// All is done.
    fn finish(&mut self) {}
}

/// No progress reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// The manifest: what the archive holds and the digest of each file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// When the archive was written (RFC 3339, UTC).
    pub created: String,
    /// The program that wrote it (`crabmigrate 0.1.0`).
    pub created_by: String,
    /// The CRIU that wrote the images, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_version: Option<String>,
    /// The container checkpointed, when the archive holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Every other member, in archive order.
    pub members: Vec<Member>,
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Relative path inside the archive, `/`-separated.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: MemberKind,
    /// Size in bytes (files only).
    #[serde(default)]
    pub size: u64,
    /// Hex sha256 of the contents (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    File,
    Dir,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the manifest is not valid: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Reads a manifest file (bounded).
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let read_err = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        Self::parse(&bytes)
    }

    /// Parses and validates a manifest: format and version, plain relative
    /// paths, no duplicates, no more than [`MAX_MEMBERS`], a digest for every
    /// file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Invalid(format!(
                "it is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Invalid(format!(
                "its format is {:?}, not {FORMAT:?}",
                m.format
            )));
        }
        if m.version != VERSION {
            return Err(ManifestError::Invalid(format!(
                "it is version {}, this crabmigrate reads version {VERSION}",
                m.version
            )));
        }
        if m.members.len() > MAX_MEMBERS {
            return Err(ManifestError::Invalid(format!(
                "it lists {} members, more than {MAX_MEMBERS}",
                m.members.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for member in &m.members {
            if let Err(why) = plain_relative(&member.path) {
                return Err(ManifestError::Invalid(format!(
                    "member {:?} {why}",
                    member.path
                )));
            }
            if member.path == MANIFEST {
                return Err(ManifestError::Invalid("it lists itself".into()));
            }
            if !seen.insert(member.path.as_str()) {
                return Err(ManifestError::Invalid(format!(
                    "it lists {:?} twice",
                    member.path
                )));
            }
            match member.kind {
                MemberKind::File => {
                    let ok = member
                        .sha256
                        .as_deref()
                        .is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
                    if !ok {
                        return Err(ManifestError::Invalid(format!(
                            "file {:?} has no valid sha256",
                            member.path
                        )));
                    }
                    if member.size > MAX_MEMBER_BYTES {
                        return Err(ManifestError::Invalid(format!(
                            "file {:?} is declared as {} bytes, more than {MAX_MEMBER_BYTES}",
                            member.path, member.size
                        )));
                    }
                }
                MemberKind::Dir => {}
            }
        }
        Ok(m)
    }
}

/// Checks that `path` is relative, made of plain names only (no `..`, `.`,
/// empty parts or a leading `/`). The error says what is wrong.
pub(crate) fn plain_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("has an empty path");
    }
    if path.len() > 4096 {
        return Err("has a path longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return Err("has an absolute path");
    }
    if path.contains('\0') {
        return Err("has a NUL byte in its path");
    }
    for part in path.split('/') {
        match part {
            ".." => return Err("has a path with \"..\" that climbs out of the extraction root"),
            "" | "." => return Err("has an empty or \".\" path component"),
            _ => {}
        }
    }
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err("has a path that is not plain relative names");
    }
    Ok(())
}

/// Seconds since the epoch as RFC 3339 (UTC, second precision).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn paths() {
        assert!(plain_relative("checkpoint/core-1.img").is_ok());
        assert!(plain_relative("/etc/passwd").is_err());
        assert!(plain_relative("a/../../b").is_err());
        assert!(plain_relative("a//b").is_err());
        assert!(plain_relative("./a").is_err());
        assert!(plain_relative("").is_err());
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(b"checkpoint"), Compression::None);
    }
}
