//! Watchdog processes that outlive a dead crabmigrate: a small `sh` in its
//! own process group reads verdict lines from a pipe whose writing end
//! only crabmigrate holds. End of file — crabmigrate exited, was killed,
//! or dropped the watchdog — without the verdict that disarms it runs the
//! watchdog's action. It says "armed" once it reads, and the caller waits
//! for that: a watchdog that did not start is an error, never a warning.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::port::{Op, PortError, SourceWatchdog, Tree, Watchdog};

/// A running watchdog.
#[derive(Debug)]
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Process {
    /// Starts `script` (read its verdicts from standard input) and waits
    /// for its "armed".
    fn start(name: &str, script: &str) -> Result<Self, PortError> {
        let fail = |e: std::io::Error| PortError::new(Op::Watchdog, e);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("echo armed; {script}"))
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(fail)?;
        let stdin = child.stdin.take();
        let armed = child.stdout.take().and_then(|out| {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).ok()?;
            (line.trim() == "armed").then_some(())
        });
        if armed.is_none() || stdin.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(std::io::Error::other(
                "it did not report itself armed",
            )));
        }
        Ok(Self { child, stdin })
    }

    fn say(&mut self, verdict: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{verdict}");
        }
    }

    /// Closes the pipe and reaps the process.
    fn end(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The destination's watchdog: kills the restored tree's cgroup unless
/// released (every page arrived, or the commit completed).
#[derive(Debug)]
pub struct TreeWatchdog(Process);

impl TreeWatchdog {
    /// Arms a watchdog on `tree`.
    pub fn arm(tree: &dyn Tree) -> Result<Self, PortError> {
        let script = format!(
            r#"read verdict; [ "$verdict" = done ] || {{ {}; }}"#,
            tree.kill_script()
        );
        Process::start("crabmigrate-watchdog", &script).map(Self)
    }
}

impl Watchdog for TreeWatchdog {
    fn release(mut self: Box<Self>) {
        self.0.say("done");
        self.0.end();
    }
}

impl Drop for TreeWatchdog {
    fn drop(&mut self) {
        // Unreleased: closing the pipe makes it kill the tree.
        self.0.end();
    }
}

/// The source's watchdog for a container: thaws the container's freezer
/// if crabmigrate dies before it said "hold" (the commit) or "done".
#[derive(Debug)]
pub struct ThawWatchdog(Process);

impl ThawWatchdog {
    /// Arms it on the freezer directory `freezer`.
    pub fn arm(freezer: &std::path::Path) -> Result<Self, PortError> {
        let dir = format!("'{}'", freezer.display().to_string().replace('\'', r"'\''"));
        let script = format!(
            r#"held=; while read verdict; do case "$verdict" in hold) held=1;; done) exit 0;; esac; done; [ -n "$held" ] && exit 0; if [ -e {dir}/freezer.state ]; then echo THAWED > {dir}/freezer.state; else echo 0 > {dir}/cgroup.freeze; fi"#
        );
        Process::start("crabmigrate-thaw-watchdog", &script).map(Self)
    }
}

impl SourceWatchdog for ThawWatchdog {
    fn hold(&mut self) {
        self.0.say("hold");
    }

    fn done(mut self: Box<Self>) {
        self.0.say("done");
        self.0.end();
    }
}

impl Drop for ThawWatchdog {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortError;

    /// A "tree" whose kill script creates a file.
    #[derive(Debug)]
    struct Marker(std::path::PathBuf);

    impl Tree for Marker {
        fn kill(&self) -> Result<(), PortError> {
            Ok(())
        }
        fn occupied(&self) -> bool {
            false
        }
        fn release(&self) {}
        fn kill_script(&self) -> String {
            format!("touch '{}'", self.0.display())
        }
        fn enter_files(&self) -> Vec<std::path::PathBuf> {
            Vec::new()
        }
    }

    #[test]
    fn an_unreleased_watchdog_fires_and_a_released_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let fired = dir.path().join("fired");
        let dog = TreeWatchdog::arm(&Marker(fired.clone())).unwrap();
        drop(dog);
        assert!(fired.exists(), "dropped unreleased: it fired");

        let quiet = dir.path().join("quiet");
        let dog = Box::new(TreeWatchdog::arm(&Marker(quiet.clone())).unwrap());
        dog.release();
        assert!(!quiet.exists(), "released: it did not fire");
    }

    #[test]
    fn the_thaw_watchdog_thaws_only_without_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("freezer.state");
        std::fs::write(&state, "FROZEN\n").unwrap();
        drop(ThawWatchdog::arm(dir.path()).unwrap());
        assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "THAWED");

        std::fs::write(&state, "FROZEN\n").unwrap();
        let mut dog = Box::new(ThawWatchdog::arm(dir.path()).unwrap());
        dog.hold();
        drop(dog);
        assert_eq!(
            std::fs::read_to_string(&state).unwrap().trim(),
            "FROZEN",
            "held"
        );

        let dog = Box::new(ThawWatchdog::arm(dir.path()).unwrap());
        dog.done();
        assert_eq!(
            std::fs::read_to_string(&state).unwrap().trim(),
            "FROZEN",
            "done"
        );
    }
}
