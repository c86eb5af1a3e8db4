//! Signals during a migration. `crabmigrate migrate` catches SIGINT,
//! SIGTERM and SIGHUP: before the commit one rolls the migration back (the
//! workload runs on, on the source); from the commit on it is noted and
//! the cut-over finishes first, because dying then would leave the
//! outcome in doubt.

use tokio::sync::watch;

/// Which signal arrived, if one did.
#[derive(Debug, Clone)]
pub struct Interrupt {
    rx: watch::Receiver<Option<&'static str>>,
    /// Keeps the channel open for an interrupt nobody can fire.
    _tx: Option<std::sync::Arc<watch::Sender<Option<&'static str>>>>,
}

/// Fires an [`Interrupt`] (tests, or a caller with its own signals).
#[derive(Debug, Clone)]
pub struct Trigger(std::sync::Arc<watch::Sender<Option<&'static str>>>);

impl Trigger {
    /// Fires with the signal's name.
    pub fn fire(&self, signal: &'static str) {
        let _ = self.0.send(Some(signal));
    }
}

impl Interrupt {
    /// An interrupt that never fires.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(None);
        Self {
            rx,
            _tx: Some(std::sync::Arc::new(tx)),
        }
    }

    /// An interrupt fired by the returned trigger.
    pub fn manual() -> (Self, Trigger) {
        let (tx, rx) = watch::channel(None);
        (Self { rx, _tx: None }, Trigger(std::sync::Arc::new(tx)))
    }

    /// An interrupt fired by SIGINT, SIGTERM or SIGHUP. Must be called
    /// inside a tokio runtime; from then on these signals no longer end
    /// the process.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let (this, trigger) = Self::manual();
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            let mut stream = signal(kind)?;
            let trigger = trigger.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    tracing::warn!(signal = name, "signal received");
                    trigger.fire(name);
                }
            });
        }
        Ok(this)
    }

    /// The signal, if one arrived.
    pub fn fired(&self) -> Option<&'static str> {
        *self.rx.borrow()
    }

    /// Waits until a signal arrives (forever if none does).
    pub async fn wait(&self) -> &'static str {
        let mut rx = self.rx.clone();
        loop {
            if let Some(name) = *rx.borrow_and_update() {
                return name;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_fires_every_clone() {
        let (interrupt, trigger) = Interrupt::manual();
        let other = interrupt.clone();
        assert_eq!(interrupt.fired(), None);
        let waiting = tokio::spawn(async move { other.wait().await });
        trigger.fire("SIGTERM");
        assert_eq!(waiting.await.unwrap(), "SIGTERM");
        assert_eq!(interrupt.fired(), Some("SIGTERM"));
        let never = Interrupt::never();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), never.wait())
                .await
                .is_err()
        );
    }
}
