//! A restored tree's cgroup on the destination, killed as a whole.
//!
//! A process tree gets a cgroup of its own for the session
//! (`crabmigrate-migrations/SESSION` on the v2 hierarchy and the v1
//! freezer, whichever are mounted); CRIU is started inside it, so every
//! task it restores — and every task those fork, daemons that escaped
//! their parent included — lives there. A container lives in its own
//! cgroup already. A kill is `cgroup.kill` on v2; on v1 the freezer
//! freezes the group, every member gets SIGKILL, then it thaws; either
//! way the kill waits until the group is empty. No `/proc` snapshot is
//! involved, so nothing forked meanwhile escapes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crabmigrate_runtime::cgroups;

use crate::port::{Op, PortError, Tree};

/// Where session cgroups live, under each hierarchy's mount point.
pub const PARENT: &str = "crabmigrate-migrations";
/// How long a kill may take until the group is empty.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A restored tree's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeCgroup {
    /// On the v2 hierarchy (`cgroup.kill`).
    unified: Option<PathBuf>,
    /// On the v1 freezer hierarchy.
    freezer: Option<PathBuf>,
    /// Made for this session (removed by [`Tree::release`]).
    owned: bool,
}

fn cgroup_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PortError {
    PortError::new(Op::Cgroup, e)
}

impl TreeCgroup {
    /// A new cgroup for `session` (a plain name) on the hierarchies found.
    pub fn create_session(session: &str) -> Result<Self, PortError> {
        if session.is_empty() || !session.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(cgroup_error(format!("invalid session name {session:?}")));
        }
        let mut found = Self::at(&format!("/{PARENT}/{session}"))?;
        found.owned = true;
        for dir in found.dirs() {
            std::fs::create_dir_all(dir).map_err(|e| {
                cgroup_error(std::io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", dir.display()),
                ))
            })?;
        }
        Ok(found)
    }

    /// The cgroup a container's bundle gives it (made by the runtime).
    pub fn for_container(bundle_dir: &Path, id: &str) -> Result<Self, PortError> {
        let bundle = crabmigrate_runtime::spec::load(bundle_dir).map_err(cgroup_error)?;
        let path = bundle.cgroup_path(id).map_err(cgroup_error)?;
        Self::at(&path)
    }

    /// The directories of cgroup `path` ("/a/b") on the v2 hierarchy and
    /// the v1 freezer.
    fn at(path: &str) -> Result<Self, PortError> {
        let hierarchies = cgroups::hierarchies().map_err(cgroup_error)?;
        let rel = path.trim_start_matches('/');
        let unified = hierarchies
            .iter()
            .find(|h| h.is_unified())
            .map(|h| h.mount_point.join(rel));
        let freezer = hierarchies
            .iter()
            .find(|h| h.name.split(',').any(|c| c == "freezer"))
            .map(|h| h.mount_point.join(rel));
        if unified.is_none() && freezer.is_none() {
            return Err(cgroup_error(
                "neither a cgroup v2 hierarchy nor a v1 freezer is mounted under /sys/fs/cgroup",
            ));
        }
        Ok(Self {
            unified,
            freezer,
            owned: false,
        })
    }

    /// A cgroup at explicit directories (tests).
    pub fn from_dirs(unified: Option<PathBuf>, freezer: Option<PathBuf>, owned: bool) -> Self {
        Self {
            unified,
            freezer,
            owned,
        }
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.unified.iter().chain(self.freezer.iter())
    }

    /// The `cgroup.procs` files a process writes itself into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Live (not zombie) members.
    pub fn members(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .filter(|&pid| !zombie(pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn kill_once(&self) -> std::io::Result<()> {
        if let Some(dir) = &self.unified {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                return std::fs::write(kill, "1");
            }
        }
        if let Some(dir) = &self.freezer {
            let state = dir.join("freezer.state");
            std::fs::write(&state, "FROZEN")?;
            let until = Instant::now() + Duration::from_secs(2);
            while std::fs::read_to_string(&state).map(|s| s.trim() != "FROZEN")? {
                if Instant::now() > until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            signal_all(&self.members());
            return std::fs::write(&state, "THAWED");
        }
        signal_all(&self.members());
        Ok(())
    }
}

fn signal_all(pids: &[u32]) {
    for &pid in pids {
        if let Ok(raw) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?;
            rest.chars().next()
        })
        .is_none_or(|state| state == 'Z' || state == 'X')
}

/// A path that can go between single quotes in a shell script.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl Tree for TreeCgroup {
    fn kill(&self) -> Result<(), PortError> {
        let until = Instant::now() + KILL_WAIT;
        loop {
            if self.members().is_empty() {
                return Ok(());
            }
            self.kill_once().map_err(|e| PortError::new(Op::Kill, e))?;
            if Instant::now() > until {
                return Err(PortError::new(
                    Op::Kill,
                    format!(
                        "processes {:?} are still alive after {KILL_WAIT:?}",
                        self.members()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn occupied(&self) -> bool {
        !self.members().is_empty()
    }

    fn release(&self) {
        if self.owned {
            for dir in self.dirs() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    fn kill_script(&self) -> String {
        let mut script = String::new();
        if let Some(dir) = &self.unified {
            let kill = quoted(&dir.join("cgroup.kill"));
            script.push_str(&format!("[ -e {kill} ] && echo 1 > {kill}; "));
        }
        if let Some(dir) = &self.freezer {
            let state = quoted(&dir.join("freezer.state"));
            let procs = quoted(&dir.join("cgroup.procs"));
            script.push_str(&format!(
                "if [ -e {state} ]; then echo FROZEN > {state}; sleep 0.1; for p in $(cat {procs}); do kill -9 $p; done; echo THAWED > {state}; fi; "
            ));
        }
        if let Some(dir) = &self.unified {
            let procs = quoted(&dir.join("cgroup.procs"));
            script.push_str(&format!("for p in $(cat {procs}); do kill -9 $p; done; "));
        }
        script.push_str("true");
        script
    }

    fn enter_files(&self) -> Vec<PathBuf> {
        if self.owned {
            self.procs_files()
        } else {
            Vec::new()
        }
    }
}

/// Removes the empty session cgroups a killed agent of `scope` left
/// behind (their names start with it); a group that still holds processes
/// is left alone (and logged), other agents' groups are not touched.
pub fn sweep(scope: &str) {
    let Ok(hierarchies) = cgroups::hierarchies() else {
        return;
    };
    for h in hierarchies {
        let parent = h.mount_point.join(PARENT);
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() || !entry.file_name().to_string_lossy().starts_with(scope) {
                continue;
            }
            if std::fs::remove_dir(&dir).is_err() {
                tracing::warn!(cgroup = %dir.display(), "a leaked session cgroup still holds processes; left alone");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_script_names_every_directory_quoted() {
        let c = TreeCgroup::from_dirs(
            Some(PathBuf::from("/sys/fs/cgroup/unified/x/a'b")),
            Some(PathBuf::from("/sys/fs/cgroup/freezer/x/s")),
            true,
        );
        let script = c.kill_script();
        assert!(
            script.contains(r"'/sys/fs/cgroup/unified/x/a'\''b/cgroup.kill'"),
            "{script}"
        );
        assert!(
            script.contains("'/sys/fs/cgroup/freezer/x/s/freezer.state'"),
            "{script}"
        );
        assert_eq!(c.procs_files().len(), 2);
        // The script is valid shell.
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn session_names_are_checked() {
        assert!(TreeCgroup::create_session("../x").is_err());
        assert!(TreeCgroup::create_session("").is_err());
    }
}
