//! Errors shared by every request.
//!
//! Message rule (the whole workspace keeps it): lower case, no trailing
//! period, and never the text of the source error, which the binary prints
//! once as a chain (`error: outer: inner: root cause`). A message that knows
//! the fix says it after a semicolon.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use criu_proto::rpc::CriuReqType;

pub use crate::failure::KnownFailure;

/// Why a request never got a final answer from CRIU.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket pair or the output buffer could not be created.
    #[error("cannot set up the RPC socket")]
    Setup(#[source] std::io::Error),
    /// The executable could not be started.
    #[error("cannot start CRIU at {program}; pass --criu PATH to a CRIU 4.x executable or run scripts/setup.sh")]
    Spawn {
        /// The executable that was tried.
        program: PathBuf,
        /// What exec said.
        #[source]
        source: std::io::Error,
    },
    /// Writing the request failed.
    #[error("cannot send the {request} request to CRIU")]
    Send {
        /// The request being sent.
        request: &'static str,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// Reading from the socket failed.
    #[error("cannot receive CRIU's answer")]
    Receive(#[source] std::io::Error),
    /// The answer was not a valid `criu_resp`.
    #[error("CRIU's answer is not a valid message")]
    Decode(#[source] prost::DecodeError),
    /// A message or its ancillary data did not fit, which CRIU never causes.
    #[error("CRIU's answer was truncated ({what})")]
    Truncated {
        /// Which part was cut.
        what: &'static str,
    },
    /// CRIU exited (or crashed) before sending the final answer.
    #[error("CRIU {program} {} before answering{}{}", exit_phrase(.status), output_suffix(.output), remedy_suffix(exited_failure(.status, .output)))]
    Exited {
        /// The executable.
        program: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// The end of what it printed on stdout and stderr.
        output: String,
    },
    /// The call was cancelled; CRIU was killed.
    #[error("the CRIU call was cancelled and CRIU was stopped")]
    Cancelled,
    /// The call's deadline passed; CRIU was killed.
    #[error("CRIU did not answer within {:.1} s and was stopped", timeout.as_secs_f64())]
    TimedOut {
        /// The deadline that passed.
        timeout: Duration,
    },
}

/// "exited with status 1", "was killed by signal 9".
pub(crate) fn exit_phrase(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

impl TransportError {
    /// The recognised failure: CRIU refused to run without privilege, or
    /// crashed.
    pub fn known_failure(&self) -> Option<KnownFailure> {
        match self {
            Self::Exited { status, output, .. } => exited_failure(status, output),
            _ => None,
        }
    }
}

fn exited_failure(status: &ExitStatus, output: &str) -> Option<KnownFailure> {
    use std::os::unix::process::ExitStatusExt;
    crate::failure::classify_output(output).or_else(|| {
        // SIGKILL comes from us (a timeout, a cancel) or the OOM killer, not
        // from a crash.
        status
            .signal()
            .filter(|&s| s != libc::SIGKILL)
            .map(|_| KnownFailure::CriuCrashed)
    })
}

fn remedy_suffix(known: Option<KnownFailure>) -> String {
    known.map_or_else(String::new, |k| format!("; {}", k.remedy()))
}

fn output_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(" (it printed: {output})")
    }
}

/// A final answer with `success = false`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct CriuFailure {
    /// The request that failed.
    pub request: CriuReqType,
    /// CRIU's errno for the failure, when it sent one.
    pub errno: Option<i32>,
    /// The first error CRIU logged, when it sent one (forked requests such as
    /// PRE_DUMP never do before CRIU 4.2).
    pub errmsg: Option<String>,
    /// CRIU's log file for this request, when one was written.
    pub log_file: Option<PathBuf>,
    /// The first `Error (file:line)` lines of that log.
    pub log_errors: Vec<String>,
    /// A failure crabmigrate recognises, with its remedy.
    pub known: Option<KnownFailure>,
    /// The first error line of the log (or CRIU's message) that is not a
    /// mere consequence of an earlier failure: the cause in CRIU's words.
    pub first_error: Option<String>,
}

impl CriuFailure {
    fn describe(&self) -> String {
        let mut text = format!("CRIU {} failed", self.request.as_str_name());
        // CRIU's own words for the cause; when it logged none (only
        // consequences), the recognised cause; else whatever it said.
        let first = self
            .first_error
            .as_deref()
            .or_else(|| self.known.map(KnownFailure::cause))
            .or(self.errmsg.as_deref())
            .or_else(|| self.log_errors.first().map(String::as_str));
        if let Some(message) = first {
            text.push_str(": ");
            text.push_str(message.trim());
        }
        if let Some(errno) = self.errno {
            text.push_str(&format!(" (errno {errno})"));
        }
        if let Some(known) = self.known {
            text.push_str("; ");
            text.push_str(known.remedy());
        }
        if let Some(log) = &self.log_file {
            text.push_str(&format!("; log: {}", log.display()));
        }
        text
    }
}

impl CallError {
    /// The recognised failure, if CRIU's answer, log or output matched one.
    pub fn known_failure(&self) -> Option<KnownFailure> {
        match self {
            Self::Failed(f) => f.known,
            Self::Transport(t) => t.known_failure(),
            _ => None,
        }
    }
}

/// Why a request failed: no answer, or CRIU's answer said it failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The exchange with CRIU broke down.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// CRIU answered that the request failed.
    #[error(transparent)]
    Failed(#[from] Box<CriuFailure>),
    /// CRIU answered with another message type than the request's.
    #[error("CRIU answered a {request} request with {answer}")]
    UnexpectedAnswer {
        /// The request.
        request: &'static str,
        /// The answer's type.
        answer: &'static str,
    },
    /// The answer lacks a field this request always gets.
    #[error("CRIU's {request} answer lacks its {field} field")]
    MissingField {
        /// The request.
        request: &'static str,
        /// The missing field.
        field: &'static str,
    },
}
