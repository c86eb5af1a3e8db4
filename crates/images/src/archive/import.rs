//! Reading a checkpoint archive into an images directory, checking every
//! member as it is extracted.
//!
//! crabmigrate's archives: the manifest comes first; every later member
//! must be listed in it with the same type; files are exactly as large as
//! declared and match their sha256; every listed member must arrive.
//! Podman's archives (no manifest, no digests): members are admitted by
//! name and type (see [`super::podman`]), bounded in size, and the result is
//! checked (the JSON documents parse, CRIU's images open) before it is kept.
//! Either way: paths are plain relative names (no absolute path, no `..`);
//! links, device nodes, fifos and anything else are refused. Extraction
//! goes into a temporary directory beside the target, renamed into place
//! only once everything checked out, so a refused archive leaves nothing
//! behind.
//!
//! Layout of the result: the images (`checkpoint/*`) at the top of the
//! target directory, as CRIU wants them, and the other members (spec,
//! config, rootfs diff, stats, the manifest) beside them, as in a work
//! directory that is also the images directory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{
    Compression, Manifest, MemberKind, Progress, CHECKPOINT_DIR, CONFIG_DUMP, DELETED_FILES,
    MANIFEST, MAX_MANIFEST_BYTES, ROOTFS_DIFF, SPEC_DUMP,
};

/// Whose layout an archive has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    /// `crabmigrate export`: a manifest with every member's sha256.
    Crabmigrate,
    /// `podman container checkpoint --export`: no digests.
    Podman,
}

/// An extracted archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// The images directory written.
    pub images_dir: PathBuf,
    pub format: ArchiveFormat,
    /// The manifest (crabmigrate's archives).
    pub manifest: Option<Manifest>,
    /// What `config.dump` says (Podman's archives).
    pub podman: Option<super::PodmanContainer>,
    pub compression: Compression,
    /// Files written (the manifest included).
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// `rootfs-diff.tar`, when the archive has one.
    pub rootfs_diff: Option<PathBuf>,
    /// `deleted.files`, when the archive has one.
    pub deleted_files: Option<PathBuf>,
    /// `spec.dump`, when the archive has one.
    pub spec: Option<PathBuf>,
    /// `config.dump`, when the archive has one.
    pub config: Option<PathBuf>,
    /// `devshm-checkpoint.tar` (Podman: the contents of `/dev/shm`).
    pub devshm: Option<PathBuf>,
    /// What was left out or could not be checked.
    pub notes: Vec<String>,
}

impl Imported {
    /// Whether every member was checked against a digest.
    pub fn verified(&self) -> bool {
        self.manifest.is_some()
    }
}

/// Why an archive was refused. Nothing of it is left on disk.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} exists and is not empty; import into a new or empty directory")]
    NotEmpty(PathBuf),
    /// Plain bytes that are no tar header. tar's own words quote the bytes
    /// it could not read, which are no use to anyone, so they are dropped.
    #[error(
        "it is not a tar archive (plain, zstd or gzip); give a file written by crabmigrate export"
    )]
    NotArchive,
    #[error("it is not a checkpoint archive: it starts with no {MANIFEST} (crabmigrate's) and has no {missing} (Podman's)")]
    NotCheckpointArchive { missing: &'static str },
    #[error("it is a Podman pod checkpoint ({0}); crabmigrate restores single containers: export each container with podman container checkpoint --export")]
    Pod(String),
    #[error("{member} is not valid: {problem}")]
    BadDocument {
        member: &'static str,
        problem: String,
    },
    #[error("its CRIU images are damaged")]
    Images(#[source] crate::OpenError),
    #[error("the archive's manifest is refused")]
    Manifest(#[source] super::ManifestError),
    #[error("member {member:?} is refused: it {why}")]
    UnsafePath { member: String, why: &'static str },
    #[error("member {member:?} is refused: it is a link to {target:?}, which points out of the extraction root")]
    LinkOutside { member: String, target: String },
    #[error(
        "member {member:?} is refused: it is a {kind}, which a checkpoint archive never holds"
    )]
    Special { member: String, kind: String },
    #[error("member {0:?} is refused: the manifest does not list it")]
    NotListed(String),
    #[error("member {member:?} is refused: the manifest lists it as a {declared}")]
    WrongType {
        member: String,
        declared: &'static str,
    },
    #[error("member {0:?} appears twice")]
    Duplicate(String),
    #[error(
        "member {member:?} is {size} bytes, larger than the {declared} declared in the manifest"
    )]
    Oversize {
        member: String,
        size: u64,
        declared: u64,
    },
    #[error("member {member:?} is {size} bytes, more than the {limit} such a member may have")]
    TooLarge {
        member: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "member {member:?} is {size} bytes, smaller than the {declared} declared in the manifest"
    )]
    Undersize {
        member: String,
        size: u64,
        declared: u64,
    },
    #[error("member {member:?} does not match its sha256 in the manifest (expected {expected}, got {actual}); the archive is damaged or was altered")]
    Digest {
        member: String,
        expected: String,
        actual: String,
    },
    #[error("the archive is truncated: {missing} member(s) of the manifest never came, the first being {first:?}")]
    Truncated { missing: usize, first: String },
    #[error("the archive is truncated or damaged")]
    Corrupt(#[source] io::Error),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImportError {
    let path = path.to_path_buf();
    move |source| ImportError::Io { what, path, source }
}

/// Where a member goes in the images directory.
fn target_of(member: &str) -> Option<&str> {
    if member == CHECKPOINT_DIR {
        return None;
    }
    Some(member.strip_prefix("checkpoint/").unwrap_or(member))
}

/// How members are admitted.
enum Policy<'m> {
    /// crabmigrate's archives: every member as the manifest declares it.
    Manifest(HashMap<&'m str, &'m super::Member>),
    /// Podman's archives: by name and type (they carry no digests).
    Podman(super::podman::Layout),
}

/// Extracts `archive` into the images directory `dest` (created; it must
/// not exist or be empty). The archive is crabmigrate's (its manifest
/// first, every digest checked) or Podman's (`checkpoint/`, `config.dump`,
/// `spec.dump`, ...: checked as far as a layout without digests can be).
pub fn import(
    archive: &Path,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<Imported, ImportError> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ImportError::NotEmpty(dest.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(ImportError::NotEmpty(dest.to_path_buf()))
        }
        Err(e) => return Err(io_err("read", dest)(e)),
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .map_err(io_err("create", &parent))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "images".into());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .tempdir_in(&parent)
        .map_err(io_err("create a staging directory in", &parent))?;

    let file = File::open(archive).map_err(|source| ImportError::Open {
        path: archive.to_path_buf(),
        source,
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.begin(total);
    let mut input = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: file,
            progress,
        },
    );
    let head = input.fill_buf_head().map_err(ImportError::Corrupt)?;
    let compression = Compression::sniff(&head);
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(ImportError::Corrupt)?)
        }
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
        Compression::None => Box::new(input),
    };
    let mut tar = tar::Archive::new(decoded);
    let mut entries = tar.entries().map_err(ImportError::Corrupt)?;
    let root = staging.path();
    let mut out = Extracted::default();

    // The manifest comes first in crabmigrate's archives.
    let mut first = match entries.next() {
        // A compressed stream that breaks off is damaged; plain bytes that
        // are no tar header are no archive.
        Some(e) => e.map_err(|e| match compression {
            Compression::None => {
                tracing::debug!(error = %e, "not a tar header");
                ImportError::NotArchive
            }
            _ => ImportError::Corrupt(e),
        })?,
        None => {
            return Err(ImportError::NotCheckpointArchive {
                missing: CONFIG_DUMP,
            })
        }
    };
    let first_path = first
        .path()
        .map_err(ImportError::Corrupt)?
        .to_string_lossy()
        .into_owned();
    let manifest =
        if first_path == MANIFEST && first.header().entry_type() == tar::EntryType::Regular {
            if first.size() > MAX_MANIFEST_BYTES {
                return Err(ImportError::Manifest(super::ManifestError::Invalid(
                    format!("it is larger than {MAX_MANIFEST_BYTES} bytes"),
                )));
            }
            let mut manifest_bytes = Vec::new();
            (&mut first)
                .take(MAX_MANIFEST_BYTES)
                .read_to_end(&mut manifest_bytes)
                .map_err(ImportError::Corrupt)?;
            let manifest = Manifest::parse(&manifest_bytes).map_err(ImportError::Manifest)?;
            // Two members may not land on one path once checkpoint/ is flattened.
            let mut targets = HashSet::new();
            for m in &manifest.members {
                if let Some(t) = target_of(&m.path) {
                    if t == MANIFEST || !targets.insert(t) {
                        return Err(ImportError::Manifest(super::ManifestError::Invalid(
                            format!("{:?} would overwrite another member", m.path),
                        )));
                    }
                }
            }
            write_new(&root.join(MANIFEST), &manifest_bytes)?;
            out.bytes = manifest_bytes.len() as u64;
            out.files = 1;
            Some(manifest)
        } else {
            None
        };
    let mut policy = match &manifest {
        Some(m) => Policy::Manifest(m.members.iter().map(|m| (m.path.as_str(), m)).collect()),
        None => Policy::Podman(super::podman::Layout::default()),
    };
    let mut buf = vec![0u8; 1 << 20];
    if manifest.is_none() {
        extract_entry(&mut first, &mut policy, root, &mut out, &mut buf)?;
    }
    drop(first);
    for entry in entries {
        let mut entry = entry.map_err(ImportError::Corrupt)?;
        extract_entry(&mut entry, &mut policy, root, &mut out, &mut buf)?;
    }
    let (format, podman, notes) = match &mut policy {
        Policy::Manifest(_) => {
            let missing: Vec<&str> = manifest
                .iter()
                .flat_map(|m| m.members.iter())
                .map(|m| m.path.as_str())
                .filter(|p| !out.seen.contains(*p))
                .collect();
            if let Some(first) = missing.first() {
                return Err(ImportError::Truncated {
                    missing: missing.len(),
                    first: (*first).to_owned(),
                });
            }
            (ArchiveFormat::Crabmigrate, None, Vec::new())
        }
        Policy::Podman(layout) => {
            let container = layout.finish(root)?;
            (
                ArchiveFormat::Podman,
                Some(container),
                std::mem::take(&mut layout.notes),
            )
        }
    };
    drop(tar);
    progress.finish();

    // Everything checked out: move it into place.
    if dest.exists() {
        std::fs::remove_dir(dest).map_err(io_err("replace the empty directory", dest))?;
    }
    let kept = staging.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(io_err("move the extracted archive to", dest)(e));
    }
    let at = |name: &str| Some(dest.join(name)).filter(|p| p.is_file());
    Ok(Imported {
        images_dir: dest.to_path_buf(),
        format,
        compression,
        files: out.files,
        bytes: out.bytes,
        rootfs_diff: at(ROOTFS_DIFF),
        deleted_files: at(DELETED_FILES),
        spec: at(SPEC_DUMP),
        config: at(CONFIG_DUMP),
        devshm: super::podman::devshm(dest),
        podman,
        notes,
        manifest,
    })
}

/// What the extraction has done so far.
#[derive(Default)]
struct Extracted {
    files: usize,
    bytes: u64,
    /// Members met (as named in the archive, normalised).
    seen: HashSet<String>,
    /// Paths written in the target.
    targets: HashSet<String>,
}

/// Checks one member against the policy and writes it below `root`.
fn extract_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    policy: &mut Policy<'_>,
    root: &Path,
    out: &mut Extracted,
    buf: &mut [u8],
) -> Result<(), ImportError> {
    use tar::EntryType as T;
    let raw_path = entry
        .path()
        .map_err(ImportError::Corrupt)?
        .to_string_lossy()
        .into_owned();
    let kind = entry.header().entry_type();
    if kind == T::XGlobalHeader {
        return Ok(());
    }
    let member = match policy {
        Policy::Manifest(_) => raw_path.trim_end_matches('/').to_owned(),
        Policy::Podman(_) => super::podman::Layout::normalize(&raw_path),
    };
    let root_entry = member.is_empty() && matches!(policy, Policy::Podman(_));
    if !root_entry {
        if let Err(why) = super::plain_relative(&member) {
            return Err(ImportError::UnsafePath { member, why });
        }
    }
    match kind {
        T::Symlink | T::Link => {
            let target = entry
                .link_name()
                .map_err(ImportError::Corrupt)?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let escapes = target.starts_with('/')
                || target.split('/').any(|p| p == "..")
                || target.is_empty();
            if escapes || kind == T::Link {
                return Err(ImportError::LinkOutside { member, target });
            }
            // A relative link below its own directory: still not part of
            // any checkpoint archive.
            return Err(ImportError::Special {
                member,
                kind: "symbolic link".into(),
            });
        }
        T::Char => return Err(special(member, "character device node")),
        T::Block => return Err(special(member, "block device node")),
        T::Fifo => return Err(special(member, "fifo")),
        T::Regular | T::Continuous | T::Directory => {}
        other => return Err(special(member, &format!("tar entry of type {other:?}"))),
    }
    let is_dir = kind == T::Directory;
    if !root_entry && !out.seen.insert(member.clone()) {
        return Err(ImportError::Duplicate(member));
    }
    // Where it goes, and what it must match.
    let (target, limit, expect) = match policy {
        Policy::Manifest(declared) => {
            let Some(m) = declared.get(member.as_str()) else {
                return Err(ImportError::NotListed(member));
            };
            match (is_dir, m.kind) {
                (true, MemberKind::Dir) | (false, MemberKind::File) => {}
                (_, MemberKind::Dir) => {
                    return Err(ImportError::WrongType {
                        member,
                        declared: "directory",
                    })
                }
                (_, MemberKind::File) => {
                    return Err(ImportError::WrongType {
                        member,
                        declared: "file",
                    })
                }
            }
            let Some(target) = target_of(&member) else {
                return Ok(()); // checkpoint/ itself: the staging directory
            };
            (target.to_owned(), m.size, Some((m.size, m.sha256.clone())))
        }
        Policy::Podman(layout) => match layout.admit(&member, is_dir)? {
            super::podman::Admit::Skip => return Ok(()),
            super::podman::Admit::File { target, limit } => (target, limit, None),
        },
    };
    let path = root.join(&target);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err("create", parent))?;
    }
    if is_dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io_err("create", &path))?;
        return Ok(());
    }
    if !out.targets.insert(target.clone()) {
        return Err(ImportError::Duplicate(member));
    }
    let size = entry.size();
    match expect {
        Some((declared, _)) if size > declared => {
            return Err(ImportError::Oversize {
                member,
                size,
                declared,
            })
        }
        Some((declared, _)) if size < declared => {
            return Err(ImportError::Undersize {
                member,
                size,
                declared,
            })
        }
        None if size > limit => {
            return Err(ImportError::TooLarge {
                member,
                size,
                limit,
            })
        }
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(&path)
        .map_err(io_err("create", &path))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    // Never more than allowed, whatever the entry claims.
    let mut limited = entry.take(limit.saturating_add(1));
    loop {
        let n = match limited.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImportError::Corrupt(e)),
        };
        written += n as u64;
        if written > limit {
            return Err(match expect {
                Some((declared, _)) => ImportError::Oversize {
                    member,
                    size: written,
                    declared,
                },
                None => ImportError::TooLarge {
                    member,
                    size: written,
                    limit,
                },
            });
        }
        if expect.is_some() {
            hasher.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).map_err(io_err("write", &path))?;
    }
    if written < size {
        return Err(ImportError::Corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("member {member:?} ends after {written} of {size} bytes"),
        )));
    }
    if let Some((_, digest)) = expect {
        let actual = hex::encode(hasher.finalize());
        let expected = digest.unwrap_or_default();
        if !actual.eq_ignore_ascii_case(&expected) {
            return Err(ImportError::Digest {
                member,
                expected,
                actual,
            });
        }
    }
    file.sync_all().map_err(io_err("write", &path))?;
    out.bytes += written;
    out.files += 1;
    Ok(())
}

fn special(member: String, kind: &str) -> ImportError {
    ImportError::Special {
        member,
        kind: kind.to_owned(),
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ImportError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io_err("write", path))
}

/// Counts the compressed bytes read, for progress.
struct Counting<'a, R> {
    inner: R,
    progress: &'a mut dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Peeks at the first bytes of a buffered reader without consuming them.
trait FillHead {
    fn fill_buf_head(&mut self) -> io::Result<Vec<u8>>;
}

impl<R: Read> FillHead for BufReader<R> {
    fn fill_buf_head(&mut self) -> io::Result<Vec<u8>> {
        use std::io::BufRead;
        Ok(self.fill_buf()?.iter().take(8).copied().collect())
    }
}
