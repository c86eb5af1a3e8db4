//! Live migration of containers and process trees between two hosts.
//!
//! This crate holds the protocol and both sides; the CLI is a thin layer.
//!
//! - [`source`]: `migrate`, the strategies (stop-copy, pre-copy, post-copy,
//!   auto) with their sequence diagrams, and the transactional cut-over;
//! - [`agent`]: the destination, its receiver state machine, the hold at
//!   post-restore, the health check and the post-copy watchdog;
//! - [`protocol`]: the messages and the version policy;
//! - [`channel`] and [`key`]: the Noise NNpsk0 channel keyed by a shared
//!   key; [`transfer`]: files under a [`manifest`] of sha256 digests, and
//!   CRIU's page traffic carried over the channel;
//! - [`chunks`]: the content-hashed rounds of pre-copy;
//! - [`bundle`]: a container's config and rootfs on the move;
//! - [`events`]: what a migration reports while it runs.

pub mod agent;
pub mod bundle;
pub mod channel;
pub mod chunks;
pub mod events;
pub mod key;
pub mod manifest;
mod procs;
pub mod protocol;
pub mod source;
pub mod transfer;
