//! The faults a production Redis really has, injected between redguard and a real `redis-server` by a loopback
//! proxy (`tests/common/faults.rs`): replies slower than the command timeout and just under it, a black hole,
//! connection resets, replies cut in the middle, refused connections; and, on the server itself, a restart that
//! loses the data, a freeze, and the states in which Redis answers but cannot serve (READONLY, BUSY).
//!
//! Each scenario asserts the path the breaker took (its state, its counters and transitions in `/metrics`) and
//! every answer the application got: exactly what Redis holds, a fallback labelled as such, or a documented
//! error. Never another key's value, never a truncated one, never a wait past the command timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::faults::FaultProxy;
use common::{calls, free_port, transitions, wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

/// The command timeout in `CONFIG`.
const TIMEOUT: Duration = Duration::from_millis(150);
/// What a call may take beyond the command timeout on a loaded 2-core machine (as in tests/core.rs). A
/// correctness bound (a call without a timeout would hang for seconds), not a performance target.
const MARGIN: Duration = Duration::from_millis(250);
/// An open circuit answers without touching Redis; this is generous for that.
const FAST: Duration = Duration::from_millis(100);

/// Short timings so that outages and recoveries happen within a test; the cap on the open period keeps a run
/// of failed probes from pushing recovery past the tests' deadlines.
const CONFIG: &str = "\
redis:
  command_timeout: 150ms
breaker:
  failure_threshold: 3
  recovery_timeout: 500ms
  recovery_jitter: 0
  recovery_timeout_max: 2s
";

/// Long enough for every recovery path here (a failed probe or two, then a good one), with room for a slow CI.
const RECOVERY: Duration = Duration::from_secs(15);

/// redguard talking to Redis through the fault proxy. Dropped in this order: redguard, proxy, Redis.
struct Rig {
    rg: Redguard,
    proxy: FaultProxy,
    redis: RedisServer,
}

fn rig() -> Rig {
    rig_with(CONFIG)
}

fn rig_with(config: &str) -> Rig {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let rg = Redguard::start(&proxy.url(), config);
    Rig { rg, proxy, redis }
}

/// One call, as the application saw it.
#[derive(Debug)]
struct Call {
    status: u16,
    body: Value,
    elapsed: Duration,
}

impl Call {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    fn source(&self) -> Option<&str> {
        self.body["source"].as_str()
    }
}

fn call(rg: &Redguard, body: Value) -> Call {
    let started = Instant::now();
    let r = rg.cmd(&body.to_string());
    Call {
        status: r.status,
        body: r.json(),
        elapsed: started.elapsed(),
    }
}

/// A call that must be answered by Redis itself.
fn from_redis(rg: &Redguard, body: Value) -> Value {
    let c = call(rg, body.clone());
    assert_eq!(
        (c.status, c.source()),
        (200, Some("redis")),
        "{body} -> {} {}",
        c.status,
        c.body
    );
    c.body["result"].clone()
}

fn get(key: &str) -> Value {
    json!({"op": "get", "key": key})
}

fn set(key: &str, value: &str) -> Value {
    json!({"op": "set", "key": key, "value": value})
}

fn wait_closed(rg: &Redguard, why: &str) {
    wait_for(why, RECOVERY, || (rg.breaker_state() == "closed").then_some(()));
}

#[test]
fn replies_slower_than_the_command_timeout_trip_the_breaker_through_timeouts() {
    let rig = rig();
    let rg = &rig.rg;
    from_redis(rg, set("user:1", "ada"));
    assert_eq!(from_redis(rg, get("user:1")), "ada");

    rig.proxy.latency(Duration::from_millis(400));
    let write = call(rg, set("user:2", "bob"));
    let hit = call(rg, get("user:1"));
    let miss = call(rg, json!({"op": "get", "key": "nobody", "default": "guest"}));
    let state = rg.breaker();

    assert_eq!((write.status, write.code()), (504, Some("timeout")), "{}", write.body);
    assert_eq!(
        (&write.body["cached"], &write.body["degraded"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(hit.body, json!({"result": "ada", "source": "cache", "degraded": true}));
    assert_eq!(
        miss.body,
        json!({"result": "guest", "source": "default", "degraded": true})
    );
    for c in [&write, &hit, &miss] {
        // Each call waited for the timeout (a timeout, not some other error), and not longer.
        assert!(
            c.elapsed >= TIMEOUT - Duration::from_millis(10) && c.elapsed < TIMEOUT + MARGIN,
            "{c:?}"
        );
    }
    assert_eq!(
        (state["state"].as_str(), state["failure_count"].as_u64()),
        (Some("open"), Some(3))
    );
    let m = rg.metrics();
    assert_eq!(calls(&m, "failure"), 3.0);
    assert_eq!(transitions(&m, "closed", "open"), 1.0);
    assert!(
        rg.log().contains("timed out"),
        "the log names the last error:\n{}",
        rg.log()
    );

    // Open: refused at once, Redis is not waited for.
    let refused = call(rg, set("user:3", "cy"));
    assert_eq!((refused.status, refused.code()), (503, Some("circuit_open")));
    assert!(refused.elapsed < FAST, "{refused:?}");

    rig.proxy.pass();
    wait_closed(rg, "a probe to close the breaker once replies are fast again");
    let m = rg.metrics();
    assert_eq!(transitions(&m, "half_open", "closed"), 1.0);
    // A timeout says "unknown", not "not written": the proxy delays replies, not requests, so the SET was applied.
    assert_eq!(from_redis(rg, get("user:2")), "bob");
    // A refused write never left redguard.
    assert_eq!(from_redis(rg, get("user:3")), Value::Null);
    assert!(rig.proxy.stats().delayed_chunks >= 1, "{}", rig.proxy.stats());
}

/// Here the command timeout is 500 ms and replies come 20 to 120 ms late: far enough apart that a loaded
/// machine cannot push a reply past the timeout, which would make this test say nothing.
#[test]
fn replies_slower_than_usual_but_within_the_timeout_are_never_failures() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let rg = Redguard::start(&proxy.url(), &CONFIG.replace("150ms", "500ms"));
    proxy.jitter(Duration::from_millis(20), Duration::from_millis(120));
    let mut slowest = Duration::ZERO;
    for i in 0..15 {
        let (key, value) = (format!("slow:{i}"), format!("value-{i}"));
        let started = Instant::now();
        assert_eq!(from_redis(&rg, set(&key, &value)), true);
        assert_eq!(from_redis(&rg, get(&key)), value.as_str());
        slowest = slowest.max(started.elapsed() / 2);
    }
    let m = rg.metrics();
    assert_eq!(rg.breaker()["state"], "closed");
    assert_eq!(rg.breaker()["failure_count"], 0);
    assert_eq!(calls(&m, "failure"), 0.0);
    assert_eq!(calls(&m, "success"), 30.0);
    assert_eq!(transitions(&m, "closed", "open"), 0.0);
    let stats = proxy.stats();
    assert!(stats.delayed_chunks >= 30, "every reply was delayed: {stats}");
    assert!(slowest >= Duration::from_millis(20), "{slowest:?}");
}

#[test]
fn a_black_hole_never_holds_a_call_longer_than_the_command_timeout() {
    let rig = rig();
    let rg = &rig.rg;
    from_redis(rg, set("k", "v"));
    from_redis(rg, get("k"));
    rig.proxy.black_hole();

    let mut slowest = Duration::ZERO;
    let mut timeouts = 0;
    for i in 0..30 {
        let c = match i % 4 {
            0 => call(rg, get("k")),
            1 => call(rg, get("absent")),
            2 => call(rg, set(&format!("w{i}"), "x")),
            _ => call(rg, json!({"op": "incr", "key": "n"})),
        };
        slowest = slowest.max(c.elapsed);
        let allowed = match (c.status, c.source(), c.code()) {
            (200, Some("cache"), _) => c.body["result"] == "v",
            (200, Some("default"), _) => c.body["result"].is_null(),
            (503, _, Some("circuit_open")) => true,
            (504, _, Some("timeout")) => {
                timeouts += 1;
                true
            }
            _ => false,
        };
        assert!(allowed, "call {i}: {} {}", c.status, c.body);
    }
    assert!(
        slowest < TIMEOUT + MARGIN,
        "slowest of 30 calls into a black hole took {slowest:?}"
    );
    assert!(
        timeouts >= 1,
        "the writes before the breaker opened waited out the timeout"
    );
    assert_ne!(rg.breaker_state(), "closed");
    let m = rg.metrics();
    assert!(transitions(&m, "closed", "open") >= 1.0);
    assert_eq!(calls(&m, "success"), 2.0, "nothing came back out of the black hole");
    assert!(rig.proxy.stats().black_holed >= 1, "{}", rig.proxy.stats());
}

/// A black hole strands the connection it swallowed: TCP says nothing until its retransmission timeout, many
/// minutes later (think of a Redis host that vanished without a reset, or a stale NAT entry). When the network
/// heals, only a new connection works, so redguard must give up a connection that let a command time out
/// rather than send every probe down it again.
#[test]
fn after_a_black_hole_redguard_reconnects_instead_of_waiting_on_the_dead_connection() {
    let rig = rig();
    let rg = &rig.rg;
    from_redis(rg, set("k", "v"));
    from_redis(rg, get("k"));
    rig.proxy.black_hole();
    for _ in 0..3 {
        assert_eq!(call(rg, get("k")).source(), Some("cache"));
    }
    assert_eq!(rg.breaker_state(), "open");

    rig.proxy.pass();
    wait_closed(rg, "the breaker to close over a fresh connection");
    assert_eq!(from_redis(rg, get("k")), "v");
    // The stranded connections were closed by redguard, not leaked.
    wait_for("one connection left", RECOVERY, || {
        (rig.proxy.open_connections() == 1).then_some(())
    });
}

/// `KEYS` known keys, each with a long value of its own, so that another key's value or a truncated one is
/// recognisable at a glance.
const KEYS: usize = 12;

/// How long the workload runs under a fault.
const FIRE: Duration = Duration::from_secs(3);

fn value_of(key: usize) -> String {
    let fill = char::from(b'a' + key as u8).to_string().repeat(3000 + 37 * key);
    format!("<{key:02}:{fill}:{key:02}>")
}

/// What the application saw while faults were injected.
#[derive(Debug, Default)]
struct Tally {
    from_redis: u32,
    from_cache: u32,
    defaults: u32,
    errors: u32,
    wrong: Vec<String>,
}

/// For `FIRE`, four threads read, rewrite (with the same value) and increment through redguard while `inject`
/// runs every `every`, and each answer is checked: a read is exactly the key's value from Redis or from the
/// cache, or a labelled default; a write is acknowledged or one of the documented errors; a counter only moves
/// up, and never past the increments sent. A reply matched to the wrong request would show up as another key's
/// value, or as a 422 ("unexpected reply").
fn under_fire(rig: &Rig, every: Duration, inject: impl Fn(&FaultProxy)) -> Tally {
    let rg = &rig.rg;
    for key in 0..KEYS {
        from_redis(rg, set(&format!("fire:{key}"), &value_of(key)));
        assert_eq!(from_redis(rg, get(&format!("fire:{key}"))), value_of(key).as_str());
    }
    let tally = Mutex::new(Tally::default());
    thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let tally = &tally;
                s.spawn(move || {
                    let mut last_count = 0;
                    let mut increments = 0;
                    let until = Instant::now() + FIRE;
                    let mut i = 0;
                    while Instant::now() < until {
                        i += 1;
                        let key = (t * 5 + i) % KEYS;
                        let name = format!("fire:{key}");
                        let (what, c) = match i % 5 {
                            3 => ("set", call(rg, set(&name, &value_of(key)))),
                            4 => {
                                increments += 1;
                                ("incr", call(rg, json!({"op": "incr", "key": format!("count:{t}")})))
                            }
                            _ => ("get", call(rg, get(&name))),
                        };
                        let mut tally = tally.lock().unwrap();
                        let right = match (what, c.status, c.source(), c.code()) {
                            ("get", 200, Some("redis"), _) => {
                                tally.from_redis += 1;
                                c.body["result"] == value_of(key).as_str()
                            }
                            ("get", 200, Some("cache"), _) => {
                                tally.from_cache += 1;
                                c.body["result"] == value_of(key).as_str() && c.body["degraded"] == true
                            }
                            ("get", 200, Some("default"), _) => {
                                tally.defaults += 1;
                                c.body["result"].is_null() && c.body["degraded"] == true
                            }
                            ("set", 200, Some("redis"), _) => {
                                tally.from_redis += 1;
                                c.body["result"] == true
                            }
                            ("incr", 200, Some("redis"), _) => {
                                tally.from_redis += 1;
                                // Increments whose outcome was unknown may have counted too, but never more
                                // than were sent, and never backwards.
                                let n = c.body["result"].as_i64().unwrap_or(-1);
                                let ok = n > last_count && n <= increments;
                                last_count = n;
                                ok
                            }
                            ("set" | "incr", 503, _, Some("circuit_open" | "redis_unavailable"))
                            | ("set" | "incr", 504, _, Some("timeout")) => {
                                tally.errors += 1;
                                c.body["cached"] == (what == "set")
                            }
                            _ => false,
                        };
                        if !right {
                            tally.wrong.push(format!("{what} {name}: {} {}", c.status, c.body));
                        }
                    }
                })
            })
            .collect();
        // The faults, paced: this is the workload, not a wait for a condition.
        while !workers.iter().all(|w| w.is_finished()) {
            thread::sleep(every);
            inject(&rig.proxy);
        }
    });
    rig.proxy.pass();
    tally.into_inner().unwrap()
}

/// After the faults: the breaker closes by itself, and Redis and redguard agree on every key.
fn heals_with_every_value_intact(rig: &Rig) {
    wait_closed(&rig.rg, "the breaker to close once the faults stop");
    for key in 0..KEYS {
        assert_eq!(from_redis(&rig.rg, get(&format!("fire:{key}"))), value_of(key).as_str());
    }
}

#[test]
fn connection_resets_never_produce_a_wrong_value() {
    let rig = rig();
    let tally = under_fire(&rig, Duration::from_millis(100), |proxy| {
        proxy.reset_all();
    });
    let stats = rig.proxy.stats();
    eprintln!("resets: {tally:?}; {stats}");
    assert!(
        tally.wrong.is_empty(),
        "wrong answers under resets:\n{}",
        tally.wrong.join("\n")
    );
    assert!(stats.resets >= 3, "{stats}");
    assert!(tally.from_redis > 0, "{tally:?}");
    let m = rig.rg.metrics();
    assert!(calls(&m, "failure") >= 1.0, "the resets reached calls in flight");
    heals_with_every_value_intact(&rig);
}

#[test]
fn replies_cut_mid_way_never_produce_a_wrong_value() {
    let rig = rig();
    let tally = under_fire(&rig, Duration::from_millis(100), |proxy| {
        proxy.cut_next_replies(1);
    });
    let stats = rig.proxy.stats();
    eprintln!("cut replies: {tally:?}; {stats}");
    assert!(
        tally.wrong.is_empty(),
        "wrong answers under cut replies:\n{}",
        tally.wrong.join("\n")
    );
    assert!(stats.cut_replies >= 3, "{stats}");
    assert!(tally.from_redis > 0, "{tally:?}");
    let m = rig.rg.metrics();
    assert!(calls(&m, "failure") >= 1.0, "a cut reply is a failed call");
    heals_with_every_value_intact(&rig);
}

#[test]
fn refused_connections_fail_fast_and_heal() {
    // A refused connect is retried once by redis-rs after 50 to 100 ms: 150 ms is too close to that on a loaded
    // machine for "refused" not to turn into "timed out" now and then.
    let rig = rig_with(&CONFIG.replace("150ms", "500ms"));
    let rg = &rig.rg;
    from_redis(rg, set("k", "v"));
    from_redis(rg, get("k"));
    rig.proxy.refuse();
    rig.proxy.reset_all();

    let answers: Vec<Call> = (0..3).map(|i| call(rg, set(&format!("w{i}"), "x"))).collect();
    for c in &answers {
        assert_eq!((c.status, c.code()), (503, Some("redis_unavailable")), "{c:?}");
        assert_eq!(c.body["cached"], true);
        assert!(
            c.elapsed < Duration::from_millis(500),
            "sooner than the command timeout: {c:?}"
        );
    }
    assert_eq!(rg.breaker_state(), "open");
    assert_eq!(
        call(rg, get("k")).body,
        json!({"result": "v", "source": "cache", "degraded": true})
    );
    assert!(rig.proxy.stats().refused >= 1, "{}", rig.proxy.stats());

    rig.proxy.pass();
    wait_closed(rg, "the breaker to close once connections are accepted again");
    assert_eq!(from_redis(rg, get("k")), "v");
    assert_eq!(
        from_redis(rg, get("w0")),
        Value::Null,
        "a refused connection carried nothing"
    );
}

#[test]
fn a_redis_restarted_empty_is_read_as_empty_once_the_breaker_closes() {
    let mut rig = rig();
    let rg = &rig.rg;
    for (k, v) in [("user:1", "ada"), ("user:2", "bob"), ("user:3", "cy")] {
        from_redis(rg, set(k, v));
    }
    from_redis(rg, json!({"op": "hset", "key": "prefs", "fields": {"theme": "dark"}}));
    from_redis(rg, json!({"op": "hgetall", "key": "prefs"}));

    rig.redis.kill();
    for k in ["user:1", "user:2", "user:3"] {
        assert_eq!(call(rg, get(k)).source(), Some("cache"));
    }
    assert_eq!(rg.breaker_state(), "open");
    let refused = call(rg, set("user:4", "dan"));
    assert_eq!(
        (refused.status, refused.code(), &refused.body["cached"]),
        (503, Some("circuit_open"), &json!(true))
    );
    assert_eq!(call(rg, get("user:4")).body["source"], "cache");
    let before = rg.metrics();

    rig.redis.restart();
    // No application call: redguard's own probe closes the breaker.
    wait_closed(rg, "the recovery probe to close the breaker");
    let after = rg.metrics();
    assert_eq!(transitions(&after, "half_open", "closed"), 1.0);
    assert!(transitions(&after, "open", "half_open") >= 1.0);
    assert_eq!(
        calls(&after, "success") - calls(&before, "success"),
        1.0,
        "one successful call: the probe"
    );

    // Redis lost everything: every answer now says so, and none comes from the cache dressed as Redis's.
    for k in ["user:1", "user:2", "user:3", "user:4"] {
        assert_eq!(call(rg, get(k)).body, json!({"result": null, "source": "redis"}), "{k}");
    }
    assert_eq!(
        call(rg, json!({"op": "hgetall", "key": "prefs"})).body,
        json!({"result": {}, "source": "redis"})
    );
    // What Redis said ("nothing") replaced what the cache held: the next outage has nothing stale to serve.
    rig.redis.kill();
    assert_eq!(
        call(rg, get("user:1")).body,
        json!({"result": null, "source": "default", "degraded": true})
    );
}

/// A write that times out is not a failed write: redguard cannot know whether Redis applied it. Against a
/// frozen Redis the command waits in its socket buffer; it lands if Redis thaws, and vanishes if Redis is
/// killed frozen. The application is told "timeout" in both cases, and redguard reads back whatever Redis
/// really holds afterwards. (SIGSTOP alone, and kill + restart alone, are in tests/core.rs.)
#[test]
fn a_timed_out_write_lands_if_a_frozen_redis_thaws_and_vanishes_if_it_is_killed_frozen() {
    let mut redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    from_redis(&rg, set("a", "old"));
    from_redis(&rg, set("b", "old"));

    redis.pause();
    let write = call(&rg, set("a", "new"));
    assert_eq!((write.status, write.code()), (504, Some("timeout")), "{}", write.body);
    assert_eq!(
        call(&rg, get("a")).body,
        json!({"result": "new", "source": "cache", "degraded": true}),
        "this pod's own timed-out write, labelled as cache"
    );
    call(&rg, get("b"));
    assert_eq!(rg.breaker_state(), "open");
    redis.resume();
    wait_closed(&rg, "the breaker to close after the thaw");
    assert_eq!(from_redis(&rg, get("a")), "new", "the timed-out write landed");

    redis.pause();
    let write = call(&rg, set("b", "new"));
    assert_eq!((write.status, write.code()), (504, Some("timeout")), "{}", write.body);
    call(&rg, get("b"));
    call(&rg, get("b"));
    assert_eq!(rg.breaker_state(), "open");
    redis.restart();
    wait_closed(&rg, "the breaker to close after the restart");
    assert_eq!(
        from_redis(&rg, get("b")),
        Value::Null,
        "the timed-out write died with Redis"
    );
    assert_eq!(from_redis(&rg, get("a")), Value::Null);
    let m = rg.metrics();
    assert_eq!(transitions(&m, "closed", "open"), 2.0);
    assert_eq!(transitions(&m, "half_open", "closed"), 2.0);
}

/// A replica (after a failover, or a misconfigured URL) answers reads and refuses writes with READONLY: that is
/// Redis unable to serve, not a bad command, so it counts against the breaker and is never a 422.
#[test]
fn a_read_only_replica_is_a_failure_not_an_application_error() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    from_redis(&rg, set("k", "v"));
    // A master that does not exist: the server stays a replica that cannot sync, serving its stale data.
    redis
        .cmd(&["REPLICAOF", "127.0.0.1", &free_port().to_string()])
        .unwrap();
    for i in 0..3 {
        let c = call(&rg, set(&format!("w{i}"), "x"));
        assert_eq!((c.status, c.code()), (503, Some("redis_unavailable")), "{c:?}");
        let message = c.body["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains("read only replica"), "{}", c.body);
    }
    assert_eq!(rg.breaker_state(), "open");
    assert_eq!(calls(&rg.metrics(), "app_error"), 0.0);

    redis.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    wait_closed(&rg, "the breaker to close once the server is a master again");
    assert_eq!(from_redis(&rg, set("w0", "y")), true);
}

/// A script that runs too long makes Redis answer everyone else with BUSY until it ends or is killed.
#[test]
fn a_redis_busy_in_a_script_is_a_failure_and_the_breaker_recovers_after_script_kill() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    from_redis(&rg, set("k", "v"));
    from_redis(&rg, get("k"));
    redis.cmd(&["CONFIG", "SET", "busy-reply-threshold", "20"]).unwrap();
    let mut script = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "EVAL", "while true do end", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the script to make Redis busy", RECOVERY, || {
        redis.cmd(&["PING"]).filter(|r| r.starts_with("BUSY"))
    });

    let answers: Vec<Call> = (0..3).map(|_| call(&rg, get("k"))).collect();
    for c in &answers {
        assert_eq!(c.body, json!({"result": "v", "source": "cache", "degraded": true}));
        assert!(c.elapsed < TIMEOUT + MARGIN, "{c:?}");
    }
    assert_eq!(rg.breaker_state(), "open");
    assert!(rg.log().contains("BUSY"), "{}", rg.log());

    redis.cmd(&["SCRIPT", "KILL"]).unwrap();
    let _ = script.kill();
    let _ = script.wait();
    wait_closed(&rg, "the breaker to close once the script is killed");
    assert_eq!(from_redis(&rg, get("k")), "v");
}

/// Redis closes connections too: its idle `timeout`, `CLIENT KILL`, a load balancer's idle timer. redis-rs only
/// notices when it next sends a command, so without care that call fails although Redis is healthy, and when
/// the call is the breaker's half-open probe, the circuit stays open for another, longer period. A read is
/// safe to send again: it is retried once on a fresh connection, within the command timeout. A write is not
/// (it may have been applied), so it fails as before and says so.
#[test]
fn a_connection_closed_by_redis_while_idle_costs_no_read() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), CONFIG);
    from_redis(&rg, set("k", "v"));
    for round in 0..3 {
        // Every client but the redis-cli asking: redguard's connection.
        assert_eq!(redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).as_deref(), Some("1"));
        assert_eq!(
            call(&rg, get("k")).body,
            json!({"result": "v", "source": "redis"}),
            "round {round}"
        );
    }
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    assert_eq!(from_redis(&rg, json!({"op": "ping"})), true);
    let m = rg.metrics();
    assert_eq!(calls(&m, "failure"), 0.0);
    assert_eq!(rg.breaker()["failure_count"], 0);
}

/// The proxy itself: dropping it closes every connection it holds and joins every thread it started, so a test
/// that ends, or fails, leaves nothing running behind it.
#[test]
fn the_fault_proxy_closes_its_connections_and_joins_its_threads_when_dropped() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let prefix = proxy.thread_prefix();
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
    for s in &mut open {
        s.write_all(b"PING\r\n").unwrap();
        let mut pong = [0u8; 7];
        s.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }
    // A reply held back when the proxy goes, and a connection swallowed by a black hole.
    proxy.latency(Duration::from_secs(1));
    open[0].write_all(b"PING\r\n").unwrap();
    proxy.black_hole();
    open.push(connect());
    open[3].write_all(b"PING\r\n").unwrap();
    // One acceptor, three pumps per forwarded connection, one for the swallowed one.
    wait_for("the proxy's threads", RECOVERY, || {
        (threads_named(&prefix) == 11).then_some(())
    });

    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    // Joined threads can stay listed in /proc for a moment: the kernel wakes a thread's joiner (clearing its
    // tid) before the thread has finished leaving the process. A thread not joined would stay for good.
    wait_for("the proxy's threads to be gone", Duration::from_secs(2), || {
        (threads_named(&prefix) == 0).then_some(())
    });
    for (i, s) in open.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("connection {i} was left open: {other:?}"),
        }
    }
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}
