//! The async face: CRIU calls on tokio's blocking pool, so a long dump never
//! blocks a runtime worker, and a dropped future kills CRIU.

use crate::cancel::CancelToken;
use crate::client::{Criu, FeatureCheckError, VersionError};
use crate::features::Features;
use crate::version::CriuVersion;

/// A [`Criu`] for async code.
///
/// ```no_run
/// # async fn demo(criu: criu_rpc::Criu) -> Result<(), Box<dyn std::error::Error>> {
/// use std::os::fd::AsFd;
/// let criu = criu_rpc::AsyncCriu::new(criu);
/// let images = std::fs::File::open("/tmp/images")?;
/// let outcome = criu
///     .run(move |criu| criu.dump(&criu_rpc::DumpRequest::new(4242, images.as_fd()), None))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncCriu {
    criu: Criu,
}

/// Cancels its token when dropped: the future was dropped before the call
/// finished (or the call finished, where cancelling is harmless).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl AsyncCriu {
    /// Wraps a client.
    pub fn new(criu: Criu) -> Self {
        Self { criu }
    }

    /// The blocking client inside.
    pub fn blocking(&self) -> &Criu {
        &self.criu
    }

    /// Runs `call` with the client on the blocking pool. Build the request
    /// inside the closure (descriptors moved in). If the returned future is
    /// dropped, the CRIU process of the call is killed and reaped.
    ///
    /// # Panics
    ///
    /// Re-raises a panic of `call`.
    pub async fn run<F, R>(&self, call: F) -> R
    where
        F: FnOnce(&Criu) -> R + Send + 'static,
        R: Send + 'static,
    {
        let token = match CancelToken::new() {
            Ok(token) => token,
            // No eventfd left: run without cancellation rather than fail.
            Err(_) => {
                let criu = self.criu.clone();
                return join(tokio::task::spawn_blocking(move || call(&criu)).await);
            }
        };
        let guard = CancelOnDrop(token.clone());
        let criu = self.criu.clone().with_cancel(token);
        let result = join(tokio::task::spawn_blocking(move || call(&criu)).await);
        drop(guard);
        result
    }

    /// [`Criu::version`].
    pub async fn version(&self) -> Result<CriuVersion, VersionError> {
        self.run(|criu| criu.version()).await
    }

    /// [`Criu::feature_check`].
    pub async fn feature_check(&self, wanted: Features) -> Result<Features, FeatureCheckError> {
        self.run(move |criu| criu.feature_check(wanted)).await
    }
}

fn join<R>(result: Result<R, tokio::task::JoinError>) -> R {
    match result {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The blocking pool is only cancelled when the runtime shuts down;
        // there is no caller left to answer then.
        Err(e) => std::panic::panic_any(format!("CRIU task did not finish: {e}")),
    }
}
