//! Live migration of containers and process trees between two hosts.
//!
//! This crate holds the protocol and both sides as typed state machines
//! over two ports; the CLI is a thin layer.
//!
//! - [`source`]: `migrate`, the strategies (stop-copy, pre-copy, post-copy,
//!   auto) with their sequence diagrams, and the cut-over, whose frozen
//!   source is a guard that resumes before the commit and stays stopped
//!   after it;
//! - [`agent`]: the destination, its session state machine, the hold at
//!   post-restore, the health check and the watchdog;
//! - the ports: [`channel`] carries authenticated, encrypted byte frames
//!   (Noise NNpsk0 keyed by [`key`]); [`port::Checkpointer`] is CRIU and the
//!   runtime ([`criu_port`] for real);
//! - [`protocol`]: the typed messages and the version policy;
//!   [`transfer`]: files under a [`manifest`] of sha256 digests, and CRIU's
//!   page traffic carried over the channel; [`chunks`]: pre-copy's
//!   content-hashed rounds;
//! - [`hold`], [`deadlines`], [`interrupt`], [`recover`]: the cut-over's
//!   safety (the post-dump hold, every deadline, signals, in-doubt
//!   records);
//! - [`cgroup`], [`watchdog`]: a restored tree killed as a whole, even if
//!   the agent dies;
//! - [`bundle`]: a container's config and rootfs on the move;
//!   [`events`]: what a migration reports while it runs.
//!
//! Dependencies point one way: `meter`, `key` <- `channel` <- `protocol`
//! <- `manifest` <- `transfer` <- `chunks` <- `source`, `agent`.

pub mod agent;
pub mod bundle;
pub mod cgroup;
pub mod channel;
pub mod chunks;
pub mod criu_port;
pub mod deadlines;
pub mod events;
pub mod hold;
pub mod interrupt;
pub mod key;
pub mod manifest;
pub mod meter;
pub mod port;
mod procs;
pub mod protocol;
pub mod recover;
pub mod source;
pub mod transfer;
pub mod watchdog;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod testing;
