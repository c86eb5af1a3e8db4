//! Bounded reading of image files: the header words, then length-prefixed
//! protobuf entries. Every length is checked against the bytes that are
//! actually there, and every count is capped, so hostile files cost at most
//! their own size in memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::magic;

/// The largest metadata image read into memory. Page data (`pages-*.img`)
/// is never read; the largest metadata images (pagemaps, mm) of a
/// terabyte-sized process stay far below this.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;
/// The most entries decoded from one image.
pub const MAX_ENTRIES: usize = 1 << 22;

/// Why an image file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any real image of its kind.
    #[error("{path} is {size} bytes, more than the {MAX_IMAGE_BYTES} an image may have")]
    TooLarge { path: PathBuf, size: u64 },
    /// The first words are not what the file name promises.
    #[error("{path} has magic {found}, not the {expected} magic a {kind} image starts with")]
    WrongMagic {
        path: PathBuf,
        found: String,
        expected: String,
        kind: &'static str,
    },
    /// The magic is none CRIU writes.
    #[error(
        "{path} has an unknown image magic {magic:#010x}; it was not written by CRIU or is damaged"
    )]
    UnknownMagic { path: PathBuf, magic: u32 },
    /// An entry is cut short, too long, or does not decode.
    #[error("{path}: {why} at offset {offset}")]
    Entry {
        path: PathBuf,
        offset: usize,
        why: String,
    },
    /// More entries than any real image has.
    #[error("{path} holds more than {MAX_ENTRIES} entries")]
    TooManyEntries { path: PathBuf },
    /// A required image is missing.
    #[error("{path} is missing; the directory holds no complete CRIU checkpoint")]
    Missing { path: PathBuf },
}

/// A file's bytes, read whole (up to [`MAX_IMAGE_BYTES`]).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    let read_err = |source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            read_err(source)
        }
    })?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_IMAGE_BYTES {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_IMAGE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// The native-endian word at `at`, if the bytes reach that far.
pub fn word(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// The header kinds an image can start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `inventory.img`: one word.
    Inventory,
    /// IMG_COMMON_MAGIC then the type magic.
    Common(u32),
    /// IMG_SERVICE_MAGIC then the type magic.
    Service(u32),
}

impl Header {
    /// Bytes taken by the header.
    pub fn size(self) -> usize {
        match self {
            Self::Inventory => 4,
            Self::Common(_) | Self::Service(_) => 8,
        }
    }

    /// The type magic.
    pub fn magic(self) -> u32 {
        match self {
            Self::Inventory => magic::INVENTORY,
            Self::Common(m) | Self::Service(m) => m,
        }
    }
}

/// Reads and checks the header of an image's bytes. `None` for too few
/// bytes.
pub fn header(path: &Path, bytes: &[u8]) -> Result<Header, ImageError> {
    let first = word(bytes, 0).ok_or_else(|| ImageError::Entry {
        path: path.to_path_buf(),
        offset: 0,
        why: format!("{} bytes are too few for an image header", bytes.len()),
    })?;
    if first == magic::INVENTORY {
        return Ok(Header::Inventory);
    }
    let second = || {
        word(bytes, 4).ok_or_else(|| ImageError::Entry {
            path: path.to_path_buf(),
            offset: 4,
            why: "the header is cut short".into(),
        })
    };
    let header = match first {
        magic::IMG_COMMON => Header::Common(second()?),
        magic::IMG_SERVICE => Header::Service(second()?),
        other => {
            return Err(ImageError::UnknownMagic {
                path: path.to_path_buf(),
                magic: other,
            })
        }
    };
    if magic::name(header.magic()).is_none() {
        return Err(ImageError::UnknownMagic {
            path: path.to_path_buf(),
            magic: header.magic(),
        });
    }
    Ok(header)
}

/// Checks that `bytes` start with the header of an image of type `expected`.
pub fn expect_header(path: &Path, bytes: &[u8], expected: u32) -> Result<Header, ImageError> {
    let header = header(path, bytes)?;
    if header.magic() != expected {
        let describe = |m: u32| match magic::name(m) {
            Some(n) => format!("{m:#010x} ({n})"),
            None => format!("{m:#010x}"),
        };
        return Err(ImageError::WrongMagic {
            path: path.to_path_buf(),
            found: describe(header.magic()),
            expected: describe(expected),
            kind: magic::name(expected).unwrap_or("CRIU"),
        });
    }
    Ok(header)
}

/// The raw entries after the header: each a `u32` length and that many
/// bytes. Lengths are checked against what is left of the file.
pub fn raw_entries<'a>(
    path: &Path,
    bytes: &'a [u8],
    start: usize,
) -> Result<Vec<&'a [u8]>, ImageError> {
    let mut at = start;
    let mut out = Vec::new();
    while at < bytes.len() {
        if out.len() >= MAX_ENTRIES {
            return Err(ImageError::TooManyEntries {
                path: path.to_path_buf(),
            });
        }
        let entry_err = |why: String| ImageError::Entry {
            path: path.to_path_buf(),
            offset: at,
            why,
        };
        let len = word(bytes, at)
            .ok_or_else(|| entry_err("the entry length is cut short".into()))?
            as usize;
        let left = bytes.len() - at - 4;
        if len > left {
            return Err(entry_err(format!(
                "an entry claims {len} bytes but only {left} follow"
            )));
        }
        out.push(&bytes[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    Ok(out)
}

/// Decodes one entry as `M`.
pub fn decode<M: Message + Default>(path: &Path, body: &[u8], what: &str) -> Result<M, ImageError> {
    M::decode(body).map_err(|e| ImageError::Entry {
        path: path.to_path_buf(),
        offset: 0,
        why: format!("a {what} entry does not decode ({e})"),
    })
}

/// Reads the image `path` of type `magic` and decodes every entry as `M`.
pub fn entries<M: Message + Default>(
    path: &Path,
    magic: u32,
    what: &str,
) -> Result<Vec<M>, ImageError> {
    let bytes = read_file(path)?;
    entries_of(path, &bytes, magic, what)
}

/// As [`entries`], on bytes already read.
pub fn entries_of<M: Message + Default>(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    what: &str,
) -> Result<Vec<M>, ImageError> {
    let header = expect_header(path, bytes, magic)?;
    let mut at = header.size();
    let mut out = Vec::new();
    for body in raw_entries(path, bytes, header.size())? {
        out.push(M::decode(body).map_err(|e| ImageError::Entry {
            path: path.to_path_buf(),
            offset: at,
            why: format!("a {what} entry does not decode ({e})"),
        })?);
        at += 4 + body.len();
    }
    Ok(out)
}

/// Reads an image that holds exactly one entry (inventory, core, mm, fs,
/// ids).
pub fn single<M: Message + Default>(path: &Path, magic: u32, what: &str) -> Result<M, ImageError> {
    let bytes = read_file(path)?;
    single_of(path, &bytes, magic, what)
}

/// As [`single`], on bytes already read.
pub fn single_of<M: Message + Default>(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    what: &str,
) -> Result<M, ImageError> {
    let header = expect_header(path, bytes, magic)?;
    let raw = raw_entries(path, bytes, header.size())?;
    match raw.as_slice() {
        [one] => decode(path, one, what).map_err(|e| match e {
            ImageError::Entry { path, why, .. } => ImageError::Entry {
                path,
                offset: header.size(),
                why,
            },
            other => other,
        }),
        [] => Err(ImageError::Entry {
            path: path.to_path_buf(),
            offset: header.size(),
            why: format!("no {what} entry"),
        }),
        more => Err(ImageError::Entry {
            path: path.to_path_buf(),
            offset: header.size(),
            why: format!("{} {what} entries where one was expected", more.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(magics: &[u32], entries: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in magics {
            out.extend_from_slice(&m.to_ne_bytes());
        }
        for e in entries {
            out.extend_from_slice(&(e.len() as u32).to_ne_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn lengths_are_checked_against_the_file() {
        let p = Path::new("x.img");
        let good = image(&[magic::IMG_COMMON, magic::PSTREE], &[&[8, 1], &[]]);
        assert_eq!(raw_entries(p, &good, 8).unwrap().len(), 2);
        let mut absurd = image(&[magic::IMG_COMMON, magic::PSTREE], &[]);
        absurd.extend_from_slice(&u32::MAX.to_ne_bytes());
        let err = raw_entries(p, &absurd, 8).unwrap_err().to_string();
        assert!(
            err.contains("claims 4294967295 bytes but only 0 follow"),
            "{err}"
        );
        let cut = &good[..good.len() - 5];
        assert!(raw_entries(p, cut, 8).is_err());
    }

    #[test]
    fn magics_are_checked() {
        let p = Path::new("core-1.img");
        let pstree = image(&[magic::IMG_COMMON, magic::PSTREE], &[]);
        let err = expect_header(p, &pstree, magic::CORE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0x50273030 (pstree)"), "{err}");
        assert!(err.contains("core image"), "{err}");
        let bogus = image(&[0xdead_beef, 0], &[]);
        let err = header(p, &bogus).unwrap_err().to_string();
        assert!(err.contains("unknown image magic 0xdeadbeef"), "{err}");
        let unknown_type = image(&[magic::IMG_COMMON, 0x1234_5678], &[]);
        assert!(header(p, &unknown_type).is_err());
        assert!(header(p, &[0x19]).is_err());
    }
}
