//! End to end with a real Prometheus: it scrapes the real redguard every second and evaluates the shipped alert
//! rules (with their `for:` durations shortened, produced from `alerts/redguard.rules.yml` by this test, never a
//! hand-written copy); every dashboard query must parse and return data from the live sidecar.

mod common;

use std::process::Command;
use std::time::Duration;

use common::monitoring::{repo, rules_with_short_for, Prometheus};
use common::sink::SinkServer;
use common::{wait_for, Redguard, RedisServer};

const CONFIG: &str =
    "breaker:\n  failure_threshold: 2\n  recovery_timeout: 1s\n  recovery_timeout_max: 2s\n  recovery_jitter: 0\n\
                      notify:\n  min_interval: 0s\n  sinks:\n    - type: webhook\n      url: SINK\n";

#[test]
fn the_circuit_open_alert_fires_on_an_outage_and_resolves_and_every_dashboard_query_has_data() {
    let mut redis = RedisServer::start();
    // A webhook sink, so the notification panels have something to show.
    let sink = SinkServer::start();
    let rg = Redguard::start(&redis.url(), &CONFIG.replace("SINK", &sink.url("/hook")));
    let prom = Prometheus::start(
        &[(rg.admin, "{namespace: test, pod: app-0}".to_owned())],
        &rules_with_short_for("2s"),
        None,
    );
    wait_for("the first scrape", Duration::from_secs(30), || {
        (prom.query(r#"up{job="redguard"} == 1"#).len() == 1).then_some(())
    });

    // Traffic of every kind: answers from Redis, then fallbacks and rejections.
    for i in 0..20 {
        assert_eq!(
            rg.cmd(&format!(r#"{{"op":"set","key":"k{i}","value":"v"}}"#)).status,
            200
        );
        assert_eq!(rg.cmd(&format!(r#"{{"op":"get","key":"k{i}"}}"#)).status, 200);
    }
    redis.kill();
    for i in 0..20 {
        assert_eq!(
            rg.cmd(&format!(r#"{{"op":"get","key":"k{i}"}}"#)).json()["source"],
            "cache"
        );
    }
    assert_eq!(rg.breaker_state(), "open");
    sink.wait_for_requests(1, Duration::from_secs(10));
    let alert = wait_for("RedguardCircuitOpen to fire", Duration::from_secs(60), || {
        prom.alert_state("RedguardCircuitOpen").filter(|s| s == "firing")
    });
    assert_eq!(alert, "firing");
    let firing = prom.api("/api/v1/alerts");
    let open = firing["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "RedguardCircuitOpen")
        .unwrap()
        .clone();
    // One pod's circuit is a warning; the page is the target's (tests/paging.rs).
    assert_eq!(open["labels"]["severity"], "warning");
    assert_eq!(open["labels"]["pod"], "app-0");
    assert_eq!(open["labels"]["target"], redis.addr().as_str());
    assert!(
        open["annotations"]["summary"].as_str().unwrap().contains("test/app-0"),
        "{open}"
    );

    // Every dashboard query parses and returns data while the sidecar has seen all of the above.
    let check = common::output_within(
        Command::new("python3").arg(repo("dashboards/check_exprs.py")).args([
            "--prometheus-url",
            &format!("http://{}", prom.url),
            "--require-data",
        ]),
        "dashboards/check_exprs.py",
        Duration::from_secs(120),
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "dashboard queries:\n{report}");

    // Redis comes back: redguard's probe closes the circuit and the alert resolves.
    redis.restart();
    wait_for("the circuit to close", Duration::from_secs(30), || {
        (rg.breaker_state() == "closed").then_some(())
    });
    wait_for("RedguardCircuitOpen to resolve", Duration::from_secs(60), || {
        prom.alert_state("RedguardCircuitOpen").is_none().then_some(())
    });
}
