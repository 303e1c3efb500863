//! Hostile and malformed input: every bad request gets its exact status and error code, slow and idle clients
//! cannot hold the socket hostage, and the socket's access controls hold. And a careless operator: a socket path
//! that names a file, a link or a directory never costs them that file, `check-config` refuses whatever `run`
//! would refuse, a failed start leaves no socket behind, and an invalid config exits 78.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{raw_request, Redguard, RedisServer};

const LIMITS: &str =
    "api:\n  max_body_bytes: 4KiB\n  max_key_bytes: 16\n  max_value_bytes: 64\n  read_timeout: 300ms\n";

#[test]
fn each_bad_request_gets_its_exact_status_and_code() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), LIMITS);
    let long_key = "k".repeat(17);
    let long_value = "v".repeat(65);
    let table: Vec<(&str, String, u16, &str)> = vec![
        ("invalid JSON", r#"{"op":"get","key":"#.into(), 400, "bad_request"),
        ("not an object", r#"["get","k"]"#.into(), 400, "bad_request"),
        ("wrong type", r#"{"op":"get","key":["k"]}"#.into(), 400, "bad_request"),
        (
            "wrong type of number",
            r#"{"op":"expire","key":"k","seconds":"ten"}"#.into(),
            400,
            "bad_request",
        ),
        ("missing field", r#"{"op":"set","key":"k"}"#.into(), 400, "bad_request"),
        ("missing op", r#"{"key":"k"}"#.into(), 400, "bad_request"),
        ("unknown op", r#"{"op":"flushall"}"#.into(), 400, "unknown_op"),
        (
            "unknown field",
            r#"{"op":"get","key":"k","ttl":1}"#.into(),
            400,
            "bad_request",
        ),
        ("empty key", r#"{"op":"get","key":""}"#.into(), 400, "bad_request"),
        (
            "key over the limit",
            format!(r#"{{"op":"get","key":"{long_key}"}}"#),
            400,
            "bad_request",
        ),
        (
            "value over the limit",
            format!(r#"{{"op":"set","key":"k","value":"{long_value}"}}"#),
            400,
            "bad_request",
        ),
        (
            "invalid base64",
            r#"{"op":"set","key":"k","value":"***","encoding":"base64"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "body over the limit",
            format!(r#"{{"op":"set","key":"k","value":"{}"}}"#, "x".repeat(5000)),
            413,
            "payload_too_large",
        ),
    ];
    for (what, body, status, code) in table {
        let r = rg.cmd(&body);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{what}: {}", r.body);
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty(), "{what}");
    }
    // Invalid UTF-8 inside a JSON string.
    let body: &[u8] = b"{\"op\":\"get\",\"key\":\"\xc3\x28\"}";
    let mut req = format!(
        "POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let r = raw_request(&rg.socket, &req);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "invalid UTF-8"
    );
    // Nothing above reached Redis as a write.
    assert_eq!(redis.cmd(&["DBSIZE"]).as_deref(), Some("0"));
}

#[test]
fn a_client_trickling_its_body_gets_408_and_one_trickling_headers_is_disconnected() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), LIMITS);

    let mut slow_body = UnixStream::connect(&rg.socket).unwrap();
    slow_body.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow_body
        .write_all(b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"op\":")
        .unwrap();
    let mut answer = String::new();
    slow_body.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    let mut slow_head = UnixStream::connect(&rg.socket).unwrap();
    slow_head.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow_head.write_all(b"POST /v1/cmd HTTP/1.1\r\nHost:").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = match slow_head.read(&mut buf) {
        Ok(_) => true, // EOF, or hyper's 408 before closing
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "the server must close a connection whose headers never complete"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );

    // The server still serves others.
    assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
}

#[test]
fn the_connection_limit_holds_and_a_slot_frees_when_a_client_leaves() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "api:\n  max_connections: 3\n  read_timeout: 30s\n");
    // Three idle clients take every slot.
    let idle: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&rg.socket).unwrap()).collect();
    // A fourth is accepted by the kernel (backlog) but not served while the slots are taken.
    let mut waiting = UnixStream::connect(&rg.socket).unwrap();
    waiting
        .write_all(
            b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"op\":\"ping\"}",
        )
        .unwrap();
    waiting.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 64];
    let err = waiting.read(&mut buf).expect_err("no answer while all slots are taken");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    // One idle client leaves: the waiting one is served.
    drop(idle.into_iter().next());
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn only_allowed_peer_uids_may_use_the_socket() {
    // SAFETY: getuid(2) cannot fail.
    let me = unsafe { libc::getuid() };
    let redis = RedisServer::start();
    let other = Redguard::start(
        &redis.url(),
        &format!("listen:\n  allowed_uids: [{}]\n", me.wrapping_add(1)),
    );
    let r = other.cmd(r#"{"op":"ping"}"#);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "peer_not_allowed");
    let m = other.metrics();
    assert_eq!(
        common::metric_value(&m, r#"redguard_redis_command_duration_seconds_count{op="ping"}"#),
        0.0
    );
    assert_eq!(
        common::metric_value(&m, r#"redguard_calls_total{result="success"}"#),
        0.0,
        "nothing reached Redis"
    );

    let mine = Redguard::start(&redis.url(), &format!("listen:\n  allowed_uids: [{me}]\n"));
    assert_eq!(mine.cmd(r#"{"op":"ping"}"#).status, 200);
}

#[test]
fn the_socket_gets_the_configured_group_and_mode() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // Root may hand the socket to any group; others only to their own.
    let group = if uid == 0 { 65534 } else { gid };
    let redis = RedisServer::start();
    let rg = Redguard::start(
        &redis.url(),
        &format!("listen:\n  socket_group: \"{group}\"\n  socket_mode: \"0640\"\n"),
    );
    let meta = std::fs::metadata(&rg.socket).unwrap();
    assert_eq!(meta.gid(), group);
    assert_eq!(meta.mode() & 0o777, 0o640);
}

/// An invalid configuration's exit status (EX_CONFIG), for `run`, `check-config` and `notify-test`.
const EXIT_CONFIG: i32 = 78;

/// Runs the redguard binary to its exit, or kills it after 10 s (a `run` that should have refused to start but
/// serves instead): its exit code (None if killed) and its stderr.
fn redguard_exit(cmd: &mut Command, dir: &Path) -> (Option<i32>, String) {
    let log = dir.join("stderr.log");
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log).unwrap())
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redguard"))
}

/// `check-config FILE` and `run --config FILE` (admin on a free port, Redis where nothing listens: neither is
/// reached when the config is refused).
fn check_and_run(file: &Path, dir: &Path) -> [(Option<i32>, String); 2] {
    let file = file.to_str().unwrap();
    let admin = format!("127.0.0.1:{}", common::free_port());
    [
        redguard_exit(bin().args(["check-config", file]), dir),
        redguard_exit(
            bin()
                .args(["run", "--config", file])
                .env("REDGUARD_ADMIN_LISTEN", &admin),
            dir,
        ),
    ]
}

#[test]
fn a_file_a_link_or_a_directory_at_the_socket_path_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("redguard.yaml");
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let subdir = dir.path().join("a-directory");
    std::fs::create_dir(&subdir).unwrap();
    // The config file itself, a link to a regular file, a directory.
    for (path, kind) in [
        (&config, "a regular file"),
        (&link, "a symbolic link"),
        (&subdir, "a directory"),
    ] {
        let yaml = format!(
            "listen:\n  socket: {}\nredis:\n  url: redis://127.0.0.1:1\n",
            path.display()
        );
        std::fs::write(&config, &yaml).unwrap();
        for (code, stderr) in check_and_run(&config, dir.path()) {
            assert_eq!(code, Some(EXIT_CONFIG), "{kind}: {stderr}");
            assert!(
                stderr.contains(&format!("listen.socket {} is {kind}", path.display())),
                "{kind}: {stderr}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            yaml,
            "the config file is intact"
        );
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert!(subdir.is_dir());
}

#[test]
fn check_config_refuses_what_run_refuses_and_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("redguard.yaml");
    let long = dir.path().join("s".repeat(120)); // over sun_path's 107 bytes
    std::fs::write(
        &config,
        format!(
            "listen:\n  socket: {}\n  socket_group: no-such-group-rg\nredis:\n  url: redis://127.0.0.1:99999\n",
            long.display()
        ),
    )
    .unwrap();
    for (code, stderr) in check_and_run(&config, dir.path()) {
        assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
        for expected in [
            "a Unix socket path may have at most 107",
            "listen.socket_group: no group \"no-such-group-rg\"",
            "redis.url: \"redis://127.0.0.1:99999\" is not a valid Redis URL",
        ] {
            assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
        }
    }
}

#[test]
fn a_start_that_fails_after_the_bind_leaves_no_socket_behind() {
    // SAFETY: getuid(2) and getgroups(2) cannot fail with these arguments.
    let (uid, groups) = unsafe {
        let mut groups = vec![0 as libc::gid_t; 256];
        let n = libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr());
        groups.truncate(n.max(0) as usize);
        groups.push(libc::getgid());
        (libc::getuid(), groups)
    };
    // A group this process may not give the socket to: chown fails after the bind. Root may give it any group,
    // so it runs without CAP_CHOWN.
    let gid = [65534, 0, 12345].into_iter().find(|g| !groups.contains(g)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rg.sock");
    let config = dir.path().join("redguard.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  socket: {}\n  socket_group: \"{gid}\"\nadmin:\n  listen: 127.0.0.1:{}\nredis:\n  url: redis://127.0.0.1:1\n",
            socket.display(),
            common::free_port()
        ),
    )
    .unwrap();
    let mut cmd = if uid == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-chown",
            "--bounding-set=-chown",
            env!("CARGO_BIN_EXE_redguard"),
        ]);
        c
    } else {
        bin()
    };
    let (code, stderr) = redguard_exit(cmd.args(["run", "--config", config.to_str().unwrap()]), dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot set up socket {}", socket.display())),
        "{stderr}"
    );
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "the socket bound before the failure is removed"
    );

    // The admin port taken: nothing is bound either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &config,
        format!(
            "listen:\n  socket: {}\nadmin:\n  listen: {}\nredis:\n  url: redis://127.0.0.1:1\n",
            socket.display(),
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let (code, stderr) = redguard_exit(bin().args(["run", "--config", config.to_str().unwrap()]), dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot bind the admin listener"), "{stderr}");
    assert!(std::fs::symlink_metadata(&socket).is_err(), "no socket left");
}

#[test]
fn an_invalid_config_exits_78_from_every_command_and_a_usage_error_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "breaker:\n  failure_treshold: 3\n").unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        vec!["check-config", bad],
        vec!["run", "--config", bad],
        vec!["notify-test", "--config", bad],
    ] {
        let (code, stderr) = redguard_exit(bin().args(&args), dir.path());
        assert_eq!(code, Some(EXIT_CONFIG), "{args:?}: {stderr}");
        assert!(stderr.contains("failure_treshold"), "{args:?}: {stderr}");
    }
    let (code, _) = redguard_exit(bin().args(["run", "--no-such-flag"]), dir.path());
    assert_eq!(code, Some(2), "clap's usage error");
    let help = bin().arg("--help").output().unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("78 invalid configuration"),
        "documented in --help"
    );
}

/// Nothing is accepted in part: on every route that takes a body, a second JSON value or trailing bytes after
/// the first, a key given twice and a number out of its field's bounds are each a 400 naming the problem, and
/// none of those requests does anything.
#[test]
fn no_body_is_accepted_in_part() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "");
    assert_eq!(rg.cmd(r#"{"op":"set","key":"a","value":"1"}"#).status, 200);
    let refused = |path: &str, body: &str, want: &str| {
        let r = common::http(&rg.socket, "POST", path, body);
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "bad_request", "{path} {body}");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(want), "{path} {body}: {message:?} lacks {want:?}");
    };
    let one_value = "a body is exactly one JSON value";
    for (path, body) in [
        ("/v1/cmd", r#"{"op":"get","key":"a"}{"op":"del","keys":["a"]}"#),
        ("/v1/cmd", r#"{"op":"del","keys":["a"]} trailing"#),
        ("/v1/command", r#"{"args":["GET","a"]}{"args":["DEL","a"]}"#),
        (
            "/v1/pipeline",
            r#"{"commands":[{"op":"get","key":"a"}]}{"commands":[{"op":"del","keys":["a"]}]}"#,
        ),
        ("/v1/ratelimit", r#"{"key":"k","limit":1,"window_ms":1000}{"key":"k"}"#),
        ("/v1/breaker", r#"{"action":"reset"}{"action":"force_open"}"#),
        ("/v1/breaker", r#"{"action":"force_open"} x"#),
    ] {
        refused(path, body, one_value);
    }
    for (path, body, want) in [
        (
            "/v1/cmd",
            r#"{"op":"del","keys":["b"],"keys":["a"]}"#,
            "duplicate field `keys`",
        ),
        (
            "/v1/cmd",
            r#"{"op":"mset","pairs":{"a":"2","a":"3"}}"#,
            "duplicate key \"a\"",
        ),
        (
            "/v1/cmd",
            r#"{"op":"hset","key":"h","fields":{"f":"1","f":"2"}}"#,
            "duplicate key \"f\"",
        ),
        (
            "/v1/command",
            r#"{"args":["GET","a"],"args":["DEL","a"]}"#,
            "duplicate field `args`",
        ),
        (
            "/v1/pipeline",
            r#"{"commands":[{"op":"del","keys":["b"],"keys":["a"]}]}"#,
            "commands[0]",
        ),
        (
            "/v1/ratelimit",
            r#"{"key":"k","key":"j","limit":1,"window_ms":1000}"#,
            "duplicate field `key`",
        ),
        (
            "/v1/breaker",
            r#"{"action":"reset","action":"force_open"}"#,
            "duplicate field `action`",
        ),
        ("/v1/breaker", r#"["force_open"]"#, "expected a JSON object"),
        ("/v1/breaker", r#"{"action":1}"#, "field `action`"),
        (
            "/v1/ratelimit",
            r#"{"key":"k","limit":1.5,"window_ms":1000}"#,
            "field `limit` must be an integer in 1..=100000",
        ),
        (
            "/v1/ratelimit",
            r#"{"key":"k","limit":1,"window_ms":18446744073709551616}"#,
            "field `window_ms` must be an integer in 1..=86400000",
        ),
    ] {
        refused(path, body, want);
    }
    // A rate-limit key is bounded like any key: it is held in Redis, and in process while Redis is away.
    let long_key = serde_json::json!({"key": "k".repeat(1025), "limit": 1, "window_ms": 1000}).to_string();
    refused(
        "/v1/ratelimit",
        &long_key,
        "field `key` is 1025 bytes, over api.max_key_bytes (1024)",
    );
    // None of it happened: `a` is still 1, nothing else was written, the circuit is closed and not forced.
    assert_eq!(redis.cmd(&["GET", "a"]).as_deref(), Some("1"));
    assert_eq!(redis.cmd(&["DBSIZE"]).as_deref(), Some("1"));
    assert_eq!(rg.breaker()["forced"], serde_json::Value::Null);
}

/// Every numeric field refuses what Redis would refuse (or what would be rounded on the way) with a 400 that
/// names the field and its bounds, rather than a 422 from Redis or a serde message about "floating point";
/// the bounds themselves reach Redis and work. Infinite scores travel as the strings zrange answers with.
#[test]
fn numeric_fields_name_their_bounds_and_infinite_scores_round_trip() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "");
    let bad = |body: &str, want: &str| {
        let r = rg.cmd(body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(want), "{body}: {message:?} lacks {want:?}");
    };
    let ttl = "field `ttl_ms` must be an integer in 1..=1000000000000000000";
    bad(
        r#"{"op":"set","key":"k","value":"v","ttl_ms":9223372036854775808}"#,
        ttl,
    );
    bad(
        r#"{"op":"set","key":"k","value":"v","ttl_ms":18446744073709551616}"#,
        ttl,
    );
    bad(
        r#"{"op":"set","key":"k","value":"v","ttl_ms":9223372036854775807}"#,
        ttl,
    );
    bad(r#"{"op":"set","key":"k","value":"v","ttl_ms":0}"#, ttl);
    let seconds = "field `seconds` must be an integer in -1000000000000000..=1000000000000000";
    bad(r#"{"op":"expire","key":"k","seconds":9223372036854775807}"#, seconds);
    bad(
        r#"{"op":"incr","key":"n","by":9223372036854775808}"#,
        "field `by` must be an integer in",
    );
    bad(
        r#"{"op":"zrange","key":"z","start":0,"stop":1e30}"#,
        "field `stop` must be an integer in",
    );
    assert_eq!(redis.cmd(&["DBSIZE"]).as_deref(), Some("0"));

    // The bounds are accepted, by redguard and by Redis.
    let ok = |body: &str| {
        let r = rg.cmd(body);
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        r.json()["result"].clone()
    };
    ok(r#"{"op":"set","key":"k","value":"v","ttl_ms":1000000000000000000}"#);
    assert!(redis.cmd(&["PTTL", "k"]).unwrap().parse::<i64>().unwrap() > 999_999_000_000_000_000);
    assert_eq!(ok(r#"{"op":"expire","key":"k","seconds":1000000000000000}"#), true);
    ok(r#"{"op":"incr","key":"n","by":9223372036854775807}"#);

    assert_eq!(
        ok(r#"{"op":"zadd","key":"z","members":{"top":"inf","bottom":"-inf","mid":1}}"#),
        3
    );
    assert_eq!(ok(r#"{"op":"zadd","key":"z","members":[["+inf","top2"]]}"#), 1);
    assert_eq!(redis.cmd(&["ZSCORE", "z", "bottom"]).as_deref(), Some("-inf"));
    assert_eq!(ok(r#"{"op":"zscore","key":"z","member":"top"}"#), "inf");
    let range = ok(r#"{"op":"zrange","key":"z","start":0,"stop":-1,"withscores":true}"#);
    // What zrange answers can be sent back as it is.
    let back = serde_json::json!({"op": "zadd", "key": "z2", "members": range.as_array().unwrap().iter()
        .map(|e| serde_json::json!([e["score"], e["member"]])).collect::<Vec<_>>()});
    assert_eq!(ok(&back.to_string()), 4, "{back}");
    assert_eq!(
        ok(r#"{"op":"zrange","key":"z2","start":0,"stop":-1,"withscores":true}"#),
        range
    );
}
