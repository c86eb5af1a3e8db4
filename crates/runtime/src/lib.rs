//! The container runtime layer: host facts and checks now; OCI containers
//! with checkpoint, pre-dump, page-serve and restore come with the runtime
//! issue.

pub mod check;
pub mod host;

/// The CRIU client this crate is built on, re-exported so callers use the
/// matching version.
pub use criu_rpc;
