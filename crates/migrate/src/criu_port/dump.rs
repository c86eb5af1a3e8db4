//! The source's dump: a thread runs CRIU (it dies with the thread that
//! started it), and CRIU's post-dump notification waits on the [`Hold`].

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use crabmigrate_runtime::container::{self, CheckpointOptions};
use crabmigrate_runtime::state::StateRoot;
use criu_rpc::{Criu, DumpRequest, DumpStats, Notify, NotifyResult, PageServerTarget};
use tokio::sync::oneshot;

use crate::hold::Hold;
use crate::port::{DumpFigures, DumpJob, DumpRun, Op, PagesTo, PortError, Workload};

/// Hands the frozen tree over at post-dump and waits for the hold's
/// decision; tells when a lazy page server is ready.
struct Handover {
    hold: Option<Arc<Hold>>,
    frozen_at: Option<Instant>,
    frozen: Option<oneshot::Sender<Instant>>,
    serving: Option<oneshot::Sender<()>>,
}

impl Notify for Handover {
    fn status_ready(&mut self) -> NotifyResult {
        if let Some(serving) = self.serving.take() {
            let _ = serving.send(());
        }
        Ok(())
    }

    fn query_ext_files(&mut self) -> Result<Vec<criu_rpc::External>, criu_rpc::NotifyError> {
        // The tree is frozen by now: downtime starts here.
        self.frozen_at.get_or_insert_with(Instant::now);
        Ok(Vec::new())
    }

    fn post_dump(&mut self) -> NotifyResult {
        let Some(hold) = &self.hold else {
            return Ok(());
        };
        let at = self.frozen_at.unwrap_or_else(Instant::now);
        if let Some(frozen) = self.frozen.take() {
            // The migration may have ended already; the hold then holds
            // its decision (resume).
            let _ = frozen.send(at);
        }
        hold.wait().map_err(Into::into)
    }
}

fn figures(stats: Option<DumpStats>) -> DumpFigures {
    DumpFigures {
        frozen_ms: stats.map(|s| f64::from(s.frozen_time_us) / 1000.0),
        pages_written: stats.map(|s| s.pages_written),
    }
}

fn dump_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PortError {
    PortError::new(Op::Dump, e)
}

/// Runs `job` on its own thread.
pub(super) fn start(criu: Criu, job: DumpJob) -> DumpRun {
    let (frozen_tx, frozen_rx) = oneshot::channel();
    let (serving_tx, serving_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut notify = Handover {
            hold: job.hold.clone(),
            frozen_at: None,
            frozen: Some(frozen_tx),
            serving: Some(serving_tx),
        };
        let result = run(&criu, &job, &mut notify);
        let _ = done_tx.send(result);
    });
    DumpRun {
        frozen: frozen_rx,
        serving: serving_rx,
        done: done_rx,
    }
}

fn run(criu: &Criu, job: &DumpJob, notify: &mut Handover) -> Result<DumpFigures, PortError> {
    let notify: &mut dyn Notify = notify;
    match &job.workload {
        Workload::Process { pid } => {
            let images = std::fs::File::open(&job.dir).map_err(dump_error)?;
            let mut request = DumpRequest::new(*pid, images.as_fd());
            request.options.tcp_established = job.tcp_established;
            request.options.leave_running = job.leave_running;
            match &job.pages {
                PagesTo::PageServer(socket) => {
                    request.options.page_server = Some(PageServerTarget::Socket(socket.as_fd()));
                }
                PagesTo::Lazy(port) => request.lazy_pages_port = Some(*port),
                PagesTo::Images => {}
            }
            criu.dump(&request, Some(notify))
                .map(|o| figures(o.stats))
                .map_err(|e| {
                    let known = e.source.known_failure();
                    dump_error(e).known(known)
                })
        }
        Workload::Container { id, state_root, .. } => {
            let root = StateRoot::new(state_root.clone());
            let opts = CheckpointOptions {
                images_dir: job.dir.clone(),
                leave_running: job.leave_running,
                tcp_established: job.tcp_established,
                page_server_socket: match &job.pages {
                    PagesTo::PageServer(socket) => Some(socket.as_fd()),
                    _ => None,
                },
                lazy_pages_port: match job.pages {
                    PagesTo::Lazy(port) => Some(port),
                    _ => None,
                },
                ..Default::default()
            };
            container::checkpoint(criu, &root, id, &opts, Some(notify))
                .map(|o| figures(o.stats))
                .map_err(|e| {
                    let known = match &e {
                        container::CheckpointError::Dump(d) => d.source.known_failure(),
                        _ => None,
                    };
                    dump_error(e).known(known)
                })
        }
    }
}
