//! Cluster mode against a real 3-master Redis Cluster on loopback: slot routing, CROSSSLOT as an application
//! error, a partial outage that degrades only the dead shard's keys while the sidecar-wide breaker stays
//! closed and the per-node metrics move, TLS, and an ACL user on every node (with the RESP socket's blocking
//! commands, whose connections of their own must reach each master with the same TLS and credentials).

mod common;

use std::time::Duration;

use common::topology::{info_field, write_file, Certs, ClusterOptions, RedisCluster};
use common::{metric_value, resp_cli, wait_for, Redguard};
use serde_json::{json, Value};

fn config(seeds: &[String]) -> String {
    format!(
        "redis:\n  mode: cluster\n  nodes: [{}]\n  command_timeout: 500ms\nbreaker:\n  failure_threshold: 3\n  recovery_timeout: 1s\n  recovery_jitter: 0\n  recovery_backoff: 1\n",
        seeds.join(", ")
    )
}

fn call(rg: &Redguard, body: Value) -> (u16, Value) {
    let r = rg.cmd(&body.to_string());
    (r.status, r.json())
}

/// A blocking pop through the RESP socket on one key per master: its connection of its own must reach the
/// key's master with the configured TLS and credentials (any other node answers MOVED).
fn a_blocking_pop_on_every_master(socket: &std::path::Path, cluster: &RedisCluster, prefix: &str) {
    let queues: Vec<String> = (0..30).map(|i| format!("{prefix}:queue:{i}")).collect();
    let owners = cluster.owners_of(&queues);
    for master in 0..3 {
        let q = &queues[owners
            .iter()
            .position(|&o| o == master)
            .expect("a queue on every master")];
        assert_eq!(resp_cli(socket, &["RPUSH", q, "job"]), "1", "{q}");
        assert_eq!(
            resp_cli(socket, &["BLPOP", q, "5"]),
            format!("{q}\njob"),
            "{q} on master {master}"
        );
    }
}

/// A shard subscription through the RESP socket on one channel per master: the subscriber's connection (RESP3,
/// built from the seeds' settings) must reach the channel's master with the configured TLS and credentials, and
/// a SPUBLISH there must find it.
fn a_shard_subscription_on_every_master(socket: &std::path::Path, cluster: &RedisCluster, prefix: &str) {
    use std::io::{Read, Write};
    let channels: Vec<String> = (0..30).map(|i| format!("{prefix}:events:{i}")).collect();
    let owners = cluster.owners_of(&channels);
    for master in 0..3 {
        let ch = &channels[owners
            .iter()
            .position(|&o| o == master)
            .expect("a channel on every master")];
        let mut sub = std::os::unix::net::UnixStream::connect(socket).unwrap();
        sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut read_until = |sub: &mut std::os::unix::net::UnixStream, what: &str| {
            while !String::from_utf8_lossy(&got).contains(what) {
                let mut chunk = [0u8; 1024];
                let n = sub.read(&mut chunk).expect("an answer within 10 s");
                assert!(n > 0, "closed; read: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&chunk[..n]);
            }
        };
        sub.write_all(format!("SSUBSCRIBE {ch}\r\n").as_bytes()).unwrap();
        read_until(&mut sub, "ssubscribe");
        assert_eq!(
            resp_cli(socket, &["SPUBLISH", ch, "sent"]),
            "1",
            "{ch} on master {master}"
        );
        read_until(&mut sub, "smessage");
    }
}

fn node_series(name: &str, addr: &str) -> String {
    format!("{name}{{node=\"{addr}\"}}")
}

/// Waits until redguard reports every master of `cluster` up (`redguard_redis_node_up` 1 for each address);
/// answers their addresses.
fn every_master_seen_up(rg: &Redguard, cluster: &RedisCluster) -> Vec<String> {
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    wait_for("every master to be seen up", Duration::from_secs(15), || {
        let m = rg.metrics();
        addrs
            .iter()
            .all(|a| metric_value(&m, &node_series("redguard_redis_node_up", a)) == 1.0)
            .then_some(())
    });
    addrs
}

/// The `nodes` array of a breaker answer, as (address, state) pairs in the order given.
fn node_states(breaker: &Value) -> Vec<(String, String)> {
    breaker["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes array: {breaker}"))
        .iter()
        .map(|n| {
            (
                n["address"].as_str().unwrap().to_owned(),
                n["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_dead_master_degrades_only_its_own_keys() {
    let mut cluster = RedisCluster::start(3);
    // The URL is unused in cluster mode; the seeds come from the config.
    let rg = Redguard::start("redis://127.0.0.1:1", &config(&cluster.seeds()));
    let addrs = every_master_seen_up(&rg, &cluster);
    assert!(
        rg.metrics().contains(r#"redguard_build_info{redis_mode="cluster""#),
        "{}",
        rg.metrics()
    );
    // Each master's own breaker is in the JSON too, sorted by address.
    let mut sorted = addrs.clone();
    sorted.sort();
    let closed: Vec<(String, String)> = sorted.iter().map(|a| (a.clone(), "closed".to_owned())).collect();
    assert_eq!(node_states(&rg.breaker()), closed);
    let first = &rg.breaker()["nodes"][0];
    assert_eq!(
        first,
        &json!({"address": sorted[0], "state": "closed", "consecutive_failures": 0, "up": true,
                "failures_total": 0, "rejected_total": 0})
    );

    // 200 keys, spread over all three shards (checked with Redis's own CLUSTER KEYSLOT and CLUSTER NODES).
    let keys: Vec<String> = (0..200).map(|i| format!("key:{i}")).collect();
    let owners = cluster.owners_of(&keys);
    for n in 0..3 {
        assert!(
            owners.iter().filter(|&&o| o == n).count() > 20,
            "node {n} owns too few keys: {owners:?}"
        );
    }
    for key in &keys {
        let (status, body) = call(&rg, json!({"op": "set", "key": key, "value": format!("v-{key}")}));
        assert_eq!(
            (status, &body),
            (200, &json!({"result": true, "source": "redis"})),
            "{key}"
        );
    }
    for (key, &owner) in keys.iter().zip(&owners).step_by(7) {
        assert_eq!(
            cluster.nodes[owner].must(&["GET", key]),
            format!("v-{key}"),
            "{key} is on its slot's master"
        );
    }

    // Keys in different slots: Redis's CROSSSLOT is an application error, not a failure (nor a silent split).
    let (a, b) = (
        &keys[0],
        keys.iter().zip(&owners).find(|(_, &o)| o != owners[0]).unwrap().0,
    );
    let (status, body) = call(&rg, json!({"op": "del", "keys": [a, b]}));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "redis_error");
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("CROSSSLOT"),
        "{body}"
    );
    // Hash tags put keys in one slot, so multi-key ops work.
    call(&rg, json!({"op": "set", "key": "{user:7}:a", "value": "1"}));
    call(&rg, json!({"op": "set", "key": "{user:7}:b", "value": "2"}));
    assert_eq!(
        call(&rg, json!({"op": "del", "keys": ["{user:7}:a", "{user:7}:b"]})),
        (200, json!({"result": 2, "source": "redis"}))
    );
    assert_eq!(rg.breaker_state(), "closed");

    // Kill the master owning the first key.
    let victim = owners[0];
    let victim_addr = addrs[victim].clone();
    cluster.nodes[victim].kill();

    // Its keys are answered from the fallback cache; every other key still from Redis. Twice over, so the
    // victim's own breaker opens and later calls fail fast.
    for round in 0..2 {
        for (key, &owner) in keys.iter().zip(&owners) {
            let (status, body) = call(&rg, json!({"op": "get", "key": key}));
            let want = if owner == victim {
                json!({"result": format!("v-{key}"), "source": "cache", "degraded": true})
            } else {
                json!({"result": format!("v-{key}"), "source": "redis"})
            };
            assert_eq!((status, &body), (200, &want), "round {round}, {key} on node {owner}");
        }
    }
    // A write to the dead shard is not reported as written; one to a live shard is.
    let dead_key = &keys[0];
    let (status, body) = call(&rg, json!({"op": "set", "key": dead_key, "value": "new"}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "redis_unavailable");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&victim_addr),
        "{body}"
    );
    let live_key = b;
    assert_eq!(
        call(&rg, json!({"op": "set", "key": live_key, "value": "new"})),
        (200, json!({"result": true, "source": "redis"}))
    );

    // One shard's outage did not blind the sidecar: the sidecar-wide circuit is still closed, and the JSON
    // routes show which node is failing. (The health task probes the dead node every recovery_timeout, so it
    // may be caught half-open for a moment.)
    assert_eq!(rg.breaker_state(), "closed");
    let want: Vec<(String, String)> = sorted
        .iter()
        .map(|a| (a.clone(), if *a == victim_addr { "open" } else { "closed" }.to_owned()))
        .collect();
    let breaker = wait_for("the victim's node to show open", Duration::from_secs(10), || {
        let b = rg.breaker();
        (node_states(&b) == want).then_some(b)
    });
    for node in breaker["nodes"].as_array().unwrap() {
        let dead = node["address"] == victim_addr.as_str();
        assert_eq!(node["up"], !dead, "{breaker}");
        assert_eq!(node["failures_total"].as_u64().unwrap() >= 3, dead, "{breaker}");
        assert_eq!(node["rejected_total"].as_u64().unwrap() >= 1, dead, "{breaker}");
        assert_eq!(node["consecutive_failures"].as_u64().unwrap() >= 3, dead, "{breaker}");
    }
    let health = wait_for(
        "the health route to show the victim open",
        Duration::from_secs(10),
        || {
            let h = common::http_tcp(rg.admin, "/api/v1/health/circuit-breaker").json();
            (node_states(&h) == want).then_some(h)
        },
    );
    assert_eq!(health["state"], "closed", "{health}");
    let m = rg.metrics();
    assert_eq!(
        metric_value(&m, r#"redguard_circuit_state{state="closed"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, &node_series("redguard_redis_node_up", &victim_addr)),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, &node_series("redguard_redis_node_circuit_open", &victim_addr)),
        1.0,
        "{m}"
    );
    assert!(
        metric_value(&m, &node_series("redguard_redis_node_failures_total", &victim_addr)) >= 3.0,
        "{m}"
    );
    assert!(
        metric_value(&m, &node_series("redguard_redis_node_rejected_total", &victim_addr)) >= 1.0,
        "{m}"
    );
    for (i, addr) in addrs.iter().enumerate().filter(|(i, _)| *i != victim) {
        assert_eq!(
            metric_value(&m, &node_series("redguard_redis_node_up", addr)),
            1.0,
            "node {i}: {m}"
        );
        assert_eq!(
            metric_value(&m, &node_series("redguard_redis_node_failures_total", addr)),
            0.0,
            "node {i}: {m}"
        );
    }

    // The master comes back (empty: no persistence): its node breaker is probed closed and its keys are served
    // by Redis again.
    cluster.nodes[victim].restart();
    wait_for(
        "the dead shard to be served by Redis again",
        Duration::from_secs(30),
        || {
            let (status, body) = call(&rg, json!({"op": "get", "key": dead_key}));
            (status == 200 && body["source"] == "redis").then_some(())
        },
    );
    wait_for("the victim's node metrics to recover", Duration::from_secs(10), || {
        let m = rg.metrics();
        (metric_value(&m, &node_series("redguard_redis_node_up", &victim_addr)) == 1.0
            && metric_value(&m, &node_series("redguard_redis_node_circuit_open", &victim_addr)) == 0.0)
            .then_some(())
    });
    wait_for("every node to show closed again", Duration::from_secs(10), || {
        (node_states(&rg.breaker()) == closed).then_some(())
    });
    assert_eq!(rg.breaker_state(), "closed");
}

#[test]
fn a_whole_cluster_outage_opens_the_sidecar_breaker() {
    let mut cluster = RedisCluster::start(3);
    // Two node labels at most: the third master is counted under node="other".
    let yaml = config(&cluster.seeds()).replace("mode: cluster\n", "mode: cluster\n  node_metrics_limit: 2\n");
    let rg = Redguard::start("redis://127.0.0.1:1", &yaml);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
    let m = wait_for("every master to be seen up", Duration::from_secs(15), || {
        let m = rg.metrics();
        let own = addrs
            .iter()
            .filter(|a| metric_value(&m, &node_series("redguard_redis_node_up", a)) == 1.0)
            .count();
        (own == 2 && metric_value(&m, &node_series("redguard_redis_node_up", "other")) == 1.0).then_some(m)
    });
    let labelled = m.lines().filter(|l| l.starts_with("redguard_redis_node_up{")).count();
    assert_eq!(labelled, 3, "two addresses and \"other\":\n{m}");
    // The JSON view is bounded by the same limit.
    let nodes = node_states(&rg.breaker());
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(
        nodes.iter().all(|(a, s)| addrs.contains(a) && s == "closed"),
        "{nodes:?}"
    );
    assert!(nodes[0].0 < nodes[1].0, "sorted by address: {nodes:?}");
    assert_eq!(
        call(&rg, json!({"op": "set", "key": "k", "value": "v"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    for node in &mut cluster.nodes {
        node.kill();
    }
    // With no master left, failures are Redis's, not one shard's: the sidecar-wide breaker opens.
    wait_for("the sidecar circuit to open", Duration::from_secs(15), || {
        let (status, body) = call(&rg, json!({"op": "get", "key": "k"}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], "v", "{body}");
        (rg.breaker_state() == "open").then_some(())
    });
    let (status, body) = call(&rg, json!({"op": "set", "key": "k", "value": "w"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("circuit_open")),
        "{body}"
    );
    let m = rg.metrics();
    assert_eq!(
        metric_value(&m, &node_series("redguard_redis_node_up", "other")),
        0.0,
        "{m}"
    );
    assert!(
        metric_value(&m, &node_series("redguard_redis_node_failures_total", "other")) >= 1.0,
        "{m}"
    );
}

#[test]
fn a_cluster_over_tls() {
    let certs = Certs::generate();
    let cluster = RedisCluster::start_tls(3, &certs);
    let yaml = format!(
        "redis:\n  mode: cluster\n  nodes: [{}]\n  tls:\n    ca_file: {}\n",
        cluster.seeds().join(", "),
        certs.path_str("ca.crt")
    );
    assert!(yaml.contains("rediss://"), "{yaml}");
    let (rg, resp, _dir) = Redguard::start_with_resp("redis://127.0.0.1:1", &yaml);
    every_master_seen_up(&rg, &cluster);
    a_blocking_pop_on_every_master(&resp, &cluster, "tls");
    a_shard_subscription_on_every_master(&resp, &cluster, "tls");
    let keys: Vec<String> = (0..30).map(|i| format!("tls:{i}")).collect();
    let owners = cluster.owners_of(&keys);
    assert!((0..3).all(|n| owners.contains(&n)), "{owners:?}");
    for (key, &owner) in keys.iter().zip(&owners) {
        assert_eq!(
            call(&rg, json!({"op": "set", "key": key, "value": "x"})),
            (200, json!({"result": true, "source": "redis"}))
        );
        assert_eq!(cluster.nodes[owner].must(&["GET", key]), "x");
    }
}

#[test]
fn pipelines_run_on_the_node_of_their_slot_and_cross_slot_ones_are_refused() {
    let cluster = RedisCluster::start(3);
    let rg = Redguard::start("redis://127.0.0.1:1", &config(&cluster.seeds()));
    wait_for(
        "the cluster to answer through redguard",
        Duration::from_secs(15),
        || (call(&rg, json!({"op": "ping"})).0 == 200).then_some(()),
    );
    // Hash tags put both keys in one slot: a transaction on them runs on their node.
    let same_slot = json!({"atomic": true, "commands": [
        {"op": "set", "key": "{user:1}:name", "value": "ada"},
        {"op": "incr", "key": "{user:1}:visits"},
        {"op": "get", "key": "{user:1}:name"},
    ]});
    let r = common::http(&rg.socket, "POST", "/v1/pipeline", &same_slot.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let results: Vec<Value> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].clone())
        .collect();
    assert_eq!(results, vec![json!(true), json!(1), json!("ada")]);
    // Keys in different slots cannot share one round trip to one node: a clear 400, nothing sent.
    let cross = json!({"commands": [{"op": "get", "key": "a"}, {"op": "get", "key": "b"}]});
    let r = common::http(&rg.socket, "POST", "/v1/pipeline", &cross.to_string());
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "bad_request");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("share one slot"), "{message}");
    assert_eq!(
        rg.breaker_state(),
        "closed",
        "a refused pipeline is not a failure of Redis"
    );
    // A script's slot is its declared key's, not its text's; a stream read's is the stream's, after STREAMS.
    let get = "return redis.call('GET', KEYS[1])";
    let keyed = json!({"commands": [
        {"op": "eval", "script": get, "keys": ["{user:1}:name"]},
        {"args": ["EVAL", get, "1", "{user:1}:name"]},
        {"args": ["XADD", "{user:1}:events", "*", "f", "v"]},
        {"args": ["XREAD", "COUNT", "1", "STREAMS", "{user:1}:events", "0"]},
        {"op": "get", "key": "{user:1}:name"},
    ]});
    let r = common::http(&rg.socket, "POST", "/v1/pipeline", &keyed.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].clone();
    assert_eq!(results[0]["result"], "ada", "{results}");
    assert_eq!(results[1]["result"], "ada", "{results}");
    assert!(results[3]["result"].is_array(), "{results}");
    assert_eq!(results[4]["result"], "ada", "{results}");
}

/// What redis-cli prints for `args` on 127.0.0.1:`port` without any credentials.
fn anonymous_cli(port: u16, args: &[&str]) -> String {
    let out = common::output_within(
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        "redis-cli",
        common::TOOL_LIMIT,
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A cluster whose nodes accept only the ACL user `app` (the default user is off). redguard, given one seed,
/// `redis.username` and a password file, authenticates as `app` on every master, including the two it only
/// learns from the slot map and the one a MOVED sends it to; with a wrong password it starts degraded and
/// prints the password nowhere.
#[test]
fn a_cluster_with_an_acl_user_and_a_password_file() {
    const PASSWORD: &str = "app-pw-3d8e51";
    let cluster = RedisCluster::start_with(
        3,
        ClusterOptions {
            acl_user: Some(("app", PASSWORD)),
            ..ClusterOptions::default()
        },
    );
    // The default user is really off: a client without credentials is refused on every node, and the
    // helpers (which assembled the cluster) are `app`.
    for node in &cluster.nodes {
        let refused = anonymous_cli(node.port, &["GET", "k"]);
        assert!(refused.starts_with("NOAUTH"), "node {}: {refused:?}", node.port);
        assert_eq!(node.must(&["ACL", "WHOAMI"]), "app");
    }

    let dir = tempfile::tempdir().unwrap();
    let pw = write_file(dir.path(), "pw", &format!("{PASSWORD}\n"));
    let acl = |seeds: &[String], pw: &std::path::Path| {
        config(seeds).replace(
            "mode: cluster\n",
            &format!("mode: cluster\n  username: app\n  password_file: {}\n", pw.display()),
        )
    };
    // One seed: the other two masters are known only from CLUSTER SLOTS, so redguard's connections to them
    // are opened by the cluster client itself (and by the per-node health checks), not from the seed URL.
    let seed = cluster.seeds()[..1].to_vec();
    let (rg, resp, _resp_dir) = Redguard::start_with_resp("redis://127.0.0.1:1", &acl(&seed, &pw));
    every_master_seen_up(&rg, &cluster);
    a_blocking_pop_on_every_master(&resp, &cluster, "acl");
    a_shard_subscription_on_every_master(&resp, &cluster, "acl");

    // Keys on all three shards are written and read through Redis, and are on their slot's master.
    let keys: Vec<String> = (0..60).map(|i| format!("acl:{i}")).collect();
    let owners = cluster.owners_of(&keys);
    assert!((0..3).all(|n| owners.contains(&n)), "{owners:?}");
    for (key, &owner) in keys.iter().zip(&owners) {
        let value = format!("v-{key}");
        assert_eq!(
            call(&rg, json!({"op": "set", "key": key, "value": value})),
            (200, json!({"result": true, "source": "redis"})),
            "{key}; log:\n{}",
            rg.log()
        );
        assert_eq!(
            cluster.nodes[owner].must(&["GET", key]),
            value,
            "{key} is on its slot's master"
        );
        assert_eq!(
            call(&rg, json!({"op": "get", "key": key})),
            (200, json!({"result": value, "source": "redis"})),
            "{key}"
        );
    }

    // Move an empty slot to another master behind redguard's back: its next write there is answered MOVED by
    // the old owner and follows the redirect to the new one, as `app` too.
    let moved_key = "moved:1".to_owned();
    let slot = cluster.key_slots(std::slice::from_ref(&moved_key))[0];
    assert!(
        !cluster.key_slots(&keys).contains(&slot),
        "slot {slot} must hold none of the keys written"
    );
    let from = cluster.owners_of(std::slice::from_ref(&moved_key))[0];
    let to = (from + 1) % 3;
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.must(&["CLUSTER", "MYID"])).collect();
    let slot_s = slot.to_string();
    cluster.nodes[to].must(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &ids[from]]);
    cluster.nodes[from].must(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &ids[to]]);
    for n in [to, from, 3 - to - from] {
        cluster.nodes[n].must(&["CLUSTER", "SETSLOT", &slot_s, "NODE", &ids[to]]);
    }
    wait_for("every node to agree on the moved slot", Duration::from_secs(10), || {
        (0..3)
            .all(|via| cluster.owners_of_via(via, std::slice::from_ref(&moved_key)) == [to])
            .then_some(())
    });
    let moved_before = redirect_errors(&cluster.nodes[from].must(&["INFO", "errorstats"]), "MOVED");
    assert_eq!(
        call(&rg, json!({"op": "set", "key": moved_key, "value": "redirected"})),
        (200, json!({"result": true, "source": "redis"})),
        "log:\n{}",
        rg.log()
    );
    assert_eq!(cluster.nodes[to].must(&["GET", &moved_key]), "redirected");
    assert!(
        redirect_errors(&cluster.nodes[from].must(&["INFO", "errorstats"]), "MOVED") > moved_before,
        "the write went to the old owner first and was redirected"
    );

    // A slot in the middle of a migration: the old owner answers ASK for a key it does not hold, and redguard
    // (redis-rs) sends the command to the importing node with ASKING, for the write and for the read back.
    let ask_key = (0..1000)
        .map(|n| format!("ask:{n}"))
        .find(|k| {
            let s = cluster.key_slots(std::slice::from_ref(k))[0];
            s != slot && !cluster.key_slots(&keys).contains(&s)
        })
        .expect("a free slot among 1,000 keys");
    let ask_slot = cluster.key_slots(std::slice::from_ref(&ask_key))[0].to_string();
    let from = cluster.owners_of(std::slice::from_ref(&ask_key))[0];
    let to = (from + 1) % 3;
    cluster.nodes[to].must(&["CLUSTER", "SETSLOT", &ask_slot, "IMPORTING", &ids[from]]);
    cluster.nodes[from].must(&["CLUSTER", "SETSLOT", &ask_slot, "MIGRATING", &ids[to]]);
    let asked_before = redirect_errors(&cluster.nodes[from].must(&["INFO", "errorstats"]), "ASK");
    assert_eq!(
        call(&rg, json!({"op": "set", "key": ask_key, "value": "asked"})),
        (200, json!({"result": true, "source": "redis"})),
        "log:\n{}",
        rg.log()
    );
    assert_eq!(
        call(&rg, json!({"op": "get", "key": ask_key})),
        (200, json!({"result": "asked", "source": "redis"}))
    );
    let count = |n: usize| cluster.nodes[n].must(&["CLUSTER", "COUNTKEYSINSLOT", &ask_slot]);
    assert_eq!(
        (count(from), count(to)),
        ("0".to_owned(), "1".to_owned()),
        "the key is on the importing node"
    );
    assert!(
        redirect_errors(&cluster.nodes[from].must(&["INFO", "errorstats"]), "ASK") >= asked_before + 2,
        "the write and the read were both asked over"
    );

    // Every client connection on every node (but this CLIENT LIST's own) is redguard's, and it is `app`.
    for node in &cluster.nodes {
        let clients = node.must(&["CLIENT", "LIST"]);
        let others: Vec<&str> = clients.lines().filter(|l| !l.contains("cmd=client")).collect();
        assert!(
            !others.is_empty(),
            "no redguard connection on {}:\n{clients}",
            node.addr()
        );
        assert!(
            others.iter().all(|l| l.contains(" user=app ")),
            "node {}:\n{clients}",
            node.addr()
        );
    }
    assert!(!rg.log().contains(PASSWORD), "the password leaked:\n{}", rg.log());
    drop(rg);

    // A wrong password: redguard starts, says which settings to check, serves degraded, and never shows the
    // password.
    let secret = "not-the-pw-58c2e0";
    let wrong = write_file(dir.path(), "wrong-pw", secret);
    let rg = Redguard::start("redis://127.0.0.1:1", &acl(&cluster.seeds(), &wrong));
    let line = rg.startup_error_line();
    assert!(line.contains("authentication failed"), "{line}");
    assert!(line.contains(r#"username="app""#), "{line}");
    assert!(line.contains("check redis.username and the password"), "{line}");
    let (status, body) = call(&rg, json!({"op": "get", "key": keys[0]}));
    assert_eq!(
        (status, &body),
        (200, &json!({"result": null, "source": "default", "degraded": true})),
        "{body}"
    );
    let (status, set_body) = call(&rg, json!({"op": "set", "key": "refused", "value": "v"}));
    assert_eq!(status, 503, "{set_body}");
    let owner = cluster.owners_of(&["refused".to_owned()])[0];
    assert_eq!(cluster.nodes[owner].must(&["EXISTS", "refused"]), "0");
    let emitted = [
        rg.log(),
        body.to_string(),
        set_body.to_string(),
        rg.metrics(),
        rg.breaker().to_string(),
    ];
    for text in emitted {
        assert!(!text.contains(secret), "the password leaked:\n{text}");
    }
}

/// `errorstat_<KIND>:count=N` of an INFO errorstats answer, for MOVED or ASK (0 when none was answered yet).
fn redirect_errors(info: &str, kind: &str) -> u64 {
    info_field(info, &format!("errorstat_{kind}"))
        .and_then(|v| v.strip_prefix("count=")?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Issue 21: a value read from a key with a TTL is not served from the fallback after the key expired in Redis,
/// in cluster mode too (the read and its PTTL go to the key's node).
#[test]
fn a_key_that_expired_in_redis_is_not_served_from_the_cache() {
    let cluster = RedisCluster::start(3);
    let rg = Redguard::start("redis://127.0.0.1:1", &config(&cluster.seeds()));
    every_master_seen_up(&rg, &cluster);
    let keys: Vec<String> = ["token", "{u:1}:a", "{u:1}:b", "plain"].map(String::from).to_vec();
    let owners = cluster.owners_of(&keys);
    cluster.nodes[owners[0]].must(&["SET", "token", "t", "PX", "3000"]);
    cluster.nodes[owners[1]].must(&["SET", "{u:1}:a", "a", "PX", "3000"]);
    cluster.nodes[owners[2]].must(&["SET", "{u:1}:b", "b"]);
    cluster.nodes[owners[3]].must(&["SET", "plain", "p"]);
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "token"})),
        (200, json!({"result": "t", "source": "redis"}))
    );
    assert_eq!(
        call(&rg, json!({"op": "mget", "keys": ["{u:1}:a", "{u:1}:b"]})),
        (200, json!({"result": ["a", "b"], "source": "redis"}))
    );
    assert_eq!(call(&rg, json!({"op": "get", "key": "plain"})).1["source"], "redis");
    wait_for("Redis to expire the keys", Duration::from_secs(20), || {
        let gone = |i: usize| cluster.nodes[owners[i]].must(&["EXISTS", &keys[i]]) == "0";
        (gone(0) && gone(1)).then_some(())
    });
    assert_eq!(rg.control("force_open").status, 200);
    let (_, token) = call(&rg, json!({"op": "get", "key": "token"}));
    assert_eq!(token["source"], "default", "served after its key expired: {token}");
    let (_, mget) = call(&rg, json!({"op": "mget", "keys": ["{u:1}:a", "{u:1}:b"]}));
    assert_eq!(mget["sources"], json!(["default", "cache"]), "{mget}");
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "plain"})),
        (200, json!({"result": "p", "source": "cache", "degraded": true}))
    );
}
