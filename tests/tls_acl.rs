//! TLS (rustls, `rediss://`), mutual TLS and ACL users against real redis-server processes on loopback, with
//! certificates made by the test with the openssl CLI.

mod common;

use std::time::Duration;

use common::topology::{write_file, Certs};
use common::{wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

fn call(rg: &Redguard, body: Value) -> (u16, Value) {
    let r = rg.cmd(&body.to_string());
    (r.status, r.json())
}

fn tls_url(server: &RedisServer) -> String {
    format!("rediss://127.0.0.1:{}", server.port)
}

fn round_trip(rg: &Redguard, server: &RedisServer) {
    // The first TLS handshake (debug build) may take longer than one command timeout: wait for the start-up
    // check to have connected.
    wait_for("redguard to reach Redis", Duration::from_secs(10), || {
        let (status, body) = call(rg, json!({"op": "ping"}));
        (status == 200 && body["source"] == "redis").then_some(())
    });
    assert_eq!(
        call(rg, json!({"op": "set", "key": "k", "value": "over tls"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    assert_eq!(server.must(&["GET", "k"]), "over tls");
    assert_eq!(
        call(rg, json!({"op": "get", "key": "k"})),
        (200, json!({"result": "over tls", "source": "redis"}))
    );
}

/// A read that Redis could not serve: answered with the caller's default.
fn degraded(rg: &Redguard) {
    let (status, body) = call(rg, json!({"op": "get", "key": "k"}));
    assert_eq!((status, body["source"].as_str()), (200, Some("default")), "{body}");
}

#[test]
fn tls_with_a_private_ca() {
    let certs = Certs::generate();
    let server = certs.redis_server(false);
    let yaml = format!("redis:\n  tls:\n    ca_file: {}\n", certs.path_str("ca.crt"));
    let rg = Redguard::start(&tls_url(&server), &yaml);
    round_trip(&rg, &server);

    // Without the CA the server's certificate is not trusted: the verification is real.
    let untrusted = Redguard::start(&tls_url(&server), "");
    degraded(&untrusted);
    // And plain TCP to a TLS port is not Redis either.
    let plain = Redguard::start(&format!("redis://127.0.0.1:{}", server.port), "");
    degraded(&plain);
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let certs = Certs::generate();
    let server = certs.redis_server(true);
    let yaml = format!(
        "redis:\n  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        certs.path_str("ca.crt"),
        certs.path_str("client.crt"),
        certs.path_str("client.key")
    );
    let rg = Redguard::start(&tls_url(&server), &yaml);
    round_trip(&rg, &server);

    // The same server refuses a client without a certificate.
    let yaml = format!("redis:\n  tls:\n    ca_file: {}\n", certs.path_str("ca.crt"));
    let anonymous = Redguard::start(&tls_url(&server), &yaml);
    degraded(&anonymous);
}

/// A Redis whose default user is off; `app` / `pw` may do everything.
fn acl_server() -> RedisServer {
    let mut server = RedisServer::plain(&[]);
    server.must(&["ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all"]);
    server.must(&["ACL", "SETUSER", "default", "off"]);
    server.cli_flags = ["--user", "app", "--pass", "pw"].map(String::from).to_vec();
    assert_eq!(server.must(&["ACL", "WHOAMI"]), "app");
    server
}

#[test]
fn an_acl_user_with_a_password_file() {
    let server = acl_server();
    let dir = tempfile::tempdir().unwrap();
    let pw = write_file(dir.path(), "pw", "pw\n");
    let yaml = format!("redis:\n  username: app\n  password_file: {}\n", pw.display());
    let rg = Redguard::start(&server.url(), &yaml);
    assert_eq!(
        call(&rg, json!({"op": "set", "key": "k", "value": "v"})),
        (200, json!({"result": true, "source": "redis"}))
    );
    assert_eq!(server.must(&["GET", "k"]), "v");
    let clients = server.must(&["CLIENT", "LIST"]);
    assert!(
        clients
            .lines()
            .filter(|l| !l.contains("cmd=client"))
            .all(|l| l.contains(" user=app ")),
        "{clients}"
    );

    // The URL's user:pass works too.
    let via_url = Redguard::start(&format!("redis://app:pw@127.0.0.1:{}", server.port), "");
    assert_eq!(
        call(&via_url, json!({"op": "get", "key": "k"})),
        (200, json!({"result": "v", "source": "redis"}))
    );
}

#[test]
fn a_wrong_password_is_logged_clearly_and_redguard_starts_degraded() {
    let server = acl_server();
    let dir = tempfile::tempdir().unwrap();
    let secret = "not-the-pw-7f3a91";
    let pw = write_file(dir.path(), "pw", secret);
    let yaml = format!("redis:\n  username: app\n  password_file: {}\n", pw.display());
    let rg = Redguard::start(&server.url(), &yaml);
    let line = rg.startup_error_line();
    assert!(line.contains("authentication failed"), "{line}");
    assert!(line.contains(r#"username="app""#), "{line}");
    assert!(line.contains("check redis.username and the password"), "{line}");
    assert!(!rg.log().contains(secret), "the password leaked:\n{}", rg.log());

    // Degraded, not dead: reads get the default, writes a clear 503, and the process serves.
    degraded(&rg);
    let (status, body) = call(&rg, json!({"op": "set", "key": "k", "value": "v"}));
    assert_eq!(status, 503, "{body}");
    assert!(!body.to_string().contains(secret), "{body}");
    assert_eq!(server.cli(&["EXISTS", "k"]).as_deref(), Some("0"));
}

#[test]
fn a_missing_tls_file_stops_redguard_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "redguard.yaml",
        "redis:\n  url: rediss://127.0.0.1:1\n  tls:\n    ca_file: /nonexistent/ca.crt\n",
    );
    let socket = dir.path().join("rg.sock");
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_redguard"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("REDGUARD_LISTEN_SOCKET", &socket)
            .env("REDGUARD_ADMIN_LISTEN", format!("127.0.0.1:{}", common::free_port())),
        "redguard",
        common::TOOL_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "an invalid configuration: {stderr}");
    assert!(
        stderr.contains("cannot read redis.tls.ca_file /nonexistent/ca.crt"),
        "{stderr}"
    );
    // The pre-flight check reads the files, so `check-config` refuses it alike.
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_redguard"))
            .args(["check-config", config.to_str().unwrap()])
            .env("REDGUARD_LISTEN_SOCKET", &socket),
        "redguard",
        common::TOOL_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("cannot read redis.tls.ca_file /nonexistent/ca.crt"),
        "{stderr}"
    );
}

/// The start-up log names the user the connection really uses: the one in the URL when `redis.username` is not
/// set (it was logged as `username=""`), and Redis's `default` user when neither names one.
#[test]
fn the_log_names_the_effective_user() {
    let server = acl_server();
    let secret = "wrong-pw-c41e";
    let rg = Redguard::start(&format!("redis://app:{secret}@127.0.0.1:{}", server.port), "");
    let line = rg.startup_error_line();
    assert!(line.contains(r#"username="app""#), "{line}");
    assert!(!rg.log().contains(secret), "the password leaked:\n{}", rg.log());

    let rg = Redguard::start(&format!("redis://:{secret}@127.0.0.1:{}", server.port), "");
    let line = rg.startup_error_line();
    assert!(line.contains(r#"username="default""#), "{line}");

    let ok = Redguard::start(&format!("redis://app:pw@127.0.0.1:{}", server.port), "");
    let line = wait_for("the connected line", Duration::from_secs(10), || {
        ok.log()
            .lines()
            .find(|l| l.contains("connected to Redis"))
            .map(str::to_owned)
    });
    assert!(
        line.contains("username=app") || line.contains(r#"username="app""#),
        "{line}"
    );
}
