//! Logs as a Kubernetes log pipeline reads them, from the real binary: with `log.format: json` every stderr line
//! is one JSON object, `message` at the top level and fields as JSON values; and the format's precedence
//! (`--log-format`, then `REDGUARD_LOG_FORMAT`, then the config). Notifications give the lines to look at: their
//! fields are numbers and strings, and `notify-test` logs without needing Redis. Loopback only; every wait polls
//! with a deadline.

mod common;

use std::process::Command;
use std::time::Duration;

use common::sink::{Answer, SinkServer};
use common::{wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const INSTANCE: &str = "test/rg-logs";

/// Every line of a log written in JSON, parsed; panics on a line that is not one JSON object.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{log}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

/// The first logged object whose `message` is `message`.
fn logged<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
}

#[test]
fn with_log_format_json_every_line_is_an_object_with_fields_as_json_values() {
    let redis = RedisServer::start();
    let hook = SinkServer::start();
    hook.script([Answer::Status(500, "try again")]);
    let yaml = format!(
        "notify:\n  instance: {INSTANCE}\n  min_interval: 0s\n  sinks:\n    - {{type: webhook, url: '{}'}}\nlog:\n  format: json\n",
        hook.url("/h")
    );
    let rg = Redguard::start(&redis.url(), &yaml);
    assert_eq!(rg.control("force_open").status, 200);

    let log = wait_for("the delivery to be logged", WAIT, || {
        let log = rg.log();
        log.contains("notification delivered").then_some(log)
    });
    let lines = json_lines(&log);
    for line in &lines {
        assert!(line["message"].is_string(), "message at the top level: {line}");
        assert!(line["level"].is_string() && line["timestamp"].is_string(), "{line}");
        assert!(line.get("fields").is_none(), "fields flattened: {line}");
    }
    let delivered = logged(&lines, "notification delivered");
    assert_eq!(delivered["attempts"], json!(2), "a number, not a string: {delivered}");
    assert_eq!(delivered["changes"], json!(1), "{delivered}");
    assert_eq!(delivered["sink"], json!("webhook"), "a plain string: {delivered}");
    assert_eq!(delivered["to"], json!("open"), "{delivered}");
    assert_eq!(delivered["level"], "INFO");
    let retry = logged(&lines, "notification attempt failed; retrying");
    assert!(retry["retry_in_ms"].is_u64(), "{retry}");
    assert_eq!(retry["attempt"], json!(1), "{retry}");
    assert_eq!(retry["error"], json!("HTTP 500: try again"), "{retry}");
    let enabled = logged(&lines, "notifications enabled");
    assert_eq!(enabled["sinks"], json!("webhook"), "no Debug quoting: {enabled}");
    assert_eq!(enabled["instance"], json!(INSTANCE), "{enabled}");
}

/// Runs `notify-test` against one healthy sink with `--log-format` `cli` (if any) and `REDGUARD_LOG_FORMAT`
/// `env` (if any), the config saying `log.format: json`; returns the stderr lines.
fn notify_test_log(cli: Option<&str>, env: Option<&str>) -> String {
    let hook = SinkServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redguard.yaml");
    let yaml = format!(
        "notify:\n  sinks:\n    - {{type: webhook, url: '{}'}}\nlog:\n  format: json\n",
        hook.url("/h")
    );
    std::fs::write(&file, yaml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_redguard"));
    if let Some(format) = cli {
        command.args(["--log-format", format]);
    }
    command
        .args(["notify-test", "--config", file.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("REDGUARD_LOG_FORMAT");
    if let Some(format) = env {
        command.env("REDGUARD_LOG_FORMAT", format);
    }
    let out = common::output_within(&mut command, "redguard notify-test", common::TOOL_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("notification delivered"), "{log}");
    log
}

#[test]
fn the_log_format_comes_from_the_command_line_then_the_environment_then_the_config() {
    let is_json = |log: &str| {
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
    };
    // The config alone.
    let log = notify_test_log(None, None);
    assert!(is_json(&log), "{log}");
    let lines = json_lines(&log);
    assert_eq!(logged(&lines, "notification delivered")["attempts"], json!(1));
    // REDGUARD_LOG_FORMAT overrides the config...
    let log = notify_test_log(None, Some("text"));
    assert!(
        !is_json(&log) && log.contains("notification delivered sink=webhook"),
        "{log}"
    );
    // ... and --log-format both.
    let log = notify_test_log(Some("json"), Some("text"));
    assert!(is_json(&log), "{log}");
    let log = notify_test_log(Some("text"), None);
    assert!(!is_json(&log), "{log}");
}
