//! Every figure the breaker and the fallback cache know, as Prometheus metrics.
//!
//! The counters here are the single source of truth: the JSON health routes read the same values, so the two
//! can never disagree. Label values come from fixed sets (op names, states, HTTP codes), never from keys or
//! client input. Each labelled child is resolved once at start into an array indexed by op / state / code, so
//! recording on the request path is a lock-free atomic add, never a lookup in a shared map.
//!
//! Gauges that mirror other components (circuit state, consecutive failures, cache size, the breaker's mode,
//! override and rate window in [`gauges`]) are refreshed when metrics are rendered, from the component itself.
//!
//! The per-op histograms are created on an op's first use, not at start: a sidecar exposes the series of the ops
//! it serves, not ~900 empty bucket series of the ops it never sees. Each op's child sits in a `OnceLock`, so
//! after the first call recording is the same atomic add, without a map lookup or a lock.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::breaker::{Breaker, Observer, State, Transition};
use crate::cache::FallbackCache;
use crate::op::OpName;

mod gauges;
pub(crate) use gauges::{override_name, Counted, Saturation};

/// Label values of `redguard_redis_command_duration_seconds{op}`: the typed ops, then the calls that are not
/// one typed op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisCall {
    Op(OpName),
    /// A raw command from `/v1/command`.
    Command,
    /// A whole `/v1/pipeline` batch.
    Pipeline,
    /// The rate limiter's script.
    RateLimit,
}

const EXTRA_CALLS: [&str; 3] = ["command", "pipeline", "ratelimit"];
const N_CALLS: usize = OpName::ALL.len() + EXTRA_CALLS.len();

impl RedisCall {
    fn index(self) -> usize {
        match self {
            RedisCall::Op(op) => op.index(),
            RedisCall::Command => OpName::ALL.len(),
            RedisCall::Pipeline => OpName::ALL.len() + 1,
            RedisCall::RateLimit => OpName::ALL.len() + 2,
        }
    }

    fn label(i: usize) -> &'static str {
        OpName::ALL
            .get(i)
            .map(|op| op.as_str())
            .unwrap_or_else(|| EXTRA_CALLS[i - OpName::ALL.len()])
    }
}

/// Label values of `redguard_api_requests_total{op}`: every [`RedisCall`], then the routes that call no Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    Op(OpName),
    Command,
    Pipeline,
    RateLimit,
    /// A request that could not be parsed (into an op, a command, a pipeline or a rate-limit check).
    Invalid,
    Breaker,
    Health,
    Reload,
}

const EXTRA_ROUTES: [&str; 4] = ["invalid", "breaker", "health", "reload"];
const N_ROUTES: usize = N_CALLS + EXTRA_ROUTES.len();

impl ApiRoute {
    fn index(self) -> usize {
        match self {
            ApiRoute::Op(op) => RedisCall::Op(op).index(),
            ApiRoute::Command => RedisCall::Command.index(),
            ApiRoute::Pipeline => RedisCall::Pipeline.index(),
            ApiRoute::RateLimit => RedisCall::RateLimit.index(),
            ApiRoute::Invalid => N_CALLS,
            ApiRoute::Breaker => N_CALLS + 1,
            ApiRoute::Health => N_CALLS + 2,
            ApiRoute::Reload => N_CALLS + 3,
        }
    }

    fn label(i: usize) -> &'static str {
        if i < N_CALLS {
            RedisCall::label(i)
        } else {
            EXTRA_ROUTES[i - N_CALLS]
        }
    }
}

/// What the RESP socket answered a command with: the `code` of `redguard_api_requests_total{listener="resp"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespResult {
    /// Redis's reply, the fallback cache's, or redguard's own (PING, HELLO ...).
    Ok,
    /// Redis answered with an error (WRONGTYPE ...): passed through.
    RedisError,
    /// `-CIRCUITOPEN`.
    CircuitOpen,
    /// `-UNAVAILABLE`.
    Unavailable,
    /// `-TIMEOUT`.
    Timeout,
    /// Refused by the command policy.
    Denied,
}

impl RespResult {
    const ALL: [&'static str; 6] = ["ok", "redis_error", "circuit_open", "unavailable", "timeout", "denied"];
}

/// Where a rate-limit decision came from, as counted in `redguard_ratelimit_decisions_total{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionSource {
    Redis,
    /// This sidecar's in-process limiter, while Redis is unavailable.
    Local,
    /// The configured fail-open / fail-closed answer, while Redis is unavailable.
    Default,
}

impl DecisionSource {
    pub const ALL: [DecisionSource; 3] = [DecisionSource::Redis, DecisionSource::Local, DecisionSource::Default];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionSource::Redis => "redis",
            DecisionSource::Local => "local",
            DecisionSource::Default => "default",
        }
    }
}

/// HTTP statuses the API answers with; anything else is counted as "other".
const CODES: [u16; 11] = [200, 400, 403, 404, 405, 408, 413, 422, 500, 503, 504];

/// Outcome of one call as counted in `redguard_calls_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Success,
    Failure,
    Rejected,
    AppError,
}

/// `redis_command_duration_seconds` buckets: 100µs .. 2.5s.
const REDIS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// `redguard_notification_duration_seconds` buckets: 5ms .. 30s (one HTTP attempt, bounded by `notify.timeout`).
const NOTIFY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One sink's notification series, resolved once when the notifier is built.
#[derive(Clone)]
pub struct SinkMetrics {
    pub delivered: IntCounter,
    pub failed: IntCounter,
    /// Dropped before any attempt: the sink's queue was full, or shutdown's grace ran out.
    pub dropped: IntCounter,
    /// Duration of each HTTP attempt.
    pub duration: Histogram,
}

/// Per-node health in cluster mode. `node` is a master's "host:port" for the first `redis.node_metrics_limit`
/// masters seen, or "other" (summing the rest), so the label set stays bounded. The gauges count nodes (0 or 1
/// for an address, 0..n for "other").
pub struct NodeMetrics {
    /// `redguard_redis_node_up`: nodes whose last call (or health check) succeeded.
    pub up: IntGaugeVec,
    /// `redguard_redis_node_circuit_open`: nodes whose own breaker is not closed.
    pub circuit_open: IntGaugeVec,
    /// `redguard_redis_node_failures_total`: failed calls and health checks.
    pub failures: IntCounterVec,
    /// `redguard_redis_node_rejected_total`: calls failed fast because the node's breaker was open.
    pub rejected: IntCounterVec,
}

impl NodeMetrics {
    fn new(registry: &Registry) -> NodeMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["node"]).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("metric names are unique");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["node"]).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("metric names are unique");
            c
        };
        NodeMetrics {
            up: gauge(
                "redguard_redis_node_up",
                "Cluster mode: master nodes whose last call or health check succeeded.",
            ),
            circuit_open: gauge(
                "redguard_redis_node_circuit_open",
                "Cluster mode: master nodes whose own circuit is open or half-open.",
            ),
            failures: counter(
                "redguard_redis_node_failures_total",
                "Cluster mode: failed calls and health checks, by master node.",
            ),
            rejected: counter(
                "redguard_redis_node_rejected_total",
                "Cluster mode: calls failed fast because the node's circuit was open.",
            ),
        }
    }
}

/// All of redguard's metrics, registered in one registry.
pub struct Metrics {
    /// Cluster mode's per-node figures (empty in the other modes).
    pub nodes: NodeMetrics,
    registry: Registry,
    circuit_state: [IntGauge; 3],
    pub consecutive_failures: IntGauge,
    calls: [IntCounter; 4],
    pub fallback_cache: IntCounter,
    pub fallback_default: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub last_failure_timestamp: Gauge,
    pub redis_up: IntGauge,
    pub degraded: IntGauge,
    transitions: IntCounterVec,
    circuit: gauges::CircuitGauges,
    /// Open connections and requests in flight on the Unix socket, kept by its accept loop.
    pub(crate) api_saturation: Saturation,
    /// The RESP socket's (`listener="resp"`).
    pub(crate) resp_saturation: Saturation,
    redis_hist: prometheus::HistogramVec,
    /// Per [`RedisCall`] index, created on first use.
    redis_duration: Vec<OnceLock<Histogram>>,
    /// Indexed by `DecisionSource as usize * 2 + allowed`.
    ratelimit_decisions: Vec<IntCounter>,
    api_requests_vec: IntCounterVec,
    api_requests: Vec<[OnceLock<IntCounter>; CODES.len() + 1]>,
    api_hist: prometheus::HistogramVec,
    /// Per [`ApiRoute`] index, created on first use.
    api_duration: Vec<OnceLock<Histogram>>,
    /// `listener="resp"`: by position in the command table (the last: `other`), then by [`RespResult`].
    resp_requests: Vec<[OnceLock<IntCounter>; RespResult::ALL.len()]>,
    resp_duration: Vec<OnceLock<Histogram>>,
    notifications: IntCounterVec,
    notification_duration: prometheus::HistogramVec,
    /// Notifications waiting in the sinks' queues.
    pub notification_queue_depth: IntGauge,
}

impl Metrics {
    /// Brings the gauges that mirror the breaker and the cache up to date; called before `/metrics` renders.
    pub fn mirror(&self, breaker: &Breaker, cache: &FallbackCache) {
        let snapshot = breaker.snapshot();
        self.consecutive_failures.set(i64::from(snapshot.consecutive_failures));
        self.circuit.mirror(&snapshot);
        // A reload may change the mode without a transition.
        self.set_state(snapshot.state, snapshot.degraded());
        self.cache_entries.set(cache.len() as i64);
        self.cache_bytes.set(cache.bytes() as i64);
    }

    pub fn new(redis_mode: &str) -> Metrics {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registers once");

        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect("metric names are unique");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };

        let state_vec = IntGaugeVec::new(
            Opts::new(
                "redguard_circuit_state",
                "Circuit state: 1 for the current state, 0 for the others.",
            ),
            &["state"],
        )
        .expect("valid metric");
        reg(Box::new(state_vec.clone()));
        let circuit_state = State::ALL.map(|s| state_vec.with_label_values(&[s.as_str()]));
        circuit_state[State::Closed.index()].set(1);

        let calls_vec = IntCounterVec::new(
            Opts::new("redguard_calls_total", "Calls to Redis through the breaker, by result."),
            &["result"],
        )
        .expect("valid metric");
        reg(Box::new(calls_vec.clone()));
        let calls = ["success", "failure", "rejected", "app_error"].map(|r| calls_vec.with_label_values(&[r]));

        let fallback_vec = IntCounterVec::new(
            Opts::new("redguard_fallback_total", "Answers served without Redis, by source."),
            &["source"],
        )
        .expect("valid metric");
        reg(Box::new(fallback_vec.clone()));

        let last_failure_timestamp = Gauge::new(
            "redguard_circuit_last_failure_timestamp_seconds",
            "Unix time of the last failed Redis call (0 if none yet).",
        )
        .expect("valid metric");
        reg(Box::new(last_failure_timestamp.clone()));

        let transitions = IntCounterVec::new(
            Opts::new("redguard_circuit_transitions_total", "Circuit state changes."),
            &["from", "to"],
        )
        .expect("valid metric");
        reg(Box::new(transitions.clone()));
        // Expose every possible transition from the start, so rate() and increase() see the first one.
        for from in State::ALL {
            for to in State::ALL.into_iter().filter(|&to| to != from) {
                transitions.with_label_values(&[from.as_str(), to.as_str()]);
            }
        }

        let redis_hist = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "redguard_redis_command_duration_seconds",
                "Duration of Redis commands, by op.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid metric");
        reg(Box::new(redis_hist.clone()));
        let redis_duration = (0..N_CALLS).map(|_| OnceLock::new()).collect();

        let decisions_vec = IntCounterVec::new(
            Opts::new(
                "redguard_ratelimit_decisions_total",
                "Rate-limit decisions, by where they were made and whether the call was allowed.",
            ),
            &["source", "allowed"],
        )
        .expect("valid metric");
        reg(Box::new(decisions_vec.clone()));
        let ratelimit_decisions = DecisionSource::ALL
            .iter()
            .flat_map(|s| ["false", "true"].map(|allowed| decisions_vec.with_label_values(&[s.as_str(), allowed])))
            .collect();

        let api_vec = IntCounterVec::new(
            Opts::new(
                "redguard_api_requests_total",
                "API requests, by listener (http, resp), op and status (HTTP code, or RESP reply kind).",
            ),
            &["listener", "op", "code"],
        )
        .expect("valid metric");
        reg(Box::new(api_vec.clone()));
        // Children are created on first use (then cached), so only label sets that occurred are exported.
        let api_requests = (0..N_ROUTES)
            .map(|_| std::array::from_fn(|_| OnceLock::new()))
            .collect();

        let api_hist = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "redguard_api_request_duration_seconds",
                "Duration of API requests, by listener and op.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
            &["listener", "op"],
        )
        .expect("valid metric");
        reg(Box::new(api_hist.clone()));
        let api_duration = (0..N_ROUTES).map(|_| OnceLock::new()).collect();
        // The RESP socket's, per command of the command table (and `other`), made on first use like the above.
        let resp_commands = crate::commands::all().len() + 1;
        let resp_requests = (0..resp_commands)
            .map(|_| std::array::from_fn(|_| OnceLock::new()))
            .collect();
        let resp_duration = (0..resp_commands).map(|_| OnceLock::new()).collect();

        let build_info = IntGaugeVec::new(
            Opts::new("redguard_build_info", "Build and mode of this redguard; always 1."),
            &["version", "redis_mode"],
        )
        .expect("valid metric");
        reg(Box::new(build_info.clone()));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), redis_mode])
            .set(1);

        let notifications = IntCounterVec::new(
            Opts::new(
                "redguard_notifications_total",
                "State-change notifications, by sink and result (delivered, failed, dropped).",
            ),
            &["sink", "result"],
        )
        .expect("valid metric");
        reg(Box::new(notifications.clone()));
        let notification_duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "redguard_notification_duration_seconds",
                "Duration of each HTTP attempt to deliver a notification, by sink.",
            )
            .buckets(NOTIFY_BUCKETS.to_vec()),
            &["sink"],
        )
        .expect("valid metric");
        reg(Box::new(notification_duration.clone()));

        let [api_saturation, resp_saturation] = Saturation::new(&registry);
        Metrics {
            nodes: NodeMetrics::new(&registry),
            circuit: gauges::CircuitGauges::new(&registry),
            api_saturation,
            resp_saturation,
            circuit_state,
            consecutive_failures: gauge(
                "redguard_circuit_consecutive_failures",
                "Consecutive failed Redis calls.",
            ),
            calls,
            fallback_cache: fallback_vec.with_label_values(&["cache"]),
            fallback_default: fallback_vec.with_label_values(&["default"]),
            cache_hits: counter(
                "redguard_fallback_cache_hits_total",
                "Fallback reads answered from the cache.",
            ),
            cache_misses: counter(
                "redguard_fallback_cache_misses_total",
                "Fallback reads the cache could not answer.",
            ),
            cache_entries: gauge("redguard_fallback_cache_entries", "Entries in the fallback cache."),
            cache_bytes: gauge(
                "redguard_fallback_cache_bytes",
                "Bytes (keys + values) in the fallback cache.",
            ),
            last_failure_timestamp,
            redis_up: gauge("redguard_redis_up", "1 if the last call to Redis succeeded, else 0."),
            degraded: gauge(
                "redguard_degraded",
                "1 while calls are turned away from Redis: the circuit is not closed and breaker.mode is enforce.",
            ),
            transitions,
            redis_hist,
            redis_duration,
            ratelimit_decisions,
            api_requests_vec: api_vec,
            api_requests,
            api_hist,
            api_duration,
            resp_requests,
            resp_duration,
            notifications,
            notification_duration,
            notification_queue_depth: gauge(
                "redguard_notification_queue_depth",
                "Notifications waiting to be sent, over all sinks.",
            ),
            registry,
        }
    }

    /// The series of one sink. Sink names come from the config (validated, unique), so the label set is bounded.
    /// Every result is exposed from the start, so `increase()` sees the first delivery or failure.
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let result = |r: &str| self.notifications.with_label_values(&[name, r]);
        SinkMetrics {
            delivered: result("delivered"),
            failed: result("failed"),
            dropped: result("dropped"),
            duration: self.notification_duration.with_label_values(&[name]),
        }
    }

    /// `redguard_redis_info{target, mode}` = 1: which Redis this sidecar fronts, so alert rules can group a
    /// fleet's circuits by Redis (one page per outage, not one per pod). `target` is
    /// [`crate::config::RedisConfig::paging_target`], the same text as the PagerDuty `dedup_key`; it changes
    /// only with a restart, so it is set once. A second call is refused (the name is registered).
    pub fn set_redis_info(&self, target: &str, mode: &str) {
        let info = IntGaugeVec::new(
            Opts::new(
                "redguard_redis_info",
                "The Redis this sidecar fronts (no credentials); always 1.",
            ),
            &["target", "mode"],
        )
        .expect("valid metric");
        if self.registry.register(Box::new(info.clone())).is_ok() {
            info.with_label_values(&[target, mode]).set(1);
        }
    }

    pub fn call(&self, result: CallResult) {
        self.calls[result as usize].inc();
    }

    pub fn calls(&self, result: CallResult) -> u64 {
        self.calls[result as usize].get()
    }

    pub fn observe_redis(&self, call: RedisCall, seconds: f64) {
        let i = call.index();
        self.redis_duration[i]
            .get_or_init(|| self.redis_hist.with_label_values(&[RedisCall::label(i)]))
            .observe(seconds);
    }

    pub fn ratelimit_decision(&self, source: DecisionSource, allowed: bool) {
        self.ratelimit_decisions[source as usize * 2 + usize::from(allowed)].inc();
    }

    pub fn observe_api(&self, route: ApiRoute, status: u16, seconds: f64) {
        let code = CODES.iter().position(|&c| c == status).unwrap_or(CODES.len());
        let i = route.index();
        self.api_requests[i][code]
            .get_or_init(|| {
                let code = CODES.get(code).map(|c| c.to_string()).unwrap_or_else(|| "other".into());
                self.api_requests_vec
                    .with_label_values(&["http", ApiRoute::label(i), code.as_str()])
            })
            .inc();
        self.api_duration[i]
            .get_or_init(|| self.api_hist.with_label_values(&["http", ApiRoute::label(i)]))
            .observe(seconds);
    }

    /// One command on the RESP socket. `command` is its position in the command table ([`crate::commands::position`]),
    /// `None` for a name the table does not know (counted as `other`, never by the name the client sent).
    pub fn observe_resp(&self, command: Option<usize>, result: RespResult, seconds: f64) {
        let rows = crate::commands::all();
        let i = command.filter(|&i| i < rows.len()).unwrap_or(rows.len());
        let op = || {
            rows.get(i)
                .map_or_else(|| "other".to_owned(), |row| row.name.to_ascii_lowercase())
        };
        self.resp_requests[i][result as usize]
            .get_or_init(|| {
                self.api_requests_vec
                    .with_label_values(&["resp", &op(), RespResult::ALL[result as usize]])
            })
            .inc();
        self.resp_duration[i]
            .get_or_init(|| self.api_hist.with_label_values(&["resp", &op()]))
            .observe(seconds);
    }

    fn set_state(&self, state: State, degraded: bool) {
        for s in State::ALL {
            self.circuit_state[s.index()].set(i64::from(s == state));
        }
        self.degraded.set(i64::from(degraded));
    }

    /// The text exposition of every metric.
    /// The registry, for metrics defined next to the code they measure ([`crate::reload`]).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text exposition is UTF-8")
    }
}

impl Observer for Metrics {
    fn on_transition(&self, t: &Transition, _last_error: Option<&str>) {
        self.transitions
            .with_label_values(&[t.from.as_str(), t.to.as_str()])
            .inc();
        // As `Snapshot::degraded`: observe mode turns no call away.
        self.set_state(t.to, t.to != State::Closed && t.mode == crate::breaker::Mode::Enforce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_observed_api_label_sets_appear_and_counts_add_up() {
        let m = Metrics::new("standalone");
        m.observe_api(ApiRoute::Op(OpName::Get), 200, 0.001);
        m.observe_api(ApiRoute::Op(OpName::Get), 200, 0.001);
        m.observe_api(ApiRoute::Invalid, 418, 0.001);
        let text = m.render();
        assert!(
            text.contains(r#"redguard_api_requests_total{code="200",listener="http",op="get"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"redguard_api_requests_total{code="other",listener="http",op="invalid"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"op="set",code"#) && !text.contains(r#"code="503""#),
            "{text}"
        );
        assert!(
            text.contains(r#"redguard_build_info{redis_mode="standalone",version=""#),
            "{text}"
        );
        assert!(text.contains(r#"redguard_circuit_state{state="closed"} 1"#), "{text}");
    }

    #[test]
    fn every_route_and_call_has_its_own_label() {
        let m = Metrics::new("standalone");
        let routes = OpName::ALL.map(ApiRoute::Op).into_iter().chain([
            ApiRoute::Command,
            ApiRoute::Pipeline,
            ApiRoute::RateLimit,
            ApiRoute::Invalid,
            ApiRoute::Breaker,
            ApiRoute::Health,
            ApiRoute::Reload,
        ]);
        let labels: Vec<&str> = routes.map(|r| ApiRoute::label(r.index())).collect();
        let unique: std::collections::HashSet<_> = labels.iter().collect();
        assert_eq!(unique.len(), N_ROUTES, "{labels:?}");
        m.observe_redis(RedisCall::Pipeline, 0.001);
        m.observe_api(ApiRoute::RateLimit, 200, 0.001);
        m.ratelimit_decision(DecisionSource::Local, false);
        let text = m.render();
        for line in [
            r#"redguard_redis_command_duration_seconds_count{op="pipeline"} 1"#,
            r#"redguard_api_requests_total{code="200",listener="http",op="ratelimit"} 1"#,
            r#"redguard_ratelimit_decisions_total{allowed="false",source="local"} 1"#,
            r#"redguard_ratelimit_decisions_total{allowed="true",source="redis"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
