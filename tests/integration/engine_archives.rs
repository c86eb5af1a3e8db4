//! Checkpoint archives moving between Podman 4.3 and crabmigrate, both
//! ways, with a busybox counter that must go on (root needed; under
//! CI=true nothing skips).
//!
//! - `podman_archives_restore_under_crabmigrate`: Podman checkpoints a
//!   counter with `--export`, once with crabmigrate as its runtime and once
//!   with runc (so the images are runc's); `crabmigrate import` takes each
//!   archive, saying its contents are not verified (Podman's archives carry
//!   no digests), and `crabmigrate restore --import` into a bundle holding
//!   only the image's rootfs writes the bundle's config.json from the
//!   archive's spec and restores it: the counter goes on from where it was.
//! - `crabmigrate_archives_restore_under_podman`: crabmigrate runs and
//!   checkpoints a counter from a plain bundle; `export --image` names the
//!   image the rootfs came from, and `podman container restore --import`
//!   (crabmigrate as Podman's runtime) restores it: the counter goes on,
//!   `podman exec` works in it, its log is clean. Without `--image` Podman
//!   refuses the archive as docs/images.md says ("repository name must have
//!   at least one component").

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;
use testkit::wait_until;

use crate::engines::{programs, text, Podman, COUNTER, PATIENCE};

/// crabmigrate with its own state root; deletes what it made on drop.
struct Crab {
    root: tempfile::TempDir,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Crab {
    fn new() -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            ids: Default::default(),
        }
    }

    /// `crabmigrate --root ROOT ARGS`, stdio not inherited by containers.
    fn run(&self, args: &[&str], quiet_stdio: bool) -> std::process::Output {
        let mut cmd = std::process::Command::new(testkit::bin_dir().join("crabmigrate"));
        cmd.arg("--root").arg(self.root.path()).args(args);
        cmd.stdin(Stdio::null());
        if quiet_stdio {
            // A detached container must not keep a file of ours as its
            // stdio (CRIU could not checkpoint it): nothing to read then.
            let status = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            return std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
        }
        cmd.output().expect("crabmigrate runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, false);
        assert!(out.status.success(), "crabmigrate {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Starts a detached container (or restores one) with /dev/null stdio.
    fn detached(&self, id: &str, args: &[&str]) {
        self.ids.borrow_mut().push(id.to_owned());
        let out = self.run(args, true);
        assert!(
            out.status.success(),
            "crabmigrate {args:?} failed; run it by hand to see why (its output went to /dev/null)"
        );
    }
}

impl Drop for Crab {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.run(&["delete", "--force", id], false);
        }
    }
}

/// The counter the rootfs of `bundle` holds.
fn counter_in(bundle: &Path) -> Option<u64> {
    fs::read_to_string(bundle.join("rootfs/tmp/counter"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A copy of the busybox rootfs (the image's files) as `BUNDLE/rootfs`.
fn bundle_with_image_rootfs(podman: &Podman, name: &str) -> PathBuf {
    let bundle = podman.dir.path().join(name);
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", podman.rootfs().display()))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    bundle
}

#[test]
fn podman_archives_restore_under_crabmigrate() {
    let Some(criu) = testkit::real_criu("podman_archives_restore_under_crabmigrate") else {
        return;
    };
    if !programs(
        "podman_archives_restore_under_crabmigrate",
        &["podman", "conmon", "runc"],
    ) {
        return;
    }
    drop(criu);
    let podman = Podman::new(&Podman::criu_path());
    let crab = Crab::new();
    let image = format!("localhost/crabmigrate-bb:{}", std::process::id());
    podman.import_busybox(1, &image);
    for runtime in ["crabmigrate", "runc"] {
        let name = format!("pa-{runtime}-{}", std::process::id());
        let before = podman.run_counter(1, runtime, &name, &image);
        let _ = wait_until(PATIENCE, || podman.counter(1, &name).filter(|&c| c > 5));
        let archive = podman.dir.path().join(format!("{name}.tar.zst"));
        let at_checkpoint = podman.counter(1, &name).unwrap_or(before);
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

        // import: checked as far as it goes, and said so.
        let images = podman.dir.path().join(format!("{name}-images"));
        let said = crab.ok(&[
            "import",
            archive.to_str().unwrap(),
            "--images-dir",
            images.to_str().unwrap(),
        ]);
        assert!(said.contains("a Podman archive"), "{said}");
        assert!(said.contains("not verified"), "{said}");
        assert!(said.contains(&format!("runtime {runtime}")), "{said}");
        assert!(images.join("inventory.img").is_file());
        assert!(images.join("spec.dump").is_file());

        // restore --import into a bundle with the image's rootfs only.
        let bundle = bundle_with_image_rootfs(&podman, &format!("{name}-bundle"));
        let id = format!("{name}-crab");
        crab.detached(
            &id,
            &[
                "restore",
                &id,
                "--bundle",
                bundle.to_str().unwrap(),
                "--import",
                archive.to_str().unwrap(),
                "--detach",
            ],
        );
        assert!(bundle.join("config.json").is_file());
        let restored = counter_in(&bundle).expect("the rootfs changes were applied");
        assert!(
            restored >= at_checkpoint,
            "{runtime}: the counter is {restored}, below {at_checkpoint} at the checkpoint"
        );
        wait_until(PATIENCE, || {
            counter_in(&bundle).filter(|&c| c > restored + 5)
        })
        .unwrap_or_else(|| panic!("{runtime}: the restored counter does not go on"));
        let state: serde_json::Value = serde_json::from_str(&crab.ok(&["state", &id])).unwrap();
        assert_eq!(state["status"], "running");
        crab.ok(&["delete", "--force", &id]);
        podman.ok(1, &["rm", &name]);
    }
}

#[test]
fn crabmigrate_archives_restore_under_podman() {
    let Some(criu) = testkit::real_criu("crabmigrate_archives_restore_under_podman") else {
        return;
    };
    if !programs(
        "crabmigrate_archives_restore_under_podman",
        &["podman", "conmon"],
    ) {
        return;
    }
    drop(criu);
    let podman = Podman::new(&Podman::criu_path());
    let crab = Crab::new();
    let image = format!("localhost/crabmigrate-bb:{}", std::process::id());
    podman.import_busybox(1, &image);

    // A plain bundle of the same files, with runc's default spec.
    let bundle = bundle_with_image_rootfs(&podman, "bundle");
    crab.ok(&["spec", "--bundle", bundle.to_str().unwrap()]);
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["process"]["args"] = json!(["sh", "-c", COUNTER]);
    config["process"]["terminal"] = json!(false);
    config["root"]["readonly"] = json!(false);
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let id = format!("ca-{}", std::process::id());
    crab.detached(
        &id,
        &["run", "-d", "--bundle", bundle.to_str().unwrap(), &id],
    );
    let at_checkpoint =
        wait_until(PATIENCE, || counter_in(&bundle).filter(|&c| c > 5)).expect("the counter runs");
    let images = podman.dir.path().join("crab-images");
    crab.ok(&["checkpoint", &id, "--images-dir", images.to_str().unwrap()]);

    // Without --image: exported (with a warning), and Podman refuses it.
    let plain = podman.dir.path().join("plain.tar.zst");
    let said = crab.ok(&["export", &id, "--output", plain.to_str().unwrap()]);
    assert!(said.contains("no --image"), "{said}");
    let refused = podman.run(
        1,
        &["container", "restore", "--import", plain.to_str().unwrap()],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("repository name must have at least one component"),
        "{}",
        text(&refused)
    );

    // With --image: Podman restores it with crabmigrate as its runtime.
    let archive = podman.dir.path().join("crab.tar.zst");
    crab.ok(&[
        "export",
        &id,
        "--output",
        archive.to_str().unwrap(),
        "--image",
        &image,
    ]);
    assert_eq!(
        podman
            .ok(
                1,
                &[
                    "container",
                    "restore",
                    "--import",
                    archive.to_str().unwrap(),
                ],
            )
            .len(),
        64,
        "Podman prints the restored container's ID"
    );
    let restored = wait_until(PATIENCE, || podman.counter(1, &id))
        .expect("podman exec reads the restored counter");
    assert!(
        restored >= at_checkpoint,
        "the counter is {restored}, below {at_checkpoint} at the checkpoint"
    );
    wait_until(PATIENCE, || {
        podman.counter(1, &id).filter(|&c| c > restored + 5)
    })
    .expect("the counter goes on under Podman");
    assert_eq!(
        podman.ok(1, &["inspect", "-f", "{{.ImageName}}", &id]),
        image
    );
    let log = podman.run(1, &["logs", &id]);
    assert!(
        log.stdout.is_empty() && log.stderr.is_empty(),
        "the container's log: {}",
        text(&log)
    );
    podman.ok(1, &["stop", "--time", "1", &id]);
    podman.ok(1, &["rm", &id]);
    crab.ok(&["delete", &id]);
}
