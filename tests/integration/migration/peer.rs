//! A hostile peer that holds the key and speaks the protocol to a real
//! agent: a manifest naming a path outside the session, a file larger than
//! it declared, a pre-copy chunk that does not match its digest. Each is
//! refused with the step and the reason; nothing is written outside the
//! agent's work directory, the session is cleaned up and the agent serves
//! on.

use std::path::Path;
use std::time::Duration;

use crabmigrate_migrate::channel::SecureChannel;
use crabmigrate_migrate::criu_port::CriuCheckpointer;
use crabmigrate_migrate::key::Key;
use crabmigrate_migrate::port::Checkpointer;
use crabmigrate_migrate::protocol::{
    Ack, Body, ChunkBatch, FileChunk, Hello, Manifest, ManifestEntry, MessageReceiver,
    MessageSender, Prepare, Role, RoundStart, Step, WireStrategy, WorkloadKind, PROTOCOL_VERSION,
};
use sha2::Digest;

use super::lab::*;

struct Peer {
    tx: MessageSender,
    rx: MessageReceiver,
}

impl Peer {
    async fn connect(addr: &str, key: &Key) -> Self {
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tx, rx) = SecureChannel::connect(Box::new(socket), key, PROTOCOL_VERSION)
            .await
            .unwrap()
            .split();
        Self {
            tx: MessageSender::new(tx),
            rx: MessageReceiver::new(rx, Duration::from_secs(60)),
        }
    }

    async fn send(&mut self, body: Body) {
        self.tx.send(body).await.unwrap();
    }

    /// Hello, Prepare and the CPU check with a real cpuinfo image.
    async fn prepared(&mut self, strategy: WireStrategy, cpuinfo: &Path, session: &str) {
        self.send(Body::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Source as i32,
            criu_version: "4.2.1".into(),
            ..Default::default()
        }))
        .await;
        assert!(matches!(self.rx.recv().await.unwrap(), Body::Hello(_)));
        self.send(Body::Prepare(Prepare {
            session: session.into(),
            workload: WorkloadKind::Process as i32,
            strategy: strategy as i32,
            bytes_estimate: 1 << 20,
            files_estimate: 16,
            ..Default::default()
        }))
        .await;
        assert_eq!(self.rx.recv().await.unwrap(), Ack::of(Step::Prepare));
        let data = std::fs::read(cpuinfo.join("cpuinfo.img")).unwrap();
        self.file("cpuinfo.img", &data, data.len() as u64).await;
        assert_eq!(self.rx.recv().await.unwrap(), Ack::of(Step::Cpuinfo));
    }

    async fn file(&mut self, path: &str, data: &[u8], declared: u64) {
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

    /// The agent's refusal, with its step.
    async fn refused(&mut self, step: Step, needle: &str) -> String {
        loop {
            match self.rx.recv().await {
                Ok(Body::Refuse(r)) => {
                    assert_eq!(r.refused_step(), step, "{r:?}");
                    assert!(r.reason.contains(needle), "{needle:?} in {:?}", r.reason);
                    return r.reason;
                }
                Ok(Body::Ack(_) | Body::PagesReady(_)) => continue,
                other => panic!("expected a refusal of {step:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_hostile_peer_with_the_key_is_refused_and_the_agent_serves_on() {
    let Some(criu) =
        testkit::real_criu("a_hostile_peer_with_the_key_is_refused_and_the_agent_serves_on")
    else {
        return;
    };
    let lab = Lab::new("mpeer");
    let mut agent = lab.agent(&lab.key, &lab.dir("agent-work"));
    let cpuinfo = lab.dir("cpuinfo");
    CriuCheckpointer::new(criu).cpuinfo_dump(&cpuinfo).unwrap();
    let key = Key::load(&lab.key).unwrap();
    let addr = lab.agent_addr();
    let outside = lab.tmp.path().join("escaped");
    let (c, o) = (cpuinfo.clone(), outside.clone());
    lab.hosts.src.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A manifest naming a path outside the session.
            let mut p = Peer::connect(&addr, &key).await;
            p.prepared(WireStrategy::PostCopy, &c, "00000000000000a1")
                .await;
            let hostile = format!(
                "../../../../{}",
                o.display().to_string().trim_start_matches('/')
            );
            p.file(&hostile, b"evil", 4).await;
            let why = p.refused(Step::Images, "not a plain relative name").await;
            println!("hostile manifest: {why}");

            // A file larger than declared.
            let mut p = Peer::connect(&addr, &key).await;
            p.prepared(WireStrategy::PostCopy, &c, "00000000000000a2")
                .await;
            p.file("pages-1.img", &[7u8; 9000], 4096).await;
            let why = p.refused(Step::Images, "past the declared size").await;
            println!("oversize file: {why}");

            // A pre-copy chunk that does not match its digest.
            let mut p = Peer::connect(&addr, &key).await;
            p.prepared(WireStrategy::PreCopy, &c, "00000000000000a3")
                .await;
            p.send(Body::RoundStart(RoundStart {
                round: 1,
                last: false,
            }))
            .await;
            p.send(Body::ChunkBatch(ChunkBatch {
                digests: sha2::Sha256::digest(b"a page").to_vec(),
                lengths: vec![6],
                data: b"b page".to_vec(),
            }))
            .await;
            let why = p.refused(Step::Images, "does not match its sha256").await;
            println!("corrupt chunk: {why}");
        });
    });
    assert!(!outside.exists(), "a file was written outside the session");
    assert!(agent.running(), "the agent died: {}", agent.log());
    agent.wait_sessions_gone();
    assert_nothing_on(&lab.hosts.dst, Some(agent.pid()), "hostile peer");
}
