//! SIGTERM under load: requests in flight when the signal arrives finish with a real answer, later clients get
//! a clear connection error, and redguard exits 0 within the drain timeout with its socket removed. SIGHUP does
//! not stop it (it reloads the config: tests/reload.rs), and stopping removes only the socket redguard created, never another instance's.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, Redguard, RedisServer};

/// What one client saw for one request.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Seen {
    /// A complete HTTP response with this status.
    Answer(u16),
    /// The socket was gone or refused: the request was never sent.
    Refused,
    /// Accepted by the kernel but closed before any byte of an answer: redguard never read the request.
    ClosedUnanswered,
}

fn one_request(socket: &std::path::Path) -> Seen {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => return Seen::Refused,
        Err(e) => panic!("unexpected connect error {e:?}"),
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"op":"get","key":"k"}"#;
    let req = format!(
        "POST /v1/cmd HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(req.as_bytes()).is_err() {
        return Seen::ClosedUnanswered;
    }
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) if raw.is_empty() => Seen::ClosedUnanswered,
        Err(e) if e.kind() == ErrorKind::ConnectionReset && raw.is_empty() => Seen::ClosedUnanswered,
        Ok(_) => {
            let text = String::from_utf8_lossy(&raw);
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status line");
            let (_, body) = text
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("truncated answer: {text:?}"));
            serde_json::from_str::<serde_json::Value>(body)
                .unwrap_or_else(|e| panic!("truncated body ({e}): {text:?}"));
            Seen::Answer(status)
        }
        Err(e) => panic!("answer cut off after {} bytes: {e:?}", raw.len()),
    }
}

#[test]
fn sigterm_under_load_finishes_in_flight_requests_and_exits_zero() {
    let redis = RedisServer::start();
    let mut rg = Redguard::start(&redis.url(), "redis:\n  command_timeout: 300ms\n");
    assert_eq!(rg.cmd(r#"{"op":"set","key":"k","value":"v"}"#).status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (socket, stop) = (rg.socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // Bounded: at most 10,000 requests per client, and they stop once the server is gone.
                for _ in 0..10_000 {
                    let s = one_request(&socket);
                    seen.push(s);
                    if s == Seen::Refused || stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                seen
            })
        })
        .collect();

    // Let load build, then freeze Redis so requests are mid-flight (waiting on Redis) when the signal lands.
    wait_for("some answers", Duration::from_secs(10), || {
        (rg.metric(r#"redguard_calls_total{result="success"}"#) > 50.0).then_some(())
    });
    redis.pause();
    std::thread::sleep(Duration::from_millis(50)); // pacing the scenario: requests pile up on the frozen Redis
    let signalled = Instant::now();
    rg.sigterm();
    let code = rg.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    redis.resume();

    let seen: Vec<Seen> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM (drain_timeout 5s)"
    );
    assert!(!rg.socket.exists(), "socket removed");
    let answers: Vec<u16> = seen
        .iter()
        .filter_map(|s| if let Seen::Answer(c) = s { Some(*c) } else { None })
        .collect();
    assert!(answers.len() > 50, "{} answers", answers.len());
    // In-flight requests on a frozen Redis finish as timeouts served from the cache (200) — never a 5xx
    // other than the documented ones, never a cut-off answer (one_request panics on those).
    assert!(answers.iter().all(|c| [200, 503, 504].contains(c)), "{answers:?}");
    let refused = seen.iter().filter(|s| **s == Seen::Refused).count();
    assert!(refused >= 1, "clients that came after the shutdown were refused");
}

/// A redguard started by hand on a given config, killed on drop.
struct Instance(std::process::Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stopping_one_instance_leaves_the_socket_of_another_on_the_same_path() {
    let redis = RedisServer::start();
    let mut a = Redguard::start(&redis.url(), "");
    // A's socket file goes away (an operator's `rm`), and B starts on the same path.
    std::fs::remove_file(&a.socket).unwrap();
    let config = a.dir.path().join("b.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  socket: {}\nadmin:\n  listen: 127.0.0.1:{}\nredis:\n  url: {}\n",
            a.socket.display(),
            common::free_port(),
            redis.url()
        ),
    )
    .unwrap();
    let mut b = Instance(
        std::process::Command::new(env!("CARGO_BIN_EXE_redguard"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("B to listen", Duration::from_secs(10), || {
        UnixStream::connect(&a.socket).ok()
    });

    a.sigterm();
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(a.socket.exists(), "A left B's socket in place");
    assert_eq!(
        common::http(&a.socket, "POST", "/v1/cmd", r#"{"op":"ping"}"#).status,
        200,
        "B is still reachable on its socket"
    );
    assert!(
        a.log()
            .contains("the socket file is no longer the one this process created"),
        "A says why it left the file:\n{}",
        a.log()
    );

    // B, stopped in turn, removes its own socket.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(b.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_for("B to exit", Duration::from_secs(10), || b.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
    assert!(!a.socket.exists(), "B removed its own socket");
}

#[test]
fn sighup_reloads_sigusr_is_ignored_and_sigterm_still_drains() {
    let redis = RedisServer::start();
    let mut rg = Redguard::start(&redis.url(), "");
    let signals = [
        (libc::SIGHUP, "config reloaded: nothing changed"),
        (libc::SIGHUP, "config reloaded: nothing changed"),
        (libc::SIGUSR1, "SIGUSR1 has no meaning for redguard; ignored"),
        (libc::SIGUSR2, "SIGUSR2 has no meaning for redguard; ignored"),
    ];
    for (i, (sig, line)) in signals.into_iter().enumerate() {
        let before = rg.log().matches(line).count();
        // SAFETY: kill(2) on the redguard child this test owns.
        unsafe { libc::kill(rg.pid() as libc::pid_t, sig) };
        wait_for(line, Duration::from_secs(10), || {
            (rg.log().matches(line).count() == before + 1).then_some(())
        });
        assert_eq!(rg.cmd(r#"{"op":"ping"}"#).status, 200, "still serving after signal {i}");
    }
    rg.sigterm();
    assert_eq!(rg.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!rg.socket.exists(), "socket removed on shutdown");
    assert!(rg.log().contains("redguard stopped"), "{}", rg.log());
}
