//! The client: one [`Criu`] per CRIU executable, and [`Session`]s that keep
//! one `criu swrk` across several requests.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuReq, CriuReqType, CriuResp};

use crate::binary::CriuBinary;
use crate::error::{CallError, CriuFailure, TransportError};
use crate::features::Features;
use crate::launcher::{ExecLauncher, Launcher, PassFd};
use crate::transport::{Incoming, Swrk};
use crate::version::CriuVersion;

/// A CRIU executable and how to start it. Cheap to clone; holds no process.
#[derive(Debug, Clone)]
pub struct Criu {
    binary: CriuBinary,
    launcher: Arc<dyn Launcher>,
    timeout: Option<Duration>,
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

impl Criu {
    /// A client for `binary`, started directly, with no deadline.
    pub fn new(binary: CriuBinary) -> Self {
        Self {
            binary,
            launcher: Arc::new(ExecLauncher),
            timeout: None,
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
        })
    }

    /// CRIU's version, through the VERSION request. Cached per executable
    /// (path, inode and modification time), so repeated calls are free.
    pub fn version(&self) -> Result<CriuVersion, VersionError> {
        let key = cache_key(self.binary.path());
        if let Some(version) = key
            .as_ref()
            .and_then(|k| version_cache().lock().ok()?.get(k).cloned())
        {
            return Ok(version);
        }
        let mut session = self.session().map_err(CallError::from)?;
        let version = session.request_version(false)?;
        session.finish();
        if let (Some(key), Ok(mut cache)) = (key, version_cache().lock()) {
            cache.insert(key, version.clone());
        }
        Ok(version)
    }

    /// Asks CRIU which of `wanted` the kernel and CRIU support. The answer is
    /// CRIU's, never the request echoed back.
    pub fn feature_check(&self, wanted: Features) -> Result<Features, FeatureCheckError> {
        let mut session = self.session().map_err(CallError::from)?;
        let features = session.feature_check(wanted)?;
        Ok(features)
    }
}

/// One `criu swrk` process for a sequence of requests.
///
/// CRIU keeps the connection open after VERSION, FEATURE_CHECK, CPUINFO_*
/// and page-server requests; any other request ends it. Dropping a session
/// kills and reaps CRIU.
#[derive(Debug)]
pub struct Session {
    swrk: Swrk,
    timeout: Option<Duration>,
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
        Ok(CriuVersion::from_proto(version))
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

    /// Waits for CRIU to exit after a final request.
    pub(crate) fn finish(&mut self) {
        self.swrk.finish();
    }

    /// Sends `req` and returns CRIU's final answer, acknowledging any
    /// notification on the way. A `success = false` answer is an error.
    pub(crate) fn call(&mut self, req: CriuReq) -> Result<CriuResp, CallError> {
        let request = req.r#type().as_str_name();
        let deadline = self.timeout.map(|t| (Instant::now() + t, t));
        self.swrk.send(request, &req)?;
        loop {
            let Incoming { resp, fds } = self.swrk.recv(deadline)?;
            if resp.r#type() == CriuReqType::Notify {
                let script = resp.notify.as_ref().and_then(|n| n.script.clone());
                tracing::debug!(
                    script = script.as_deref().unwrap_or(""),
                    fds = fds.len(),
                    "criu notification"
                );
                drop(fds);
                let ack = CriuReq {
                    r#type: CriuReqType::Notify as i32,
                    notify_success: Some(true),
                    ..Default::default()
                };
                self.swrk.send("NOTIFY", &ack)?;
                continue;
            }
            if !resp.success {
                return Err(CriuFailure {
                    request: req.r#type(),
                    errno: resp.cr_errno.filter(|&e| e != 0),
                    errmsg: resp.cr_errmsg.filter(|m| !m.trim().is_empty()),
                    log_file: None,
                    log_errors: Vec::new(),
                }
                .into());
            }
            if resp.r#type() != req.r#type() {
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

fn cache_key(path: &std::path::Path) -> Option<CacheKey> {
    let meta = std::fs::metadata(path).ok()?;
    Some((
        path.to_path_buf(),
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
    ))
}
