//! CHECK, CPUINFO_DUMP and CPUINFO_CHECK: requests that only need an images
//! directory.

use criu_proto::rpc::CriuReqType;

use crate::client::{Criu, RequestError, Session};
use crate::dump::session_opts;
use crate::options::{ImagesRequest, IntoOpts};

/// Why CHECK or a CPUINFO request failed.
#[derive(Debug, thiserror::Error)]
#[error("CRIU {request} failed")]
pub struct ImagesRequestError {
    /// CHECK, CPUINFO_DUMP or CPUINFO_CHECK.
    pub request: &'static str,
    /// What went wrong.
    #[source]
    pub source: RequestError,
}

impl Criu {
    /// CHECK over RPC: whether CRIU can work here (CRIU 4.1 needs an images
    /// directory for it; [`Criu::check_kernel`] gives CRIU's reasons).
    pub fn check(&self, request: &ImagesRequest<'_>) -> Result<(), ImagesRequestError> {
        self.one_shot(CriuReqType::Check, request, None)
            .map(drop)
            .map_err(|source| ImagesRequestError {
                request: "CHECK",
                source,
            })
    }
}

impl Session {
    /// CPUINFO_DUMP: writes this host's `cpuinfo.img` into the images
    /// directory. The session stays open.
    pub fn cpuinfo_dump(&mut self, request: &ImagesRequest<'_>) -> Result<(), ImagesRequestError> {
        self.keep_open_images_request(CriuReqType::CpuinfoDump, request)
    }

    /// CPUINFO_CHECK: whether the `cpuinfo.img` in the images directory (from
    /// another host) is compatible with this one. The session stays open.
    pub fn cpuinfo_check(&mut self, request: &ImagesRequest<'_>) -> Result<(), ImagesRequestError> {
        self.keep_open_images_request(CriuReqType::CpuinfoCheck, request)
    }

    fn keep_open_images_request(
        &mut self,
        kind: CriuReqType,
        request: &ImagesRequest<'_>,
    ) -> Result<(), ImagesRequestError> {
        let wrap = |source| ImagesRequestError {
            request: kind.as_str_name(),
            source,
        };
        let opts = session_opts(request).map_err(wrap)?;
        self.check_gates(&request.gates()).map_err(wrap)?;
        self.exchange(kind, opts, request, None, true)
            .map(drop)
            .map_err(wrap)
    }
}
