//! The shared key both hosts of a migration hold: 32 random bytes, written
//! as 64 hex digits in a file only its owner may read.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of the key in bytes (Noise's pre-shared key length).
pub const KEY_LEN: usize = 32;

/// A migration key. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key file could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the key file {0} does not exist; make one with `crabmigrate keygen --out {0}` and copy it to both hosts")]
    Missing(PathBuf),
    #[error("cannot write the key file {0}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("the key file {0} already exists; remove it or pick another path")]
    Exists(PathBuf),
    #[error("the key file {path} can be read by others (mode {mode:o}); chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the key file {0} does not hold 64 hex digits; make one with `crabmigrate keygen --out FILE`")]
    Format(PathBuf),
    #[error("cannot get random bytes from the system")]
    Random(#[source] std::io::Error),
}

impl Key {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// Writes a new random key to `path` (mode 0600; never overwrites).
    pub fn generate_file(path: &Path) -> Result<Self, KeyError> {
        let key = Self::generate()?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
                _ => KeyError::Write(path.to_path_buf(), e),
            })?;
        writeln!(file, "{}", hex::encode(key.0))
            .and_then(|()| file.sync_all())
            .map_err(|e| KeyError::Write(path.to_path_buf(), e))?;
        Ok(key)
    }

    /// Reads the key at `path`, refusing a file others can read (as ssh
    /// does with private keys).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KeyError::Missing(path.to_path_buf()),
            _ => KeyError::Read(path.to_path_buf(), e),
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| KeyError::Read(path.to_path_buf(), e))?;
        Self::from_hex(text.trim()).ok_or_else(|| KeyError::Format(path.to_path_buf()))
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self)
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = Key::generate_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Key::load(&path).unwrap(), key);
        assert!(matches!(
            Key::generate_file(&path),
            Err(KeyError::Exists(_))
        ));
        assert_ne!(Key::generate().unwrap(), key, "keys are random");
        assert_eq!(format!("{key:?}"), "Key(..)");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Key::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let missing = Key::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, KeyError::Missing(_)), "{missing:?}");
        assert!(missing.to_string().contains("keygen"), "{missing}");

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "abc").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Key::load(&bad), Err(KeyError::Format(_))));
    }
}
