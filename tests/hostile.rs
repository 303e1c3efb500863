//! Hostile and malformed input: every bad request gets its exact status and error code (hyper's own refusals
//! too), slow and idle clients cannot hold the socket hostage, a flood on the admin listener cannot starve the
//! socket, many large bodies at once stay within the body budget and their memory is given back, and the
//! socket's access controls hold. And a careless operator: a socket path that names a file, a link or a
//! directory never costs them that file, `check-config` refuses whatever `run` would refuse (connection limits
//! that do not fit the open-file limit too), a failed start leaves no socket behind, and an invalid config
//! exits 78.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{raw_request, rss_kib, wait_for, Redguard, RedisServer};

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
    let mut idle: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&rg.socket).unwrap()).collect();
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
    // One idle client leaves (the other two stay): the waiting one is served.
    drop(idle.remove(0));
    waiting.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle); // held until here: the other two slots stayed taken throughout
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
    // A refused peer does not keep its connection (and so a connection slot) open for more requests.
    let started = Instant::now();
    let kept_alive = raw_request(
        &other.socket,
        b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"op\":\"ping\"}",
    );
    assert_eq!(kept_alive.status, 403);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
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

/// Sends `request` and reads the answer. The server closes the connection with part of the request unread, so
/// the read may end in ECONNRESET after the answer, which counts nonetheless.
fn answer_despite_reset(socket: &Path, request: &[u8]) -> common::Response {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => panic!("no answer: {e}"),
        }
    }
    common::parse_response(&raw)
}

#[test]
fn hypers_own_refusals_carry_the_json_error_body() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), LIMITS);
    let malformed = raw_request(&rg.socket, b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n");
    assert_eq!(malformed.status, 400, "{malformed:?}");
    assert_eq!(malformed.json()["error"]["code"], "bad_request");
    let bad_header = raw_request(&rg.socket, b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n");
    assert_eq!(bad_header.status, 400, "{bad_header:?}");
    assert_eq!(bad_header.json()["error"]["code"], "bad_request");
    let huge_head = format!(
        "POST /v1/cmd HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let too_large = answer_despite_reset(&rg.socket, huge_head.as_bytes());
    assert_eq!(too_large.status, 431, "{too_large:?}");
    let json = too_large.json();
    assert_eq!(json["error"]["code"], "headers_too_large");
    assert!(
        json["error"]["message"].as_str().unwrap().contains("16384 bytes"),
        "{json}"
    );
    assert_eq!(too_large.header("content-type"), Some("application/json"));
    // The server serves on.
    assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
}

#[test]
fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let redis = RedisServer::start();
    // A long read timeout: waiting for the body instead of refusing at once would show as a timeout here.
    let rg = Redguard::start(&redis.url(), "api:\n  max_body_bytes: 4KiB\n  read_timeout: 60s\n");
    let started = Instant::now();
    let never_sent = raw_request(
        &rg.socket,
        b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n",
    );
    assert_eq!(never_sent.status, 413, "{never_sent:?}");
    assert_eq!(never_sent.json()["error"]["code"], "payload_too_large");
    // A client that asks first is told no, not `100 Continue`.
    let mut asking = UnixStream::connect(&rg.socket).unwrap();
    asking.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    asking
        .write_all(b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    asking
        .read_to_string(&mut answer)
        .expect("an answer, then the connection closes");
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Opens `n` connections at once, each declaring a 1 MiB body and sending all of it but 48,576 bytes; returns
/// them open. A connection whose body was refused is closed by the server, so its writes may fail.
fn large_bodies(socket: &Path, n: usize) -> Vec<UnixStream> {
    let writers: Vec<_> = (0..n)
        .map(|_| {
            let socket: PathBuf = socket.to_owned();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let head = b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n";
                let _ = s.write_all(head).and_then(|_| s.write_all(&vec![b' '; 1_000_000]));
                s
            })
        })
        .collect();
    writers.into_iter().map(|w| w.join().unwrap()).collect()
}

/// Splits connections into (refused with 503 `overloaded`, still being read). A refusal is written before the
/// server closes the connection, so once the writes ended it is already waiting in the client's buffer.
fn refused_and_open(conns: &[UnixStream]) -> (usize, usize) {
    let (mut refused, mut open) = (0, 0);
    for mut c in conns {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1024];
        match c.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => open += 1,
            Ok(n) if n > 0 => {
                let answer = String::from_utf8_lossy(&buf[..n]);
                assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
                assert!(answer.contains(r#""code":"overloaded""#), "{answer}");
                assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
                refused += 1;
            }
            other => panic!("a connection ended without an answer: {other:?}"),
        }
    }
    (refused, open)
}

const MIB: u64 = 1024; // in KiB, the unit of VmRSS

/// Waits until redguard's RSS is under `bound` KiB; returns it.
fn rss_falls_under(rg: &Redguard, bound: u64, what: &str) -> u64 {
    wait_for(
        &format!("RSS under {bound} KiB {what}"),
        Duration::from_secs(10),
        || Some(rss_kib(rg.pid())).filter(|&r| r < bound),
    )
}

#[test]
fn many_large_bodies_at_once_stay_within_the_body_budget() {
    const N: usize = 64;
    const BUDGET_MIB: u64 = 24;
    let redis = RedisServer::start();
    let rg = Redguard::start(
        &redis.url(),
        &format!("api:\n  max_inflight_body_bytes: {BUDGET_MIB}MiB\n  read_timeout: 60s\n"),
    );
    assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
    let idle = rss_kib(rg.pid());
    let conns = large_bodies(&rg.socket, N);
    let during = rss_kib(rg.pid());
    let (refused, open) = refused_and_open(&conns);
    // Each admitted body holds 1 MiB of the budget, less its uncounted first 8 KiB.
    let fits = (BUDGET_MIB * MIB * 1024 / (1_048_576 - 8192)) as usize;
    assert!(open <= fits, "{open} bodies admitted, the budget fits {fits}");
    assert!(refused >= N - fits, "only {refused} of {N} refused");
    // The admitted bodies, plus every connection's read buffer and debug-build slack.
    let bound = idle + (BUDGET_MIB + 12) * MIB;
    assert!(
        during < bound,
        "RSS {during} KiB with {open} bodies in flight, bound {bound} KiB (idle {idle} KiB)"
    );
    // Ordinary requests pass while large bodies hold the whole budget.
    assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
    drop(conns);
    let after = rss_falls_under(&rg, idle + 6 * MIB, "once the clients left");
    eprintln!("idle {idle} KiB, during {during} KiB ({open} in flight, {refused} refused), after {after} KiB");
}

#[test]
fn the_memory_of_large_bodies_is_given_back_after_each_burst() {
    const N: usize = 100;
    let redis = RedisServer::start();
    // A budget that admits every body: this test is about what happens to their memory afterwards.
    let rg = Redguard::start(
        &redis.url(),
        "api:\n  max_inflight_body_bytes: 128MiB\n  read_timeout: 60s\n",
    );
    assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
    let idle = rss_kib(rg.pid());
    // Several bursts: from the second on, glibc's dynamic mmap threshold used to serve the bodies from the heap,
    // which then kept them (about 100 MiB here).
    for round in 1..=3 {
        let conns = large_bodies(&rg.socket, N);
        let during = rss_kib(rg.pid());
        assert_eq!(refused_and_open(&conns), (0, N), "round {round}");
        assert!(
            during > idle + 64 * MIB,
            "round {round}: the bodies were read ({during} KiB)"
        );
        drop(conns);
        let after = rss_falls_under(&rg, idle + 8 * MIB, &format!("after round {round} (idle {idle} KiB)"));
        eprintln!("round {round}: idle {idle} KiB, during {during} KiB, after {after} KiB");
    }
}

#[test]
fn the_memory_of_many_connections_is_given_back_once_they_close() {
    const N: usize = 500;
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "api:\n  read_timeout: 60s\n");
    assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
    let idle = rss_kib(rg.pid());
    // Each sends most of a header block the read buffer (16 KiB) can hold, and waits.
    let mut head = b"POST /v1/cmd HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    head.resize(15_000, b'a');
    let conns: Vec<UnixStream> = (0..N)
        .map(|_| {
            let mut c = UnixStream::connect(&rg.socket).unwrap();
            c.write_all(&head).unwrap();
            c
        })
        .collect();
    let during = wait_for("the connections' buffers to be filled", Duration::from_secs(10), || {
        Some(rss_kib(rg.pid())).filter(|&r| r > idle + 10 * MIB)
    });
    drop(conns);
    let after = rss_falls_under(&rg, idle + 3 * MIB, "once the connections closed");
    eprintln!("idle {idle} KiB, {N} connections {during} KiB, after {after} KiB");
}

#[test]
fn a_flood_on_the_admin_listener_cannot_starve_the_socket() {
    let redis = RedisServer::start();
    // 4 + 4 + the reserve fit in 140 descriptors; 130 admin connections and the process's own would not. The
    // admin listener's backlog (128) holds the flood beyond its 4 connections.
    let rg = Redguard::start_with_nofile(
        &redis.url(),
        "api:\n  max_connections: 4\nadmin:\n  max_connections: 4\n  read_timeout: 300ms\n",
        140,
    );
    let flood: Vec<TcpStream> = (0..130)
        .map(|_| {
            let mut c = TcpStream::connect(rg.admin).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
            c
        })
        .collect();
    // The application is served meanwhile.
    for _ in 0..5 {
        assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200);
    }
    drop(flood);
    // A silent admin connection is closed after admin.read_timeout (once the flood has left the backlog).
    let closed_after = wait_for(
        "a silent admin connection to be closed",
        Duration::from_secs(15),
        || {
            let mut c = TcpStream::connect(rg.admin).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let started = Instant::now();
            matches!(c.read(&mut [0u8; 64]), Ok(0)).then(|| started.elapsed())
        },
    );
    assert!(closed_after < Duration::from_secs(3), "closed after {closed_after:?}");
    // The admin listener answers again.
    let live = common::try_http_tcp(rg.admin, "/livez").unwrap();
    assert_eq!(live.json()["status"], "ok");
    let log = rg.log();
    assert!(!log.contains("accept failed"), "{log}");
    let at_limit = log.matches("connection limit reached").count();
    assert!((1..=2).contains(&at_limit), "logged {at_limit} times:\n{log}");
}

#[test]
fn a_config_whose_connections_do_not_fit_the_descriptor_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("redguard.yaml");
    std::fs::write(&config, "admin:\n  max_connections: 64\n").unwrap();
    let socket = dir.path().join("rg.sock");
    let with_256_files = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redguard"));
        common::limit_open_files(&mut cmd, 256);
        cmd.args(args)
            .env("REDGUARD_LISTEN_SOCKET", &socket)
            .env("REDGUARD_ADMIN_LISTEN", format!("127.0.0.1:{}", common::free_port()))
            .env("REDGUARD_REDIS_URL", "redis://127.0.0.1:1");
        cmd
    };
    for args in [
        &["run", "--config", config.to_str().unwrap()][..],
        &["check-config", config.to_str().unwrap()][..],
    ] {
        let (code, stderr) = redguard_exit(&mut with_256_files(args), dir.path());
        assert_eq!(code, Some(EXIT_CONFIG), "{args:?}: {stderr}");
        assert!(
            stderr.contains("api.max_connections (1024) + admin.max_connections (64)"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("open-file limit (256"), "{args:?}: {stderr}");
        assert!(!socket.exists(), "no socket is left behind");
    }
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
