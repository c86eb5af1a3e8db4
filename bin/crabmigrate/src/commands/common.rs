//! Helpers shared by the CRIU commands: directories, addresses, flags.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use criu_rpc::{CgroupMode, NetworkLock};

use crate::cli::{CgroupModeArg, NetworkLockArg};

/// Opens a directory for CRIU, creating it (0700) when `create` is set.
pub fn open_dir(path: &Path, what: &str, create: bool) -> anyhow::Result<File> {
    if create && !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .with_context(|| format!("cannot create the {what} {}", path.display()))?;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("the {what} {} is not a directory", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("the {what} {} does not exist", path.display())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot use the {what} {}", path.display()))
        }
    }
    File::open(path).with_context(|| format!("cannot open the {what} {}", path.display()))
}

/// `HOST:PORT` (IPv6 as `[ADDR]:PORT`).
pub fn host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("{text:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("{port:?} in {text:?} is not a TCP port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("{text:?} lacks a host; write HOST:PORT");
    }
    Ok((host.to_owned(), port))
}

/// A parent images directory as CRIU wants it: relative to the images
/// directory. Absolute paths are converted; the parent must exist.
pub fn parent_relative(images_dir: &Path, parent: &Path) -> anyhow::Result<String> {
    let absolute = if parent.is_absolute() {
        parent.to_path_buf()
    } else {
        images_dir.join(parent)
    };
    let meta = std::fs::metadata(&absolute).with_context(|| {
        format!(
            "the parent images directory {} does not exist",
            absolute.display()
        )
    })?;
    if !meta.is_dir() {
        bail!(
            "the parent images directory {} is not a directory",
            absolute.display()
        );
    }
    if !parent.is_absolute() {
        return Ok(parent.to_string_lossy().into_owned());
    }
    let from = images_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", images_dir.display()))?;
    let to = absolute
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", absolute.display()))?;
    Ok(relative_path(&from, &to).to_string_lossy().into_owned())
}

/// The path from directory `from` to `to`, both absolute and canonical.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    for c in &to[common..] {
        rel.push(c);
    }
    rel
}

/// The network lock for a dump: the user's, else the one this host can use
/// (iptables when installed, else nftables when CRIU can).
pub fn dump_network_lock(
    arg: Option<NetworkLockArg>,
    criu: &criu_rpc::Criu,
) -> Option<NetworkLock> {
    network_lock(arg).or_else(|| {
        let choice = crabmigrate_runtime::sockets::choose_network_lock(criu);
        tracing::debug!(method = ?choice.method, why = %choice.why, "network lock chosen");
        choice.method
    })
}

pub fn network_lock(arg: Option<NetworkLockArg>) -> Option<NetworkLock> {
    arg.map(|a| match a {
        NetworkLockArg::Iptables => NetworkLock::Iptables,
        NetworkLockArg::Nftables => NetworkLock::Nftables,
        NetworkLockArg::Skip => NetworkLock::Skip,
    })
}

pub fn cgroup_mode(arg: Option<CgroupModeArg>) -> Option<CgroupMode> {
    arg.map(|a| match a {
        CgroupModeArg::Ignore => CgroupMode::Ignore,
        CgroupModeArg::None => CgroupMode::None,
        CgroupModeArg::Props => CgroupMode::Props,
        CgroupModeArg::Soft => CgroupMode::Soft,
        CgroupModeArg::Full => CgroupMode::Full,
        CgroupModeArg::Strict => CgroupMode::Strict,
    })
}

pub fn log_level(level: u8) -> criu_rpc::LogLevel {
    use criu_rpc::LogLevel::*;
    match level {
        0 => Silent,
        1 => Errors,
        2 => Warnings,
        3 => Info,
        _ => Debug,
    }
}

/// Microseconds as milliseconds with one decimal.
pub fn ms(us: u32) -> String {
    format!("{:.1} ms", f64::from(us) / 1000.0)
}

/// Writes `pid` to `path` atomically (temporary file, then rename).
pub fn write_pid_file(path: &Path, pid: i32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port() {
        assert_eq!(host_port("10.0.0.2:27").unwrap(), ("10.0.0.2".into(), 27));
        assert_eq!(host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(host_port("nohost").is_err());
        assert!(host_port(":80").is_err());
        assert!(host_port("h:99999").is_err());
    }

    #[test]
    fn relative_paths_between_directories() {
        assert_eq!(
            relative_path(Path::new("/a/b/2"), Path::new("/a/b/1")),
            Path::new("../1")
        );
        assert_eq!(
            relative_path(Path::new("/a/x"), Path::new("/b/y")),
            Path::new("../../b/y")
        );
    }
}
