//! State-change notifications: the breaker tells Slack, PagerDuty and generic webhooks when the circuit opens,
//! probes and closes.
//!
//! ```text
//!  breaker ──on_transition──▶ Notifier (observer: build one Event, push it to each sink's queue; never waits)
//!                                │
//!                                ├──▶ queue ──▶ worker: damping ──▶ render ──▶ deliver (retries) ──▶ Slack
//!                                ├──▶ queue ──▶ worker ...                                        ──▶ PagerDuty
//!                                └──▶ queue ──▶ worker ...                                        ──▶ webhook
//! ```
//!
//! Invariants:
//! - The observer only allocates and pushes onto bounded queues (`notify.queue_size` per sink, oldest dropped
//!   and counted when full): the breaker and the API never wait for a sink.
//! - Each sink has its own queue and worker, so a sink that hangs or is rate-limited delays only itself.
//! - A sink hears at most one notice per `notify.min_interval`; changes in between are summarised.
//! - On shutdown, workers send what is queued and held, within `notify.shutdown_grace`; then they are cut off
//!   and what is left is counted as dropped.
//! - Secrets never leave [`sink`]: logs name a sink by name and type only.

pub(crate) mod context;
pub(crate) mod delivery;
pub(crate) mod event;
mod generation;
pub(crate) mod pagerduty;
pub(crate) mod queue;
pub(crate) mod sink;
pub(crate) mod slack;
pub(crate) mod text;
pub(crate) mod transport;
pub(crate) mod webhook;

#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use self::delivery::{Delivered, DeliveryError};
use self::event::{Event, Notice};
use self::generation::{send, Generation};
use self::sink::SinkError;
use self::transport::Transport;
use crate::breaker::{Observer, Transition};
use crate::config::Config;
use crate::jitter::Jitter;
use crate::metrics::Metrics;

/// Why the notifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("cannot build the HTTP client for notifications: {0}")]
    Client(String),
}

/// A new `notify` section, built and checked but not yet in use: see [`Notifier::prepare`].
pub struct Prepared(Generation);

/// The notifier: an [`Observer`] for the breaker plus the sink workers behind it.
///
/// A reload replaces the whole generation of sinks ([`Notifier::install`]): transitions from then on go to the
/// new sinks, while the old workers send what they already hold (a delivery in flight finishes on the sink it
/// started with, secrets included) and stop. Shutdown gives every generation still sending the same grace.
pub struct Notifier {
    current: ArcSwap<Generation>,
    /// Generations replaced by a reload whose workers may still be sending.
    retired: Mutex<Vec<Arc<Generation>>>,
    /// Set by [`Notifier::start`]; the workers of later generations send with it too, or with the one a reload
    /// brings.
    transport: Mutex<Option<Arc<dyn Transport>>>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Builds the sinks from a validated config. Spawns nothing: see [`Notifier::start`].
    pub fn new(cfg: &Config, metrics: &Arc<Metrics>) -> Result<Notifier, NotifyError> {
        Ok(Notifier {
            current: ArcSwap::from_pointee(Generation::new(cfg, metrics)?),
            retired: Mutex::default(),
            transport: Mutex::default(),
            metrics: metrics.clone(),
        })
    }

    /// Whether any sink is configured.
    pub fn is_enabled(&self) -> bool {
        !self.current.load().slots.is_empty()
    }

    /// Spawns one worker per sink on the current runtime, sending with `transport`.
    pub fn start(&self, transport: Arc<dyn Transport>) {
        self.current.load().start(&transport);
        *self.transport.lock().unwrap_or_else(|e| e.into_inner()) = Some(transport);
    }

    /// Builds the sinks of a reloaded config, so that a config they cannot be built from is refused before
    /// anything else of it is applied.
    pub fn prepare(&self, cfg: &Config) -> Result<Prepared, NotifyError> {
        Generation::new(cfg, &self.metrics).map(Prepared)
    }

    /// Puts prepared sinks in place of the current ones (see the type's docs). `transport`, if given, is what
    /// the workers send with from now on (a new `notify.timeout`, or the first sinks of a sidecar that started
    /// without any); the new workers start once there is one.
    pub fn install(&self, prepared: Prepared, transport: Option<Arc<dyn Transport>>) {
        let next = Arc::new(prepared.0);
        let mut current_transport = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        if transport.is_some() {
            *current_transport = transport;
        }
        if let Some(t) = current_transport.as_ref() {
            next.start(t);
        }
        drop(current_transport);
        let old = self.current.swap(next);
        let _ = old.stop.send(true);
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|g| !g.finished());
        retired.push(old);
    }

    /// Lets the workers of every generation send what is pending for at most `grace`, then stops them.
    pub async fn shutdown(&self, grace: Duration) {
        let mut generations = std::mem::take(&mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()));
        generations.push(self.current.load_full());
        let mut workers: Vec<JoinHandle<()>> = generations
            .iter()
            .flat_map(|g| std::mem::take(&mut *g.workers.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        if workers.is_empty() {
            return;
        }
        let pending: usize = generations.iter().flat_map(|g| &g.slots).map(|s| s.queue.len()).sum();
        info!(
            pending,
            grace_seconds = grace.as_secs_f64(),
            "sending pending notifications before exit"
        );
        for g in &generations {
            let _ = g.stop.send(true);
        }
        let finished = tokio::time::timeout(grace, async {
            for w in &mut workers {
                let _ = w.await;
            }
        })
        .await;
        if finished.is_err() {
            workers.iter().for_each(JoinHandle::abort);
            let mut lost = 0;
            for g in &generations {
                for slot in &g.slots {
                    let mut n = 0;
                    while slot.queue.try_pop().is_some() {
                        n += 1;
                    }
                    slot.metrics.dropped.inc_by(n);
                    g.shared.depth.sub(n as i64);
                    lost += n;
                }
            }
            warn!(
                grace_seconds = grace.as_secs_f64(),
                unsent = lost,
                "notification grace elapsed; giving up on the rest"
            );
        }
    }

    /// Sends one test event to every sink, all at once, and reports each outcome (`redguard notify-test`).
    pub async fn send_test(&self, transport: Arc<dyn Transport>) -> Vec<TestReport> {
        let g = self.current.load_full();
        let event = Arc::new(Event::test(SystemTime::now()));
        let tasks: Vec<_> = g
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let (slot, shared, transport) = (slot.clone(), g.shared.clone(), transport.clone());
                let notice = Notice::single(event.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut jitter = Jitter::new(i as u64 + 1);
                    let result = send(&slot, &shared, &*transport, &mut jitter, &notice).await;
                    (slot, result, started.elapsed())
                })
            })
            .collect();
        let mut reports = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok((slot, result, elapsed)) = task.await {
                reports.push(TestReport {
                    name: slot.sink.name.clone(),
                    kind: slot.sink.kind.as_str(),
                    result,
                    elapsed,
                });
            }
        }
        reports
    }
}

impl Observer for Notifier {
    fn on_transition(&self, t: &Transition, last_error: Option<&str>) {
        let g = self.current.load();
        if g.slots.is_empty() || !g.on[t.to.index()] {
            return;
        }
        let event = Arc::new(Event::from_transition(
            t,
            last_error,
            SystemTime::now(),
            std::time::Instant::now(),
        ));
        for slot in g.slots.iter().filter(|s| s.sink.accepts(t.to)) {
            if slot.queue.push(event.clone()).is_some() {
                slot.metrics.dropped.inc();
            } else {
                g.shared.depth.inc();
            }
        }
    }
}

/// One sink's outcome in `redguard notify-test`.
#[derive(Debug)]
pub struct TestReport {
    pub name: String,
    pub kind: &'static str,
    pub result: Result<Delivered, DeliveryError>,
    pub elapsed: Duration,
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = text::human_duration(self.elapsed);
        match &self.result {
            Ok(d) => write!(
                f,
                "{} ({}): delivered in {took}, {} attempt(s)",
                self.name, self.kind, d.attempts
            ),
            Err(e) => write!(f, "{} ({}): FAILED after {took}: {e}", self.name, self.kind),
        }
    }
}

#[cfg(test)]
#[path = "notifier_tests.rs"]
mod tests;
