//! Sentinel mode against one master, one replica and three sentinels on loopback: the master is killed, the
//! sentinels promote the replica, and redguard follows it, over plain TCP and over TLS with an ACL user.

mod common;

use std::time::{Duration, Instant};

use common::topology::{info_field, write_file, Certs, SentinelGroup, SentinelOptions, MASTER_NAME};
use common::{wait_for, Redguard};
use serde_json::{json, Value};

fn call(rg: &Redguard, body: Value) -> (u16, Value) {
    let r = rg.cmd(&body.to_string());
    (r.status, r.json())
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

    assert_eq!(
        call(&rg, json!({"op": "set", "key": "before", "value": "1"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    assert_eq!(
        group.master.must(&["GET", "before"]),
        "1",
        "written to the first master"
    );

    let replica_addr = group.replica.addr();
    group.master.kill();
    let killed = Instant::now();

    // Writes fail (or are refused by the open circuit) until the sentinels have promoted the replica; then
    // they reach it through redguard.
    let mut attempts = 0;
    wait_for(
        "a write through redguard to succeed after the failover",
        Duration::from_secs(40),
        || {
            attempts += 1;
            let (status, body) = call(&rg, json!({"op": "set", "key": "after", "value": "2"}));
            (status == 200 && body["source"] == "redis").then_some(())
        },
    );
    assert!(attempts > 1, "the first write after the kill cannot have succeeded");
    eprintln!("failover followed after {:?}", killed.elapsed());

    assert_eq!(group.master_addr().as_deref(), Some(replica_addr.as_str()));
    let role = group.replica.must(&["INFO", "replication"]);
    assert_eq!(info_field(&role, "role").as_deref(), Some("master"), "{role}");
    assert_eq!(
        group.replica.must(&["GET", "after"]),
        "2",
        "the value landed on the new master"
    );
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "before"})),
        (200, json!({"result": "1", "source": "redis"})),
        "replicated data is read from the new master"
    );
    assert!(rg.log().contains("the master moved"), "{}", rg.log());
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
            .any(|l| l.contains(" user=app ") && l.contains("cmd=get")),
        "redguard's connection is the ACL user's: {clients}"
    );

    let replica_addr = group.replica.addr();
    group.master.kill();
    let killed = Instant::now();
    let mut attempts = 0;
    wait_for(
        "a write through redguard to reach the promoted replica",
        Duration::from_secs(40),
        || {
            attempts += 1;
            let (status, body) = call(&rg, json!({"op": "set", "key": "after", "value": "2"}));
            (status == 200 && body["source"] == "redis").then_some(())
        },
    );
    assert!(attempts > 1, "the first write after the kill cannot have succeeded");
    eprintln!("TLS failover followed after {:?}", killed.elapsed());

    assert_eq!(group.master_addr().as_deref(), Some(replica_addr.as_str()));
    let role = group.replica.must(&["INFO", "replication"]);
    assert_eq!(info_field(&role, "role").as_deref(), Some("master"), "{role}");
    assert_eq!(
        group.replica.must(&["GET", "after"]),
        "2",
        "the value landed on the new master"
    );
    assert_eq!(
        call(&rg, json!({"op": "get", "key": "before"})),
        (200, json!({"result": "1", "source": "redis"})),
        "replicated data is read from the new master"
    );
    assert!(rg.log().contains("the master moved"), "{}", rg.log());
    assert!(!rg.log().contains("app-pw-5c1e"), "the password leaked:\n{}", rg.log());
}
