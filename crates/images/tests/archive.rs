//! Checkpoint archives: round trips in every compression, and crafted
//! hostile archives, each refused with a clear error and nothing left on
//! disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crabmigrate_images::archive::{
    self, Compression, ContainerExport, ExportOptions, ImportError, NoProgress,
};
use crabmigrate_images::Checkpoint;
use sha2::{Digest, Sha256};

fn export_synthetic(out: &Path, compression: Compression) -> tempfile::TempDir {
    let images = tempfile::tempdir().unwrap();
    common::write_checkpoint(images.path());
    let opts = ExportOptions {
        images_dir: images.path(),
        compression,
        container: None,
        criu_version: Some("4.1.1".into()),
        created_by: "test".into(),
    };
    archive::export(&opts, out, &mut NoProgress).unwrap();
    images
}

#[test]
fn round_trips_in_every_compression() {
    for compression in [Compression::Zstd, Compression::Gzip, Compression::None] {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("cp.tar");
        let images = export_synthetic(&file, compression);
        let head = std::fs::read(&file).unwrap();
        assert_eq!(Compression::sniff(&head), compression);
        let dest = work.path().join("imported");
        let imported = archive::import(&file, &dest, &mut NoProgress).unwrap();
        assert_eq!(imported.compression, compression);
        assert_eq!(
            imported.manifest.as_ref().unwrap().criu_version.as_deref(),
            Some("4.1.1")
        );
        assert!(imported.verified());
        for entry in std::fs::read_dir(images.path()).unwrap() {
            let entry = entry.unwrap();
            let copy = std::fs::read(dest.join(entry.file_name())).unwrap();
            assert_eq!(
                copy,
                std::fs::read(entry.path()).unwrap(),
                "{:?}",
                entry.file_name()
            );
        }
        let cp = Checkpoint::open(&dest).unwrap();
        assert_eq!(cp.processes.len(), 2);
        assert!(dest.join(archive::MANIFEST).is_file());
        // Only the result is left, no staging directory.
        let names: Vec<String> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

#[test]
fn refuses_checkpoints_that_need_their_parent() {
    use criu_proto::images::{PagemapEntry, PagemapHead};
    use criu_proto::prost::Message;
    let images = tempfile::tempdir().unwrap();
    common::write_checkpoint(images.path());
    let pagemap = common::image(
        &[
            crabmigrate_images::magic::IMG_COMMON,
            crabmigrate_images::magic::PAGEMAP,
        ],
        &[
            PagemapHead { pages_id: 1 }.encode_to_vec(),
            PagemapEntry {
                vaddr: 0,
                compat_nr_pages: 3,
                flags: Some(4),
                ..Default::default()
            }
            .encode_to_vec(),
            PagemapEntry {
                vaddr: 0x9000,
                compat_nr_pages: 5,
                flags: Some(1),
                ..Default::default()
            }
            .encode_to_vec(),
        ],
    );
    std::fs::write(images.path().join("pagemap-1.img"), pagemap).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = ExportOptions {
        images_dir: images.path(),
        compression: Compression::None,
        container: None,
        criu_version: None,
        created_by: "test".into(),
    };
    let err = archive::export(&opts, &out.path().join("a.tar"), &mut NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("takes 5 pages from its parent"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no partial archive"
    );
}

#[test]
fn container_archives_carry_spec_config_and_rootfs_changes() {
    let images = tempfile::tempdir().unwrap();
    common::write_checkpoint(images.path());
    // The runtime's network attachment rides along, at the top (Podman's
    // network.status).
    let network = b"{\"network\":\"net1\"}";
    std::fs::write(images.path().join(archive::NETWORK_STATUS), network).unwrap();
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("data/sub")).unwrap();
    std::fs::write(rootfs.join("data/sub/counter"), b"42\n").unwrap();
    std::os::unix::fs::symlink("/bin/busybox", rootfs.join("data/sh")).unwrap();
    std::fs::write(
        bundle.path().join("config.json"),
        b"{\"ociVersion\":\"1.0.2\"}",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("c.tar.zst");
    let export = |since: SystemTime| {
        let opts = ExportOptions {
            images_dir: images.path(),
            compression: Compression::Zstd,
            container: Some(ContainerExport {
                id: "c1".into(),
                config_dump: serde_json::json!({"id": "c1", "name": "c1"}),
                spec: bundle.path().join("config.json"),
                rootfs: rootfs.clone(),
                changed_since: since,
            }),
            criu_version: None,
            created_by: "test".into(),
        };
        archive::export(&opts, &file, &mut NoProgress).unwrap()
    };
    let later = export(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(later.rootfs_diff_files, Some(0));
    let all = export(UNIX_EPOCH + Duration::from_secs(1));
    // data, data/sub, data/sub/counter, data/sh
    assert_eq!(all.rootfs_diff_files, Some(4));

    let dest = out.path().join("imported");
    let imported = archive::import(&file, &dest, &mut NoProgress).unwrap();
    assert_eq!(
        imported.manifest.as_ref().unwrap().container.as_deref(),
        Some("c1")
    );
    assert_eq!(
        std::fs::read(dest.join("spec.dump")).unwrap(),
        b"{\"ociVersion\":\"1.0.2\"}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("config.dump")).unwrap()).unwrap();
    assert_eq!(config["id"], "c1");
    assert_eq!(std::fs::read(dest.join("deleted.files")).unwrap(), b"[]\n");
    assert!(imported
        .manifest
        .as_ref()
        .unwrap()
        .members
        .iter()
        .any(|m| m.path == archive::NETWORK_STATUS));
    assert_eq!(
        std::fs::read(dest.join(archive::NETWORK_STATUS)).unwrap(),
        network
    );
    // A fresh rootfs gets the changes.
    let fresh = tempfile::tempdir().unwrap();
    let applied = archive::apply_rootfs_diff(
        imported.rootfs_diff.as_deref(),
        imported.deleted_files.as_deref(),
        fresh.path(),
    )
    .unwrap();
    assert_eq!(applied.written, 4);
    assert_eq!(
        std::fs::read(fresh.path().join("data/sub/counter")).unwrap(),
        b"42\n"
    );
    assert_eq!(
        std::fs::read_link(fresh.path().join("data/sh")).unwrap(),
        PathBuf::from("/bin/busybox")
    );
}

#[test]
fn rootfs_diffs_and_deleted_lists_stay_inside_the_rootfs() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    // An absolute symlink in the rootfs pointing at the host.
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::os::unix::fs::symlink(&host, rootfs.join("escape")).unwrap();
    let diff = dir.path().join("diff.tar");
    std::fs::write(
        &diff,
        tar_of(&[raw("escape/pwned", b'0', b"x", None, None)]),
    )
    .unwrap();
    let err = archive::apply_rootfs_diff(Some(&diff), None, &rootfs).unwrap_err();
    assert!(
        err.to_string().contains("through a link out of the rootfs"),
        "{err}"
    );
    assert!(!host.join("pwned").exists());

    std::fs::write(&diff, tar_of(&[raw("../pwned", b'0', b"x", None, None)])).unwrap();
    let err = archive::apply_rootfs_diff(Some(&diff), None, &rootfs).unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    std::fs::write(&diff, tar_of(&[raw("dev/sda", b'4', b"", None, None)])).unwrap();
    let err = archive::apply_rootfs_diff(Some(&diff), None, &rootfs).unwrap_err();
    assert!(
        err.to_string().contains("device nodes are not allowed"),
        "{err}"
    );

    std::fs::write(host.join("keep"), b"k").unwrap();
    let deleted = dir.path().join("deleted.files");
    std::fs::write(&deleted, br#"["/escape/keep"]"#).unwrap();
    let err = archive::apply_rootfs_diff(None, Some(&deleted), &rootfs).unwrap_err();
    assert!(err.to_string().contains("link out of the rootfs"), "{err}");
    assert!(host.join("keep").exists());
    std::fs::write(&deleted, br#"["../x"]"#).unwrap();
    assert!(archive::apply_rootfs_diff(None, Some(&deleted), &rootfs).is_err());
}

// ---- crafted archives ----

/// One raw tar member: name bytes written as given (no checks), type flag,
/// data, and optionally a lying size or a link target.
struct Raw {
    name: String,
    kind: u8,
    data: Vec<u8>,
    size: Option<u64>,
    link: Option<String>,
}

fn raw(name: &str, kind: u8, data: &[u8], size: Option<u64>, link: Option<&str>) -> Raw {
    Raw {
        name: name.into(),
        kind,
        data: data.to_vec(),
        size,
        link: link.map(Into::into),
    }
}

fn tar_of(members: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..m.name.len()].copy_from_slice(m.name.as_bytes());
            if let Some(link) = &m.link {
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            old.linkflag = [m.kind];
        }
        h.set_mode(0o600);
        h.set_size(m.size.unwrap_or(m.data.len() as u64));
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.data);
        let pad = (512 - m.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A manifest listing `checkpoint/` and the given files.
fn manifest(files: &[(&str, &[u8])]) -> Raw {
    let mut members = vec![serde_json::json!({"path": "checkpoint", "type": "dir"})];
    for (path, data) in files {
        members.push(serde_json::json!({
            "path": path, "type": "file", "size": data.len(), "sha256": sha(data)
        }));
    }
    let m = serde_json::json!({
        "format": archive::FORMAT, "version": archive::VERSION,
        "created": "2026-01-01T00:00:00Z", "created_by": "test", "members": members,
    });
    raw(
        archive::MANIFEST,
        b'0',
        &serde_json::to_vec(&m).unwrap(),
        None,
        None,
    )
}

const INVENTORY: &[u8] = b"not really an inventory";

fn dir_member() -> Raw {
    raw("checkpoint/", b'5', b"", None, None)
}

/// Imports `bytes` and checks it is refused, leaving only the archive in
/// the work directory; returns the error chain.
fn refused(bytes: &[u8]) -> (ImportError, String) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("bad.tar");
    std::fs::write(&file, bytes).unwrap();
    let dest = work.path().join("images");
    let err = archive::import(&file, &dest, &mut NoProgress).expect_err("refused");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["bad.tar".to_owned()],
        "{text}: left behind {left:?}"
    );
    (err, text)
}

#[test]
fn a_crafted_good_archive_imports() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("good.tar");
    std::fs::write(
        &file,
        tar_of(&[
            manifest(&[("checkpoint/inventory.img", INVENTORY)]),
            dir_member(),
            raw("checkpoint/inventory.img", b'0', INVENTORY, None, None),
        ]),
    )
    .unwrap();
    let dest = work.path().join("images");
    archive::import(&file, &dest, &mut NoProgress).unwrap();
    assert_eq!(
        std::fs::read(dest.join("inventory.img")).unwrap(),
        INVENTORY
    );
}

#[test]
fn refuses_traversal_and_absolute_paths() {
    let (_, text) = refused(&tar_of(&[
        manifest(&[("checkpoint/inventory.img", INVENTORY)]),
        raw("checkpoint/../../evil", b'0', b"x", None, None),
    ]));
    assert!(
        text.contains("\"..\" that climbs out of the extraction root"),
        "{text}"
    );
    let (_, text) = refused(&tar_of(&[
        manifest(&[]),
        raw("/tmp/crabmigrate-evil", b'0', b"x", None, None),
    ]));
    assert!(text.contains("absolute path"), "{text}");
    assert!(!Path::new("/tmp/crabmigrate-evil").exists());
}

#[test]
fn refuses_links_out_of_the_root_and_device_nodes() {
    let (e, text) = refused(&tar_of(&[
        manifest(&[]),
        raw("checkpoint/passwd", b'2', b"", None, Some("/etc/passwd")),
    ]));
    assert!(matches!(e, ImportError::LinkOutside { .. }), "{text}");
    assert!(text.contains("points out of the extraction root"), "{text}");
    let (e, _) = refused(&tar_of(&[
        manifest(&[]),
        raw("checkpoint/up", b'2', b"", None, Some("../../etc")),
    ]));
    assert!(matches!(e, ImportError::LinkOutside { .. }));
    let (e, _) = refused(&tar_of(&[
        manifest(&[]),
        raw("checkpoint/shadow", b'1', b"", None, Some("/etc/shadow")),
    ]));
    assert!(matches!(e, ImportError::LinkOutside { .. }));
    let (_, text) = refused(&tar_of(&[
        manifest(&[]),
        raw("checkpoint/null", b'3', b"", None, None),
    ]));
    assert!(text.contains("character device node"), "{text}");
    let (_, text) = refused(&tar_of(&[
        manifest(&[]),
        raw("checkpoint/fifo", b'6', b"", None, None),
    ]));
    assert!(text.contains("fifo"), "{text}");
}

#[test]
fn refuses_oversize_members_and_digest_mismatches() {
    let big = vec![7u8; 4096];
    let (e, text) = refused(&tar_of(&[
        manifest(&[("checkpoint/inventory.img", INVENTORY)]),
        dir_member(),
        raw("checkpoint/inventory.img", b'0', &big, None, None),
    ]));
    assert!(matches!(e, ImportError::Oversize { .. }), "{text}");
    assert!(
        text.contains("4096 bytes, larger than the 23 declared"),
        "{text}"
    );
    let (e, text) = refused(&tar_of(&[
        manifest(&[("checkpoint/inventory.img", INVENTORY)]),
        dir_member(),
        raw(
            "checkpoint/inventory.img",
            b'0',
            b"NOT really an inventory",
            None,
            None,
        ),
    ]));
    assert!(matches!(e, ImportError::Digest { .. }), "{text}");
    assert!(text.contains("does not match its sha256"), "{text}");
    let (e, _) = refused(&tar_of(&[
        manifest(&[("checkpoint/inventory.img", INVENTORY)]),
        dir_member(),
        raw("checkpoint/extra.img", b'0', b"x", None, None),
    ]));
    assert!(matches!(e, ImportError::NotListed(_)));
    let (e, _) = refused(&tar_of(&[raw(
        "checkpoint/inventory.img",
        b'0',
        INVENTORY,
        None,
        None,
    )]));
    assert!(matches!(e, ImportError::NotCheckpointArchive { .. }));
}

#[test]
fn refuses_truncated_archives() {
    let good = tar_of(&[
        manifest(&[
            ("checkpoint/inventory.img", INVENTORY),
            ("checkpoint/pages-1.img", &[1u8; 2000]),
        ]),
        dir_member(),
        raw("checkpoint/inventory.img", b'0', INVENTORY, None, None),
        raw("checkpoint/pages-1.img", b'0', &[1u8; 2000], None, None),
    ]);
    // Cut at a member boundary (after the manifest, checkpoint/ and
    // inventory.img): the missing member is named.
    let manifest_blocks = tar_of(&[manifest(&[
        ("checkpoint/inventory.img", INVENTORY),
        ("checkpoint/pages-1.img", &[1u8; 2000]),
    ])])
    .len()
        - 1024;
    let cut = manifest_blocks + 512 + 1024;
    let (e, text) = refused(&good[..cut]);
    assert!(matches!(e, ImportError::Truncated { .. }), "{text}");
    assert!(text.contains("pages-1.img"), "{text}");
    // Cut inside a member's data.
    let (_, text) = refused(&good[..good.len() - 1024 - 700]);
    assert!(text.contains("truncated"), "{text}");
    // Compressed and cut.
    let zst = zstd::encode_all(&good[..], 3).unwrap();
    let (_, text) = refused(&zst[..zst.len() / 2]);
    assert!(text.contains("truncated"), "{text}");
    // Nothing at all.
    refused(b"");
}

#[test]
fn refuses_an_existing_non_empty_target() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cp.tar");
    export_synthetic(&file, Compression::None);
    let dest = work.path().join("images");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), b"mine").unwrap();
    let err = archive::import(&file, &dest, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");
    assert_eq!(std::fs::read(dest.join("keep")).unwrap(), b"mine");
    // An empty one is fine.
    std::fs::remove_file(dest.join("keep")).unwrap();
    archive::import(&file, &dest, &mut NoProgress).unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]

    /// Damaged archives never panic and never leave anything behind.
    #[test]
    fn damaged_archives_never_panic(at in 0usize..100_000, value in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<bool>()) {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("cp.tar");
        export_synthetic(&file, Compression::None);
        let mut bytes = std::fs::read(&file).unwrap();
        let i = at % bytes.len();
        if cut { bytes.truncate(i) } else { bytes[i] ^= value | 1 }
        std::fs::write(&file, &bytes).unwrap();
        let dest = work.path().join("images");
        if archive::import(&file, &dest, &mut NoProgress).is_err() {
            let left = std::fs::read_dir(work.path()).unwrap().count();
            proptest::prop_assert_eq!(left, 1);
        }
    }
}
