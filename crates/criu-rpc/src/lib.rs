//! A typed client for CRIU's RPC protocol (`criu swrk`).
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use criu_rpc::{Criu, CriuBinary, DumpRequest, Features, Recorder, RestoreRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let criu = Criu::new(CriuBinary::locate(None)?);
//! println!("CRIU {}", criu.version()?);
//! let features = criu.feature_check(Features::ALL)?;
//!
//! let images = std::fs::File::open("/tmp/images")?;
//! let mut dump = DumpRequest::new(4242, images.as_fd());
//! dump.options.leave_running = true;
//! let outcome = criu.dump(&dump, None)?;
//! println!("{:?}", outcome.stats);
//!
//! let mut steps = Recorder::default();
//! let restored = criu.restore(&RestoreRequest::new(images.as_fd()), Some(&mut steps))?;
//! println!("restored as {} after {:?}", restored.pid, steps.scripts);
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! - [`Criu`] names an executable and a [`Launcher`]; it holds no process.
//!   Every request starts its own `criu swrk` unless it runs in a
//!   [`Session`], which keeps one across requests as CRIU allows (VERSION,
//!   FEATURE_CHECK, CPUINFO_*, page servers, PRE_DUMP rounds, then DUMP).
//! - One request value per operation ([`DumpRequest`], [`PreDumpRequest`],
//!   [`RestoreRequest`], [`PageServerRequest`], [`ImagesRequest`]); the client
//!   only reads them. Options a CRIU is too old for are refused before the
//!   request is sent.
//! - CRIU is always started with `--no-default-config`, so configuration
//!   files on the host cannot change what an RPC option means.
//! - Answers are sized before they are read and ancillary data is always
//!   taken; descriptors are `OwnedFd`/`BorrowedFd`, never bare integers.
//! - CRIU never outlives its caller: a parent-death signal, `Drop`, a
//!   per-call timeout and a [`CancelToken`] all kill and reap it.
//! - Notifications go to a [`Notify`] handler with state; a failing handler
//!   aborts CRIU and its error is the cause the caller sees.
//! - Errors are typed, one per operation, and keep CRIU's errno, message,
//!   log file and first log errors; known failures carry a remedy
//!   ([`KnownFailure`]).
//! - [`AsyncCriu`] runs calls on tokio's blocking pool; dropping its future
//!   cancels the call.

mod async_client;
mod binary;
mod cancel;
mod client;
mod dump;
mod error;
mod external;
pub mod failure;
mod features;
mod images_requests;
mod launcher;
mod notify;
mod options;
mod page_server;
mod pre_dump;
mod probe;
mod pstree;
mod restore;
mod stats;
mod transport;
mod version;

pub use async_client::AsyncCriu;
pub use binary::{CriuBinary, CriuSource, LocateError, CRIU_ENV, DEFAULT_PREFIX, PREFIX_ENV};
pub use cancel::CancelToken;
pub use client::{Criu, FeatureCheckError, RequestError, Session, TooOld, VersionError};
pub use dump::{DumpError, DumpOutcome};
pub use error::{CallError, CriuFailure, TransportError};
pub use external::{ExternalError, Side as ExternalSide};
pub use failure::KnownFailure;
pub use features::Features;
pub use images_requests::ImagesRequestError;
pub use launcher::{ExecLauncher, IsolatedLauncher, LaunchSpec, Launcher, PassFd};
pub use notify::{Notification, Notify, NotifyError, NotifyResult, Recorder};
pub use options::{
    CgroupMode, Cgroups, Common, DumpOptions, DumpRequest, External, Gate, ImagesRequest,
    InheritFd, JoinNamespace, LogLevel, Mounts, NetworkLock, OptionError, PageServerMode,
    PageServerRequest, PageServerTarget, PreDumpMode, PreDumpRequest, RestoreOptions,
    RestoreRequest, Tls,
};
pub use page_server::{
    LazyPagesDaemon, LazyPagesError, LazyPagesRequest, PageServerError, PageServerInfo,
};
pub use pre_dump::PreDumpError;
pub use probe::{feature, ProbeError, ProbeResult};
pub use pstree::{checkpoint_pids, read_pstree, PstreeError};
pub use restore::{RestoreError, RestoreOutcome};
pub use stats::{read_dump_stats, read_restore_stats, DumpStats, RestoreStats, StatsError};
pub use version::{CriuVersion, MINIMUM as MINIMUM_VERSION};

/// The generated protocol types, for callers that need a raw field.
pub use criu_proto as proto;
