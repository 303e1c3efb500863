//! The health figures, in the JSON shapes of the original design, read from the same counters as `/metrics`.
//!
//! Served on the admin listener and on the Unix socket. `GET /api/v1/health/redis` answers
//! `{redis_available, circuit_breaker: {..figures..}, degraded_mode}`; `GET /api/v1/health/circuit-breaker`
//! answers the same figures plus the time the state was entered and the configuration in force, and in cluster
//! mode a `nodes` array with each master's own breaker (left out in the other modes, so their shape is unchanged).
//!
//! A circuit that is open because an operator forced it, or that only would be open (observe mode), is not an
//! outage, and the figures say so: `mode` and `override` name them, and `status` sums them up ([`Status`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend::{Backend, NodeView};
use crate::breaker::{Mode, Settings, Snapshot, State};
use crate::client::Resilient;
use crate::clock::iso8601;
use crate::metrics::{override_name, CallResult};

/// What the circuit means for the application, in one word: whether calls are being turned away from Redis,
/// and if so, whether Redis or an operator is the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Closed, or observe mode's computed state is closed: calls go to Redis.
    Ok,
    /// Open or half-open by the breaker's own judgement, in enforce mode: calls are turned away. The one
    /// status that is an outage.
    Outage,
    /// Forced open (`POST /v1/breaker`): calls are turned away because an operator said so (in observe mode they
    /// still go to Redis).
    ForcedOpen,
    /// Forced closed: calls go to Redis whatever it does.
    ForcedClosed,
    /// Observe mode, and the breaker would have the circuit open or half-open: every call still goes to Redis.
    Observing,
}

impl Status {
    pub(crate) fn of(s: &Snapshot) -> Status {
        match (s.forced, s.mode, s.state) {
            (Some(State::Open), ..) => Status::ForcedOpen,
            (Some(_), ..) => Status::ForcedClosed,
            (None, _, State::Closed) => Status::Ok,
            (None, Mode::Observe, _) => Status::Observing,
            (None, Mode::Enforce, _) => Status::Outage,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct CircuitFigures {
    pub state: &'static str,
    /// `enforce` or `observe` (`breaker.mode`, which a reload may change).
    pub mode: &'static str,
    /// The manual override in force: `none`, `force_open` or `force_closed`.
    #[serde(rename = "override")]
    pub override_: &'static str,
    pub status: Status,
    /// Calls are being turned away from Redis ([`Snapshot::degraded`]), for `degraded_mode`.
    #[serde(skip)]
    pub degraded: bool,
    pub failure_count: u32,
    pub total_calls: u64,
    pub successful_calls: u64,
    pub failed_calls: u64,
    pub fallback_calls: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_size: usize,
    pub last_failure_time: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RedisHealth {
    pub redis_available: bool,
    pub circuit_breaker: CircuitFigures,
    pub degraded_mode: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct CircuitBreakerHealth {
    #[serde(flatten)]
    pub figures: CircuitFigures,
    pub state_entered_at: String,
    /// Seconds until the breaker admits a probe, while open.
    pub seconds_until_half_open: Option<f64>,
    pub forced: Option<&'static str>,
    pub config: ConfigInForce,
    /// Cluster mode: each master's own breaker; absent (not null) in the other modes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeView>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ConfigInForce {
    pub mode: &'static str,
    pub failure_threshold: u32,
    pub failure_rate_threshold: Option<f64>,
    pub slow_call_duration_seconds: Option<f64>,
    pub slow_call_rate_threshold: Option<f64>,
    pub window_size: usize,
    pub minimum_calls: usize,
    pub recovery_timeout_seconds: f64,
    pub recovery_jitter: f64,
    pub recovery_backoff: f64,
    pub recovery_timeout_max_seconds: f64,
    pub half_open_max_calls: u32,
    pub success_threshold: u32,
    pub command_timeout_seconds: f64,
}

/// The figures, read from the same counters `/metrics` renders.
pub(crate) fn figures<B: Backend>(client: &Resilient<B>) -> CircuitFigures {
    let m = client.metrics();
    let snapshot = client.breaker().snapshot();
    let cache = client.cache();

    let (ok, failed, rejected, app) = (
        m.calls(CallResult::Success),
        m.calls(CallResult::Failure),
        m.calls(CallResult::Rejected),
        m.calls(CallResult::AppError),
    );
    let last_failure = m.last_failure_timestamp.get();
    CircuitFigures {
        state: snapshot.state.as_str(),
        mode: snapshot.mode.as_str(),
        override_: override_name(snapshot.forced),
        status: Status::of(&snapshot),
        degraded: snapshot.degraded(),
        failure_count: snapshot.consecutive_failures,
        total_calls: ok + failed + rejected + app,
        // An application error (WRONGTYPE ...) is an answer from a healthy Redis.
        successful_calls: ok + app,
        failed_calls: failed,
        fallback_calls: m.fallback_cache.get() + m.fallback_default.get(),
        cache_hits: m.cache_hits.get(),
        cache_misses: m.cache_misses.get(),
        cache_size: cache.len(),
        last_failure_time: (last_failure > 0.0).then(|| iso8601(UNIX_EPOCH + Duration::from_secs_f64(last_failure))),
    }
}

pub(crate) fn redis<B: Backend>(client: &Resilient<B>) -> RedisHealth {
    let circuit_breaker = figures(client);
    RedisHealth {
        redis_available: client.metrics().redis_up.get() == 1,
        // From the same snapshot as the figures, so the two cannot disagree.
        degraded_mode: circuit_breaker.degraded,
        circuit_breaker,
    }
}

pub(crate) fn circuit_breaker<B: Backend>(client: &Resilient<B>) -> CircuitBreakerHealth {
    let figures = figures(client);
    let snapshot = client.breaker().snapshot();
    let s: Settings = client.breaker().settings();
    let in_state = snapshot.entered_at.elapsed();
    CircuitBreakerHealth {
        figures,
        state_entered_at: iso8601(SystemTime::now() - in_state),
        seconds_until_half_open: snapshot.until_half_open.map(|d| d.as_secs_f64()),
        forced: snapshot.forced.map(State::as_str),
        config: ConfigInForce {
            mode: s.mode.as_str(),
            failure_threshold: s.failure_threshold,
            failure_rate_threshold: s.failure_rate_threshold,
            slow_call_duration_seconds: s.slow_call_duration.map(|d| d.as_secs_f64()),
            slow_call_rate_threshold: s.slow_call_rate_threshold,
            window_size: s.window_size,
            minimum_calls: s.minimum_calls,
            recovery_timeout_seconds: s.recovery_timeout.as_secs_f64(),
            recovery_jitter: s.recovery_jitter,
            recovery_backoff: s.recovery_backoff,
            recovery_timeout_max_seconds: s.recovery_timeout_max.as_secs_f64(),
            half_open_max_calls: s.half_open_max_calls,
            success_threshold: s.success_threshold,
            command_timeout_seconds: s.probe_timeout.as_secs_f64(),
        },
        nodes: client.nodes(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::breaker::WindowFigures;

    fn snapshot(state: State, forced: Option<State>, mode: Mode) -> Snapshot {
        Snapshot {
            state,
            consecutive_failures: 0,
            entered_at: Instant::now(),
            until_half_open: None,
            forced,
            mode,
            window: WindowFigures::default(),
        }
    }

    #[test]
    fn only_a_measured_open_or_half_open_in_enforce_mode_is_an_outage() {
        use Mode::{Enforce, Observe};
        use State::{Closed, HalfOpen, Open};
        let cases = [
            (Closed, None, Enforce, Status::Ok, false),
            (Open, None, Enforce, Status::Outage, true),
            (HalfOpen, None, Enforce, Status::Outage, true),
            (Open, Some(Open), Enforce, Status::ForcedOpen, true),
            (Closed, Some(Closed), Enforce, Status::ForcedClosed, false),
            (Closed, None, Observe, Status::Ok, false),
            (Open, None, Observe, Status::Observing, false),
            (HalfOpen, None, Observe, Status::Observing, false),
            (Open, Some(Open), Observe, Status::ForcedOpen, false),
            (Closed, Some(Closed), Observe, Status::ForcedClosed, false),
        ];
        for (state, forced, mode, status, degraded) in cases {
            let s = snapshot(state, forced, mode);
            assert_eq!(
                (Status::of(&s), s.degraded()),
                (status, degraded),
                "{state:?} forced {forced:?} in {mode:?}"
            );
        }
    }
}
