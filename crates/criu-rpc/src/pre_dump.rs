//! PRE_DUMP and SINGLE_PRE_DUMP: copy memory while the tree runs.
//!
//! Both need soft-dirty memory tracking. CRIU 4.1 does not check for it on
//! the RPC path and its pre-dump child dies on a BUG with no message, so the
//! client asks FEATURE_CHECK first (on the same session) and refuses with
//! [`PreDumpError::NoMemoryTracking`].

use criu_proto::rpc::CriuReqType;

use crate::client::{Criu, RequestError, Session};
use crate::dump::session_opts;
use crate::error::CallError;
use crate::features::Features;
use crate::options::{IntoOpts, PreDumpRequest};
use crate::stats::{read_dump_stats, DumpStats};

/// Why a pre-dump failed.
#[derive(Debug, thiserror::Error)]
pub enum PreDumpError {
    /// The kernel has no soft-dirty bits.
    #[error("cannot pre-dump process {pid}: this kernel has no soft-dirty memory tracking (CRIU's mem_track feature); use post-copy (lazy pages) or stop-copy instead")]
    NoMemoryTracking {
        /// The tree's root.
        pid: u32,
    },
    /// The request failed.
    #[error("cannot pre-dump process {pid}")]
    Request {
        /// The tree's root.
        pid: u32,
        /// What went wrong.
        #[source]
        source: RequestError,
    },
}

impl Session {
    /// One PRE_DUMP round; the session stays open for more rounds and the
    /// final [`Session::dump`]. Returns CRIU's statistics for the round.
    pub fn pre_dump(
        &mut self,
        request: &PreDumpRequest<'_>,
    ) -> Result<Option<DumpStats>, PreDumpError> {
        self.run_pre_dump(CriuReqType::PreDump, request)
    }

    fn run_pre_dump(
        &mut self,
        kind: CriuReqType,
        request: &PreDumpRequest<'_>,
    ) -> Result<Option<DumpStats>, PreDumpError> {
        let pid = request.pid;
        let wrap = |source: RequestError| PreDumpError::Request { pid, source };
        let opts = session_opts(request).map_err(wrap)?;
        self.check_gates(&request.gates()).map_err(wrap)?;
        let features = self
            .feature_check(Features {
                mem_track: true,
                ..Features::default()
            })
            .map_err(|e| wrap(RequestError::Call(feature_call_error(e))))?;
        if !features.mem_track {
            return Err(PreDumpError::NoMemoryTracking { pid });
        }
        let answer = self
            .exchange(kind, opts, request, None, false)
            .map_err(wrap)?;
        Ok(answer
            .work_dir
            .as_deref()
            .and_then(|dir| read_dump_stats(dir).ok().flatten()))
    }
}

fn feature_call_error(e: crate::client::FeatureCheckError) -> CallError {
    match e {
        crate::client::FeatureCheckError::Call(c) => c,
    }
}

impl Criu {
    /// SINGLE_PRE_DUMP: one pre-dump in its own CRIU (CRIU 3.17+).
    pub fn single_pre_dump(
        &self,
        request: &PreDumpRequest<'_>,
    ) -> Result<Option<DumpStats>, PreDumpError> {
        let pid = request.pid;
        let mut session = self.session().map_err(|e| PreDumpError::Request {
            pid,
            source: RequestError::Call(e.into()),
        })?;
        let mut gates = request.gates();
        gates.push(crate::options::Gate {
            option: "single pre-dump",
            since: crate::CriuVersion::new(3, 17, 0),
        });
        session
            .check_gates(&gates)
            .map_err(|source| PreDumpError::Request { pid, source })?;
        let stats = session.run_pre_dump(CriuReqType::SinglePreDump, request)?;
        session.swrk.finish();
        Ok(stats)
    }
}
