//! The network side of a container restore.
//!
//! A checkpoint of a container with a CNI network holds its attachment
//! (`network.status`). Before anything is touched, the restore checks that
//! this host has a network of that name, its plugins, and that the
//! addresses are free (naming the holder otherwise). It then makes a new
//! namespace, locks it (traffic to the addresses dropped), attaches it
//! with the same addresses and MAC (CNI `ips` and `mac`), and hands it to
//! CRIU as the external network namespace. CRIU's `network-unlock`
//! notification unlocks it and announces the addresses.

use std::path::Path;

use super::restore::{RestoreError, RestoreOptions};
use crate::network::{self, AddressRequest, Attachment, NetworkConfig, Prepared};
use crate::state::{State, StateRoot};

/// What the restore will attach, checked.
#[derive(Debug)]
pub(crate) struct Plan {
    config: NetworkConfig,
    request: AddressRequest,
}

/// Reads the checkpoint's network and checks everything it needs, before
/// anything is touched. `previous` is the state of the same ID, if any:
/// its own (dead) attachment does not count as a holder.
pub(crate) fn plan(
    root: &StateRoot,
    id: &str,
    opts: &RestoreOptions,
    previous: Option<&State>,
    spec: &oci_spec::runtime::Spec,
) -> Result<Option<Plan>, RestoreError> {
    let Some(saved) = Attachment::read(&opts.images_dir.join(network::NETWORK_STATUS))? else {
        return Ok(None);
    };
    network::check_spec(spec)?;
    let config = opts
        .cni
        .find(&saved.network)
        .map_err(network::NetworkError::from)?;
    opts.cni
        .check_plugins(&config)
        .map_err(network::NetworkError::from)?;
    let request = AddressRequest::same_as(&saved);
    let ips: Vec<_> = request.ips.iter().map(|n| n.addr()).collect();
    let except = previous
        .and_then(|p| p.network.as_ref())
        .filter(|n| !n.released)
        .map(|n| n.container_id.as_str())
        .or(Some(id));
    network::addresses_free(root, &config, &ips, except)?;
    Ok(Some(Plan { config, request }))
}

impl Plan {
    /// Releases what the same ID still holds (its processes are dead),
    /// then attaches a new namespace, locked.
    pub(crate) fn prepare(
        self,
        opts: &RestoreOptions,
        id: &str,
        previous: Option<&State>,
    ) -> Result<Prepared, RestoreError> {
        if let Some(old) = previous
            .and_then(|p| p.network.as_ref())
            .filter(|n| !n.released)
        {
            network::release(old)?;
        }
        Ok(network::prepare(
            &opts.cni,
            &self.config,
            id,
            &self.request,
            true,
        )?)
    }
}

/// Makes the bundle's spec join the prepared namespace and records the
/// attachment in the container directory.
pub(crate) fn adopt(
    prepared: &Prepared,
    spec: &mut oci_spec::runtime::Spec,
    dir: &Path,
) -> Result<(), RestoreError> {
    let attachment = prepared.attachment();
    network::join_in_spec(spec, &attachment.netns)?;
    attachment.write(&dir.join(network::ATTACHMENT_FILE))?;
    Ok(())
}

/// After CRIU's `network-unlock`: traffic flows, the link learns where the
/// addresses are now.
pub(crate) fn unlock(prepared: &mut Prepared) -> Result<(), network::NetworkError> {
    prepared.unlock()?;
    if let Err(e) = prepared.announce() {
        // The workload runs and is reachable; neighbours learn the new
        // port from its own traffic a little later.
        tracing::warn!(error = %e, "cannot announce the restored container's addresses");
    }
    Ok(())
}
