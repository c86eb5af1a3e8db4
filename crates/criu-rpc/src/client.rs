//! The client: one [`Criu`] per CRIU executable, and [`Session`]s that keep
//! one `criu swrk` across several requests.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuOpts, CriuReq, CriuReqType, CriuResp};

use crate::binary::CriuBinary;
use crate::cancel::CancelToken;
use crate::error::{CallError, CriuFailure, TransportError};
use crate::failure;
use crate::features::Features;
use crate::launcher::{ExecLauncher, Launcher, PassFd};
use crate::notify::{Notification, Notify, NotifyError, Silent};
use crate::options::{FdPlan, Gate, IntoOpts, OptionError};
use crate::transport::{Incoming, Swrk};
use crate::version::{CriuVersion, MINIMUM};

/// A CRIU executable and how to start it. Cheap to clone; holds no process.
#[derive(Debug, Clone)]
pub struct Criu {
    binary: CriuBinary,
    launcher: Arc<dyn Launcher>,
    timeout: Option<Duration>,
    cancel: Option<CancelToken>,
}

/// Why the VERSION request failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The request failed.
    #[error("cannot ask CRIU for its version")]
    Call(#[from] CallError),
}

/// Why the FEATURE_CHECK request failed.
#[derive(Debug, thiserror::Error)]
pub enum FeatureCheckError {
    /// The request failed.
    #[error("CRIU's feature check failed")]
    Call(#[from] CallError),
}

/// Why a request with options failed. Each operation wraps it in its own
/// error type, which names the operation.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The options cannot be expressed; CRIU was not started.
    #[error("invalid options")]
    Options(#[from] OptionError),
    /// CRIU is older than crabmigrate supports.
    #[error("CRIU {have} is too old; crabmigrate needs {MINIMUM} or newer (run scripts/setup.sh to install 4.2)")]
    Unsupported {
        /// The running CRIU.
        have: CriuVersion,
    },
    /// An option needs a newer CRIU.
    #[error("{} needs CRIU {} or newer, but this CRIU is {}", .0.option, .0.since, .0.have)]
    TooOld(Box<TooOld>),
    /// Asking CRIU for its version failed.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The request failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A notification handler failed, so CRIU aborted.
    #[error("the {script} handler failed, so CRIU aborted")]
    Handler {
        /// The notification.
        script: String,
        /// The handler's error.
        #[source]
        source: NotifyError,
    },
}

/// An option the running CRIU is too old for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOld {
    /// The option.
    pub option: &'static str,
    /// The first CRIU that has it.
    pub since: CriuVersion,
    /// The running CRIU.
    pub have: CriuVersion,
}

impl RequestError {
    /// The recognised failure, if CRIU's answer or log matched one.
    pub fn known_failure(&self) -> Option<failure::KnownFailure> {
        match self {
            Self::Call(call) => call.known_failure(),
            Self::Version(VersionError::Call(call)) => call.known_failure(),
            _ => None,
        }
    }
}

impl Criu {
    /// A client for `binary`, started directly, with no deadline.
    pub fn new(binary: CriuBinary) -> Self {
        Self {
            binary,
            launcher: Arc::new(ExecLauncher),
            timeout: None,
            cancel: None,
        }
    }

    /// Starts CRIU through `launcher` instead.
    pub fn with_launcher(mut self, launcher: Arc<dyn Launcher>) -> Self {
        self.launcher = launcher;
        self
    }

    /// Stops any single call that takes longer than `timeout` (CRIU is
    /// killed). `None` waits forever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Stops calls when `token` is cancelled (CRIU is killed and reaped).
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The executable.
    pub fn binary(&self) -> &CriuBinary {
        &self.binary
    }

    pub(crate) fn launcher(&self) -> &dyn Launcher {
        self.launcher.as_ref()
    }

    /// Starts a `criu swrk` for several requests (see [`Session`]).
    pub fn session(&self) -> Result<Session, TransportError> {
        self.start_session(Vec::new())
    }

    pub(crate) fn start_session(&self, fds: Vec<PassFd<'_>>) -> Result<Session, TransportError> {
        // Without this, /etc/criu/default.conf and friends would silently
        // change what our RPC options mean.
        let global: [OsString; 1] = ["--no-default-config".into()];
        let swrk = Swrk::start(self.launcher.as_ref(), self.binary.path(), &global, fds)?;
        Ok(Session {
            swrk,
            timeout: self.timeout,
            cancel: self.cancel.clone(),
            binary: self.binary.path().to_path_buf(),
        })
    }

    /// CRIU's version, through the VERSION request. Cached per executable
    /// (path, inode and modification time), so repeated calls are free.
    pub fn version(&self) -> Result<CriuVersion, VersionError> {
        if let Some(version) = cached_version(self.binary.path()) {
            return Ok(version);
        }
        let mut session = self.session().map_err(CallError::from)?;
        let version = session.request_version(false)?;
        session.swrk.finish();
        Ok(version)
    }

    /// Asks CRIU which of `wanted` the kernel and CRIU support. The answer is
    /// CRIU's, never the request echoed back.
    pub fn feature_check(&self, wanted: Features) -> Result<Features, FeatureCheckError> {
        let mut session = self.session().map_err(CallError::from)?;
        let features = session.feature_check(wanted)?;
        Ok(features)
    }

    /// Runs one request with options in its own `criu swrk`: builds the
    /// options, starts CRIU with the descriptors it must inherit, checks the
    /// version gates, and exchanges the request.
    pub(crate) fn one_shot<'a, R: IntoOpts<'a>>(
        &self,
        kind: CriuReqType,
        request: &R,
        notify: Option<&mut dyn Notify>,
    ) -> Result<Answer, RequestError> {
        let mut plan = FdPlan::default();
        let opts = request.to_opts(&mut plan)?;
        let mut session = self.start_session(plan.passed).map_err(CallError::from)?;
        session.check_gates(&request.gates())?;
        let answer = session.exchange(kind, opts, request, notify, false)?;
        session.swrk.finish();
        Ok(answer)
    }
}

/// CRIU's final answer with where its log and statistics are.
#[derive(Debug)]
pub(crate) struct Answer {
    pub resp: CriuResp,
    /// The work directory (where the log and `stats-*` are), if known.
    pub work_dir: Option<PathBuf>,
    /// The log file, if CRIU wrote one.
    pub log_file: Option<PathBuf>,
}

/// One `criu swrk` process for a sequence of requests.
///
/// CRIU keeps the connection open after VERSION, FEATURE_CHECK, CPUINFO_*
/// and page-server requests, and between PRE_DUMPs; any other request ends
/// it. Dropping a session kills and reaps CRIU.
#[derive(Debug)]
pub struct Session {
    pub(crate) swrk: Swrk,
    timeout: Option<Duration>,
    cancel: Option<CancelToken>,
    binary: PathBuf,
}

impl Session {
    /// CRIU's pid (for diagnostics).
    pub fn pid(&self) -> Option<u32> {
        self.swrk.pid()
    }

    /// VERSION, keeping the session open.
    pub fn version(&mut self) -> Result<CriuVersion, VersionError> {
        self.request_version(true)
    }

    fn request_version(&mut self, keep_open: bool) -> Result<CriuVersion, VersionError> {
        let req = CriuReq {
            r#type: CriuReqType::Version as i32,
            keep_open: Some(keep_open),
            ..Default::default()
        };
        let resp = self.call(req)?;
        let version = resp.version.as_ref().ok_or(CallError::MissingField {
            request: "VERSION",
            field: "version",
        })?;
        let version = CriuVersion::from_proto(version);
        remember_version(&self.binary, &version);
        Ok(version)
    }

    /// FEATURE_CHECK, keeping the session open.
    pub fn feature_check(&mut self, wanted: Features) -> Result<Features, FeatureCheckError> {
        let req = CriuReq {
            r#type: CriuReqType::FeatureCheck as i32,
            keep_open: Some(true),
            // CRIU's child crashes when `features` is absent.
            features: Some(wanted.to_proto()),
            ..Default::default()
        };
        let resp = self.call(req)?;
        let answer = resp.features.as_ref().ok_or(CallError::MissingField {
            request: "FEATURE_CHECK",
            field: "features",
        })?;
        Ok(Features::from_proto(answer))
    }

    /// Makes sure this CRIU is supported and has every option `gates` needs.
    /// The version comes from the cache, or from a VERSION request on this
    /// session (which CRIU keeps open, so it costs one round trip).
    pub(crate) fn check_gates(&mut self, gates: &[Gate]) -> Result<(), RequestError> {
        let have = match cached_version(&self.binary) {
            Some(v) => v,
            None => self.version()?,
        };
        if !have.is_supported() {
            return Err(RequestError::Unsupported { have });
        }
        match gates
            .iter()
            .find(|g| !have.at_least(g.since.major, g.since.minor, g.since.sublevel))
        {
            Some(g) => Err(RequestError::TooOld(Box::new(TooOld {
                option: g.option,
                since: g.since.clone(),
                have,
            }))),
            None => Ok(()),
        }
    }

    /// Sends a request with options, answering notifications through
    /// `notify` (which turns them on), and reads CRIU's log on failure.
    pub(crate) fn exchange<'a, R: IntoOpts<'a>>(
        &mut self,
        kind: CriuReqType,
        mut opts: CriuOpts,
        request: &R,
        notify: Option<&mut dyn Notify>,
        keep_open: bool,
    ) -> Result<Answer, RequestError> {
        let work_dir = failure::fd_path(request.common().work_dir.unwrap_or(request.images_dir()));
        let log_file = opts
            .log_file
            .as_ref()
            .and_then(|name| work_dir.as_ref().map(|d| d.join(name)));
        // A dump that sends pages to a page server (not a lazy dump, whose
        // `ps` names the port it serves on).
        let page_server = opts.ps.is_some() && opts.lazy_pages != Some(true);
        let mut silent = Silent;
        let handler: &mut dyn Notify = match notify {
            Some(handler) => {
                opts.notify_scripts = Some(true);
                handler
            }
            None => &mut silent,
        };
        let req = CriuReq {
            r#type: kind as i32,
            opts: Some(opts),
            keep_open: keep_open.then_some(true),
            ..Default::default()
        };
        match self.call_notifying(req, handler) {
            (Ok(resp), _) => Ok(Answer {
                resp,
                work_dir,
                log_file,
            }),
            // CRIU's own message after a refused notification is unrelated;
            // the handler's error is the cause.
            (Err(CallError::Failed(_)), Some((script, source))) => {
                Err(RequestError::Handler { script, source })
            }
            (Err(CallError::Failed(mut failure)), None) => {
                let mut lines = failure::LogLines::default();
                if let Some(log) = log_file.filter(|l| l.exists()) {
                    lines = failure::LogLines::read(&log);
                    failure.log_errors = lines.errors.clone();
                    failure.log_file = Some(log);
                }
                let context = failure::FailureContext {
                    request: kind,
                    errno: failure.errno,
                    page_server,
                };
                let diagnosis = failure::diagnose(&context, failure.errmsg.as_deref(), &lines);
                failure.known = diagnosis.known;
                failure.first_error = diagnosis.first_error;
                Err(CallError::Failed(failure).into())
            }
            (Err(other), _) => Err(other.into()),
        }
    }

    /// Sends `req` and returns CRIU's final answer. Notifications are
    /// acknowledged "ok" (CRIU only sends them when asked to).
    pub(crate) fn call(&mut self, req: CriuReq) -> Result<CriuResp, CallError> {
        self.call_notifying(req, &mut Silent).0
    }

    /// The request loop: send, then read until the final answer, passing each
    /// NOTIFY to `handler` and acknowledging it. Also returns the first
    /// handler error, which explains a failure better than CRIU can.
    fn call_notifying(
        &mut self,
        req: CriuReq,
        handler: &mut dyn Notify,
    ) -> (Result<CriuResp, CallError>, Option<(String, NotifyError)>) {
        let mut handler_error = None;
        let result = self.request_loop(&req, handler, &mut handler_error);
        (result, handler_error)
    }

    fn request_loop(
        &mut self,
        req: &CriuReq,
        handler: &mut dyn Notify,
        handler_error: &mut Option<(String, NotifyError)>,
    ) -> Result<CriuResp, CallError> {
        let request = req.r#type().as_str_name();
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        let cancel = self.cancel.clone();
        self.swrk.send(request, req)?;
        loop {
            let Incoming { resp, fds } = self.swrk.recv(deadline, cancel.as_ref())?;
            if resp.r#type() == CriuReqType::Notify {
                let notify = resp.notify.unwrap_or_default();
                let script = notify.script.unwrap_or_default();
                tracing::debug!(%script, pid = notify.pid, fds = fds.len(), "criu notification");
                let notification = Notification::from_script(&script, notify.pid, fds);
                let mut ack = CriuReq {
                    r#type: CriuReqType::Notify as i32,
                    notify_success: Some(true),
                    ..Default::default()
                };
                match handler.dispatch(notification) {
                    Ok(extra) if !extra.is_empty() => {
                        ack.opts = Some(CriuOpts {
                            external: extra.iter().map(|e| e.as_str().to_owned()).collect(),
                            ..Default::default()
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%script, error = %e, "notification handler failed");
                        ack.notify_success = Some(false);
                        handler_error.get_or_insert((script, e));
                    }
                }
                self.swrk.send("NOTIFY", &ack)?;
                continue;
            }
            if !resp.success {
                return Err(CallError::Failed(Box::new(CriuFailure {
                    request: req.r#type(),
                    errno: resp.cr_errno.filter(|&e| e != 0),
                    // CAP_SYS_RESOURCE is missing on many hosts and CRIU then
                    // logs this harmless line first; it explains nothing.
                    errmsg: resp
                        .cr_errmsg
                        .filter(|m| !m.trim().is_empty() && !m.contains("RLIMIT_NOFILE")),
                    log_file: None,
                    log_errors: Vec::new(),
                    known: None,
                    first_error: None,
                })));
            }
            // PAGE_SERVER_CHLD is answered with type PAGE_SERVER.
            let expected = match req.r#type() {
                CriuReqType::PageServerChld => CriuReqType::PageServer,
                other => other,
            };
            if resp.r#type() != expected {
                return Err(CallError::UnexpectedAnswer {
                    request,
                    answer: resp.r#type().as_str_name(),
                });
            }
            return Ok(resp);
        }
    }
}

type CacheKey = (PathBuf, u64, u64, i64, i64);

fn version_cache() -> &'static Mutex<HashMap<CacheKey, CriuVersion>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, CriuVersion>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn cache_key(path: &Path) -> Option<CacheKey> {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        path.to_path_buf(),
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
    ))
}

fn cached_version(path: &Path) -> Option<CriuVersion> {
    let key = cache_key(path)?;
    version_cache().lock().ok()?.get(&key).cloned()
}

fn remember_version(path: &Path, version: &CriuVersion) {
    if let (Some(key), Ok(mut cache)) = (cache_key(path), version_cache().lock()) {
        cache.insert(key, version.clone());
    }
}
