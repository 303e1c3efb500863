//! The RESP socket with the real binary, a real redis-server and Redis's own tools (`redis-cli`,
//! `redis-benchmark`): the handshake clients send, pipelining as one round trip, MULTI/EXEC, the policy, an
//! outage (cached reads, refused writes, the same connection working again after), and malformed input.
//! Replies are read with `redis-protocol`'s decoder, which this project did not write.
//! Library clients (redis-py, ioredis) are in `tests/resp_clients.rs`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{calls, metric_value, wait_for, Redguard, RedisServer};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame as F;
use redis_protocol::resp3::decode::complete::decode as resp3_decode;
use redis_protocol::resp3::types::OwnedFrame as R3;

/// Short timings, so an outage and its recovery happen within a test.
/// The shared quick breaker, and a short read timeout for half-sent requests.
fn config() -> String {
    format!("{}api:\n  read_timeout: 1s\n", common::QUICK_BREAKER)
}

/// redguard with its RESP socket in its own temp dir.
struct Rig {
    rg: Redguard,
    redis: RedisServer,
    resp: PathBuf,
    _dir: tempfile::TempDir,
}

fn rig_with(yaml: &str) -> Rig {
    let redis = RedisServer::start();
    let (rg, resp, dir) = Redguard::start_with_resp(&redis.url(), yaml);
    Rig {
        rg,
        redis,
        resp,
        _dir: dir,
    }
}

fn rig() -> Rig {
    rig_with(&config())
}

/// A RESP connection that writes raw bytes and reads whole frames.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next reply frame (panics after 10 s without one).
    fn read(&mut self) -> F {
        loop {
            if let Some((frame, used)) = decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("a reply within 10 s");
            assert!(
                n > 0,
                "the connection closed; read so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, args: &[&str]) -> F {
        self.send(&command(args));
        self.read()
    }

    /// Whether the server closed the connection (a read returns 0) within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

fn bulk(s: &str) -> F {
    F::BulkString(s.as_bytes().to_vec())
}

fn simple(s: &str) -> F {
    F::SimpleString(s.as_bytes().to_vec())
}

/// Redis's confirmation of a (un)subscription: `[kind, channel, count]`.
fn confirmed(kind: &str, channel: &str, count: i64) -> F {
    F::Array(vec![bulk(kind), bulk(channel), F::Integer(count)])
}

fn error_text(f: &F) -> String {
    match f {
        F::Error(e) => e.to_string(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn the_handshake_clients_send_is_answered_by_redguard() {
    let rig = rig();
    let mut c = Conn::open(&rig.resp);
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    assert_eq!(c.call(&["AUTH", "any", "thing"]), simple("OK"));
    assert_eq!(c.call(&["CLIENT", "SETNAME", "worker-1"]), simple("OK"));
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), bulk("worker-1"));
    assert_eq!(c.call(&["CLIENT", "SETINFO", "LIB-NAME", "x"]), simple("OK"));
    assert!(matches!(c.call(&["CLIENT", "ID"]), F::Integer(id) if id > 0));
    assert_eq!(c.call(&["SELECT", "0"]), simple("OK"));
    assert!(error_text(&c.call(&["SELECT", "3"])).starts_with("ERR redguard serves database 0 only"));
    assert_eq!(c.call(&["ECHO", "hi"]), bulk("hi"));
    let F::BulkString(info) = c.call(&["INFO"]) else {
        panic!("INFO is a bulk string")
    };
    let info = String::from_utf8(info).unwrap();
    assert!(
        info.contains("redis_version:7.") && info.contains("loading:0"),
        "{info}"
    );
    assert!(matches!(c.call(&["COMMAND", "COUNT"]), F::Integer(n) if n > 200));
    // HELLO 3 switches the connection to RESP3: a map, then RESP3's null.
    c.send(&command(&["HELLO", "3", "SETNAME", "w2"]));
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = [0u8; 512];
    let n = c.stream.read(&mut raw).unwrap();
    let hello = String::from_utf8_lossy(&raw[..n]).into_owned();
    assert!(hello.starts_with("%7\r\n") && hello.contains(":3\r\n"), "{hello:?}");
    c.send(&command(&["GET", "never-set"]));
    let n = c.stream.read(&mut raw).unwrap();
    assert_eq!(&raw[..n], b"_\r\n");
    // None of it reached Redis but the GET.
    let processed = rig.redis.commands_processed();
    let mut c = Conn::open(&rig.resp);
    for _ in 0..5 {
        assert_eq!(c.call(&["PING"]), simple("PONG"));
    }
    assert_eq!(
        rig.redis.commands_processed(),
        processed + 1,
        "only the INFO that counts"
    );
}

#[test]
fn sixteen_pipelined_commands_get_sixteen_answers_in_order_in_one_round_trip() {
    let rig = rig();
    let mut c = Conn::open(&rig.resp);
    assert_eq!(c.call(&["SET", "warm", "up"]), simple("OK"));
    let before = calls(&rig.rg.metrics(), "success");
    let mut batch = Vec::new();
    for i in 0..8 {
        batch.extend(command(&["SET", &format!("k{i}"), &format!("v{i}")]));
        batch.extend(command(&["GET", &format!("k{i}")]));
    }
    c.send(&batch);
    for i in 0..8 {
        assert_eq!(c.read(), simple("OK"));
        assert_eq!(c.read(), bulk(&format!("v{i}")));
    }
    assert_eq!(
        calls(&rig.rg.metrics(), "success") - before,
        1.0,
        "16 commands, one call to Redis"
    );
}

#[test]
fn transactions_queue_per_connection_and_run_atomically_at_exec() {
    let rig = rig_with(&format!("{}  max_pipeline_commands: 3\n", config()));
    let mut c = Conn::open(&rig.resp);
    let mut other = Conn::open(&rig.resp);
    assert_eq!(c.call(&["MULTI"]), simple("OK"));
    assert_eq!(c.call(&["SET", "t", "1"]), simple("QUEUED"));
    assert_eq!(c.call(&["INCR", "t"]), simple("QUEUED"));
    // Another client is not pulled into the transaction, and nothing ran yet.
    assert_eq!(other.call(&["GET", "t"]), F::Null);
    assert_eq!(c.call(&["EXEC"]), F::Array(vec![simple("OK"), F::Integer(2)]));
    assert_eq!(other.call(&["GET", "t"]), bulk("2"));
    // A refused command discards the transaction, as Redis does with one it rejects while queueing.
    assert_eq!(c.call(&["MULTI"]), simple("OK"));
    assert!(error_text(&c.call(&["FLUSHALL"])).starts_with("NOPERM"));
    assert_eq!(c.call(&["SET", "t", "3"]), simple("QUEUED"));
    assert!(error_text(&c.call(&["EXEC"])).starts_with("EXECABORT"));
    assert_eq!(other.call(&["GET", "t"]), bulk("2"));
    // A transaction holds at most api.max_pipeline_commands commands (3 here): the fourth is refused, EXEC aborts.
    assert_eq!(c.call(&["MULTI"]), simple("OK"));
    for _ in 0..3 {
        assert_eq!(c.call(&["INCR", "t"]), simple("QUEUED"));
    }
    let full = error_text(&c.call(&["INCR", "t"]));
    assert!(
        full.contains("at most 3 commands (api.max_pipeline_commands)"),
        "{full}"
    );
    assert!(error_text(&c.call(&["EXEC"])).starts_with("EXECABORT"));
    assert_eq!(other.call(&["GET", "t"]), bulk("2"));
    assert_eq!(c.call(&["MULTI"]), simple("OK"));
    assert_eq!(c.call(&["DISCARD"]), simple("OK"));
    assert!(error_text(&c.call(&["EXEC"])).contains("EXEC without MULTI"));
    assert!(error_text(&c.call(&["WATCH", "t"])).contains("WATCH is not supported"));
}

#[test]
fn the_policy_judges_every_command_and_says_why() {
    let rig = rig();
    let mut c = Conn::open(&rig.resp);
    let flush = error_text(&c.call(&["FLUSHALL"]));
    assert!(
        flush.starts_with("NOPERM redguard: command FLUSHALL is denied by api.commands"),
        "{flush}"
    );
    let monitor = error_text(&c.call(&["MONITOR"]));
    assert!(
        monitor.starts_with("NOPERM") && monitor.contains("not offered on the RESP socket"),
        "{monitor}"
    );
    assert!(error_text(&c.call(&["CLIENT", "REPLY", "OFF"])).contains("would change the state"));
    // The connection is still usable, and a Redis error passes through unchanged.
    assert_eq!(c.call(&["SET", "s", "v"]), simple("OK"));
    assert!(error_text(&c.call(&["LPUSH", "s", "x"])).starts_with("WRONGTYPE Operation against a key"));
}

#[test]
fn an_outage_serves_cached_reads_refuses_writes_and_the_same_connection_recovers() {
    let mut rig = rig();
    let mut c = Conn::open(&rig.resp);
    assert_eq!(c.call(&["SET", "user:1", "ada"]), simple("OK"));
    assert_eq!(c.call(&["GET", "user:1"]), bulk("ada"), "fills the cache");
    assert_eq!(c.call(&["HSET", "h", "f", "1"]), F::Integer(1));
    assert_eq!(c.call(&["HGETALL", "h"]), F::Array(vec![bulk("f"), bulk("1")]));
    rig.redis.kill();
    // Until the circuit opens, a write fails with Redis's unavailability; then with the open circuit.
    let opened = wait_for("the circuit to open", Duration::from_secs(10), || {
        let e = error_text(&c.call(&["SET", "user:2", "bob"]));
        assert!(
            e.starts_with("UNAVAILABLE ") || e.starts_with("CIRCUITOPEN ") || e.starts_with("TIMEOUT "),
            "{e}"
        );
        e.starts_with("CIRCUITOPEN ").then_some(e)
    });
    assert!(opened.contains("retry after"), "{opened}");
    assert_eq!(rig.rg.breaker_state(), "open");
    // Reads the cache holds are answered from it; others get Redis's empty answers.
    assert_eq!(c.call(&["GET", "user:1"]), bulk("ada"));
    assert_eq!(c.call(&["HGETALL", "h"]), F::Array(vec![bulk("f"), bulk("1")]));
    assert_eq!(c.call(&["GET", "user:2"]), F::Null, "never written: not in the cache");
    assert_eq!(
        c.call(&["MGET", "user:1", "nope"]),
        F::Array(vec![bulk("ada"), F::Null])
    );
    // Pipelined, each command is answered as it would be alone.
    let mut batch = command(&["GET", "user:1"]);
    batch.extend(command(&["INCR", "n"]));
    c.send(&batch);
    assert_eq!(c.read(), bulk("ada"));
    assert!(error_text(&c.read()).starts_with("CIRCUITOPEN "));
    rig.redis.restart();
    wait_for("the circuit to close", Duration::from_secs(15), || {
        (rig.rg.breaker_state() == "closed").then_some(())
    });
    // The same connection, not a new one.
    assert_eq!(c.call(&["SET", "user:2", "bob"]), simple("OK"));
    assert_eq!(c.call(&["GET", "user:2"]), bulk("bob"));
}

#[test]
fn with_cached_reads_off_a_read_gets_the_error_too() {
    let yaml = format!("{}resp:\n  serve_cached_reads: false\n", config());
    let mut rig = rig_with(&yaml);
    let mut c = Conn::open(&rig.resp);
    assert_eq!(c.call(&["SET", "k", "v"]), simple("OK"));
    assert_eq!(c.call(&["GET", "k"]), bulk("v"));
    rig.redis.kill();
    let e = wait_for("the circuit to open", Duration::from_secs(10), || {
        let e = error_text(&c.call(&["GET", "k"]));
        e.starts_with("CIRCUITOPEN ").then_some(e)
    });
    assert!(e.contains("circuit open"), "{e}");
}

#[test]
fn malformed_input_is_answered_then_closed() {
    let rig = rig();
    for (input, expected) in [
        (b"*1\r\n$-5\r\n".as_slice(), "ERR Protocol error: invalid bulk length"),
        (
            b"*9223372036854775807\r\n",
            "ERR Protocol error: request exceeds api.max_body_bytes",
        ),
        (
            b"*1\r\n$9223372036854775807\r\n",
            "ERR Protocol error: bulk of 9223372036854775807 bytes exceeds",
        ),
        (b"*2\r\n*1\r\n", "ERR Protocol error: expected '$', got '*'"),
        (
            b"*1\r\n$1\r\nab\r\n",
            "ERR Protocol error: bulk string not terminated by CRLF",
        ),
    ] {
        let mut c = Conn::open(&rig.resp);
        c.send(input);
        let e = error_text(&c.read());
        assert!(e.starts_with(expected), "{input:?}: {e}");
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "{input:?}: closed after the error"
        );
    }
    // Arrays nested a million deep (4 MB, most of which is never read): refused at the second level.
    let mut c = Conn::open(&rig.resp);
    let _ = c.stream.write_all(&b"*1\r\n".repeat(1_000_000));
    let e = error_text(&c.read());
    assert!(e.starts_with("ERR Protocol error: expected '$', got '*'"), "{e}");
    // An inline line past 64 KiB without its end.
    let mut c = Conn::open(&rig.resp);
    c.send(&vec![b'a'; 70 * 1024]);
    assert_eq!(error_text(&c.read()), "ERR Protocol error: too big inline request");
    // A frame half sent, then silence: dropped after api.read_timeout (1 s), the slot given back.
    let half_sent_then_silent = |c: &mut Conn, half: &[u8]| {
        c.send(half);
        let started = Instant::now();
        let e = error_text(&c.read());
        assert!(e.contains("not completed within api.read_timeout"), "{e}");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "timed from the half frame"
        );
        assert!(c.closed_within(Duration::from_secs(5)));
    };
    half_sent_then_silent(&mut Conn::open(&rig.resp), b"*2\r\n$3\r\nGET\r\n$10\r\nabc");
    // The same while subscribed. Idle longer than the timeout first (the scenario, not a wait): idleness is
    // not closed, and the timeout runs from the half frame, not from the subscription.
    let mut sub = Conn::open(&rig.resp);
    assert_eq!(sub.call(&["SUBSCRIBE", "quiet"]), confirmed("subscribe", "quiet", 1));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sub.call(&["PING"]), F::Array(vec![bulk("pong"), bulk("")]));
    half_sent_then_silent(&mut sub, b"*2\r\n$11\r\nUNSUBSCRIBE\r\n$5\r\nqu");
    // The process is fine.
    assert_eq!(Conn::open(&rig.resp).call(&["PING"]), simple("PONG"));
}

#[test]
fn on_sigterm_idle_connections_close_and_one_mid_request_finishes_it() {
    // A read timeout no slow machine reaches between the halves of a request.
    let mut rig = rig_with(&format!("{}api:\n  read_timeout: 10s\n", common::QUICK_BREAKER));
    let mut idle = Conn::open(&rig.resp);
    assert_eq!(idle.call(&["PING"]), simple("PONG"));
    let mut busy = Conn::open(&rig.resp);
    // Accepted before shutdown: a connection still in the listen backlog when the listener closes is refused.
    assert_eq!(busy.call(&["PING"]), simple("PONG"));
    let mut listening = Conn::open(&rig.resp);
    assert_eq!(listening.call(&["SUBSCRIBE", "a"]), confirmed("subscribe", "a", 1));
    // A subscriber with half a PING read by redguard (the whole one before it has been answered).
    let mut asking = Conn::open(&rig.resp);
    assert_eq!(asking.call(&["SUBSCRIBE", "b"]), confirmed("subscribe", "b", 1));
    let ping = command(&["PING", "late"]);
    let cut = ping.len() - 4;
    asking.send(&[&command(&["PING", "early"])[..], &ping[..cut]].concat());
    assert_eq!(asking.read(), F::Array(vec![bulk("pong"), bulk("early")]));
    let (first, second) = (command(&["SET", "k1", "v1"]), command(&["SET", "k2", "v2"]));
    let (cut1, cut2) = (first.len() - 4, second.len() - 4);
    busy.send(&first[..cut1]);
    rig.rg.sigterm();
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "an idle connection is closed at once"
    );
    assert!(
        listening.closed_within(Duration::from_secs(5)),
        "so is a subscriber waiting for messages"
    );
    asking.send(&ping[cut..]);
    assert_eq!(asking.read(), F::Array(vec![bulk("pong"), bulk("late")]));
    assert!(asking.closed_within(Duration::from_secs(5)), "then closed");
    // The rest of the first request and half of a second: after its answer the connection is mid-request
    // again, with shutdown already under way, and still gets to finish.
    busy.send(&[&first[cut1..], &second[..cut2]].concat());
    assert_eq!(busy.read(), simple("OK"));
    busy.send(&second[cut2..]);
    assert_eq!(busy.read(), simple("OK"));
    assert!(busy.closed_within(Duration::from_secs(5)), "then closed");
    assert_eq!(rig.redis.must(&["GET", "k2"]), "v2");
    assert_eq!(rig.rg.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Runs a redis-cli command line against the RESP socket with `input` on stdin; its stdout.
fn redis_cli(socket: &Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new("redis-cli")
        .arg("-s")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed (scripts/install-test-deps.sh)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = common::wait_within(child, "redis-cli", common::TOOL_LIMIT);
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn redis_cli_runs_a_scripted_session_with_a_pipeline_and_a_transaction() {
    let rig = rig();
    let session = redis_cli(
        &rig.resp,
        &[],
        "SET greeting hello\nGET greeting\nMULTI\nINCR visits\nINCR visits\nEXEC\nHSET h a 1\nHGETALL h\n",
    );
    assert_eq!(session, "OK\nhello\nOK\nQUEUED\nQUEUED\n1\n2\n1\na\n1\n");
    // --pipe writes everything before reading and counts the replies and errors.
    let mut proto = String::new();
    for i in 0..100 {
        proto.push_str(&String::from_utf8(command(&["SET", &format!("p{i}"), "x"])).unwrap());
    }
    let piped = redis_cli(&rig.resp, &["--pipe"], &proto);
    assert!(piped.contains("errors: 0, replies: 100"), "{piped}");
    assert_eq!(rig.redis.must(&["GET", "p99"]), "x");
}

#[test]
fn redis_benchmark_pipelined_gets_no_errors() {
    // Zero errors is the claim: no command may time out on a loaded machine.
    let yaml = config().replace("command_timeout: 200ms", "command_timeout: 5s");
    assert!(yaml.contains("command_timeout: 5s"), "{yaml}");
    let rig = rig_with(&yaml);
    let out = common::output_within(
        Command::new("redis-benchmark").arg("-s").arg(&rig.resp).args([
            "-t",
            "set,get,lpush,incr,mset",
            "-n",
            "2000",
            "-c",
            "4",
            "-P",
            "16",
            "--csv",
        ]),
        "redis-benchmark",
        Duration::from_secs(120),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    // redis-benchmark reports an error reply as "Error from server: ...".
    assert!(
        !stderr.contains("rror") && !stdout.contains("rror"),
        "{stdout}\n{stderr}"
    );
    for test in ["SET", "GET", "LPUSH", "INCR", "MSET"] {
        assert!(
            stdout.contains(&format!("\"{test}")),
            "a result line for {test}: {stdout}"
        );
    }
    let metrics = rig.rg.metrics();
    assert_eq!(calls(&metrics, "failure"), 0.0);
    assert!(metric_value(&metrics, "redguard_calls_total{result=\"success\"}") > 0.0);
}

#[test]
fn a_peer_not_in_allowed_uids_is_refused_with_an_error_reply() {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let rig = rig_with(&format!("{}listen:\n  allowed_uids: [{}]\n", config(), uid + 1));
    // The refusal comes as soon as the peer connects, before it sends anything (writing could race the close).
    let mut c = Conn::open(&rig.resp);
    let e = error_text(&c.read());
    assert!(
        e.starts_with(&format!(
            "NOPERM redguard: peer uid {uid} is not in listen.allowed_uids"
        )),
        "{e}"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn the_api_metrics_say_which_listener_and_keep_names_outside_the_table_out() {
    let rig = rig();
    let connections = r#"redguard_api_connections{listener="resp"}"#;
    assert_eq!(
        metric_value(&rig.rg.metrics(), r#"redguard_api_max_connections{listener="resp"}"#),
        1024.0
    );
    // The rig's own wait for the socket has come and gone.
    wait_for("no RESP connection open", Duration::from_secs(5), || {
        (metric_value(&rig.rg.metrics(), connections) == 0.0).then_some(())
    });
    let mut c = Conn::open(&rig.resp);
    wait_for("one RESP connection open", Duration::from_secs(5), || {
        (metric_value(&rig.rg.metrics(), connections) == 1.0).then_some(())
    });
    assert_eq!(c.call(&["SET", "k", "v"]), simple("OK"));
    assert_eq!(c.call(&["GET", "k"]), bulk("v"));
    assert!(error_text(&c.call(&["NOSUCHCMD-x7", "k"])).starts_with("ERR unknown command"));
    assert!(error_text(&c.call(&["FLUSHALL"])).starts_with("NOPERM"));
    assert_eq!(c.call(&["PING"]), simple("PONG"));
    // A command redguard answers itself and refuses counts as an error reply too.
    assert!(error_text(&c.call(&["SELECT", "3"])).starts_with("ERR redguard serves database 0 only"));
    // Written at once, these go to Redis as one batch; each still counts under its own name.
    let batch = [
        command(&["SET", "k", "w"]),
        command(&["GET", "k"]),
        command(&["GET", "k"]),
    ]
    .concat();
    c.send(&batch);
    assert_eq!((c.read(), c.read(), c.read()), (simple("OK"), bulk("w"), bulk("w")));
    let m = rig.rg.metrics();
    for (series, want) in [
        (
            r#"redguard_api_requests_total{code="redis_error",listener="resp",op="select"}"#,
            1.0,
        ),
        (
            r#"redguard_api_requests_total{code="ok",listener="resp",op="get"}"#,
            3.0,
        ),
        (
            r#"redguard_api_requests_total{code="ok",listener="resp",op="set"}"#,
            2.0,
        ),
        (
            r#"redguard_api_requests_total{code="redis_error",listener="resp",op="other"}"#,
            1.0,
        ),
        (
            r#"redguard_api_requests_total{code="denied",listener="resp",op="flushall"}"#,
            1.0,
        ),
        (
            r#"redguard_api_requests_total{code="ok",listener="resp",op="ping"}"#,
            1.0,
        ),
        (
            r#"redguard_api_request_duration_seconds_count{listener="resp",op="get"}"#,
            3.0,
        ),
    ] {
        assert_eq!(metric_value(&m, series), want, "{series}");
    }
    assert!(
        !m.to_lowercase().contains("nosuchcmd"),
        "a client's command name became a label"
    );
}

#[test]
fn a_blocking_pop_waits_on_a_connection_of_its_own_and_stalls_no_one_else() {
    let yaml = format!("{}resp:\n  max_dedicated_connections: 1\n", config());
    let mut rig = rig_with(&yaml);
    let mut waiter = Conn::open(&rig.resp);
    let mut other = Conn::open(&rig.resp);
    // Nothing to pop: Redis's own timeout answers (nil), not redis.command_timeout (200 ms).
    let started = Instant::now();
    assert_eq!(waiter.call(&["BLPOP", "q", "1"]), F::Null);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    waiter.send(&command(&["BLPOP", "q", "10"]));
    // While it waits, other clients are served, and a second blocking command finds the one slot taken.
    wait_for("the pop to be waiting in Redis", Duration::from_secs(5), || {
        let clients = rig.redis.must(&["INFO", "clients"]);
        clients.contains("blocked_clients:1").then_some(())
    });
    assert_eq!(other.call(&["SET", "k", "v"]), simple("OK"));
    let busy = error_text(&other.call(&["BRPOP", "q2", "1"]));
    assert!(busy.contains("resp.max_dedicated_connections"), "{busy}");
    assert_eq!(other.call(&["RPUSH", "q", "job-1"]), F::Integer(1));
    assert_eq!(waiter.read(), F::Array(vec![bulk("q"), bulk("job-1")]));
    // The slot is free again; XREAD BLOCK goes the same way.
    assert!(matches!(other.call(&["XADD", "s", "*", "f", "v"]), F::BulkString(_)));
    let F::Array(streams) = other.call(&["XREAD", "COUNT", "1", "BLOCK", "100", "STREAMS", "s", "0"]) else {
        panic!("XREAD BLOCK answers an array")
    };
    assert_eq!(streams.len(), 1);
    // With Redis gone, connecting fails and counts against the breaker like any other call.
    rig.redis.kill();
    let e = wait_for("the circuit to open", Duration::from_secs(10), || {
        let e = error_text(&waiter.call(&["BLPOP", "q", "1"]));
        assert!(e.starts_with("UNAVAILABLE ") || e.starts_with("CIRCUITOPEN "), "{e}");
        e.starts_with("CIRCUITOPEN ").then_some(e)
    });
    assert!(e.contains("retry after"), "{e}");
}

#[test]
fn a_subscriber_gets_what_is_published_on_a_connection_of_its_own_then_returns_to_commands() {
    let mut rig = rig();
    let mut sub = Conn::open(&rig.resp);
    let mut publisher = Conn::open(&rig.resp);
    sub.send(&command(&["SUBSCRIBE", "news", "sport"]));
    assert_eq!(sub.read(), confirmed("subscribe", "news", 1));
    assert_eq!(sub.read(), confirmed("subscribe", "sport", 2));
    assert_eq!(sub.call(&["PSUBSCRIBE", "n*"]), confirmed("psubscribe", "n*", 3));
    // Two subscribers now: the channel's own and the pattern's, on one Redis pub/sub connection.
    assert_eq!(publisher.call(&["PUBLISH", "news", "hello"]), F::Integer(2));
    let mut got = vec![sub.read(), sub.read()];
    got.sort_by_key(|f| format!("{f:?}"));
    assert_eq!(
        got,
        [
            F::Array(vec![bulk("message"), bulk("news"), bulk("hello")]),
            F::Array(vec![bulk("pmessage"), bulk("n*"), bulk("news"), bulk("hello")]),
        ]
    );
    // Subscribed mode allows only what Redis allows there.
    assert_eq!(sub.call(&["PING"]), F::Array(vec![bulk("pong"), bulk("")]));
    assert!(error_text(&sub.call(&["GET", "k"])).starts_with("ERR Can't execute 'get'"));
    assert_eq!(sub.call(&["PUNSUBSCRIBE"]), confirmed("punsubscribe", "n*", 2));
    sub.send(&command(&["UNSUBSCRIBE"]));
    assert_eq!(sub.read(), confirmed("unsubscribe", "news", 1));
    assert_eq!(sub.read(), confirmed("unsubscribe", "sport", 0));
    // Back to ordinary commands, and the pub/sub connection is given back to Redis.
    assert_eq!(sub.call(&["SET", "k", "v"]), simple("OK"));
    wait_for("Redis to see no subscriber", Duration::from_secs(5), || {
        (publisher.call(&["PUBLISH", "news", "x"]) == F::Integer(0)).then_some(())
    });
    // In one write: in, out and back to commands; each answered without waiting for more from the client.
    sub.send(
        &[
            command(&["SUBSCRIBE", "x"]),
            command(&["PING", "p"]),
            command(&["UNSUBSCRIBE", "x"]),
            command(&["GET", "k"]),
        ]
        .concat(),
    );
    assert_eq!(sub.read(), confirmed("subscribe", "x", 1));
    assert_eq!(sub.read(), F::Array(vec![bulk("pong"), bulk("p")]));
    assert_eq!(sub.read(), confirmed("unsubscribe", "x", 0));
    assert_eq!(sub.read(), bulk("v"));
    // Redis going away closes a subscriber's connection, which is what a client library reconnects on.
    assert_eq!(sub.call(&["SUBSCRIBE", "news"]), confirmed("subscribe", "news", 1));
    rig.redis.kill();
    assert!(
        sub.closed_within(Duration::from_secs(10)),
        "the subscriber's connection closed with Redis's"
    );
}

/// The next RESP3 frame from `stream`, decoded by `redis-protocol` (`buf` holds what was read beyond it).
fn resp3_next<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> R3 {
    loop {
        if let Some((frame, used)) = resp3_decode(buf).unwrap() {
            buf.drain(..used);
            return frame;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("a reply within 10 s");
        assert!(n > 0, "closed; read so far: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `script` (in one write) after `HELLO 3` and returns the next `frames` RESP3 frames.
fn resp3_session<S: Read + Write>(mut stream: S, script: &[&[&str]], frames: usize) -> Vec<R3> {
    let mut buf = Vec::new();
    stream.write_all(&command(&["HELLO", "3"])).unwrap();
    assert!(
        matches!(resp3_next(&mut stream, &mut buf), R3::Map { .. }),
        "HELLO 3 answers a map"
    );
    stream
        .write_all(&script.iter().flat_map(|c| command(c)).collect::<Vec<u8>>())
        .unwrap();
    (0..frames).map(|_| resp3_next(&mut stream, &mut buf)).collect()
}

#[test]
fn in_resp3_a_subscriber_runs_any_command_as_redis_allows_it_there() {
    let rig = rig();
    rig.redis.must(&["SET", "k", "v"]);
    // One session, with what Redis 7 answers in RESP3 while subscribed: ordinary commands, a transaction, a
    // blocking command, another subscription. The same bytes go to Redis itself, whose answers are the oracle.
    let script: &[&[&str]] = &[
        &["SUBSCRIBE", "c1"],
        &["SET", "k", "v2"],
        &["GET", "k"],
        &["MULTI"],
        &["GET", "k"],
        &["INCR", "n"],
        &["EXEC"],
        &["BLPOP", "empty", "0.1"],
        &["PING"],
        &["SUBSCRIBE", "c2"],
        &["GET", "k"],
        &["UNSUBSCRIBE", "c1", "c2"],
        &["GET", "n"],
    ];
    let direct = std::net::TcpStream::connect(rig.redis.addr()).unwrap();
    direct.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let expected = resp3_session(direct, script, 14);
    rig.redis.must(&["SET", "k", "v"]);
    rig.redis.must(&["DEL", "n"]);
    let through = UnixStream::connect(&rig.resp).unwrap();
    through.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(resp3_session(through, script, 14), expected);
    assert_eq!(
        rig.redis.must(&["GET", "n"]),
        "1",
        "the transaction reached Redis once through redguard"
    );
    // Where redguard differs, and says so: a subscription (or a blocking command) cannot join a transaction.
    let through = UnixStream::connect(&rig.resp).unwrap();
    through.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let script: &[&[&str]] = &[
        &["SUBSCRIBE", "c1"],
        &["MULTI"],
        &["SUBSCRIBE", "c2"],
        &["BLPOP", "q", "1"],
        &["EXEC"],
    ];
    let got = resp3_session(through, script, 5);
    let error = |f: &R3| match f {
        R3::SimpleError { data, .. } => data.clone(),
        other => panic!("expected an error, got {other:?}"),
    };
    for (frame, command) in [(&got[2], "SUBSCRIBE"), (&got[3], "BLPOP")] {
        let e = error(frame);
        assert!(
            e.starts_with(&format!("NOPERM redguard: {command} cannot be part of a transaction")),
            "{e}"
        );
    }
    assert!(error(&got[4]).starts_with("EXECABORT"), "{got:?}");
    // Still subscribed, a message and a reply both arrive, the message as a push.
    let mut sub = UnixStream::connect(&rig.resp).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut publisher = Conn::open(&rig.resp);
    let subscribed = resp3_session(&mut sub, &[&["SUBSCRIBE", "c1"]], 1);
    assert!(matches!(subscribed[0], R3::Push { .. }), "{subscribed:?}");
    assert_eq!(publisher.call(&["PUBLISH", "c1", "hello"]), F::Integer(1));
    sub.write_all(&command(&["GET", "k"])).unwrap();
    let mut buf = Vec::new();
    let got = [resp3_next(&mut sub, &mut buf), resp3_next(&mut sub, &mut buf)];
    let blob = |s: &str| R3::BlobString {
        data: s.as_bytes().to_vec(),
        attributes: None,
    };
    let message = R3::Push {
        data: vec![blob("message"), blob("c1"), blob("hello")],
        attributes: None,
    };
    assert!(got.contains(&message), "{got:?}");
    assert!(got.contains(&blob("v2")), "{got:?}");
}

#[test]
fn shard_channels_channels_and_the_policy_share_one_subscriber_with_redis_s_counts() {
    let rig = rig_with(&format!(
        "{}api:\n  commands:\n    allow: [GET, SET, PUBLISH, SPUBLISH, SUBSCRIBE, SSUBSCRIBE]\n",
        common::QUICK_BREAKER
    ));
    let mut sub = Conn::open(&rig.resp);
    let mut publisher = Conn::open(&rig.resp);
    sub.send(&command(&["SSUBSCRIBE", "s1", "s2"]));
    assert_eq!(sub.read(), confirmed("ssubscribe", "s1", 1));
    assert_eq!(sub.read(), confirmed("ssubscribe", "s2", 2));
    // Channels are counted apart from shard channels, as Redis counts them.
    assert_eq!(sub.call(&["SUBSCRIBE", "news"]), confirmed("subscribe", "news", 1));
    // A subscription the policy denies is refused while subscribed too, and the client stays subscribed.
    let denied = error_text(&sub.call(&["PSUBSCRIBE", "n*"]));
    assert!(
        denied.starts_with("NOPERM redguard: command PSUBSCRIBE is denied"),
        "{denied}"
    );
    assert_eq!(rig.redis.must(&["PUBSUB", "NUMPAT"]).trim(), "0");
    assert_eq!(publisher.call(&["SPUBLISH", "s1", "hi"]), F::Integer(1));
    assert_eq!(sub.read(), F::Array(vec![bulk("smessage"), bulk("s1"), bulk("hi")]));
    assert_eq!(publisher.call(&["PUBLISH", "news", "x"]), F::Integer(1));
    assert_eq!(sub.read(), F::Array(vec![bulk("message"), bulk("news"), bulk("x")]));
    // In standalone mode all three kinds share one Redis connection.
    let clients = rig.redis.must(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert_eq!(clients.lines().count(), 1, "{clients}");
    sub.send(&command(&["SUNSUBSCRIBE"]));
    assert_eq!(sub.read(), confirmed("sunsubscribe", "s1", 1));
    assert_eq!(sub.read(), confirmed("sunsubscribe", "s2", 0));
    assert_eq!(publisher.call(&["SPUBLISH", "s1", "gone"]), F::Integer(0));
    // Left and joined again in one write: Redis's confirmation of the leaving, still queued when the joining is
    // done, must not be taken for Redis dropping the channel.
    let joined = confirmed("ssubscribe", "s2", 1);
    let left = confirmed("sunsubscribe", "s2", 0);
    assert_eq!(sub.call(&["SSUBSCRIBE", "s2"]), joined);
    sub.send(&[command(&["SUNSUBSCRIBE", "s2"]), command(&["SSUBSCRIBE", "s2"])].concat());
    assert_eq!(sub.read(), left);
    assert_eq!(sub.read(), joined);
    assert_eq!(publisher.call(&["SPUBLISH", "s2", "still"]), F::Integer(1));
    assert_eq!(sub.read(), F::Array(vec![bulk("smessage"), bulk("s2"), bulk("still")]));
    assert_eq!(sub.call(&["SUNSUBSCRIBE", "s2"]), left);
    // Still subscribed to a channel: ordinary commands wait until it is left.
    assert!(error_text(&sub.call(&["GET", "k"])).starts_with("ERR Can't execute 'get'"));
    assert_eq!(sub.call(&["UNSUBSCRIBE"]), confirmed("unsubscribe", "news", 0));
    assert_eq!(sub.call(&["SET", "k", "v"]), simple("OK"));
    wait_for(
        "Redis to close the subscriber's connection",
        Duration::from_secs(5),
        || {
            let clients = rig.redis.must(&["CLIENT", "LIST", "TYPE", "pubsub"]);
            clients.trim().is_empty().then_some(())
        },
    );
}

#[test]
fn a_subscription_to_a_hung_redis_times_out_instead_of_hanging_the_client() {
    let rig = rig();
    let mut sub = Conn::open(&rig.resp);
    assert_eq!(sub.call(&["SUBSCRIBE", "a"]), confirmed("subscribe", "a", 1));
    rig.redis.pause();
    let e = error_text(&sub.call(&["SUBSCRIBE", "b"]));
    rig.redis.resume();
    assert!(e.starts_with("TIMEOUT "), "{e}");
    assert!(
        sub.closed_within(Duration::from_secs(5)),
        "then closed, for the client to resubscribe"
    );
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_at_redis_s_own_pubsub_output_limit() {
    let rig = rig();
    // Redis itself would cut redguard off at the same limit; lifted, so only redguard's own bound is tested.
    rig.redis
        .must(&["CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"]);
    let mut sub = Conn::open(&rig.resp);
    assert_eq!(sub.call(&["SUBSCRIBE", "big"]), confirmed("subscribe", "big", 1));
    // 48 MiB published while the subscriber reads nothing: more than the 32 MiB redguard holds for it. Once
    // redguard has closed the subscriber, its Redis connection is gone too and publishing reaches no one.
    let payload = "x".repeat(512 * 1024);
    let mut publisher = Conn::open(&rig.resp);
    let receivers: Vec<F> = (0..96).map(|_| publisher.call(&["PUBLISH", "big", &payload])).collect();
    assert_eq!(receivers[0], F::Integer(1));
    // Redis counts a receiver when it queues the message, before redguard has read it: once redguard has read
    // past its limit and let the subscriber go, a publish reaches no one.
    wait_for("the subscriber to be let go", Duration::from_secs(20), || {
        (publisher.call(&["PUBLISH", "big", "x"]) == F::Integer(0)).then_some(())
    });
    assert!(
        sub.closed_within(Duration::from_secs(20)),
        "the subscriber's connection closed"
    );
    let received = sub.buf.len();
    assert!(
        received < 40 * 1024 * 1024,
        "closed before everything was delivered: {received} bytes"
    );
    // The rest of the socket is unharmed.
    assert_eq!(publisher.call(&["SET", "k", "v"]), simple("OK"));
}

#[test]
fn in_cluster_mode_the_socket_looks_like_one_redis_and_splits_what_redis_semantics_allow() {
    let cluster = common::topology::RedisCluster::start(3);
    let yaml = format!(
        "redis:\n  mode: cluster\n  nodes: [{}]\n  command_timeout: 500ms\n",
        cluster.seeds().join(", ")
    );
    let (rg, resp, _dir) = Redguard::start_with_resp(&cluster.seeds()[0], &yaml);
    let keys: Vec<String> = (0..6).map(|i| format!("user:{i}")).collect();
    let slots = cluster.key_slots(&keys);
    assert!(slots.windows(2).any(|w| w[0] != w[1]), "the keys span slots: {slots:?}");
    let mut c = Conn::open(&resp);
    for k in &keys {
        assert_eq!(c.call(&["SET", k, &format!("v-{k}")]), simple("OK"));
    }
    // MGET across slots: one answer, in the client's key order, with a missing key as nil.
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("nope");
    let mut want: Vec<F> = keys.iter().map(|k| bulk(&format!("v-{k}"))).collect();
    want.push(F::Null);
    assert_eq!(c.call(&mget), F::Array(want));
    // EXISTS and DEL across slots: the counts summed.
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    assert_eq!(c.call(&exists), F::Integer(6));
    assert_eq!(c.call(&["DEL", "user:0", "user:1", "user:2", "nope"]), F::Integer(3));
    assert_eq!(c.call(&exists), F::Integer(3));
    // What cannot be split gets Redis's own CROSSSLOT.
    let e = error_text(&c.call(&["SUNIONSTORE", "user:0", "user:4", "user:5"]));
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    // Pipelined commands for different shards each reach their own.
    let mut batch = Vec::new();
    for k in &keys[3..] {
        batch.extend(command(&["GET", k]));
    }
    c.send(&batch);
    for k in &keys[3..] {
        assert_eq!(c.read(), bulk(&format!("v-{k}")));
    }
    // A blocking pop waits on a connection of its own to the master of its key's slot: one key per shard, so
    // a pop sent to any other node would get MOVED instead of the element.
    let queues: Vec<String> = (0..30).map(|i| format!("queue:{i}")).collect();
    let owners = cluster.owners_of(&queues);
    let mut per_shard: Vec<&String> = Vec::new();
    for (q, owner) in queues.iter().zip(&owners) {
        if !per_shard
            .iter()
            .any(|p| owners[queues.iter().position(|x| x == *p).unwrap()] == *owner)
        {
            per_shard.push(q);
        }
    }
    assert_eq!(per_shard.len(), 3, "one queue on each of the 3 masters: {owners:?}");
    let mut waiter = Conn::open(&resp);
    for q in per_shard {
        waiter.send(&command(&["BLPOP", q, "10"]));
        assert_eq!(c.call(&["RPUSH", q, "job"]), F::Integer(1), "{q}");
        assert_eq!(waiter.read(), F::Array(vec![bulk(q), bulk("job")]), "{q}");
    }
    // A subscriber hears what is published through any node (Redis Cluster carries PUBLISH to every node).
    let mut sub = Conn::open(&resp);
    assert_eq!(sub.call(&["SUBSCRIBE", "news"]), confirmed("subscribe", "news", 1));
    assert!(matches!(c.call(&["PUBLISH", "news", "hello"]), F::Integer(_)));
    assert_eq!(sub.read(), F::Array(vec![bulk("message"), bulk("news"), bulk("hello")]));
    // A shard channel lives on the master of its slot: one channel per master, so a subscription sent to any
    // other node would get MOVED, and a SPUBLISH (routed to the owner) would reach no one.
    let channels: Vec<String> = (0..30).map(|i| format!("orders:{i}")).collect();
    let owners = cluster.owners_of(&channels);
    let per_master: Vec<&String> = (0..3)
        .map(|m| &channels[owners.iter().position(|o| *o == m).expect("a channel on every master")])
        .collect();
    let mut ssub = Conn::open(&resp);
    ssub.send(&command(&["SSUBSCRIBE", per_master[0], per_master[1], per_master[2]]));
    for (i, ch) in per_master.iter().enumerate() {
        assert_eq!(ssub.read(), confirmed("ssubscribe", ch, i as i64 + 1));
    }
    for ch in &per_master {
        assert_eq!(c.call(&["SPUBLISH", ch, "shipped"]), F::Integer(1), "{ch}");
        assert_eq!(ssub.read(), F::Array(vec![bulk("smessage"), bulk(ch), bulk("shipped")]));
    }
    // A shard channel's slot moved to another master: Redis drops the subscription, and the client is told
    // as Redis tells it, so that it can subscribe again (where the slot lives now).
    let moved = per_master[0];
    let slot = cluster.key_slots(std::slice::from_ref(moved))[0].to_string();
    let (from, to) = (0, 1);
    assert_eq!(
        cluster.nodes[from].must(&["CLUSTER", "COUNTKEYSINSLOT", &slot]).trim(),
        "0"
    );
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.must(&["CLUSTER", "MYID"])).collect();
    for n in [to, from, 2] {
        cluster.nodes[n].must(&["CLUSTER", "SETSLOT", &slot, "NODE", &ids[to]]);
    }
    assert_eq!(ssub.read(), confirmed("sunsubscribe", moved, 2));
    wait_for(
        "the subscription to be taken up again on the new owner",
        Duration::from_secs(10),
        || {
            let mut again = Conn::open(&resp);
            let reply = again.call(&["SSUBSCRIBE", moved]);
            (reply == confirmed("ssubscribe", moved, 1)).then_some(())
        },
    );
    ssub.send(&command(&["SUNSUBSCRIBE"]));
    for i in (0..2).rev() {
        assert!(matches!(ssub.read(), F::Array(a) if a[0] == bulk("sunsubscribe") && a[2] == F::Integer(i)));
    }
    assert_eq!(ssub.call(&["GET", "user:5"]), bulk("v-user:5"), "back to commands");
    drop(rg);
}

/// redis-cli reading commands from a pipe: one connection, one reply line per command.
struct Cli {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Cli {
    fn start(socket: &Path) -> Cli {
        let mut child = Command::new("redis-cli")
            .arg("-s")
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli is installed (scripts/install-test-deps.sh)");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        Cli { child, stdin, stdout }
    }

    fn ask(&mut self, line: &str) -> String {
        use std::io::BufRead;
        writeln!(self.stdin, "{line}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        // Without a terminal, redis-cli prints an error reply followed by an empty line.
        if ["CIRCUITOPEN", "UNAVAILABLE", "TIMEOUT", "ERR", "NOPERM"]
            .iter()
            .any(|e| answer.starts_with(e))
        {
            let mut blank = String::new();
            self.stdout.read_line(&mut blank).unwrap();
            assert_eq!(blank.trim(), "", "after {answer:?}");
        }
        answer.trim_end().to_owned()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_cli_and_redis_benchmark_live_through_an_outage() {
    let mut rig = rig();
    let mut cli = Cli::start(&rig.resp);
    assert_eq!(cli.ask("SET k v"), "OK");
    assert_eq!(cli.ask("GET k"), "v");
    // The key redis-benchmark reads (without -r it does not randomise), cached by a GET.
    assert_eq!(cli.ask("SET key:__rand_int__ 100-bytes"), "OK");
    assert_eq!(cli.ask("GET key:__rand_int__"), "100-bytes");
    let bench = Command::new("redis-benchmark")
        .arg("-s")
        .arg(&rig.resp)
        .args(["-t", "get", "-n", "100000", "-c", "2", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-benchmark is installed");
    // Redis dies while redis-benchmark runs: its GETs go on, answered from the cache, without an error.
    wait_for("redis-benchmark to be under way", Duration::from_secs(10), || {
        (metric_value(
            &rig.rg.metrics(),
            r#"redguard_api_requests_total{code="ok",listener="resp",op="get"}"#,
        ) > 1000.0)
            .then_some(())
    });
    rig.redis.kill();
    let out = common::wait_within(bench, "redis-benchmark", Duration::from_secs(120));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && !stdout.contains("rror") && !stderr.contains("rror"),
        "{stdout}\n{stderr}"
    );
    assert!(metric_value(&rig.rg.metrics(), r#"redguard_fallback_total{source="cache"}"#) > 0.0);
    // The same redis-cli connection: reads from the cache, writes refused with the circuit-open error.
    let refused = wait_for("the circuit to open", Duration::from_secs(10), || {
        let answer = cli.ask("SET k2 x");
        answer.starts_with("CIRCUITOPEN").then_some(answer)
    });
    assert!(refused.contains("retry after"), "{refused}");
    assert_eq!(cli.ask("GET k"), "v");
    rig.redis.restart();
    wait_for("the circuit to close", Duration::from_secs(15), || {
        (rig.rg.breaker_state() == "closed").then_some(())
    });
    assert_eq!(cli.ask("SET k2 x"), "OK");
    assert_eq!(cli.ask("GET k2"), "x");
}

#[test]
fn the_loopback_tcp_listener_speaks_the_same_protocol() {
    let redis = RedisServer::start();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let rg = Redguard::start_with_env(&redis.url(), &config(), &[("REDGUARD_LISTEN_RESP_TCP", addr.as_str())]);
    let stream = wait_for("the RESP TCP listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).ok()
    });
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = stream;
    stream.write_all(&command(&["SET", "t", "cp"])).unwrap();
    stream.write_all(&command(&["GET", "t"])).unwrap();
    let mut got = Vec::new();
    while got.len() < b"+OK\r\n$2\r\ncp\r\n".len() {
        let mut chunk = [0u8; 64];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {got:?}");
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got, b"+OK\r\n$2\r\ncp\r\n");
    drop(rg);
}
