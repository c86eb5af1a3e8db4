//! Notifications ("action scripts") CRIU sends during a request.
//!
//! CRIU stops at each one until it is answered; a handler that returns an
//! error makes the client answer "failed", and CRIU aborts (for post-dump:
//! the tree is resumed and the dump fails). The handler's error reaches the
//! caller as the cause. Passing a handler to a request turns CRIU's
//! notifications on.
//!
//! Order seen with CRIU 4.1.1:
//!
//! ```text
//! dump:     pre-dump [network-lock] query-ext-files post-dump [network-unlock] [status-ready]
//! restore:  pre-restore [setup-namespaces(pid) post-setup-namespaces] post-restore(pid)
//!           [network-unlock] pre-resume post-resume   (+ orphan-pts-master(fd) when asked)
//! ```

use std::os::fd::OwnedFd;

use crate::options::External;

/// What a handler returns on failure.
pub type NotifyError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// What a handler returns.
pub type NotifyResult = Result<(), NotifyError>;

/// One notification, as CRIU sent it.
#[derive(Debug)]
pub enum Notification {
    /// `pre-stream` (not reachable over RPC in CRIU 4.1).
    PreStream,
    /// `pre-dump`: before any task is frozen.
    PreDump,
    /// `post-dump`: every image written, the tree still frozen. The moment
    /// to move the images; answering lets CRIU kill (or resume) the tree.
    PostDump,
    /// `network-lock`: the tree is frozen and has its own network namespace.
    NetworkLock,
    /// `network-unlock`: after a failed or leave-running dump, or a restore.
    NetworkUnlock,
    /// `query-ext-files`: the handler may name more external resources.
    QueryExtFiles,
    /// `status-ready`: a page server or lazy-pages server is listening.
    StatusReady,
    /// `pre-restore`: before anything is created.
    PreRestore,
    /// `setup-namespaces`: the root task exists with new namespaces.
    SetupNamespaces {
        /// Host pid of the restored root task.
        pid: i32,
    },
    /// `post-setup-namespaces`.
    PostSetupNamespaces,
    /// `post-restore`: everything restored, tasks not yet running.
    PostRestore {
        /// Host pid of the restored root task.
        pid: i32,
    },
    /// `pre-resume`: just before the tasks run.
    PreResume,
    /// `post-resume`: the tasks run.
    PostResume,
    /// `orphan-pts-master`: the master side of an inherited pty.
    OrphanPtsMaster {
        /// The pty master CRIU handed over (absent if CRIU sent none).
        master: Option<OwnedFd>,
    },
    /// A name this client does not know; answered "ok".
    Unknown {
        /// The script name.
        script: String,
    },
}

impl Notification {
    /// Builds the notification from CRIU's script name, pid and descriptors.
    pub(crate) fn from_script(script: &str, pid: Option<i32>, mut fds: Vec<OwnedFd>) -> Self {
        let pid = pid.unwrap_or(0);
        match script {
            "pre-stream" => Self::PreStream,
            "pre-dump" => Self::PreDump,
            "post-dump" => Self::PostDump,
            "network-lock" => Self::NetworkLock,
            "network-unlock" => Self::NetworkUnlock,
            "query-ext-files" => Self::QueryExtFiles,
            "status-ready" => Self::StatusReady,
            "pre-restore" => Self::PreRestore,
            "setup-namespaces" => Self::SetupNamespaces { pid },
            "post-setup-namespaces" => Self::PostSetupNamespaces,
            "post-restore" => Self::PostRestore { pid },
            "pre-resume" => Self::PreResume,
            "post-resume" => Self::PostResume,
            "orphan-pts-master" => Self::OrphanPtsMaster {
                master: (!fds.is_empty()).then(|| fds.remove(0)),
            },
            other => Self::Unknown {
                script: other.to_owned(),
            },
        }
    }

    /// CRIU's name for it.
    pub fn script(&self) -> &str {
        match self {
            Self::PreStream => "pre-stream",
            Self::PreDump => "pre-dump",
            Self::PostDump => "post-dump",
            Self::NetworkLock => "network-lock",
            Self::NetworkUnlock => "network-unlock",
            Self::QueryExtFiles => "query-ext-files",
            Self::StatusReady => "status-ready",
            Self::PreRestore => "pre-restore",
            Self::SetupNamespaces { .. } => "setup-namespaces",
            Self::PostSetupNamespaces => "post-setup-namespaces",
            Self::PostRestore { .. } => "post-restore",
            Self::PreResume => "pre-resume",
            Self::PostResume => "post-resume",
            Self::OrphanPtsMaster { .. } => "orphan-pts-master",
            Self::Unknown { script } => script,
        }
    }
}

/// Receives CRIU's notifications. Every method has a default that answers
/// "ok"; implement the ones you need. Handlers keep their own state (`&mut
/// self`).
pub trait Notify {
    /// `pre-dump`.
    fn pre_dump(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `post-dump`: the tree is frozen and the images are complete.
    fn post_dump(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `network-lock`.
    fn network_lock(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `network-unlock`.
    fn network_unlock(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `query-ext-files`: return more external resources for CRIU to add.
    fn query_ext_files(&mut self) -> Result<Vec<External>, NotifyError> {
        Ok(Vec::new())
    }
    /// `status-ready`.
    fn status_ready(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `pre-restore`.
    fn pre_restore(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `setup-namespaces`, with the restored root's host pid.
    fn setup_namespaces(&mut self, _pid: i32) -> NotifyResult {
        Ok(())
    }
    /// `post-setup-namespaces`.
    fn post_setup_namespaces(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `post-restore`, with the restored root's host pid.
    fn post_restore(&mut self, _pid: i32) -> NotifyResult {
        Ok(())
    }
    /// `pre-resume`.
    fn pre_resume(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `post-resume`.
    fn post_resume(&mut self) -> NotifyResult {
        Ok(())
    }
    /// `orphan-pts-master`, with the pty master CRIU sent.
    fn orphan_pts_master(&mut self, _master: OwnedFd) -> NotifyResult {
        Ok(())
    }
    /// `pre-stream`.
    fn pre_stream(&mut self) -> NotifyResult {
        Ok(())
    }
    /// Any other script name; logged and answered "ok" by default.
    fn unknown(&mut self, script: &str) -> NotifyResult {
        tracing::info!(script, "unknown CRIU notification");
        Ok(())
    }

    /// Dispatches one notification to its method. Returns the extra
    /// externals for `query-ext-files`.
    fn dispatch(&mut self, notification: Notification) -> Result<Vec<External>, NotifyError> {
        match notification {
            Notification::PreStream => self.pre_stream(),
            Notification::PreDump => self.pre_dump(),
            Notification::PostDump => self.post_dump(),
            Notification::NetworkLock => self.network_lock(),
            Notification::NetworkUnlock => self.network_unlock(),
            Notification::QueryExtFiles => return self.query_ext_files(),
            Notification::StatusReady => self.status_ready(),
            Notification::PreRestore => self.pre_restore(),
            Notification::SetupNamespaces { pid } => self.setup_namespaces(pid),
            Notification::PostSetupNamespaces => self.post_setup_namespaces(),
            Notification::PostRestore { pid } => self.post_restore(pid),
            Notification::PreResume => self.pre_resume(),
            Notification::PostResume => self.post_resume(),
            Notification::OrphanPtsMaster { master: Some(fd) } => self.orphan_pts_master(fd),
            Notification::OrphanPtsMaster { master: None } => {
                Err("CRIU sent orphan-pts-master without a descriptor".into())
            }
            Notification::Unknown { script } => self.unknown(&script),
        }
        .map(|()| Vec::new())
    }
}

/// Records the order of notifications and the pids they carried, and
/// answers "ok" to all. Useful on its own and as a test aid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorder {
    /// Script names in the order CRIU sent them.
    pub scripts: Vec<String>,
    /// The pid of the last `post-restore`.
    pub restored_pid: Option<i32>,
}

impl Notify for Recorder {
    fn dispatch(&mut self, notification: Notification) -> Result<Vec<External>, NotifyError> {
        self.scripts.push(notification.script().to_owned());
        if let Notification::PostRestore { pid } = notification {
            self.restored_pid = Some(pid);
        }
        Ok(Vec::new())
    }
}

/// No handler: CRIU sends no notifications.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Silent;

impl Notify for Silent {}
