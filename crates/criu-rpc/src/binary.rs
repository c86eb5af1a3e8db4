//! Finding the CRIU executable.
//!
//! Order: an explicit path (the CLI's `--criu`), then `CRABMIGRATE_CRIU`,
//! then the private prefix that `scripts/setup.sh` provisions
//! (`$CRABMIGRATE_PREFIX/bin/criu`, default `/opt/crabmigrate/criu/bin/criu`),
//! then `criu` on `PATH`.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Environment variable naming the CRIU executable to use.
pub const CRIU_ENV: &str = "CRABMIGRATE_CRIU";
/// Environment variable overriding the private prefix.
pub const PREFIX_ENV: &str = "CRABMIGRATE_PREFIX";
/// Where `scripts/setup.sh` installs CRIU when the system has none that works.
pub const DEFAULT_PREFIX: &str = "/opt/crabmigrate/criu";

/// Where a [`CriuBinary`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CriuSource {
    /// Given explicitly (for example with `--criu`).
    Explicit,
    /// Named by the `CRABMIGRATE_CRIU` environment variable.
    Environment,
    /// The wrapper in crabmigrate's private prefix.
    Prefix,
    /// Found on `PATH`.
    Path,
}

impl std::fmt::Display for CriuSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Explicit => "--criu",
            Self::Environment => CRIU_ENV,
            Self::Prefix => "private prefix",
            Self::Path => "PATH",
        })
    }
}

/// A CRIU executable, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuBinary {
    path: PathBuf,
    source: CriuSource,
}

/// Why no usable CRIU executable was found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The named path does not exist or is not an executable file.
    #[error("no executable CRIU at {path} (given by {source_name}); pass the path of a CRIU 4.x executable or run scripts/setup.sh")]
    NotExecutable {
        /// The path that was named.
        path: PathBuf,
        /// Who named it (`--criu` or the environment variable).
        source_name: CriuSource,
    },
    /// Nothing found anywhere.
    #[error("CRIU not found in {prefix} or on PATH; run scripts/setup.sh as root to install it, or pass --criu PATH")]
    NotFound {
        /// The private prefix wrapper that was tried.
        prefix: PathBuf,
    },
}

impl CriuBinary {
    /// Uses `path` as given, without checking it (for tests and launchers
    /// that know better).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            source: CriuSource::Explicit,
        }
    }

    /// Finds CRIU: `explicit`, then [`CRIU_ENV`], then the private prefix,
    /// then `PATH`.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, LocateError> {
        Self::locate_with(
            explicit,
            std::env::var_os(CRIU_ENV),
            std::env::var_os(PREFIX_ENV),
            std::env::var_os("PATH"),
        )
    }

    fn locate_with(
        explicit: Option<&Path>,
        env: Option<OsString>,
        prefix: Option<OsString>,
        path_var: Option<OsString>,
    ) -> Result<Self, LocateError> {
        let named = explicit
            .map(|p| (p.to_path_buf(), CriuSource::Explicit))
            .or_else(|| {
                env.filter(|v| !v.is_empty())
                    .map(|v| (PathBuf::from(v), CriuSource::Environment))
            });
        if let Some((path, source)) = named {
            let resolved = if path.components().count() == 1 && !path.is_absolute() {
                // A bare name such as `criu` is looked up on PATH.
                search_path(&path, path_var.as_deref())
            } else {
                is_executable_file(&path).then_some(path.clone())
            };
            return resolved
                .map(|path| Self { path, source })
                .ok_or(LocateError::NotExecutable {
                    path,
                    source_name: source,
                });
        }
        let prefix = prefix
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PREFIX));
        let wrapper = prefix.join("bin/criu");
        if is_executable_file(&wrapper) {
            return Ok(Self {
                path: wrapper,
                source: CriuSource::Prefix,
            });
        }
        search_path(Path::new("criu"), path_var.as_deref())
            .map(|path| Self {
                path,
                source: CriuSource::Path,
            })
            .ok_or(LocateError::NotFound { prefix: wrapper })
    }

    /// The executable's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where it was found.
    pub fn source(&self) -> CriuSource {
        self.source
    }
}

fn search_path(name: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn explicit_beats_environment_prefix_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = executable(dir.path(), "explicit");
        let env = executable(dir.path(), "env");
        executable(dir.path(), "prefix/bin/criu");
        executable(dir.path(), "path/criu");
        let found = CriuBinary::locate_with(
            Some(&explicit),
            Some(env.clone().into()),
            Some(dir.path().join("prefix").into()),
            Some(dir.path().join("path").into()),
        )
        .unwrap();
        assert_eq!(found.path(), explicit);
        assert_eq!(found.source(), CriuSource::Explicit);

        let found = CriuBinary::locate_with(
            None,
            Some(env.clone().into()),
            Some(dir.path().join("prefix").into()),
            None,
        )
        .unwrap();
        assert_eq!(
            (found.path(), found.source()),
            (env.as_path(), CriuSource::Environment)
        );
    }

    #[test]
    fn prefix_beats_path() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = executable(dir.path(), "prefix/bin/criu");
        executable(dir.path(), "path/criu");
        let found = CriuBinary::locate_with(
            None,
            None,
            Some(dir.path().join("prefix").into()),
            Some(dir.path().join("path").into()),
        )
        .unwrap();
        assert_eq!(
            (found.path(), found.source()),
            (wrapper.as_path(), CriuSource::Prefix)
        );
    }

    #[test]
    fn falls_back_to_path_and_reports_nothing_found() {
        let dir = tempfile::tempdir().unwrap();
        let on_path = executable(dir.path(), "path/criu");
        let found = CriuBinary::locate_with(
            None,
            None,
            Some(dir.path().join("none").into()),
            Some(dir.path().join("path").into()),
        )
        .unwrap();
        assert_eq!(
            (found.path(), found.source()),
            (on_path.as_path(), CriuSource::Path)
        );

        let err = CriuBinary::locate_with(None, None, Some(dir.path().join("none").into()), None)
            .unwrap_err();
        assert!(matches!(err, LocateError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("scripts/setup.sh"));
    }

    #[test]
    fn explicit_path_that_is_missing_or_not_executable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "").unwrap();
        for bad in [Path::new("/nonexistent/criu"), plain.as_path(), dir.path()] {
            let err = CriuBinary::locate_with(Some(bad), None, None, None).unwrap_err();
            assert!(
                matches!(
                    err,
                    LocateError::NotExecutable {
                        source_name: CriuSource::Explicit,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains(&bad.display().to_string()));
        }
    }
}
