//! A Redis outage seen by a fleet pages once and resolves once, end to end with real processes: one
//! redis-server, five redguard sidecars in front of it (pods of one namespace), a real Prometheus running the
//! shipped rules (`for:` shortened) and a real Alertmanager running the shipped example config
//! (`alerts/alertmanager.example.yml`, rewritten only to send to loopback stand-ins for PagerDuty and Slack and
//! to wait less before sending).

mod common;

use std::time::{Duration, Instant};

use common::monitoring::{repo, rules_with_short_for, Alertmanager, Prometheus};
use common::sink::{Recorded, SinkServer};
use common::{wait_for, Redguard, RedisServer};
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

const PODS: usize = 5;
const WAIT: Duration = Duration::from_secs(60);

/// Quick to open and to probe. The last pod would not probe for ten minutes, so after Redis is back it stays
/// open until the test resets it, however slow the machine: the page must not resolve until it has closed too.
const FAST: &str =
    "breaker:\n  failure_threshold: 2\n  recovery_timeout: 1s\n  recovery_timeout_max: 2s\n  recovery_jitter: 0\n";
const SLOW: &str =
    "breaker:\n  failure_threshold: 2\n  recovery_timeout: 10m\n  recovery_timeout_max: 10m\n  recovery_jitter: 0\n";

/// The shipped Alertmanager config with the receivers' URLs pointed at the stand-ins and every wait cut to
/// one second; nothing else changes.
fn alertmanager_config(pagerduty: &str, slack: &str) -> (String, String) {
    let text = std::fs::read_to_string(repo("alerts/alertmanager.example.yml")).unwrap();
    let mut cfg: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    cfg["route"]["group_wait"] = "1s".into();
    cfg["route"]["group_interval"] = "1s".into();
    let mut routing_key = String::new();
    for receiver in cfg["receivers"].as_sequence_mut().unwrap() {
        if let Some(pd) = receiver.get_mut("pagerduty_configs") {
            let pd = &mut pd[0];
            routing_key = pd["routing_key"].as_str().unwrap().to_owned();
            pd["url"] = pagerduty.into();
        }
        if let Some(sc) = receiver.get_mut("slack_configs") {
            sc[0]["api_url"] = slack.into();
        }
    }
    assert!(!routing_key.is_empty(), "the example has a PagerDuty receiver");
    (serde_yaml_ng::to_string(&cfg).unwrap(), routing_key)
}

fn events(pd: &SinkServer) -> Vec<Value> {
    pd.requests().iter().map(Recorded::json).collect()
}

fn actions(pd: &SinkServer) -> Vec<String> {
    events(pd)
        .iter()
        .map(|e| e["event_action"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Sends GETs until the circuit is open (two failures trip it); bounded by the deadline of `wait_for`.
fn trip(rg: &Redguard) {
    wait_for("the circuit to open", Duration::from_secs(10), || {
        rg.cmd(r#"{"op":"get","key":"k"}"#);
        (rg.breaker_state() == "open").then_some(())
    });
}

#[test]
fn a_redis_outage_seen_by_five_pods_pages_once_and_resolves_once_after_the_last_pod_closed() {
    let mut redis = RedisServer::start();
    let pods: Vec<Redguard> = (0..PODS)
        .map(|i| Redguard::start(&redis.url(), if i == PODS - 1 { SLOW } else { FAST }))
        .collect();
    let pagerduty = SinkServer::start();
    let slack = SinkServer::start();
    let (am_config, routing_key) = alertmanager_config(&pagerduty.url("/v2/enqueue"), &slack.url("/services/T0/B0/x"));
    let am = Alertmanager::start(&am_config);
    let targets: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, rg)| (rg.admin, format!("{{namespace: shop, pod: app-{i}}}")))
        .collect();
    let prom = Prometheus::start(&targets, &rules_with_short_for("2s"), Some(&am.addr));
    wait_for("every pod scraped with its target", WAIT, || {
        let q = format!(r#"redguard_redis_info{{target="{}",mode="standalone"}}"#, redis.addr());
        (prom.query(&q).len() == PODS).then_some(())
    });
    assert!(pagerduty.requests().is_empty(), "a healthy fleet pages nobody");

    // Redis goes away; every pod's circuit opens.
    redis.kill();
    for rg in &pods {
        trip(rg);
    }
    let trigger = wait_for("the page", WAIT, || events(&pagerduty).into_iter().next());
    assert_eq!(trigger["event_action"], "trigger", "{trigger}");
    assert_eq!(trigger["routing_key"], routing_key.as_str());
    let dedup = trigger["dedup_key"].as_str().expect("dedup_key").to_owned();
    assert!(!dedup.is_empty());
    let payload = &trigger["payload"];
    let summary = payload["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&redis.addr()),
        "the summary names the Redis target: {summary}"
    );
    assert!(summary.contains("100%"), "{summary}");
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["group"], redis.addr().as_str());
    // The alert behind it: one for the target, listing every pod.
    let firing = prom.alerts("RedguardRedisUnavailable");
    assert_eq!(firing.len(), 1, "{firing:?}");
    let description = firing[0]["annotations"]["description"].as_str().unwrap();
    let pod_list: Vec<String> = (0..PODS).map(|i| format!("app-{i}")).collect();
    assert!(
        description.contains(&format!("Pods: {}.", pod_list.join(", "))),
        "{description}"
    );

    // Redis is back. The fast pods close within seconds; the slow one stays open until it is reset below.
    redis.restart();
    for rg in &pods[..PODS - 1] {
        wait_for("a fast pod to close", WAIT, || {
            (rg.breaker_state() == "closed").then_some(())
        });
    }
    let last = &pods[PODS - 1];
    // Prometheus has seen four pods closed (one of five still open: 20%, below the paging share)...
    wait_for("Prometheus to see one pod of five still open", WAIT, || {
        let ratio = prom.query("redguard:target_circuit_not_closed:ratio");
        (ratio.len() == 1 && ratio[0]["value"][1] == "0.2").then_some(())
    });
    // ...and Alertmanager has had the rules' verdict since: still one active alert, and no resolve sent,
    // while the last pod is still open.
    let held_at = Instant::now();
    wait_for("Alertmanager to hold the alert", WAIT, || {
        let active: Vec<Value> = am
            .alerts()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "RedguardRedisUnavailable")
            .filter(|a| a["status"]["state"] == "active")
            .collect();
        (active.len() == 1 && prom.alert_state("RedguardRedisUnavailable").as_deref() == Some("firing")).then_some(())
    });
    assert_eq!(actions(&pagerduty), ["trigger"], "no resolve while a pod is open");
    assert_ne!(
        last.breaker_state(),
        "closed",
        "the slow pod closed too early for this test"
    );
    // An operator's reset stands in for the slow pod's next probe.
    assert_eq!(last.control("reset").status, 200);

    // The last pod closes: exactly one resolve, under the trigger's dedup_key.
    wait_for("the last pod to close", WAIT, || {
        (last.breaker_state() == "closed").then_some(())
    });
    let closed_seen = Instant::now();
    let resolve = wait_for("the resolve", WAIT, || {
        events(&pagerduty).into_iter().find(|e| e["event_action"] == "resolve")
    });
    assert_eq!(resolve["dedup_key"], dedup.as_str());
    assert_eq!(resolve["routing_key"], routing_key.as_str());
    let resolved_at = pagerduty.requests().last().unwrap().at;
    assert!(resolved_at > held_at, "resolved before the last pod closed");
    assert!(
        resolved_at + Duration::from_secs(1) > closed_seen,
        "the resolve came before the last pod was seen closed"
    );
    // Nothing else pages afterwards: Alertmanager's next group intervals send nothing new.
    wait_for("Alertmanager to drop the resolved alert", WAIT, || {
        let active = am
            .alerts()
            .into_iter()
            .any(|a| a["labels"]["alertname"] == "RedguardRedisUnavailable" && a["status"]["state"] == "active");
        (!active).then_some(())
    });
    assert_eq!(actions(&pagerduty), ["trigger", "resolve"]);
    // Critical goes to PagerDuty only; Slack never hears about the page.
    for m in slack.requests() {
        assert!(!m.body.contains("RedguardRedisUnavailable"), "{}", m.body);
    }
}

/// The shipped example passes Alertmanager's own check, and the check is real: a broken copy fails it.
#[test]
fn the_example_alertmanager_config_passes_amtool_check_config() {
    let check = |path: &std::path::Path| {
        common::output_within(
            std::process::Command::new("amtool").arg("check-config").arg(path),
            "amtool check-config",
            common::TOOL_LIMIT,
        )
    };
    let shipped = repo("alerts/alertmanager.example.yml");
    let out = check(&shipped);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && report.contains("SUCCESS"), "{report}");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("alertmanager.yml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    std::fs::write(
        &broken,
        text.replace("receiver: pagerduty", "receiver: no-such-receiver"),
    )
    .unwrap();
    assert!(
        !check(&broken).status.success(),
        "amtool accepted a route to an undefined receiver"
    );
}
