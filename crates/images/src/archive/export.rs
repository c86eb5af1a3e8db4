//! Writing a checkpoint archive.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{
    now_secs, rfc3339, Compression, Manifest, Member, MemberKind, Progress, CHECKPOINT_DIR,
    CONFIG_DUMP, DELETED_FILES, FORMAT, MANIFEST, ROOTFS_DIFF, SPEC_DUMP, TOP_LEVEL, VERSION,
};
use crate::{Checkpoint, OpenError};

/// What to export.
#[derive(Debug)]
pub struct ExportOptions<'a> {
    /// The images directory (it also holds `stats-dump` unless the dump used
    /// another work directory).
    pub images_dir: &'a Path,
    pub compression: Compression,
    /// The container the checkpoint belongs to, if any.
    pub container: Option<ContainerExport>,
    /// The CRIU version, recorded in the manifest.
    pub criu_version: Option<String>,
    /// The program writing the archive (`crabmigrate 0.1.0`).
    pub created_by: String,
}

/// The container parts of an archive.
#[derive(Debug)]
pub struct ContainerExport {
    /// The container's ID.
    pub id: String,
    /// Written as `config.dump`.
    pub config_dump: serde_json::Value,
    /// The bundle's `config.json`, written as `spec.dump`.
    pub spec: PathBuf,
    /// The rootfs whose changes go into `rootfs-diff.tar`.
    pub rootfs: PathBuf,
    /// Files changed (modified or status-changed) at or after this time are
    /// in `rootfs-diff.tar`.
    pub changed_since: SystemTime,
}

/// A written archive.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    pub output: PathBuf,
    pub compression: Compression,
    /// Members, the manifest included.
    pub members: usize,
    /// Bytes of the members before compression.
    pub bytes: u64,
    /// Bytes of the archive file.
    pub archive_bytes: u64,
    /// Files in `rootfs-diff.tar`, for a container.
    pub rootfs_diff_files: Option<usize>,
    /// Things left out, with why.
    pub warnings: Vec<String>,
}

/// Why an archive could not be written. No partial archive is left.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the checkpoint")]
    Checkpoint(#[source] OpenError),
    #[error("the checkpoint takes {0} pages from its parent images, which an archive does not hold; export a full dump (without --parent-dir)")]
    NeedsParent(u64),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} changed while it was being archived; export again once nothing writes to the checkpoint")]
    Changed(PathBuf),
    #[error("cannot write the rootfs changes")]
    Rootfs(#[source] super::RootfsError),
    #[error("cannot write the archive {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { what, path, source }
}

/// One file to archive.
struct Source {
    name: String,
    file: PathBuf,
}

/// Writes the archive `output` (atomically: a temporary file beside it,
/// renamed at the end).
pub fn export(
    opts: &ExportOptions<'_>,
    output: &Path,
    progress: &mut dyn Progress,
) -> Result<Exported, ExportError> {
    let checkpoint = Checkpoint::open(opts.images_dir).map_err(ExportError::Checkpoint)?;
    if checkpoint.summary.pages_in_parent > 0 {
        return Err(ExportError::NeedsParent(checkpoint.summary.pages_in_parent));
    }
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".crabmigrate-export-")
        .tempdir_in(&out_dir)
        .map_err(io_err("create a staging directory in", &out_dir))?;
    let mut warnings = Vec::new();
    let mut top: Vec<Source> = Vec::new();
    let mut rootfs_diff_files = None;
    if let Some(c) = &opts.container {
        let config = staging.path().join(CONFIG_DUMP);
        let text = serde_json::to_vec_pretty(&c.config_dump).unwrap_or_default();
        std::fs::write(&config, text).map_err(io_err("write", &config))?;
        top.push(Source {
            name: CONFIG_DUMP.into(),
            file: config,
        });
        top.push(Source {
            name: SPEC_DUMP.into(),
            file: c.spec.clone(),
        });
        let diff = staging.path().join(ROOTFS_DIFF);
        let written = super::write_rootfs_diff(&c.rootfs, c.changed_since, &diff)
            .map_err(ExportError::Rootfs)?;
        rootfs_diff_files = Some(written.files);
        warnings.extend(written.skipped);
        top.push(Source {
            name: ROOTFS_DIFF.into(),
            file: diff,
        });
        let deleted = staging.path().join(DELETED_FILES);
        std::fs::write(&deleted, b"[]\n").map_err(io_err("write", &deleted))?;
        top.push(Source {
            name: DELETED_FILES.into(),
            file: deleted,
        });
    }
    let mut images: Vec<Source> = Vec::new();
    for info in &checkpoint.images {
        let file = opts.images_dir.join(&info.name);
        if TOP_LEVEL.contains(&info.name.as_str()) {
            if info.name == MANIFEST || top.iter().any(|s| s.name == info.name) {
                continue;
            }
            top.push(Source {
                name: info.name.clone(),
                file,
            });
        } else {
            images.push(Source {
                name: format!("{CHECKPOINT_DIR}/{}", info.name),
                file,
            });
        }
    }
    skipped_entries(opts.images_dir, &mut warnings);

    // First pass: digests and sizes for the manifest.
    let mut members = vec![Member {
        path: CHECKPOINT_DIR.into(),
        kind: MemberKind::Dir,
        size: 0,
        sha256: None,
    }];
    let sources: Vec<&Source> = images.iter().chain(top.iter()).collect();
    let mut total = 0u64;
    for s in &sources {
        let (size, digest) = digest_file(&s.file)?;
        total = total.saturating_add(size);
        members.push(Member {
            path: s.name.clone(),
            kind: MemberKind::File,
            size,
            sha256: Some(digest),
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        created: rfc3339(now_secs()),
        created_by: opts.created_by.clone(),
        criu_version: opts
            .criu_version
            .clone()
            .or_else(|| checkpoint.criu_version.clone()),
        container: opts.container.as_ref().map(|c| c.id.clone()),
        members,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();

    // Second pass: the archive, checking that nothing changed meanwhile.
    let tmp = tempfile::Builder::new()
        .prefix(".crabmigrate-export-")
        .suffix(".part")
        .tempfile_in(&out_dir)
        .map_err(io_err("create a temporary archive in", &out_dir))?;
    let write_err = |source| ExportError::Write {
        path: output.to_path_buf(),
        source,
    };
    progress.begin(total);
    let sink = BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone().map_err(write_err)?);
    let mut encoder = Encoder::new(sink, opts.compression).map_err(write_err)?;
    {
        let mut tar = tar::Builder::new(&mut encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        append_bytes(&mut tar, MANIFEST, &manifest_bytes).map_err(write_err)?;
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_size(0);
        dir.set_mtime(now_secs());
        tar.append_data(&mut dir, CHECKPOINT_DIR, io::empty())
            .map_err(write_err)?;
        for (s, m) in sources.iter().zip(manifest.members.iter().skip(1)) {
            append_checked(&mut tar, s, m, progress, output)?;
        }
        tar.finish().map_err(write_err)?;
    }
    let sink = encoder.finish().map_err(write_err)?;
    let file = sink.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    let archive_bytes = file.metadata().map_err(write_err)?.len();
    tmp.persist(output).map_err(|e| write_err(e.error))?;
    progress.finish();
    Ok(Exported {
        output: output.to_path_buf(),
        compression: opts.compression,
        members: manifest.members.len() + 1,
        bytes: total.saturating_add(manifest_bytes.len() as u64),
        archive_bytes,
        rootfs_diff_files,
        warnings,
    })
}

/// Notes what in the images directory is not archived.
fn skipped_entries(dir: &Path, warnings: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten().take(crate::checkpoint::MAX_DIR_ENTRIES) {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.file_type().is_symlink() {
            "a symbolic link"
        } else {
            "not a regular file"
        };
        warnings.push(format!(
            "{name} in the images directory is {what} and was left out"
        ));
    }
}

/// Size and hex sha256 of a file.
fn digest_file(path: &Path) -> Result<(u64, String), ExportError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path)(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(bytes.len() as u64);
    h.set_mtime(now_secs());
    tar.append_data(&mut h, name, bytes)
}

/// Appends a file, hashing it again on the way and failing if its size or
/// digest no longer matches the manifest.
fn append_checked<W: Write>(
    tar: &mut tar::Builder<W>,
    s: &Source,
    m: &Member,
    progress: &mut dyn Progress,
    output: &Path,
) -> Result<(), ExportError> {
    let file = File::open(&s.file).map_err(io_err("open", &s.file))?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(m.size);
    h.set_mtime(now_secs());
    let mut reader = Checked {
        inner: file.take(m.size),
        hasher: Sha256::new(),
        read: 0,
        progress,
    };
    tar.append_data(&mut h, &s.name, &mut reader)
        .map_err(|source| ExportError::Write {
            path: output.to_path_buf(),
            source,
        })?;
    let digest = hex::encode(reader.hasher.finalize());
    if reader.read != m.size || Some(digest.as_str()) != m.sha256.as_deref() {
        return Err(ExportError::Changed(s.file.clone()));
    }
    Ok(())
}

/// A reader that hashes and counts what passes through.
struct Checked<'a, R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    progress: &'a mut dyn Progress,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// The compression layer under the tar stream.
enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    fn new(sink: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(sink, 3)?),
            Compression::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                sink,
                flate2::Compression::fast(),
            )),
            Compression::None => Self::None(sink),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Self::Zstd(e) => e.finish(),
            Self::Gzip(e) => e.finish(),
            Self::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Zstd(e) => e.write(buf),
            Self::Gzip(e) => e.write(buf),
            Self::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Zstd(e) => e.flush(),
            Self::Gzip(e) => e.flush(),
            Self::None(w) => w.flush(),
        }
    }
}
