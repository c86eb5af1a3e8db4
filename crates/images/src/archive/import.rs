//! Reading a checkpoint archive into an images directory, checking every
//! member against the manifest as it is extracted.
//!
//! Rules: the manifest comes first; every later member must be listed in it
//! with the same type; paths are plain relative names (no absolute path, no
//! `..`); files are exactly as large as declared and match their sha256;
//! links, device nodes, fifos and anything else are refused; every listed
//! member must arrive. Extraction goes into a temporary directory beside the
//! target, renamed into place only once everything checked out, so a
//! refused archive leaves nothing behind.
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
    Compression, Manifest, MemberKind, Progress, CHECKPOINT_DIR, DELETED_FILES, MANIFEST,
    MAX_MANIFEST_BYTES, ROOTFS_DIFF, SPEC_DUMP,
};

/// An extracted archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// The images directory written.
    pub images_dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
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
    #[error("the archive does not start with {MANIFEST}; it was not written by crabmigrate export (or is damaged)")]
    NoManifest,
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

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImportError {
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

/// Extracts `archive` into the images directory `dest` (created; it must
/// not exist or be empty).
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

    // The manifest, first.
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
        None => return Err(ImportError::NoManifest),
    };
    let first_path = first
        .path()
        .map_err(ImportError::Corrupt)?
        .to_string_lossy()
        .into_owned();
    if first_path != MANIFEST || first.header().entry_type() != tar::EntryType::Regular {
        return Err(ImportError::NoManifest);
    }
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
    let root = staging.path();
    write_new(&root.join(MANIFEST), &manifest_bytes)?;
    let mut bytes = manifest_bytes.len() as u64;
    let mut files = 1usize;

    let declared: HashMap<&str, &super::Member> = manifest
        .members
        .iter()
        .map(|m| (m.path.as_str(), m))
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    for entry in entries {
        let mut entry = entry.map_err(ImportError::Corrupt)?;
        let raw_path = entry
            .path()
            .map_err(ImportError::Corrupt)?
            .to_string_lossy()
            .into_owned();
        let member = raw_path.trim_end_matches('/').to_owned();
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if kind == T::XGlobalHeader {
            continue;
        }
        if let Err(why) = super::plain_relative(&member) {
            return Err(ImportError::UnsafePath { member, why });
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
                // A relative link below its own directory: still not part
                // of any crabmigrate archive.
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
        let Some(m) = declared.get(member.as_str()) else {
            return Err(ImportError::NotListed(member));
        };
        if !seen.insert(member.clone()) {
            return Err(ImportError::Duplicate(member));
        }
        let Some(target) = target_of(&member) else {
            continue; // checkpoint/ itself: the staging directory
        };
        let path = root.join(target);
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err("create", parent))?;
        }
        match (kind, m.kind) {
            (T::Directory, MemberKind::Dir) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&path)
                    .map_err(io_err("create", &path))?;
            }
            (T::Regular | T::Continuous, MemberKind::File) => {
                let size = entry.size();
                if size > m.size {
                    return Err(ImportError::Oversize {
                        member,
                        size,
                        declared: m.size,
                    });
                }
                if size < m.size {
                    return Err(ImportError::Undersize {
                        member,
                        size,
                        declared: m.size,
                    });
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                let mut hasher = Sha256::new();
                let mut written = 0u64;
                // Never more than declared, whatever the entry claims.
                let mut limited = (&mut entry).take(m.size.saturating_add(1));
                loop {
                    let n = match limited.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(ImportError::Corrupt(e)),
                    };
                    written += n as u64;
                    if written > m.size {
                        return Err(ImportError::Oversize {
                            member,
                            size: written,
                            declared: m.size,
                        });
                    }
                    hasher.update(&buf[..n]);
                    out.write_all(&buf[..n]).map_err(io_err("write", &path))?;
                }
                if written < m.size {
                    return Err(ImportError::Corrupt(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("member {member:?} ends after {written} of {} bytes", m.size),
                    )));
                }
                let actual = hex::encode(hasher.finalize());
                let expected = m.sha256.clone().unwrap_or_default();
                if !actual.eq_ignore_ascii_case(&expected) {
                    return Err(ImportError::Digest {
                        member,
                        expected,
                        actual,
                    });
                }
                out.sync_all().map_err(io_err("write", &path))?;
                bytes += written;
                files += 1;
            }
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
    }
    let missing: Vec<&str> = manifest
        .members
        .iter()
        .map(|m| m.path.as_str())
        .filter(|p| !seen.contains(*p))
        .collect();
    if let Some(first) = missing.first() {
        return Err(ImportError::Truncated {
            missing: missing.len(),
            first: (*first).to_owned(),
        });
    }
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
    let at = |name: &str| declared.contains_key(name).then(|| dest.join(name));
    Ok(Imported {
        images_dir: dest.to_path_buf(),
        compression,
        files,
        bytes,
        rootfs_diff: at(ROOTFS_DIFF),
        deleted_files: at(DELETED_FILES),
        spec: at(SPEC_DUMP),
        manifest,
    })
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
