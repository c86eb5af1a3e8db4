//! OCI containers: one file per operation, as in youki's libcontainer.
//!
//! - [`create()`] and [`start()`]: a container from a bundle (`create.rs`,
//!   `init.rs`, `rootfs.rs`, `console.rs`, `hooks.rs`)
//! - [`exec()`]: another process in a running container (`exec.rs`)
//! - [`kill()`], [`delete()`], [`pause()`], [`resume()`], [`ps()`] (`lifecycle.rs`)
//! - containers whose state is damaged or missing: [`broken_reason()`] for
//!   `list`, [`delete_broken()`] for `delete --force` (`recover.rs`)
//! - [`checkpoint()`] and [`restore()`] through CRIU (`checkpoint.rs`,
//!   `restore.rs`)
//!
//! Every operation reads `state.json` under the state root, acts, and
//! writes it back atomically.

mod cgroup_mount;
mod checkpoint;
mod console;
mod create;
mod exec;
mod hooks;
mod init;
mod lifecycle;
mod recover;
mod restore;
mod restore_network;
pub mod rootfs;
mod update;

pub use checkpoint::{checkpoint, CheckpointError, CheckpointOptions, CheckpointOutcome};
pub use create::{create, CreateError, CreateOptions, Created};
pub use exec::{exec, ExecError, ExecOptions, Executed};
pub use hooks::HookError;
pub use lifecycle::{
    delete, kill, oci_state, pause, ps, resume, rfc3339, start, LifecycleError, OciState,
    ProcessInfo, OWNED_BUNDLE_MARKER,
};
pub use recover::{broken_reason, delete_broken, Salvage};
pub use restore::{restore, restore_networked, RestoreError, RestoreOptions, Restored};
pub use update::{stats, update, UpdateError};
