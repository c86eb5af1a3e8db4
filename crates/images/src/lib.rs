//! CRIU checkpoint images as objects: crabmigrate reads CRIU's image files
//! itself, in Rust, without CRIU or Python.
//!
//! - [`Checkpoint::open`] checks the magic of every image in a directory and
//!   decodes the process tree, commands and states, open files, memory
//!   (mapped regions and the pages dumped, left in the parent or kept back
//!   for a lazy restore), mounts, statistics and image sizes.
//! - [`archive`] writes and reads checkpoint archives (Podman/CRI-O layout
//!   plus a sha256 manifest).
//! - [`validate::check_restorable`] refuses a directory CRIU could not
//!   restore (no process, no root, a missing core image, ids that do not
//!   match) before CRIU runs.
//! - [`sockets`] lists a checkpoint's TCP and UDP sockets with their
//!   addresses (what a restore needs from its host).
//! - [`read`] is the bounded decoder underneath: every length is checked
//!   against the file, every count is capped, and no input panics.
//!
//! See `docs/images.md` for the image files and the archive layout.

pub mod archive;
mod checkpoint;
pub mod magic;
mod model;
pub mod read;
pub mod sockets;
pub mod validate;

pub use checkpoint::{
    fd_type_name, OpenError, MAX_DIR_ENTRIES, MAX_PROCESSES, PE_LAZY, PE_PARENT, PE_PRESENT,
};
pub use model::{
    Checkpoint, ImageInfo, Inventory, Memory, Mount, MountNamespace, OpenFile, Process, Summary,
};
pub use read::ImageError;
