//! Redis client libraries no one here wrote, unmodified and with default options, through the RESP socket:
//! redis-py (sync and asyncio) and ioredis. Each script (`tests/clients/`) runs against the real binary and a
//! real redis-server, and takes turns with this test: it asks for Redis to be killed (then checks that cached
//! reads are answered and writes get the circuit-open error), then for Redis to be restarted (then checks that
//! the same client objects work again). Installed by scripts/install-test-deps.sh.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{wait_for, Redguard, RedisServer};

use common::QUICK_BREAKER as CONFIG;

/// Runs `program args.. <resp socket>` and plays Redis's part when it asks.
fn drive(program: &str, args: &[&str]) {
    let mut redis = RedisServer::start();
    let (rg, resp, _dir) = Redguard::start_with_resp(&redis.url(), CONFIG);
    let mut child = Command::new(program)
        .args(args)
        .arg(&resp)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/install-test-deps.sh): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    // The script ends every run with `done`, or exits early (a failed assert) and its stderr tells why.
    while let Some(Ok(line)) = lines.next() {
        said.push(line.clone());
        match line.as_str() {
            "killed?" => redis.kill(),
            "restarted?" => {
                redis.restart();
                wait_for("the circuit to close", Duration::from_secs(15), || {
                    (rg.breaker_state() == "closed").then_some(())
                });
            }
            _ => continue,
        }
        writeln!(stdin, "ok").unwrap();
    }
    let out = common::wait_within(child, "the client script", Duration::from_secs(120));
    assert!(
        out.status.success() && said.last().map(String::as_str) == Some("done"),
        "{program} failed; it said {said:?}; stderr:\n{}\nredguard log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rg.log()
    );
    assert_eq!(said, ["killed?", "restarted?", "done"]);
}

#[test]
fn redis_py_sync_and_asyncio_with_default_options() {
    drive("python3", &["redis_py.py"]);
}

#[test]
fn ioredis_with_default_options() {
    drive("node", &["ioredis.js"]);
}
