//! The decoder on a synthetic checkpoint, on crafted bad images, and a
//! bounded fuzz run (proptest with a fixed case count) that mutates every
//! image: errors are fine, panics and unbounded allocation are not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use crabmigrate_images::{magic, Checkpoint};
use proptest::prelude::*;

fn synthetic() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_checkpoint(dir.path());
    dir
}

#[test]
fn decodes_a_synthetic_checkpoint() {
    let dir = synthetic();
    let cp = Checkpoint::open(dir.path()).unwrap();
    assert!(cp.warnings.is_empty(), "{:?}", cp.warnings);
    assert_eq!(cp.criu_version.as_deref(), Some("4.1.1 (gitid 0)"));
    assert_eq!(cp.arch.as_deref(), Some("x86_64"));
    assert_eq!(cp.processes.len(), 2);
    assert_eq!(cp.summary.threads, 3);
    let sh = &cp.processes[0];
    assert_eq!(
        (sh.pid, sh.command.as_str(), sh.state.as_str()),
        (1, "sh", "alive")
    );
    assert_eq!(sh.exe.as_deref(), Some("/bin/busybox"));
    assert_eq!(sh.cwd.as_deref(), Some("/"));
    let m = sh.memory.as_ref().unwrap();
    assert_eq!(m.vmas, 2);
    assert_eq!(m.mapped_bytes, 0x4000 + 0x2000);
    assert_eq!(m.anon_private_bytes, 0x4000);
    assert_eq!(m.file_bytes, 0x2000);
    assert_eq!(m.pages_dumped, 3);
    assert_eq!(m.pages_lazy_capable, 1);
    assert_eq!(m.pages_lazy, 1);
    assert_eq!(m.dumped_bytes, 3 * cp.page_size);
    let kinds: Vec<(u32, &str, &str)> = sh
        .files
        .iter()
        .map(|f| (f.fd, f.kind.as_str(), f.description.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, "file", "/data/log"),
            (1, "pipe", "pipe:[4242]"),
            (2, "unix", "stream [77] /run/s (listening)")
        ]
    );
    assert!(sh.files[1].cloexec);
    let ns = &cp.mount_namespaces[0];
    assert_eq!(ns.id, 5);
    let points: Vec<&str> = ns.mounts.iter().map(|m| m.mountpoint.as_str()).collect();
    assert_eq!(points, ["/", "/proc", "/dev/null"]);
    assert!(ns.mounts[2].external);
    assert_eq!(cp.dump_stats.unwrap().pages_written, 6);
    assert_eq!(cp.summary.pages_dumped, 6);
    assert_eq!(cp.summary.pages_bytes, 6 * 4096);
}

fn open_err(dir: &Path) -> String {
    let err = Checkpoint::open(dir).expect_err("refused");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[test]
fn refuses_wrong_and_unknown_magics() {
    let dir = synthetic();
    let core = dir.path().join("core-2.img");
    let mut bytes = std::fs::read(&core).unwrap();
    bytes[4..8].copy_from_slice(&magic::MM.to_ne_bytes());
    std::fs::write(&core, &bytes).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains("core-2.img has magic 0x57492820 (mm)"),
        "{err}"
    );

    let dir = synthetic();
    std::fs::write(dir.path().join("mystery.img"), [1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains("mystery.img has an unknown image magic 0x04030201"),
        "{err}"
    );

    let dir = synthetic();
    let mut bytes = std::fs::read(dir.path().join("files.img")).unwrap();
    bytes[4..8].copy_from_slice(&0x1234_5678u32.to_ne_bytes());
    std::fs::write(dir.path().join("files.img"), &bytes).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains("files.img has an unknown image magic 0x12345678"),
        "{err}"
    );
}

#[test]
fn refuses_truncated_and_absurd_entries() {
    let dir = synthetic();
    let pstree = dir.path().join("pstree.img");
    let bytes = std::fs::read(&pstree).unwrap();
    std::fs::write(&pstree, &bytes[..bytes.len() - 3]).unwrap();
    let err = open_err(dir.path());
    assert!(err.contains("pstree.img: an entry claims"), "{err}");

    let dir = synthetic();
    let files = dir.path().join("files.img");
    let mut bytes = std::fs::read(&files).unwrap();
    bytes[8..12].copy_from_slice(&0xffff_fff0u32.to_ne_bytes());
    std::fs::write(&files, &bytes).unwrap();
    let err = open_err(dir.path());
    assert!(err.contains("claims 4294967280 bytes"), "{err}");

    // A well-framed entry whose protobuf is garbage.
    let dir = synthetic();
    let core = dir.path().join("core-1.img");
    let garbage = common::image(&[magic::IMG_COMMON, magic::CORE], &[vec![0xff; 9]]);
    std::fs::write(&core, garbage).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains("core-1.img: a core entry does not decode"),
        "{err}"
    );

    // A missing required image.
    let dir = synthetic();
    std::fs::remove_file(dir.path().join("pstree.img")).unwrap();
    let err = open_err(dir.path());
    assert!(err.contains("pstree.img is missing"), "{err}");

    // Not a checkpoint at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(open_err(empty.path()).contains("holds no checkpoint"));
}

/// The image files of the synthetic checkpoint worth mutating.
const TARGETS: &[&str] = &[
    "inventory.img",
    "pstree.img",
    "core-1.img",
    "mm-1.img",
    "pagemap-1.img",
    "fs-1.img",
    "fdinfo-7.img",
    "files.img",
    "mountpoints-5.img",
    "stats-dump",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Word { at: usize, value: u32 },
    Insert { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(0x7fff_ffff), Just(0), any::<u32>()]
        )
            .prop_map(|(at, value)| Mutation::Word { at, value }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Flip { at, bit } => {
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        Mutation::Truncate { at } => bytes.truncate(at % bytes.len()),
        Mutation::Word { at, value } => {
            let i = at % bytes.len();
            for (k, b) in value.to_ne_bytes().iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
        Mutation::Insert { at, bytes: extra } => {
            let i = at % bytes.len();
            bytes.splice(i..i, extra.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated images give errors or results, never panics.
    #[test]
    fn mutated_images_never_panic(
        target in 0..TARGETS.len(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let dir = synthetic();
        let path = dir.path().join(TARGETS[target]);
        let mut bytes = std::fs::read(&path).unwrap();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        std::fs::write(&path, &bytes).unwrap();
        let _ = Checkpoint::open(dir.path());
    }

    /// Arbitrary bytes as any image kind: never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use crabmigrate_images::read;
        use criu_proto::images::*;
        let p = Path::new("fuzz.img");
        let mut framed = common::image(&[magic::IMG_COMMON, magic::FILES], &[]);
        framed.extend_from_slice(&bytes);
        let _ = read::entries_of::<FileEntry>(p, &framed, magic::FILES, "file");
        let _ = read::entries_of::<MntEntry>(p, &bytes, magic::MNTS, "mount");
        let _ = read::single_of::<CoreEntry>(p, &bytes, magic::CORE, "core");
        let _ = read::single_of::<MmEntry>(p, &bytes, magic::MM, "mm");
        let _ = read::header(p, &bytes);
        let _ = crabmigrate_images::archive::Manifest::parse(&bytes);
    }
}
