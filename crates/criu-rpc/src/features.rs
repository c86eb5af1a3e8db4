//! FEATURE_CHECK: what the kernel and CRIU support, as CRIU answers it.

use criu_proto::rpc;
use serde::Serialize;

/// The features FEATURE_CHECK knows about.
///
/// In a request, `true` means "check this one"; in an answer, `true` means
/// supported. Features that were not asked for come back `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    /// Soft-dirty memory tracking (needed by pre-dump and `track_mem`).
    pub mem_track: bool,
    /// userfaultfd with non-cooperative events (lazy pages, post-copy).
    pub lazy_pages: bool,
    /// `pidfd_open` and `pidfd_getfd` (pid-reuse detection across pre-dumps).
    pub pidfd_store: bool,
}

impl Features {
    /// Every feature: what a full check asks for.
    pub const ALL: Self = Self {
        mem_track: true,
        lazy_pages: true,
        pidfd_store: true,
    };

    pub(crate) fn to_proto(self) -> rpc::CriuFeatures {
        rpc::CriuFeatures {
            mem_track: Some(self.mem_track),
            lazy_pages: Some(self.lazy_pages),
            pidfd_store: Some(self.pidfd_store),
        }
    }

    /// Reads CRIU's answer; an absent field means "not supported".
    pub(crate) fn from_proto(answer: &rpc::CriuFeatures) -> Self {
        Self {
            mem_track: answer.mem_track(),
            lazy_pages: answer.lazy_pages(),
            pidfd_store: answer.pidfd_store(),
        }
    }
}
