//! The unit tests' lab: an agent over the fake port, reached through
//! in-memory duplex streams, and a source request for it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::agent::{Agent, AgentOptions, Limits};
use crate::channel::BoxStream;
use crate::events::{Event, Events, Observer};
use crate::fake::{Fake, Script};
use crate::interrupt::{Interrupt, Trigger};
use crate::key::Key;
use crate::port::Workload;
use crate::source::{Dialer, Health, MigrateRequest, PreCopyLimits, Strategy};

pub fn key() -> Key {
    Key::from_hex(&"5a".repeat(32)).unwrap()
}

/// Dials the agent in memory; every connection is handled on a task that
/// [`MemDialer::kill_agent`] aborts (as if the agent's process died).
#[derive(Debug)]
pub struct MemDialer {
    pub agent: Arc<Agent>,
    killed: tokio::sync::watch::Sender<bool>,
    /// Every stream the source opened, to cut the link.
    cut: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl MemDialer {
    pub fn new(agent: Arc<Agent>) -> Arc<Self> {
        Arc::new(Self {
            agent,
            killed: tokio::sync::watch::channel(false).0,
            cut: Mutex::default(),
        })
    }

    /// The agent's process dies: every connection's task ends at once.
    pub fn kill_agent(&self) {
        let _ = self.killed.send(true);
    }

    /// The link breaks: every connection so far stops carrying bytes.
    pub fn cut_link(&self) {
        for c in self.cut.lock().unwrap().drain(..) {
            let _ = c.send(());
        }
    }
}

impl Dialer for MemDialer {
    fn dial(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<BoxStream>> + Send + '_>>
    {
        Box::pin(async move {
            let (near, far) = tokio::io::duplex(1 << 20);
            let (cut_tx, cut_rx) = tokio::sync::oneshot::channel();
            let (far_end, relay_end) = tokio::io::duplex(1 << 20);
            // A relay in the middle that a cut stops (both ways, at once).
            tokio::spawn(async move {
                let (mut a, mut b) = (far, relay_end);
                tokio::select! {
                    biased;
                    _ = cut_rx => {}
                    _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                }
            });
            self.cut.lock().unwrap().push(cut_tx);
            let agent = Arc::clone(&self.agent);
            let mut killed = self.killed.subscribe();
            tokio::spawn(async move {
                // A death wins over anything the agent was about to do.
                tokio::select! {
                    biased;
                    _ = killed.wait_for(|k| *k) => {}
                    _ = agent.handle(Box::new(far_end)) => {}
                }
            });
            Ok(Box::new(near) as BoxStream)
        })
    }

    fn address(&self) -> &str {
        "agent.test:7070"
    }
}

/// Collects events.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn event(&self, _: std::time::Duration, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    pub fn kinds(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

/// A source and an agent over one fake world.
pub struct Lab {
    pub fake: Fake,
    /// The source's port: the same world, its own script.
    pub source: Fake,
    pub dialer: Arc<MemDialer>,
    pub source_work: tempfile::TempDir,
    pub agent_work: tempfile::TempDir,
    pub events: Arc<Recorder>,
    pub trigger: Trigger,
    interrupt: Interrupt,
}

impl Lab {
    pub fn new(script: Script) -> Self {
        Self::with_agent(script, |_| {})
    }

    /// A lab whose agent options `edit` changes.
    pub fn with_agent(script: Script, edit: impl FnOnce(&mut AgentOptions)) -> Self {
        let fake = Fake::new(script);
        let agent_work = tempfile::tempdir().unwrap();
        let mut opts = AgentOptions {
            key: key(),
            work_dir: agent_work.path().join("work"),
            state_root: agent_work.path().join("root"),
            health_checks: Default::default(),
            limits: Limits::default(),
        };
        edit(&mut opts);
        let agent = Arc::new(Agent::new(opts, Arc::new(fake.clone())).unwrap());
        let (interrupt, trigger) = Interrupt::manual();
        Self {
            source: fake.clone(),
            fake,
            dialer: MemDialer::new(agent),
            source_work: tempfile::tempdir().unwrap(),
            agent_work,
            events: Arc::default(),
            trigger,
            interrupt,
        }
    }

    /// The source's host differs from the destination's as `script` says.
    pub fn source_script(mut self, script: Script) -> Self {
        self.source = Fake {
            world: Arc::clone(&self.fake.world),
            script: Arc::new(Mutex::new(script)),
        };
        self
    }

    pub fn request(&self, strategy: Strategy) -> MigrateRequest {
        MigrateRequest {
            to: "agent.test:7070".into(),
            key: key(),
            workload: Workload::Process { pid: 4_190_000 },
            strategy,
            pre_copy: PreCopyLimits::default(),
            tcp_established: false,
            work_dir: self.source_work.path().to_path_buf(),
            health: Health::None,
            events: Events::new(Some(self.events.clone() as Arc<dyn Observer>)),
            interrupt: self.interrupt.clone(),
        }
    }

    pub async fn migrate(
        &self,
        req: MigrateRequest,
    ) -> Result<crate::source::Report, crate::source::MigrateError> {
        let port = Arc::new(self.source.clone());
        let run = crate::source::migrate_via(port, self.dialer.clone(), req);
        tokio::time::timeout(std::time::Duration::from_secs(60), run)
            .await
            .expect("the migration ends")
    }

    /// The agent's work directory.
    pub fn agent_dir(&self) -> PathBuf {
        self.agent_work.path().join("work")
    }

    /// Session directories the agent still has.
    pub fn agent_sessions(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.agent_dir().join(crate::agent::SESSIONS))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// In-doubt records on the source.
    pub fn records(&self) -> Vec<crate::recover::Record> {
        crate::recover::Record::list(self.source_work.path()).unwrap()
    }

    /// Waits (bounded) until the agent has cleaned up every session.
    pub async fn agent_settles(&self) {
        for _ in 0..500 {
            if self.agent_sessions().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the agent left {:?}", self.agent_sessions());
    }
}
