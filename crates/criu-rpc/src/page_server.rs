//! Page servers: PAGE_SERVER / PAGE_SERVER_CHLD and WAIT_PID over RPC, and
//! the `criu lazy-pages` daemon, which CRIU offers only on its command line.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use criu_proto::rpc::{CriuReq, CriuReqType};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::client::{Criu, RequestError, Session};
use crate::dump::session_opts;
use crate::error::{CallError, TransportError};
use crate::launcher::{LaunchSpec, PassFd};
use crate::options::{FdPlan, IntoOpts, PageServerMode, PageServerRequest};

/// A page server that is listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageServerInfo {
    /// The TCP port it listens on (the chosen one if 0 was asked).
    pub port: u16,
    /// Its pid; `None` for daemon mode, where CRIU 4.1 reports 0.
    pub pid: Option<u32>,
}

/// Why a page server could not be started or waited for.
#[derive(Debug, thiserror::Error)]
#[error("cannot run a page server")]
pub struct PageServerError {
    /// What went wrong.
    #[source]
    pub source: RequestError,
}

impl Criu {
    /// Starts a page server in its own session, which is returned so that a
    /// child-mode server can be waited for with [`Session::wait_pid`]
    /// (dropping the session kills a child-mode server). A connected socket
    /// in `request.listen` is passed to CRIU here.
    pub fn page_server(
        &self,
        request: &PageServerRequest<'_>,
    ) -> Result<(Session, PageServerInfo), PageServerError> {
        let wrap = |source| PageServerError { source };
        let mut plan = FdPlan::default();
        let opts = request.to_opts(&mut plan).map_err(|e| wrap(e.into()))?;
        let mut session = self
            .start_session(plan.passed)
            .map_err(|e| wrap(RequestError::Call(e.into())))?;
        session.check_gates(&request.gates()).map_err(wrap)?;
        let info = session.start_page_server(opts, request).map_err(wrap)?;
        Ok((session, info))
    }
}

impl Session {
    /// Starts a page server on this session (it stays open). The listen
    /// target must be an address here: a running session cannot take new
    /// descriptors (use [`Criu::page_server`] for a connected socket).
    pub fn page_server(
        &mut self,
        request: &PageServerRequest<'_>,
    ) -> Result<PageServerInfo, PageServerError> {
        let wrap = |source| PageServerError { source };
        let opts = session_opts(request).map_err(wrap)?;
        self.check_gates(&request.gates()).map_err(wrap)?;
        self.start_page_server(opts, request).map_err(wrap)
    }

    fn start_page_server(
        &mut self,
        opts: criu_proto::rpc::CriuOpts,
        request: &PageServerRequest<'_>,
    ) -> Result<PageServerInfo, RequestError> {
        let kind = match request.mode {
            PageServerMode::Child => CriuReqType::PageServerChld,
            PageServerMode::Daemon => CriuReqType::PageServer,
        };
        let answer = self.exchange(kind, opts, request, None, true)?;
        let ps = answer.resp.ps.ok_or(CallError::MissingField {
            request: kind.as_str_name(),
            field: "ps",
        })?;
        let port = ps
            .port
            .and_then(|p| u16::try_from(p).ok())
            .ok_or(CallError::MissingField {
                request: kind.as_str_name(),
                field: "ps.port",
            })?;
        let pid = ps
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0);
        if let (PageServerMode::Child, Some(pid)) = (request.mode, pid) {
            // A child-mode server dies with the session unless waited for.
            self.swrk.adopt(pid);
        }
        Ok(PageServerInfo { port, pid })
    }

    /// WAIT_PID: waits for a child of this CRIU (a child-mode page server)
    /// and returns how it ended. Ends the session.
    pub fn wait_pid(mut self, pid: u32) -> Result<ExitStatus, CallError> {
        let resp = self.call(CriuReq {
            r#type: CriuReqType::WaitPid as i32,
            pid: Some(pid),
            ..Default::default()
        })?;
        // CRIU has reaped it.
        self.swrk.release(pid);
        let status = resp.status.ok_or(CallError::MissingField {
            request: "WAIT_PID",
            field: "status",
        })?;
        self.swrk.finish();
        Ok(ExitStatus::from_raw(status))
    }
}

/// Where the `criu lazy-pages` daemon fetches pages from and works.
#[derive(Debug, Clone)]
pub struct LazyPagesRequest<'a> {
    /// The images copied from the source (all but the lazy pages).
    pub images_dir: &'a Path,
    /// The work directory; the restore must use the same one, because the
    /// daemon listens on `lazy-pages.socket` there.
    pub work_dir: &'a Path,
    /// The source's lazy page server.
    pub address: &'a str,
    /// Its port.
    pub port: u16,
    /// Log file name in the work directory.
    pub log_file: &'a str,
    /// TLS options for the connection to the page server, as CRIU flags
    /// (`--tls`, `--tls-cacert PATH`, ...).
    pub tls_args: Vec<String>,
}

/// A running `criu lazy-pages` daemon; dropping it kills it.
#[derive(Debug)]
pub struct LazyPagesDaemon {
    child: Option<Child>,
    log_file: PathBuf,
}

/// Why the lazy-pages daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum LazyPagesError {
    /// It could not be started.
    #[error("cannot start criu lazy-pages")]
    Start(#[source] TransportError),
    /// It exited before it was ready.
    #[error("criu lazy-pages {} before it was ready; log: {}", crate::error::exit_phrase(.status), .log_file.display())]
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// Its log.
        log_file: PathBuf,
    },
    /// It did not get ready in time.
    #[error("criu lazy-pages was not ready within {0:?}; log: {1}")]
    NotReady(Duration, String),
}

const LAZY_READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Criu {
    /// Starts `criu lazy-pages` (there is no RPC request for it) and waits
    /// until it listens, so that a lazy restore can follow at once.
    pub fn lazy_pages(
        &self,
        request: &LazyPagesRequest<'_>,
    ) -> Result<LazyPagesDaemon, LazyPagesError> {
        let setup = |e: std::io::Error| LazyPagesError::Start(TransportError::Setup(e));
        let (ready_read, ready_write) = nix::unistd::pipe().map_err(|e| setup(e.into()))?;
        let output =
            memfd_create(c"criu-lazy-pages", MFdFlags::MFD_CLOEXEC).map_err(|e| setup(e.into()))?;
        const STATUS_FD: i32 = 3;
        let mut args: Vec<std::ffi::OsString> = vec![
            "--no-default-config".into(),
            "lazy-pages".into(),
            "--page-server".into(),
            "--address".into(),
            request.address.into(),
            "--port".into(),
            request.port.to_string().into(),
            "-D".into(),
            request.images_dir.into(),
            "-W".into(),
            request.work_dir.into(),
            "-o".into(),
            request.log_file.into(),
            "--status-fd".into(),
            STATUS_FD.to_string().into(),
        ];
        args.extend(request.tls_args.iter().map(Into::into));
        let child = self
            .launcher()
            .launch(LaunchSpec {
                program: self.binary().path(),
                args,
                fds: vec![PassFd {
                    fd: ready_write.as_fd(),
                    target: STATUS_FD,
                }],
                output: output.as_fd(),
            })
            .map_err(|source| {
                LazyPagesError::Start(TransportError::Spawn {
                    program: self.binary().path().to_path_buf(),
                    source,
                })
            })?;
        drop(ready_write);
        let mut daemon = LazyPagesDaemon {
            child: Some(child),
            log_file: request.work_dir.join(request.log_file),
        };
        daemon.wait_ready(ready_read)?;
        Ok(daemon)
    }
}

impl LazyPagesDaemon {
    /// Waits for CRIU's one status byte (or EOF if it died).
    fn wait_ready(&mut self, ready: OwnedFd) -> Result<(), LazyPagesError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let until = Instant::now() + LAZY_READY_TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LazyPagesError::NotReady(
                    LAZY_READY_TIMEOUT,
                    self.log_file.display().to_string(),
                ));
            }
            let ms = left.as_millis().min(1000) as i32;
            let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => break,
                Err(e) => return Err(LazyPagesError::Start(TransportError::Receive(e.into()))),
            }
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(&ready, &mut byte) {
            Ok(1) => Ok(()),
            _ => {
                let status = self.wait().unwrap_or_else(|_| ExitStatus::from_raw(0xff00));
                Err(LazyPagesError::Exited {
                    status,
                    log_file: self.log_file.clone(),
                })
            }
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Waits for the daemon to exit (it does once every page is served).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self.child.take() {
            Some(mut child) => child.wait(),
            None => Err(std::io::Error::other(
                "criu lazy-pages was already waited for",
            )),
        }
    }
}

impl Drop for LazyPagesDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
