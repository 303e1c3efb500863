//! Live reload with the real binary: SIGHUP, a Kubernetes-style ConfigMap swap, `POST /v1/reload`, an invalid
//! config, a restart-only key, reloads under concurrent load, and a storm of SIGHUPs.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{http, rss_kib, wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A config for the tests that reload by SIGHUP or `POST /v1/reload` only: with the watcher on, writing the file
/// would reload it a second time.
fn by_hand(yaml: &str) -> String {
    format!("reload:\n  watch: false\n{yaml}")
}

fn write_config(rg: &Redguard, yaml: &str) {
    std::fs::write(rg.config_path(), by_hand(yaml)).unwrap();
}

fn reloads(rg: &Redguard, result: &str) -> f64 {
    rg.metric(&format!(r#"redguard_config_reloads_total{{result="{result}"}}"#))
}

fn wait_reloads(rg: &Redguard, result: &str, n: f64) {
    wait_for(&format!("{n} reloads with result {result}"), WAIT, || {
        (reloads(rg, result) == n).then_some(())
    });
}

fn reload_now(rg: &Redguard) -> (u16, Value) {
    let r = http(&rg.socket, "POST", "/v1/reload", "");
    let body = r.json();
    (r.status, body)
}

fn get(rg: &Redguard, key: &str) -> u16 {
    rg.cmd(&json!({"op": "get", "key": key}).to_string()).status
}

#[test]
fn sighup_applies_a_lowered_failure_threshold_to_the_next_failures() {
    let mut redis = RedisServer::start();
    let rg = Redguard::start(
        &redis.url(),
        &by_hand("breaker:\n  failure_threshold: 5\n  recovery_timeout: 60s\n"),
    );
    assert_eq!(rg.metric("redguard_config_last_reload_successful"), 1.0);

    write_config(&rg, "breaker:\n  failure_threshold: 2\n  recovery_timeout: 60s\n");
    rg.sighup();
    wait_reloads(&rg, "success", 1.0);
    assert!(rg.log().contains("breaker.failure_threshold"), "{}", rg.log());

    redis.kill();
    // Writes, which have no fallback: each failure is a 503.
    let set = || rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#).status;
    assert_eq!(set(), 503);
    assert_eq!(
        rg.breaker_state(),
        "closed",
        "one failure is under the new threshold of 2"
    );
    assert_eq!(set(), 503);
    assert_eq!(
        rg.breaker_state(),
        "open",
        "the second failure reaches the new threshold (the old one was 5)"
    );
}

/// The layout the kubelet gives a ConfigMap volume: the files are symlinks through `..data`, itself a symlink
/// to a timestamped folder, and an update renames a new `..data` over the old one.
fn configmap_dir(root: &Path, yaml: &str) -> std::path::PathBuf {
    let folder = root.join("..2026_12_02_10_00_00.1");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("redguard.yaml"), yaml).unwrap();
    std::os::unix::fs::symlink("..2026_12_02_10_00_00.1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/redguard.yaml", root.join("redguard.yaml")).unwrap();
    root.join("redguard.yaml")
}

fn configmap_update(root: &Path, yaml: &str) {
    let folder = root.join("..2026_12_02_10_05_00.2");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("redguard.yaml"), yaml).unwrap();
    std::os::unix::fs::symlink("..2026_12_02_10_05_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_12_02_10_00_00.1")).unwrap();
}

#[test]
fn a_configmap_swap_applies_without_a_signal() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("config");
    std::fs::create_dir(&mount).unwrap();
    let config = configmap_dir(&mount, "api:\n  max_key_bytes: 64\n");
    let rg = Redguard::start_with_config_at(dir, &config, &redis.url(), &[]);
    let hash_before = config_hash(&rg);
    assert_eq!(get(&rg, "a-key-of-twenty-bytes"), 200);

    configmap_update(&mount, "api:\n  max_key_bytes: 8\n");
    wait_reloads(&rg, "success", 1.0);
    let r = rg.cmd(r#"{"op":"get","key":"a-key-of-twenty-bytes"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("api.max_key_bytes"), "{}", r.body);
    assert_eq!(get(&rg, "short"), 200);
    assert_ne!(config_hash(&rg), hash_before, "the info metric names the new config");
    assert_eq!(reloads(&rg, "invalid"), 0.0, "the swap was never seen half-way");
}

/// The `hash` label of `redguard_config_info`, which has one series.
fn config_hash(rg: &Redguard) -> String {
    let metrics = rg.metrics();
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("redguard_config_info{"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].split('"').nth(1).unwrap().to_owned()
}

#[test]
fn an_invalid_config_changes_nothing_and_says_why() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), &by_hand("api:\n  max_key_bytes: 8\n"));
    write_config(
        &rg,
        "api:\n  max_key_bytes: 1024\nbreaker:\n  failure_threshold: 0\n  recovery_backoff: 0.5\n",
    );
    let (status, body) = reload_now(&rg);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["result"], "invalid");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "every problem at once: {errors:?}");
    assert!(errors[0].contains("breaker.failure_threshold") || errors[1].contains("breaker.failure_threshold"));
    assert_eq!(rg.metric("redguard_config_last_reload_successful"), 0.0);
    assert_eq!(reloads(&rg, "invalid"), 1.0);
    // Still the old config: the 8-byte key limit holds, and requests are served.
    assert_eq!(get(&rg, "a-key-longer-than-eight"), 400);
    assert_eq!(get(&rg, "short"), 200);

    // A syntax error is invalid too, with its line.
    write_config(&rg, "api: [\n");
    rg.sighup();
    wait_reloads(&rg, "invalid", 2.0);
    assert!(
        rg.log().contains("config reload refused: the new config is invalid"),
        "{}",
        rg.log()
    );

    // Fixed: the next reload applies and the gauge goes back to 1.
    write_config(&rg, "api:\n  max_key_bytes: 1024\n");
    let (status, body) = reload_now(&rg);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "success");
    assert_eq!(body["changed"], json!(["api.max_key_bytes"]));
    assert_eq!(rg.metric("redguard_config_last_reload_successful"), 1.0);
    assert_eq!(get(&rg, "a-key-longer-than-eight"), 200);
}

#[test]
fn a_restart_only_key_is_refused_with_the_keys_named() {
    let redis = RedisServer::start();
    let rg = Redguard::start(
        &redis.url(),
        &by_hand("admin:\n  max_connections: 32\napi:\n  max_key_bytes: 8\n"),
    );
    write_config(&rg, "admin:\n  max_connections: 16\napi:\n  max_key_bytes: 1024\n");
    let (status, body) = reload_now(&rg);
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        json!({"result": "restart_required", "keys": ["admin.max_connections"]})
    );
    assert_eq!(reloads(&rg, "restart_required"), 1.0);
    assert_eq!(rg.metric("redguard_config_last_reload_successful"), 0.0);
    assert_eq!(
        get(&rg, "a-key-longer-than-eight"),
        400,
        "the live key in the same file was not applied"
    );
    assert!(rg.log().contains("only change on a restart"), "{}", rg.log());
}

/// Every request must succeed: none may time out on a loaded machine.
const NO_SLOW_CALL: &str = "redis:\n  command_timeout: 5s\n";

#[test]
fn reloads_during_concurrent_requests_fail_none_of_them() {
    let redis = RedisServer::start();
    let rg = Arc::new(Redguard::start(
        &redis.url(),
        &by_hand(&format!("{NO_SLOW_CALL}breaker:\n  failure_threshold: 5\n")),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (rg, done) = (rg.clone(), done.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for i in 0..2_000 {
                    if done.load(Ordering::Relaxed) && i > 50 {
                        break;
                    }
                    let body = if i % 2 == 0 {
                        json!({"op": "set", "key": format!("k{w}"), "value": format!("{i}")})
                    } else {
                        json!({"op": "get", "key": format!("k{w}")})
                    };
                    statuses.push(rg.cmd(&body.to_string()).status);
                }
                statuses
            })
        })
        .collect();
    for i in 0..20 {
        let threshold = 5 + i % 2;
        write_config(
            &rg,
            &format!("{NO_SLOW_CALL}breaker:\n  failure_threshold: {threshold}\n"),
        );
        let (status, body) = reload_now(&rg);
        assert_eq!(status, 200, "{body}");
    }
    done.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for worker in workers {
        for status in worker.join().unwrap() {
            assert_eq!(status, 200);
            answered += 1;
        }
    }
    assert!(answered >= 4 * 50, "{answered} requests answered");
    assert_eq!(reloads(&rg, "success"), 20.0);
}

#[test]
fn a_storm_of_sighups_leaves_one_working_process_and_sigterm_still_drains() {
    let redis = RedisServer::start();
    let mut rg = Redguard::start(&redis.url(), &by_hand(""));
    let rss_before = rss_kib(rg.pid());
    for _ in 0..100 {
        rg.sighup();
    }
    // Every burst folds into the reload waiting to run: at least one runs, at most one per signal.
    wait_for("a reload after the storm", WAIT, || {
        (reloads(&rg, "success") >= 1.0).then_some(())
    });
    assert_eq!(get(&rg, "k"), 200);
    let n = reloads(&rg, "success");
    assert!((1.0..=100.0).contains(&n), "{n} reloads");
    let rss_after = rss_kib(rg.pid());
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let children =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", rg.pid(), rg.pid())).unwrap_or_default();
    assert_eq!(children.trim(), "", "no child process");
    rg.sigterm();
    assert_eq!(rg.wait_exit(WAIT), Some(0));
    assert!(!rg.socket.exists(), "socket removed on shutdown");
}

#[test]
fn the_log_level_follows_the_config_unless_rust_log_is_set() {
    let redis = RedisServer::start();
    let rg = Redguard::start_with_env(&redis.url(), &by_hand("log:\n  level: warn\n"), &[("RUST_LOG", "")]);
    rg.sighup();
    wait_reloads(&rg, "success", 1.0);
    assert!(
        !rg.log().contains("config reloaded"),
        "an info line under log.level warn:\n{}",
        rg.log()
    );

    write_config(&rg, "log:\n  level: info\n");
    rg.sighup();
    wait_reloads(&rg, "success", 2.0);
    wait_for("the reload's own info line", WAIT, || {
        rg.log().contains("config reloaded and applied").then_some(())
    });
    assert!(rg.log().contains("log.level"), "{}", rg.log());

    // An invalid filter is refused like any invalid value.
    write_config(&rg, "log:\n  level: \"info,redguard=loudest\"\n");
    let (status, body) = reload_now(&rg);
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"][0].as_str().unwrap().starts_with("log.level"), "{body}");
}

#[test]
fn a_write_in_place_reloads_and_other_files_in_the_folder_do_not() {
    let redis = RedisServer::start();
    // The watcher is on (the default); the log file and the socket share the config's folder.
    let rg = Redguard::start(&redis.url(), "api:\n  max_key_bytes: 8\n");
    for n in 1..=3 {
        // SAFETY: kill(2) on the redguard child this test owns; each SIGUSR1 writes a line to the log file.
        unsafe { libc::kill(rg.pid() as libc::pid_t, libc::SIGUSR1) };
        wait_for("the log line", WAIT, || {
            (rg.log().matches("SIGUSR1 has no meaning").count() == n).then_some(())
        });
    }
    std::fs::write(rg.config_path(), "api:\n  max_key_bytes: 1024\n").unwrap();
    wait_reloads(&rg, "success", 1.0);
    assert_eq!(get(&rg, "a-key-longer-than-eight"), 200);
    // One reload for the config, none for the log lines (each reload writes one, which would loop).
    let (status, body) = reload_now(&rg);
    assert_eq!((status, &body["changed"]), (200, &json!([])), "{body}");
    assert_eq!(reloads(&rg, "success"), 2.0);
}

/// A webhook sink named `name` at `url`, in `notify.sinks`, with no damping.
fn webhook_config(sinks: &[String]) -> String {
    let list: String = sinks.iter().map(|s| format!("    - {s}\n")).collect();
    format!("notify:\n  instance: test/rg-0\n  min_interval: 0s\n  sinks:\n{list}")
}

#[test]
fn new_sinks_and_rotated_sink_secrets_apply_and_a_delivery_in_flight_finishes_on_the_old_sink() {
    use common::sink::{Answer, SinkServer};
    let redis = RedisServer::start();
    let (old, new, rotated) = (SinkServer::start(), SinkServer::start(), SinkServer::start());
    // The old sink asks for its first notice again in 2 s, so that notice is still in flight during the reload.
    old.script([Answer::RetryAfter(2)]);
    let old_sink = format!("{{type: webhook, name: old, url: '{}'}}", old.url("/old"));
    let rg = Redguard::start(&redis.url(), &by_hand(&webhook_config(&[old_sink])));
    assert_eq!(rg.control("force_open").status, 200);
    old.wait_for_requests(1, WAIT);

    let url_file = rg.dir.path().join("webhook-url");
    std::fs::write(&url_file, new.url("/new")).unwrap();
    let new_sink = format!("{{type: webhook, name: new, url_file: '{}'}}", url_file.display());
    write_config(&rg, &webhook_config(&[new_sink]));
    let (status, body) = reload_now(&rg);
    let reloaded_at = std::time::Instant::now();
    assert_eq!((status, &body["changed"]), (200, &json!(["notify.sinks"])), "{body}");

    // The notice the old sink was retrying is delivered to it, after the reload, not to the new one.
    let calls = old.wait_for_requests(2, WAIT);
    assert_eq!(calls[0].body, calls[1].body);
    assert!(calls[1].at > reloaded_at, "the retry came after the reload");
    assert_eq!(calls[1].json()["to"], "open");
    wait_for("the old sink's delivery", WAIT, || {
        (rg.metric(r#"redguard_notifications_total{result="delivered",sink="old"}"#) == 1.0).then_some(())
    });
    // The next transition goes to the new sink only.
    assert_eq!(rg.control("reset").status, 200);
    let calls = new.wait_for_requests(1, WAIT);
    assert_eq!(calls[0].path, "/new");
    let notice = calls[0].json();
    assert_eq!(
        (notice["to"].as_str(), notice["instance"].as_str()),
        (Some("closed"), Some("test/rg-0"))
    );
    assert_eq!(old.requests().len(), 2, "nothing more reached the old sink");

    // A rotated secret file (the sink's URL) applies on the next reload.
    std::fs::write(&url_file, rotated.url("/rotated")).unwrap();
    let (status, body) = reload_now(&rg);
    assert_eq!((status, &body["changed"]), (200, &json!(["notify.sinks"])), "{body}");
    assert_eq!(rg.control("force_open").status, 200);
    let calls = rotated.wait_for_requests(1, WAIT);
    assert_eq!(
        (calls[0].path.as_str(), &calls[0].json()["to"]),
        ("/rotated", &json!("open"))
    );
    assert_eq!(
        new.requests().len(),
        1,
        "nothing more reached the sink of the old secret"
    );
}

#[test]
fn a_rotated_password_file_is_used_by_the_next_connection() {
    // An ACL user `app` with the password `old`; the default user is off.
    let mut server = RedisServer::plain(&[]);
    server.must(&["ACL", "SETUSER", "app", "on", ">old", "~*", "&*", "+@all"]);
    server.must(&["ACL", "SETUSER", "default", "off"]);
    server.cli_flags = ["--user", "app", "--pass", "old"].map(String::from).to_vec();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "old\n").unwrap();
    let yaml = format!("redis:\n  username: app\n  password_file: {}\n", pw.display());
    let rg = Redguard::start(&server.url(), &by_hand(&yaml));
    assert_eq!(rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#).status, 200);

    // Rotate in Redis (the old password stops working for new connections), then in the file, and reload.
    server.must(&["ACL", "SETUSER", "app", ">new", "<old"]);
    server.cli_flags = ["--user", "app", "--pass", "new"].map(String::from).to_vec();
    std::fs::write(&pw, "new\n").unwrap();
    let (status, body) = reload_now(&rg);
    assert_eq!((status, &body["changed"]), (200, &json!(["redis.password"])), "{body}");

    // Redis drops redguard's connection; the next one must authenticate with the new password.
    server.must(&["CLIENT", "KILL", "USER", "app", "SKIPME", "yes"]);
    wait_for("a read answered by Redis on a new connection", WAIT, || {
        let r = rg.cmd(r#"{"op":"get","key":"k"}"#);
        (r.status == 200 && r.json()["source"] == "redis").then_some(())
    });
    assert_eq!(rg.cmd(r#"{"op":"set","key":"k","value":"w"}"#).status, 200);
    assert_eq!(server.must(&["GET", "k"]), "w");
}

#[test]
fn a_shorter_read_timeout_applies_to_the_next_connection() {
    use std::io::{Read, Write};
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), &by_hand("api:\n  read_timeout: 60s\n"));
    write_config(&rg, "api:\n  read_timeout: 1s\n");
    let (status, body) = reload_now(&rg);
    assert_eq!(
        (status, &body["changed"]),
        (200, &json!(["api.read_timeout"])),
        "{body}"
    );
    // A client that starts a request and stops: closed after the new 1 s, long before the old 60 s.
    let mut stream = std::os::unix::net::UnixStream::connect(&rg.socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"GET /v1/breaker HTTP/1.1\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        started.elapsed() < WAIT,
        "the connection was closed by redguard, not by the test's own timeout"
    );
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "{answer:?}");
}

#[test]
fn allowed_uids_apply_to_the_next_connection() {
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), &by_hand(&format!("listen:\n  allowed_uids: [{uid}]\n")));
    assert_eq!(get(&rg, "k"), 200);
    write_config(&rg, &format!("listen:\n  allowed_uids: [{}]\n", uid + 1));
    let (status, body) = reload_now(&rg);
    assert_eq!(
        (status, &body["changed"]),
        (200, &json!(["listen.allowed_uids"])),
        "{body}"
    );
    let r = rg.cmd(r#"{"op":"get","key":"k"}"#);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "peer_not_allowed");
}

#[test]
fn the_reload_route_takes_no_fields_and_a_body_with_one_reloads_nothing() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), &by_hand(""));
    let r = http(&rg.socket, "POST", "/v1/reload", r#"{"path": "/etc/other.yaml"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "bad_request");
    assert!(r.body.contains("path"), "names the field: {}", r.body);
    assert_eq!(reloads(&rg, "success"), 0.0, "nothing was reloaded");
    assert_eq!(http(&rg.socket, "POST", "/v1/reload", "{}").status, 200);
    assert_eq!(http(&rg.socket, "GET", "/v1/reload", "").status, 405);
    assert_eq!(reloads(&rg, "success"), 1.0);
}
