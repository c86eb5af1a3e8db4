//! crabmigrate as the OCI runtime of the engines people run (root needed;
//! under CI=true nothing skips: setup installs Podman, conmon and
//! containerd from the distribution).
//!
//! - `podman_drives_crabmigrate`: Podman 4.3 with `--runtime` naming
//!   crabmigrate (cgroupfs manager, vfs storage, a busybox image from
//!   `podman import`) runs a counter, execs into it (Podman's seccomp
//!   profile and capabilities are in force), pauses and unpauses it,
//!   checkpoints it with
//!   `--leave-running --print-stats`, checkpoints and restores it
//!   (the counter goes on, the init as confined as before), checkpoints it
//!   with `--export` and restores the archive with `--import` into a second
//!   storage root, and stops it. crabmigrate adds nothing to Podman's output
//!   nor to the container's log (runc's silence).
//! - `containerd_drives_crabmigrate`: a containerd started by the test with
//!   its own root, state and socket runs a container through `ctr` with the
//!   runc shim's binary set to crabmigrate, execs into it, checkpoints it
//!   into an image, removes it and restores it from the image (the counter
//!   goes on), kills it (a second kill is "not found", as with runc).
//!
//! Each test owns every storage root, state root, cgroup parent and daemon
//! it uses, and a guard removes them even when the test fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use testkit::wait_until;

pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// Whether every program is on PATH; prints SKIPPED (or fails under
/// CI=true) when one is missing.
pub(crate) fn programs(test: &str, names: &[&str]) -> bool {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| which(n).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        !testkit::in_ci(),
        "{test}: {missing:?} missing under CI=true (scripts/setup.sh installs them)"
    );
    println!("SKIPPED {test}: {missing:?} not installed");
    false
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A busybox root filesystem (sh and the applets the tests use, /tmp).
pub(crate) fn busybox_rootfs(dir: &Path) {
    for sub in ["bin", "tmp", "proc", "sys", "dev", "etc", "run"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static is installed (scripts/setup.sh)");
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "echo", "grep", "mv", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

/// A tar of `dir`'s contents.
pub(crate) fn tar_of(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap()
}

/// The counter a container writes to /tmp/counter every 50 ms.
pub(crate) const COUNTER: &str =
    "i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; \
                       sleep 0.05; done";

/// Umounts whatever is mounted below `dir` (deepest first).
pub(crate) fn umount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes cgroup `path` (relative, e.g. "crabmigrate-podman-123") and
/// everything below it from every hierarchy.
pub(crate) fn remove_cgroup_tree(path: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.filter_map(Result::ok) {
        let top = h.path().join(path);
        let mut dirs = vec![];
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = fs::read_dir(&d) {
                stack.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
                dirs.push(d);
            }
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

// ---------------------------------------------------------------------------
// Podman

/// Podman with private storage, state, tmp dir and cgroup parent, and
/// crabmigrate (through a wrapper giving it a private state root) as the
/// runtime named "crabmigrate".
pub(crate) struct Podman {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) cgroup_parent: String,
}

impl Podman {
    pub(crate) fn new(criu: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        let wrapper = bin.join("crabmigrate");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {} --root {} \"$@\"\n",
                testkit::bin_dir().join("crabmigrate").display(),
                dir.path().join("runtime-state").display()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        // Podman asks `criu` on PATH for its version before a checkpoint.
        std::os::unix::fs::symlink(criu, bin.join("criu")).unwrap();
        fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
                 runtime_supports_json = [\"crabmigrate\", \"runc\"]\n\
                 [engine.runtimes]\ncrabmigrate = [\"{}\"]\nrunc = [\"{}\"]\n",
                wrapper.display(),
                which("runc")
                    .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"))
                    .display()
            ),
        )
        .unwrap();
        Self {
            dir,
            cgroup_parent: format!("crabmigrate-podman-{}", std::process::id()),
        }
    }

    /// `podman` on storage root number `root` (1 or 2).
    pub(crate) fn command(&self, root: u32, args: &[&str]) -> Command {
        let d = self.dir.path();
        let path = format!(
            "{}:{}",
            d.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("PATH", path)
            .arg("--root")
            .arg(d.join(format!("storage{root}")))
            .arg("--runroot")
            .arg(d.join(format!("run{root}")))
            .arg("--tmpdir")
            .arg(d.join(format!("tmp{root}")))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"]);
        if args.first() != Some(&"--runtime") {
            cmd.args(["--runtime", "crabmigrate"]);
        }
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    /// The criu executable for Podman (found on PATH) and the tests.
    pub(crate) fn criu_path() -> PathBuf {
        criu_rpc::CriuBinary::locate(None)
            .unwrap()
            .path()
            .to_path_buf()
    }

    /// Imports the busybox rootfs (kept in `rootfs/` of the test's
    /// directory) into storage root `root` as image `image`.
    pub(crate) fn import_busybox(&self, root: u32, image: &str) {
        let rootfs = self.rootfs();
        if !rootfs.is_dir() {
            busybox_rootfs(&rootfs);
        }
        let tar_path = self.dir.path().join("rootfs.tar");
        if !tar_path.is_file() {
            fs::write(&tar_path, tar_of(&rootfs)).unwrap();
        }
        self.ok(root, &["import", tar_path.to_str().unwrap(), image]);
    }

    /// The busybox rootfs the images are made of.
    pub(crate) fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Runs the counter detached as container `name` from `image`, with
    /// OCI runtime `runtime`, and waits until it counts.
    pub(crate) fn run_counter(&self, root: u32, runtime: &str, name: &str, image: &str) -> u64 {
        // Root lacks CAP_SYS_RESOURCE here: Podman's default nofile limit
        // cannot be set, the current hard limit can.
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .unwrap()
            .1;
        let nofile = format!("nofile={hard}:{hard}");
        let parent = format!("/{}", self.cgroup_parent);
        self.ok(
            root,
            &[
                "--runtime",
                runtime,
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "none",
                "--ulimit",
                &nofile,
                "--ulimit",
                "nproc=4096:4096",
                "--cgroup-parent",
                &parent,
                image,
                "sh",
                "-c",
                COUNTER,
            ],
        );
        wait_until(PATIENCE, || self.counter(root, name)).expect("the counter runs")
    }

    pub(crate) fn run(&self, root: u32, args: &[&str]) -> Output {
        self.command(root, args).output().expect("podman runs")
    }

    pub(crate) fn ok(&self, root: u32, args: &[&str]) -> String {
        let out = self.run(root, args);
        assert!(out.status.success(), "podman {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub(crate) fn counter(&self, root: u32, name: &str) -> Option<u64> {
        let out = self.run(root, &["exec", name, "cat", "/tmp/counter"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    pub(crate) fn init_pid(&self, root: u32, name: &str) -> u32 {
        self.ok(root, &["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for root in [1, 2] {
            let _ = self.run(root, &["rm", "--all", "--force", "--time", "0"]);
            let _ = self.run(root, &["rmi", "--all", "--force"]);
        }
        umount_below(self.dir.path());
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// The confinement lines of /proc/PID/status.
fn confinement(pid: u32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| {
            [
                "CapEff:",
                "CapPrm:",
                "CapBnd:",
                "NoNewPrivs:",
                "Seccomp:",
                "Seccomp_filters:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn podman_drives_crabmigrate() {
    let Some(criu) = testkit::real_criu("podman_drives_crabmigrate") else {
        return;
    };
    if !programs("podman_drives_crabmigrate", &["podman", "conmon"]) {
        return;
    }
    drop(criu);
    let podman = Podman::new(&Podman::criu_path());
    let image = format!("localhost/crabmigrate-bb:{}", std::process::id());
    podman.import_busybox(1, &image);
    let name = format!("cm-{}", std::process::id());
    let first = podman.run_counter(1, "crabmigrate", &name, &image);

    // exec: inside the container, under Podman's seccomp profile and
    // capability set.
    let seen = podman.ok(
        1,
        &[
            "exec",
            &name,
            "grep",
            "-E",
            "^(Seccomp|CapBnd):",
            "/proc/self/status",
        ],
    );
    assert!(seen.contains("Seccomp:\t2"), "{seen}");
    let bounding = seen
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no CapBnd in {seen}"));
    // Podman's default set: CAP_CHOWN (bit 0) in, CAP_SYS_ADMIN (21) out.
    assert_eq!(bounding & 1, 1, "{seen}");
    assert_eq!(bounding & (1 << 21), 0, "{seen}");

    // checkpoint and restore: the counter goes on, confinement is kept.
    let before = confinement(podman.init_pid(1, &name));
    assert!(before.contains(&"Seccomp:\t2".to_owned()), "{before:?}");
    // pause and unpause (the runtime's pause and resume).
    podman.ok(1, &["pause", &name]);
    assert_eq!(
        podman.ok(1, &["inspect", "-f", "{{.State.Status}}", &name]),
        "paused"
    );
    podman.ok(1, &["unpause", &name]);
    // --leave-running (Podman passes the flag twice) with --print-stats
    // (Podman reads CRIU's statistics from the work path).
    let stats = podman.ok(
        1,
        &[
            "container",
            "checkpoint",
            "--leave-running",
            "--print-stats",
            &name,
        ],
    );
    assert!(stats.contains("pages_written"), "{stats}");
    assert_eq!(
        podman.ok(1, &["inspect", "-f", "{{.State.Status}}", &name]),
        "running"
    );
    // As with runc, the runtime adds nothing to what Podman prints (the
    // container's name) nor to the container's log.
    assert_eq!(podman.ok(1, &["container", "checkpoint", &name]), name);
    assert_eq!(
        podman.ok(1, &["inspect", "-f", "{{.State.Status}}", &name]),
        "exited"
    );
    assert_eq!(podman.ok(1, &["container", "restore", &name]), name);
    let log = podman.run(1, &["logs", &name]);
    assert!(
        log.stdout.is_empty() && log.stderr.is_empty(),
        "the container's log: {}",
        text(&log)
    );
    let after = confinement(podman.init_pid(1, &name));
    assert_eq!(before, after, "the restored init is confined differently");
    let later = wait_until(PATIENCE, || podman.counter(1, &name).filter(|&c| c > first))
        .expect("the counter goes on after the restore");
    assert!(later > first);

    // --export, then --import into a second storage root (with the same
    // image, moved by save and load).
    let archive = podman.dir.path().join("checkpoint.tar");
    podman.ok(
        1,
        &[
            "container",
            "checkpoint",
            "--export",
            archive.to_str().unwrap(),
            &name,
        ],
    );
    let image_tar = podman.dir.path().join("image.tar");
    podman.ok(1, &["save", "-o", image_tar.to_str().unwrap(), &image]);
    podman.ok(2, &["load", "-i", image_tar.to_str().unwrap()]);
    podman.ok(
        2,
        &[
            "container",
            "restore",
            "--import",
            archive.to_str().unwrap(),
        ],
    );
    let moved = wait_until(PATIENCE, || podman.counter(2, &name).filter(|&c| c > later))
        .expect("the imported container counts on");
    assert!(moved > later);
    podman.ok(2, &["stop", "--time", "1", &name]);
    podman.ok(2, &["rm", &name]);
    podman.ok(1, &["rm", &name]);
}

// ---------------------------------------------------------------------------
// containerd

/// A containerd of the test's own, and the namespace its containers use.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    namespace: String,
}

impl Containerd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{sock}.debug\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            opt = d.join("opt").display(),
        );
        fs::write(d.join("config.toml"), config).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let me = Self {
            dir,
            daemon: Some(daemon),
            namespace: format!("crabmigrate-{}", std::process::id()),
        };
        wait_until(PATIENCE, || {
            me.run(&["version"]).status.success().then_some(())
        })
        .unwrap_or_else(|| panic!("containerd did not come up: {}", me.log()));
        me
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "ctr {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The STATUS column of `ctr task ls` for `id`.
    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ok(&["task", "ls"]);
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks and containers first, so that their shims exit.
        let tasks = String::from_utf8_lossy(&self.run(&["task", "ls", "-q"]).stdout).into_owned();
        for id in tasks.lines() {
            let _ = self.run(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.run(&["task", "delete", "--force", id]);
        }
        let containers =
            String::from_utf8_lossy(&self.run(&["container", "ls", "-q"]).stdout).into_owned();
        for id in containers.lines() {
            let _ = self.run(&["container", "delete", id]);
        }
        if let Some(mut daemon) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if wait_until(Duration::from_secs(10), || daemon.try_wait().ok().flatten()).is_none() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        umount_below(self.dir.path());
        // The runc shim keeps the runtime's state under /run/containerd.
        let _ = fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        remove_cgroup_tree(&self.namespace);
    }
}

/// An OCI image layout tar holding `rootfs` as one layer, named `name`.
fn oci_image(rootfs: &Path, name: &str) -> Vec<u8> {
    let digest = |bytes: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let layer = tar_of(rootfs);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(&layer), "size": layer.len()}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest(&manifest), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": name}}]
    }))
    .unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, path, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&layer, &config, &manifest] {
        let d = digest(blob);
        add(&format!("blobs/sha256/{}", &d["sha256:".len()..]), blob);
    }
    out.into_inner().unwrap()
}

#[test]
fn containerd_drives_crabmigrate() {
    if testkit::real_criu("containerd_drives_crabmigrate").is_none() {
        return;
    }
    if !programs(
        "containerd_drives_crabmigrate",
        &["containerd", "ctr", "containerd-shim-runc-v2"],
    ) {
        return;
    }
    let ctd = Containerd::start();
    let rootfs = ctd.dir.path().join("image-rootfs");
    busybox_rootfs(&rootfs);
    let image = "localhost/crabmigrate-bb:latest";
    let image_tar = ctd.dir.path().join("image.tar");
    fs::write(&image_tar, oci_image(&rootfs, image)).unwrap();
    ctd.ok(&[
        "image",
        "import",
        "--snapshotter",
        "native",
        image_tar.to_str().unwrap(),
    ]);

    let id = format!("cm-{}", std::process::id());
    let runtime = testkit::bin_dir().join("crabmigrate");
    ctd.ok(&[
        "run",
        "-d",
        "--snapshotter",
        "native",
        "--runc-binary",
        runtime.to_str().unwrap(),
        image,
        &id,
        "sh",
        "-c",
        COUNTER,
    ]);
    assert_eq!(ctd.task_status(&id).as_deref(), Some("RUNNING"));
    let attempt = std::cell::Cell::new(0);
    // The counter, read through `ctr task exec` (each exec its own ID).
    let counter = |above: u64| {
        wait_until(PATIENCE, || {
            attempt.set(attempt.get() + 1);
            let exec_id = format!("probe{}", attempt.get());
            let out = ctd.run(&[
                "task",
                "exec",
                "--exec-id",
                &exec_id,
                &id,
                "cat",
                "/tmp/counter",
            ]);
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&c| c > above)
        })
    };
    let seen = counter(5).expect("the counter is readable through exec");
    // The shim asked crabmigrate (the `ps --format json` path) for pids.
    let pids = ctd.ok(&["task", "ps", &id]);
    assert!(pids.lines().count() >= 2, "{pids}");

    // Checkpoint into an image (the shim pauses, checkpoints with runc's
    // flags and --leave-running, resumes), remove the container, and bring
    // it back from the image (the shim restores with -no-subreaper).
    let checkpoint = format!("localhost/{id}-checkpoint:1");
    ctd.ok(&["container", "checkpoint", "--task", &id, &checkpoint]);
    ctd.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    wait_until(PATIENCE, || {
        (ctd.task_status(&id).as_deref() == Some("STOPPED")).then_some(())
    })
    .unwrap_or_else(|| panic!("the task did not stop: {:?}", ctd.task_status(&id)));
    // A kill of the exited task is "not found", as with runc.
    let again = ctd.run(&["task", "kill", "--signal", "SIGKILL", &id]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not found"),
        "{}",
        text(&again)
    );
    ctd.ok(&["task", "delete", &id]);
    ctd.ok(&["container", "delete", &id]);
    ctd.ok(&["container", "restore", "--live", &id, &checkpoint]);
    assert_eq!(ctd.task_status(&id).as_deref(), Some("RUNNING"));
    let restored = counter(0).expect("the restored counter is readable");
    assert!(
        restored >= seen,
        "the counter started afresh ({restored} < {seen}) instead of going on"
    );
    counter(restored).expect("the restored counter goes on");

    ctd.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    wait_until(PATIENCE, || {
        (ctd.task_status(&id).as_deref() == Some("STOPPED")).then_some(())
    })
    .unwrap_or_else(|| panic!("the task did not stop: {:?}", ctd.task_status(&id)));
    ctd.ok(&["task", "delete", &id]);
    ctd.ok(&["container", "delete", &id]);
}
