//! A process with a pseudo-terminal: `orphan_pts_master` hands the caller a
//! usable master for the restored process's terminal.
//!
//! A shell loop (`while read l; do echo got:$l; done`) runs in its own
//! session with a pty slave as its controlling terminal and stdio; the test
//! keeps only the master. The slave's master is outside the dumped tree, so
//! CRIU dumps it only as a shell job (`shell_job`; without it: "Found slave
//! peer index N without correspond master peer"). At restore, `shell_job`
//! alone would give the tree CRIU's own stdin as its terminal;
//! `orphan_pts_master` (which needs notifications) makes CRIU open a new
//! pty pair instead, give the slave to the tree and send the master over the
//! RPC socket (SCM_RIGHTS on the `orphan-pts-master` notification). The test
//! then talks to the restored shell through that master.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use criu_rpc::{DumpRequest, Notify, NotifyResult, RestoreRequest};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use testkit::KillOnDrop;

use crate::page_server::{explain, ChildGuard, PATIENCE};

/// Writes `line` to the terminal master and reads until `answer` appears
/// (the terminal echoes the input first).
fn converse(master: &OwnedFd, line: &str, answer: &str) {
    test_support::pty::converse(master, line, answer, PATIENCE).unwrap_or_else(|e| panic!("{e}"));
}

/// In the child before exec: a new session whose controlling terminal is
/// the pty slave on descriptor 0.
fn take_terminal() -> std::io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); descriptor
    // 0 is the slave by now, and the call only changes kernel state.
    if unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps the master CRIU hands over and the notifications seen.
#[derive(Default)]
struct KeepMaster {
    master: Option<OwnedFd>,
    scripts: Vec<&'static str>,
}

impl Notify for KeepMaster {
    fn orphan_pts_master(&mut self, master: OwnedFd) -> NotifyResult {
        self.scripts.push("orphan-pts-master");
        self.master = Some(master);
        Ok(())
    }

    fn post_restore(&mut self, _pid: i32) -> NotifyResult {
        self.scripts.push("post-restore");
        Ok(())
    }
}

#[test]
fn orphan_pts_master_hands_over_a_working_terminal() {
    let Some(criu) = testkit::real_criu("orphan_pts_master_hands_over_a_working_terminal") else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("crabmigrate-pty-")
        .tempdir()
        .unwrap();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    // openpty(3) leaves both ends inheritable; the shell must get only the
    // slave (as stdio), or the pair is inside the tree and nothing is orphaned.
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("close-on-exec");
    }
    let mut shell = {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "while read l; do echo got:$l; done"])
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        // SAFETY: `take_terminal` runs in the child between fork and exec
        // and makes only async-signal-safe system calls, allocating nothing.
        unsafe {
            cmd.pre_exec(take_terminal);
        }
        ChildGuard::spawn(&mut cmd)
        // The command and its copies of the slave are dropped here.
    };
    drop(pty.slave);
    let pid = shell.child().id();
    converse(&pty.master, "before", "got:before");

    // Without shell_job CRIU refuses the orphaned slave, and the shell is
    // left running.
    let refused_dir = tempfile::tempdir().unwrap();
    let refused_images = File::open(refused_dir.path()).unwrap();
    let refused = criu
        .dump(&DumpRequest::new(pid, refused_images.as_fd()), None)
        .expect_err("a pty slave without its master");
    let why = explain(&refused, &[]);
    assert!(why.contains("without correspond master peer"), "{why}");
    converse(&pty.master, "still", "got:still");

    let images = File::open(tmp.path()).unwrap();
    let mut dump = DumpRequest::new(pid, images.as_fd());
    // The terminal's master is outside the tree: a shell job.
    dump.options.shell_job = true;
    criu.dump(&dump, None)
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[tmp.path()])));
    let (killed, _) = shell.wait();
    assert!(!killed.success(), "CRIU killed the dumped shell");
    // Free the pty index: CRIU opens the new pair with the dumped index.
    drop(pty.master);

    let mut restore = RestoreRequest::new(images.as_fd());
    restore.options.shell_job = true;
    restore.options.orphan_pts_master = true;

    let mut keep = KeepMaster::default();
    let restored = criu
        .restore(&restore, Some(&mut keep))
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[tmp.path()])));
    let _restored = KillOnDrop(restored.pid);
    assert_eq!(restored.pid, pid as i32);
    assert_eq!(keep.scripts, ["orphan-pts-master", "post-restore"]);
    let master = keep.master.expect("CRIU sent the master");
    assert!(
        nix::unistd::isatty(&master).unwrap(),
        "the fd is a terminal"
    );

    // The restored shell reads and writes through the new terminal.
    converse(&master, "after", "got:after");
    converse(&master, "again", "got:again");
}
