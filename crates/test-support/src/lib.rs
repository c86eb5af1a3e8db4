//! Helpers shared by the integration tests (`tests/`) and the benchmarks
//! (`crates/bench`). Every operation returns a typed error; the callers
//! decide whether that is a test failure (panic) or a benchmark's error.
//!
//! - [`netns`]: network namespaces as "hosts", veth links, two hosts with
//!   an optionally shaped link, CRIU started inside a namespace;
//! - [`workload`]: the state line `crabmigrate-workload` writes, and
//!   private copies of a built program;
//! - [`busybox`]: a busybox OCI bundle;
//! - [`tar`]: tar archives written byte by byte (hostile names and links);
//! - [`pty`]: pseudo-terminals and a conversation through one.

pub mod busybox;
pub mod netns;
pub mod pty;
pub mod tar;
pub mod workload;
