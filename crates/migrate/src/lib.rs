//! Live migration of containers and process trees between two hosts.
//!
//! This crate holds the protocol and both sides; the CLI is a thin layer.
//! Built so far: the shared key ([`key`]), the authenticated and encrypted
//! channel ([`channel`]), the message set with its version policy
//! ([`protocol`]) and the digest manifest that guards every transferred
//! file ([`manifest`]). The agent, the strategies and the cut-over come next
//! (see docs/migration.md for the plan).

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
