//! Live migration through the CLI between two namespace "hosts": `src`
//! runs the workload and `crabmigrate migrate`, `dst` runs
//! `crabmigrate agent`; a veth joins them and both share the file system,
//! so the workload's state file shows which copy runs.
//!
//! Most workloads are pid 1 of their own pid namespace (`unshare --pid
//! --fork`), so the destination can restore them while the source still
//! exists; the fault matrix also runs trees outside a private pid
//! namespace, so that stopping, resuming and killing whole trees is really
//! tested. Workloads run from a private copy of `crabmigrate-workload`.
//!
//! - [`basics`]: migrations that work, wrong keys, junk peers, refusals
//!   before anything freezes, bad command lines;
//! - [`strategies`]: containers with every strategy, post-copy and
//!   pre-copy figures, a failing restore, a container with a TCP socket;
//! - [`faults`]: the fault matrix — the source's `migrate` and the agent
//!   killed at each phase, CRIU killed mid-dump, the destination's disk
//!   full mid-transfer — for a process tree and a container;
//! - [`cutover`]: the link cut at the cut-over and Commit lost (a relay
//!   that speaks the protocol with the key), and trees outside a pid
//!   namespace kept stopped, resumed and discarded as a whole;
//! - [`peer`]: a hostile peer speaking the protocol to a real agent;
//! - [`relay`]: one byte altered in transit.
//!
//! Every case ends with exactly one running copy — or the documented
//! in-doubt state: no copy runs, the source is stopped and intact, and the
//! printed `crabmigrate recover` command resumes it — and nothing left
//! behind. Everything a test starts is undone on drop, also when it
//! panics. Durations are printed (`--nocapture`), never asserted.

mod basics;
mod cutover;
mod faults;
mod lab;
mod mitm;
mod peer;
mod relay;
mod strategies;
