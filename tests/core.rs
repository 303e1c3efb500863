//! The core promises, proven against a real `redis-server` and the real `redguard` binary over its socket.

mod common;

use std::time::{Duration, Instant};

use common::{Redguard, RedisServer};
use serde_json::{json, Value};

/// Short timings so outages and recoveries happen within a test.
const FAST: &str = "breaker:\n  failure_threshold: 3\n  recovery_timeout: 1s\n  recovery_jitter: 0\n";

fn fast_config() -> String {
    FAST.to_owned()
}

fn start() -> (RedisServer, Redguard) {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), &fast_config());
    (redis, rg)
}

fn ok(rg: &Redguard, body: Value) -> Value {
    let r = rg.cmd(&body.to_string());
    assert_eq!(r.status, 200, "{body} -> {} {}", r.status, r.body);
    r.json()
}

#[test]
fn every_op_round_trips_through_redis() {
    let (redis, rg) = start();
    assert_eq!(
        ok(&rg, json!({"op": "ping"})),
        json!({"result": true, "source": "redis"})
    );
    assert_eq!(
        ok(&rg, json!({"op": "set", "key": "user:1", "value": "ada"})),
        json!({"result": true, "source": "redis"})
    );
    assert_eq!(
        redis.cmd(&["GET", "user:1"]).as_deref(),
        Some("ada"),
        "the value really is in Redis"
    );
    assert_eq!(ok(&rg, json!({"op": "get", "key": "user:1"}))["result"], "ada");
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "missing"})),
        json!({"result": null, "source": "redis"})
    );
    assert_eq!(
        ok(&rg, json!({"op": "set", "key": "user:1", "value": "x", "nx": true}))["result"],
        false
    );
    assert_eq!(
        ok(&rg, json!({"op": "set", "key": "tmp", "value": "x", "ttl_ms": 60000}))["result"],
        true
    );
    let ttl = ok(&rg, json!({"op": "ttl", "key": "tmp"}))["result"].as_i64().unwrap();
    assert!((58..=60).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        ok(&rg, json!({"op": "exists", "keys": ["user:1", "tmp", "nope"]}))["result"],
        2
    );
    assert_eq!(
        ok(&rg, json!({"op": "expire", "key": "user:1", "seconds": 100}))["result"],
        true
    );
    assert_eq!(
        ok(&rg, json!({"op": "expire", "key": "nope", "seconds": 100}))["result"],
        false
    );
    assert_eq!(ok(&rg, json!({"op": "incr", "key": "n"}))["result"], 1);
    assert_eq!(ok(&rg, json!({"op": "incr", "key": "n", "by": 41}))["result"], 42);
    assert_eq!(
        ok(&rg, json!({"op": "hset", "key": "h", "fields": {"a": "1", "b": "2"}}))["result"],
        2
    );
    assert_eq!(ok(&rg, json!({"op": "hget", "key": "h", "field": "a"}))["result"], "1");
    assert_eq!(
        ok(&rg, json!({"op": "hgetall", "key": "h"}))["result"],
        json!({"a": "1", "b": "2"})
    );
    assert_eq!(
        ok(&rg, json!({"op": "hdel", "key": "h", "fields": ["a", "zz"]}))["result"],
        1
    );
    assert_eq!(
        ok(&rg, json!({"op": "del", "keys": ["user:1", "tmp", "nope"]}))["result"],
        2
    );
    assert_eq!(redis.cmd(&["EXISTS", "user:1"]).as_deref(), Some("0"));
}

#[test]
fn binary_values_travel_as_base64() {
    let (redis, rg) = start();
    ok(
        &rg,
        json!({"op": "set", "key": "bin", "value": "AP8Q", "encoding": "base64"}),
    );
    assert_eq!(redis.cmd(&["STRLEN", "bin"]).as_deref(), Some("3"));
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "bin", "encoding": "base64"}))["result"],
        "AP8Q"
    );
    let r = rg.cmd(r#"{"op":"get","key":"bin"}"#);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (422, Some("not_utf8")));
}

#[test]
fn application_errors_are_422_and_do_not_count_against_redis() {
    let (_redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "s", "value": "text"}));
    for _ in 0..5 {
        let r = rg.cmd(r#"{"op":"hget","key":"s","field":"f"}"#);
        assert_eq!(r.status, 422);
        assert_eq!(r.json()["error"]["code"], "redis_error");
        assert!(
            r.json()["error"]["message"].as_str().unwrap().starts_with("WRONGTYPE"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        rg.breaker_state(),
        "closed",
        "five application errors must not trip a threshold of three"
    );
    assert_eq!(rg.breaker()["failure_count"], 0);
}

#[test]
fn redis_killed_reads_come_from_the_cache_writes_are_refused_and_the_breaker_opens() {
    let (mut redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "user:1", "value": "ada"}));
    ok(&rg, json!({"op": "hset", "key": "prefs", "fields": {"theme": "dark"}}));
    ok(&rg, json!({"op": "hgetall", "key": "prefs"}));
    redis.kill();

    // While closed, each failing call still answers: reads from the cache, with the source said.
    let got = ok(&rg, json!({"op": "get", "key": "user:1"}));
    assert_eq!(got, json!({"result": "ada", "source": "cache", "degraded": true}));
    let got = ok(&rg, json!({"op": "hgetall", "key": "prefs"}));
    assert_eq!(
        got,
        json!({"result": {"theme": "dark"}, "source": "cache", "degraded": true})
    );
    let got = ok(
        &rg,
        json!({"op": "get", "key": "never-read", "default": {"anonymous": true}}),
    );
    assert_eq!(
        got,
        json!({"result": {"anonymous": true}, "source": "default", "degraded": true})
    );
    assert_eq!(rg.breaker_state(), "open", "three failures trip a threshold of three");

    // Open: fail fast, and say so.
    let started = Instant::now();
    let r = rg.cmd(r#"{"op":"set","key":"user:2","value":"bob"}"#);
    let elapsed = started.elapsed();
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!(body["degraded"], true);
    assert_eq!(body["cached"], true, "a refused SET is kept for this pod's reads");
    assert!(body["error"]["retry_after_ms"].as_u64().unwrap() <= 1000);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        elapsed < Duration::from_millis(100),
        "an open circuit answered in {elapsed:?}"
    );
    // ... and the refused write is visible to this pod's reads, labelled as cache.
    assert_eq!(ok(&rg, json!({"op": "get", "key": "user:2"}))["source"], "cache");
    assert_eq!(ok(&rg, json!({"op": "get", "key": "user:2"}))["result"], "bob");
    let r = rg.cmd(r#"{"op":"del","keys":["user:1"]}"#);
    assert_eq!((r.status, r.json()["cached"].clone()), (503, json!(false)));
}

#[test]
fn calls_while_open_do_not_touch_redis() {
    let (redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));
    ok(&rg, json!({"op": "get", "key": "k"}));
    assert_eq!(rg.control("force_open").status, 200);
    let before = redis.commands_processed();
    for _ in 0..20 {
        assert_eq!(ok(&rg, json!({"op": "get", "key": "k"}))["source"], "cache");
        assert_eq!(rg.cmd(r#"{"op":"incr","key":"n"}"#).status, 503);
    }
    // INFO itself is one command.
    assert_eq!(
        redis.commands_processed(),
        before + 1,
        "no call reached Redis while open"
    );
    assert_eq!(rg.breaker()["forced"], "open");
    assert_eq!(rg.breaker()["override"], "force_open");
    let reset = rg.control("reset").json();
    assert_eq!(reset["state"], "closed");
    assert_eq!(reset["override"], "none");
    assert_eq!(ok(&rg, json!({"op": "get", "key": "k"}))["source"], "redis");
    let closed = rg.control("force_closed").json();
    assert_eq!(
        (closed["forced"].as_str(), closed["override"].as_str()),
        (Some("closed"), Some("force_closed"))
    );
}

#[test]
fn after_a_restart_a_probe_closes_the_breaker() {
    let (mut redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));
    redis.kill();
    for _ in 0..3 {
        rg.cmd(r#"{"op":"get","key":"k"}"#);
    }
    assert_eq!(rg.breaker_state(), "open");
    redis.restart();
    // No application call is needed: redguard probes by itself once the recovery timeout has passed.
    common::wait_for("the breaker to close", Duration::from_secs(10), || {
        (rg.breaker_state() == "closed").then_some(())
    });
    // Redis came back empty, and redguard now answers from Redis, not from the cache.
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "k"})),
        json!({"result": null, "source": "redis"})
    );
    let log = rg.log();
    assert!(
        log.contains("circuit state changed") && log.contains("circuit closed"),
        "{log}"
    );
}

#[test]
fn a_frozen_redis_trips_the_breaker_through_timeouts_and_nobody_waits_longer() {
    let redis = RedisServer::start();
    let rg = Redguard::start(
        &redis.url(),
        &(fast_config() + "redis:\n  url: URL\n  command_timeout: 200ms\n").replace("URL", &redis.url()),
    );
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));
    redis.pause();
    let mut slowest = Duration::ZERO;
    let mut statuses = Vec::new();
    for body in [
        r#"{"op":"get","key":"k"}"#,
        r#"{"op":"incr","key":"n"}"#,
        r#"{"op":"get","key":"k"}"#,
        r#"{"op":"get","key":"k"}"#,
    ] {
        let started = Instant::now();
        let r = rg.cmd(body);
        slowest = slowest.max(started.elapsed());
        statuses.push((
            r.status,
            r.json()["source"].as_str().map(str::to_owned),
            r.json()["error"]["code"].as_str().map(str::to_owned),
        ));
    }
    redis.resume();
    let cache = Some("cache".to_owned());
    assert_eq!(
        statuses,
        vec![
            (200, cache.clone(), None),
            (504, None, Some("timeout".to_owned())),
            (200, cache.clone(), None),
            (200, cache, None), // the breaker is open by now: served from the cache without waiting
        ]
    );
    // 200ms timeout plus a wide margin for a loaded 2-core machine (the bound is about hanging, not speed):
    // without the timeout these calls would wait until Redis is thawed, i.e. forever.
    assert!(slowest < Duration::from_millis(700), "slowest call took {slowest:?}");
    assert_eq!(rg.breaker_state(), "open");
}

#[test]
fn on_unavailable_default_answers_writes_with_safe_defaults() {
    let (redis, rg) = start();
    drop(redis);
    let cases = [
        (
            json!({"op": "set", "key": "a", "value": "1", "on_unavailable": "default"}),
            json!(false),
        ),
        (
            json!({"op": "del", "keys": ["a"], "on_unavailable": "default"}),
            json!(0),
        ),
        (
            json!({"op": "exists", "keys": ["a"], "on_unavailable": "default"}),
            json!(0),
        ),
        (
            json!({"op": "hset", "key": "h", "fields": {"f": "v"}, "on_unavailable": "default"}),
            json!(0),
        ),
        (
            json!({"op": "expire", "key": "a", "seconds": 5, "on_unavailable": "default"}),
            json!(false),
        ),
        (json!({"op": "ping", "on_unavailable": "default"}), json!(false)),
    ];
    for (req, result) in cases {
        let body = ok(&rg, req.clone());
        assert_eq!(
            (&body["result"], &body["source"], &body["degraded"]),
            (&result, &json!("default"), &json!(true)),
            "{req}"
        );
    }
    // INCR has no honest default: it stays an error even when asked for one.
    let r = rg.cmd(r#"{"op":"incr","key":"n","on_unavailable":"default"}"#);
    assert!(r.status == 503, "{}", r.body);
}

#[test]
fn starts_with_redis_down_and_heals_when_it_appears() {
    let mut redis = RedisServer::start();
    redis.kill();
    let rg = Redguard::start(&redis.url(), &fast_config());
    let r = ok(&rg, json!({"op": "get", "key": "k", "default": "fallback"}));
    assert_eq!(r, json!({"result": "fallback", "source": "default", "degraded": true}));
    redis.restart();
    common::wait_for("redguard to reach Redis", Duration::from_secs(10), || {
        let r = rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#);
        (r.status == 200).then_some(())
    });
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "k"})),
        json!({"result": "v", "source": "redis"})
    );
}

#[test]
fn bad_requests_get_a_4xx_with_a_json_error_naming_the_problem() {
    let (_redis, rg) = start();
    let cases: [(&str, u16, &str, &str); 8] = [
        (r#"{"op":"get","key":5}"#, 400, "bad_request", "field `key`"),
        (r#"{"op":"get"}"#, 400, "bad_request", "needs field `key`"),
        (
            r#"{"op":"get","key":"k","colour":"red"}"#,
            400,
            "bad_request",
            "unknown field `colour`",
        ),
        (r#"{"op":"teleport"}"#, 400, "unknown_op", "teleport"),
        (r#"{"op":"get","#, 400, "bad_request", "invalid JSON"),
        ("", 400, "bad_request", "invalid JSON"),
        (
            r#"{"op":"set","key":"k","value":"%%%","encoding":"base64"}"#,
            400,
            "bad_request",
            "base64",
        ),
        (r#"{"op":"get","key":""}"#, 400, "bad_request", "empty"),
    ];
    for (body, status, code, mentions) in cases {
        let r = rg.cmd(body);
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let json = r.json();
        assert_eq!(json["error"]["code"], code, "{body}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains(mentions),
            "{body}: {}",
            r.body
        );
    }
    // Invalid UTF-8 in the body.
    let body = b"{\"op\":\"get\",\"key\":\"\xff\xfe\"}";
    let mut raw = format!(
        "POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let r = common::raw_request(&rg.socket, &raw);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Unknown route, wrong method.
    let r = common::http(&rg.socket, "GET", "/v2/everything", "");
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("not_found")));
    for (method, path, allow) in [
        ("GET", "/v1/cmd", "POST"),
        ("PUT", "/v1/pipeline", "POST"),
        ("DELETE", "/v1/breaker", "GET,HEAD,POST"),
        ("POST", "/api/v1/health/redis", "GET,HEAD"),
    ] {
        let r = common::http(&rg.socket, method, path, "");
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str(), r.header("allow")),
            (405, Some("method_not_allowed"), Some(allow)),
            "{method} {path}"
        );
    }
    // A query string does not change the route; HEAD is answered like GET, without a body.
    let r = common::http(&rg.socket, "GET", "/api/v1/health/circuit-breaker?verbose=1", "");
    assert_eq!((r.status, r.json()["state"].as_str()), (200, Some("closed")));
    let r = common::raw_request(
        &rg.socket,
        b"HEAD /v1/breaker HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.body.as_str(), r.header("content-type")),
        (200, "", Some("application/json"))
    );
    let r = rg.control("explode");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[test]
fn oversized_bodies_get_413() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "api:\n  max_body_bytes: 1KiB\n");
    let value = "x".repeat(2000);
    let r = rg.cmd(&json!({"op": "set", "key": "k", "value": value}).to_string());
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    assert_eq!(redis.cmd(&["EXISTS", "k"]).as_deref(), Some("0"), "nothing was written");
    assert_eq!(
        ok(&rg, json!({"op": "set", "key": "k", "value": "x".repeat(900)}))["result"],
        true
    );
}

#[test]
fn sigterm_drains_removes_the_socket_and_exits_zero() {
    let (_redis, mut rg) = start();
    ok(&rg, json!({"op": "ping"}));
    assert!(rg.socket.exists());
    rg.sigterm();
    assert_eq!(rg.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!rg.socket.exists(), "socket file removed on shutdown");
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_is_not_stolen() {
    let redis = RedisServer::start();
    let first = Redguard::start(&redis.url(), "");
    // A second redguard on the same socket path must refuse to start.
    let config = first.dir.path().join("second.yaml");
    let port = common::free_port();
    std::fs::write(
        &config,
        format!(
            "listen:\n  socket: {}\nadmin:\n  listen: 127.0.0.1:{port}\n",
            first.socket.display()
        ),
    )
    .unwrap();
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_redguard")).args(["run", "--config", config.to_str().unwrap()]),
        "redguard",
        common::TOOL_LIMIT,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already listening"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(first.cmd(r#"{"op":"ping"}"#).status, 200, "the first one still serves");

    // A file left behind by a crash (nobody listening) is removed and replaced.
    let stale_dir = tempfile::tempdir().unwrap();
    let stale = stale_dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let yaml = format!(
        "listen:\n  socket: {}\nadmin:\n  listen: 127.0.0.1:{}\nredis:\n  url: {}\n",
        stale.display(),
        common::free_port(),
        redis.url()
    );
    std::fs::write(stale_dir.path().join("c.yaml"), yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_redguard"))
        .args(["run", "--config", stale_dir.path().join("c.yaml").to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let r = common::wait_for("redguard on the stale path", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&stale)
            .ok()
            .map(|_| common::http(&stale, "POST", "/v1/cmd", r#"{"op":"ping"}"#))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200);
}

#[test]
fn the_socket_gets_the_configured_mode() {
    use std::os::unix::fs::PermissionsExt;
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "");
    assert_eq!(
        std::fs::metadata(&rg.socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

#[test]
fn check_config_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listen:\n  socket: /tmp/x.sock\nbreaker:\n  failure_treshold: 3\n",
    )
    .unwrap();
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_redguard")).args(["check-config", file.to_str().unwrap()]),
        "redguard",
        common::TOOL_LIMIT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:4") && err.contains("failure_treshold"), "{err}");

    std::fs::write(&file, "breaker:\n  failure_threshold: 3\n").unwrap();
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_redguard")).args(["check-config", file.to_str().unwrap()]),
        "redguard",
        common::TOOL_LIMIT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn passwords_never_reach_the_log_metrics_health_or_errors() {
    let redis = RedisServer::start();
    redis.cmd(&["CONFIG", "SET", "requirepass", "s3cret-pw-123"]).unwrap();
    let url = format!("redis://:s3cret-pw-123@127.0.0.1:{}", redis.port);
    let rg = Redguard::start(&url, "");
    assert_eq!(
        ok(&rg, json!({"op": "set", "key": "k", "value": "v"}))["source"],
        "redis"
    );
    let log = rg.log();
    assert!(log.contains("redguard listening"), "{log}");
    // Neither the log, nor /metrics, nor the health routes, nor an error answer shows it.
    let mut redis = redis;
    redis.kill();
    let refused = rg.cmd(r#"{"op":"incr","key":"n"}"#);
    assert_ne!(refused.status, 200, "{}", refused.body);
    let emitted = [
        ("log", rg.log()),
        ("metrics", rg.metrics()),
        ("health", common::http_tcp(rg.admin, "/api/v1/health/redis").body),
        (
            "breaker health",
            common::http_tcp(rg.admin, "/api/v1/health/circuit-breaker").body,
        ),
        ("error answer", refused.body),
    ];
    for (what, text) in emitted {
        assert!(!text.contains("s3cret-pw-123"), "password in {what}:\n{text}");
    }
}

#[test]
fn the_password_can_come_from_a_file_or_the_environment() {
    let redis = RedisServer::start();
    redis.cmd(&["CONFIG", "SET", "requirepass", "from-a-file-42"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "from-a-file-42\n").unwrap();
    let rg = Redguard::start(&redis.url(), &format!("redis:\n  password_file: {}\n", file.display()));
    assert_eq!(
        ok(&rg, json!({"op": "set", "key": "k", "value": "v"}))["source"],
        "redis"
    );

    // The environment wins over the file: a wrong password there means Redis refuses every call.
    let rg = Redguard::start_with_env(
        &redis.url(),
        &format!("redis:\n  password_file: {}\n", file.display()),
        &[("REDGUARD_REDIS_PASSWORD", "wrong-password-7")],
    );
    let r = rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!r.body.contains("wrong-password-7") && !rg.log().contains("wrong-password-7"));
    let rg = Redguard::start_with_env(&redis.url(), "", &[("REDGUARD_REDIS_PASSWORD", "from-a-file-42")]);
    assert_eq!(ok(&rg, json!({"op": "get", "key": "k"}))["result"], "v");
}

#[test]
fn the_first_call_after_redis_returns_is_answered_by_redis() {
    let (mut redis, rg) = start();
    // Held closed, so every call goes to Redis and the test sees the connection's own behaviour.
    assert_eq!(rg.control("force_closed").status, 200);
    for round in 0..3 {
        redis.kill();
        assert_eq!(
            rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#).status,
            503,
            "round {round}"
        );
        redis.restart();
        // The connection's last reconnect attempt failed while Redis was down; that stale refusal must not be
        // what the first call after the restart gets.
        let r = rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#);
        assert_eq!(r.status, 200, "round {round}: {}", r.body);
    }
}

#[test]
fn a_read_whose_connection_was_closed_is_sent_again_and_a_write_is_not() {
    let (redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "k", "value": "v"}));
    ok(&rg, json!({"op": "zadd", "key": "z", "members": [[1, "m"]]}));
    // Every read the command table calls safe to resend, typed or raw, not only the six the backend once listed.
    let reads = [
        json!({"op": "mget", "keys": ["k"]}),
        json!({"op": "zscore", "key": "z", "member": "m"}),
        json!({"op": "get", "key": "k"}),
    ];
    for read in reads {
        // Redis closes redguard's connection (as its idle `timeout` or a load balancer would); redis-rs learns it
        // only when it next uses the connection.
        redis.must(&["CLIENT", "KILL", "TYPE", "normal"]);
        let r = rg.cmd(&read.to_string());
        assert_eq!(
            (r.status, r.json()["source"].clone()),
            (200, json!("redis")),
            "{read}: {}",
            r.body
        );
    }
    let r = rg.post("/v1/command", &json!({"args": ["LRANGE", "nolist", "0", "-1"]}));
    assert_eq!(r.status, 200, "a raw read too, before the kill");
    redis.must(&["CLIENT", "KILL", "TYPE", "normal"]);
    let r = rg.post("/v1/command", &json!({"args": ["LRANGE", "nolist", "0", "-1"]}));
    assert_eq!(r.status, 200, "a raw read after the kill: {}", r.body);
    // A write is not sent twice (it may have been applied): the caller hears that Redis could not be asked.
    redis.must(&["CLIENT", "KILL", "TYPE", "normal"]);
    let r = rg.cmd(r#"{"op":"incr","key":"n"}"#);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "n"}))["result"],
        json!(null),
        "and it did not run"
    );
}

#[test]
fn clear_on_close_drops_the_fallback_cache_when_the_circuit_closes() {
    let redis = RedisServer::start();
    let keep = Redguard::start(&redis.url(), "");
    let clear = Redguard::start(&redis.url(), "cache:\n  clear_on_close: true\n");
    for rg in [&keep, &clear] {
        ok(rg, json!({"op": "set", "key": "k", "value": "v"}));
        rg.control("force_open");
        assert_eq!(ok(rg, json!({"op": "get", "key": "k"}))["source"], "cache");
        rg.control("reset"); // open -> closed
        rg.control("force_open");
    }
    assert_eq!(ok(&keep, json!({"op": "get", "key": "k"}))["source"], "cache");
    assert_eq!(
        ok(&clear, json!({"op": "get", "key": "k"}))["source"],
        "default",
        "the cache was dropped on close"
    );
}

#[test]
fn the_health_routes_are_served_on_the_socket_too() {
    let (_redis, rg) = start();
    ok(&rg, json!({"op": "ping"}));
    let redis_health = common::http(&rg.socket, "GET", "/api/v1/health/redis", "").json();
    assert_eq!(redis_health["redis_available"], true);
    assert_eq!(redis_health["circuit_breaker"]["successful_calls"], 1);
    let cb = common::http(&rg.socket, "GET", "/api/v1/health/circuit-breaker", "").json();
    assert_eq!(
        (cb["state"].as_str(), cb["config"]["failure_threshold"].as_u64()),
        (Some("closed"), Some(3))
    );
}

/// `nodes` (each cluster master's own breaker) is left out in standalone mode, not null: the answers keep
/// exactly their shape.
#[test]
fn the_breaker_answers_have_no_nodes_outside_cluster_mode() {
    let (_redis, rg) = start();
    let keys = |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&rg.breaker()),
        [
            "failure_count",
            "forced",
            "mode",
            "override",
            "seconds_until_half_open",
            "state"
        ]
    );
    assert_eq!(
        keys(&rg.control("force_open").json()),
        [
            "failure_count",
            "forced",
            "mode",
            "override",
            "seconds_until_half_open",
            "state"
        ]
    );
    for cb in [
        common::http(&rg.socket, "GET", "/api/v1/health/circuit-breaker", "").json(),
        common::http_tcp(rg.admin, "/api/v1/health/circuit-breaker").json(),
    ] {
        assert_eq!(
            keys(&cb),
            [
                "cache_hits",
                "cache_misses",
                "cache_size",
                "config",
                "failed_calls",
                "failure_count",
                "fallback_calls",
                "forced",
                "last_failure_time",
                "mode",
                "override",
                "seconds_until_half_open",
                "state",
                "state_entered_at",
                "status",
                "successful_calls",
                "total_calls",
            ],
            "{cb}"
        );
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rg.sock");
    let config = dir.path().join("c.yaml");
    let yaml = format!(
        "listen:\n  socket: {}\nadmin:\n  listen: 127.0.0.1:{}\nredis:\n  url: {}\n",
        socket.display(),
        common::free_port(),
        redis.url()
    );
    std::fs::write(&config, yaml).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_redguard"))
        .args(["--log-format", "json", "run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for("the socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = common::wait_within(child, "redguard after SIGTERM", common::TOOL_LIMIT);
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // `message` and the fields at the top level, where log pipelines look.
    let listening = lines
        .iter()
        .find(|l| l["message"] == "redguard listening")
        .unwrap_or_else(|| panic!("no top-level message: {text}"));
    assert_eq!(listening["socket"], socket.display().to_string(), "{listening}");
    assert_eq!(listening["redis_mode"], "standalone", "{listening}");
    assert!(listening.get("fields").is_none(), "{listening}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{text}"
    );
}

/// `"cached": true` says a refused write was kept for this pod's reads; when the cache refused it (disabled, or
/// the value larger than `cache.max_bytes`), the answer says `false` and a read indeed finds nothing.
#[test]
fn cached_says_what_the_cache_actually_kept() {
    let redis = RedisServer::start();
    for yaml in ["cache:\n  max_entries: 0\n", "cache:\n  max_bytes: 0\n"] {
        let rg = Redguard::start(&redis.url(), yaml);
        assert_eq!(rg.control("force_open").status, 200);
        for body in [
            r#"{"op":"set","key":"k","value":"v"}"#,
            r#"{"op":"mset","pairs":{"k":"v"}}"#,
        ] {
            let r = rg.cmd(body);
            assert_eq!(
                (r.status, r.json()["cached"].clone()),
                (503, json!(false)),
                "{yaml} {body}"
            );
        }
        let r = rg.post(
            "/v1/pipeline",
            &json!({"commands": [{"op": "set", "key": "k", "value": "v"}]}),
        );
        assert_eq!((r.status, r.json()["cached"].clone()), (503, json!(false)), "{yaml}");
        let got = ok(&rg, json!({"op": "get", "key": "k"}));
        assert_eq!(
            (got["result"].clone(), got["source"].clone()),
            (json!(null), json!("default"))
        );
    }

    // 32 bytes of key + value fit, 33 do not.
    let rg = Redguard::start(&redis.url(), "cache:\n  max_bytes: 32\n");
    assert_eq!(rg.control("force_open").status, 200);
    let (fits, too_big) = ("v".repeat(31), "v".repeat(32));
    let cached = |body: Value| {
        let r = rg.post(
            if body.get("commands").is_some() {
                "/v1/pipeline"
            } else {
                "/v1/cmd"
            },
            &body,
        );
        assert_eq!(r.status, 503, "{body} -> {}", r.body);
        r.json()["cached"].as_bool().unwrap()
    };
    assert!(cached(json!({"op": "set", "key": "a", "value": fits})));
    assert_eq!(ok(&rg, json!({"op": "get", "key": "a"}))["source"], "cache");
    assert!(!cached(json!({"op": "set", "key": "a", "value": too_big})));
    assert_eq!(ok(&rg, json!({"op": "get", "key": "a"}))["source"], "default");
    assert!(!cached(json!({"op": "mset", "pairs": {"a": fits, "b": too_big}})));
    assert!(cached(json!({"op": "mset", "pairs": {"a": "1", "b": "2"}})));
    // Each value fits alone, but together they do not: not every value of the MSET is kept.
    assert!(!cached(
        json!({"op": "mset", "pairs": {"a": fits.clone(), "b": fits.clone()}})
    ));
    // A pipeline's writes: cached only if each of them was kept.
    let set = |key: &str, value: &str| json!({"op": "set", "key": key, "value": value});
    assert!(cached(json!({"commands": [set("a", "1"), set("b", "2")]})));
    assert!(!cached(json!({"commands": [set("a", "1"), set("b", &too_big)]})));
    assert!(!cached(
        json!({"commands": [set("a", "1"), {"args": ["SET", "c", "3"]}]})
    ));
    // With on_unavailable: default the answer is a 200, and it says the same.
    let r = ok(
        &rg,
        json!({"op": "set", "key": "a", "value": too_big, "on_unavailable": "default"}),
    );
    assert_eq!(r, json!({"result": false, "source": "default", "degraded": true}));
    let r = ok(
        &rg,
        json!({"op": "set", "key": "a", "value": "1", "on_unavailable": "default"}),
    );
    assert_eq!(
        r,
        json!({"result": false, "source": "default", "degraded": true, "cached": true})
    );
}

/// A forced-open circuit never half-opens by itself, so no answer may hint at a time to retry: no
/// `retry_after_ms`, no `Retry-After`, `reset_ms: 0` from a `deny` rate limiter, and `/v1/breaker` and the health
/// JSON agree (`seconds_until_half_open: null`). The automatic open state keeps its hint.
#[test]
fn a_forced_open_circuit_gives_no_retry_hint() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), &format!("{FAST}ratelimit:\n  on_unavailable: deny\n"));
    assert_eq!(rg.control("force_open").status, 200);
    let breaker = rg.breaker();
    assert_eq!(
        (breaker["state"].clone(), breaker["forced"].clone()),
        (json!("open"), json!("open"))
    );
    assert_eq!(breaker["seconds_until_half_open"], Value::Null);
    let health = common::http(&rg.socket, "GET", "/api/v1/health/circuit-breaker", "").json();
    assert_eq!(health["seconds_until_half_open"], Value::Null, "{health}");
    let answers = [
        rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#),
        rg.cmd(r#"{"op":"incr","key":"n"}"#),
        rg.post("/v1/command", &json!({"args": ["SET", "k", "v"]})),
        rg.post("/v1/pipeline", &json!({"commands": [{"op": "incr", "key": "n"}]})),
    ];
    for r in &answers {
        let body = r.json();
        assert_eq!(
            (r.status, body["error"]["code"].clone()),
            (503, json!("circuit_open")),
            "{body}"
        );
        assert_eq!(body["error"].get("retry_after_ms"), None, "{body}");
        assert_eq!(r.header("retry-after"), None, "{body}");
    }
    let r = rg.post("/v1/ratelimit", &json!({"key": "k", "limit": 1, "window_ms": 60000}));
    assert_eq!(r.json()["reset_ms"], 0, "{}", r.body);

    // Reset, then let failures open it: now it will half-open, and the answers say when.
    assert_eq!(rg.control("reset").status, 200);
    let mut redis = redis;
    redis.kill();
    common::wait_for("the circuit to open", Duration::from_secs(10), || {
        rg.cmd(r#"{"op":"incr","key":"n"}"#);
        (rg.breaker_state() == "open").then_some(())
    });
    let r = rg.cmd(r#"{"op":"incr","key":"n"}"#);
    assert!(r.json()["error"]["retry_after_ms"].as_u64().is_some(), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
}
