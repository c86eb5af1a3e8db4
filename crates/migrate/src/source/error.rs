//! Why a migration failed, typed from CRIU's failure to the report.

use std::time::Duration;

use crate::chunks::ChunkError;
use crate::hold::CommitRefused;
use crate::port::PortError;
use crate::protocol::{ProtocolError, Step};
use crate::transfer::TransferError;

/// What the destination said when it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The step it refused.
    pub step: Step,
    /// Its reason (with the remedy it knows).
    pub reason: String,
    /// A failure of its CRIU crabmigrate recognised (kebab-case name).
    pub known_failure: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The source sent Commit and never learned the outcome: the workload may
/// run on the destination, so it is kept stopped here. Both ways out are
/// printed; `crabmigrate recover` does them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    /// The migration's session (its record in the work directory).
    pub session: String,
    /// The destination.
    pub to: String,
    /// What went wrong after the commit.
    pub cause: String,
    /// How to find out whether the destination runs it.
    pub check: String,
    /// The command that resumes the stopped source.
    pub resume: String,
    /// The command that discards it.
    pub discard: String,
}

impl std::fmt::Display for InDoubt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the migration is in doubt: {} after the commit, so the workload may run on {}; it is kept stopped here, neither resumed nor killed; {}, then if it runs there discard it here with `{}`, else resume it here with `{}`",
            self.cause, self.to, self.check, self.discard, self.resume
        )
    }
}

/// Why a migration failed. Unless it says otherwise (`InDoubt`), the
/// workload keeps running on the source.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the agent at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Chunks(#[from] ChunkError),
    #[error("the destination refused {step}: {0}", step = .0.step.describe())]
    Refused(Refusal),
    #[error("the destination gave up: {0}")]
    Aborted(String),
    #[error("the destination sent {got} where {expected} was due")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("the destination did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("{0}")]
    Unavailable(Unavailable),
    #[error("cannot {0}")]
    Local(&'static str, #[source] std::io::Error),
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    #[error("the post-copy page transfer broke after the destination started")]
    PagesBroken(#[source] PortError),
    #[error(transparent)]
    Hold(#[from] CommitRefused),
    /// A failure the source saw as a broken connection, with what the
    /// destination said about it.
    #[error("{0}")]
    Peer(Refusal, #[source] Box<MigrateError>),
    #[error("the migration was rolled back and the workload keeps running on the source")]
    RolledBack(#[source] Box<MigrateError>),
    #[error("{0}")]
    InDoubt(Box<InDoubt>),
}

/// A strategy that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Post-copy asked for, but a host cannot.
    PostCopy { why: String },
    /// The destination does not offer the named health check.
    HealthCheck { name: String, offered: Vec<String> },
    /// The workload needs more image files than the destination accepts.
    TooManyFiles { estimate: u32, limit: u32 },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PostCopy { why } => write!(
                f,
                "post-copy is not possible: {why}; use --strategy stop-copy or pre-copy"
            ),
            Self::HealthCheck { name, offered } if offered.is_empty() => write!(
                f,
                "the destination offers no health check, so {name:?} cannot run; start its agent with --health-check {name}=COMMAND"
            ),
            Self::HealthCheck { name, offered } => write!(
                f,
                "the destination offers no health check named {name:?} (it offers {}); start its agent with --health-check {name}=COMMAND",
                offered.join(", ")
            ),
            Self::TooManyFiles { estimate, limit } => write!(
                f,
                "the workload would need about {estimate} image files, more than the destination's limit of {limit}"
            ),
        }
    }
}

impl MigrateError {
    /// Whether the workload is in doubt (kept stopped on the source).
    pub fn in_doubt(&self) -> Option<&InDoubt> {
        match self {
            Self::InDoubt(d) => Some(d),
            _ => None,
        }
    }

    /// A recognised CRIU failure behind this error, on either host
    /// (kebab-case, as `criu_rpc::KnownFailure` serialises).
    pub fn known_failure(&self) -> Option<String> {
        match self {
            Self::Port(p) => p.known.and_then(|k| {
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }),
            Self::Refused(r) | Self::Peer(r, _) => r.known_failure.clone(),
            Self::RolledBack(inner) => inner.known_failure(),
            _ => None,
        }
    }
}
