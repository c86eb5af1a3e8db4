//! Containers whose state cannot be read: found by `list`, removed by
//! `delete --force` with whatever of them can still be found.
//!
//! A `state.json` that is damaged (a full disk, an edit, a crash of an
//! older version) or missing (a create that died half-way) must not hide a
//! container or make it impossible to remove. What can be salvaged comes
//! from the damaged file read as loosely as possible: the init's pid with
//! its start time (so a recycled pid is never killed) and the recorded
//! cgroup; mounts come from the mount table (the restore's `criu-root`
//! under the container's directory); a CNI network attachment from its own
//! record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::LifecycleError;
use crate::cgroups::Cgroup;
use crate::state::{process_start, StateError, StateRoot};

/// How long killed processes are waited for.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What `delete --force` removed of a broken container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvage {
    /// Processes killed (the recorded init, and the cgroup's processes).
    pub killed: Vec<u32>,
    /// The cgroup removed.
    pub cgroup: Option<String>,
    /// Mounts under the container's directory taken down.
    pub unmounted: Vec<PathBuf>,
    /// A recorded CNI network attachment was released.
    pub network_released: bool,
}

/// Why a container's state is unusable, if it is: the one-line reason
/// `list` shows.
pub fn broken_reason(root: &StateRoot, id: &str) -> Option<String> {
    match root.load(id) {
        Ok(_) => None,
        Err(StateError::NotFound { .. }) if root.container_dir(id).is_dir() => {
            Some("state.json does not exist (a create or restore stopped half-way)".to_owned())
        }
        // No directory either: no container, nothing broken.
        Err(StateError::NotFound { .. }) => None,
        Err(StateError::Corrupt { source, .. }) => {
            Some(format!("state.json is damaged ({source})"))
        }
        Err(e) => Some(e.to_string()),
    }
}

/// Removes a container whose state is damaged or missing: kills the
/// recorded init (if it is still the same process) and everything in the
/// recorded cgroup (from the state, else from the record create wrote as
/// soon as the cgroup existed), removes the cgroup, unmounts what is mounted under its
/// directory, and removes the directory.
pub fn delete_broken(root: &StateRoot, id: &str) -> Result<Salvage, LifecycleError> {
    crate::spec::validate_id(id).map_err(LifecycleError::Id)?;
    let dir = root.container_dir(id);
    if !dir.is_dir() {
        return Err(LifecycleError::State(StateError::NotFound {
            id: id.to_owned(),
            path: dir.join("state.json"),
        }));
    }
    let text = std::fs::read(dir.join("state.json")).unwrap_or_default();
    let loose: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let mut salvage = Salvage::default();

    let init = field(&loose, &text, "pid")
        .and_then(|v| v.as_u64())
        .and_then(|pid| u32::try_from(pid).ok());
    let start = field(&loose, &text, "pid_start_time").and_then(|v| v.as_u64());
    if let (Some(pid), Some(start)) = (init, start) {
        if pid != 0 && process_start(pid).is_some_and(|(t, state)| t == start && state != 'Z') {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            salvage.killed.push(pid);
        }
    }
    let cgroup: Option<Cgroup> = field(&loose, &text, "cgroup")
        .and_then(|c| serde_json::from_value(c).ok())
        .or_else(|| root.load_record(id, crate::state::CGROUP_RECORD));
    if let Some(cgroup) = &cgroup {
        // A frozen cgroup would keep SIGKILL pending.
        let _ = cgroup.thaw();
        if let Ok(pids) = cgroup.pids() {
            for pid in pids {
                if !salvage.killed.contains(&pid) {
                    salvage.killed.push(pid);
                }
            }
        }
        let _ = cgroup.signal_all(libc::SIGKILL);
        let until = Instant::now() + KILL_WAIT;
        while cgroup.pids().is_ok_and(|p| !p.is_empty()) {
            if Instant::now() > until {
                return Err(LifecycleError::Stuck(id.to_owned(), KILL_WAIT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cgroup
            .remove()
            .map_err(|e| LifecycleError::Cgroup(id.to_owned(), e))?;
        salvage.cgroup = Some(cgroup.path().to_owned());
    }
    salvage.unmounted = unmount_under(&dir);
    // A CNI attachment is recorded in a file of its own, which survives a
    // damaged state.json.
    salvage.network_released = crate::network::release_leftover(root, id)
        .map_err(|e| LifecycleError::Network(id.to_owned(), e))?;
    root.remove(id)?;
    Ok(salvage)
}

/// A field of the state, from the parsed JSON or, when the file does not
/// parse (cut short, say), from the first whole JSON value after `"KEY":`
/// in its text.
fn field(loose: &serde_json::Value, text: &[u8], key: &str) -> Option<serde_json::Value> {
    if let Some(v) = loose.get(key) {
        return Some(v.clone());
    }
    let text = String::from_utf8_lossy(text);
    let needle = format!("\"{key}\":");
    let at = text.find(&needle)? + needle.len();
    serde_json::Deserializer::from_str(&text[at..])
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()
}

/// Unmounts every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
        .into_iter()
        .filter(|p| umount2(p, MntFlags::MNT_DETACH).is_ok())
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            if let Ok(v) = u8::try_from(value) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_json_or_from_a_damaged_text() {
        let good = br#"{"pid": 42, "pid_start_time": 7}"#;
        let v: serde_json::Value = serde_json::from_slice(good).unwrap();
        assert_eq!(field(&v, good, "pid"), Some(42.into()));
        let cut = br#"{"id":"x","pid": 42,"pid_start_time":77,"cgroup":{"path":"/c/x"},"bun"#;
        let none = serde_json::Value::Null;
        assert_eq!(field(&none, cut, "pid"), Some(42.into()));
        assert_eq!(field(&none, cut, "pid_start_time"), Some(77.into()));
        assert_eq!(
            field(&none, cut, "cgroup"),
            Some(serde_json::json!({"path": "/c/x"}))
        );
        assert_eq!(field(&none, b"\x00garbage", "pid"), None);
        assert_eq!(field(&none, br#"{"pid": 4"#, "pid"), Some(4.into()));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo("/run/a\\040b/criu-root"),
            PathBuf::from("/run/a b/criu-root")
        );
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn a_damaged_or_missing_state_is_broken_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path());
        root.create_dir("damaged").unwrap();
        std::fs::write(
            root.container_dir("damaged").join("state.json"),
            "{\"pid\": 4",
        )
        .unwrap();
        root.create_dir("half").unwrap();
        let reason = broken_reason(&root, "damaged").unwrap();
        assert!(reason.contains("damaged"), "{reason}");
        let reason = broken_reason(&root, "half").unwrap();
        assert!(reason.contains("does not exist"), "{reason}");
        // pid 4 with no start time: nothing is killed.
        assert_eq!(delete_broken(&root, "damaged").unwrap(), Salvage::default());
        assert_eq!(delete_broken(&root, "half").unwrap(), Salvage::default());
        assert!(!root.container_dir("damaged").exists());
        assert!(!root.container_dir("half").exists());
        assert!(delete_broken(&root, "half").is_err());
        assert_eq!(broken_reason(&root, "never-made"), None);
    }
}
