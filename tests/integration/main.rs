//! Integration tests: the `crabmigrate` program and the libraries against a
//! real CRIU (root needed; under CI=true nothing skips).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Checkpoint archives: export, import on a fresh state root, restore into a
/// fresh bundle; crafted hostile archives refused with nothing extracted.
mod archives;
/// Random argument vectors to the binary, fenced in a sandbox: no panic,
/// no signal, no raw escape on stderr.
mod argv_fuzz;
/// The bad-input suite: every command given what a newcomer gets wrong,
/// refused with its cause and nothing changed; a truncated inventory; a
/// broken container listed and force-deleted.
mod bad_input;
/// The bad-input suite's table of cases, one or more per command.
mod bad_input_cases;
mod bench;
/// `crabmigrate check` on this host, human and JSON.
mod check;
/// Bad input to the CLI: a missing, old or broken CRIU.
mod cli_errors;
/// Containers checkpointed and restored: counter, bind mount, TCP,
/// terminal, leave-running under a new ID, runc interoperability.
mod container_cr;
/// The container lifecycle: create, start, run, state, list, ps, kill,
/// delete, pause, resume, hooks, and bad bundles.
mod containers;
/// Checkpoint archives between Podman and crabmigrate, both ways.
mod engine_archives;
/// crabmigrate as the OCI runtime of Podman and containerd.
mod engines;
/// `inspect` and the image decoder on real dumps (a process tree, a busybox
/// container, a lazy dump) and on damaged images.
mod images;
/// Lazy pages (post-copy): a lazy dump served to `criu lazy-pages`.
mod lazy_pages;
/// Live migration between two namespace hosts: stop-copy, refusals and faults.
mod migration;
/// Network namespaces as test "hosts".
mod netns;
/// Containers with a CNI network: lifecycle, CHECK, delete after a crash,
/// checkpoint/restore with a live TCP client, UDP, bad input.
mod networks;
/// runc's command line as engines use it: exec, update, events, spec,
/// features, state, --log.
mod oci_cli;
/// A dump streamed to a page server in another network namespace.
mod page_server;
/// Process trees: checkpoint, restore, leave-running, notifications,
/// inherit-fd, external mounts.
mod process_cr;
/// A process with a pseudo-terminal: orphan-pts-master hands over the master.
mod pty;
/// The README's and the docs' runnable blocks, pasted into a shell on a
/// terminal with the installed crabmigrate.
mod readme;
/// The RPC schema and client against a real `criu swrk`.
mod rpc;
/// The spec's security applied (as runc applies it) and kept across a
/// checkpoint and restore; refusals.
mod security;
/// Sockets and files of process trees: a TCP client kept connected through
/// checkpoint and restore, a UDP service, --tcp-close, --ext-unix-sk,
/// --file-locks, --link-remap, and the refusals around them.
mod sockets;
/// Trees whose stdio is the caller's terminal: checkpointed with the
/// terminal left outside, restored onto the restorer's terminal.
mod terminals;
/// The switch, two hosts and a client, built from namespaces.
mod topology;
