//! End to end with a real Prometheus: it scrapes the real redguard every second and evaluates the shipped alert
//! rules (with their `for:` durations shortened, produced from `alerts/redguard.rules.yml` by this test, never a
//! hand-written copy); every dashboard query must parse and return data from the live sidecar.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sink::SinkServer;
use common::{free_port, wait_for, Redguard, RedisServer};
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped rules with every `for:` set to `for_`, so the test does not wait minutes.
fn rules_with_short_for(for_: &str) -> String {
    let text = std::fs::read_to_string(repo("alerts/redguard.rules.yml")).unwrap();
    let mut rules: Yaml = serde_yaml_ng::from_str(&text).unwrap();
    let mut changed = 0;
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            if let Some(map) = rule.as_mapping_mut() {
                if map.contains_key("for") {
                    map.insert("for".into(), for_.into());
                    changed += 1;
                }
            }
        }
    }
    assert!(changed >= 7, "expected every alert to have a for:, changed {changed}");
    serde_yaml_ng::to_string(&rules).unwrap()
}

struct Prometheus {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: redguard\n    static_configs:\n      - targets: ['{target}']\n        labels: {{namespace: test, pod: app-0}}\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/install-test-deps.sh)");
        let prom = Prometheus {
            url: format!("127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        wait_for("prometheus to be ready", Duration::from_secs(30), || {
            common::try_http_tcp(prom.url.parse().unwrap(), "/-/ready")
                .ok()
                .filter(|r| r.status == 200)
        });
        prom
    }

    fn api(&self, path_and_query: &str) -> Value {
        let r = common::http_tcp(self.url.parse().unwrap(), path_and_query);
        assert_eq!(r.status, 200, "{path_and_query}: {}", r.body);
        r.json()
    }

    fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = promql.bytes().map(|b| format!("%{b:02X}")).collect();
        self.api(&format!("/api/v1/query?query={q}"))["data"]["result"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// State of an alert: "firing", "pending", or None when inactive.
    fn alert_state(&self, name: &str) -> Option<String> {
        let alerts = self.api("/api/v1/alerts");
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap().to_owned())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str =
    "breaker:\n  failure_threshold: 2\n  recovery_timeout: 1s\n  recovery_timeout_max: 2s\n  recovery_jitter: 0\n\
                      notify:\n  min_interval: 0s\n  sinks:\n    - type: webhook\n      url: SINK\n";

#[test]
fn the_circuit_open_alert_fires_on_an_outage_and_resolves_and_every_dashboard_query_has_data() {
    let mut redis = RedisServer::start();
    // A webhook sink, so the notification panels have something to show.
    let sink = SinkServer::start();
    let rg = Redguard::start(&redis.url(), &CONFIG.replace("SINK", &sink.url("/hook")));
    let prom = Prometheus::start(rg.admin, &rules_with_short_for("2s"));
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
    assert_eq!(open["labels"]["severity"], "critical");
    assert_eq!(open["labels"]["pod"], "app-0");
    assert!(
        open["annotations"]["summary"].as_str().unwrap().contains("test/app-0"),
        "{open}"
    );

    // Every dashboard query parses and returns data while the sidecar has seen all of the above.
    let check = Command::new("python3")
        .arg(repo("dashboards/check_exprs.py"))
        .args(["--prometheus-url", &format!("http://{}", prom.url), "--require-data"])
        .output()
        .expect("python3 runs");
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
