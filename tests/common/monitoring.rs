//! A real Prometheus and a real Alertmanager for end-to-end alert tests, each on a free loopback port with
//! its data in a temp dir, killed on drop. The rules they run are the shipped ones with shortened `for:`
//! durations, produced by [`rules_with_short_for`] from `alerts/redguard.rules.yml`, never a hand-written copy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use super::{free_port, http_tcp, try_http_tcp, wait_for};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped rules with every `for:` set to `for_`, so the test does not wait minutes.
pub fn rules_with_short_for(for_: &str) -> String {
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

/// Percent-encodes every byte of a query parameter.
fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Starts `program` with `args` in `dir` and waits for its `/-/ready`.
fn spawn_ready(program: &str, dir: &Path, args: &[String], addr: &str) -> Child {
    let child = Command::new(program)
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/install-test-deps.sh): {e}"));
    wait_for(&format!("{program} to be ready"), Duration::from_secs(30), || {
        try_http_tcp(addr.parse().unwrap(), "/-/ready")
            .ok()
            .filter(|r| r.status == 200)
    });
    child
}

pub struct Prometheus {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes every `(target, labels)` each second as job `redguard` (labels: a YAML flow map such as
    /// `{namespace: shop, pod: app-0}`), evaluates `rules` each second, and sends alerts to `alertmanager`.
    pub fn start(targets: &[(std::net::SocketAddr, String)], rules: &str, alertmanager: Option<&str>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: redguard\n    static_configs:\n",
        );
        for (target, labels) in targets {
            config.push_str(&format!("      - targets: ['{target}']\n        labels: {labels}\n"));
        }
        if let Some(am) = alertmanager {
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let url = format!("127.0.0.1:{}", free_port());
        let args = [
            "--config.file=prometheus.yml".to_owned(),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={url}"),
        ];
        let child = spawn_ready("prometheus", dir.path(), &args, &url);
        Prometheus { url, child, _dir: dir }
    }

    pub fn api(&self, path_and_query: &str) -> Value {
        let r = http_tcp(self.url.parse().unwrap(), path_and_query);
        assert_eq!(r.status, 200, "{path_and_query}: {}", r.body);
        r.json()
    }

    pub fn query(&self, promql: &str) -> Vec<Value> {
        self.api(&format!("/api/v1/query?query={}", encode(promql)))["data"]["result"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Every active (pending or firing) alert named `name`.
    pub fn alerts(&self, name: &str) -> Vec<Value> {
        let alerts = self.api("/api/v1/alerts");
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }

    /// State of an alert: "firing", "pending", or None when inactive.
    pub fn alert_state(&self, name: &str) -> Option<String> {
        self.alerts(name)
            .first()
            .map(|a| a["state"].as_str().unwrap().to_owned())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Alertmanager {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// `prometheus-alertmanager` (Debian's name) with `config`, alone: no cluster gossip.
    pub fn start(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let args = [
            "--config.file=alertmanager.yml".to_owned(),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={addr}"),
            "--cluster.listen-address=".to_owned(),
        ];
        let child = spawn_ready("prometheus-alertmanager", dir.path(), &args, &addr);
        Alertmanager { addr, child, _dir: dir }
    }

    /// The alerts Alertmanager holds (active, inhibited or silenced), from its v2 API.
    pub fn alerts(&self) -> Vec<Value> {
        let r = http_tcp(self.addr.parse().unwrap(), "/api/v2/alerts");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().as_array().unwrap().clone()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
