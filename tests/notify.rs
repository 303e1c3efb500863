//! State-change notifications, end to end: the real binary, a real `redis-server`, and local HTTP sinks standing
//! in for Slack, PagerDuty and a generic webhook. Every wait polls with a deadline; all traffic stays on
//! loopback.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::sink::{Answer, Recorded, SinkServer};
use common::{wait_for, Redguard, RedisServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(15);
const INSTANCE: &str = "test/rg-0";

/// Short breaker timings, no damping, quick retries; `sinks` is the YAML list under `notify.sinks`.
fn config(notify_extra: &str, sinks: &str) -> String {
    format!(
        "breaker:\n  failure_threshold: 2\n  recovery_timeout: 1s\n  recovery_jitter: 0\nnotify:\n  instance: {INSTANCE}\n  min_interval: 0s\n{notify_extra}  sinks:\n{sinks}"
    )
}

fn ok(rg: &Redguard, body: Value) -> Value {
    let r = rg.cmd(&body.to_string());
    assert_eq!(r.status, 200, "{body} -> {} {}", r.status, r.body);
    r.json()
}

fn wait_metric(rg: &Redguard, series: &str, want: f64) {
    wait_for(&format!("{series} == {want}"), WAIT, || {
        (rg.metric(series) == want).then_some(())
    });
}

fn delivered(sink: &str) -> String {
    format!(r#"redguard_notifications_total{{result="delivered",sink="{sink}"}}"#)
}

fn failed(sink: &str) -> String {
    format!(r#"redguard_notifications_total{{result="failed",sink="{sink}"}}"#)
}

/// The `to` state of each Slack message, read from its "*State*\nfrom → to" field.
fn slack_states(messages: &[Recorded]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let v = m.json();
            let state = v["attachments"][0]["blocks"][1]["fields"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned();
            state.rsplit(' ').next().unwrap().to_owned()
        })
        .collect()
}

/// The states an outage passes through when the circuit reopens `reopens` times before closing.
fn outage(reopens: usize) -> Vec<&'static str> {
    let mut states = vec!["open"];
    for _ in 0..reopens {
        states.extend(["half_open", "open"]);
    }
    states.extend(["half_open", "closed"]);
    states
}

fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && s.ends_with('Z')
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Checks a request's Standard Webhooks headers as a receiver would, with the spec's algorithm written out here:
/// the key is the base64 after `whsec_`, the signed text `<webhook-id>.<webhook-timestamp>.<body>`, the header
/// `v1,<base64 of the HMAC-SHA256>`. Returns the id.
fn verify_standard_webhook(secret: &str, call: &Recorded) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let id = call.header("webhook-id").expect("webhook-id").to_owned();
    let t = call.header("webhook-timestamp").expect("webhook-timestamp");
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{t}.{}", call.body).as_bytes());
    let want = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    assert_eq!(call.header("webhook-signature"), Some(want.as_str()), "{id} at {t}");
    let t: u64 = t.parse().unwrap();
    assert!(unix_now().abs_diff(t) <= 60, "timestamp {t} is not recent");
    assert_eq!(call.json()["id"], id.as_str(), "the body carries the id too");
    id
}

fn hmac_hex(secret: &str, signed: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn an_outage_and_its_recovery_reach_slack_pagerduty_and_a_signed_webhook() {
    let mut redis = RedisServer::start();
    let slack = SinkServer::start();
    let pd = SinkServer::answering(Answer::Status(202, r#"{"status":"success"}"#));
    let hook = SinkServer::start();
    let sinks = format!(
        "    - type: slack\n      url: {}\n    - type: pagerduty\n      routing_key: R0UTING-KEY-e2e\n      url: {}\n    - type: webhook\n      url: {}\n      secret: hmac-secret-e2e\n      headers:\n        X-Team: cache\n",
        slack.url("/services/T000/B000/slack-token"),
        pd.url("/v2/enqueue"),
        hook.url("/hooks/redguard"),
    );
    // Room for Redis to restart and the connection to come back before the first probe, even on a busy
    // machine: a probe that fails would reopen the circuit and make the sequence longer.
    let yaml = config("", &sinks).replace("recovery_timeout: 1s", "recovery_timeout: 2s")
        + &format!("redis:\n  url: {}\n  command_timeout: 1s\n", redis.url());
    let rg = Redguard::start(&redis.url(), &yaml);
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));

    redis.kill();
    for _ in 0..2 {
        rg.cmd(r#"{"op":"get","key":"k"}"#);
    }
    assert_eq!(rg.breaker_state(), "open");
    redis.restart();
    // No application call: redguard probes by itself once the recovery timeout has passed.
    wait_for("the breaker to close", WAIT, || {
        (rg.breaker_state() == "closed").then_some(())
    });

    // The outage as the breaker saw it: open, half-open, closed. The first probe after a restart may still
    // meet the connection's stale "refused" error and reopen the circuit (see the breaker log on failure);
    // each such reopen adds a (half-open, open) pair to every sink, and the assertions allow for it.
    let messages = wait_for("Slack to hear the closing", WAIT, || {
        let got = slack.requests();
        (slack_states(&got).last().map(String::as_str) == Some("closed")).then_some(got)
    });
    let states = slack_states(&messages);
    let reopens = states.len().saturating_sub(3) / 2;
    assert_eq!(states, outage(reopens), "{}", rg.log());

    // Slack: each state with its colour, the instance, the masked target and the details.
    let colours: Vec<Value> = messages[states.len() - 3..]
        .iter()
        .map(|m| m.json()["attachments"][0]["color"].clone())
        .collect();
    assert_eq!(colours, [json!("#E01E5A"), json!("#ECB22E"), json!("#2EB67D")]);
    let open = messages[0].json();
    let text = open["text"].as_str().unwrap();
    assert!(text.contains("Redis circuit OPEN") && text.contains(INSTANCE), "{text}");
    assert!(text.contains(&redis.url()), "{text}");
    let fields = open["attachments"][0]["blocks"][1]["fields"].to_string();
    for want in [
        "closed → open",
        INSTANCE,
        "*Failures*\\n2",
        "*At*\\n20",
        "*Previous state lasted*",
    ] {
        assert!(fields.contains(want), "{want} not in {fields}");
    }
    let details = open["attachments"][0]["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        details.contains("2 consecutive failures") && details.contains("*Last error:*"),
        "{details}"
    );
    assert_eq!(messages[0].path, "/services/T000/B000/slack-token");
    assert_eq!(messages[0].header("content-type"), Some("application/json"));

    // PagerDuty: one trigger per opening (exactly one without a reopen), then one resolve, all under one
    // dedup_key; half-open sends nothing.
    let events: Vec<Value> = wait_for("PagerDuty to hear the resolve", WAIT, || {
        let got: Vec<Value> = pd.requests().iter().map(Recorded::json).collect();
        (got.last().is_some_and(|e| e["event_action"] == "resolve")).then_some(got)
    });
    let actions: Vec<&str> = events.iter().map(|e| e["event_action"].as_str().unwrap()).collect();
    let mut want = vec!["trigger"; 1 + reopens];
    want.push("resolve");
    assert_eq!(actions, want, "{events:?}");
    let (trigger, resolve) = (&events[0], events.last().unwrap());
    assert!(
        events.iter().all(|e| e["dedup_key"] == trigger["dedup_key"]),
        "{events:?}"
    );
    assert_eq!(trigger["routing_key"], "R0UTING-KEY-e2e");
    assert_eq!(trigger["event_action"], "trigger");
    let dedup = trigger["dedup_key"].as_str().expect("dedup_key is a string");
    // The Redis target, not the pod: every sidecar in front of this Redis folds into one incident.
    assert_eq!(dedup, format!("redguard/{}", redis.addr()), "{dedup}");
    let p = &trigger["payload"];
    assert!(
        p["summary"].as_str().expect("summary").contains("Redis circuit OPEN"),
        "{p}"
    );
    assert_eq!(p["source"], INSTANCE);
    assert_eq!(p["severity"], "critical");
    assert!(is_rfc3339_utc(p["timestamp"].as_str().expect("timestamp")), "{p}");
    assert_eq!(p["component"], "redis");
    assert_eq!(p["group"], redis.url().as_str());
    assert_eq!(p["class"], "circuit_breaker");
    let d = &p["custom_details"];
    assert!(d.is_object(), "{p}");
    assert_eq!(d["failure_count"].as_u64(), Some(2));
    assert!(d["last_error"].is_string(), "{d}");
    assert_eq!(d["reason"], "2 consecutive failures");
    assert_eq!(d["cause"], "measured", "a real outage: {d}");
    assert_eq!(d["config"]["failure_threshold"].as_u64(), Some(2));
    assert_eq!(
        resolve,
        &json!({"routing_key": "R0UTING-KEY-e2e", "event_action": "resolve", "dedup_key": dedup})
    );

    // Webhook: the flat event, with a signature a receiver can verify and a fresh timestamp.
    let calls = hook.wait_for_requests(states.len(), WAIT);
    let tos: Vec<Value> = calls.iter().map(|c| c.json()["to"].clone()).collect();
    assert_eq!(tos, outage(reopens).into_iter().map(Value::from).collect::<Vec<_>>());
    let first = calls[0].json();
    assert_eq!(first["event"], "circuit_state_changed");
    assert_eq!(
        (first["from"].as_str(), first["instance"].as_str()),
        (Some("closed"), Some(INSTANCE))
    );
    assert_eq!(first["redis"], redis.url().as_str());
    assert_eq!(first["failure_count"], 2);
    assert_eq!(first["cause"], "measured", "{first}");
    assert!(is_rfc3339_utc(first["at"].as_str().unwrap()), "{first}");
    for call in &calls {
        assert_eq!(call.header("x-team"), Some("cache"));
        let sig = call.header("x-redguard-signature").expect("signed");
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",v1="))
            .unwrap_or_else(|| panic!("signature format: {sig}"));
        assert_eq!(v1, hmac_hex("hmac-secret-e2e", &format!("{t}.{}", call.body)), "{sig}");
        let t: u64 = t.parse().unwrap();
        assert!(unix_now().abs_diff(t) <= 60, "timestamp {t} is not recent");
        // The standard headers too; a secret not in whsec_ form keys the HMAC with its bytes.
        let id = call.header("webhook-id").expect("webhook-id");
        let ts = call.header("webhook-timestamp").expect("webhook-timestamp");
        assert_eq!(ts, t.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(b"hmac-secret-e2e").unwrap();
        mac.update(format!("{id}.{ts}.{}", call.body).as_bytes());
        use base64::Engine;
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(call.header("webhook-signature"), Some(format!("v1,{want}").as_str()));
        assert_eq!(call.json()["id"], id);
    }
    let ids: std::collections::HashSet<&str> = calls.iter().map(|c| c.header("webhook-id").unwrap()).collect();
    assert_eq!(ids.len(), calls.len(), "one id per event");

    // Metrics count what each sink got (once its answer is back, a moment after the sink saw the request).
    let n = states.len() as f64;
    wait_metric(&rg, &delivered("webhook"), n);
    wait_metric(&rg, &delivered("slack"), n);
    wait_metric(&rg, &delivered("pagerduty"), events.len() as f64);
    let m = rg.metrics();
    for sink in ["slack", "pagerduty", "webhook"] {
        assert_eq!(common::metric_value(&m, &failed(sink)), 0.0, "{m}");
    }
    assert!(
        m.contains(&format!(
            r#"redguard_notification_duration_seconds_count{{sink="slack"}} {n}"#
        )),
        "{m}"
    );
    assert_eq!(common::metric_value(&m, "redguard_notification_queue_depth"), 0.0);
}

/// A Standard Webhooks secret: `whsec_` and the base64 of the key ("redguard-e2e-signing-key").
const WHSEC: &str = "whsec_cmVkZ3VhcmQtZTJlLXNpZ25pbmcta2V5";

#[test]
fn a_sink_answering_500_then_200_is_retried_and_delivered() {
    let redis = RedisServer::start();
    let hook = SinkServer::start();
    hook.script([Answer::Status(500, "try again")]);
    let sinks = format!("    - {{type: webhook, url: '{}', secret: {WHSEC}}}\n", hook.url("/h"));
    let rg = Redguard::start(&redis.url(), &config("", &sinks));
    assert_eq!(rg.control("force_open").status, 200);
    let calls = hook.wait_for_requests(2, WAIT);
    assert_eq!(calls[0].body, calls[1].body, "the same notice is sent again");
    // The retry carries the event's id again, so the receiver can tell it from a new event; each attempt is
    // signed for its own time.
    let ids: Vec<String> = calls.iter().map(|c| verify_standard_webhook(WHSEC, c)).collect();
    assert_eq!(ids[0], ids[1]);
    assert!(ids[0].starts_with("msg_") && ids[0].len() > 20, "{}", ids[0]);
    wait_metric(&rg, &delivered("webhook"), 1.0);
    assert_eq!(rg.metric(&failed("webhook")), 0.0);
    assert_eq!(hook.requests().len(), 2);
    // Another event: another id.
    assert_eq!(rg.control("reset").status, 200);
    let third = &hook.wait_for_requests(3, WAIT)[2];
    assert_eq!(third.json()["to"], "closed");
    assert_ne!(verify_standard_webhook(WHSEC, third), ids[0]);
    assert!(
        rg.log().contains("notification attempt failed; retrying"),
        "{}",
        rg.log()
    );
}

#[test]
fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let redis = RedisServer::start();
    let slack = SinkServer::start();
    slack.script([Answer::RetryAfter(1)]);
    let sinks = format!("    - {{type: slack, url: '{}'}}\n", slack.url("/services/x"));
    let rg = Redguard::start(&redis.url(), &config("", &sinks));
    rg.control("force_open");
    let calls = slack.wait_for_requests(2, WAIT);
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    wait_metric(&rg, &delivered("slack"), 1.0);
}

#[test]
fn a_400_is_not_retried_and_is_logged_with_the_answer() {
    let redis = RedisServer::start();
    let slack = SinkServer::answering(Answer::Status(400, "invalid_payload"));
    let sinks = format!(
        "    - {{type: slack, name: team-chat, url: '{}'}}\n",
        slack.url("/services/x")
    );
    let rg = Redguard::start(&redis.url(), &config("", &sinks));
    rg.control("force_open");
    wait_metric(&rg, &failed("team-chat"), 1.0);
    // The failure is final once counted: no retry can follow it.
    assert_eq!(slack.requests().len(), 1);
    assert_eq!(rg.metric(&delivered("team-chat")), 0.0);
    let log = rg.log();
    assert!(
        log.contains("notification failed") && log.contains("refused with HTTP 400: invalid_payload"),
        "{log}"
    );
}

#[test]
fn flapping_sends_one_notice_then_a_summary_with_the_count() {
    let redis = RedisServer::start();
    let hook = SinkServer::start();
    let sinks = format!("    - {{type: webhook, url: '{}'}}\n", hook.url("/h"));
    let yaml = config("", &sinks).replace("min_interval: 0s", "min_interval: 2s");
    let rg = Redguard::start(&redis.url(), &yaml);
    // closed → open → closed → open → closed → open → closed: six changes within well under 2 s.
    for _ in 0..3 {
        assert_eq!(rg.control("force_open").status, 200);
        assert_eq!(rg.control("reset").status, 200);
    }
    let calls = hook.wait_for_requests(2, WAIT);
    let (first, summary) = (calls[0].json(), calls[1].json());
    assert_eq!(
        (first["to"].as_str(), first["changes"].as_u64()),
        (Some("open"), Some(1))
    );
    assert_eq!(
        (summary["to"].as_str(), summary["changes"].as_u64()),
        (Some("closed"), Some(5))
    );
    assert!(summary["summary"].as_str().unwrap().contains("flapping"), "{summary}");
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(1900), "summary after {gap:?}");
    wait_metric(&rg, &delivered("webhook"), 2.0);
}

/// The slowest of 50 reads while the breaker is flipped every fifth call, so notifications keep coming.
fn slowest_call(rg: &Redguard) -> Duration {
    ok(rg, json!({"op": "set", "key": "k", "value": "v"}));
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        if i % 5 == 0 {
            let started = Instant::now();
            rg.control(if i % 10 == 0 { "force_open" } else { "reset" });
            slowest = slowest.max(started.elapsed());
        }
        let started = Instant::now();
        let body = ok(rg, json!({"op": "get", "key": "k"}));
        slowest = slowest.max(started.elapsed());
        assert_eq!(body["result"], "v");
    }
    slowest
}

#[test]
fn a_sink_that_never_answers_does_not_slow_the_api() {
    let redis = RedisServer::start();
    let sinks = |url: String| format!("    - {{type: webhook, url: '{url}'}}\n");

    let healthy = SinkServer::start();
    let rg = Redguard::start(&redis.url(), &config("", &sinks(healthy.url("/h"))));
    let with_healthy = slowest_call(&rg);
    healthy.wait_for_requests(10, WAIT);
    drop(rg);

    let hanging = SinkServer::answering(Answer::Hang);
    let extra = "  timeout: 30s\n  queue_size: 3\n";
    let rg = Redguard::start(&redis.url(), &config(extra, &sinks(hanging.url("/h"))));
    let with_hanging = slowest_call(&rg);
    assert_eq!(hanging.requests().len(), 1, "the sink is stuck on its first request");
    // Everything beyond the one in flight and the three queued was dropped, and counted.
    wait_metric(
        &rg,
        r#"redguard_notifications_total{result="dropped",sink="webhook"}"#,
        6.0,
    );

    // Not a performance target: a bound that a call waiting on the sink (30 s) could never meet.
    let bound = Duration::from_secs(2);
    assert!(
        with_hanging < bound && with_healthy < bound,
        "slowest call: {with_hanging:?} with a hanging sink, {with_healthy:?} with a healthy one"
    );
}

#[test]
fn on_sigterm_pending_notifications_go_out_within_the_grace() {
    let redis = RedisServer::start();
    let hook = SinkServer::start();
    let sinks = format!("    - {{type: webhook, url: '{}'}}\n", hook.url("/h"));
    // Damping holds the closing back for an hour; shutdown must not lose it.
    let yaml = config("", &sinks).replace("min_interval: 0s", "min_interval: 1h");
    let mut rg = Redguard::start(&redis.url(), &yaml);
    rg.control("force_open");
    hook.wait_for_requests(1, WAIT);
    rg.control("reset");
    rg.sigterm();
    assert_eq!(rg.wait_exit(WAIT), Some(0));
    let calls = hook.requests();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].json()["to"], "closed");

    // A sink that never answers holds the exit back by the grace, not by its timeout or retries.
    let hanging = SinkServer::answering(Answer::Hang);
    let sinks = format!("    - {{type: webhook, url: '{}'}}\n", hanging.url("/h"));
    let extra = "  timeout: 1m\n  shutdown_grace: 1s\n";
    let mut rg = Redguard::start(&redis.url(), &config(extra, &sinks));
    rg.control("force_open");
    hanging.wait_for_requests(1, WAIT);
    let started = Instant::now();
    rg.sigterm();
    assert_eq!(rg.wait_exit(WAIT), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "exit took {took:?}"
    );
    assert!(rg.log().contains("notification grace elapsed"), "{}", rg.log());
}

#[test]
fn secrets_never_reach_the_log_metrics_or_health_output() {
    let redis = RedisServer::start();
    let slack = SinkServer::answering(Answer::Status(
        400,
        "no_team for /services/TSECRET1/BSECRET2/slack-secret-3",
    ));
    let hook = SinkServer::answering(Answer::Status(500, "boom"));
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pd-key");
    std::fs::write(&key_file, "pd-routing-key-SECRET4\n").unwrap();
    let closed_port = common::free_port();
    let sinks = format!(
        "    - type: slack\n      url: {}\n    - type: pagerduty\n      routing_key_file: {}\n      url: http://127.0.0.1:{closed_port}/v2/enqueue?token=pd-url-SECRET5\n    - type: webhook\n      url: {}\n      secret: hmac-SECRET6\n      headers:\n        Authorization: Bearer header-SECRET7\n",
        slack.url("/services/TSECRET1/BSECRET2/slack-secret-3"),
        key_file.display(),
        hook.url("/hooks/path-SECRET8"),
    );
    let rg = Redguard::start(&redis.url(), &config("  max_attempts: 2\n", &sinks));
    rg.control("force_open");
    for sink in ["slack", "pagerduty", "webhook"] {
        wait_metric(&rg, &failed(sink), 1.0);
    }
    let log = rg.log();
    // The failures were logged (so the secret check below looked at real error paths)...
    assert!(
        log.contains("refused with HTTP 400") && log.contains("gave up after 2 attempt(s)"),
        "{log}"
    );
    assert!(log.contains("onnect"), "a connection error was logged: {log}");
    // ... and nothing secret was, nor anything the metrics or health routes show.
    let outputs = [
        ("log", log),
        ("metrics", rg.metrics()),
        (
            "health",
            common::http_tcp(rg.admin, "/api/v1/health/circuit-breaker").body,
        ),
        ("breaker", rg.breaker().to_string()),
    ];
    let secrets = [
        "SECRET1",
        "SECRET2",
        "slack-secret-3",
        "SECRET4",
        "SECRET5",
        "SECRET6",
        "SECRET7",
        "SECRET8",
    ];
    for (what, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in the {what}:\n{text}");
        }
    }
}

fn notify_test(config: &Path) -> (Option<i32>, String) {
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_redguard"))
            .args(["notify-test", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn"),
        "redguard notify-test",
        common::TOOL_LIMIT,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn notify_test_reports_each_sink_and_fails_when_one_does() {
    let slack = SinkServer::start();
    let pd = SinkServer::answering(Answer::Status(202, "{}"));
    let hook = SinkServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redguard.yaml");
    let sinks = format!(
        "    - {{type: slack, url: '{}'}}\n    - {{type: pagerduty, routing_key: k3y, url: '{}'}}\n    - {{type: webhook, name: audit, url: '{}', secret: s3cret}}\n",
        slack.url("/s"),
        pd.url("/v2/enqueue"),
        hook.url("/h"),
    );
    std::fs::write(&file, format!("notify:\n  instance: {INSTANCE}\n  sinks:\n{sinks}")).unwrap();
    let (code, out) = notify_test(&file);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "slack (slack): delivered",
        "pagerduty (pagerduty): delivered",
        "audit (webhook): delivered",
        "3 of 3 sink(s) delivered",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    assert!(slack.requests()[0].body.contains("Test notification"));
    let actions: Vec<Value> = pd.requests().iter().map(|r| r.json()["event_action"].clone()).collect();
    assert_eq!(
        actions,
        [json!("trigger"), json!("resolve")],
        "a test leaves no incident open"
    );
    let hook_call = &hook.requests()[0];
    assert_eq!(hook_call.json()["event"], "notification_test");
    assert!(hook_call.header("x-redguard-signature").is_some());

    // One sink refusing makes the whole check fail, and says which and why.
    let refusing = SinkServer::answering(Answer::Status(400, "invalid_token"));
    let sinks = format!(
        "    - {{type: slack, url: '{}'}}\n    - {{type: webhook, url: '{}'}}\n",
        slack.url("/s"),
        refusing.url("/h")
    );
    std::fs::write(&file, format!("notify:\n  sinks:\n{sinks}")).unwrap();
    let (code, out) = notify_test(&file);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("webhook (webhook): FAILED") && out.contains("HTTP 400: invalid_token"),
        "{out}"
    );
    assert!(out.contains("1 of 2 sink(s) delivered"), "{out}");
    assert_eq!(refusing.requests().len(), 1, "a 400 is not retried");
}

/// A manual override is not an outage: PagerDuty hears it at `info` (not the configured `critical`), and every
/// payload says the circuit was forced and by which override, with `cause` for receivers to route on. In observe
/// mode a would-open pages at `warning`.
#[test]
fn a_forced_open_pages_at_info_and_says_it_was_forced_and_an_observed_opening_at_warning() {
    let redis = RedisServer::start();
    let pd = SinkServer::answering(Answer::Status(202, r#"{"status":"success"}"#));
    let hook = SinkServer::start();
    let sinks = format!(
        "    - type: pagerduty\n      routing_key: R0UTING-KEY-forced\n      severity: critical\n      url: {}\n    - type: webhook\n      url: {}\n",
        pd.url("/v2/enqueue"),
        hook.url("/hooks/redguard"),
    );
    let rg = Redguard::start(&redis.url(), &config("", &sinks));
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));

    assert_eq!(rg.control("force_open").status, 200);
    let trigger = pd.wait_for_requests(1, WAIT)[0].json();
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], "R0UTING-KEY-forced");
    assert_eq!(trigger["dedup_key"], format!("redguard/{}", redis.addr()));
    let p = &trigger["payload"];
    assert_eq!(
        p["severity"], "info",
        "an operator's override is not a critical page: {p}"
    );
    assert_eq!(
        p["summary"],
        format!(
            "Redis circuit FORCED OPEN on {INSTANCE} (Redis {}): manual override force_open",
            redis.url()
        )
    );
    assert_eq!(p["source"], INSTANCE);
    assert_eq!(p["custom_details"]["from"], "closed");
    assert_eq!(p["custom_details"]["to"], "open");
    assert_eq!(p["custom_details"]["reason"], "manual override force_open");
    assert_eq!(p["custom_details"]["failure_count"], 0);
    assert_eq!(p["custom_details"]["test"], false);
    assert_eq!(
        p["custom_details"]["cause"], "manual",
        "receivers route overrides apart from outages: {p}"
    );

    let forced = hook.wait_for_requests(1, WAIT)[0].json();
    assert_eq!(forced["event"], "circuit_state_changed");
    assert_eq!((&forced["from"], &forced["to"]), (&json!("closed"), &json!("open")));
    assert_eq!(forced["reason"], "manual override force_open");
    assert_eq!(forced["summary"], p["summary"]);
    assert_eq!(forced["failure_count"], 0);
    assert_eq!(forced["last_error"], Value::Null);
    assert_eq!(forced["cause"], "manual", "{forced}");

    // `reset` closes it: PagerDuty resolves the same incident, the webhook hears a plain closing.
    assert_eq!(rg.control("reset").status, 200);
    let resolve = pd.wait_for_requests(2, WAIT)[1].json();
    assert_eq!(
        resolve,
        json!({"routing_key": "R0UTING-KEY-forced", "event_action": "resolve", "dedup_key": trigger["dedup_key"]})
    );
    let closed = hook.wait_for_requests(2, WAIT)[1].json();
    assert_eq!((&closed["from"], &closed["to"]), (&json!("open"), &json!("closed")));
    assert_eq!(closed["reason"], "manual override reset");
    assert_eq!(closed["cause"], "manual", "a reset is an override too: {closed}");
    assert_eq!(
        closed["summary"],
        format!(
            "Redis circuit CLOSED on {INSTANCE} (Redis {}): manual override reset",
            redis.url()
        )
    );
    drop(rg);

    // Observe mode: Redis fails, the breaker would open, every call still goes to Redis: a warning, not a page.
    let mut redis = redis;
    let pd = SinkServer::answering(Answer::Status(202, r#"{"status":"success"}"#));
    let sinks = format!(
        "    - type: pagerduty\n      routing_key: R0UTING-KEY-observe\n      url: {}\n",
        pd.url("/v2/enqueue")
    );
    let yaml =
        config("", &sinks).replace("breaker:\n", "breaker:\n  mode: observe\n") + "redis:\n  command_timeout: 1s\n";
    let rg = Redguard::start(&redis.url(), &yaml);
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));
    redis.kill();
    for _ in 0..2 {
        rg.cmd(r#"{"op":"get","key":"k"}"#);
    }
    assert_eq!(rg.breaker_state(), "open");
    let trigger = pd.wait_for_requests(1, WAIT)[0].json();
    let p = &trigger["payload"];
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(p["severity"], "warning", "observe mode rejects nothing: {p}");
    assert_eq!(
        p["summary"],
        format!(
            "Redis circuit would be OPEN on {INSTANCE} (Redis {}; observe mode, no call rejected): 2 consecutive \
             failures",
            redis.url()
        )
    );
    assert_eq!(p["custom_details"]["reason"], "2 consecutive failures");
    assert_eq!(p["custom_details"]["failure_count"], 2);
    assert_eq!(p["custom_details"]["cause"], "observed", "{p}");
}

/// The Slack block of type `kind` in a message, if any.
fn slack_block(message: &Value, kind: &str) -> Option<Value> {
    message["attachments"][0]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == kind)
        .cloned()
}

#[test]
fn runbook_and_dashboard_links_reach_pagerduty_and_slack_and_follow_a_reload() {
    let redis = RedisServer::start();
    let slack = SinkServer::start();
    let pd = SinkServer::answering(Answer::Status(202, r#"{"status":"success"}"#));
    let sinks = format!(
        "    - {{type: slack, url: '{}'}}\n    - {{type: pagerduty, routing_key: R0UTING-links, url: '{}'}}\n",
        slack.url("/services/links"),
        pd.url("/v2/enqueue"),
    );
    let yaml = |notify_extra: &str| config(notify_extra, &sinks) + "reload:\n  watch: false\n";
    let rg = Redguard::start(&redis.url(), &yaml(""));

    // Unset: no links and no buttons, rather than a default that leads nowhere.
    assert_eq!(rg.control("force_open").status, 200);
    let bare_slack = slack.wait_for_requests(1, WAIT)[0].json();
    let bare_pd = pd.wait_for_requests(1, WAIT)[0].json();
    assert_eq!(slack_block(&bare_slack, "actions"), None, "{bare_slack}");
    assert_eq!(bare_pd["event_action"], "trigger");
    assert!(
        bare_pd.get("links").is_none() && bare_pd.get("client_url").is_none(),
        "{bare_pd}"
    );
    assert_eq!(rg.control("reset").status, 200);
    slack.wait_for_requests(2, WAIT);
    pd.wait_for_requests(2, WAIT);

    // Set by a reload: the next notices carry them.
    let runbook = "https://runbooks.example/redguard#circuit-open";
    let dashboard = "https://grafana.example/d/redguard?var-pod=rg-0&from=now-1h";
    std::fs::write(
        rg.config_path(),
        yaml(&format!("  runbook_url: {runbook}\n  dashboard_url: '{dashboard}'\n")),
    )
    .unwrap();
    let r = common::http(&rg.socket, "POST", "/v1/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let changed = r.json()["changed"].clone();
    assert_eq!(
        changed,
        json!(["notify.runbook_url", "notify.dashboard_url"]),
        "{}",
        r.body
    );
    assert_eq!(rg.control("force_open").status, 200);

    let message = slack.wait_for_requests(3, WAIT)[2].json();
    let actions = slack_block(&message, "actions").unwrap_or_else(|| panic!("no actions block: {message}"));
    let buttons = actions["elements"].as_array().unwrap();
    assert_eq!(buttons.len(), 2, "{actions}");
    for (button, (label, url)) in buttons.iter().zip([("Runbook", runbook), ("Dashboard", dashboard)]) {
        assert_eq!(button["type"], "button");
        assert_eq!(button["text"]["type"], "plain_text");
        assert_eq!(button["text"]["text"], label);
        assert_eq!(button["url"], url);
        assert!(button["action_id"].is_string(), "{button}");
    }
    assert_ne!(buttons[0]["action_id"], buttons[1]["action_id"]);

    let trigger = pd.wait_for_requests(3, WAIT)[2].json();
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(
        trigger["links"],
        json!([{"href": runbook, "text": "Runbook"}, {"href": dashboard, "text": "Dashboard"}])
    );
    assert_eq!(trigger["client"], "redguard");
    assert_eq!(trigger["client_url"], dashboard);
    // Top level, beside the routing fields, not inside the payload.
    assert!(trigger["payload"].get("links").is_none(), "{trigger}");
    assert_eq!(trigger["payload"]["source"], INSTANCE);
}
