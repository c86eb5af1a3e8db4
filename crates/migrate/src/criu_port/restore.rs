//! The destination's CRIU: the page server, the lazy-pages daemon and the
//! restore held at post-restore. Each runs on a thread of its own (CRIU
//! dies with the thread that started it).

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crabmigrate_runtime::container::{self, RestoreOptions};
use crabmigrate_runtime::state::StateRoot;
use criu_rpc::{Criu, Notify, NotifyResult, PageServerRequest, RestoreRequest};
use tokio::sync::oneshot;

use crate::port::{Daemon, Held, Op, PortError, RestoreJob, RestoreRun, RestoreTarget};

/// Waits for a thread's first report, then hands over.
fn started<T>(rx: std::sync::mpsc::Receiver<Result<T, PortError>>, op: Op) -> Result<T, PortError> {
    rx.recv()
        .unwrap_or_else(|_| Err(PortError::new(op, "the thread that starts it died")))
}

/// Stop-copy: CRIU's page server on loopback, writing into `images_dir`.
pub(super) fn page_server(criu: Criu, images_dir: &Path) -> Result<Daemon, PortError> {
    let dir = images_dir.to_path_buf();
    let (info_tx, info_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let started = std::fs::File::open(&dir)
            .map_err(|e| PortError::new(Op::PageServer, e))
            .and_then(|images| {
                let request = PageServerRequest::listen(images.as_fd(), "127.0.0.1", 0);
                criu.page_server(&request)
                    .map_err(|e| PortError::new(Op::PageServer, e))
            });
        match started {
            Ok((session, info)) => {
                let _ = info_tx.send(Ok(info.port));
                let status = session
                    .wait_pid(info.pid.unwrap_or(0))
                    .map_err(|e| PortError::new(Op::PageServerRun, e))
                    .and_then(|s| {
                        // CRIU's page server can end well after an error
                        // it logged (a full disk): the log decides too.
                        let errors = log_errors(&dir.join("page-server.log"));
                        if s.success() && errors.is_empty() {
                            Ok(())
                        } else {
                            Err(PortError::new(
                                Op::PageServerRun,
                                format!("it ended with {s}{errors}"),
                            ))
                        }
                    });
                let _ = done_tx.send(status);
            }
            Err(e) => {
                let _ = info_tx.send(Err(e));
            }
        }
    });
    let port = started(info_rx, Op::PageServer)?;
    Ok(Daemon {
        port,
        done: done_rx,
    })
}

/// The first error lines of a CRIU log, for a message.
fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error"))
        .take(3)
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join(" / "))
    }
}

/// Post-copy: `criu lazy-pages` for `images_dir`, fetching from `port` on
/// loopback (the agent's end of the carried page requests).
pub(super) fn lazy_pages(criu: Criu, images_dir: &Path, port: u16) -> Result<Daemon, PortError> {
    let dir = images_dir.to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let request = criu_rpc::LazyPagesRequest {
            images_dir: &dir,
            work_dir: &dir,
            address: "127.0.0.1",
            port,
            log_file: "lazy-pages.log",
            tls_args: Vec::new(),
        };
        match criu.lazy_pages(&request) {
            Ok(mut daemon) => {
                let _ = ready_tx.send(Ok(()));
                let status = daemon
                    .wait()
                    .map_err(|e| PortError::new(Op::LazyPagesRun, e))
                    .and_then(|s| {
                        if s.success() {
                            Ok(())
                        } else {
                            Err(PortError::new(
                                Op::LazyPagesRun,
                                format!("it ended with {s}{}", log_errors(daemon.log_file())),
                            ))
                        }
                    });
                let _ = done_tx.send(status);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(PortError::new(Op::LazyPages, e)));
            }
        }
    });
    started(ready_rx, Op::LazyPages)?;
    Ok(Daemon {
        port,
        done: done_rx,
    })
}

/// Holds the restored tree at post-restore until the source decides.
struct HoldRestore {
    started: Instant,
    held: Option<oneshot::Sender<Held>>,
}

impl Notify for HoldRestore {
    fn post_restore(&mut self, pid: i32) -> NotifyResult {
        let (decide_tx, decide_rx) = std::sync::mpsc::channel();
        let held = self.held.take().ok_or("post-restore came twice")?;
        held.send(Held {
            pid: u32::try_from(pid).map_err(|_| "CRIU reported a negative pid")?,
            restore_time: self.started.elapsed(),
            decide: decide_tx,
        })
        .map_err(|_| "the migration session ended")?;
        // The session's own deadline bounds this wait; a generous one here
        // only guards against a session that vanished without a word.
        match decide_rx.recv_timeout(LAST_RESORT) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the source did not commit; the restored copy is dropped".into()),
            Err(_) => Err("no decision from the migration; the restored copy is dropped".into()),
        }
    }
}

/// The longest a held restore waits if the session never decides.
const LAST_RESORT: Duration = Duration::from_secs(600);

fn restore_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PortError {
    PortError::new(Op::Restore, e)
}

/// Runs `job` on its own thread.
pub(super) fn start(criu: Criu, job: RestoreJob) -> RestoreRun {
    let (held_tx, held_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut hold = HoldRestore {
            started: Instant::now(),
            held: Some(held_tx),
        };
        let result = run(&criu, &job, &mut hold);
        let _ = done_tx.send(result);
    });
    RestoreRun {
        held: held_rx,
        done: done_rx,
    }
}

fn run(criu: &Criu, job: &RestoreJob, hold: &mut HoldRestore) -> Result<u32, PortError> {
    match &job.target {
        RestoreTarget::Process => {
            let images = std::fs::File::open(&job.images_dir).map_err(restore_error)?;
            let mut request = RestoreRequest::new(images.as_fd());
            request.options.tcp_established = job.tcp_established;
            // The lazy-pages daemon listens in the images directory, which
            // is also the restore's work directory.
            request.options.lazy_pages = job.lazy;
            // The tree stays in the cgroup CRIU was started in (the
            // session's, where it is killed as a whole); by default CRIU
            // would move it back into the cgroups it was dumped from.
            request.options.cgroups.mode = Some(criu_rpc::CgroupMode::Ignore);
            criu.restore(&request, Some(hold))
                .map(|o| o.pid as u32)
                .map_err(|e| {
                    let known = e.source.known_failure();
                    restore_error(e).known(known)
                })
        }
        RestoreTarget::Container {
            id,
            bundle_dir,
            state_root,
        } => {
            let root = StateRoot::new(state_root.clone());
            let opts = RestoreOptions {
                bundle: bundle_dir.clone(),
                images_dir: job.images_dir.clone(),
                tcp_established: job.tcp_established,
                lazy_pages: job.lazy,
                ..Default::default()
            };
            let restored = container::restore(criu, &root, id, &opts, Some(hold)).map_err(|e| {
                let known = match &e {
                    container::RestoreError::Criu(c) => c.source.known_failure(),
                    _ => None,
                };
                restore_error(e).known(known)
            })?;
            let pid = restored.state.pid;
            // The restored init is this agent's child (CRIU's
            // rst_sibling): reap it when it ends.
            std::thread::spawn(move || {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(raw), None);
                }
            });
            Ok(pid)
        }
    }
}
