//! `crabmigrate inspect` and the image decoder (crates/images) on images
//! written by a real CRIU: a process tree, a busybox container, a
//! lazy-pages dump; and real images damaged on purpose (wrong magic,
//! truncated messages, absurd lengths, a bounded mutation loop), which must
//! give errors and never panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crabmigrate_images::Checkpoint;
use criu_rpc::{CancelToken, DumpRequest, Notify, NotifyResult};
use testkit::{container_id, BusyboxBundle, KillOnDrop, Runtime, Workload};

const PATIENCE: Duration = Duration::from_secs(60);
/// The workload's memory, and the pages it takes at 4 KiB.
const MEM_MIB: usize = 16;
const MEM_PAGES: u64 = (MEM_MIB as u64) << 20 >> 12;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// `crabmigrate ARGS`, which must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let out = testkit::run(args);
    assert!(
        out.status.success(),
        "crabmigrate {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `crabmigrate inspect --json DIR` as JSON.
fn inspect_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["inspect", "--json", dir.to_str().unwrap()])).expect("JSON")
}

/// `sh` (a session leader) with a 16 MiB workload child: a two-process
/// tree. Returns the guard of `sh` and the workload's host pid.
fn two_process_tree(dir: &Path) -> (Workload, KillOnDrop) {
    let state = dir.join("state");
    let mut cmd = Command::new("setsid");
    cmd.args(["sh", "-c", "\"$0\" --mem-mib \"$1\" --out \"$2\" & wait"])
        .arg(testkit::private_copy("crabmigrate-workload", dir))
        .arg(MEM_MIB.to_string())
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let sh = Workload::spawn(cmd, &state);
    let children = format!("/proc/{0}/task/{0}/children", sh.pid());
    let child: i32 = std::fs::read_to_string(&children)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no child in {children}"));
    (sh, KillOnDrop(child))
}

#[test]
fn inspect_shows_a_process_tree_with_its_memory() {
    if testkit::real_criu("inspect_shows_a_process_tree_with_its_memory").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (mut sh, child) = two_process_tree(work.path());
    sh.wait_tick(2, PATIENCE);
    let images = work.path().join("images");
    let root = sh.pid();
    ok(&[
        "checkpoint",
        "--pid",
        &root.to_string(),
        "--images-dir",
        images.to_str().unwrap(),
    ]);
    sh.reap();
    std::mem::forget(child);

    let j = inspect_json(&images);
    let procs = j["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "{j:#}");
    assert_eq!(procs[0]["pid"], root);
    assert_eq!(procs[0]["command"], "sh");
    assert_eq!(procs[0]["state"], "alive");
    let w = &procs[1];
    assert_eq!(w["ppid"], root);
    // comm is at most 15 characters.
    assert_eq!(w["command"], "crabmigrate-wor");
    let dumped = w["memory"]["pages_dumped"].as_u64().unwrap();
    assert!(
        (MEM_PAGES..MEM_PAGES + 1024).contains(&dumped),
        "{dumped} pages dumped for a {MEM_MIB} MiB workload"
    );
    let page = j["page_size"].as_u64().unwrap();
    assert_eq!(w["memory"]["dumped_bytes"].as_u64().unwrap(), dumped * page);
    assert!(w["memory"]["mapped_bytes"].as_u64().unwrap() >= (MEM_MIB as u64) << 20);
    assert_eq!(w["memory"]["pages_lazy"], 0);
    assert_eq!(w["memory"]["pages_in_parent"], 0);
    assert!(
        w["exe"].as_str().unwrap().ends_with("crabmigrate-workload"),
        "{w}"
    );
    // The totals agree with CRIU's own statistics and the page files.
    let total = j["summary"]["pages_dumped"].as_u64().unwrap();
    assert_eq!(j["dump_stats"]["pages_written"].as_u64().unwrap(), total);
    assert_eq!(j["summary"]["pages_bytes"].as_u64().unwrap(), total * page);
    assert!(j["warnings"].as_array().unwrap().is_empty(), "{j:#}");
    assert_eq!(j["arch"], "x86_64");

    // The library says the same; the human tables show the tree.
    let cp = Checkpoint::open(&images).unwrap();
    assert_eq!(cp.summary.pages_dumped, total);
    let human = ok(&["inspect", images.to_str().unwrap()]);
    assert!(human.contains("└─ crabmigrate-wor"), "{human}");
    assert!(human.contains("2 processes"), "{human}");
    let tree_only = ok(&["inspect", "--ps-tree", images.to_str().unwrap()]);
    assert!(tree_only.contains("\nprocess tree\n"), "{tree_only}");
    assert!(!tree_only.contains("\nopen files\n"), "{tree_only}");
    let files = ok(&["inspect", "--files", "--json", images.to_str().unwrap()]);
    let files: serde_json::Value = serde_json::from_str(&files).unwrap();
    assert!(files.get("mount_namespaces").is_none());
    assert!(files["processes"][1]["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["description"] == "/dev/null"));
}

#[test]
fn inspect_shows_a_busybox_container() {
    if testkit::real_criu("inspect_shows_a_busybox_container").is_none() {
        return;
    }
    let bundle = BusyboxBundle::new(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    let rt = Runtime::new();
    let id = container_id("inspect");
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    let status = rt
        .command(&[
            "run",
            "-d",
            "--bundle",
            bundle.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Both sleeps started.
    testkit::wait_until(PATIENCE, || {
        let out = rt.run(&["ps", &id, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.len() >= 3).then_some(())
    })
    .expect("three processes in the container");
    let out = rt.run(&["checkpoint", &id, "--images-dir", images.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let j = inspect_json(&images);
    let procs = j["processes"].as_array().unwrap();
    let commands: Vec<&str> = procs
        .iter()
        .map(|p| p["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["sh", "sleep", "sleep"], "{j:#}");
    assert_eq!(procs[0]["pid"], 1, "pid 1 of the container's pid namespace");
    assert!(procs[1..].iter().all(|p| p["ppid"] == 1));
    assert!(procs.iter().all(|p| p["exe"] == "/bin/busybox"));
    let ns = &j["mount_namespaces"][0]["mounts"];
    let mounts: Vec<(&str, &str)> = ns
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountpoint"].as_str().unwrap(),
                m["fstype"].as_str().unwrap(),
            )
        })
        .collect();
    for want in [
        ("/", ""),
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/sys", "sysfs"),
    ] {
        assert!(
            mounts
                .iter()
                .any(|(p, t)| *p == want.0 && (want.1.is_empty() || *t == want.1)),
            "{want:?} not in {mounts:?}"
        );
    }
    let human = ok(&["inspect", "--mounts", images.to_str().unwrap()]);
    assert!(human.contains("/dev/pts"), "{human}");
    assert!(j["summary"]["pages_dumped"].as_u64().unwrap() > 0);
}

/// Tells the test when the lazy page server listens.
struct Ready(mpsc::Sender<()>);

impl Notify for Ready {
    fn status_ready(&mut self) -> NotifyResult {
        self.0
            .send(())
            .map_err(|_| "the test stopped waiting".into())
    }
}

#[test]
fn inspect_shows_lazy_pages_as_lazy_not_dumped() {
    let Some(criu) = testkit::real_criu("inspect_shows_lazy_pages_as_lazy_not_dumped") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let workload = Workload::start(MEM_MIB, &state);
    workload.wait_tick(2, PATIENCE);
    let images = work.path().join("images");
    std::fs::create_dir(&images).unwrap();
    // A free port for CRIU's lazy page server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cancel = CancelToken::new().unwrap();
    let criu = criu.with_cancel(cancel.clone());
    let (ready_tx, ready) = mpsc::channel();
    let pid = workload.pid();
    let dir: PathBuf = images.clone();
    let dump = std::thread::spawn(move || {
        let images = std::fs::File::open(&dir).unwrap();
        let mut request = DumpRequest::new(pid, std::os::fd::AsFd::as_fd(&images));
        request.lazy_pages_port = Some(port);
        criu.dump(&request, Some(&mut Ready(ready_tx))).map(|_| ())
    });
    let served = ready.recv_timeout(PATIENCE);
    // The images are complete once CRIU serves the pages it kept back.
    let inspected = served.is_ok().then(|| inspect_json(&images));
    cancel.cancel();
    let finished = dump.join().unwrap();
    drop(workload);
    let j = inspected.unwrap_or_else(|| panic!("the lazy dump never served pages: {finished:?}"));

    let m = &j["processes"][0]["memory"];
    let lazy = m["pages_lazy"].as_u64().unwrap();
    let dumped = m["pages_dumped"].as_u64().unwrap();
    assert!(
        lazy >= MEM_PAGES,
        "{lazy} lazy pages for {MEM_MIB} MiB: {m}"
    );
    assert!(
        dumped < 1024,
        "{dumped} pages dumped although they are lazy: {m}"
    );
    assert_eq!(j["summary"]["pages_lazy"].as_u64().unwrap(), lazy);
    assert_eq!(
        j["summary"]["pages_bytes"].as_u64().unwrap(),
        dumped * j["page_size"].as_u64().unwrap(),
        "the page files hold only the pages that are not lazy"
    );
    let human = ok(&["inspect", "--memory", images.to_str().unwrap()]);
    assert!(human.contains(&format!("{lazy} lazy pages")), "{human}");
}

/// A tiny deterministic generator for the mutation loop.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn err_of(dir: &Path) -> String {
    let out = testkit::run(&["inspect", dir.to_str().unwrap()]);
    assert!(!out.status.success(), "inspect accepted {}", dir.display());
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn damaged_real_images_are_errors_not_panics() {
    if testkit::real_criu("damaged_real_images_are_errors_not_panics").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut workload = Workload::start(1, &work.path().join("state"));
    workload.wait_tick(1, PATIENCE);
    let images = work.path().join("images");
    let pid = workload.pid();
    ok(&[
        "checkpoint",
        "--pid",
        &pid.to_string(),
        "--images-dir",
        images.to_str().unwrap(),
    ]);
    workload.reap();
    // The real image bytes, pages aside, as fixtures.
    let fixtures: Vec<(String, Vec<u8>)> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(n, _)| !n.starts_with("pages-") && (n.ends_with(".img") || n == "stats-dump"))
        .collect();
    assert!(fixtures.iter().any(|(n, _)| n == "pstree.img"));
    let copy = |dir: &Path, name: &str, bytes: &[u8]| {
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
        std::fs::create_dir(dir).unwrap();
        for (n, b) in &fixtures {
            std::fs::write(dir.join(n), if n == name { bytes } else { b }).unwrap();
        }
    };
    let bad = work.path().join("bad");
    let core = format!("core-{pid}.img");
    let original = |name: &str| fixtures.iter().find(|(n, _)| n == name).unwrap().1.clone();

    // Wrong magic: the error names the file and the magic.
    let mut b = original(&core);
    b[4..8].copy_from_slice(&0x5749_2820u32.to_ne_bytes());
    copy(&bad, &core, &b);
    let err = err_of(&bad);
    assert!(
        err.contains(&core) && err.contains("0x57492820 (mm)"),
        "{err}"
    );
    b[0..4].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
    copy(&bad, &core, &b);
    let err = err_of(&bad);
    assert!(err.contains("unknown image magic 0xdeadbeef"), "{err}");
    // A truncated message.
    let mm = format!("mm-{pid}.img");
    let b = original(&mm);
    copy(&bad, &mm, &b[..b.len() - 7]);
    let err = err_of(&bad);
    assert!(err.contains(&mm) && err.contains("only"), "{err}");
    // An absurd length.
    let mut b = original("pstree.img");
    b[8..12].copy_from_slice(&u32::MAX.to_ne_bytes());
    copy(&bad, "pstree.img", &b);
    let err = err_of(&bad);
    assert!(err.contains("claims 4294967295 bytes"), "{err}");

    // A bounded mutation loop over every image: errors, never panics.
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    for round in 0..300 {
        let (name, good) = &fixtures[(rng.next() as usize) % fixtures.len()];
        let mut b = good.clone();
        if b.is_empty() {
            continue;
        }
        for _ in 0..1 + rng.next() % 3 {
            let at = (rng.next() as usize) % b.len();
            match rng.next() % 4 {
                0 => b[at] ^= 1 << (rng.next() % 8),
                1 => b.truncate(at),
                2 => {
                    for (k, v) in (rng.next() as u32).to_ne_bytes().iter().enumerate() {
                        if let Some(s) = b.get_mut(at + k) {
                            *s = *v;
                        }
                    }
                }
                _ => b.insert(at, rng.next() as u8),
            }
            if b.is_empty() {
                break;
            }
        }
        copy(&bad, name, &b);
        let result = std::panic::catch_unwind(|| Checkpoint::open(&bad).map(|_| ()));
        assert!(
            result.is_ok(),
            "round {round}: {name} mutated made the decoder panic"
        );
    }
}
