//! The circuit breaker as the rest of redguard sees it: a thread-safe wrapper around the pure
//! [`state::Machine`], with an injected [`Clock`](crate::clock::Clock) and observers that hear about every state change.
//!
//! A caller asks for a [`Permit`] before touching Redis and hands the outcome back through it. The machine sits
//! behind a `std::sync::Mutex` that is held only for the few instructions of a decision, never across an
//! `.await`. The commonest case, closed with no failure being counted and no rate window, takes neither the lock
//! nor the clock: an atomic flag, written under the lock after every change, says the machine is
//! [quiet](state::Machine::is_quiet), and then admitting a call and recording its success would change nothing. Observers (metrics, logs, notifications) run after the lock is released, so a slow observer can
//! never stall the breaker; they must not block either (the notifier only enqueues).

pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use state::{
    Admission, CallKind, Mode, Outcome, Override, Reason, Settings, Snapshot, State, Transition, WindowFigures,
};

use crate::clock::SharedClock;

/// Something that wants to hear about state changes.
pub trait Observer: Send + Sync {
    /// Called once per transition, outside the breaker's lock. `last_error` is the most recent Redis failure.
    fn on_transition(&self, transition: &Transition, last_error: Option<&str>);
}

struct Guarded {
    machine: Machine,
    last_error: Option<Box<str>>,
}

use state::Machine;

/// The shared breaker. One per sidecar.
pub struct Breaker {
    guarded: Mutex<Guarded>,
    /// `Machine::is_quiet`, as of the last change (stored under the lock). While it holds, calls are admitted
    /// and their successes recorded without the lock or the clock.
    quiet: AtomicBool,
    clock: SharedClock,
    observers: Vec<Arc<dyn Observer>>,
}

/// A call was turned away; try again after `retry_after` (`None` while the circuit is forced open: it will not
/// admit again until an operator says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Option<Duration>,
}

impl Breaker {
    pub fn new(settings: Settings, clock: SharedClock, seed: u64, observers: Vec<Arc<dyn Observer>>) -> Self {
        let machine = Machine::new(settings, clock.now(), seed);
        Breaker {
            quiet: AtomicBool::new(machine.is_quiet()),
            guarded: Mutex::new(Guarded {
                machine,
                last_error: None,
            }),
            clock,
            observers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        // The machine has no invariants a panic elsewhere could break half-way: keep going on poison.
        self.guarded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes whether the machine is quiet; called under the lock after every change to it.
    fn publish(&self, g: &Guarded) {
        self.quiet.store(g.machine.is_quiet(), Ordering::Release);
    }

    pub fn settings(&self) -> Settings {
        self.lock().machine.settings().clone()
    }

    /// Takes new settings (a configuration reload) without losing the state: see [`Machine::reconfigure`] for
    /// what is kept and when each setting starts to apply. Nothing transitions, so observers hear nothing. The
    /// quiet flag is published again, since turning a rate threshold on or off changes whether the machine is
    /// quiet; a call admitted on the quiet path just before rates were turned on reports a duration of zero.
    pub fn reconfigure(&self, settings: Settings) {
        let now = self.clock.now();
        let mut g = self.lock();
        g.machine.reconfigure(settings, now);
        self.publish(&g);
    }

    /// Asks to make one call to Redis.
    ///
    /// Inlined so that the quiet path is a load and a branch in the caller; the rest is out of line.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        if self.quiet.load(Ordering::Acquire) {
            // `admit` would answer this at any time, changing nothing; no rate window wants the call's duration.
            return Ok(Permit {
                breaker: self,
                kind: CallKind::Normal,
                started: None,
                armed: true,
            });
        }
        self.admit_with_lock()
    }

    #[inline(never)]
    fn admit_with_lock(&self) -> Result<Permit<'_>, Rejected> {
        let now = self.clock.now();
        let (admission, transition) = {
            let mut g = self.lock();
            let (admission, transition) = g.machine.admit(now);
            self.publish(&g);
            (admission, transition.map(|t| (t, g.last_error.clone())))
        };
        if let Some((t, err)) = transition {
            self.notify(&t, err.as_deref());
        }
        match admission {
            Admission::Allowed(kind) => Ok(Permit {
                breaker: self,
                kind,
                started: Some(now),
                armed: true,
            }),
            Admission::Rejected { retry_after } => Err(Rejected { retry_after }),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().machine.snapshot(self.clock.now())
    }

    pub fn state(&self) -> State {
        self.lock().machine.state()
    }

    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.as_deref().map(str::to_owned)
    }

    /// Applies a manual override from the control route.
    pub fn apply(&self, action: Override) -> Snapshot {
        let now = self.clock.now();
        let (snapshot, transition) = {
            let mut g = self.lock();
            let t = g.machine.apply(now, action);
            self.publish(&g);
            (g.machine.snapshot(now), t.map(|t| (t, g.last_error.clone())))
        };
        if let Some((t, err)) = transition {
            self.notify(&t, err.as_deref());
        }
        snapshot
    }

    /// `started` is `None` for a call admitted on the quiet path: no rate window is kept, so its duration is
    /// never looked at.
    #[inline]
    fn finish(&self, kind: CallKind, started: Option<Instant>, error: Option<&str>) {
        if error.is_none() && kind == CallKind::Normal && self.quiet.load(Ordering::Acquire) {
            // Closed and no failure counted: recording this success would change nothing.
            return;
        }
        self.record_with_lock(kind, started, error);
    }

    #[inline(never)]
    fn record_with_lock(&self, kind: CallKind, started: Option<Instant>, error: Option<&str>) {
        let now = self.clock.now();
        let elapsed = started.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        let outcome = match error {
            None => Outcome::Success { elapsed },
            Some(_) => Outcome::Failure { elapsed },
        };
        let transition = {
            let mut g = self.lock();
            if let Some(e) = error {
                g.last_error = Some(e.into());
            }
            let t = g.machine.record(now, kind, outcome);
            self.publish(&g);
            t.map(|t| (t, g.last_error.clone()))
        };
        if let Some((t, err)) = transition {
            self.notify(&t, err.as_deref());
        }
    }

    fn notify(&self, t: &Transition, last_error: Option<&str>) {
        for o in &self.observers {
            o.on_transition(t, last_error);
        }
    }
}

/// Leave to make one call. Report how it went with [`Permit::success`] or [`Permit::failure`]; a permit dropped
/// without a report (the caller was cancelled) gives its half-open slot back without counting.
#[must_use = "report the call's outcome through the permit"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    kind: CallKind,
    /// When the call was admitted; `None` on the quiet path (see [`Breaker::finish`]).
    started: Option<Instant>,
    armed: bool,
}

impl Permit<'_> {
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// Redis answered (an application error such as WRONGTYPE counts too: Redis is healthy).
    #[inline]
    pub fn success(mut self) {
        self.armed = false;
        self.breaker.finish(self.kind, self.started, None);
    }

    /// Redis failed: connection error, timeout, or a server state such as LOADING.
    pub fn failure(mut self, error: &str) {
        self.armed = false;
        self.breaker.finish(self.kind, self.started, Some(error));
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        // Only a probe holds anything to give back (`abandon` ignores the other kinds).
        if self.armed && self.kind == CallKind::Probe {
            let mut g = self.breaker.lock();
            g.machine.abandon(self.kind);
            self.breaker.publish(&g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(State, State, Option<String>)>>);

    impl Observer for Recorder {
        fn on_transition(&self, t: &Transition, last_error: Option<&str>) {
            self.0
                .lock()
                .unwrap()
                .push((t.from, t.to, last_error.map(str::to_owned)));
        }
    }

    fn breaker(clock: Arc<ManualClock>, recorder: Arc<Recorder>) -> Breaker {
        let settings = Settings {
            failure_threshold: 2,
            recovery_jitter: 0.0,
            ..Settings::default()
        };
        Breaker::new(settings, clock, 7, vec![recorder])
    }

    #[test]
    fn observers_hear_each_transition_with_the_last_error() {
        let clock = ManualClock::new();
        let rec = Arc::new(Recorder::default());
        let b = breaker(clock.clone(), rec.clone());
        b.try_acquire().unwrap().failure("connection refused");
        b.try_acquire().unwrap().failure("timed out");
        assert_eq!(
            b.try_acquire().err(),
            Some(Rejected {
                retry_after: Some(Duration::from_secs(60))
            })
        );
        clock.advance(Duration::from_secs(60));
        b.try_acquire().unwrap().success();
        let seen = rec.0.lock().unwrap().clone();
        let timed_out = Some("timed out".to_owned());
        assert_eq!(
            seen,
            vec![
                (State::Closed, State::Open, timed_out.clone()),
                (State::Open, State::HalfOpen, timed_out.clone()),
                (State::HalfOpen, State::Closed, timed_out),
            ]
        );
    }

    #[test]
    fn the_quiet_path_counts_failures_and_resets_on_success() {
        let clock = ManualClock::new();
        let rec = Arc::new(Recorder::default());
        let b = breaker(clock.clone(), rec.clone());
        assert!(b.quiet.load(Ordering::Relaxed));
        b.try_acquire().unwrap().failure("x");
        assert!(!b.quiet.load(Ordering::Relaxed), "a failure is being counted");
        b.try_acquire().unwrap().success();
        assert!(b.quiet.load(Ordering::Relaxed), "the success reset the count");
        // Admitted on the quiet path, reported after another call failed: the success still resets the count.
        let early = b.try_acquire().unwrap();
        b.try_acquire().unwrap().failure("x");
        early.success();
        b.try_acquire().unwrap().failure("x");
        assert_eq!(b.state(), State::Closed, "one failure since the last success");
        drop(b.try_acquire().unwrap());
        b.try_acquire().unwrap().failure("x");
        assert_eq!(b.state(), State::Open);
        assert!(!b.quiet.load(Ordering::Relaxed));
        assert!(b.try_acquire().is_err());
        assert_eq!(rec.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_dropped_probe_permit_frees_the_slot() {
        let clock = ManualClock::new();
        let b = breaker(clock.clone(), Arc::default());
        b.try_acquire().unwrap().failure("x");
        b.try_acquire().unwrap().failure("x");
        clock.advance(Duration::from_secs(60));
        let probe = b.try_acquire().unwrap();
        assert_eq!(probe.kind(), CallKind::Probe);
        assert!(b.try_acquire().is_err());
        drop(probe);
        assert_eq!(b.try_acquire().unwrap().kind(), CallKind::Probe);
    }

    #[test]
    fn concurrent_callers_never_get_more_probes_than_permitted() {
        let clock = ManualClock::new();
        let settings = Settings {
            failure_threshold: 1,
            half_open_max_calls: 3,
            recovery_jitter: 0.0,
            ..Settings::default()
        };
        let b = Arc::new(Breaker::new(settings, clock.clone(), 1, vec![]));
        b.try_acquire().unwrap().failure("x");
        clock.advance(Duration::from_secs(60));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let admitted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        // Hold the permit (forget it) so no slot is given back during the race.
                        b.try_acquire().map(std::mem::forget).is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).filter(|&ok| ok).count()
        });
        assert_eq!(admitted, 3);
    }

    #[test]
    fn reconfigure_notifies_no_one_and_republishes_whether_the_machine_is_quiet() {
        let clock = ManualClock::new();
        let rec = Arc::new(Recorder::default());
        let b = breaker(clock.clone(), rec.clone());
        assert!(b.quiet.load(Ordering::Relaxed));
        b.reconfigure(Settings {
            failure_rate_threshold: Some(50.0),
            ..b.settings()
        });
        assert_eq!(b.settings().failure_rate_threshold, Some(50.0));
        assert!(!b.quiet.load(Ordering::Relaxed), "a rate window is kept now");
        b.try_acquire().unwrap().failure("x");
        b.try_acquire().unwrap().failure("x");
        assert_eq!(b.state(), State::Open);
        b.reconfigure(Settings {
            failure_rate_threshold: None,
            failure_threshold: 1,
            ..b.settings()
        });
        assert_eq!(b.state(), State::Open);
        assert_eq!(rec.0.lock().unwrap().len(), 1, "only the trip was heard");
        b.apply(Override::Reset);
        assert!(b.quiet.load(Ordering::Relaxed), "closed and no rates: quiet again");
    }
}
