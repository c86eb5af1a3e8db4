//! Checkpoint archives through the CLI: a container exported, imported on a
//! fresh state root and restored into a fresh bundle (it continues, and its
//! rootfs changes came along); crafted hostile archives, each refused with
//! a clear error and nothing extracted.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use testkit::{container_id, wait_until, BusyboxBundle, Runtime};

const PATIENCE: Duration = Duration::from_secs(60);

/// Writes a marker once, then counts (as container_cr's counter does).
const COUNTER: &str = "echo made-before-checkpoint > /tmp/marker; \
    read t < /proc/sys/kernel/random/uuid; i=0; \
    while true; do i=$((i+1)); echo \"$t $i\" > /tmp/counter.new; \
    mv /tmp/counter.new /tmp/counter; sleep 0.1; done";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

fn counter_bundle() -> BusyboxBundle {
    let bundle = BusyboxBundle::new(&["sh", "-c", COUNTER]);
    std::os::unix::fs::symlink("busybox", bundle.rootfs().join("bin/mv")).unwrap();
    bundle
}

/// (token, n) of the counter file.
fn count(rootfs: &Path) -> Option<(String, u64)> {
    let t = fs::read_to_string(rootfs.join("tmp/counter")).ok()?;
    let (token, n) = t.trim().split_once(' ')?;
    Some((token.to_owned(), n.parse().ok()?))
}

fn ok(rt: &Runtime, args: &[&str]) -> String {
    let out = rt.run(args);
    assert!(
        out.status.success(),
        "crabmigrate {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn exported_container_is_restored_elsewhere_and_continues() {
    if testkit::real_criu("exported_container_is_restored_elsewhere_and_continues").is_none() {
        return;
    }
    let source = counter_bundle();
    let work = tempfile::tempdir().unwrap();
    let rt = Runtime::new();
    let id = container_id("archive");
    let status = rt
        .command(&[
            "run",
            "-d",
            "--bundle",
            source.path().to_str().unwrap(),
            &id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(PATIENCE, || count(&source.rootfs()).filter(|c| c.1 >= 3)).expect("counting");
    let images = work.path().join("images");
    ok(
        &rt,
        &["checkpoint", &id, "--images-dir", images.to_str().unwrap()],
    );
    let at_dump = count(&source.rootfs()).unwrap();
    let archive = work.path().join("cp.tar.zst");
    let said = ok(&rt, &["export", &id, "--output", archive.to_str().unwrap()]);
    assert!(said.contains("changed rootfs entries"), "{said}");
    // The source forgets the container, as a host it migrated away from.
    ok(&rt, &["delete", &id]);

    // The archive reads like Podman's: checkpoint/, spec.dump, config.dump,
    // rootfs-diff.tar, deleted.files, stats-dump, and the manifest first.
    let listing = tar_listing(&archive);
    assert_eq!(listing[0], "crabmigrate-manifest.json");
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "spec.dump",
        "config.dump",
        "rootfs-diff.tar",
        "deleted.files",
        "stats-dump",
    ] {
        assert!(
            listing.iter().any(|m| m == want),
            "{want} not in {listing:?}"
        );
    }

    // A fresh state root and a fresh bundle without the container's files.
    let target = counter_bundle();
    assert!(!target.rootfs().join("tmp/marker").exists());
    let rt2 = Runtime::new();
    let out_path = work.path().join("restore.out");
    let status = rt2
        .command(&[
            "restore",
            &id,
            "--bundle",
            target.path().to_str().unwrap(),
            "--import",
            archive.to_str().unwrap(),
            "-d",
        ])
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(work.path().join("restore.err")).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "restore --import failed: {}",
        fs::read_to_string(work.path().join("restore.err")).unwrap_or_default()
    );
    assert!(target.path().join("checkpoint/inventory.img").is_file());
    assert_eq!(
        fs::read_to_string(target.rootfs().join("tmp/marker"))
            .unwrap()
            .trim(),
        "made-before-checkpoint",
        "rootfs-diff.tar was applied to the new bundle"
    );
    let after = wait_until(PATIENCE, || {
        count(&target.rootfs()).filter(|c| c.0 == at_dump.0 && c.1 > at_dump.1)
    });
    assert!(
        after.is_some(),
        "the counter did not continue past {at_dump:?}: {:?}",
        count(&target.rootfs())
    );
    assert_eq!(rt2.state(&id)["status"], "running");
}

/// Member names of a zstd tar, in order.
fn tar_listing(archive: &Path) -> Vec<String> {
    let file = fs::File::open(archive).unwrap();
    let decoder = zstd_decoder(file);
    let mut tar = tar::Archive::new(decoder);
    tar.entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned()
        })
        .collect()
}

fn zstd_decoder(file: fs::File) -> impl std::io::Read {
    zstd::stream::read::Decoder::new(file).unwrap()
}

// ---- crafted archives ----

use test_support::tar::Member as Raw;

fn raw(name: &str, kind: u8, data: &[u8], size: Option<u64>, link: Option<&str>) -> Raw {
    let mut m = Raw::new(name, kind, data);
    if let Some(size) = size {
        m = m.claiming(size);
    }
    if let Some(link) = link {
        m = m.linking(link);
    }
    m
}

/// A tar written byte by byte, so that names and links are not checked.
fn tar_of(members: &[Raw]) -> Vec<u8> {
    test_support::tar::archive(members).unwrap_or_else(|e| panic!("{e}"))
}

fn manifest(files: &[(&str, &[u8])]) -> Raw {
    let mut members = vec![serde_json::json!({"path": "checkpoint", "type": "dir"})];
    for (path, data) in files {
        members.push(serde_json::json!({
            "path": path, "type": "file", "size": data.len(),
            "sha256": hex::encode(Sha256::digest(data)),
        }));
    }
    let m = serde_json::json!({
        "format": "crabmigrate-checkpoint-archive", "version": 1,
        "created": "2026-01-01T00:00:00Z", "created_by": "test", "members": members,
    });
    raw(
        "crabmigrate-manifest.json",
        b'0',
        &serde_json::to_vec(&m).unwrap(),
        None,
        None,
    )
}

/// `crabmigrate import` of `bytes` must fail, say `expect`, and leave only
/// the archive behind.
fn cli_refuses(bytes: &[u8], expect: &str) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("bad.tar");
    fs::write(&file, bytes).unwrap();
    let dest = work.path().join("images");
    let out = testkit::run(&[
        "import",
        file.to_str().unwrap(),
        "--images-dir",
        dest.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "import accepted it: {}",
        text(&out.stdout)
    );
    assert!(
        err.starts_with("crabmigrate: error: cannot import"),
        "{err}"
    );
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    let left: Vec<String> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["bad.tar"], "{err}");
}

const INV: &[u8] = b"inventory bytes";

#[test]
fn import_refuses_crafted_archives_and_leaves_nothing() {
    let good_manifest = || manifest(&[("checkpoint/inventory.img", INV)]);
    let dir = || raw("checkpoint/", b'5', b"", None, None);
    // Path traversal.
    cli_refuses(
        &tar_of(&[
            good_manifest(),
            raw("checkpoint/../../../tmp/evil", b'0', b"x", None, None),
        ]),
        "climbs out of the extraction root",
    );
    // A symbolic link out of the root.
    cli_refuses(
        &tar_of(&[
            good_manifest(),
            dir(),
            raw("checkpoint/etc", b'2', b"", None, Some("/etc")),
        ]),
        "points out of the extraction root",
    );
    // A device node.
    cli_refuses(
        &tar_of(&[
            good_manifest(),
            dir(),
            raw("checkpoint/sda", b'4', b"", None, None),
        ]),
        "block device node",
    );
    // A member larger than declared.
    cli_refuses(
        &tar_of(&[
            good_manifest(),
            dir(),
            raw("checkpoint/inventory.img", b'0', &[0; 9000], None, None),
        ]),
        "larger than the 15 declared",
    );
    // A digest mismatch.
    cli_refuses(
        &tar_of(&[
            good_manifest(),
            dir(),
            raw(
                "checkpoint/inventory.img",
                b'0',
                b"INVENTORY BYTES",
                None,
                None,
            ),
        ]),
        "does not match its sha256",
    );
    // Truncated: the last member never comes, or stops half way.
    let whole = tar_of(&[
        good_manifest(),
        dir(),
        raw("checkpoint/inventory.img", b'0', INV, None, None),
    ]);
    cli_refuses(&whole[..whole.len() - 1024 - 1024], "truncated");
    cli_refuses(&whole[..whole.len() - 1024 - 500], "truncated");
    // Not an archive of ours.
    cli_refuses(b"hello", "is not a tar archive");
    cli_refuses(
        &tar_of(&[raw("checkpoint/inventory.img", b'0', INV, None, None)]),
        "is not a checkpoint archive: it starts with no crabmigrate-manifest.json",
    );
}

#[test]
fn export_refuses_a_directory_without_a_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    let out = testkit::run(&[
        "export",
        "--images-dir",
        work.path().to_str().unwrap(),
        "--output",
        work.path().join("a.tar").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("holds no checkpoint"), "{err}");
    assert_eq!(
        fs::read_dir(work.path()).unwrap().count(),
        0,
        "no partial archive"
    );
}
