//! The whole Redis surface behind the breaker, proven against a real `redis-server` and the real binary: typed
//! sorted-set, multi-key and script ops, raw commands and their reply mapping, pipelines and transactions, the
//! command policy, and the cache's honesty around all of them. (The rate limiter has its own file.)

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Redguard, RedisServer};
use serde_json::{json, Value};

/// Short timings so outages and recoveries happen within a test.
const FAST: &str = "breaker:\n  failure_threshold: 3\n  recovery_timeout: 1s\n  recovery_jitter: 0\n";

fn start() -> (RedisServer, Redguard) {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), FAST);
    (redis, rg)
}

/// A typed op that must succeed.
fn ok(rg: &Redguard, body: Value) -> Value {
    let r = rg.cmd(&body.to_string());
    assert_eq!(r.status, 200, "{body} -> {} {}", r.status, r.body);
    r.json()
}

/// A raw command that must succeed; returns the whole answer.
fn raw(rg: &Redguard, args: &[&str]) -> Value {
    let r = rg.post("/v1/command", &json!({ "args": args }));
    assert_eq!(r.status, 200, "{args:?} -> {} {}", r.status, r.body);
    r.json()
}

/// A pipeline that must succeed; returns the whole answer.
fn pipeline(rg: &Redguard, body: Value) -> Value {
    let r = rg.post("/v1/pipeline", &body);
    assert_eq!(r.status, 200, "{body} -> {} {}", r.status, r.body);
    r.json()
}

/// (status, error code, error message) of a failed call.
fn failed(r: &common::Response) -> (u16, String, String) {
    let body = r.json();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (r.status, text(&body["error"]["code"]), text(&body["error"]["message"]))
}

fn sha1(script: &str) -> String {
    redis::Script::new(script).get_hash().to_owned()
}

#[test]
fn sorted_set_multi_key_time_and_script_ops_round_trip_through_redis() {
    let (redis, rg) = start();
    assert_eq!(
        ok(&rg, json!({"op": "zadd", "key": "z", "members": {"a": 1, "b": 2}})),
        json!({"result": 2, "source": "redis"})
    );
    assert_eq!(
        ok(
            &rg,
            json!({"op": "zadd", "key": "z", "members": [[3, "c"], [0.5, "d"]]})
        )["result"],
        2
    );
    assert_eq!(redis.cmd(&["ZSCORE", "z", "c"]).as_deref(), Some("3"));
    assert_eq!(ok(&rg, json!({"op": "zcard", "key": "z"}))["result"], 4);
    assert_eq!(
        ok(&rg, json!({"op": "zscore", "key": "z", "member": "a"}))["result"],
        1.0
    );
    assert_eq!(
        ok(&rg, json!({"op": "zscore", "key": "z", "member": "nope"})),
        json!({"result": null, "source": "redis"})
    );
    assert_eq!(
        ok(&rg, json!({"op": "zincrby", "key": "z", "member": "a", "by": 0.5}))["result"],
        1.5
    );
    assert_eq!(redis.cmd(&["ZSCORE", "z", "a"]).as_deref(), Some("1.5"));
    assert_eq!(
        ok(&rg, json!({"op": "zrange", "key": "z", "start": 0, "stop": -1}))["result"],
        json!(["d", "a", "b", "c"])
    );
    assert_eq!(
        ok(
            &rg,
            json!({"op": "zrange", "key": "z", "start": 0, "stop": 1, "withscores": true})
        )["result"],
        json!([{"member": "d", "score": 0.5}, {"member": "a", "score": 1.5}])
    );
    assert_eq!(
        ok(
            &rg,
            json!({"op": "zrangebyscore", "key": "z", "min": "(1.5", "max": "+inf"})
        )["result"],
        json!(["b", "c"])
    );
    let limited = json!({"op": "zrangebyscore", "key": "z", "min": 0, "max": 10, "withscores": true,
                         "limit": {"offset": 1, "count": 2}});
    assert_eq!(
        ok(&rg, limited)["result"],
        json!([{"member": "a", "score": 1.5}, {"member": "b", "score": 2.0}])
    );
    assert_eq!(
        ok(
            &rg,
            json!({"op": "zremrangebyscore", "key": "z", "min": "-inf", "max": 1})
        )["result"],
        1
    );
    assert_eq!(
        ok(&rg, json!({"op": "zrem", "key": "z", "members": ["a", "nope"]}))["result"],
        1
    );
    assert_eq!(redis.cmd(&["ZRANGE", "z", "0", "-1"]).as_deref(), Some("b\nc"));

    let time = ok(&rg, json!({"op": "time"}))["result"].clone();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let seconds = time["seconds"].as_i64().unwrap();
    assert!((now - 60..=now + 60).contains(&seconds), "{time}");
    assert!(
        (0..1_000_000).contains(&time["microseconds"].as_i64().unwrap()),
        "{time}"
    );

    assert_eq!(
        ok(&rg, json!({"op": "mset", "pairs": {"k1": "v1", "k2": "v2"}})),
        json!({"result": true, "source": "redis"})
    );
    assert_eq!(redis.cmd(&["GET", "k2"]).as_deref(), Some("v2"));
    assert_eq!(
        ok(&rg, json!({"op": "mget", "keys": ["k1", "missing", "k2"]}))["result"],
        json!(["v1", null, "v2"])
    );

    let script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    let eval = json!({"op": "eval", "script": script, "keys": ["counter"], "args": ["5"]});
    assert_eq!(ok(&rg, eval.clone()), json!({"result": 5, "source": "redis"}));
    assert_eq!(ok(&rg, eval)["result"], 10, "the second run goes by EVALSHA");
    let evalsha = json!({"op": "evalsha", "sha": sha1(script), "keys": ["counter"], "args": ["1"]});
    assert_eq!(ok(&rg, evalsha)["result"], 11);
    assert_eq!(redis.cmd(&["GET", "counter"]).as_deref(), Some("11"));
}

#[test]
fn raw_commands_map_each_reply_type_to_json() {
    let (_redis, rg) = start();
    assert_eq!(
        raw(&rg, &["SET", "s", "hello"]),
        json!({"result": "OK", "source": "redis"})
    );
    assert_eq!(raw(&rg, &["get", "s"])["result"], "hello", "names are case-insensitive");
    assert_eq!(raw(&rg, &["INCR", "n"])["result"], 1);
    assert_eq!(
        raw(&rg, &["GET", "missing"]),
        json!({"result": null, "source": "redis"})
    );
    assert_eq!(raw(&rg, &["RPUSH", "l", "a", "b", "c"])["result"], 3);
    assert_eq!(raw(&rg, &["LRANGE", "l", "0", "-1"])["result"], json!(["a", "b", "c"]));
    assert_eq!(raw(&rg, &["LRANGE", "empty", "0", "-1"])["result"], json!([]));
    raw(&rg, &["HSET", "h", "f", "v"]);
    assert_eq!(
        raw(&rg, &["HGETALL", "h"])["result"],
        json!(["f", "v"]),
        "RESP2: a hash is a flat array"
    );
    assert_eq!(raw(&rg, &["PING"])["result"], "PONG", "a simple string");
    assert_eq!(
        raw(&rg, &["EVAL", "return {1, {2, 'x'}, false}", "0"])["result"],
        json!([1, [2, "x"], null]),
        "nested arrays"
    );
    let r = rg.post("/v1/command", &json!({"args": ["INCR", "s"]}));
    let (status, code, message) = failed(&r);
    assert_eq!((status, code.as_str()), (422, "redis_error"));
    assert!(message.starts_with("ERR value is not an integer"), "{message}");
    let (status, code, message) = failed(&rg.post("/v1/command", &json!({"args": ["NOSUCHCMD"]})));
    assert_eq!((status, code.as_str()), (422, "redis_error"));
    assert!(message.contains("unknown command"), "{message}");
    assert_eq!(rg.breaker()["failure_count"], 0, "application errors are not failures");
}

#[test]
fn binary_values_travel_as_base64_both_ways_in_raw_commands() {
    let (redis, rg) = start();
    // SET bin \x00\xff\x10, every argument base64.
    let set = json!({"args": ["U0VU", "Ymlu", "AP8Q"], "encoding": "base64"});
    assert_eq!(
        rg.post("/v1/command", &set).json(),
        json!({"result": "T0s=", "source": "redis"}),
        "the reply's strings are base64 too"
    );
    assert_eq!(redis.cmd(&["STRLEN", "bin"]).as_deref(), Some("3"));
    let get = json!({"args": ["R0VU", "Ymlu"], "encoding": "base64"});
    assert_eq!(rg.post("/v1/command", &get).json()["result"], "AP8Q");
    let (status, code, _) = failed(&rg.post("/v1/command", &json!({"args": ["GET", "bin"]})));
    assert_eq!((status, code.as_str()), (422, "not_utf8"));
    let answer = pipeline(
        &rg,
        json!({"commands": [
            {"args": ["R0VU", "Ymlu"], "encoding": "base64"},
            {"args": ["GET", "bin"]},
            {"op": "get", "key": "bin", "encoding": "base64"},
        ]}),
    );
    assert_eq!(answer["results"][0]["result"], "AP8Q");
    assert_eq!(
        answer["results"][1]["error"]["code"], "not_utf8",
        "only that slot fails"
    );
    assert_eq!(answer["results"][2]["result"], "AP8Q");
}

#[test]
fn a_pipeline_answers_every_command_in_order_with_its_own_errors() {
    let (redis, rg) = start();
    let answer = pipeline(
        &rg,
        json!({"commands": [
            {"op": "set", "key": "p:s", "value": "str"},
            {"op": "hset", "key": "p:s", "fields": {"f": "v"}},
            {"args": ["INCR", "p:n"]},
            {"op": "get", "key": "p:s"},
            {"args": ["LPUSH", "p:s", "x"]},
            {"op": "zadd", "key": "p:z", "members": {"m": 1}},
        ]}),
    );
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0], json!({"result": true, "source": "redis"}));
    assert_eq!(results[1]["error"]["code"], "redis_error");
    assert!(results[1]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("WRONGTYPE"));
    assert_eq!(results[2], json!({"result": 1, "source": "redis"}));
    assert_eq!(results[3], json!({"result": "str", "source": "redis"}));
    assert!(results[4]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("WRONGTYPE"));
    assert_eq!(results[5], json!({"result": 1, "source": "redis"}));
    assert_eq!(answer["source"], "redis");
    assert_eq!(redis.cmd(&["ZSCORE", "p:z", "m"]).as_deref(), Some("1"));
    assert_eq!(rg.breaker()["failure_count"], 0);
    // The typed SET taught the cache, exactly as it would have alone.
    assert_eq!(rg.control("force_open").status, 200);
    assert_eq!(
        ok(&rg, json!({"op": "get", "key": "p:s"})),
        json!({"result": "str", "source": "cache", "degraded": true})
    );
}

#[test]
fn a_transaction_runs_the_commands_after_a_failing_one_and_execabort_runs_none() {
    let (redis, rg) = start();
    redis.cmd(&["SET", "t:s", "str"]).unwrap();
    let answer = pipeline(
        &rg,
        json!({"atomic": true, "commands": [
            {"op": "incr", "key": "t:n"},
            {"op": "hset", "key": "t:s", "fields": {"f": "v"}},
            {"op": "incr", "key": "t:n"},
            {"args": ["GET", "t:n"]},
        ]}),
    );
    let results = &answer["results"];
    assert_eq!(results[0]["result"], 1);
    assert!(results[1]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("WRONGTYPE"));
    assert_eq!(
        results[2]["result"], 2,
        "Redis does not roll back: later commands still ran"
    );
    assert_eq!(results[3]["result"], "2");
    assert_eq!(redis.cmd(&["GET", "t:n"]).as_deref(), Some("2"));

    // A command Redis refuses while queueing discards the whole transaction.
    let r = rg.post(
        "/v1/pipeline",
        &json!({"atomic": true, "commands": [
            {"op": "incr", "key": "t:n"},
            {"args": ["NOSUCHCMD"]},
            {"op": "incr", "key": "t:n"},
        ]}),
    );
    let (status, code, message) = failed(&r);
    assert_eq!((status, code.as_str()), (422, "redis_error"));
    assert!(
        message.starts_with("EXECABORT") && message.contains("command 1: ERR unknown command"),
        "{message}"
    );
    assert_eq!(redis.cmd(&["GET", "t:n"]).as_deref(), Some("2"), "nothing ran");
}

#[test]
fn eval_survives_script_flush_and_evalsha_recovers_only_scripts_it_has_seen() {
    let (redis, rg) = start();
    let script = "return 'v' .. ARGV[1]";
    let sha = sha1(script);
    let eval = |arg: &str| ok(&rg, json!({"op": "eval", "script": script, "args": [arg]}))["result"].clone();
    assert_eq!(eval("1"), "v1");
    assert_eq!(redis.cmd(&["SCRIPT", "EXISTS", &sha]).as_deref(), Some("1"));
    redis.cmd(&["SCRIPT", "FLUSH"]).unwrap();
    assert_eq!(redis.cmd(&["SCRIPT", "EXISTS", &sha]).as_deref(), Some("0"));
    assert_eq!(eval("2"), "v2", "NOSCRIPT never reaches the application");
    assert_eq!(
        redis.cmd(&["SCRIPT", "EXISTS", &sha]).as_deref(),
        Some("1"),
        "EVAL loaded it again"
    );

    redis.cmd(&["SCRIPT", "FLUSH"]).unwrap();
    assert_eq!(
        ok(&rg, json!({"op": "evalsha", "sha": sha, "args": ["3"]}))["result"],
        "v3",
        "redguard knows this script's body, so evalsha recovers too"
    );

    let unseen = sha1("return 'never sent through redguard'");
    let r = rg.cmd(&json!({"op": "evalsha", "sha": unseen}).to_string());
    let (status, code, message) = failed(&r);
    assert_eq!((status, code.as_str()), (422, "redis_error"));
    assert!(message.starts_with("NOSCRIPT"), "{message}");

    let loaded = redis.cmd(&["SCRIPT", "LOAD", "return 'loaded elsewhere'"]).unwrap();
    assert_eq!(
        ok(&rg, json!({"op": "evalsha", "sha": loaded}))["result"],
        "loaded elsewhere"
    );
    // In a pipeline there is no second round trip: a known script goes by body, so a flush does not matter.
    redis.cmd(&["SCRIPT", "FLUSH"]).unwrap();
    let answer = pipeline(&rg, json!({"commands": [{"op": "evalsha", "sha": sha, "args": ["4"]}]}));
    assert_eq!(answer["results"][0]["result"], "v4");
}

#[test]
fn denied_commands_get_403_naming_the_command_and_never_reach_redis() {
    let (redis, rg) = start();
    redis.cmd(&["SET", "keep", "1"]).unwrap();
    ok(&rg, json!({"op": "ping"}));
    let before = redis.commands_processed();
    for (args, shown) in [
        (vec!["FLUSHALL"], "FLUSHALL"),
        (vec!["flushall", "ASYNC"], "FLUSHALL"),
        (vec!["Config", "set", "maxmemory", "1"], "CONFIG"),
        (vec!["cluster", "AddSlots", "1"], "CLUSTER ADDSLOTS"),
        (vec!["CLUSTER", "reset"], "CLUSTER RESET"),
        (vec!["multi"], "MULTI"),
        (vec!["WATCH", "keep"], "WATCH"),
        (vec!["BLPOP", "q", "0"], "BLPOP"),
        (
            vec!["xread", "COUNT", "1", "block", "0", "STREAMS", "s", "$"],
            "XREAD BLOCK",
        ),
        (vec!["SUBSCRIBE", "ch"], "SUBSCRIBE"),
        (vec!["select", "1"], "SELECT"),
    ] {
        let r = rg.post("/v1/command", &json!({ "args": args }));
        let (status, code, message) = failed(&r);
        assert_eq!((status, code.as_str()), (403, "command_denied"), "{args:?}: {}", r.body);
        assert!(message.contains(&format!("command {shown} ")), "{args:?}: {message}");
    }
    let r = rg.post(
        "/v1/pipeline",
        &json!({"commands": [{"op": "set", "key": "p", "value": "1"}, {"args": ["FLUSHDB"]}]}),
    );
    assert_eq!(failed(&r).0, 403);
    assert!(failed(&r).2.contains("FLUSHDB"));
    assert_eq!(
        redis.commands_processed(),
        before + 1,
        "nothing reached Redis (INFO itself is one command)"
    );
    assert_eq!(redis.cmd(&["EXISTS", "keep", "p"]).as_deref(), Some("1"));

    // Subcommands outside the topology-changing ones pass the policy (and Redis answers for itself).
    let r = rg.post("/v1/command", &json!({"args": ["CLUSTER", "INFO"]}));
    assert_eq!(failed(&r).1, "redis_error", "{}", r.body);
    assert_eq!(
        raw(&rg, &["XREAD", "COUNT", "1", "STREAMS", "s", "0"])["result"],
        json!(null)
    );
    let metric = r#"redguard_api_requests_total{code="403",listener="http",op="command"}"#;
    assert_eq!(rg.metric(metric), 11.0);
}

#[test]
fn an_allow_list_narrows_raw_and_typed_commands_alike() {
    let redis = RedisServer::start();
    let rg = Redguard::start(
        &redis.url(),
        "api:\n  commands:\n    allow: [GET, SET, \"cluster info\"]\n    deny: [KEYS]\n",
    );
    assert_eq!(raw(&rg, &["SET", "k", "v"])["result"], "OK");
    assert_eq!(ok(&rg, json!({"op": "get", "key": "k"}))["result"], "v");
    let denied = |r: common::Response| {
        let (status, code, message) = failed(&r);
        assert_eq!((status, code.as_str()), (403, "command_denied"), "{message}");
        message
    };
    assert!(denied(rg.post("/v1/command", &json!({"args": ["DEL", "k"]}))).contains("DEL"));
    assert!(denied(rg.cmd(r#"{"op":"del","keys":["k"]}"#)).contains("command DEL "));
    assert!(denied(rg.cmd(r#"{"op":"incr","key":"n"}"#)).contains("command INCRBY "));
    assert!(denied(rg.post("/v1/command", &json!({"args": ["cluster", "nodes"]}))).contains("CLUSTER NODES"));
    assert!(denied(rg.post("/v1/command", &json!({"args": ["FLUSHALL"]}))).contains("FLUSHALL"));
    assert_eq!(redis.cmd(&["GET", "k"]).as_deref(), Some("v"));
}

#[test]
fn a_non_atomic_pipeline_of_reads_is_served_from_the_cache_while_forced_open() {
    let (redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "a", "value": "1"}));
    ok(&rg, json!({"op": "hset", "key": "h", "fields": {"f": "v"}}));
    ok(&rg, json!({"op": "hgetall", "key": "h"}));
    ok(&rg, json!({"op": "mset", "pairs": {"m": "x"}}));
    assert_eq!(rg.control("force_open").status, 200);
    let before = redis.commands_processed();

    let answer = pipeline(
        &rg,
        json!({"commands": [
            {"op": "get", "key": "a"},
            {"op": "hget", "key": "h", "field": "f"},
            {"op": "hgetall", "key": "h"},
            {"op": "get", "key": "never-cached", "default": "fallback"},
            {"op": "mget", "keys": ["a", "m", "zz"], "default": 0},
            {"op": "zscore", "key": "z", "member": "m", "default": -1},
        ]}),
    );
    assert_eq!(
        answer,
        json!({
            "results": [
                {"result": "1", "source": "cache", "degraded": true},
                {"result": "v", "source": "cache", "degraded": true},
                {"result": {"f": "v"}, "source": "cache", "degraded": true},
                {"result": "fallback", "source": "default", "degraded": true},
                {"result": ["1", "x", 0], "source": "cache", "sources": ["cache", "cache", "default"],
                 "degraded": true},
                {"result": -1, "source": "default", "degraded": true},
            ],
            "source": "cache",
            "degraded": true,
        })
    );

    // Writes in a pipeline fail as a whole; so does any transaction and any raw command.
    for body in [
        json!({"commands": [{"op": "get", "key": "a"}, {"op": "incr", "key": "n"}]}),
        json!({"commands": [{"op": "get", "key": "a"}, {"args": ["GET", "a"]}]}),
        json!({"atomic": true, "commands": [{"op": "get", "key": "a"}]}),
    ] {
        let r = rg.post("/v1/pipeline", &body);
        assert_eq!(failed(&r).0, 503, "{body}: {}", r.body);
        assert_eq!(failed(&r).1, "circuit_open");
        // Forced open: it will not half-open by itself, so no time to retry is given.
        assert_eq!(r.header("retry-after"), None);
    }
    let r = rg.post("/v1/command", &json!({"args": ["GET", "a"]}));
    assert_eq!(
        (failed(&r).0, failed(&r).1.as_str()),
        (503, "circuit_open"),
        "raw commands get no cache fallback"
    );
    assert_eq!(r.json()["degraded"], true);
    assert_eq!(
        redis.commands_processed(),
        before + 1,
        "no call reached Redis while open"
    );
}

#[test]
fn sorted_set_multi_key_time_and_script_ops_fall_back_as_their_class_says_while_open() {
    let (_redis, rg) = start();
    ok(&rg, json!({"op": "set", "key": "a", "value": "1"}));
    assert_eq!(rg.control("force_open").status, 200);
    for (req, answer) in [
        (
            json!({"op": "zscore", "key": "z", "member": "m"}),
            json!({"result": null, "source": "default", "degraded": true}),
        ),
        (
            json!({"op": "zrange", "key": "z", "start": 0, "stop": -1, "default": []}),
            json!({"result": [], "source": "default", "degraded": true}),
        ),
        (
            json!({"op": "time", "default": "unknown"}),
            json!({"result": "unknown", "source": "default", "degraded": true}),
        ),
        (
            json!({"op": "mget", "keys": ["zz"]}),
            json!({"result": [null], "source": "default", "sources": ["default"], "degraded": true}),
        ),
        (
            json!({"op": "zadd", "key": "z", "members": {"m": 1}, "on_unavailable": "default"}),
            json!({"result": 0, "source": "default", "degraded": true}),
        ),
    ] {
        assert_eq!(ok(&rg, req.clone()), answer, "{req}");
    }
    for req in [
        json!({"op": "zincrby", "key": "z", "member": "m", "by": 1, "on_unavailable": "default"}),
        json!({"op": "eval", "script": "return 1", "on_unavailable": "default"}),
        json!({"op": "zadd", "key": "z", "members": {"m": 1}}),
    ] {
        assert_eq!(rg.cmd(&req.to_string()).status, 503, "{req}");
    }
    // A refused MSET is kept for this pod's reads, like a refused SET.
    let r = rg.cmd(r#"{"op":"mset","pairs":{"a":"2"}}"#);
    assert_eq!((r.status, r.json()["cached"].clone()), (503, json!(true)));
    assert_eq!(ok(&rg, json!({"op": "get", "key": "a"}))["result"], "2");
}

#[test]
fn raw_commands_and_scripts_drop_the_cached_keys_they_may_have_changed() {
    let (_redis, rg) = start();
    for key in ["k1", "k2", "k3", "k4"] {
        ok(&rg, json!({"op": "set", "key": key, "value": "old"}));
    }
    ok(&rg, json!({"op": "set", "key": "untouched", "value": "old"}));
    raw(&rg, &["SET", "k1", "new"]);
    pipeline(&rg, json!({"commands": [{"args": ["DEL", "k2"]}]}));
    ok(
        &rg,
        json!({"op": "eval", "script": "redis.call('SET', KEYS[1], 'new')", "keys": ["k3"]}),
    );
    raw(&rg, &["GET", "k4"]);
    assert_eq!(rg.control("force_open").status, 200);
    let source = |key: &str| ok(&rg, json!({"op": "get", "key": key}))["source"].clone();
    assert_eq!(source("k1"), "default", "the stale value is gone, not served");
    assert_eq!(source("k2"), "default");
    assert_eq!(source("k3"), "default");
    assert_eq!(source("k4"), "cache", "a known read changes nothing");
    assert_eq!(source("untouched"), "cache");
}

#[test]
fn a_raw_command_redis_refused_drops_nothing_unless_it_is_a_script() {
    let (_redis, rg) = start();
    for key in ["script", "plain"] {
        ok(&rg, json!({"op": "set", "key": key, "value": "old"}));
    }
    // A script that writes, then fails: Redis keeps the write.
    let script = "redis.call('SET', KEYS[1], 'new'); return redis.error_reply('BOOM after the write')";
    let r = rg.post("/v1/command", &json!({"args": ["EVAL", script, "1", "script"]}));
    let (status, code, message) = failed(&r);
    assert_eq!((status, code.as_str()), (422, "redis_error"), "{}", r.body);
    assert!(message.contains("BOOM after the write"), "{message}");
    // A command Redis refused changed nothing (Redis commands are atomic).
    let r = rg.post("/v1/command", &json!({"args": ["INCR", "plain"]}));
    assert_eq!(failed(&r).0, 422, "{}", r.body);
    assert_eq!(rg.control("force_open").status, 200);
    let source = |key: &str| ok(&rg, json!({"op": "get", "key": key}))["source"].clone();
    assert_eq!(
        source("script"),
        "default",
        "the script's write may have happened: the old value is gone"
    );
    assert_eq!(source("plain"), "cache", "a refused INCR changed nothing");
}

#[test]
fn raw_writes_drop_the_keys_the_command_table_gives_and_reads_drop_none() {
    let (_redis, rg) = start();
    for key in ["k1", "k2", "k3", "k4", "k5", "v"] {
        ok(&rg, json!({"op": "set", "key": key, "value": "old"}));
    }
    // SET's key is k1; its value `v` is not a key, so the cached `v` stays.
    raw(&rg, &["SET", "k1", "v"]);
    // A destination before the counted keys.
    raw(&rg, &["ZUNIONSTORE", "k2", "1", "no-such-zset"]);
    // SORT .. STORE: the table cannot tell its keys, so every argument is taken for one.
    raw(&rg, &["SORT", "no-such-list", "STORE", "k3"]);
    // Reads, by subcommand and by read-only script: nothing dropped.
    raw(&rg, &["OBJECT", "ENCODING", "k4"]);
    raw(&rg, &["EVAL_RO", "return 1", "1", "k5"]);
    assert_eq!(rg.control("force_open").status, 200);
    let source = |key: &str| ok(&rg, json!({"op": "get", "key": key}))["source"].clone();
    assert_eq!(source("k1"), "default");
    assert_eq!(source("k2"), "default");
    assert_eq!(source("k3"), "default");
    assert_eq!(source("k4"), "cache");
    assert_eq!(source("k5"), "cache");
    assert_eq!(
        source("v"),
        "cache",
        "a value that names a cached key no longer costs that entry"
    );
}

#[test]
fn bad_requests_on_the_command_pipeline_and_ratelimit_routes_name_the_field() {
    let redis = RedisServer::start();
    let rg = Redguard::start(&redis.url(), "api:\n  max_pipeline_commands: 2\n");
    let cases = [
        ("/v1/command", json!({}), "missing field `args`"),
        ("/v1/command", json!({"args": []}), "field `args` must not be empty"),
        ("/v1/command", json!({"args": ["GET", 1]}), "field `args[1]`"),
        (
            "/v1/command",
            json!({"args": ["!!"], "encoding": "base64"}),
            "`args[0]` is not valid base64",
        ),
        (
            "/v1/pipeline",
            json!({"commands": [{"op": "ping"}, {"op": "ping"}, {"op": "ping"}]}),
            "api.max_pipeline_commands allows 2",
        ),
        (
            "/v1/pipeline",
            json!({"commands": [{"op": "zadd", "key": "z"}]}),
            "commands[0]: op `zadd` needs field `members`",
        ),
        (
            "/v1/ratelimit",
            json!({"key": "k", "limit": 2, "window_ms": 10, "cost": 3}),
            "field `cost`",
        ),
        (
            "/v1/cmd",
            json!({"op": "zrangebyscore", "key": "z", "min": "low", "max": 1}),
            "field `min`",
        ),
    ];
    for (path, body, mentions) in cases {
        let r = rg.post(path, &body);
        let (status, code, message) = failed(&r);
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{path} {body}: {}",
            r.body
        );
        assert!(message.contains(mentions), "{path} {body}: {message}");
    }
    assert_eq!(
        rg.metric(r#"redguard_api_requests_total{code="400",listener="http",op="invalid"}"#),
        8.0
    );
}
