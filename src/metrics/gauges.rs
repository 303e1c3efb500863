//! The gauges that say what the breaker's state alone cannot, and how full the API listener is.
//!
//! `redguard_circuit_state` says open whether Redis failed, an operator forced it, or observe mode only computed
//! it; `redguard_circuit_mode` and `redguard_circuit_override` tell those apart (as Resilience4j's
//! `forced_open` / `metrics_only` states do), so an alert can page on a measured outage only. The window gauges
//! show what the rate thresholds judge. All are set from one breaker [`Snapshot`] when `/metrics` renders.
//!
//! The saturation gauges are kept by the accept loop itself ([`crate::api::server`]): an atomic add per
//! connection and per request, no lock.

use prometheus::{Gauge, IntGauge, IntGaugeVec, Opts, Registry};

use crate::breaker::{Mode, Snapshot, State};

const MODES: [&str; 2] = ["enforce", "observe"];
const OVERRIDES: [&str; 3] = ["none", "force_open", "force_closed"];

/// `override` label of a snapshot: the manual override in force, as `POST /v1/breaker` names it.
pub(crate) fn override_name(forced: Option<State>) -> &'static str {
    OVERRIDES[override_index(forced)]
}

fn override_index(forced: Option<State>) -> usize {
    match forced {
        None => 0,
        Some(State::Open) => 1,
        // The machine forces only open or closed.
        Some(State::Closed | State::HalfOpen) => 2,
    }
}

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Enforce => 0,
        Mode::Observe => 1,
    }
}

/// Mode, override and rate-window gauges of the sidecar's breaker.
pub(super) struct CircuitGauges {
    mode: [IntGauge; 2],
    overrides: [IntGauge; 3],
    failure_rate: Gauge,
    slow_call_rate: Gauge,
    window_calls: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl CircuitGauges {
    pub(super) fn new(registry: &Registry) -> CircuitGauges {
        let mode_vec = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "redguard_circuit_mode",
                    "Breaker mode (breaker.mode): 1 for the current one, 0 for the other.",
                ),
                &["mode"],
            )
            .expect("valid metric"),
        );
        let override_vec = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "redguard_circuit_override",
                    "Manual override in force (POST /v1/breaker): 1 for the current one, 0 for the others.",
                ),
                &["override"],
            )
            .expect("valid metric"),
        );
        let gauge = |name: &str, help: &str| register(registry, Gauge::new(name, help).expect("valid metric"));
        let gauges = CircuitGauges {
            mode: MODES.map(|m| mode_vec.with_label_values(&[m])),
            overrides: OVERRIDES.map(|o| override_vec.with_label_values(&[o])),
            failure_rate: gauge(
                "redguard_circuit_failure_rate",
                "Failed calls over the calls in the breaker's rate window (0..1; 0 while it is empty).",
            ),
            slow_call_rate: gauge(
                "redguard_circuit_slow_call_rate",
                "Calls slower than breaker.slow_call_duration over the calls in the rate window (0..1).",
            ),
            window_calls: register(
                registry,
                IntGauge::new(
                    "redguard_circuit_window_calls",
                    "Calls in the breaker's rate window (kept only while a rate threshold is set).",
                )
                .expect("valid metric"),
            ),
        };
        gauges.mode[0].set(1);
        gauges.overrides[0].set(1);
        gauges
    }

    pub(super) fn mirror(&self, s: &Snapshot) {
        let (mode, forced) = (mode_index(s.mode), override_index(s.forced));
        for (i, g) in self.mode.iter().enumerate() {
            g.set(i64::from(i == mode));
        }
        for (i, g) in self.overrides.iter().enumerate() {
            g.set(i64::from(i == forced));
        }
        self.failure_rate.set(s.window.failure_rate());
        self.slow_call_rate.set(s.window.slow_call_rate());
        self.window_calls.set(s.window.calls as i64);
    }
}

/// How full a listener is (`listener`: `http`, the JSON socket; `resp`, the Redis-protocol socket): open
/// connections and requests being answered, against its `api.max_connections` (connections beyond it wait in the
/// listen backlog, unseen here).
#[derive(Debug, Clone)]
pub(crate) struct Saturation {
    pub connections: IntGauge,
    pub inflight: IntGauge,
    pub max_connections: IntGauge,
}

impl Saturation {
    /// The gauges of both listeners, registered once: `[http, resp]`.
    pub(super) fn new(registry: &Registry) -> [Saturation; 2] {
        let family = |name: &str, help: &str| {
            register(
                registry,
                IntGaugeVec::new(Opts::new(name, help), &["listener"]).expect("valid metric"),
            )
        };
        let connections = family("redguard_api_connections", "Connections open, by listener.");
        let inflight = family(
            "redguard_api_inflight_requests",
            "Requests (on the RESP socket: batches of commands) being answered now, by listener.",
        );
        let max_connections = family(
            "redguard_api_max_connections",
            "api.max_connections: connections a listener serves at once.",
        );
        ["http", "resp"].map(|listener| Saturation {
            connections: connections.with_label_values(&[listener]),
            inflight: inflight.with_label_values(&[listener]),
            max_connections: max_connections.with_label_values(&[listener]),
        })
    }
}

/// One unit of a gauge, given back when dropped: a request that is cancelled, or a connection that ends in an
/// error, is uncounted all the same.
pub(crate) struct Counted(IntGauge);

impl Counted {
    pub(crate) fn start(gauge: &IntGauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::breaker::WindowFigures;

    #[test]
    fn one_snapshot_sets_exactly_one_mode_and_one_override_and_the_window_figures() {
        let registry = Registry::new();
        let g = CircuitGauges::new(&registry);
        assert_eq!(g.mode.each_ref().map(|g| g.get()), [1, 0]);
        assert_eq!(g.overrides.each_ref().map(|g| g.get()), [1, 0, 0]);
        let mut s = Snapshot {
            state: State::Closed,
            consecutive_failures: 0,
            entered_at: Instant::now(),
            until_half_open: None,
            forced: Some(State::Closed),
            mode: Mode::Observe,
            window: WindowFigures {
                calls: 8,
                failures: 2,
                slow: 6,
            },
        };
        g.mirror(&s);
        assert_eq!(g.mode.each_ref().map(|g| g.get()), [0, 1]);
        assert_eq!(g.overrides.each_ref().map(|g| g.get()), [0, 0, 1]);
        assert_eq!(
            (g.window_calls.get(), g.failure_rate.get(), g.slow_call_rate.get()),
            (8, 0.25, 0.75)
        );
        s.forced = Some(State::Open);
        s.mode = Mode::Enforce;
        g.mirror(&s);
        assert_eq!(g.mode.each_ref().map(|g| g.get()), [1, 0]);
        assert_eq!(g.overrides.each_ref().map(|g| g.get()), [0, 1, 0]);
        assert_eq!(override_name(s.forced), "force_open");
        assert_eq!(override_name(None), "none");
        let text = String::from_utf8({
            let mut out = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out).unwrap();
            out
        })
        .unwrap();
        for line in [
            r#"redguard_circuit_mode{mode="observe"} 0"#,
            r#"redguard_circuit_override{override="force_closed"} 0"#,
            "redguard_circuit_failure_rate 0.25",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
