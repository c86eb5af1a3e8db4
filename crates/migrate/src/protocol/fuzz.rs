//! Bounded fuzzing of the protocol messages (proptest, fixed case counts):
//! any bytes decode to a message or an error, never a panic; valid
//! messages round-trip; mutated encodings and hostile values meet the
//! receivers' checks (manifests, chunk batches, enumerations) without a
//! panic.

use proptest::prelude::*;

use super::*;
use crate::chunks::ChunkStore;
use crate::manifest;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9./-]{0,40}",
        Just("../../etc/passwd".to_owned()),
        Just("/abs".to_owned()),
        Just(String::new()),
        Just("a\0b".to_owned()),
    ]
}

fn entry() -> impl Strategy<Value = ManifestEntry> {
    (
        text(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(path, size, sha256)| ManifestEntry { path, size, sha256 })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (
            any::<u32>(),
            any::<i32>(),
            text(),
            any::<bool>(),
            any::<u32>()
        )
            .prop_map(|(v, role, criu, post, max)| Body::Hello(Hello {
                protocol_version: v,
                role,
                criu_version: criu,
                post_copy: post,
                max_files: max,
                ..Default::default()
            })),
        (text(), any::<i32>(), text()).prop_map(|(reason, step, known)| Body::Refuse(Refuse {
            reason,
            step,
            known_failure: known
        })),
        (
            text(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(path, offset, data)| Body::FileChunk(FileChunk {
                path,
                offset,
                data
            })),
        (proptest::collection::vec(entry(), 0..8), any::<bool>())
            .prop_map(|(entries, more)| Body::Manifest(Manifest { entries, more })),
        (
            text(),
            any::<i32>(),
            text(),
            any::<i32>(),
            any::<u64>(),
            any::<u32>()
        )
            .prop_map(
                |(session, workload, id, strategy, bytes, files)| Body::Prepare(Prepare {
                    session,
                    workload,
                    id,
                    strategy,
                    bytes_estimate: bytes,
                    files_estimate: files,
                    health: Some(HealthCheck::tcp(80)),
                    ..Default::default()
                })
            ),
        (text(), any::<i32>())
            .prop_map(|(session, purpose)| Body::StreamOpen(StreamOpen { session, purpose })),
        (any::<u32>(), any::<u64>()).prop_map(|(pid, us)| Body::Restored(Restored {
            pid,
            restore_time_us: us
        })),
        (
            proptest::collection::vec(any::<u8>(), 0..100),
            proptest::collection::vec(any::<u32>(), 0..4),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(digests, lengths, data)| Body::ChunkBatch(ChunkBatch {
                digests,
                lengths,
                data
            })),
        (
            text(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(path, first, digests)| Body::FileIndex(FileIndex {
                path,
                first,
                digests
            })),
    ]
}

/// What a receiver does with a message: the checks the agent runs.
fn receive(body: &Body, dir: &std::path::Path) {
    match body {
        Body::Manifest(m) if manifest::validate_within(m, 100).is_ok() => {
            let _ = manifest::Receiver::new(&dir.join("in"), m);
        }
        Body::ChunkBatch(b) => {
            let pack = dir.join("pack");
            let _ = std::fs::remove_file(&pack);
            if let Ok(mut store) = ChunkStore::create(&pack, 1 << 20) {
                let _ = store.add(b);
            }
        }
        Body::Prepare(p) => {
            let _ = enum_field::<WireStrategy>("strategy", p.strategy);
            let _ = enum_field::<WorkloadKind>("workload", p.workload);
            let _ = crate::agent::valid_session(&p.session);
        }
        Body::StreamOpen(s) => {
            let _ = enum_field::<StreamPurpose>("purpose", s.purpose);
        }
        Body::Refuse(r) => {
            let _ = r.refused_step();
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes: a message or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        if let Ok(body) = Envelope::decode_checked(&bytes) {
            receive(&body, dir.path());
        }
    }

    /// Valid messages round-trip; flipped bits and truncations of their
    /// encodings never panic a receiver.
    #[test]
    fn messages_round_trip_and_mutations_never_panic(
        body in body(),
        flips in proptest::collection::vec((any::<usize>(), 0u8..8), 0..4),
        cut in any::<usize>(),
    ) {
        let bytes = Envelope::new(body.clone()).encode_checked().unwrap();
        prop_assert_eq!(Envelope::decode_checked(&bytes).unwrap(), body.clone());
        let dir = tempfile::tempdir().unwrap();
        receive(&body, dir.path());
        let mut mutated = bytes.clone();
        for (at, bit) in &flips {
            if !mutated.is_empty() {
                let i = at % mutated.len();
                mutated[i] ^= 1 << bit;
            }
        }
        mutated.truncate(cut % (mutated.len() + 1));
        if let Ok(b) = Envelope::decode_checked(&mutated) {
            receive(&b, dir.path());
        }
    }
}
