//! RESTORE: recreate a process tree from images.

use std::path::PathBuf;

use criu_proto::rpc::CriuReqType;

use crate::client::{Criu, RequestError};
use crate::error::CallError;
use crate::notify::Notify;
use crate::options::RestoreRequest;
use crate::stats::{read_restore_stats, RestoreStats};

/// A finished restore.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// Host pid of the restored root task. With `rst_sibling` it is a child
    /// of the caller, who must reap it.
    pub pid: i32,
    /// CRIU's statistics (`stats-restore` in the work directory).
    pub stats: Option<RestoreStats>,
    /// CRIU's log of the restore.
    pub log_file: Option<PathBuf>,
    /// The work directory.
    pub work_dir: Option<PathBuf>,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore from the images")]
pub struct RestoreError {
    /// What went wrong.
    #[source]
    pub source: RequestError,
}

impl Criu {
    /// Restores the tree in `request.images_dir`. With a `notify` handler,
    /// CRIU reports each step (`post-restore` carries the new pid).
    pub fn restore(
        &self,
        request: &RestoreRequest<'_>,
        notify: Option<&mut dyn Notify>,
    ) -> Result<RestoreOutcome, RestoreError> {
        let wrap = |source| RestoreError { source };
        let answer = self
            .one_shot(CriuReqType::Restore, request, notify)
            .map_err(wrap)?;
        let pid = answer
            .resp
            .restore
            .as_ref()
            .map(|r| r.pid)
            .filter(|&pid| pid > 0)
            .ok_or_else(|| {
                wrap(RequestError::Call(CallError::MissingField {
                    request: "RESTORE",
                    field: "restore.pid",
                }))
            })?;
        let stats = answer
            .work_dir
            .as_deref()
            .and_then(|dir| read_restore_stats(dir).ok().flatten());
        Ok(RestoreOutcome {
            pid,
            stats,
            log_file: answer.log_file,
            work_dir: answer.work_dir,
        })
    }
}
