//! Lazy pages (post-copy): a dump with `lazy_pages` serves the pages it
//! kept back, a `criu lazy-pages` daemon on the restoring side fetches them
//! while the restored workload already runs, and the restored workload's
//! memory checksum matches the original's.
//!
//! Two "hosts" (namespaces `src` and `dst`, joined by a veth): the workload
//! and the dumping CRIU run in `src`, the daemon and the restoring CRIU in
//! `dst`. A lazy dump keeps the frozen source tree alive until every page is
//! served, so the restore runs while the original still exists: the
//! workload is pid 1 of its own pid namespace (`unshare --pid --fork`), and
//! CRIU restores that namespace anew, so the pids cannot collide.
//!
//! Order: DUMP (lazy_pages_port) sends `status-ready` once its page server
//! listens; the images are copied to `dst`; the daemon starts (same work
//! directory as the restore); RESTORE with `lazy_pages`; the DUMP answer
//! arrives once the daemon has fetched everything; the daemon exits 0.
//! Once through the library, once through the `crabmigrate` commands.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;

use criu_rpc::{
    CancelToken, DumpOutcome, DumpRequest, LazyPagesRequest, Notify, NotifyResult, RestoreRequest,
};
use testkit::{KillOnDrop, Tick, Workload};

use crate::netns::{NetNs, TwoHosts};
use crate::page_server::{
    continued, copy_images, explain, lines_of, lives_in, log_tails, wait_line, workload_program,
    CancelOnDrop, ChildGuard, PATIENCE,
};

/// The lazy page server's port. Every test has its own `src` namespace, so
/// a fixed port cannot collide.
const PORT: u16 = 27027;

/// The workload as pid 1 of a new pid namespace, inside network namespace
/// `ns`. Returns the `unshare` child (our child, reaped by the guard) and
/// the host pid of the workload (the tree to dump).
fn workload_in_own_pidns(ns: &NetNs, mem_mib: usize, state: &Path) -> (Workload, u32) {
    let mut cmd = ns.command("unshare");
    cmd.args(["--pid", "--fork"])
        .arg(workload_program(state.parent().unwrap()))
        .args(["--setsid", "--mem-mib", &mem_mib.to_string(), "--out"])
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let outer = Workload::spawn(cmd, state);
    let children = format!("/proc/{0}/task/{0}/children", outer.pid());
    let inner = std::fs::read_to_string(&children)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no child in {children}"));
    assert_eq!(
        outer.tick().pid,
        1,
        "the workload is pid 1 of its namespace"
    );
    (outer, inner)
}

struct Dirs {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
    work: PathBuf,
    state: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new()
        .prefix("crabmigrate-lazy-")
        .tempdir()
        .unwrap();
    let [src, dst, work] = ["src", "dst", "work"].map(|n| tmp.path().join(n));
    for dir in [&src, &dst, &work] {
        std::fs::create_dir(dir).unwrap();
    }
    Dirs {
        state: tmp.path().join("state"),
        src,
        dst,
        work,
        _tmp: tmp,
    }
}

/// Checks that most of the workload's memory was not in the images (so it
/// came over the network, on demand) and that the restore itself put only
/// the non-lazy pages in place.
fn assert_lazy(images: &Path, restored: &criu_rpc::RestoreOutcome) {
    let in_images: u64 = std::fs::read_dir(images)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        in_images < 4 << 20,
        "{in_images} bytes of pages in the images: the 32 MiB were not kept back"
    );
    let stats = restored.stats.expect("stats-restore");
    assert!(
        stats.pages_restored < 1024,
        "the restore itself placed only the non-lazy pages: {stats:?}"
    );
}

/// Tells the test thread when the lazy page server listens.
struct Ready(mpsc::Sender<()>);

impl Notify for Ready {
    fn status_ready(&mut self) -> NotifyResult {
        self.0
            .send(())
            .map_err(|_| "the test stopped waiting".into())
    }
}

#[test]
fn lazy_dump_and_lazy_restore_keep_memory_intact() {
    let Some(criu) = testkit::real_criu("lazy_dump_and_lazy_restore_keep_memory_intact") else {
        return;
    };
    let hosts = TwoHosts::new("lazy");
    let d = dirs();
    let (mut outer, inner) = workload_in_own_pidns(&hosts.src, 32, &d.state);
    // Armed until the dump has killed the source tree.
    let inner_guard = KillOnDrop(inner as i32);
    let before = outer.wait_tick(3, PATIENCE);

    let cancel = CancelToken::new().unwrap();
    let _stop = CancelOnDrop(cancel.clone());
    let src_criu = hosts.src.criu(&criu).with_cancel(cancel.clone());
    let dst_criu = hosts.dst.criu(&criu).with_cancel(cancel);

    let (ready_tx, ready) = mpsc::channel();
    let src_dir = d.src.clone();
    let dump = std::thread::spawn(move || -> Result<DumpOutcome, String> {
        let images = File::open(&src_dir).unwrap();
        let mut request = DumpRequest::new(inner, images.as_fd());
        request.lazy_pages_port = Some(PORT);
        src_criu
            .dump(&request, Some(&mut Ready(ready_tx)))
            .map_err(|e| explain(&e, &[&src_dir]))
    });
    if ready.recv_timeout(PATIENCE).is_err() {
        match dump.join().unwrap() {
            Err(e) => panic!("the lazy dump failed: {e}"),
            Ok(_) => panic!("the lazy dump ended without status-ready"),
        }
    }
    // The source is frozen now; its last tick is where the restore resumes.
    let last = Tick::read(&d.state).unwrap();
    let copied = copy_images(&d.src, &d.dst);
    assert!(copied.iter().any(|n| n == "inventory.img"), "{copied:?}");

    let mut daemon = dst_criu
        .lazy_pages(&LazyPagesRequest {
            images_dir: &d.dst,
            work_dir: &d.work,
            address: &hosts.veth.a_addr,
            port: PORT,
            log_file: "lazy-pages.log",
            tls_args: Vec::new(),
        })
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[&d.work])));
    let images = File::open(&d.dst).unwrap();
    let work = File::open(&d.work).unwrap();
    let mut request = RestoreRequest::new(images.as_fd());
    request.common.work_dir = Some(work.as_fd());
    request.options.lazy_pages = true;
    let restored = dst_criu
        .restore(&request, None)
        .unwrap_or_else(|e| panic!("{}", explain(&e, &[&d.work])));
    let _restored = KillOnDrop(restored.pid);
    assert!(
        lives_in(restored.pid, &hosts.dst),
        "restored on the dst host"
    );

    // The dump answers once every lazy page has been fetched. Its
    // statistics are not checked: CRIU 4.1.1 resets them when the lazy page
    // server starts (cr_page_server calls init_stats again), so stats-dump
    // of a lazy dump reads zero pages and a frozen time counted from boot.
    // The images and the restore's own statistics show what was kept back.
    let _: DumpOutcome = dump
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the lazy dump failed: {e}"));
    std::mem::forget(inner_guard);
    outer.reap();
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "criu lazy-pages exited with {status}; {}",
        log_tails(&[&d.work])
    );
    assert_lazy(&d.src, &restored);

    let after = continued(&d.state, &last);
    assert_eq!(after.checksum, before.checksum, "memory arrived intact");
    assert_eq!(after.pid, 1, "pid 1 of the restored pid namespace");
}

#[test]
fn cli_lazy_migration_between_two_namespaces() {
    let Some(_criu) = testkit::real_criu("cli_lazy_migration_between_two_namespaces") else {
        return;
    };
    let hosts = TwoHosts::new("lazycli");
    let d = dirs();
    let (mut outer, inner) = workload_in_own_pidns(&hosts.src, 32, &d.state);
    let inner_guard = KillOnDrop(inner as i32);
    let before = outer.wait_tick(3, PATIENCE);
    let crabmigrate = testkit::program("crabmigrate");

    let mut checkpoint = ChildGuard::spawn(
        hosts
            .src
            .command(&crabmigrate)
            .args(["checkpoint", "--pid", &inner.to_string(), "--images-dir"])
            .arg(&d.src)
            .args(["--lazy-pages", "--port", &PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let checkpoint_says = lines_of(checkpoint.child().stderr.take().unwrap());
    wait_line(
        &checkpoint_says,
        "serving lazy pages",
        "checkpoint --lazy-pages",
    );
    let last = Tick::read(&d.state).unwrap();
    copy_images(&d.src, &d.dst);

    let mut lazy = ChildGuard::spawn(
        hosts
            .dst
            .command(&crabmigrate)
            .args(["lazy-pages", "--images-dir"])
            .arg(&d.dst)
            .arg("--work-dir")
            .arg(&d.work)
            .args(["--page-server", &format!("{}:{PORT}", hosts.veth.a_addr)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let lazy_says = lines_of(lazy.child().stderr.take().unwrap());
    wait_line(&lazy_says, "lazy-pages daemon ready", "lazy-pages");

    let pid_file = d.dst.join("restored.pid");
    let out = hosts
        .dst
        .command(&crabmigrate)
        .args(["restore", "--lazy-pages", "--detach", "--images-dir"])
        .arg(&d.dst)
        .arg("--work-dir")
        .arg(&d.work)
        .arg("--pid-file")
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _restored = KillOnDrop(restored);
    assert!(lives_in(restored, &hosts.dst));

    let (status, report) = checkpoint.wait();
    assert!(status.success(), "checkpoint exited with {status}");
    assert!(report.contains("checkpointed process"), "{report}");
    std::mem::forget(inner_guard);
    outer.reap();
    let (status, _) = lazy.wait();
    assert!(status.success(), "lazy-pages exited with {status}");

    let after = continued(&d.state, &last);
    assert_eq!(after.checksum, before.checksum);
}
