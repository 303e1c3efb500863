//! Sentinel mode against one master, one replica and three sentinels on loopback: the master is killed, the
//! sentinels promote the replica, and redguard follows it, over plain TCP and over TLS with an ACL user. And
//! sentinels that require a password of their own.

mod common;

use std::time::{Duration, Instant};

use common::topology::{info_field, write_file, Certs, SentinelGroup, SentinelOptions, MASTER_NAME};
use common::{resp_cli, wait_for, Redguard};
use serde_json::{json, Value};

fn call(rg: &Redguard, body: Value) -> (u16, Value) {
    let r = rg.cmd(&body.to_string());
    (r.status, r.json())
}

/// Kills the master (which holds `before` = "1") and waits for redguard to follow the failover: writes fail, or
/// are refused by the open circuit, until the sentinels have promoted the replica; then a write reaches it
/// through redguard, and the replicated `before` is read from it.
fn kill_the_master_and_follow_the_failover(rg: &Redguard, group: &mut SentinelGroup, what: &str) {
    let replica_addr = group.replica.addr();
    group.master.kill();
    let killed = Instant::now();
    let mut attempts = 0;
    wait_for(
        "a write through redguard to reach the promoted replica",
        Duration::from_secs(40),
        || {
            attempts += 1;
            let (status, body) = call(rg, json!({"op": "set", "key": "after", "value": "2"}));
            (status == 200 && body["source"] == "redis").then_some(())
        },
    );
    assert!(attempts > 1, "the first write after the kill cannot have succeeded");
    eprintln!("{what} followed after {:?}", killed.elapsed());

    // The sentinel asked here may learn of the promotion from its peers up to a second after the one redis-rs
    // asked: waited for, not read once.
    wait_for(
        "the sentinels to name the promoted replica",
        Duration::from_secs(10),
        || (group.master_addr().as_deref() == Some(replica_addr.as_str())).then_some(()),
    );
    let role = group.replica.must(&["INFO", "replication"]);
    assert_eq!(info_field(&role, "role").as_deref(), Some("master"), "{role}");
    assert_eq!(
        group.replica.must(&["GET", "after"]),
        "2",
        "the value landed on the new master"
    );
    assert_eq!(
        call(rg, json!({"op": "get", "key": "before"})),
        (200, json!({"result": "1", "source": "redis"})),
        "replicated data is read from the new master"
    );
    assert!(rg.log().contains("the master moved"), "{}", rg.log());
}

#[test]
fn writes_follow_the_promoted_replica() {
    let mut group = SentinelGroup::start();
    let config = format!(
        "redis:\n  mode: sentinel\n  master_name: {MASTER_NAME}\n  sentinels: [{}]\nbreaker:\n  failure_threshold: 3\n  recovery_timeout: 500ms\n  recovery_jitter: 0\n",
        group.sentinel_urls().join(", ")
    );
    let rg = Redguard::start("redis://127.0.0.1:1", &config);
    assert!(rg.metrics().contains(r#"redguard_build_info{redis_mode="sentinel""#));
    assert!(
        rg.breaker().get("nodes").is_none(),
        "one master at a time: no nodes array"
    );

    assert_eq!(
        call(&rg, json!({"op": "set", "key": "before", "value": "1"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    assert_eq!(
        group.master.must(&["GET", "before"]),
        "1",
        "written to the first master"
    );
    // A pipeline that is not a transaction: each slot its own answer, an application error in its own slot.
    let pipeline = json!({"commands": [
        {"op": "get", "key": "before"},
        {"args": ["LPUSH", "before", "x"]},
        {"op": "incr", "key": "visits"},
    ]});
    let r = common::http(&rg.socket, "POST", "/v1/pipeline", &pipeline.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let slots = r.json()["results"].clone();
    assert_eq!(slots[0], json!({"result": "1", "source": "redis"}));
    assert_eq!(slots[1]["error"]["code"], "redis_error", "{slots}");
    assert!(
        slots[1]["error"]["message"].as_str().unwrap().starts_with("WRONGTYPE"),
        "{slots}"
    );
    assert_eq!(slots[2]["result"], 1, "{slots}");

    kill_the_master_and_follow_the_failover(&rg, &mut group, "failover");
    wait_for("the circuit to be closed", Duration::from_secs(5), || {
        (rg.breaker_state() == "closed").then_some(())
    });
}

/// Master, replica and sentinels speak only TLS (`--port 0`), and the data nodes know only the ACL user `app`:
/// redguard reaches the sentinels and the master over `rediss://` with `redis.tls.ca_file`, authenticates as
/// `app` with a password file, and follows the failover.
#[test]
fn tls_and_an_acl_user_through_the_sentinels_and_across_a_failover() {
    let certs = Certs::generate();
    let mut group = SentinelGroup::start_with(SentinelOptions {
        tls: Some(&certs),
        acl_user: Some(("app", "app-pw-5c1e")),
        ..SentinelOptions::default()
    });
    let urls = group.sentinel_urls();
    assert!(urls.iter().all(|u| u.starts_with("rediss://")), "{urls:?}");
    let dir = tempfile::tempdir().unwrap();
    let pw = write_file(dir.path(), "pw", "app-pw-5c1e\n");
    // A TLS handshake in a debug build can take longer than the default 250ms, and a lookup makes three
    // (sentinel, ROLE check, master).
    let config = format!(
        "redis:\n  mode: sentinel\n  master_name: {MASTER_NAME}\n  sentinels: [{}]\n  username: app\n  \
         password_file: {}\n  command_timeout: 2s\n  tls:\n    ca_file: {}\nbreaker:\n  failure_threshold: 3\n  \
         recovery_timeout: 500ms\n  recovery_jitter: 0\n",
        urls.join(", "),
        pw.display(),
        certs.path_str("ca.crt")
    );
    let rg = Redguard::start("redis://127.0.0.1:1", &config);

    wait_for("redguard to reach the master", Duration::from_secs(15), || {
        let (status, body) = call(&rg, json!({"op": "ping"}));
        (status == 200 && body["source"] == "redis").then_some(())
    });
    assert_eq!(
        call(&rg, json!({"op": "set", "key": "before", "value": "1"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "before"})),
        (200, json!({"result": "1", "source": "redis"}))
    );
    assert_eq!(
        group.master.must(&["GET", "before"]),
        "1",
        "written to the master, over TLS"
    );
    let clients = group.master.must(&["CLIENT", "LIST"]);
    assert!(
        clients
            .lines()
            // A GET is followed by the PTTL that tells the cache when the key expires.
            .any(|l| l.contains(" user=app ") && (l.contains("cmd=get") || l.contains("cmd=pttl"))),
        "redguard's connection is the ACL user's: {clients}"
    );

    kill_the_master_and_follow_the_failover(&rg, &mut group, "TLS failover");
    assert!(!rg.log().contains("app-pw-5c1e"), "the password leaked:\n{}", rg.log());
}

/// Sentinels with `requirepass` (and an ACL user of their own): redguard reaches them with
/// `redis.sentinel_password_file`, `REDGUARD_REDIS_SENTINEL_PASSWORD` or an ACL user; without credentials it
/// starts degraded and says which keys to check, never printing a password.
#[test]
fn sentinels_that_require_a_password() {
    let group = SentinelGroup::start_with(SentinelOptions {
        sentinel_password: Some("sentinel-pw-93d2"),
        sentinel_user: Some(("watcher", "watcher-pw-41ab")),
        ..SentinelOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "redis:\n  mode: sentinel\n  master_name: {MASTER_NAME}\n  sentinels: [{}]\n",
        group.sentinel_urls().join(", ")
    );
    let round_trip = |rg: &Redguard, key: &str| {
        assert_eq!(
            call(rg, json!({"op": "set", "key": key, "value": "v"})),
            (200, json!({"result": true, "source": "redis"})),
            "{}",
            rg.log()
        );
        assert_eq!(group.master.must(&["GET", key]), "v");
    };

    // The password from a file (the sentinels' requirepass: the default user).
    let pw = write_file(dir.path(), "sentinel-pw", "sentinel-pw-93d2\n");
    let rg = Redguard::start(
        "redis://127.0.0.1:1",
        &format!("{base}  sentinel_password_file: {}\n", pw.display()),
    );
    round_trip(&rg, "via-file");
    // From the environment, as an ACL user of the sentinels.
    let rg = Redguard::start_with_env(
        "redis://127.0.0.1:1",
        &format!("{base}  sentinel_username: watcher\n"),
        &[("REDGUARD_REDIS_SENTINEL_PASSWORD", "watcher-pw-41ab")],
    );
    round_trip(&rg, "via-env-and-user");

    // Without credentials the sentinels refuse: degraded, with a clear line at start.
    let rg = Redguard::start("redis://127.0.0.1:1", &base);
    let line = rg.startup_error_line();
    eprintln!("{line}");
    assert!(line.contains("NOAUTH"), "{line}");
    assert!(
        line.contains("check redis.sentinel_username and the sentinel password"),
        "{line}"
    );
    let (status, body) = call(&rg, json!({"op": "set", "key": "refused", "value": "v"}));
    assert_eq!(status, 503, "{body}");
    let (status, body) = call(&rg, json!({"op": "get", "key": "via-file"}));
    assert_eq!((status, body["source"].as_str()), (200, Some("default")), "{body}");
    assert_eq!(group.master.cli(&["EXISTS", "refused"]).as_deref(), Some("0"));

    // A wrong password is refused the same way, and is printed nowhere.
    let rg = Redguard::start_with_env(
        "redis://127.0.0.1:1",
        &base,
        &[("REDGUARD_REDIS_SENTINEL_PASSWORD", "wrong-pw-0f7c")],
    );
    wait_for("the start-up log line", Duration::from_secs(10), || {
        rg.log().contains("cannot use Redis at start").then_some(())
    });
    let (status, body) = call(&rg, json!({"op": "set", "key": "refused", "value": "v"}));
    assert_eq!(status, 503, "{body}");
    let emitted = [rg.log(), body.to_string(), rg.metrics(), rg.breaker().to_string()];
    for text in emitted {
        assert!(!text.contains("wrong-pw-0f7c"), "the password leaked:\n{text}");
    }
}

/// Issue 21: a value read from a key with a TTL is not served from the fallback after the key expired in Redis,
/// in sentinel mode too (the read and its PTTL go to the master in one round trip).
#[test]
fn a_key_that_expired_in_redis_is_not_served_from_the_cache() {
    let group = SentinelGroup::start();
    let config = format!(
        "redis:\n  mode: sentinel\n  master_name: {MASTER_NAME}\n  sentinels: [{}]\n",
        group.sentinel_urls().join(", ")
    );
    let rg = Redguard::start("redis://127.0.0.1:1", &config);
    wait_for("redguard to reach the master", Duration::from_secs(15), || {
        let (status, body) = call(&rg, json!({"op": "ping"}));
        (status == 200 && body["source"] == "redis").then_some(())
    });
    group.master.must(&["SET", "token", "t", "PX", "3000"]);
    group.master.must(&["HSET", "session", "user", "ada"]);
    group.master.must(&["PEXPIRE", "session", "3000"]);
    group.master.must(&["SET", "plain", "p"]);
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "token"})),
        (200, json!({"result": "t", "source": "redis"}))
    );
    assert_eq!(
        call(&rg, json!({"op": "hgetall", "key": "session"})).1["source"],
        "redis"
    );
    assert_eq!(call(&rg, json!({"op": "get", "key": "plain"})).1["source"], "redis");
    wait_for("Redis to expire the keys", Duration::from_secs(20), || {
        (group.master.must(&["EXISTS", "token", "session"]) == "0").then_some(())
    });
    assert_eq!(rg.control("force_open").status, 200);
    for body in [
        json!({"op": "get", "key": "token"}),
        json!({"op": "hgetall", "key": "session"}),
    ] {
        let (_, answer) = call(&rg, body.clone());
        assert_eq!(
            answer["source"], "default",
            "{body} served after its key expired: {answer}"
        );
    }
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "plain"})),
        (200, json!({"result": "p", "source": "cache", "degraded": true}))
    );
}

/// The RESP socket's connections of their own (a blocking pop's, a subscriber's) are opened to the master the
/// sentinels name, before a failover and after it.
#[test]
fn connections_of_their_own_follow_the_promoted_replica() {
    use std::io::{Read, Write};
    let mut group = SentinelGroup::start();
    let config = format!(
        "redis:\n  mode: sentinel\n  master_name: {MASTER_NAME}\n  sentinels: [{}]\nbreaker:\n  failure_threshold: 3\n  recovery_timeout: 500ms\n  recovery_jitter: 0\n",
        group.sentinel_urls().join(", ")
    );
    let (rg, resp, _dir) = Redguard::start_with_resp("redis://127.0.0.1:1", &config);
    assert_eq!(
        call(&rg, json!({"op": "set", "key": "before", "value": "1"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    let subscribed_on = |server: &common::RedisServer, channel: &str| {
        let mut sub = std::os::unix::net::UnixStream::connect(&resp).unwrap();
        sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        sub.write_all(format!("SSUBSCRIBE {channel}\r\n").as_bytes()).unwrap();
        let mut got = [0u8; 256];
        let n = sub.read(&mut got).expect("a confirmation within 10 s");
        let reply = String::from_utf8_lossy(&got[..n]).into_owned();
        assert!(reply.contains("ssubscribe"), "{reply}");
        let count = server.must(&["PUBSUB", "SHARDNUMSUB", channel]);
        assert_eq!(count.lines().nth(1), Some("1"), "{channel}: {count}");
        sub
    };
    let pop = |queue: &str| {
        assert_eq!(resp_cli(&resp, &["RPUSH", queue, "job"]), "1");
        assert_eq!(resp_cli(&resp, &["BLPOP", queue, "5"]), format!("{queue}\njob"));
    };
    let _first = subscribed_on(&group.master, "events:1");
    pop("q1");
    kill_the_master_and_follow_the_failover(&rg, &mut group, "failover");
    let _second = subscribed_on(&group.replica, "events:2");
    pop("q2");
}
