//! Process trees against the real CRIU: checkpoint and restore through the
//! library and the CLI, leave-running, the order of CRIU's notifications, a
//! refusing notification handler, a pipe handed over with inherit-fd, and an
//! external bind mount in a private mount namespace.
//!
//! Every test restores into the pid the workload had, so the original must
//! be gone first. Pid 1 on these machines reaps orphans only every ~2 s, so
//! the test (the workload's parent) reaps it itself right after the dump.

use std::fs::File;
use std::io::BufRead;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use criu_rpc::{
    DumpRequest, External, InheritFd, Notify, NotifyResult, Recorder, RequestError, RestoreRequest,
};
use testkit::{KillOnDrop, Tick, Workload};

/// Generous: CRIU and first touch of fresh memory are slow on a busy machine.
const LIMIT: Duration = Duration::from_secs(30);

/// A fresh images directory, open for CRIU.
fn images_dir(base: &Path) -> (PathBuf, File) {
    let dir = base.join("images");
    std::fs::create_dir(&dir).unwrap();
    let fd = File::open(&dir).unwrap();
    (dir, fd)
}

/// Waits until the state file shows a counter beyond `after`.
fn wait_past(state: &Path, after: u64) -> Tick {
    testkit::wait_until(LIMIT, || Tick::read(state).filter(|t| t.counter > after)).unwrap_or_else(
        || {
            panic!(
                "counter never passed {after}; last state: {:?}",
                Tick::read(state)
            )
        },
    )
}

/// Whether `pid` names a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The full error chain, `outer: inner: root`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[test]
fn library_dump_and_restore_keep_memory_and_pid() {
    let Some(criu) = testkit::real_criu("library_dump_and_restore_keep_memory_and_pid") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut workload = Workload::start(64, &state);
    let pid = workload.pid();
    let before = workload.wait_tick(2, LIMIT);
    let (_dir, images) = images_dir(tmp.path());

    let dumped = criu
        .dump(&DumpRequest::new(pid, images.as_fd()), None)
        .unwrap_or_else(|e| panic!("dump: {}", chain(&e)));
    workload.reap();
    let at_dump = Tick::read(&state).unwrap();
    assert!(at_dump.counter >= before.counter);
    let stats = dumped.stats.expect("dump statistics");
    assert!(stats.pages_written >= 64 * 1024 * 1024 / 4096, "{stats:?}");

    let restored = criu
        .restore(&RestoreRequest::new(images.as_fd()), None)
        .unwrap_or_else(|e| panic!("restore: {}", chain(&e)));
    let _guard = KillOnDrop(restored.pid);
    assert_eq!(restored.pid, pid as i32);
    assert!(restored.stats.is_some(), "restore statistics");

    let after = wait_past(&state, at_dump.counter + 2);
    assert_eq!(after.pid, pid);
    assert_eq!(after.checksum, before.checksum, "memory changed");
}

#[test]
fn cli_checkpoint_and_detached_restore() {
    let Some(_criu) = testkit::real_criu("cli_checkpoint_and_detached_restore") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let images = tmp.path().join("images");
    let pid_file = tmp.path().join("restored.pid");
    let mut workload = Workload::start(16, &state);
    let pid = workload.pid();
    let before = workload.wait_tick(2, LIMIT);

    let out = testkit::run(&[
        "checkpoint",
        "--pid",
        &pid.to_string(),
        "--images-dir",
        images.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    workload.reap();
    let at_dump = Tick::read(&state).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pid"], pid);
    assert_eq!(report["leave_running"], false);
    assert!(
        report["stats"]["pages_written"].as_u64().unwrap() >= 16 * 256,
        "{report}"
    );

    let out = testkit::run(&[
        "restore",
        "--images-dir",
        images.to_str().unwrap(),
        "--detach",
        "--json",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    // Whatever happens below, the restored process must not outlive the test.
    let _guard = KillOnDrop(pid as i32);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pid"], pid);
    assert!(
        report["stats"]["pages_restored"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );

    let after = wait_past(&state, at_dump.counter + 2);
    assert_eq!(after.pid, pid);
    assert_eq!(after.checksum, before.checksum);
}

#[test]
fn leave_running_keeps_the_original_and_the_images_restore() {
    let Some(criu) = testkit::real_criu("leave_running_keeps_the_original_and_the_images_restore")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut workload = Workload::start(8, &state);
    let pid = workload.pid();
    let before = workload.wait_tick(2, LIMIT);
    let (_dir, images) = images_dir(tmp.path());

    let mut request = DumpRequest::new(pid, images.as_fd());
    request.options.leave_running = true;
    criu.dump(&request, None)
        .unwrap_or_else(|e| panic!("dump: {}", chain(&e)));
    let at_dump = Tick::read(&state).unwrap();
    // The original goes on counting.
    let running = wait_past(&state, at_dump.counter + 2);
    assert_eq!(running.pid, pid);
    assert!(alive(pid as i32));

    // The same through the CLI.
    let cli_images = tmp.path().join("cli-images");
    let out = testkit::run(&[
        "checkpoint",
        "--pid",
        &pid.to_string(),
        "--images-dir",
        cli_images.to_str().unwrap(),
        "--leave-running",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "checkpoint --leave-running: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["leave_running"], true);
    assert!(
        report["stats"]["pages_written"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(cli_images.join("inventory.img").is_file());
    let running = wait_past(&state, running.counter + 2);
    assert_eq!(running.pid, pid);
    assert!(alive(pid as i32));

    // Then it goes away, and the images bring it back.
    let mut original = workload.child.take().unwrap();
    original.kill().unwrap();
    original.wait().unwrap();
    let last = Tick::read(&state).unwrap();
    let restored = criu
        .restore(&RestoreRequest::new(images.as_fd()), None)
        .unwrap_or_else(|e| panic!("restore: {}", chain(&e)));
    let _guard = KillOnDrop(restored.pid);
    assert_eq!(restored.pid, pid as i32);
    // The restored one resumes from the dump's counter, which is below the
    // last value the original wrote, so wait past that.
    let after = wait_past(&state, last.counter + 2);
    assert_eq!(after.pid, pid);
    assert_eq!(after.checksum, before.checksum);
}

#[test]
fn notifications_arrive_in_order_and_carry_the_restored_pid() {
    let Some(criu) = testkit::real_criu("notifications_arrive_in_order_and_carry_the_restored_pid")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut workload = Workload::start(4, &state);
    let pid = workload.pid();
    let (_dir, images) = images_dir(tmp.path());

    let mut dump_steps = Recorder::default();
    criu.dump(
        &DumpRequest::new(pid, images.as_fd()),
        Some(&mut dump_steps),
    )
    .unwrap_or_else(|e| panic!("dump: {}", chain(&e)));
    workload.reap();
    let at_dump = Tick::read(&state).unwrap();
    eprintln!("dump notifications: {:?}", dump_steps.scripts);
    assert_eq!(
        dump_steps.scripts,
        ["pre-dump", "query-ext-files", "post-dump"]
    );
    assert_eq!(dump_steps.restored_pid, None);

    let mut restore_steps = Recorder::default();
    let restored = criu
        .restore(
            &RestoreRequest::new(images.as_fd()),
            Some(&mut restore_steps),
        )
        .unwrap_or_else(|e| panic!("restore: {}", chain(&e)));
    let _guard = KillOnDrop(restored.pid);
    eprintln!("restore notifications: {:?}", restore_steps.scripts);
    assert_eq!(
        restore_steps.scripts,
        ["pre-restore", "post-restore", "pre-resume", "post-resume"]
    );
    assert_eq!(restore_steps.restored_pid, Some(restored.pid));
    let after = wait_past(&state, at_dump.counter);
    assert_eq!(after.pid as i32, restored.pid);
    assert_eq!(after.pid, pid);
}

/// Refuses the post-dump notification.
struct Refuse;

impl Notify for Refuse {
    fn post_dump(&mut self) -> NotifyResult {
        Err("refused by test".into())
    }
}

#[test]
fn refused_post_dump_aborts_and_the_tree_keeps_running() {
    let Some(criu) = testkit::real_criu("refused_post_dump_aborts_and_the_tree_keeps_running")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let workload = Workload::start(4, &state);
    let pid = workload.pid();
    workload.wait_tick(2, LIMIT);
    let (_dir, images) = images_dir(tmp.path());

    let err = criu
        .dump(&DumpRequest::new(pid, images.as_fd()), Some(&mut Refuse))
        .expect_err("a refused post-dump fails the dump");
    assert_eq!(err.pid, pid);
    match &err.source {
        RequestError::Handler { script, .. } => assert_eq!(script, "post-dump"),
        other => panic!("want a handler error, got {other:?}"),
    }
    let text = chain(&err);
    assert!(text.contains("refused by test"), "{text}");
    assert!(text.contains("post-dump"), "{text}");

    // Still the same process, still counting.
    let now = Tick::read(&state).unwrap();
    let later = wait_past(&state, now.counter + 2);
    assert_eq!(later.pid, pid);
    assert!(alive(pid as i32));
}

/// The pipe inode behind one of a process's descriptors (`pipe:[INODE]`).
fn pipe_key(pid: u32, fd: i32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let link = link.to_string_lossy().into_owned();
    assert!(link.starts_with("pipe:["), "{link}");
    link
}

/// Sends each state line read from `pipe` down a channel until EOF.
fn read_ticks(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Tick> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(tick) = Tick::parse(&line) {
                if tx.send(tick).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// Receives ticks until one has a counter beyond `after`.
fn recv_past(rx: &mpsc::Receiver<Tick>, after: u64) -> Tick {
    let until = std::time::Instant::now() + LIMIT;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(tick) if tick.counter > after => return tick,
            Ok(_) => {}
            Err(e) => panic!("no tick beyond {after} on the pipe: {e}"),
        }
    }
}

#[test]
fn inherit_fd_hands_a_new_pipe_to_the_restored_tree() {
    let Some(criu) = testkit::real_criu("inherit_fd_hands_a_new_pipe_to_the_restored_tree") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(testkit::private_copy("crabmigrate-workload", tmp.path()));
    cmd.args(["--setsid", "--stdout", "--mem-mib", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    close_inherited_fds(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut workload = Workload {
        child: Some(child),
        state: tmp.path().join("unused"),
    };
    let pid = workload.pid();
    let old_ticks = read_ticks(stdout);
    let first = recv_past(&old_ticks, 1);
    let key = pipe_key(pid, 1);
    let (_dir, images) = images_dir(tmp.path());

    // CRIU 4.1.1 dumps a pipe whose other end is outside the tree without
    // being told: no --external is needed (unix sockets would need it). At
    // restore it would recreate the pipe on its own, with no reader: the
    // restored workload's next write fails with EPIPE and it exits. Handing
    // it a new pipe for the key `pipe:[INODE]` keeps its output flowing.
    criu.dump(&DumpRequest::new(pid, images.as_fd()), None)
        .unwrap_or_else(|e| panic!("dump: {}", chain(&e)));
    workload.reap();
    // The old pipe ends: the last tick read is the dumped counter, or close.
    let mut at_dump = first.counter;
    while let Ok(tick) = old_ticks.recv_timeout(LIMIT) {
        at_dump = tick.counter;
    }

    let (new_read, new_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let new_key = format!(
        "pipe:[{}]",
        nix::sys::stat::fstat(&new_read).unwrap().st_ino
    );
    let new_ticks = read_ticks(File::from(new_read));
    let mut request = RestoreRequest::new(images.as_fd());
    request.options.inherit_fds = vec![InheritFd {
        key: &key,
        fd: new_write.as_fd(),
    }];
    let restored = criu
        .restore(&request, None)
        .unwrap_or_else(|e| panic!("restore: {}", chain(&e)));
    let _guard = KillOnDrop(restored.pid);
    // Only the restored process writes to the new pipe now.
    drop(new_write);
    assert_eq!(restored.pid, pid as i32);
    assert_eq!(pipe_key(pid, 1), new_key, "stdout is the new pipe");
    let tick = recv_past(&new_ticks, at_dump);
    assert_eq!(tick.pid, pid);
    assert_eq!(tick.checksum, first.checksum);
    let next = recv_past(&new_ticks, tick.counter);
    assert_eq!(next.counter, tick.counter + 1, "lines stay in order");
}

/// Makes `cmd` close the descriptors this test process inherited without
/// close-on-exec (the harness or a shell may pass some, e.g. /dev/null as fd
/// 10). The workload would inherit them, and CRIU must then dump them: that
/// fails for files in mounts it does not dump.
fn close_inherited_fds(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .max()
        .unwrap_or(2);
    // Descriptors opened after this point by other threads are close-on-exec
    // (Rust opens every descriptor so); a margin covers any that are not.
    let bound = highest + 256;
    let close_leaked = move || {
        for fd in 3..bound {
            // SAFETY: F_GETFD only reads the descriptor's flags; an unused
            // number gives EBADF.
            let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
            if flags >= 0 && flags & nix::libc::FD_CLOEXEC == 0 {
                // SAFETY: the descriptor is open and nothing in this child
                // uses it; close-on-exec ones are left for exec (std's
                // error-reporting pipe is one of them).
                unsafe { nix::libc::close(fd) };
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only calls fcntl and
    // close, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(close_leaked);
    }
}

/// Starts the workload in a private mount namespace of its own, with `src`
/// bind-mounted on `dst`; it writes its state to `dst/state`, which the host
/// sees as `src/state`.
fn workload_in_mount_namespace(src: &Path, dst: &Path) -> Workload {
    // The copy of the host's mount table must hold nothing CRIU cannot dump.
    // Tests that run at the same time add `ip netns` mounts (nsfs files under
    // /run/netns), which CRIU refuses ("doesn't have a proper root mount"),
    // and tmpfs mounts whose content changes while CRIU archives it ("Can't
    // dump tmpfs content"; /dev/shm too, where benchmarks write), so they
    // are unmounted inside the new namespace. Standard streams are opened
    // inside it too: descriptors opened outside point into mounts CRIU does
    // not dump ("Can't lookup mount=N for fd=0 path=/dev/null").
    let script = format!(
        "findmnt -rn -t nsfs -o TARGET | xargs -r -n1 umount -l && \
         findmnt -rn -t tmpfs -o TARGET | grep -E '^/(tmp|dev/shm)(/|$)' | \
           sort -r | xargs -r -n1 umount -l && \
         mount --bind '{src}' '{dst}' && \
         exec '{workload}' --setsid --out '{dst}/state' </dev/null >/dev/null 2>&1",
        src = src.display(),
        dst = dst.display(),
        workload = testkit::private_copy(
            "crabmigrate-workload",
            src.parent().unwrap_or(Path::new("/tmp"))
        )
        .display(),
    );
    let mut cmd = Command::new("unshare");
    // unshare and sh exec, so the child's pid is the workload's.
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    close_inherited_fds(&mut cmd);
    Workload::spawn(cmd, &src.join("state"))
}

#[test]
fn external_bind_mount_in_a_mount_namespace_restores_elsewhere() {
    let Some(criu) =
        testkit::real_criu("external_bind_mount_in_a_mount_namespace_restores_elsewhere")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let other = tmp.path().join("other");
    for dir in [&src, &dst, &other] {
        std::fs::create_dir(dir).unwrap();
    }
    let mut workload = workload_in_mount_namespace(&src, &dst);
    let pid = workload.pid();
    let before = workload.wait_tick(2, LIMIT);
    assert_eq!(before.pid, pid);
    assert!(
        !dst.join("state").exists(),
        "the bind mount leaked to the host"
    );
    let (_dir, images) = images_dir(tmp.path());

    let mut request = DumpRequest::new(pid, images.as_fd());
    request.options.external = vec![External::mount(dst.to_str().unwrap(), "data")];
    criu.dump(&request, None).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(tmp.path().join("images/dump.log")).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("Error")).collect();
        panic!("dump: {}; log errors: {errors:?}", chain(&e))
    });
    workload.reap();
    let at_dump = Tick::read(&src.join("state")).unwrap();

    // Map the mount to another directory: the restored workload writes there.
    let mut request = RestoreRequest::new(images.as_fd());
    // A root is required: without one, CRIU 4.1.1 logs "Cleaning mount
    // namespace", then "mnt: BUG at criu/mount.c:48", and the restored task
    // dies of SIGSEGV ("Restoring FAILED").
    request.options.root = Some(PathBuf::from("/"));
    request.options.external = vec![External::raw(format!("mnt[data]:{}", other.display()))];
    let mut steps = Recorder::default();
    let restored = criu
        .restore(&request, Some(&mut steps))
        .unwrap_or_else(|e| panic!("restore: {}", chain(&e)));
    let _guard = KillOnDrop(restored.pid);
    assert_eq!(restored.pid, pid as i32);
    // With a namespace to rebuild, CRIU also announces its setup.
    assert_eq!(
        steps.scripts,
        [
            "pre-restore",
            "setup-namespaces",
            "post-setup-namespaces",
            "post-restore",
            "pre-resume",
            "post-resume"
        ]
    );

    let after = wait_past(&other.join("state"), at_dump.counter);
    assert_eq!(after.pid, pid);
    assert_eq!(after.checksum, before.checksum);
    assert!(
        !dst.join("state").exists(),
        "the bind mount leaked to the host"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(other.to_str().unwrap()) && l.contains(dst.to_str().unwrap())),
        "{mounts}"
    );
}
