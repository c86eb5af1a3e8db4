//! What a migration reports while it runs: phases, progress, pre-copy
//! rounds, the cut-over or the rollback. The CLI turns these into progress
//! bars and `--events` JSON lines; the library only emits them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::meter::Meter;

/// One thing that happened, serialized as `{"event": "round", ...}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The strategy was chosen.
    Strategy { strategy: String, why: String },
    /// A phase began; `total` is the bytes it will move, when known.
    PhaseStarted { phase: String, total: Option<u64> },
    /// Bytes moved so far in a phase (sampled a few times a second).
    Progress {
        phase: String,
        bytes: u64,
        total: Option<u64>,
    },
    /// A phase ended.
    PhaseFinished { phase: String, ms: f64, bytes: u64 },
    /// A pre-copy round ended.
    Round {
        round: u32,
        /// Pages CRIU wrote in this round's dump (absent if CRIU did not
        /// say).
        pages_written: Option<u64>,
        /// Bytes of all files of the round.
        bytes_total: u64,
        /// Bytes of new chunks sent (what changed since the last round).
        bytes_sent: u64,
        ms: f64,
    },
    /// Why pre-copy stopped its rounds.
    Converged { rounds: u32, why: String },
    /// The workload was frozen on the source.
    Frozen,
    /// The destination restored the workload; the source recorded and
    /// stopped it and sent Commit. From here on it never resumes by
    /// itself.
    Committing,
    /// The destination runs the workload; the source copy is ended.
    CutOver {
        destination_pid: u32,
        downtime_ms: f64,
    },
    /// Post-copy: the last page arrived at the destination.
    LastPage { dependent_ms: f64 },
    /// The migration failed; the workload runs on the source.
    Rollback { cause: String },
    /// The outcome is unknown: the source is kept stopped; one of the two
    /// commands ends it.
    InDoubt {
        session: String,
        resume: String,
        discard: String,
    },
}

/// Receives events, with the time since the migration began.
pub trait Observer: Send + Sync {
    fn event(&self, since_start: Duration, event: &Event);
}

/// The events sink of one migration (none: events are dropped).
#[derive(Clone)]
pub struct Events {
    observer: Option<Arc<dyn Observer>>,
    start: Instant,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Events {
    pub fn new(observer: Option<Arc<dyn Observer>>) -> Self {
        Self {
            observer,
            start: Instant::now(),
        }
    }

    /// Restarts the clock (at the start of a migration).
    pub(crate) fn restart(&mut self) {
        self.start = Instant::now();
    }

    pub fn emit(&self, event: Event) {
        if let Some(o) = &self.observer {
            o.event(self.start.elapsed(), &event);
        }
    }

    /// Starts a phase; its progress is sampled from `meter` (counting from
    /// its value now) until the returned guard finishes or drops.
    pub(crate) fn phase(&self, name: &str, total: Option<u64>, meter: &Meter) -> Phase {
        self.emit(Event::PhaseStarted {
            phase: name.to_owned(),
            total,
        });
        let base = meter.get();
        let ticker = self.observer.as_ref().map(|_| {
            let events = self.clone();
            let meter = meter.clone();
            let phase = name.to_owned();
            tokio::spawn(async move {
                let mut last = u64::MAX;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let bytes = meter.get().saturating_sub(base);
                    if bytes != last {
                        last = bytes;
                        events.emit(Event::Progress {
                            phase: phase.clone(),
                            bytes,
                            total,
                        });
                    }
                }
            })
        });
        Phase {
            events: self.clone(),
            name: name.to_owned(),
            meter: meter.clone(),
            base,
            started: Instant::now(),
            ticker,
        }
    }
}

/// A running phase; see [`Events::phase`].
pub(crate) struct Phase {
    events: Events,
    name: String,
    meter: Meter,
    /// The meter's value when the phase began.
    base: u64,
    started: Instant,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Phase {
    /// Ends the phase with a finished event.
    pub(crate) fn finish(mut self) {
        self.stop_ticker();
        self.events.emit(Event::PhaseFinished {
            phase: std::mem::take(&mut self.name),
            ms: self.started.elapsed().as_secs_f64() * 1000.0,
            bytes: self.meter.get().saturating_sub(self.base),
        });
    }

    fn stop_ticker(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

impl Drop for Phase {
    /// A phase dropped unfinished (a failure) stops sampling; the failure
    /// itself is reported as a rollback.
    fn drop(&mut self) {
        self.stop_ticker();
    }
}
