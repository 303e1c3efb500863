//! The circuit breaker's state machine: pure decisions, no I/O, no clock of its own.
//!
//! Every method takes `now`, so the whole machine is driven by the caller's clock and each transition can be
//! unit-tested deterministically. The machine decides whether a call may go to Redis ([`Machine::admit`]) and
//! learns how it went ([`Machine::record`]); it returns a [`Transition`] whenever the state changes, and the
//! caller (see [`super::Breaker`]) logs it, updates metrics and sends notifications.
//!
//! Invariants:
//! - Closed trips to open on `failure_threshold` consecutive failures, or on a failure / slow-call rate over a
//!   sliding window once `minimum_calls` are in it.
//! - Open rejects everything until its deadline; the first admission after it becomes a half-open probe.
//! - Half-open admits at most `half_open_max_calls` probes at once; `success_threshold` successes close it,
//!   any failure (or a probe outliving `probe_timeout`) reopens it with a longer open period.
//! - Forced states hold until another override; observe mode runs the same machine but never rejects.
//! - Reconfiguring ([`Machine::reconfigure`]) never changes the state: new settings apply from the next call
//!   admitted or recorded and from the next transition, so a reload neither trips, closes nor notifies.

use std::fmt;
use std::time::{Duration, Instant};

use crate::jitter::Jitter;

/// The three states, as named in the API, the health JSON and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// Position in [`State::ALL`], for label-indexed metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the breaker rejects calls (`Enforce`) or only computes what it would do (`Observe`): the config's
/// `breaker.mode` (`enforce` | `observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Trip for real: calls fail fast while the breaker is open.
    #[default]
    Enforce,
    /// Dry run: track state and report transitions, but let every call through.
    Observe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }
}

/// The machine's tuning, already validated by the config layer. Its [`Default`] holds the defaults of the
/// config's `breaker` section (`config::BreakerConfig` takes them from here).
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub failure_threshold: u32,
    /// Percent of failed calls in the window that trips the breaker; `None` = off.
    pub failure_rate_threshold: Option<f64>,
    /// A call slower than this counts as slow; `None` = slow calls are not tracked.
    pub slow_call_duration: Option<Duration>,
    pub slow_call_rate_threshold: Option<f64>,
    pub window_size: usize,
    pub minimum_calls: usize,
    pub recovery_timeout: Duration,
    pub recovery_jitter: f64,
    pub recovery_backoff: f64,
    pub recovery_timeout_max: Duration,
    pub half_open_max_calls: u32,
    pub success_threshold: u32,
    /// A half-open probe that has not reported after this long counts as failed (the command timeout).
    pub probe_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Enforce,
            failure_threshold: 5,
            failure_rate_threshold: None,
            slow_call_duration: None,
            slow_call_rate_threshold: None,
            window_size: 100,
            minimum_calls: 20,
            recovery_timeout: Duration::from_secs(60),
            recovery_jitter: 0.1,
            recovery_backoff: 2.0,
            recovery_timeout_max: Duration::from_secs(300),
            half_open_max_calls: 1,
            success_threshold: 1,
            probe_timeout: Duration::from_millis(250),
        }
    }
}

/// A manual override, from `POST /v1/breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    ForceOpen,
    ForceClosed,
    Reset,
}

impl Override {
    pub fn as_str(self) -> &'static str {
        match self {
            Override::ForceOpen => "force_open",
            Override::ForceClosed => "force_closed",
            Override::Reset => "reset",
        }
    }
}

/// Why the state changed; shown in logs and notifications.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    ConsecutiveFailures(u32),
    FailureRate(f64),
    SlowCallRate(f64),
    RecoveryTimeoutElapsed,
    ProbeFailed,
    ProbeTimedOut,
    ProbesSucceeded(u32),
    Manual(Override),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Reason::FailureRate(p) => write!(f, "failure rate {p:.1}% over the window"),
            Reason::SlowCallRate(p) => write!(f, "slow-call rate {p:.1}% over the window"),
            Reason::RecoveryTimeoutElapsed => f.write_str("recovery timeout elapsed"),
            Reason::ProbeFailed => f.write_str("half-open probe failed"),
            Reason::ProbeTimedOut => f.write_str("half-open probe did not finish in time"),
            Reason::ProbesSucceeded(n) => write!(f, "{n} half-open probe(s) succeeded"),
            Reason::Manual(o) => write!(f, "manual override {}", o.as_str()),
        }
    }
}

/// A state change, reported to the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
    pub at: Instant,
    /// How long the previous state lasted.
    pub previous_lasted: Duration,
    /// Consecutive failures at the moment of the change.
    pub consecutive_failures: u32,
    /// The mode in force when the state changed: in observe mode an opening rejected nothing, so it is not an
    /// outage (notifications say so and page lower).
    pub mode: Mode,
}

/// What a call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go to Redis; report the outcome with the same [`CallKind`].
    Allowed(CallKind),
    /// Do not touch Redis; the breaker may admit again after `retry_after`. `None` while forced open: then
    /// only a manual `reset` or `force_closed` admits again, and any time given would be a false promise.
    Rejected { retry_after: Option<Duration> },
}

/// How an admitted call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A call in the closed state.
    Normal,
    /// One of the limited half-open probes.
    Probe,
    /// Observe mode only: a call that enforce mode would have rejected. Its outcome does not move the machine.
    Shadow,
}

/// How an admitted call went, from Redis's health point of view (application errors count as success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success { elapsed: Duration },
    Failure { elapsed: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        last_probe: Instant,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    Open,
    Closed,
}

/// The last `capacity` call results, for the rate thresholds. Allocated once.
#[derive(Debug)]
struct Window {
    slots: Vec<u8>,
    next: usize,
    len: usize,
    failures: usize,
    slow: usize,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

impl Window {
    fn new(capacity: usize) -> Self {
        Window {
            slots: vec![0; capacity.max(1)],
            next: 0,
            len: 0,
            failures: 0,
            slow: 0,
        }
    }

    fn push(&mut self, flags: u8) {
        if self.len == self.slots.len() {
            let old = self.slots[self.next];
            self.failures -= usize::from(old & FAILED != 0);
            self.slow -= usize::from(old & SLOW != 0);
        } else {
            self.len += 1;
        }
        self.slots[self.next] = flags;
        self.failures += usize::from(flags & FAILED != 0);
        self.slow += usize::from(flags & SLOW != 0);
        self.next = (self.next + 1) % self.slots.len();
    }

    /// Gives the window room for `capacity` results (at least one, as [`Window::new`]), keeping the most recent
    /// `min(len, capacity)` of those it holds, oldest first, and their failure and slow counts. Allocates: only
    /// a reconfiguration calls it.
    fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        let old = self.slots.len();
        if capacity == old {
            return;
        }
        let keep = self.len.min(capacity);
        // The newest result is just before `next`; the `keep` newest start `keep` slots before it (taken modulo
        // `old` below, with `old` added so that it cannot go below zero).
        let first = self.next + old - keep;
        let mut slots = vec![0; capacity];
        for (k, slot) in slots.iter_mut().take(keep).enumerate() {
            *slot = self.slots[(first + k) % old];
        }
        let kept = &slots[..keep];
        self.failures = kept.iter().filter(|&&s| s & FAILED != 0).count();
        self.slow = kept.iter().filter(|&&s| s & SLOW != 0).count();
        self.slots = slots;
        self.next = keep % capacity;
        self.len = keep;
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.failures = 0;
        self.slow = 0;
    }

    fn percent(&self, n: usize) -> f64 {
        n as f64 * 100.0 / self.len as f64
    }
}

/// The state machine. Not thread-safe by itself: [`super::Breaker`] wraps it in a mutex.
#[derive(Debug)]
pub struct Machine {
    settings: Settings,
    inner: Inner,
    forced: Option<Forced>,
    entered_at: Instant,
    consecutive_failures: u32,
    window: Window,
    /// The open period before jitter; grows by `recovery_backoff` on each failed probe.
    open_period: Duration,
    /// Failed (or timed-out) probes since the circuit last closed or was reset: how far `open_period` has
    /// backed off, so that a reconfiguration can recompute it under new recovery settings.
    reopens: u32,
    rng: Jitter,
}

/// A point-in-time view for health output and the control route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub state: State,
    pub consecutive_failures: u32,
    pub entered_at: Instant,
    /// When open: time until the breaker admits a probe (None while forced open).
    pub until_half_open: Option<Duration>,
    pub forced: Option<State>,
    pub mode: Mode,
    /// The rate window as the thresholds judge it: see [`WindowFigures`].
    pub window: WindowFigures,
}

impl Snapshot {
    /// Calls are being turned away from Redis (answered from the fallback): the circuit is not closed and the
    /// mode enforces it. Forced open counts (an operator chose it, but the calls are still not served by Redis);
    /// observe mode never does, since it rejects nothing. `redguard_degraded` and `degraded_mode` say this.
    pub fn degraded(&self) -> bool {
        self.state != State::Closed && self.mode == Mode::Enforce
    }
}

/// What the count-based rate window holds: the last `window_size` calls recorded while closed (cleared on every
/// transition), kept only while a rate threshold is set. Empty otherwise, so every figure is then 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowFigures {
    pub calls: usize,
    pub failures: usize,
    /// Calls slower than `slow_call_duration` (always 0 while it is unset).
    pub slow: usize,
}

impl WindowFigures {
    /// Failed calls over the calls in the window, 0..1; 0 for an empty window.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls over the calls in the window, 0..1; 0 for an empty window.
    pub fn slow_call_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

impl Machine {
    /// `seed` feeds the jitter; give each breaker its own so a fleet spreads out.
    pub fn new(settings: Settings, now: Instant, seed: u64) -> Self {
        let window = Window::new(settings.window_size);
        let open_period = settings.recovery_timeout;
        Machine {
            settings,
            inner: Inner::Closed,
            forced: None,
            entered_at: now,
            consecutive_failures: 0,
            window,
            open_period,
            reopens: 0,
            rng: Jitter::new(seed),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn state(&self) -> State {
        match self.inner {
            Inner::Closed => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let until_half_open = match (self.inner, self.forced) {
            (Inner::Open { until }, None) => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        Snapshot {
            state: self.state(),
            consecutive_failures: self.consecutive_failures,
            entered_at: self.entered_at,
            until_half_open,
            forced: self.forced.map(|f| match f {
                Forced::Open => State::Open,
                Forced::Closed => State::Closed,
            }),
            mode: self.settings.mode,
            window: WindowFigures {
                calls: self.window.len,
                failures: self.window.failures,
                slow: self.window.slow,
            },
        }
    }

    /// Closed, no failure being counted, and no rate window kept. In this state [`Machine::admit`] answers
    /// `Allowed(Normal)` and [`Machine::record`] of a normal call's success changes nothing, whatever the time:
    /// a caller may skip both, and the clock (see [`super::Breaker`]'s fast path).
    pub fn is_quiet(&self) -> bool {
        matches!(self.inner, Inner::Closed) && self.consecutive_failures == 0 && !self.rates_on()
    }

    fn rates_on(&self) -> bool {
        self.settings.failure_rate_threshold.is_some() || self.settings.slow_call_rate_threshold.is_some()
    }

    /// Decides whether a call may go to Redis now. May move open -> half-open (or time out a stuck probe).
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = self.expire_stuck_probe(now);
        let admission = match self.inner {
            Inner::Closed => Admission::Allowed(CallKind::Normal),
            Inner::Open { until } if self.forced.is_none() && now >= until => {
                transition = Some(self.enter(
                    now,
                    Inner::HalfOpen {
                        in_flight: 1,
                        successes: 0,
                        last_probe: now,
                    },
                    Reason::RecoveryTimeoutElapsed,
                ));
                Admission::Allowed(CallKind::Probe)
            }
            Inner::Open { until } => {
                let retry_after = if self.forced.is_some() { None } else { Some(until - now) };
                self.reject(retry_after)
            }
            Inner::HalfOpen {
                ref mut in_flight,
                ref mut last_probe,
                ..
            } => {
                if *in_flight < self.settings.half_open_max_calls {
                    *in_flight += 1;
                    *last_probe = now;
                    Admission::Allowed(CallKind::Probe)
                } else {
                    self.reject(Some(self.settings.probe_timeout))
                }
            }
        };
        (admission, transition)
    }

    fn reject(&self, retry_after: Option<Duration>) -> Admission {
        match self.settings.mode {
            Mode::Enforce => Admission::Rejected { retry_after },
            Mode::Observe => Admission::Allowed(CallKind::Shadow),
        }
    }

    /// Learns how an admitted call went.
    pub fn record(&mut self, now: Instant, kind: CallKind, outcome: Outcome) -> Option<Transition> {
        let (failed, elapsed) = match outcome {
            Outcome::Success { elapsed } => (false, elapsed),
            Outcome::Failure { elapsed } => (true, elapsed),
        };
        if kind == CallKind::Shadow {
            return None;
        }
        if failed {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        } else {
            self.consecutive_failures = 0;
        }
        match (kind, self.inner) {
            (CallKind::Normal, Inner::Closed) => self.record_closed(now, failed, elapsed),
            (
                CallKind::Probe,
                Inner::HalfOpen {
                    in_flight,
                    successes,
                    last_probe,
                },
            ) => {
                if failed {
                    return Some(self.reopen(now, Reason::ProbeFailed));
                }
                let successes = successes + 1;
                if successes >= self.settings.success_threshold {
                    self.open_period = self.settings.recovery_timeout;
                    self.reopens = 0;
                    return Some(self.enter(now, Inner::Closed, Reason::ProbesSucceeded(successes)));
                }
                self.inner = Inner::HalfOpen {
                    in_flight: in_flight.saturating_sub(1),
                    successes,
                    last_probe,
                };
                None
            }
            // A call admitted in a state the machine has since left (e.g. a forced change): its result is stale.
            _ => None,
        }
    }

    fn record_closed(&mut self, now: Instant, failed: bool, elapsed: Duration) -> Option<Transition> {
        let rates_on = self.rates_on();
        if rates_on {
            let slow = self.settings.slow_call_duration.is_some_and(|d| elapsed > d);
            self.window
                .push(if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 });
        }
        if self.forced == Some(Forced::Closed) {
            return None;
        }
        if failed && self.consecutive_failures >= self.settings.failure_threshold {
            return Some(self.trip(now, Reason::ConsecutiveFailures(self.consecutive_failures)));
        }
        if rates_on && self.window.len >= self.settings.minimum_calls {
            if let Some(threshold) = self.settings.failure_rate_threshold {
                let rate = self.window.percent(self.window.failures);
                if rate >= threshold {
                    return Some(self.trip(now, Reason::FailureRate(rate)));
                }
            }
            if let Some(threshold) = self.settings.slow_call_rate_threshold {
                let rate = self.window.percent(self.window.slow);
                if rate >= threshold {
                    return Some(self.trip(now, Reason::SlowCallRate(rate)));
                }
            }
        }
        None
    }

    /// Takes new settings without losing the state: no transition happens, so none is returned and observers
    /// hear nothing. `_now` is taken like every other method's `now`; no setting needs it today.
    ///
    /// - The state is kept. An open circuit keeps its deadline (the new recovery timings apply from the next
    ///   transition), a half-open one its probes in flight and successes so far, a forced state its override.
    /// - The thresholds apply to the next call admitted or recorded. The consecutive-failure count is kept: one
    ///   already at or over a lowered `failure_threshold` does not trip here but on the next failure recorded
    ///   (a success still resets it first). Likewise a lowered `half_open_max_calls` admits no new probe until
    ///   enough of those in flight have reported, and a lowered `success_threshold` closes on the next probe
    ///   success.
    /// - The rate window keeps its most recent `min(old, new)` results, in order, and recounts their failures
    ///   and slow calls, so a shrunk window judges only the newest calls and a grown one keeps them all. A
    ///   result keeps the slow flag it was recorded with: a new `slow_call_duration` applies to calls recorded
    ///   from now on. With both rate thresholds off nothing is recorded in the window, so it is emptied rather
    ///   than left stale for the day they are turned on again.
    /// - `mode` applies from the next admission: switched to observe, an open circuit lets calls through as
    ///   shadows.
    /// - The backoff is kept as the number of failed probes since the circuit last closed, and the open period
    ///   it stands for is recomputed under the new settings: `recovery_timeout` grown by `recovery_backoff`
    ///   once per failed probe, clamped to `recovery_timeout_max`. It applies to the next trip or reopen, with
    ///   the new `recovery_jitter`; a forced open started later uses it too.
    pub fn reconfigure(&mut self, settings: Settings, _now: Instant) {
        let mut open_period = settings.recovery_timeout;
        for _ in 0..self.reopens {
            let grown = backed_off(open_period, &settings);
            if grown == open_period {
                // At the max (or a backoff of 1): further failures change nothing.
                break;
            }
            open_period = grown;
        }
        self.open_period = open_period;
        self.settings = settings;
        self.window.resize(self.settings.window_size);
        if !self.rates_on() {
            self.window.clear();
        }
    }

    /// A probe was admitted but never reported (its caller went away). Frees its slot.
    pub fn abandon(&mut self, kind: CallKind) {
        if let (CallKind::Probe, Inner::HalfOpen { in_flight, .. }) = (kind, &mut self.inner) {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Applies a manual override. Returns the transition if the state changed.
    pub fn apply(&mut self, now: Instant, action: Override) -> Option<Transition> {
        let reason = Reason::Manual(action);
        match action {
            Override::ForceOpen => {
                self.forced = Some(Forced::Open);
                let until = now + self.open_period;
                self.change(now, Inner::Open { until }, reason)
            }
            Override::ForceClosed => {
                self.forced = Some(Forced::Closed);
                self.change(now, Inner::Closed, reason)
            }
            Override::Reset => {
                self.forced = None;
                self.consecutive_failures = 0;
                self.open_period = self.settings.recovery_timeout;
                self.reopens = 0;
                self.change(now, Inner::Closed, reason)
            }
        }
    }

    /// Moves to `inner` unless already in that state (in which case only the state's data is replaced).
    fn change(&mut self, now: Instant, inner: Inner, reason: Reason) -> Option<Transition> {
        if std::mem::discriminant(&self.inner) == std::mem::discriminant(&inner) {
            self.inner = inner;
            self.window.clear();
            return None;
        }
        Some(self.enter(now, inner, reason))
    }

    fn trip(&mut self, now: Instant, reason: Reason) -> Transition {
        let until = now + self.jittered(self.open_period);
        self.enter(now, Inner::Open { until }, reason)
    }

    fn reopen(&mut self, now: Instant, reason: Reason) -> Transition {
        self.open_period = backed_off(self.open_period, &self.settings);
        self.reopens = self.reopens.saturating_add(1);
        self.trip(now, reason)
    }

    fn expire_stuck_probe(&mut self, now: Instant) -> Option<Transition> {
        match self.inner {
            Inner::HalfOpen {
                in_flight, last_probe, ..
            } if in_flight > 0 && now.duration_since(last_probe) > self.settings.probe_timeout => {
                Some(self.reopen(now, Reason::ProbeTimedOut))
            }
            _ => None,
        }
    }

    fn enter(&mut self, now: Instant, inner: Inner, reason: Reason) -> Transition {
        let transition = Transition {
            from: self.state(),
            to: match inner {
                Inner::Closed => State::Closed,
                Inner::Open { .. } => State::Open,
                Inner::HalfOpen { .. } => State::HalfOpen,
            },
            reason,
            at: now,
            previous_lasted: now.saturating_duration_since(self.entered_at),
            consecutive_failures: self.consecutive_failures,
            mode: self.settings.mode,
        };
        if inner == Inner::Closed {
            self.consecutive_failures = 0;
        }
        self.inner = inner;
        self.entered_at = now;
        self.window.clear();
        transition
    }

    /// `period` stretched by a random fraction in `[0, recovery_jitter)` of itself.
    fn jittered(&mut self, period: Duration) -> Duration {
        period.mul_f64(1.0 + self.settings.recovery_jitter * self.rng.unit())
    }
}

/// The open period after one more failed probe than `period`'s: grown by the backoff, up to the max.
fn backed_off(period: Duration, settings: &Settings) -> Duration {
    period
        .mul_f64(settings.recovery_backoff)
        .min(settings.recovery_timeout_max)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "window_tests.rs"]
mod window_tests;
