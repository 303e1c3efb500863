//! The fallback cache never serves a value past its Redis key's own TTL, whoever set that TTL and whichever
//! path filled the cache: typed reads and the writes that fill it (INCR, HSET), MGET, pipelines (plain and
//! atomic), after TTL changes made with raw commands. Each test gives keys a short TTL in Redis, reads them
//! through redguard, waits until Redis itself no longer holds them, forces the circuit open and reads again:
//! the answer must come from the default, never from the cache. A key without a TTL, or with a long one, is
//! still served from the cache, so the tests cannot pass by caching nothing.

mod common;

use std::time::Duration;

use common::{wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

/// Long enough for the reads below to happen before it runs out on a loaded machine (each setup step is a
/// redis-cli process), short enough to wait for.
const SHORT_MS: &str = "3000";

fn start() -> (RedisServer, Redguard) {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "breaker:\n  recovery_jitter: 0\n");
    (redis, rg)
}

fn ok(rg: &Redguard, body: Value) -> Value {
    let r = rg.cmd(&body.to_string());
    assert_eq!(r.status, 200, "{body} -> {} {}", r.status, r.body);
    r.json()
}

fn post(rg: &Redguard, path: &str, body: Value) -> Value {
    let r = rg.post(path, &body);
    assert_eq!(r.status, 200, "{body} -> {} {}", r.status, r.body);
    r.json()
}

fn redis_ok(redis: &RedisServer, args: &[&str]) {
    let reply = redis.cmd(args);
    assert!(reply.is_some(), "redis-cli {args:?} failed");
}

/// Waits until Redis has dropped every one of `keys` (its own expiry), then forces the circuit open.
fn expire_in_redis_and_open(redis: &RedisServer, rg: &Redguard, keys: &[&str]) {
    let mut args = vec!["EXISTS"];
    args.extend_from_slice(keys);
    wait_for("Redis to expire the keys", Duration::from_secs(20), || {
        (redis.cmd(&args).as_deref() == Some("0")).then_some(())
    });
    assert_eq!(rg.control("force_open").status, 200);
}

/// While open: `body` must be answered from the default (the cache holds nothing for the key any more).
fn not_from_cache(rg: &Redguard, body: Value) {
    let answer = ok(rg, body.clone());
    assert_eq!(
        answer["source"], "default",
        "{body} was served after its key expired: {answer}"
    );
}

#[test]
fn values_read_from_keys_with_a_ttl_are_not_served_after_redis_expired_them() {
    let (redis, rg) = start();
    redis_ok(&redis, &["SET", "token", "t1", "PX", SHORT_MS]);
    redis_ok(&redis, &["HSET", "session", "user", "ada"]);
    redis_ok(&redis, &["PEXPIRE", "session", SHORT_MS]);
    redis_ok(&redis, &["HSET", "partial", "f", "1"]);
    redis_ok(&redis, &["PEXPIRE", "partial", SHORT_MS]);
    redis_ok(&redis, &["SET", "m1", "a", "PX", SHORT_MS]);
    redis_ok(&redis, &["SET", "lock", "owner", "PX", SHORT_MS]);
    redis_ok(&redis, &["SET", "long", "stays", "PX", "600000"]);
    redis_ok(&redis, &["SET", "plain", "stays"]);

    assert_eq!(ok(&rg, json!({"op": "get", "key": "token"}))["result"], "t1");
    assert_eq!(
        ok(&rg, json!({"op": "hgetall", "key": "session"}))["result"],
        json!({"user": "ada"})
    );
    assert_eq!(
        ok(&rg, json!({"op": "hget", "key": "partial", "field": "f"}))["result"],
        "1"
    );
    assert_eq!(
        ok(&rg, json!({"op": "mget", "keys": ["m1", "plain"]}))["result"],
        json!(["a", "stays"])
    );
    assert_eq!(ok(&rg, json!({"op": "get", "key": "lock"}))["result"], "owner");
    assert_eq!(ok(&rg, json!({"op": "get", "key": "long"}))["result"], "stays");

    expire_in_redis_and_open(&redis, &rg, &["token", "session", "partial", "m1", "lock"]);
    not_from_cache(&rg, json!({"op": "get", "key": "token"}));
    not_from_cache(&rg, json!({"op": "hgetall", "key": "session"}));
    not_from_cache(&rg, json!({"op": "hget", "key": "session", "field": "user"}));
    not_from_cache(&rg, json!({"op": "hget", "key": "partial", "field": "f"}));
    not_from_cache(&rg, json!({"op": "get", "key": "lock"}));
    let mget = ok(&rg, json!({"op": "mget", "keys": ["m1", "plain"]}));
    assert_eq!(mget["result"], json!([null, "stays"]), "{mget}");
    assert_eq!(mget["sources"], json!(["default", "cache"]), "{mget}");
    // Keys without a TTL, or with one far ahead, are still served: the cache was not simply turned off.
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "long"})),
        json!({"result": "stays", "source": "cache", "degraded": true})
    );
}

#[test]
fn writes_that_fill_the_cache_learn_the_ttl_the_key_keeps() {
    let (redis, rg) = start();
    // INCR and HSET keep a key's TTL; what they cache must expire with it.
    redis_ok(&redis, &["SET", "counter", "5", "PX", SHORT_MS]);
    redis_ok(&redis, &["HSET", "profile", "a", "1"]);
    redis_ok(&redis, &["PEXPIRE", "profile", SHORT_MS]);
    assert_eq!(ok(&rg, json!({"op": "incr", "key": "counter"}))["result"], 6);
    assert_eq!(
        ok(&rg, json!({"op": "hset", "key": "profile", "fields": {"b": "2"}}))["result"],
        1
    );

    expire_in_redis_and_open(&redis, &rg, &["counter", "profile"]);
    not_from_cache(&rg, json!({"op": "get", "key": "counter"}));
    not_from_cache(&rg, json!({"op": "hget", "key": "profile", "field": "b"}));
}

#[test]
fn pipelines_learn_the_ttl_of_what_they_read() {
    let (redis, rg) = start();
    for key in ["p1", "p2", "t1"] {
        redis_ok(&redis, &["SET", key, "v", "PX", SHORT_MS]);
    }
    redis_ok(&redis, &["HSET", "ph", "f", "1"]);
    redis_ok(&redis, &["PEXPIRE", "ph", SHORT_MS]);
    redis_ok(&redis, &["SET", "plain", "stays"]);
    let plain = post(
        &rg,
        "/v1/pipeline",
        json!({"commands": [
            {"op": "get", "key": "p1"},
            {"op": "hgetall", "key": "ph"},
            {"op": "mget", "keys": ["p2", "plain"]},
        ]}),
    );
    assert_eq!(plain["results"][2]["result"], json!(["v", "stays"]), "{plain}");
    let atomic = post(
        &rg,
        "/v1/pipeline",
        json!({"atomic": true, "commands": [{"op": "get", "key": "t1"}, {"op": "ping"}]}),
    );
    assert_eq!(atomic["results"][0]["result"], "v", "{atomic}");

    expire_in_redis_and_open(&redis, &rg, &["p1", "p2", "ph", "t1"]);
    let answer = post(
        &rg,
        "/v1/pipeline",
        json!({"commands": [
            {"op": "get", "key": "p1"},
            {"op": "hgetall", "key": "ph"},
            {"op": "mget", "keys": ["p2", "plain"]},
            {"op": "get", "key": "t1"},
        ]}),
    );
    let sources: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["source"])
        .collect();
    assert_eq!(
        sources,
        [&json!("default"), &json!("default"), &json!("cache"), &json!("default")],
        "{answer}"
    );
    assert_eq!(answer["results"][2]["sources"], json!(["default", "cache"]), "{answer}");
}

#[test]
fn ttls_given_by_raw_commands_bind_the_values_read_afterwards() {
    let (redis, rg) = start();
    for key in ["h", "g", "k", "q"] {
        redis_ok(&redis, &["SET", key, "v"]);
    }
    redis_ok(&redis, &["DEL", "h"]);
    redis_ok(&redis, &["HSET", "h", "f", "1"]);
    // Through redguard's raw route: PEXPIRE, GETEX, SET .. KEEPTTL; then the keys are read again.
    assert_eq!(
        ok(&rg, json!({"op": "hgetall", "key": "h"}))["result"],
        json!({"f": "1"})
    );
    post(&rg, "/v1/command", json!({"args": ["PEXPIRE", "h", SHORT_MS]}));
    post(&rg, "/v1/command", json!({"args": ["GETEX", "g", "PX", SHORT_MS]}));
    redis_ok(&redis, &["PEXPIRE", "k", SHORT_MS]);
    post(&rg, "/v1/command", json!({"args": ["SET", "k", "v2", "KEEPTTL"]}));
    assert_eq!(
        ok(&rg, json!({"op": "hgetall", "key": "h"}))["result"],
        json!({"f": "1"})
    );
    assert_eq!(ok(&rg, json!({"op": "get", "key": "g"}))["result"], "v");
    assert_eq!(ok(&rg, json!({"op": "get", "key": "k"}))["result"], "v2");
    // In one pipeline: the raw TTL change, then the typed read.
    post(
        &rg,
        "/v1/pipeline",
        json!({"commands": [{"args": ["PEXPIRE", "q", SHORT_MS]}, {"op": "get", "key": "q"}]}),
    );

    expire_in_redis_and_open(&redis, &rg, &["h", "g", "k", "q"]);
    not_from_cache(&rg, json!({"op": "hgetall", "key": "h"}));
    not_from_cache(&rg, json!({"op": "get", "key": "g"}));
    not_from_cache(&rg, json!({"op": "get", "key": "k"}));
    not_from_cache(&rg, json!({"op": "get", "key": "q"}));
}

#[test]
fn a_typed_expire_caps_what_is_cached() {
    let (redis, rg) = start();
    redis_ok(&redis, &["SET", "e", "v"]);
    assert_eq!(ok(&rg, json!({"op": "get", "key": "e"}))["result"], "v");
    assert_eq!(
        ok(&rg, json!({"op": "expire", "key": "e", "seconds": 1}))["result"],
        true
    );
    assert_eq!(ok(&rg, json!({"op": "get", "key": "e"}))["result"], "v");
    expire_in_redis_and_open(&redis, &rg, &["e"]);
    not_from_cache(&rg, json!({"op": "get", "key": "e"}));
}
