//! The agent against hostile or broken peers, without root: a raw client
//! speaking the protocol over an in-memory stream, the fake port.

use std::time::Duration;

use super::*;
use crate::fake::{Ev, Script};
use crate::protocol::{
    Abort, ChunkBatch, FileChunk, HealthCheck, Hello, Manifest, ManifestEntry, MessageReceiver,
    MessageSender, Prepare, Refuse, Role, RoundStart, Step, WireStrategy, WorkloadKind,
};
use crate::source::Dialer;
use crate::testing::{key, Lab};

struct Client {
    tx: MessageSender,
    rx: MessageReceiver,
}

async fn client(lab: &Lab) -> Client {
    let stream = lab.dialer.dial().await.unwrap();
    let (tx, rx) = SecureChannel::connect(stream, &key(), PROTOCOL_VERSION)
        .await
        .unwrap()
        .split();
    Client {
        tx: MessageSender::new(tx),
        rx: MessageReceiver::new(rx, Duration::from_secs(30)),
    }
}

impl Client {
    async fn send(&mut self, body: Body) {
        self.tx.send(body).await.unwrap();
    }

    async fn recv(&mut self) -> Body {
        self.rx.recv().await.unwrap()
    }

    async fn hello(&mut self) -> Hello {
        self.send(Body::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Source as i32,
            criu_version: "4.2.1".into(),
            ..Default::default()
        }))
        .await;
        match self.recv().await {
            Body::Hello(h) => h,
            other => panic!("no Hello: {other:?}"),
        }
    }

    /// Expects a refusal of `step` whose reason holds `needle`.
    async fn refused(&mut self, step: Step, needle: &str) -> Refuse {
        loop {
            match self.rx.recv().await {
                Ok(Body::Refuse(r)) => {
                    assert_eq!(r.refused_step(), step, "{r:?}");
                    assert!(r.reason.contains(needle), "{needle:?} in {:?}", r.reason);
                    return r;
                }
                Ok(Body::Ack(_) | Body::PagesReady(_)) => continue,
                other => panic!("expected a refusal of {step:?}: {other:?}"),
            }
        }
    }

    /// A manifest of one file and its chunks, as `send_dir` would send it.
    async fn file(&mut self, path: &str, data: &[u8], declared: u64) {
        use sha2::Digest;
        self.send(Body::Manifest(Manifest {
            entries: vec![ManifestEntry {
                path: path.into(),
                size: declared,
                sha256: sha2::Sha256::digest(data).to_vec(),
            }],
            more: false,
        }))
        .await;
        self.send(Body::FileChunk(FileChunk {
            path: path.into(),
            offset: 0,
            data: data.to_vec(),
        }))
        .await;
        self.send(Ack::of(Step::Files)).await;
    }
}

fn prepare(strategy: WireStrategy) -> Prepare {
    Prepare {
        session: "00112233445566aa".into(),
        workload: WorkloadKind::Process as i32,
        strategy: strategy as i32,
        bytes_estimate: 1 << 20,
        files_estimate: 10,
        ..Default::default()
    }
}

use crate::protocol::Ack;

/// Prepared and past the CPU check (as a process migration).
async fn prepared(lab: &Lab, strategy: WireStrategy) -> Client {
    let mut c = client(lab).await;
    c.hello().await;
    c.send(Body::Prepare(prepare(strategy))).await;
    assert_eq!(c.recv().await, Ack::of(Step::Prepare));
    c.file("cpuinfo.img", b"cpu", 3).await;
    assert_eq!(c.recv().await, Ack::of(Step::Cpuinfo));
    c
}

#[tokio::test]
async fn bad_prepare_fields_are_refused_and_leave_nothing() {
    let lab = Lab::new(Script::default());
    let cases: Vec<(Prepare, &str)> = vec![
        (
            Prepare {
                session: "../../bundles".into(),
                ..prepare(WireStrategy::StopCopy)
            },
            "invalid session name",
        ),
        (
            Prepare {
                strategy: 0,
                ..prepare(WireStrategy::StopCopy)
            },
            "strategy",
        ),
        (
            Prepare {
                workload: 9,
                ..prepare(WireStrategy::StopCopy)
            },
            "workload",
        ),
        (
            Prepare {
                files_estimate: 1_000_000,
                ..prepare(WireStrategy::StopCopy)
            },
            "image files",
        ),
        (
            Prepare {
                health: Some(HealthCheck::named("rm -rf /")),
                ..prepare(WireStrategy::StopCopy)
            },
            "no health check named",
        ),
        (
            Prepare {
                health: Some(HealthCheck::tcp(0)),
                ..prepare(WireStrategy::StopCopy)
            },
            "not a port",
        ),
        (
            Prepare {
                workload: WorkloadKind::Container as i32,
                id: "../x".into(),
                ..prepare(WireStrategy::StopCopy)
            },
            "invalid container ID",
        ),
        (
            Prepare {
                bytes_estimate: u64::MAX,
                ..prepare(WireStrategy::StopCopy)
            },
            "not enough space",
        ),
    ];
    for (p, needle) in cases {
        let mut c = client(&lab).await;
        c.hello().await;
        c.send(Body::Prepare(p)).await;
        c.refused(Step::Prepare, needle).await;
    }
    lab.agent_settles().await;
    assert!(!lab.agent_dir().join(BUNDLES).join("x").exists());
}

#[tokio::test]
async fn a_hostile_manifest_writes_nothing_outside() {
    let lab = Lab::new(Script::default());
    let mut c = client(&lab).await;
    c.hello().await;
    c.send(Body::Prepare(prepare(WireStrategy::StopCopy))).await;
    assert_eq!(c.recv().await, Ack::of(Step::Prepare));
    c.file("../../../escaped", b"evil", 4).await;
    c.refused(Step::Cpuinfo, "not a plain relative name").await;
    lab.agent_settles().await;
    assert!(!lab.agent_work.path().join("escaped").exists());
    assert!(!lab.agent_dir().join("escaped").exists());
}

#[tokio::test]
async fn an_oversize_file_is_refused() {
    let lab = Lab::new(Script::default());
    let mut c = client(&lab).await;
    c.hello().await;
    c.send(Body::Prepare(prepare(WireStrategy::StopCopy))).await;
    assert_eq!(c.recv().await, Ack::of(Step::Prepare));
    // Declared 4 bytes, 10 sent.
    c.file("cpuinfo.img", b"0123456789", 4).await;
    c.refused(Step::Cpuinfo, "past the declared size").await;
    lab.agent_settles().await;
}

#[tokio::test]
async fn a_manifest_over_the_file_limit_is_refused_while_it_arrives() {
    let lab = Lab::with_agent(Script::default(), |o| o.limits.max_files = 50);
    let mut c = prepared(&lab, WireStrategy::PostCopy).await;
    // Parts of 40 entries, without end: refused after the second part.
    for n in 0..3 {
        c.send(Body::Manifest(Manifest {
            entries: (0..40)
                .map(|i| ManifestEntry {
                    path: format!("f{n}-{i}"),
                    size: 1,
                    sha256: vec![0; 32],
                })
                .collect(),
            more: true,
        }))
        .await;
    }
    c.refused(Step::Images, "over the limit of 50").await;
    lab.agent_settles().await;
}

#[tokio::test]
async fn a_corrupt_chunk_is_refused() {
    let lab = Lab::new(Script::default());
    let mut c = prepared(&lab, WireStrategy::PreCopy).await;
    c.send(Body::RoundStart(RoundStart {
        round: 1,
        last: false,
    }))
    .await;
    c.send(Body::ChunkBatch(ChunkBatch {
        digests: vec![0xab; 32],
        lengths: vec![4],
        data: b"page".to_vec(),
    }))
    .await;
    c.refused(Step::Images, "does not match its sha256").await;
    lab.agent_settles().await;
}

#[tokio::test]
async fn messages_out_of_order_are_refused() {
    let lab = Lab::new(Script::default());
    let mut c = client(&lab).await;
    c.hello().await;
    c.send(Body::Commit(Default::default())).await;
    c.refused(Step::Prepare, "Commit where Prepare").await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_meets_a_deadline() {
    let lab = Lab::new(Script::default());
    // Authenticated but silent after the handshake.
    let stream = lab.dialer.dial().await.unwrap();
    let channel = SecureChannel::connect(stream, &key(), PROTOCOL_VERSION)
        .await
        .unwrap();
    let (_tx, mut rx) = channel.split();
    // The agent gives up and closes: the peer reads the end.
    let end = rx.recv_frame_within(Some(Duration::from_secs(120))).await;
    assert!(
        matches!(end, Err(crate::channel::ChannelError::Closed)),
        "{end:?}"
    );

    // Silent in the middle of a session: refused with the deadline.
    let mut c = client(&lab).await;
    c.hello().await;
    let answer = c.rx.recv_within(Duration::from_secs(600)).await;
    assert!(answer.is_err(), "{answer:?}");
}

#[tokio::test]
async fn a_busy_agent_refuses_politely() {
    let lab = Lab::with_agent(Script::default(), |o| o.limits.sessions = 1);
    let mut first = client(&lab).await;
    first.hello().await;
    let mut second = client(&lab).await;
    second
        .send(Body::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Source as i32,
            criu_version: "4.2.1".into(),
            ..Default::default()
        }))
        .await;
    second.refused(Step::Hello, "busy").await;
    drop(first);
}

#[tokio::test]
async fn an_abort_while_held_kills_the_copy() {
    let lab = Lab::new(Script::default());
    let mut c = prepared(&lab, WireStrategy::PostCopy).await;
    c.file("inventory.img", b"inventory", 9).await;
    assert_eq!(c.recv().await, Ack::of(Step::Images));
    // Post-copy wants its lazy stream: open it.
    let mut data =
        SecureChannel::connect(lab.dialer.dial().await.unwrap(), &key(), PROTOCOL_VERSION)
            .await
            .unwrap();
    let open = crate::protocol::Envelope::new(Body::StreamOpen(crate::protocol::StreamOpen {
        session: "00112233445566aa".into(),
        purpose: StreamPurpose::Lazy as i32,
    }))
    .encode_checked()
    .unwrap();
    data.send_frame(&open).await.unwrap();
    match c.recv().await {
        Body::Restored(r) => assert_eq!(r.pid, 4242),
        other => panic!("{other:?}"),
    }
    c.send(Body::Abort(Abort {
        cause: "the source gives up".into(),
    }))
    .await;
    lab.agent_settles().await;
    let events = lab.fake.world().events.clone();
    assert!(events.contains(&Ev::RestoreDropped), "{events:?}");
    assert_eq!(lab.fake.world().destination, 0);
    drop(data);
}

#[tokio::test]
async fn a_data_stream_for_no_session_is_dropped() {
    let lab = Lab::new(Script::default());
    let stream = lab.dialer.dial().await.unwrap();
    let mut data = SecureChannel::connect(stream, &key(), PROTOCOL_VERSION)
        .await
        .unwrap();
    let open = crate::protocol::Envelope::new(Body::StreamOpen(crate::protocol::StreamOpen {
        session: "ffffffffffffffff".into(),
        purpose: StreamPurpose::Pages as i32,
    }))
    .encode_checked()
    .unwrap();
    data.send_frame(&open).await.unwrap();
    let end = data.recv_frame(Some(Duration::from_secs(30))).await;
    assert!(end.is_err(), "{end:?}");
}

#[test]
fn one_agent_per_work_directory_and_leaks_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let root = dir.path().join("root");
    for leaked in [
        work.join(SESSIONS).join("00112233445566aa").join("images"),
        work.join("0123456789abcdef"),
        work.join(BUNDLES).join("orphan").join("rootfs"),
        work.join(BUNDLES).join("alive"),
        root.join("alive"),
    ] {
        std::fs::create_dir_all(leaked).unwrap();
    }
    std::fs::write(root.join("alive").join("state.json"), "{}").unwrap();
    let opts = AgentOptions {
        key: key(),
        work_dir: work.clone(),
        state_root: root,
        health_checks: Default::default(),
        limits: Limits::default(),
    };
    let fake = std::sync::Arc::new(crate::fake::Fake::new(Script::default()));
    let agent = Agent::new(opts.clone(), fake.clone()).unwrap();
    assert!(!work.join(SESSIONS).join("00112233445566aa").exists());
    assert!(!work.join("0123456789abcdef").exists());
    assert!(!work.join(BUNDLES).join("orphan").exists());
    assert!(
        work.join(BUNDLES).join("alive").exists(),
        "a bundle in use stays"
    );
    let busy = Agent::new(opts.clone(), fake.clone()).unwrap_err();
    assert!(matches!(busy, AgentError::WorkDirBusy(_)), "{busy}");
    drop(agent);
    assert!(Agent::new(opts.clone(), fake.clone()).is_ok(), "free again");
    let mut bad = opts;
    bad.health_checks.insert("x y".into(), "true".into());
    assert!(matches!(
        Agent::new(bad, fake),
        Err(AgentError::HealthCheckName(_))
    ));
}

#[tokio::test]
async fn too_many_connections_from_one_address_are_dropped_before_the_greeting() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AgentOptions {
        key: key(),
        work_dir: dir.path().join("work"),
        state_root: dir.path().join("root"),
        health_checks: Default::default(),
        limits: Limits {
            per_address: 1,
            ..Limits::default()
        },
    };
    let agent = std::sync::Arc::new(
        Agent::new(
            opts,
            std::sync::Arc::new(crate::fake::Fake::new(Script::default())),
        )
        .unwrap(),
    );
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(agent.serve("127.0.0.1:0".parse().unwrap(), Some(ready_tx)));
    let addr = ready_rx.await.unwrap();
    // The first connection holds the address's only slot.
    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = SecureChannel::connect(Box::new(second), &key(), PROTOCOL_VERSION).await;
    assert!(
        matches!(refused, Err(crate::channel::ChannelError::HungUp)),
        "{refused:?}"
    );
    drop(held);
    serving.abort();
}

/// Prepared for a container and past the CPU check.
async fn container_prepared(lab: &Lab) -> Client {
    let mut c = client(lab).await;
    c.hello().await;
    c.send(Body::Prepare(Prepare {
        workload: WorkloadKind::Container as i32,
        id: "web1".into(),
        ..prepare(WireStrategy::StopCopy)
    }))
    .await;
    assert_eq!(c.recv().await, Ack::of(Step::Prepare));
    c.file("cpuinfo.img", b"cpu", 3).await;
    assert_eq!(c.recv().await, Ack::of(Step::Cpuinfo));
    c
}

#[tokio::test]
async fn a_container_bundle_is_checked_and_its_tree_guarded_before_the_ack() {
    let lab = Lab::new(Script::default());
    let mut c = container_prepared(&lab).await;
    c.file("config.json", b"{}", 2).await;
    assert_eq!(c.recv().await, Ack::of(Step::Bundle));
    let events = lab.fake.world().events.clone();
    let armed = events.iter().position(|e| *e == Ev::WatchdogArmed);
    assert!(
        armed.is_some(),
        "the watchdog is armed before the ack: {events:?}"
    );
    let bundle = lab.agent_dir().join(BUNDLES).join("web1");
    assert!(bundle
        .join(crabmigrate_runtime::container::OWNED_BUNDLE_MARKER)
        .is_file());
    // A second migration of the same ID meanwhile is refused.
    let mut other = client(&lab).await;
    other.hello().await;
    other
        .send(Body::Prepare(Prepare {
            session: "00112233445566bb".into(),
            workload: WorkloadKind::Container as i32,
            id: "web1".into(),
            ..prepare(WireStrategy::StopCopy)
        }))
        .await;
    other.refused(Step::Prepare, "already under way").await;
    drop(c);
    lab.agent_settles().await;
    let gone = async {
        while bundle.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gone)
        .await
        .unwrap();
    assert!(
        lab.fake.world().events.contains(&Ev::WatchdogFired),
        "a dropped session's watchdog fires"
    );
}

#[tokio::test]
async fn a_bundle_this_host_cannot_run_is_refused_before_the_freeze() {
    let lab = Lab::new(Script {
        bundle_fails: true,
        ..Default::default()
    });
    let mut c = container_prepared(&lab).await;
    c.file("config.json", b"{}", 2).await;
    c.refused(Step::Bundle, "bind mount source").await;
    lab.agent_settles().await;
    assert!(
        !lab.fake.world().events.contains(&Ev::WatchdogArmed),
        "nothing guarded, nothing to guard"
    );
}
