//! The container runtime layer: host facts and checks, and OCI containers
//! with checkpoint, pre-dump, page-serve and restore.

pub mod cgroups;
pub mod check;
pub mod container;
pub mod host;
pub mod network;
pub mod security;
pub mod sockets;
pub mod spec;
pub mod state;
pub mod terminals;

/// The CRIU client this crate is built on, re-exported so callers use the
/// matching version.
pub use criu_rpc;
/// The OCI spec types bundles are read into.
pub use oci_spec;
