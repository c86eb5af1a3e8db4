//! The manifest that guards every transferred file: plain relative names,
//! sizes and sha256 digests, checked on arrival before anything is used.
//!
//! The sender lists a directory ([`build`]); the receiver accepts chunks only
//! for listed files, within their declared sizes ([`Receiver`]), into a
//! staging directory, and [`Receiver::finish`] verifies every digest before
//! the files count as received.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::protocol::{FileChunk, Manifest, ManifestEntry};

/// The most files one manifest may list.
pub const MAX_FILES: usize = 100_000;
/// The largest single file (CRIU's pages files can be large, not this).
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Why a manifest or a chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("path {0:?} is not a plain relative name (absolute, empty, or with ..)")]
    BadPath(String),
    #[error("the manifest lists {0:?} twice")]
    Duplicate(String),
    #[error("the transfer holds {0} files or more, over the limit of {1}")]
    TooManyFiles(usize, usize),
    #[error("{path:?} is declared as {size} bytes, more than the limit")]
    TooLarge { path: String, size: u64 },
    #[error("a chunk for {0:?}, which the manifest does not list")]
    NotListed(String),
    #[error("a chunk writes past the declared size of {path:?} ({end} > {size} bytes)")]
    PastEnd { path: String, end: u64, size: u64 },
    #[error("{path:?} arrived with {got} bytes, {want} were declared")]
    SizeMismatch { path: String, got: u64, want: u64 },
    #[error(
        "{0:?} arrived with another sha256 than declared: it was corrupted in transit or on disk"
    )]
    DigestMismatch(String),
    #[error("{path} is not a regular file; only regular files can be sent")]
    NotRegular { path: PathBuf },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError {
    let path = path.to_path_buf();
    move |source| ManifestError::Io { what, path, source }
}

/// Checks that `name` is a plain relative path (`a/b.img`): no root, no
/// `..`, no `.`, not empty.
pub fn check_path(name: &str) -> Result<&Path, ManifestError> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && !name.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(path)
    } else {
        Err(ManifestError::BadPath(name.to_owned()))
    }
}

/// Lists the regular files under `dir` (recursively) with their digests.
/// Symbolic links and special files are refused.
pub fn build(dir: &Path) -> Result<Manifest, ManifestError> {
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries, true)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest {
        entries,
        more: false,
    })
}

/// Lists the regular files under `dir` (recursively) with their sizes, as
/// [`build`] does but without digests.
pub fn list(dir: &Path) -> Result<Vec<(String, u64)>, ManifestError> {
    let mut entries = Vec::new();
    walk(dir, Path::new(""), &mut entries, false)?;
    Ok(entries.into_iter().map(|e| (e.path, e.size)).collect())
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<ManifestEntry>,
    digests: bool,
) -> Result<(), ManifestError> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).map_err(io("list", &dir))? {
        let entry = entry.map_err(io("list", &dir))?;
        let rel_path = rel.join(entry.file_name());
        let path = root.join(&rel_path);
        let kind = entry.file_type().map_err(io("inspect", &path))?;
        if kind.is_dir() {
            walk(root, &rel_path, out, digests)?;
        } else if kind.is_file() {
            let (size, sha256) = if digests {
                digest_file(&path)?
            } else {
                let md = entry.metadata().map_err(io("inspect", &path))?;
                (md.len(), Vec::new())
            };
            out.push(ManifestEntry {
                path: rel_path.to_string_lossy().into_owned(),
                size,
                sha256,
            });
            if out.len() > MAX_FILES {
                return Err(ManifestError::TooManyFiles(out.len(), MAX_FILES));
            }
        } else {
            return Err(ManifestError::NotRegular { path });
        }
    }
    Ok(())
}

/// Size and sha256 of a file.
pub fn digest_file(path: &Path) -> Result<(u64, Vec<u8>), ManifestError> {
    let mut file = File::open(path).map_err(io("read", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().to_vec()))
}

/// Checks a received manifest before any chunk is accepted.
pub fn validate(manifest: &Manifest) -> Result<(), ManifestError> {
    validate_within(manifest, MAX_FILES)
}

/// [`validate`] with a lower limit of files.
pub fn validate_within(manifest: &Manifest, max_files: usize) -> Result<(), ManifestError> {
    let max_files = max_files.min(MAX_FILES);
    if manifest.entries.len() > max_files {
        return Err(ManifestError::TooManyFiles(
            manifest.entries.len(),
            max_files,
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &manifest.entries {
        check_path(&e.path)?;
        if e.size > MAX_FILE_SIZE {
            return Err(ManifestError::TooLarge {
                path: e.path.clone(),
                size: e.size,
            });
        }
        if !seen.insert(e.path.as_str()) {
            return Err(ManifestError::Duplicate(e.path.clone()));
        }
    }
    Ok(())
}

/// The chunks of a file as they are sent: `(offset, bytes)` pieces of at
/// most `chunk` bytes. An empty file is one empty chunk.
pub fn chunks(
    root: &Path,
    entry: &ManifestEntry,
    chunk: usize,
) -> Result<Vec<FileChunk>, ManifestError> {
    let path = root.join(check_path(&entry.path)?);
    let mut file = File::open(&path).map_err(io("read", &path))?;
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut data = vec![0u8; chunk];
        let n = file.read(&mut data).map_err(io("read", &path))?;
        data.truncate(n);
        if n == 0 && offset > 0 {
            break;
        }
        out.push(FileChunk {
            path: entry.path.clone(),
            offset,
            data,
        });
        offset += n as u64;
        if n == 0 {
            break;
        }
    }
    Ok(out)
}

/// Receives the files of one manifest into `dir`.
#[derive(Debug)]
pub struct Receiver {
    dir: PathBuf,
    expected: BTreeMap<String, ManifestEntry>,
}

impl Receiver {
    /// Validates `manifest` and prepares to receive into `dir` (created).
    pub fn new(dir: &Path, manifest: &Manifest) -> Result<Self, ManifestError> {
        validate(manifest)?;
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            expected: manifest
                .entries
                .iter()
                .map(|e| (e.path.clone(), e.clone()))
                .collect(),
        })
    }

    /// Writes one chunk, refusing unlisted files and writes past the
    /// declared size.
    pub fn write(&mut self, chunk: &FileChunk) -> Result<(), ManifestError> {
        let entry = self
            .expected
            .get(&chunk.path)
            .ok_or_else(|| ManifestError::NotListed(chunk.path.clone()))?;
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if end > entry.size {
            return Err(ManifestError::PastEnd {
                path: chunk.path.clone(),
                end,
                size: entry.size,
            });
        }
        let path = self.dir.join(check_path(&chunk.path)?);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        // O_NOFOLLOW: a link planted at the path is never followed.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&path)
            .map_err(io("write", &path))?;
        file.seek(SeekFrom::Start(chunk.offset))
            .and_then(|_| file.write_all(&chunk.data))
            .map_err(io("write", &path))
    }

    /// Checks that every listed file arrived whole with its digest.
    pub fn finish(self) -> Result<PathBuf, ManifestError> {
        for entry in self.expected.values() {
            let path = self.dir.join(check_path(&entry.path)?);
            let (size, sha256) = match digest_file(&path) {
                Ok(d) => d,
                Err(_) if entry.size == 0 => {
                    File::create(&path).map_err(io("create", &path))?;
                    digest_file(&path)?
                }
                Err(e) => return Err(e),
            };
            if size != entry.size {
                return Err(ManifestError::SizeMismatch {
                    path: entry.path.clone(),
                    got: size,
                    want: entry.size,
                });
            }
            if sha256 != entry.sha256 {
                return Err(ManifestError::DigestMismatch(entry.path.clone()));
            }
        }
        Ok(self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        fs::write(dir.join("inventory.img"), b"inventory").unwrap();
        fs::write(dir.join("pages-1.img"), vec![7u8; 200_000]).unwrap();
        fs::write(dir.join("empty.img"), b"").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/x"), b"x").unwrap();
    }

    fn transfer(src: &Path, dst: &Path, manifest: &Manifest) -> Result<PathBuf, ManifestError> {
        let mut rx = Receiver::new(dst, manifest)?;
        for entry in &manifest.entries {
            for chunk in chunks(src, entry, 64 * 1024)? {
                rx.write(&chunk)?;
            }
        }
        rx.finish()
    }

    #[test]
    fn a_directory_arrives_whole() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        sample(src.path());
        let manifest = build(src.path()).unwrap();
        let names: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            vec!["empty.img", "inventory.img", "pages-1.img", "sub/x"]
        );
        let out = transfer(src.path(), &dst.path().join("in"), &manifest).unwrap();
        for name in names {
            assert_eq!(
                fs::read(out.join(name)).unwrap(),
                fs::read(src.path().join(name)).unwrap()
            );
        }
    }

    #[test]
    fn corruption_and_bad_paths_are_refused() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        sample(src.path());
        let manifest = build(src.path()).unwrap();
        // Corrupt a byte after the manifest was made.
        let mut pages = fs::read(src.path().join("pages-1.img")).unwrap();
        pages[1000] ^= 1;
        fs::write(src.path().join("pages-1.img"), pages).unwrap();
        let err = transfer(src.path(), &dst.path().join("a"), &manifest).unwrap_err();
        assert!(
            matches!(err, ManifestError::DigestMismatch(ref p) if p == "pages-1.img"),
            "{err}"
        );

        for bad in ["../x", "/etc/passwd", "", "a/../../b", "./a"] {
            let m = Manifest {
                entries: vec![ManifestEntry {
                    path: bad.into(),
                    size: 1,
                    sha256: vec![],
                }],
                more: false,
            };
            assert!(
                matches!(validate(&m), Err(ManifestError::BadPath(_))),
                "{bad:?}"
            );
        }
        let twice = Manifest {
            entries: vec![
                ManifestEntry {
                    path: "a".into(),
                    size: 1,
                    sha256: vec![],
                },
                ManifestEntry {
                    path: "a".into(),
                    size: 1,
                    sha256: vec![],
                },
            ],
            more: false,
        };
        assert!(matches!(validate(&twice), Err(ManifestError::Duplicate(_))));

        let mut rx = Receiver::new(&dst.path().join("b"), &manifest).unwrap();
        let stray = FileChunk {
            path: "other".into(),
            offset: 0,
            data: vec![1],
        };
        assert!(matches!(rx.write(&stray), Err(ManifestError::NotListed(_))));
        let past = FileChunk {
            path: "inventory.img".into(),
            offset: 5,
            data: vec![0; 10],
        };
        assert!(matches!(
            rx.write(&past),
            Err(ManifestError::PastEnd { .. })
        ));
        // A truncated transfer fails the size check.
        let part = FileChunk {
            path: "inventory.img".into(),
            offset: 0,
            data: b"inv".to_vec(),
        };
        rx.write(&part).unwrap();
        assert!(rx.finish().is_err());
    }

    #[test]
    fn links_are_neither_sent_nor_followed() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        assert!(matches!(
            build(src.path()),
            Err(ManifestError::NotRegular { .. })
        ));
        let target = dst.path().join("outside");
        fs::write(&target, b"keep").unwrap();
        let manifest = Manifest {
            entries: vec![ManifestEntry {
                path: "f".into(),
                size: 4,
                sha256: vec![],
            }],
            more: false,
        };
        let staging = dst.path().join("in");
        let mut rx = Receiver::new(&staging, &manifest).unwrap();
        std::os::unix::fs::symlink(&target, staging.join("f")).unwrap();
        let chunk = FileChunk {
            path: "f".into(),
            offset: 0,
            data: b"evil".to_vec(),
        };
        assert!(
            rx.write(&chunk).is_err(),
            "a planted link must not be followed"
        );
        assert_eq!(fs::read(&target).unwrap(), b"keep");
    }
}
