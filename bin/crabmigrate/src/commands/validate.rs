//! Checks on command-line input made before anything is started, frozen,
//! created or written: a refused input leaves the host as it was.

use std::path::Path;

use anyhow::{bail, Context};
use criu_rpc::{External, ExternalSide};

/// The kernel's pid limit (`/proc/sys/kernel/pid_max`).
fn pid_max() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A pid that names a live process crabmigrate may checkpoint: not 0, not
/// above pid_max, existing, not a zombie, not a kernel thread, not init and
/// not crabmigrate or one of its ancestors (CRIU would freeze the caller).
pub fn pid(pid: u32) -> anyhow::Result<()> {
    if pid == 0 {
        bail!("pid 0 is not a process; give the pid of the tree's root");
    }
    if let Some(max) = pid_max().filter(|&max| pid >= max) {
        bail!("pid {pid} is not below this host's pid_max ({max}), so no process has it; give the pid of the tree's root (ps)");
    }
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(_) => bail!("process {pid} does not exist; give the pid of the tree's root (ps)"),
    };
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        bail!("process {pid} has exited (a zombie its parent has not reaped); there is nothing left to checkpoint");
    }
    // Field 9 (flags) has PF_KTHREAD for kernel threads.
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        bail!("process {pid} is a kernel thread, which cannot be checkpointed; give the pid of a user process tree");
    }
    if pid == 1 {
        bail!("process 1 is the init of crabmigrate's pid namespace (every process descends from it), so it cannot be checkpointed from here; give the pid of the tree to move (start it with setsid)");
    }
    let mut ancestor = std::process::id();
    while ancestor > 1 {
        if ancestor == pid {
            bail!("process {pid} is crabmigrate itself or one of its parents (the shell that runs it); checkpoint a tree started apart (setsid COMMAND &)");
        }
        ancestor = match parent_of(ancestor) {
            Some(p) => p,
            None => break,
        };
    }
    Ok(())
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A TCP port given on the command line where 0 means nothing.
pub fn port(port: u16, flag: &str) -> anyhow::Result<()> {
    if port == 0 {
        bail!("{flag} 0 is not a port; give a TCP port from 1 to 65535");
    }
    Ok(())
}

/// `HOST:PORT` with a port from 1 to 65535.
pub fn address(text: &str, flag: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = super::common::host_port(text).with_context(|| flag.to_owned())?;
    if port == 0 {
        bail!("{flag} {text:?} has port 0; give a TCP port from 1 to 65535");
    }
    Ok((host, port))
}

/// `--external` specifications for a checkpoint or a restore.
pub fn externals(specs: &[String], side: ExternalSide) -> anyhow::Result<Vec<External>> {
    specs
        .iter()
        .map(|s| External::parse(s, side).map_err(anyhow::Error::from))
        .collect()
}

/// A file crabmigrate will write (`--pid-file`, `--output`): its directory
/// exists and it is not a directory itself.
pub fn output_file(path: &Path, flag: &str) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty; give a file path");
    }
    if path.is_dir() {
        bail!("{flag} {} is a directory; give a file path", path.display());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!(
            "{flag} {}: {} is not a directory",
            path.display(),
            parent.display()
        ),
        Err(_) => bail!(
            "{flag} {}: the directory {} does not exist; create it first",
            path.display(),
            parent.display()
        ),
    }
}

/// A directory that must exist already.
pub fn existing_dir(path: &Path, flag: &str) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{flag} {} is not a directory", path.display()),
        Err(_) => bail!("{flag} {} does not exist", path.display()),
    }
}

/// A directory crabmigrate creates if missing (`--images-dir` of a
/// checkpoint): not an existing file, and not inside one.
pub fn creatable_dir(path: &Path, flag: &str) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() {
        bail!("{flag} is empty; give a directory path");
    }
    let mut at = Some(path);
    while let Some(p) = at {
        if p.as_os_str().is_empty() {
            break;
        }
        if let Ok(m) = std::fs::metadata(p) {
            if m.is_dir() {
                return Ok(());
            }
            if p == path {
                bail!("{flag} {} exists and is not a directory", path.display());
            }
            bail!(
                "{flag} {}: {} is a file, not a directory",
                path.display(),
                p.display()
            );
        }
        at = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_that_name_no_tree_are_refused() {
        assert!(pid(0).unwrap_err().to_string().contains("pid 0"));
        let max = pid_max().unwrap();
        let err = pid(max).unwrap_err().to_string();
        assert!(err.contains("pid_max"), "{err}");
        // crabmigrate's (here: the test's) own pid and its parent.
        let me = std::process::id();
        assert!(pid(me).unwrap_err().to_string().contains("parents"));
        // A kernel thread (kthreadd is pid 2 on Linux).
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(pid(2).unwrap_err().to_string().contains("kernel thread"));
        }
    }

    #[test]
    fn output_files_need_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        output_file(&dir.path().join("pid"), "--pid-file").unwrap();
        let err = output_file(&dir.path().join("no/pid"), "--pid-file").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = output_file(dir.path(), "--pid-file").unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn creatable_dirs_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        creatable_dir(&dir.path().join("a/b/c"), "--images-dir").unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(creatable_dir(&file, "--images-dir")
            .unwrap_err()
            .to_string()
            .contains("exists and is not a directory"));
        assert!(creatable_dir(&file.join("sub"), "--images-dir")
            .unwrap_err()
            .to_string()
            .contains("is a file"));
    }
}
