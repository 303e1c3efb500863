//! /metrics, the health JSON and the probes, checked against what the calls really did.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::faults::FaultProxy;
use common::{calls, http_tcp, metric_value, transitions, wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

/// Two probe successes are needed to close, so the half-open state lasts until the test's own call.
/// The recovery timeout leaves the counters read while open well clear of redguard's own first probe.
const CONFIG: &str =
    "breaker:\n  failure_threshold: 3\n  recovery_timeout: 5s\n  recovery_jitter: 0\n  success_threshold: 2\n";

fn get(rg: &Redguard, key: &str) -> Value {
    let r = rg.cmd(&json!({"op": "get", "key": key}).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn state_gauges(text: &str) -> [f64; 3] {
    ["closed", "open", "half_open"].map(|s| metric_value(text, &format!("redguard_circuit_state{{state=\"{s}\"}}")))
}

#[test]
fn metrics_and_health_move_exactly_as_the_calls_did_through_a_kill_and_restart() {
    let mut redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    // Let the start-up PING (which is not a call through the breaker) settle redis_up.
    wait_for("redis_up", Duration::from_secs(5), || {
        (rg.metric("redguard_redis_up") == 1.0).then_some(())
    });

    let m = rg.metrics();
    assert_eq!(state_gauges(&m), [1.0, 0.0, 0.0]);
    assert_eq!(calls(&m, "success"), 0.0);

    // 1 SET + 2 GETs succeed; the GETs fill the cache.
    assert_eq!(rg.cmd(r#"{"op":"set","key":"a","value":"1"}"#).status, 200);
    get(&rg, "a");
    get(&rg, "a");
    // One application error.
    assert_eq!(rg.cmd(r#"{"op":"hget","key":"a","field":"f"}"#).status, 422);

    redis.kill();
    // Three failures: two cache hits and one miss (answered with the default); the third trips the breaker.
    assert_eq!(get(&rg, "a")["source"], "cache");
    assert_eq!(get(&rg, "missing")["source"], "default");
    assert_eq!(get(&rg, "a")["source"], "cache");
    let m = rg.metrics();
    assert_eq!(state_gauges(&m), [0.0, 1.0, 0.0], "open after 3 failures");
    assert_eq!(metric_value(&m, "redguard_circuit_consecutive_failures"), 3.0);
    assert_eq!(metric_value(&m, "redguard_redis_up"), 0.0);
    assert_eq!(metric_value(&m, "redguard_degraded"), 1.0);
    assert!(metric_value(&m, "redguard_circuit_last_failure_timestamp_seconds") > 1.7e9);

    // Two rejected calls while open: one read from the cache, one write refused.
    assert_eq!(get(&rg, "a")["source"], "cache");
    assert_eq!(rg.cmd(r#"{"op":"incr","key":"n"}"#).status, 503);

    let m = rg.metrics();
    assert_eq!(calls(&m, "success"), 3.0);
    assert_eq!(calls(&m, "app_error"), 1.0);
    assert_eq!(calls(&m, "failure"), 3.0);
    assert_eq!(calls(&m, "rejected"), 2.0);
    assert_eq!(metric_value(&m, r#"redguard_fallback_total{source="cache"}"#), 3.0);
    assert_eq!(metric_value(&m, r#"redguard_fallback_total{source="default"}"#), 1.0);
    assert_eq!(metric_value(&m, "redguard_fallback_cache_hits_total"), 3.0);
    assert_eq!(metric_value(&m, "redguard_fallback_cache_misses_total"), 1.0);
    assert_eq!(metric_value(&m, "redguard_fallback_cache_entries"), 1.0);
    assert_eq!(
        metric_value(&m, "redguard_fallback_cache_bytes"),
        2.0,
        "key `a` + value `1`"
    );

    // The health JSON reads the same counters.
    let health = http_tcp(rg.admin, "/api/v1/health/redis").json();
    assert_eq!(health["redis_available"], false);
    assert_eq!(health["degraded_mode"], true);
    let cb = &health["circuit_breaker"];
    assert_eq!(cb["state"], "open");
    assert_eq!(cb["failure_count"], 3);
    assert_eq!(
        cb["total_calls"], 9,
        "3 success + 1 app error + 3 failures + 2 rejected"
    );
    assert_eq!(
        cb["successful_calls"], 4,
        "an application error is an answer from a healthy Redis"
    );
    assert_eq!(cb["failed_calls"], 3);
    assert_eq!(cb["fallback_calls"], 4);
    assert_eq!(cb["cache_hits"], 3);
    assert_eq!(cb["cache_misses"], 1);
    assert_eq!(cb["cache_size"], 1);
    assert!(cb["last_failure_time"].as_str().unwrap().ends_with('Z'), "{cb}");

    // Restart: redguard's own probe moves to half-open (one success of the two needed).
    redis.restart();
    // The gauge turns half-open when the probe is admitted, a moment before its success is counted: wait for
    // both, so the counter is not read in between.
    let m = wait_for("half-open after one successful probe", Duration::from_secs(20), || {
        let m = rg.metrics();
        (state_gauges(&m)[2] == 1.0 && calls(&m, "success") == 4.0).then_some(m)
    });
    assert_eq!(state_gauges(&m), [0.0, 0.0, 1.0]);
    assert_eq!(calls(&m, "success"), 4.0, "the probe was one successful call");
    // The second probe success (this GET) closes it.
    assert_eq!(get(&rg, "a")["source"], "redis");
    let m = rg.metrics();
    assert_eq!(state_gauges(&m), [1.0, 0.0, 0.0]);
    // A probe that ran before the restarted Redis was listening failed and reopened the circuit; each such
    // round is one more open -> half_open and one half_open -> open, and one more failed call.
    let reopened = transitions(&m, "half_open", "open");
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert_eq!(transitions(&m, "open", "half_open"), 1.0 + reopened);
    assert_eq!(transitions(&m, "half_open", "closed"), 1.0);
    assert_eq!(calls(&m, "failure"), 3.0 + reopened);
    assert_eq!(metric_value(&m, "redguard_degraded"), 0.0);
    assert_eq!(metric_value(&m, "redguard_redis_up"), 1.0);

    // API requests by op and status, and Redis latency by op.
    assert_eq!(
        metric_value(
            &m,
            r#"redguard_api_requests_total{code="200",listener="http",op="get"}"#
        ),
        7.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"redguard_api_requests_total{code="503",listener="http",op="incr"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            r#"redguard_api_requests_total{code="422",listener="http",op="hget"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_value(&m, r#"redguard_redis_command_duration_seconds_count{op="get"}"#),
        6.0,
        "rejected calls never reach Redis"
    );
    assert!(
        m.contains("process_resident_memory_bytes"),
        "standard process metrics are exported"
    );

    let cb = http_tcp(rg.admin, "/api/v1/health/circuit-breaker").json();
    assert_eq!(cb["state"], "closed");
    assert_eq!(cb["config"]["failure_threshold"], 3);
    assert_eq!(cb["config"]["success_threshold"], 2);
    assert_eq!(cb["config"]["recovery_timeout_seconds"], 5.0);
    assert!(cb["state_entered_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    get(&rg, "a");
    rg.cmd(r#"{"op":"nope"}"#);
    let text = rg.metrics();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install-test-deps.sh)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = common::wait_within(child, "promtool check metrics", common::TOOL_LIMIT);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

#[test]
fn livez_and_readyz_answer_and_readiness_can_require_redis() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    assert_eq!(http_tcp(rg.admin, "/livez").status, 200);
    let ready = http_tcp(rg.admin, "/readyz");
    assert_eq!((ready.status, ready.json()["ready"].clone()), (200, json!(true)));
    // By default a sidecar is ready while open: it still serves its fallback.
    rg.control("force_open");
    assert_eq!(http_tcp(rg.admin, "/readyz").status, 200);

    assert_eq!(http_tcp(rg.admin, "/readyz").json()["circuit"], "open");

    // With admin.ready_requires_redis, a circuit the breaker opened makes the sidecar not ready, and closing
    // restores it. One forced open is an operator's choice, not an outage: the sidecar stays ready.
    let mut own_redis = RedisServer::start();
    let strict = Redguard::start(
        &own_redis.url(),
        "breaker:\n  failure_threshold: 3\n  recovery_timeout: 60s\nadmin:\n  ready_requires_redis: true\n",
    );
    assert_eq!(http_tcp(strict.admin, "/readyz").status, 200);
    strict.control("force_open");
    let forced = http_tcp(strict.admin, "/readyz");
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert_eq!(
        forced.json(),
        json!({"ready": true, "circuit": "open", "mode": "enforce", "override": "force_open", "reason": null})
    );
    strict.control("reset");
    own_redis.kill();
    for _ in 0..3 {
        strict.cmd(r#"{"op":"get","key":"a"}"#);
    }
    let not_ready = http_tcp(strict.admin, "/readyz");
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.json()["override"], "none");
    assert!(not_ready.json()["reason"]
        .as_str()
        .unwrap()
        .contains("ready_requires_redis"));
    strict.control("reset");
    assert_eq!(http_tcp(strict.admin, "/readyz").status, 200);
}

#[test]
fn the_admin_listener_changes_nothing() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    // The control and data routes of the socket do not exist on the admin listener.
    for path in ["/v1/breaker", "/v1/cmd"] {
        assert_eq!(http_tcp(rg.admin, path).status, 404, "{path}");
    }
    let mut stream = std::net::TcpStream::connect(rg.admin).unwrap();
    let body = r#"{"action":"force_open"}"#;
    write!(
        stream,
        "POST /v1/breaker HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // Read-only routes refuse other methods.
    let mut stream = std::net::TcpStream::connect(rg.admin).unwrap();
    write!(
        stream,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(rg.breaker_state(), "closed");
}

/// Series in a text exposition (lines that are not comments), and the biggest families (histogram suffixes
/// folded into their family), largest first.
fn series_by_family(text: &str) -> (usize, Vec<(String, usize)>) {
    let mut families = std::collections::BTreeMap::<String, usize>::new();
    let mut total = 0;
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        total += 1;
        let name = line.split(['{', ' ']).next().unwrap_or(line);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        *families.entry(family.to_owned()).or_default() += 1;
    }
    let mut biggest: Vec<_> = families.into_iter().collect();
    biggest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (total, biggest)
}

/// With the default config and no traffic a pod exposes a few dozen series, not a histogram per op it never
/// served; an op's histograms appear with its first call, and no label value comes from a key or a command.
#[test]
fn an_idle_pod_exposes_few_series_and_an_op_adds_only_its_own_histograms() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "");
    wait_for("redis_up", Duration::from_secs(5), || {
        (rg.metric("redguard_redis_up") == 1.0).then_some(())
    });
    let (total, biggest) = series_by_family(&rg.metrics());
    assert!(
        total <= 300,
        "{total} series; the biggest families: {:?}",
        &biggest[..5.min(biggest.len())]
    );
    let histograms = [
        "redguard_redis_command_duration_seconds",
        "redguard_api_request_duration_seconds",
    ];
    for h in histograms {
        assert!(
            biggest.iter().all(|(f, _)| f != h),
            "{h} before any request: {biggest:?}"
        );
    }

    get(&rg, "user:secret-key-42");
    let m = rg.metrics();
    for h in histograms {
        // The API's histogram also says which listener served the request.
        let listener = if h.starts_with("redguard_api") {
            "listener=\"http\","
        } else {
            ""
        };
        assert_eq!(
            metric_value(&m, &format!("{h}_count{{{listener}op=\"get\"}}")),
            1.0,
            "{h}\n{m}"
        );
        assert!(
            !m.contains(&format!("{h}_count{{{listener}op=\"set\"}}")),
            "{h} for an op never called\n{m}"
        );
        let ops: Vec<&str> = m.lines().filter(|l| l.starts_with(&format!("{h}_count"))).collect();
        assert_eq!(ops.len(), 1, "only get's: {ops:?}");
    }
    // A raw command outside the typed ops counts under `command`, whatever it is called and whatever its keys.
    let raw = rg.post("/v1/command", &json!({"args": ["STRLEN", "user:secret-key-42"]}));
    assert_eq!(raw.status, 200, "{}", raw.body);
    let m = rg.metrics();
    assert_eq!(
        metric_value(&m, r#"redguard_redis_command_duration_seconds_count{op="command"}"#),
        1.0
    );
    assert!(
        !m.contains("secret-key-42") && !m.to_lowercase().contains("strlen"),
        "{m}"
    );
    let (total, biggest) = series_by_family(&m);
    assert!(
        total <= 300,
        "{total} series; the biggest families: {:?}",
        &biggest[..5]
    );
}

fn gauges(rg: &Redguard, names: &[&str]) -> Vec<f64> {
    let m = rg.metrics();
    names.iter().map(|n| metric_value(&m, n)).collect()
}

const MODE: [&str; 2] = [
    r#"redguard_circuit_mode{mode="enforce"}"#,
    r#"redguard_circuit_mode{mode="observe"}"#,
];
const OVERRIDE: [&str; 3] = [
    r#"redguard_circuit_override{override="none"}"#,
    r#"redguard_circuit_override{override="force_open"}"#,
    r#"redguard_circuit_override{override="force_closed"}"#,
];
const WINDOW: [&str; 3] = [
    "redguard_circuit_window_calls",
    "redguard_circuit_failure_rate",
    "redguard_circuit_slow_call_rate",
];

/// The rate window's figures, the mode (changed by a reload), the override and the API's saturation, read from
/// the real binary's /metrics and health JSON against the calls the test made.
#[test]
fn window_mode_override_and_saturation_gauges_follow_the_breaker_and_the_socket() {
    let mut redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    // Rates are computed but never trip (90% of at least 10 calls); a call over 200ms is slow.
    let breaker = "breaker:\n  failure_threshold: 100\n  failure_rate_threshold: 90\n  slow_call_duration: 200ms\n  \
                   slow_call_rate_threshold: 90\n  window_size: 10\n  minimum_calls: 10\n";
    let rest = "redis:\n  command_timeout: 2s\napi:\n  max_connections: 7\n";
    let rg = Redguard::start(&proxy.url(), &format!("{breaker}{rest}"));
    assert_eq!(gauges(&rg, &MODE), [1.0, 0.0]);
    assert_eq!(gauges(&rg, &OVERRIDE), [1.0, 0.0, 0.0]);
    assert_eq!(gauges(&rg, &WINDOW), [0.0, 0.0, 0.0]);

    // Two fast calls, one slow (every reply held 500ms), one failed: 4 in the window, 1/4 failed, 1/4 slow.
    assert_eq!(rg.cmd(r#"{"op":"set","key":"a","value":"1"}"#).status, 200);
    assert_eq!(rg.cmd(r#"{"op":"set","key":"b","value":"2"}"#).status, 200);
    proxy.latency(Duration::from_millis(500));
    get(&rg, "a");
    proxy.pass();
    redis.kill();
    assert_ne!(rg.cmd(r#"{"op":"incr","key":"n"}"#).status, 200);
    assert_eq!(gauges(&rg, &WINDOW), [4.0, 0.25, 0.25], "{}", rg.log());
    assert_eq!(rg.metric(r#"redguard_circuit_state{state="closed"}"#), 1.0);

    // A reload into observe mode flips the mode gauges without a transition.
    let observe = breaker.replace("breaker:\n", "breaker:\n  mode: observe\n");
    std::fs::write(rg.config_path(), format!("{observe}{rest}")).unwrap();
    rg.sighup();
    wait_for("observe mode", Duration::from_secs(10), || {
        (gauges(&rg, &MODE) == [0.0, 1.0]).then_some(())
    });
    let health = http_tcp(rg.admin, "/api/v1/health/redis").json();
    assert_eq!(
        (&health["circuit_breaker"]["mode"], &health["circuit_breaker"]["status"]),
        (&json!("observe"), &json!("ok"))
    );

    // Forced open: the state says open, the override says why, the window starts again.
    assert_eq!(rg.control("force_open").status, 200);
    assert_eq!(gauges(&rg, &OVERRIDE), [0.0, 1.0, 0.0]);
    assert_eq!(rg.metric(r#"redguard_circuit_state{state="open"}"#), 1.0);
    assert_eq!(gauges(&rg, &WINDOW), [0.0, 0.0, 0.0]);
    // Observe mode rejects nothing, even forced open: not degraded.
    assert_eq!(rg.metric("redguard_degraded"), 0.0);
    let health = http_tcp(rg.admin, "/api/v1/health/circuit-breaker").json();
    assert_eq!(
        (
            &health["state"],
            &health["override"],
            &health["status"],
            &health["forced"]
        ),
        (
            &json!("open"),
            &json!("force_open"),
            &json!("forced_open"),
            &json!("open")
        )
    );
    assert_eq!(
        http_tcp(rg.admin, "/api/v1/health/redis").json()["degraded_mode"],
        false
    );
    assert_eq!(rg.control("force_closed").status, 200);
    assert_eq!(gauges(&rg, &OVERRIDE), [0.0, 0.0, 1.0]);

    // Saturation: a connection held open, then a request whose body never comes, against api.max_connections.
    let saturation = [
        r#"redguard_api_connections{listener="http"}"#,
        r#"redguard_api_inflight_requests{listener="http"}"#,
        r#"redguard_api_max_connections{listener="http"}"#,
    ];
    assert_eq!(gauges(&rg, &saturation), [0.0, 0.0, 7.0]);
    let mut held = std::os::unix::net::UnixStream::connect(&rg.socket).unwrap();
    wait_for("one connection", Duration::from_secs(5), || {
        (gauges(&rg, &saturation) == [1.0, 0.0, 7.0]).then_some(())
    });
    write!(held, "POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n").unwrap();
    wait_for("one request in flight", Duration::from_secs(5), || {
        (gauges(&rg, &saturation) == [1.0, 1.0, 7.0]).then_some(())
    });
    drop(held);
    wait_for("nothing open", Duration::from_secs(5), || {
        (gauges(&rg, &saturation) == [0.0, 0.0, 7.0]).then_some(())
    });
}

/// `redguard_redis_info` names the Redis by host and port only (the password in the URL never shows), in one
/// series, and with the text the PagerDuty `dedup_key` uses, so Prometheus and the sidecar's own pages group
/// a fleet the same way.
#[test]
fn redis_info_names_the_target_without_the_password() {
    const PASSWORD: &str = "pw-SECRET-4711";
    let port = common::free_port();
    let port_s = port.to_string();
    let redis = RedisServer::start_with(
        port,
        &["--port", &port_s, "--requirepass", PASSWORD],
        &["-a", PASSWORD, "--no-auth-warning"],
    );
    let url = format!("redis://:{PASSWORD}@{}", redis.addr());
    let rg = Redguard::start(&url, CONFIG);
    wait_for("redis_up", Duration::from_secs(5), || {
        (rg.metric("redguard_redis_up") == 1.0).then_some(())
    });
    let text = rg.metrics();
    let series = format!("redguard_redis_info{{mode=\"standalone\",target=\"{}\"}}", redis.addr());
    assert_eq!(metric_value(&text, &series), 1.0, "{text}");
    let info: Vec<&str> = text.lines().filter(|l| l.starts_with("redguard_redis_info")).collect();
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(!text.contains(PASSWORD), "the password leaked into /metrics");
}
