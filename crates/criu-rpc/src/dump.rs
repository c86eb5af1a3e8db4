//! DUMP: checkpoint a process tree.

use std::path::PathBuf;

use criu_proto::rpc::CriuReqType;

use crate::client::Session;
use crate::client::{Criu, RequestError};
use crate::notify::Notify;
use crate::options::{DumpRequest, FdPlan, IntoOpts};
use crate::stats::{read_dump_stats, DumpStats};

/// A finished dump.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    /// CRIU's statistics (`stats-dump` in the work directory).
    pub stats: Option<DumpStats>,
    /// CRIU's log of the dump.
    pub log_file: Option<PathBuf>,
    /// The work directory.
    pub work_dir: Option<PathBuf>,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot checkpoint process {pid}")]
pub struct DumpError {
    /// The tree's root.
    pub pid: u32,
    /// What went wrong.
    #[source]
    pub source: RequestError,
}

impl Criu {
    /// Checkpoints the tree described by `request`. With a `notify` handler,
    /// CRIU reports each step and waits for the handler (see [`Notify`]).
    pub fn dump(
        &self,
        request: &DumpRequest<'_>,
        notify: Option<&mut dyn Notify>,
    ) -> Result<DumpOutcome, DumpError> {
        let wrap = |source| DumpError {
            pid: request.pid,
            source,
        };
        let answer = self
            .one_shot(CriuReqType::Dump, request, notify)
            .map_err(wrap)?;
        let mut outcome = outcome(answer);
        if request.lazy_pages_port.is_some() {
            // CRIU 4.1 resets its statistics when the lazy page server
            // starts, so `stats-dump` then holds zeros and a frozen time
            // counted from boot: report none rather than wrong ones.
            outcome.stats = None;
        }
        Ok(outcome)
    }
}

impl Session {
    /// The final DUMP of a session (after PRE_DUMPs). Ends the session.
    /// Descriptors CRIU must inherit cannot be added to a running session,
    /// so the page server must be given by address.
    pub fn dump(
        mut self,
        request: &DumpRequest<'_>,
        notify: Option<&mut dyn Notify>,
    ) -> Result<DumpOutcome, DumpError> {
        let wrap = |source| DumpError {
            pid: request.pid,
            source,
        };
        let opts = session_opts(request).map_err(wrap)?;
        self.check_gates(&request.gates()).map_err(wrap)?;
        let answer = self
            .exchange(CriuReqType::Dump, opts, request, notify, false)
            .map_err(wrap)?;
        self.swrk.finish();
        Ok(outcome(answer))
    }
}

/// Options for a request inside a running session, which cannot pass new
/// descriptors to CRIU.
pub(crate) fn session_opts<'a, R: IntoOpts<'a>>(
    request: &R,
) -> Result<criu_proto::rpc::CriuOpts, RequestError> {
    let mut plan = FdPlan::default();
    let opts = request.to_opts(&mut plan)?;
    if plan.passed.is_empty() {
        Ok(opts)
    } else {
        Err(crate::options::OptionError::Conflict(
            "a session request",
            "descriptors for CRIU to inherit (give the page server by address)",
        )
        .into())
    }
}

fn outcome(answer: crate::client::Answer) -> DumpOutcome {
    let stats = answer
        .work_dir
        .as_deref()
        .and_then(|dir| read_dump_stats(dir).ok().flatten());
    DumpOutcome {
        stats,
        log_file: answer.log_file,
        work_dir: answer.work_dir,
    }
}
