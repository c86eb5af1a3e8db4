//! Integration tests: the `crabmigrate` program and the libraries against a
//! real CRIU (root needed; under CI=true nothing skips).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// `crabmigrate check` on this host, human and JSON.
mod check;
/// Bad input to the CLI: a missing, old or broken CRIU.
mod cli_errors;
/// The RPC schema and client against a real `criu swrk`.
mod rpc;
