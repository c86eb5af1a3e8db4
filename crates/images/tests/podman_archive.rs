//! Podman's checkpoint archives (`podman container checkpoint --export`):
//! the layout is imported with what can be checked checked, and hostile
//! variants are refused with nothing left on disk. The real thing (Podman
//! 4.3 writing and reading archives) is in tests/integration/engines.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use crabmigrate_images::archive::{self, ArchiveFormat, ImportError, NoProgress};

/// One member of a hand-made archive.
enum M<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>),
    /// A header claiming `size` bytes, with `data` behind it.
    Lying(&'a str, u64, Vec<u8>),
    Link(&'a str, &'a str),
}

fn tar_of(members: &[M<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        match m {
            M::Dir(name) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            M::File(name, data) => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, &data[..]).unwrap();
            }
            M::Lying(name, size, data) => {
                // The name as given (the tar crate refuses `..` itself).
                let mut h = tar::Header::new_old();
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_size(*size);
                h.set_cksum();
                let bytes = b.get_mut();
                bytes.extend_from_slice(h.as_bytes());
                bytes.extend_from_slice(data);
                let pad = (512 - data.len() % 512) % 512;
                bytes.extend(std::iter::repeat_n(0u8, pad));
            }
            M::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The members of an archive as Podman 4.3 writes it, around the synthetic
/// checkpoint's images.
fn podman_members(images: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut rootfs = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o1777);
    h.set_size(0);
    rootfs.append_data(&mut h, "./", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    rootfs
        .append_data(&mut h, "tmp/counter", &b"19\n"[..])
        .unwrap();
    let config = serde_json::json!({
        "id": "f91206a7390a7ec5ec6e648b60dae0306f6e84002e3ce6578655db8a213f5d96",
        "name": "c1", "runtime": "runc", "rootfsImageName": "localhost/bb:1",
        "createdTime": "2026-12-06T20:44:53.497671549Z"
    });
    let mut out: Vec<(String, Option<Vec<u8>>)> = vec![
        ("artifacts/".into(), None),
        ("devshm-checkpoint.tar".into(), Some(vec![0; 1024])),
        (
            "config.dump".into(),
            Some(serde_json::to_vec(&config).unwrap()),
        ),
        (
            "spec.dump".into(),
            Some(br#"{"ociVersion":"1.0.2-dev","process":{"args":["sh"]}}"#.to_vec()),
        ),
        ("network.status".into(), Some(b"null".to_vec())),
        ("ctr.log".into(), Some(Vec::new())),
        ("checkpoint/".into(), None),
    ];
    let mut names: Vec<_> = std::fs::read_dir(images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        out.push((
            format!("checkpoint/{n}"),
            Some(std::fs::read(images.join(&n)).unwrap()),
        ));
    }
    out.push(("rootfs-diff.tar".into(), Some(rootfs.into_inner().unwrap())));
    out
}

fn archive_of(members: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let list: Vec<M<'_>> = members
        .iter()
        .map(|(n, d)| match d {
            None => M::Dir(n),
            Some(d) => M::File(n, d.clone()),
        })
        .collect();
    tar_of(&list)
}

/// Imports `bytes`, expecting a refusal and nothing left beside the file.
fn refused(bytes: &[u8]) -> (ImportError, String) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("podman.tar");
    std::fs::write(&file, bytes).unwrap();
    let err =
        archive::import(&file, &work.path().join("images"), &mut NoProgress).expect_err("refused");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let left = std::fs::read_dir(work.path()).unwrap().count();
    assert_eq!(left, 1, "{text}: something was left behind");
    (err, text)
}

#[test]
fn a_podman_archive_imports_unverified_but_checked() {
    let images = tempfile::tempdir().unwrap();
    common::write_checkpoint(images.path());
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("podman.tar.zst");
    let tar = archive_of(&podman_members(images.path()));
    std::fs::write(&file, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    let dest = work.path().join("imported");
    let imported = archive::import(&file, &dest, &mut NoProgress).unwrap();
    assert_eq!(imported.format, ArchiveFormat::Podman);
    assert!(!imported.verified());
    assert!(imported.manifest.is_none());
    let podman = imported.podman.as_ref().unwrap();
    assert_eq!(podman.name, "c1");
    assert_eq!(podman.runtime, "runc");
    assert_eq!(podman.image.as_deref(), Some("localhost/bb:1"));
    // The images at the top, the rest beside them; a network.status
    // without networks and the container's log are dropped.
    assert_eq!(
        std::fs::read(dest.join("inventory.img")).unwrap(),
        std::fs::read(images.path().join("inventory.img")).unwrap()
    );
    assert!(imported.spec.is_some() && imported.config.is_some());
    assert!(imported.devshm.is_some());
    assert!(!dest.join("network.status").exists());
    assert!(!dest.join("ctr.log").exists());
    assert!(!dest.join("artifacts").exists());
    assert!(
        imported.notes.iter().any(|n| n.contains("ctr.log")),
        "{:?}",
        imported.notes
    );
    let cp = crabmigrate_images::Checkpoint::open(&dest).unwrap();
    assert_eq!(cp.processes.len(), 2);
    // Its rootfs changes apply (the root entry "./" included).
    let fresh = tempfile::tempdir().unwrap();
    let applied =
        archive::apply_rootfs_diff(imported.rootfs_diff.as_deref(), None, fresh.path()).unwrap();
    assert_eq!(applied.written, 1);
    assert_eq!(
        std::fs::read(fresh.path().join("tmp/counter")).unwrap(),
        b"19\n"
    );
}

#[test]
fn podman_networks_are_kept_aside() {
    let images = tempfile::tempdir().unwrap();
    common::write_checkpoint(images.path());
    let mut members = podman_members(images.path());
    for (name, data) in &mut members {
        if name == "network.status" {
            *data = Some(br#"{"podman":{"interfaces":{"eth0":{}}}}"#.to_vec());
        }
    }
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("podman.tar");
    std::fs::write(&file, archive_of(&members)).unwrap();
    let dest = work.path().join("imported");
    let imported = archive::import(&file, &dest, &mut NoProgress).unwrap();
    assert!(!dest.join("network.status").exists());
    assert!(dest.join(archive::podman::PODMAN_NETWORK_STATUS).is_file());
    assert!(
        imported.notes.iter().any(|n| n.contains("Podman networks")),
        "{:?}",
        imported.notes
    );
}

#[test]
fn hostile_or_incomplete_podman_archives_are_refused() {
    let images = tempfile::tempdir().unwrap();
    common::write_checkpoint(images.path());
    let good = podman_members(images.path());
    let with = |extra: M<'_>| {
        let mut bytes = archive_of(&good);
        bytes.truncate(bytes.len() - 1024); // the end-of-archive blocks
        let mut tail = tar_of(&[extra]);
        bytes.append(&mut tail);
        bytes
    };
    let (_, text) = refused(&with(M::Lying("checkpoint/../../evil", 1, b"x".to_vec())));
    assert!(text.contains("climbs out"), "{text}");
    let (_, text) = refused(&with(M::Link("checkpoint/etc", "/etc")));
    assert!(text.contains("points out of the extraction root"), "{text}");
    let (_, text) = refused(&with(M::Link("checkpoint/x", "core-1.img")));
    assert!(text.contains("symbolic link"), "{text}");
    let (e, text) = refused(&with(M::Lying("deleted.files", 1 << 30, Vec::new())));
    assert!(matches!(e, ImportError::TooLarge { .. }), "{text}");
    let (e, _) = refused(&with(M::File("pod.options", b"{}".to_vec())));
    assert!(matches!(e, ImportError::Pod(_)));
    let (e, _) = refused(&with(M::File("checkpoint/sub/x.img", b"x".to_vec())));
    assert!(matches!(e, ImportError::Special { .. }));
    let (e, _) = refused(&with(M::File("config.dump", b"{}".to_vec())));
    assert!(matches!(e, ImportError::Duplicate(_)));

    let without = |skip: &str, replace: Option<(&str, &[u8])>| {
        let members: Vec<_> = good
            .iter()
            .filter(|(n, _)| n != skip)
            .map(|(n, d)| match replace {
                Some((r, data)) if r == n => (n.clone(), Some(data.to_vec())),
                _ => (n.clone(), d.clone()),
            })
            .collect();
        archive_of(&members)
    };
    let (e, text) = refused(&without("spec.dump", None));
    assert!(
        matches!(e, ImportError::NotCheckpointArchive { .. }),
        "{text}"
    );
    assert!(text.contains("spec.dump"), "{text}");
    let (e, text) = refused(&without("checkpoint/inventory.img", None));
    assert!(text.contains("checkpoint/inventory.img"), "{text}");
    assert!(matches!(e, ImportError::NotCheckpointArchive { .. }));
    let (e, text) = refused(&without("", Some(("config.dump", b"not json"))));
    assert!(matches!(e, ImportError::BadDocument { .. }), "{text}");
    let (e, _) = refused(&without("", Some(("spec.dump", b"{}"))));
    assert!(matches!(e, ImportError::BadDocument { .. }));
    let (e, text) = refused(&without("", Some(("checkpoint/pstree.img", b"garbage!"))));
    assert!(matches!(e, ImportError::Images(_)), "{text}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, failure_persistence: None, ..Default::default() })]

    /// Damaged Podman archives never panic and never leave anything behind.
    #[test]
    fn damaged_podman_archives_never_panic(at in 0usize..200_000, value in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<bool>()) {
        let images = tempfile::tempdir().unwrap();
        common::write_checkpoint(images.path());
        let mut bytes = archive_of(&podman_members(images.path()));
        let i = at % bytes.len();
        if cut { bytes.truncate(i) } else { bytes[i] ^= value | 1 }
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("podman.tar");
        std::fs::write(&file, &bytes).unwrap();
        if archive::import(&file, &work.path().join("images"), &mut NoProgress).is_err() {
            proptest::prop_assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1);
        }
    }
}
