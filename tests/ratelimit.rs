//! The sliding-window rate limiter against a real `redis-server` and the real binary: exact allow/deny
//! sequences across window boundaries, no over-admission under concurrent callers, and the three fallback
//! policies with Redis killed.
//!
//! Time passes for real here, but no test sleeps on a guess: a test waits for the limiter to allow again (the
//! condition it reported with `reset_ms`) or for Redis's own clock (the one the limiter reads) to move on.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

const FAST: &str = "breaker:\n  failure_threshold: 3\n  recovery_timeout: 1s\n  recovery_jitter: 0\n";

/// One check; the answer must be a 200.
fn check(rg: &Redguard, key: &str, limit: u64, window_ms: u64, cost: u64) -> Value {
    let body = json!({"key": key, "limit": limit, "window_ms": window_ms, "cost": cost});
    let r = rg.post("/v1/ratelimit", &body);
    assert_eq!(r.status, 200, "{body} -> {}", r.body);
    r.json()
}

/// (allowed, remaining) of an answer that came from Redis.
fn decided(answer: &Value) -> (bool, u64) {
    assert_eq!(answer["source"], "redis", "{answer}");
    assert_eq!(answer.get("degraded"), None, "{answer}");
    (
        answer["allowed"].as_bool().unwrap(),
        answer["remaining"].as_u64().unwrap(),
    )
}

fn reset_ms(answer: &Value) -> u64 {
    answer["reset_ms"].as_u64().unwrap()
}

/// Redis's clock in milliseconds, through the typed `time` op.
fn redis_ms(rg: &Redguard) -> u64 {
    let r = rg.cmd(r#"{"op":"time"}"#).json();
    let t = &r["result"];
    t["seconds"].as_u64().unwrap() * 1000 + t["microseconds"].as_u64().unwrap() / 1000
}

/// Polls with cost 1 until the limiter allows; every answer before must be a denial with nothing remaining.
/// Returns the allowing answer and when it arrived.
fn until_allowed(rg: &Redguard, key: &str, limit: u64, window_ms: u64) -> (Value, Instant) {
    wait_for("the limiter to allow again", Duration::from_secs(10), || {
        let answer = check(rg, key, limit, window_ms, 1);
        match decided(&answer) {
            (true, _) => Some((answer, Instant::now())),
            (false, remaining) => {
                assert_eq!(remaining, 0, "{answer}");
                assert!(reset_ms(&answer) > 0, "a denial says when to come back: {answer}");
                None
            }
        }
    })
}

#[test]
fn the_limit_holds_until_the_window_boundary_then_frees_exactly_what_left() {
    // Long enough that the checks below fit in one window on a loaded machine.
    const WINDOW_MS: u64 = 2000;
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), FAST);
    // One call of cost 3 fills the window at one instant, so everything it counted leaves at one instant.
    let first = check(&rg, "login:203.0.113.9", 3, WINDOW_MS, 3);
    assert_eq!(decided(&first), (true, 0));
    let reset = reset_ms(&first);
    assert!((1..=WINDOW_MS).contains(&reset), "{first}");

    let denied_at = Instant::now();
    let denied = check(&rg, "login:203.0.113.9", 3, WINDOW_MS, 1);
    assert_eq!(decided(&denied), (false, 0));
    let reset = reset_ms(&denied);
    assert!((1..=WINDOW_MS).contains(&reset), "{denied}");

    let (allowed, at) = until_allowed(&rg, "login:203.0.113.9", 3, WINDOW_MS);
    assert_eq!(decided(&allowed), (true, 2), "all three units left together");
    let waited = at.duration_since(denied_at);
    assert!(
        waited + Duration::from_millis(1) >= Duration::from_millis(reset),
        "allowed after {waited:?}, but the limiter had said {reset}ms"
    );
    assert_eq!(decided(&check(&rg, "login:203.0.113.9", 3, WINDOW_MS, 1)), (true, 1));
    assert_eq!(decided(&check(&rg, "login:203.0.113.9", 3, WINDOW_MS, 1)), (true, 0));
    let again = check(&rg, "login:203.0.113.9", 3, WINDOW_MS, 1);
    assert_eq!(decided(&again), (false, 0));
    assert!((1..=WINDOW_MS).contains(&reset_ms(&again)), "{again}");
    // The limiter's sorted set lives under its own prefix, with the window as its expiry.
    let ttl: i64 = redis
        .cmd(&["PTTL", "redguard:ratelimit:login:203.0.113.9"])
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=WINDOW_MS as i64).contains(&ttl), "pttl {ttl}");
}

#[test]
fn the_window_slides_instead_of_resetting() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), FAST);
    // limit 2 per 1000ms:   A at t0, B at t0+500, then C is only allowed when A leaves, and with B still
    // counted nothing remains (a fixed window would have forgotten B too).
    assert_eq!(decided(&check(&rg, "api:key", 2, 1000, 1)), (true, 1), "A");
    let t0 = redis_ms(&rg);
    wait_for("Redis's clock to pass t0 + 500ms", Duration::from_secs(5), || {
        (redis_ms(&rg) >= t0 + 500).then_some(())
    });
    assert_eq!(decided(&check(&rg, "api:key", 2, 1000, 1)), (true, 0), "B");
    let denied = check(&rg, "api:key", 2, 1000, 1);
    assert_eq!(decided(&denied), (false, 0));
    assert!(reset_ms(&denied) <= 500, "A leaves first: {denied}");
    let (allowed, _) = until_allowed(&rg, "api:key", 2, 1000);
    assert_eq!(decided(&allowed), (true, 0), "C: B still counts");
    let denied = check(&rg, "api:key", 2, 1000, 1);
    assert_eq!(decided(&denied), (false, 0));
    assert!((1..=1000).contains(&reset_ms(&denied)), "B leaves next: {denied}");
}

#[test]
fn concurrent_callers_never_get_more_than_the_limit() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), FAST);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..20).map(|_| check(&rg, "burst", 50, 60_000, 1)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 160);
    let mut remaining: Vec<u64> = answers
        .iter()
        .map(decided)
        .filter(|(allowed, _)| *allowed)
        .map(|(_, remaining)| remaining)
        .collect();
    assert_eq!(remaining.len(), 50, "exactly the limit was admitted");
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..50).collect::<Vec<u64>>(),
        "each admitted call saw its own count: no two shared an entry"
    );
    assert_eq!(redis.cmd(&["ZCARD", "redguard:ratelimit:burst"]).as_deref(), Some("50"));
    assert_eq!(
        rg.metric(r#"redguard_ratelimit_decisions_total{allowed="true",source="redis"}"#),
        50.0
    );
    assert_eq!(
        rg.metric(r#"redguard_ratelimit_decisions_total{allowed="false",source="redis"}"#),
        110.0
    );
}

#[test]
fn with_redis_killed_each_fallback_policy_decides_as_configured() {
    let mut redis = RedisServer::start();
    let with = |policy: &str| Redguard::start(&redis.url(), &format!("{FAST}ratelimit:\n  on_unavailable: {policy}\n"));
    let (local, allow, deny) = (with("local"), with("allow"), with("deny"));
    for (i, rg) in [&local, &allow, &deny].into_iter().enumerate() {
        let key = format!("before-{i}");
        assert_eq!(
            decided(&check(rg, &key, 2, 60_000, 1)),
            (true, 1),
            "Redis decides while it is up"
        );
    }
    redis.kill();

    // local: the same semantics, in this sidecar alone (it starts from an empty window).
    let answers: Vec<Value> = (0..4).map(|_| check(&local, "k", 2, 60_000, 1)).collect();
    let shape = |a: &Value| {
        (
            a["allowed"].clone(),
            a["remaining"].clone(),
            a["source"].clone(),
            a["degraded"].clone(),
        )
    };
    let local_answer = |allowed: bool, remaining: u64| (json!(allowed), json!(remaining), json!("local"), json!(true));
    assert_eq!(shape(&answers[0]), local_answer(true, 1));
    assert_eq!(shape(&answers[1]), local_answer(true, 0));
    assert_eq!(shape(&answers[2]), local_answer(false, 0));
    assert_eq!(shape(&answers[3]), local_answer(false, 0));
    assert!((59_000..=60_000).contains(&reset_ms(&answers[3])), "{}", answers[3]);
    assert_eq!(
        local.breaker_state(),
        "open",
        "the failures still count for the breaker"
    );

    // allow: fail open.
    for _ in 0..4 {
        let a = check(&allow, "k", 2, 60_000, 1);
        assert_eq!(
            (
                &a["allowed"],
                &a["remaining"],
                &a["reset_ms"],
                &a["source"],
                &a["degraded"]
            ),
            (&json!(true), &json!(1), &json!(0), &json!("default"), &json!(true)),
            "{a}"
        );
    }

    // deny: fail closed; once the circuit is open, reset_ms says when Redis will be asked again.
    let answers: Vec<Value> = (0..4).map(|_| check(&deny, "k", 2, 60_000, 1)).collect();
    for a in &answers {
        assert_eq!(
            (&a["allowed"], &a["remaining"], &a["source"], &a["degraded"]),
            (&json!(false), &json!(0), &json!("default"), &json!(true)),
            "{a}"
        );
    }
    assert_eq!(deny.breaker_state(), "open");
    assert!((1..=1000).contains(&reset_ms(&answers[3])), "{}", answers[3]);

    assert_eq!(
        local.metric(r#"redguard_ratelimit_decisions_total{allowed="false",source="local"}"#),
        2.0
    );
    assert_eq!(
        deny.metric(r#"redguard_ratelimit_decisions_total{allowed="false",source="default"}"#),
        4.0
    );
}

/// One call's work in Redis does not grow with `cost`: the worst accepted call (the largest limit, window and
/// cost) adds one sorted-set entry of a few hundred bytes and takes Redis well under a millisecond, where one
/// entry per unit of cost took about 150 ms and 11 MB. Six such calls at once leave the circuit closed.
#[test]
fn the_worst_accepted_call_costs_redis_one_entry() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), FAST);
    assert_eq!(redis.cmd(&["CONFIG", "RESETSTAT"]).as_deref(), Some("OK"));
    let first = check(&rg, "big", 100_000, 86_400_000, 100_000);
    assert_eq!(decided(&first), (true, 0));
    let key = "redguard:ratelimit:big";
    assert_eq!(redis.cmd(&["ZCARD", key]).as_deref(), Some("1"));
    let bytes: u64 = redis.cmd(&["MEMORY", "USAGE", key]).unwrap().parse().unwrap();
    assert!(bytes < 1024, "the key uses {bytes} bytes");
    // The script's own time, as Redis counts it (EVAL the first time, EVALSHA after).
    let stats = redis.cmd(&["INFO", "commandstats"]).unwrap();
    let usec: f64 = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval"))
        .filter_map(|l| l.split("usec_per_call=").nth(1)?.split(',').next()?.parse().ok())
        .fold(0.0, f64::max);
    assert!(usec > 0.0 && usec < 20_000.0, "{stats}");

    // Six at once, each on its own key, then each again on its full key (denied): all decided by Redis.
    std::thread::scope(|s| {
        for i in 0..6 {
            let rg = &rg;
            s.spawn(move || {
                let key = format!("big:{i}");
                assert_eq!(decided(&check(rg, &key, 100_000, 86_400_000, 100_000)), (true, 0));
                let denied = check(rg, &key, 100_000, 86_400_000, 100_000);
                assert_eq!(decided(&denied), (false, 0));
                assert!(reset_ms(&denied) > 86_000_000, "{denied}");
            });
        }
    });
    assert_eq!(rg.breaker_state(), "closed");
    assert_eq!(rg.breaker()["failure_count"], 0);
}

/// The sum of the costs in the window is kept exactly across many calls of mixed cost, and a denial's `reset_ms`
/// names the call whose departure makes room (found by binary search among the entries).
#[test]
fn mixed_costs_are_summed_exactly_and_reset_names_the_right_call() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), FAST);
    let mut used = 0;
    for cost in [1, 5, 2, 9, 1, 30, 2] {
        used += cost;
        assert_eq!(decided(&check(&rg, "mix", 50, 60_000, cost)), (true, 50 - used));
    }
    // 50 used; a call of 10 needs 10 to leave: the first four calls (1+5+2+9 = 17 >= 10), not the first three.
    assert_eq!(redis.cmd(&["ZCARD", "redguard:ratelimit:mix"]).as_deref(), Some("7"));
    let fourth = redis
        .cmd(&["ZRANGE", "redguard:ratelimit:mix", "3", "3", "WITHSCORES"])
        .unwrap();
    let fourth_us: u64 = fourth.lines().nth(1).unwrap().parse().unwrap();
    let denied = check(&rg, "mix", 50, 60_000, 10);
    assert_eq!(decided(&denied), (false, 0));
    let now_ms = redis_ms(&rg);
    let expect = (fourth_us / 1000 + 60_000).saturating_sub(now_ms);
    let reset = reset_ms(&denied);
    assert!(
        reset.abs_diff(expect) <= 50,
        "reset {reset}, the fourth call leaves in about {expect}"
    );
    // A call that fits exactly is allowed.
    assert_eq!(decided(&check(&rg, "other", 50, 60_000, 50)), (true, 0));
    // A key left by the earlier script (one entry per unit, named `<id>-<call>:<i>`) starts over.
    let now_us = (redis_ms(&rg) * 1000).to_string();
    let legacy = "redguard:ratelimit:legacy";
    redis.cmd(&[
        "ZADD",
        legacy,
        &now_us,
        "0123456789abcdef-1:1",
        &now_us,
        "0123456789abcdef-1:2",
    ]);
    assert_eq!(decided(&check(&rg, "legacy", 2, 60_000, 1)), (true, 1));
    assert_eq!(redis.cmd(&["ZCARD", legacy]).as_deref(), Some("1"));
}
