//! A fake [`Checkpointer`] for unit tests: both hosts share one [`World`]
//! that knows where the workload runs, so every test can assert "exactly
//! one copy runs, or the documented in-doubt state". Faults are scripted.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::port::{
    Checkpointer, Daemon, DumpFigures, DumpJob, DumpRun, Held, HostFacts, Op, PagesTo, PortError,
    RestoreJob, RestoreRun, SourceTree, SourceWatchdog, Subject, Tree, Watchdog, Workload,
};

/// The source's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Running,
    /// Held by (fake) CRIU.
    Frozen,
    /// Stopped by SIGSTOP after CRIU let go.
    Stopped,
    /// A container CRIU froze and never thawed.
    LeftFrozen,
    Gone,
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Dump { leave_running: bool },
    Released,
    Resumed,
    Sigstop,
    Sigcont,
    Settled,
    Discarded,
    Thawed,
    SourceWatchdog(&'static str),
    TreeMade,
    WatchdogArmed,
    WatchdogReleased,
    WatchdogFired,
    TreeKilled,
    Restored,
    RestoreDropped,
    LazyServed,
    LazyBroken,
}

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub criu_version: Option<String>,
    pub no_post_copy: bool,
    pub container: bool,
    pub files_estimate: u32,
    pub cpuinfo_fails: bool,
    pub bundle_fails: bool,
    /// CRIU dies before post-dump (a container stays frozen).
    pub dump_dies: bool,
    pub page_server_fails: bool,
    pub restore_fails: bool,
    pub restore_fails_after_commit: bool,
    pub watchdog_fails: bool,
    pub stop_fails: bool,
    /// The lazy-pages daemon fails after half the pages.
    pub lazy_breaks: bool,
    /// Bytes of memory (pages written or served).
    pub memory: usize,
    /// Called when the destination's restore is decided (true: commit).
    pub on_decide: Option<Hook>,
    /// Called when the source's dump holds the frozen tree.
    pub on_frozen: Option<Hook>,
    /// The destination's restore takes this long before it holds the tree.
    pub restore_delay: Option<Duration>,
}

/// A test's hook.
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// Both hosts' state.
#[derive(Debug)]
pub struct World {
    pub source: Source,
    /// SIGSTOP pending or delivered on the source's tasks.
    pub sigstopped: bool,
    /// Copies running on the destination.
    pub destination: u32,
    pub events: Vec<Ev>,
    /// The memory's content generation (pre-copy rounds see it change).
    pub generation: u8,
    /// The agent died: its CRIU died with it.
    pub agent_dead: bool,
}

/// The shared world and the script.
#[derive(Debug, Clone)]
pub struct Fake {
    pub world: Arc<Mutex<World>>,
    pub script: Arc<Mutex<Script>>,
}

impl Fake {
    pub fn new(script: Script) -> Self {
        Self {
            world: Arc::new(Mutex::new(World {
                source: Source::Running,
                sigstopped: false,
                destination: 0,
                events: Vec::new(),
                generation: 0,
                agent_dead: false,
            })),
            script: Arc::new(Mutex::new(script)),
        }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    fn script(&self) -> Script {
        self.script.lock().unwrap().clone()
    }

    fn log(&self, ev: Ev) {
        self.world().events.push(ev);
    }

    fn memory(&self) -> usize {
        self.script().memory.max(3 * 4096 + 100)
    }

    /// Writes a fake dump's files (without pages when `pages` is false).
    fn write_images(&self, dir: &Path, pages: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("inventory.img"), b"inventory")?;
        std::fs::write(dir.join("core-1.img"), b"core")?;
        if pages {
            let generation = self.world().generation;
            let mut data = vec![7u8; self.memory()];
            data[0] = generation;
            std::fs::write(dir.join("pages-1.img"), data)?;
        }
        if self.script().container {
            std::fs::write(dir.join(crate::bundle::ROOTFS_TAR), b"")?;
        }
        Ok(())
    }

    /// The fake CRIU let go of the source with `release` (true) or a
    /// resume.
    fn let_go(&self, release: bool) {
        let mut w = self.world();
        w.source = if release {
            Source::Gone
        } else if w.sigstopped {
            Source::Stopped
        } else {
            Source::Running
        };
        w.events
            .push(if release { Ev::Released } else { Ev::Resumed });
    }
}

fn fail(op: Op, why: &str) -> PortError {
    PortError::new(op, why.to_owned())
}

impl Checkpointer for Fake {
    fn host(&self) -> HostFacts {
        let s = self.script();
        HostFacts {
            criu_version: s.criu_version.unwrap_or_else(|| "4.2.1".into()),
            post_copy: if s.no_post_copy {
                Err("no uffd here".into())
            } else {
                Ok(())
            },
        }
    }

    fn inspect(&self, workload: &Workload) -> Result<Subject, PortError> {
        let s = self.script();
        let pid = match workload {
            Workload::Process { pid } => *pid,
            Workload::Container { .. } => 100,
        };
        Ok(Subject {
            pid,
            memory: self.memory() as u64,
            files_estimate: s.files_estimate.max(10),
            bundle_dir: None,
            rootfs: None,
            freezer: s.container.then(|| PathBuf::from("/fake/freezer")),
        })
    }

    fn cpuinfo_dump(&self, dir: &Path) -> Result<(), PortError> {
        std::fs::write(dir.join("cpuinfo.img"), b"cpu")
            .map_err(|e| PortError::new(Op::CpuinfoDump, e))
    }

    fn dump(&self, job: DumpJob) -> DumpRun {
        let (frozen_tx, frozen_rx) = oneshot::channel();
        let (serving_tx, serving_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let this = self.clone();
        std::thread::spawn(move || {
            let result = this.run_dump(job, frozen_tx, serving_tx);
            let _ = done_tx.send(result);
        });
        DumpRun {
            frozen: frozen_rx,
            serving: serving_rx,
            done: done_rx,
        }
    }

    fn source_tree(&self, _: &Workload, _: &Subject) -> Arc<dyn SourceTree> {
        Arc::new(self.clone())
    }

    fn source_watchdog(&self, _: &Subject) -> Result<Option<Box<dyn SourceWatchdog>>, PortError> {
        Ok(self
            .script()
            .container
            .then(|| Box::new(FakeThawDog(self.clone(), false)) as Box<dyn SourceWatchdog>))
    }

    fn cpuinfo_check(&self, dir: &Path) -> Result<(), PortError> {
        if !dir.join("cpuinfo.img").is_file() {
            return Err(fail(Op::CpuinfoCheck, "no cpuinfo.img arrived"));
        }
        if self.script().cpuinfo_fails {
            return Err(fail(Op::CpuinfoCheck, "CPU features differ (fake)"));
        }
        Ok(())
    }

    fn check_bundle(&self, dir: &Path, _: &str) -> Result<(), PortError> {
        if self.script().bundle_fails || !dir.join("config.json").is_file() {
            return Err(fail(
                Op::Bundle,
                "the bind mount source /data does not exist (fake)",
            ));
        }
        Ok(())
    }

    fn tree(&self, _: &str, _: &crate::port::RestoreTarget) -> Result<Arc<dyn Tree>, PortError> {
        self.log(Ev::TreeMade);
        Ok(Arc::new(FakeTree(self.clone())))
    }

    fn sweep(&self, _: &str) {}

    fn watchdog(&self, _: &dyn Tree) -> Result<Box<dyn Watchdog>, PortError> {
        if self.script().watchdog_fails {
            return Err(fail(Op::Watchdog, "sh is missing (fake)"));
        }
        self.log(Ev::WatchdogArmed);
        Ok(Box::new(FakeWatchdog(self.clone(), false)))
    }

    fn page_server(&self, images_dir: &Path) -> Result<Daemon, PortError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| PortError::new(Op::PageServer, e))?;
        let port = listener
            .local_addr()
            .map_err(|e| PortError::new(Op::PageServer, e))?
            .port();
        let (done_tx, done_rx) = oneshot::channel();
        let dir = images_dir.to_path_buf();
        let fails = self.script().page_server_fails;
        std::thread::spawn(move || {
            let result = (|| -> Result<(), PortError> {
                let run = |e: std::io::Error| PortError::new(Op::PageServerRun, e);
                let (mut conn, _) = listener.accept().map_err(run)?;
                // Like CRIU's page server: a command (here the length),
                // the pages, an answer; then the end of the stream.
                let mut len = [0u8; 8];
                conn.read_exact(&mut len).map_err(run)?;
                let mut pages = vec![0u8; usize::try_from(u64::from_be_bytes(len)).unwrap_or(0)];
                conn.read_exact(&mut pages).map_err(run)?;
                if fails {
                    return Err(fail(Op::PageServerRun, "No space left on device (fake)"));
                }
                conn.write_all(b"k").map_err(run)?;
                conn.read_to_end(&mut Vec::new()).map_err(run)?;
                std::fs::write(dir.join("pages-1.img"), pages).map_err(run)
            })();
            let _ = done_tx.send(result);
        });
        Ok(Daemon {
            port,
            done: done_rx,
        })
    }

    fn lazy_pages(&self, _: &Path, port: u16) -> Result<Daemon, PortError> {
        let (done_tx, done_rx) = oneshot::channel();
        let (memory, breaks) = (self.memory(), self.script().lazy_breaks);
        let this = self.clone();
        std::thread::spawn(move || {
            let result = (|| -> Result<(), PortError> {
                let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))
                    .map_err(|e| PortError::new(Op::LazyPagesRun, e))?;
                let mut buf = vec![0u8; memory];
                let want = if breaks { memory / 2 } else { memory };
                conn.read_exact(&mut buf[..want])
                    .map_err(|e| PortError::new(Op::LazyPagesRun, e))?;
                if breaks {
                    this.log(Ev::LazyBroken);
                    return Err(fail(Op::LazyPagesRun, "the page server closed (fake)"));
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
                Ok(())
            })();
            let _ = done_tx.send(result);
        });
        Ok(Daemon {
            port,
            done: done_rx,
        })
    }

    fn restore(&self, job: RestoreJob) -> RestoreRun {
        let (held_tx, held_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let this = self.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let script = this.script();
            let result = (|| -> Result<u32, PortError> {
                if !job.images_dir.join("inventory.img").is_file() {
                    return Err(fail(Op::Restore, "no inventory.img (fake)"));
                }
                if script.restore_fails {
                    return Err(fail(Op::Restore, "Can't fork for 4242: File exists (fake)")
                        .known(Some(criu_rpc::KnownFailure::PidInUse)));
                }
                if let Some(delay) = script.restore_delay {
                    std::thread::sleep(delay);
                }
                let (decide_tx, decide_rx) = std::sync::mpsc::channel();
                held_tx
                    .send(Held {
                        pid: 4242,
                        restore_time: started.elapsed(),
                        decide: decide_tx,
                    })
                    .map_err(|_| fail(Op::Restore, "nobody holds the restore"))?;
                let commit = decide_rx
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or(false);
                if let Some(hook) = &script.on_decide {
                    (hook.0)(commit);
                }
                if !commit {
                    this.log(Ev::RestoreDropped);
                    return Err(fail(Op::Restore, "the source did not commit"));
                }
                if script.restore_fails_after_commit {
                    return Err(fail(Op::Restore, "the restorer died (fake)"));
                }
                if this.world().agent_dead {
                    // CRIU died with the agent: nothing comes back.
                    std::thread::sleep(Duration::from_secs(120));
                    return Err(fail(Op::Restore, "CRIU died with the agent"));
                }
                let mut w = this.world();
                w.destination += 1;
                w.events.push(Ev::Restored);
                Ok(4242)
            })();
            let _ = done_tx.send(result);
        });
        RestoreRun {
            held: held_rx,
            done: done_rx,
        }
    }
}

impl Fake {
    fn run_dump(
        &self,
        job: DumpJob,
        frozen: oneshot::Sender<Instant>,
        serving: oneshot::Sender<()>,
    ) -> Result<DumpFigures, PortError> {
        let script = self.script();
        self.log(Ev::Dump {
            leave_running: job.leave_running,
        });
        if script.dump_dies {
            self.world().source = if script.container {
                Source::LeftFrozen
            } else {
                Source::Running
            };
            return Err(fail(Op::Dump, "CRIU was killed (fake)"));
        }
        let figures = DumpFigures {
            frozen_ms: Some(1.0),
            pages_written: Some(self.memory() as u64 / 4096),
        };
        let io = |e: std::io::Error| PortError::new(Op::Dump, e);
        if job.leave_running {
            self.write_images(&job.dir, true).map_err(io)?;
            // The workload dirties a little between rounds.
            let mut w = self.world();
            w.generation = w.generation.wrapping_add(1);
            return Ok(figures);
        }
        self.world().source = Source::Frozen;
        let lazy_port = match job.pages {
            PagesTo::Lazy(port) => Some(port),
            _ => None,
        };
        let mut held_socket: Option<OwnedFd> = None;
        match job.pages {
            PagesTo::PageServer(fd) => {
                self.write_images(&job.dir, false).map_err(io)?;
                let mut socket = std::os::unix::net::UnixStream::from(fd);
                let page = vec![7u8; self.memory()];
                let mut answer = [0u8; 1];
                let sent = socket
                    .write_all(&(page.len() as u64).to_be_bytes())
                    .and_then(|()| socket.write_all(&page))
                    .and_then(|()| socket.read_exact(&mut answer));
                if let Err(e) = sent {
                    self.let_go(false);
                    return Err(io(e));
                }
                held_socket = Some(socket.into());
            }
            PagesTo::Images => self.write_images(&job.dir, true).map_err(io)?,
            PagesTo::Lazy(_) => self.write_images(&job.dir, false).map_err(io)?,
        }
        let Some(hold) = job.hold else {
            self.let_go(true);
            return Ok(figures);
        };
        if let Some(hook) = &script.on_frozen {
            (hook.0)(true);
        }
        let _ = frozen.send(Instant::now());
        let verdict = hold.wait();
        drop(held_socket);
        if let Some(port) = lazy_port {
            return self.serve_lazily(port, verdict.is_ok(), serving, figures);
        }
        self.let_go(verdict.is_ok());
        verdict
            .map(|()| figures)
            .map_err(|e| PortError::new(Op::Dump, e))
    }

    /// CRIU's lazy page server: serves the memory to one connection; an
    /// orderly end means every page was served (the source is killed), a
    /// broken one resumes it. Started even after a refused post-dump.
    fn serve_lazily(
        &self,
        port: u16,
        released: bool,
        serving: oneshot::Sender<()>,
        figures: DumpFigures,
    ) -> Result<DumpFigures, PortError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| PortError::new(Op::Dump, e))?;
        let _ = serving.send(());
        let (mut conn, _) = listener.accept().map_err(|e| PortError::new(Op::Dump, e))?;
        if !released {
            let _ = conn.read_to_end(&mut Vec::new());
            self.let_go(false);
            return Err(fail(Op::Dump, "post-dump was refused"));
        }
        let served = conn.write_all(&vec![7u8; self.memory()]).and_then(|()| {
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).map(|_| ())
        });
        match served {
            Ok(()) => {
                self.log(Ev::LazyServed);
                self.let_go(true);
                Ok(figures)
            }
            Err(e) => {
                self.let_go(false);
                Err(PortError::new(Op::Dump, e))
            }
        }
    }
}

impl SourceTree for Fake {
    fn tasks(&self) -> Vec<u32> {
        // Pids no process has (pid_max is at most 4194304): the in-doubt
        // record must never name a real process in a unit test.
        vec![4_190_001, 4_190_002]
    }

    fn stop(&self, _: &[u32]) -> Result<(), PortError> {
        if self.script().stop_fails {
            return Err(fail(Op::Stop, "EPERM (fake)"));
        }
        let mut w = self.world();
        w.sigstopped = true;
        w.events.push(Ev::Sigstop);
        Ok(())
    }

    fn cont(&self, _: &[u32]) {
        let mut w = self.world();
        w.sigstopped = false;
        if w.source == Source::Stopped {
            w.source = Source::Running;
        }
        w.events.push(Ev::Sigcont);
    }

    fn settle_stopped(&self, _: &[u32]) {
        self.log(Ev::Settled);
    }

    fn discard(&self, _: &[u32]) {
        let mut w = self.world();
        w.source = Source::Gone;
        w.events.push(Ev::Discarded);
    }

    fn thaw_if_frozen(&self) -> Result<(), PortError> {
        let mut w = self.world();
        if w.source == Source::LeftFrozen {
            w.source = Source::Running;
            w.events.push(Ev::Thawed);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FakeThawDog(Fake, bool);

impl SourceWatchdog for FakeThawDog {
    fn hold(&mut self) {
        self.1 = true;
        self.0.log(Ev::SourceWatchdog("hold"));
    }
    fn done(self: Box<Self>) {
        self.0.log(Ev::SourceWatchdog("done"));
    }
}

#[derive(Debug)]
struct FakeTree(Fake);

impl Tree for FakeTree {
    fn kill(&self) -> Result<(), PortError> {
        let mut w = self.0.world();
        w.destination = 0;
        w.events.push(Ev::TreeKilled);
        Ok(())
    }
    fn occupied(&self) -> bool {
        self.0.world().destination > 0
    }
    fn release(&self) {}
    fn kill_script(&self) -> String {
        String::new()
    }
    fn enter_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

#[derive(Debug)]
struct FakeWatchdog(Fake, bool);

impl Watchdog for FakeWatchdog {
    fn release(mut self: Box<Self>) {
        self.1 = true;
        self.0.log(Ev::WatchdogReleased);
    }
}

impl Drop for FakeWatchdog {
    fn drop(&mut self) {
        if !self.1 {
            let mut w = self.0.world();
            w.destination = 0;
            w.events.push(Ev::WatchdogFired);
        }
    }
}
