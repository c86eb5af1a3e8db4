//! A typed client for CRIU's RPC protocol (`criu swrk`).
//!
//! ```no_run
//! use criu_rpc::{Criu, CriuBinary, Features};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let criu = Criu::new(CriuBinary::locate(None)?);
//! let version = criu.version()?;
//! let features = criu.feature_check(Features::ALL)?;
//! println!("CRIU {version}, lazy pages: {}", features.lazy_pages);
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! - [`Criu`] names an executable and a [`Launcher`]; it holds no process.
//!   Every request starts its own `criu swrk` unless it runs in a
//!   [`Session`], which keeps one across requests as CRIU allows.
//! - CRIU is always started with `--no-default-config`, so configuration
//!   files on the host cannot change what an RPC option means.
//! - Answers are sized before they are read and ancillary data is always
//!   taken; descriptors are `OwnedFd`/`BorrowedFd`, never bare integers.
//! - CRIU never outlives its caller: a parent-death signal, and `Drop`
//!   kills and reaps it.
//! - Errors are typed ([`CallError`], [`CriuFailure`], [`TransportError`]) and
//!   keep CRIU's errno and message.

mod binary;
mod client;
mod error;
mod features;
mod launcher;
mod probe;
mod transport;
mod version;

pub use binary::{CriuBinary, CriuSource, LocateError, CRIU_ENV, DEFAULT_PREFIX, PREFIX_ENV};
pub use client::{Criu, FeatureCheckError, Session, VersionError};
pub use error::{CallError, CriuFailure, TransportError};
pub use features::Features;
pub use launcher::{ExecLauncher, LaunchSpec, Launcher, PassFd};
pub use probe::{feature, ProbeError, ProbeResult};
pub use version::{CriuVersion, MINIMUM as MINIMUM_VERSION};

/// The generated protocol types, for callers that need a raw field.
pub use criu_proto as proto;
