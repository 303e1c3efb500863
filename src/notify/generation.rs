//! One configuration's sinks at work: a [`Generation`] holds each sink with its queue and series, spawns one
//! worker per sink, and each worker damps what it takes off its queue, renders it and delivers it.
//!
//! Kept apart from the [`super::Notifier`], which only decides which generation is current (a reload swaps
//! it) and feeds transitions to it: everything about sending lives here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntGauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::context::Context;
use super::delivery::{self, Damper, Delivered, DeliveryError, Policy};
use super::event::{Event, Notice};
use super::queue::Queue;
use super::sink::{Sink, SinkError};
use super::transport::Transport;
use super::NotifyError;
use crate::config::Config;
use crate::jitter::Jitter;
use crate::metrics::{Metrics, SinkMetrics};

/// One sink with its queue and series.
pub(super) struct Slot {
    pub(super) sink: Sink,
    pub(super) queue: Queue<Arc<Event>>,
    pub(super) metrics: SinkMetrics,
}

/// What a worker needs besides its slot.
pub(super) struct Shared {
    pub(super) ctx: Context,
    pub(super) policy: Policy,
    pub(super) min_interval: Duration,
    pub(super) depth: IntGauge,
}

/// One configuration's sinks, with their queues and workers.
pub(super) struct Generation {
    pub(super) slots: Vec<Arc<Slot>>,
    pub(super) shared: Arc<Shared>,
    /// Indexed by [`crate::breaker::State::index`]: whether entering that state notifies.
    pub(super) on: [bool; 3],
    pub(super) stop: watch::Sender<bool>,
    pub(super) workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Generation {
    pub(super) fn new(cfg: &Config, metrics: &Metrics) -> Result<Generation, NotifyError> {
        let n = &cfg.notify;
        let slots = n
            .sinks
            .iter()
            .map(|c| {
                let sink = Sink::from_config(c)?;
                let metrics = metrics.sink(&sink.name);
                Ok(Arc::new(Slot {
                    sink,
                    queue: Queue::new(n.queue_size),
                    metrics,
                }))
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        let mut on = [false; 3];
        for o in &n.on {
            on[o.state().index()] = true;
        }
        Ok(Generation {
            slots,
            shared: Arc::new(Shared {
                ctx: Context::from_config(cfg),
                policy: Policy::from_config(n),
                min_interval: n.min_interval,
                depth: metrics.notification_queue_depth.clone(),
            }),
            on,
            stop: watch::channel(false).0,
            workers: Mutex::default(),
        })
    }

    /// Spawns one worker per sink on the current runtime.
    pub(super) fn start(&self, transport: &Arc<dyn Transport>) {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for (i, slot) in self.slots.iter().enumerate() {
            let worker = work(
                slot.clone(),
                self.shared.clone(),
                transport.clone(),
                self.stop.subscribe(),
                seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            workers.push(tokio::spawn(worker));
        }
        if !self.slots.is_empty() {
            let names: Vec<&str> = self.slots.iter().map(|s| s.sink.name.as_str()).collect();
            info!(sinks = %names.join(","), instance = %self.shared.ctx.instance, "notifications enabled");
        }
    }

    /// Whether every worker has returned (a retired generation that can be forgotten).
    pub(super) fn finished(&self) -> bool {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(JoinHandle::is_finished)
    }
}

/// A sink's worker: takes events off its queue, damps them, sends what is due. On stop, drains.
async fn work(
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    mut stop: watch::Receiver<bool>,
    seed: u64,
) {
    let mut damper = Damper::new(shared.min_interval);
    let mut jitter = Jitter::new(seed);
    loop {
        let due = damper.due();
        let notice = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            event = slot.queue.pop() => {
                shared.depth.dec();
                damper.offer(event, Instant::now())
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                damper.flush(Instant::now())
            }
        };
        if let Some(notice) = notice {
            let _ = send(&slot, &shared, &*transport, &mut jitter, &notice).await;
        }
    }
    // Stopping: what is queued still goes through damping, and whatever it holds goes out now.
    while let Some(event) = slot.queue.try_pop() {
        shared.depth.dec();
        if let Some(notice) = damper.offer(event, Instant::now()) {
            let _ = send(&slot, &shared, &*transport, &mut jitter, &notice).await;
        }
    }
    if let Some(notice) = damper.drain() {
        let _ = send(&slot, &shared, &*transport, &mut jitter, &notice).await;
    }
}

/// Renders and delivers one notice, counts and logs the outcome.
pub(super) async fn send(
    slot: &Slot,
    shared: &Shared,
    transport: &dyn Transport,
    jitter: &mut Jitter,
    notice: &Notice,
) -> Result<Delivered, DeliveryError> {
    let sink = &slot.sink;
    let observe = |d: Duration| slot.metrics.duration.observe(d.as_secs_f64());
    let mut result = Ok(Delivered { attempts: 0 });
    for out in sink.bodies(notice, &shared.ctx) {
        result = delivery::deliver(transport, sink, &out, &shared.policy, jitter, &observe)
            .await
            .map(|d| Delivered {
                attempts: d.attempts + result.as_ref().map_or(0, |r| r.attempts),
            });
        if result.is_err() {
            break;
        }
    }
    let (to, changes) = (notice.event.to.as_str(), notice.changes);
    match &result {
        Ok(d) => {
            slot.metrics.delivered.inc();
            info!(sink = %sink.name, kind = sink.kind.as_str(), to, changes, attempts = d.attempts, "notification delivered");
        }
        Err(e) => {
            slot.metrics.failed.inc();
            warn!(sink = %sink.name, kind = sink.kind.as_str(), to, changes, error = %e, "notification failed");
        }
    }
    result
}
