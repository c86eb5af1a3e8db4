//! `update` (new limits for a running container) and `events --stats`
//! (what it uses).

use oci_spec::runtime::LinuxResources;

use super::lifecycle::load;
use crate::cgroups::Stats;
use crate::state::{StateRoot, Status};

/// Why `update` or `stats` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    #[error(transparent)]
    Lifecycle(#[from] super::LifecycleError),
    #[error("container {id} is {status}; it has no processes whose limits could change")]
    NotLive { id: String, status: Status },
    #[error("container {0} has no cgroup")]
    NoCgroup(String),
    #[error("linux.resources asks for what crabmigrate does not support: {}; remove these fields", .0.join(", "))]
    Unsupported(Vec<String>),
    #[error("cannot change the cgroup of container {0}")]
    Cgroup(String, #[source] crate::cgroups::CgroupError),
}

/// Applies the supported limits of `resources` to container `id`'s cgroup.
/// Device rules are left as they are (runc's `update` does not touch them
/// either); other unsupported fields are refused by name.
pub fn update(root: &StateRoot, id: &str, resources: &LinuxResources) -> Result<(), UpdateError> {
    let state = load(root, id)?;
    if !matches!(
        state.status,
        Status::Created | Status::Running | Status::Paused
    ) {
        return Err(UpdateError::NotLive {
            id: id.to_owned(),
            status: state.status,
        });
    }
    let cgroup = state
        .cgroup
        .as_ref()
        .ok_or_else(|| UpdateError::NoCgroup(id.to_owned()))?;
    let unsupported = crate::spec::unsupported_resources(resources);
    if !unsupported.is_empty() {
        return Err(UpdateError::Unsupported(unsupported));
    }
    cgroup
        .update(&super::create::resources_of(resources))
        .map_err(|e| UpdateError::Cgroup(id.to_owned(), e))?;
    tracing::debug!(id, "updated the container's limits");
    Ok(())
}

/// What container `id` uses now.
pub fn stats(root: &StateRoot, id: &str) -> Result<Stats, UpdateError> {
    let state = load(root, id)?;
    let cgroup = state
        .cgroup
        .as_ref()
        .ok_or_else(|| UpdateError::NoCgroup(id.to_owned()))?;
    cgroup
        .stats()
        .map_err(|e| UpdateError::Cgroup(id.to_owned(), e))
}
