//! Fixtures for tests that start real things: a `redis-server` on a free loopback port (which a test
//! may kill, pause and restart), the real `redguard` binary with its socket in a temp dir, a minimal
//! HTTP/1.1 client over that socket (raw, so tests can also send malformed requests), and recording HTTP
//! sinks for notifications ([`sink`]).
//!
//! Every wait polls a condition with a deadline; every process is killed on drop.

#![allow(dead_code, unreachable_pub)]

pub mod faults;
pub mod monitoring;
mod redis_server;
pub mod sink;
pub mod topology;

pub use redis_server::RedisServer;

/// Breaker timings short enough that an outage opens the circuit, and a restarted Redis closes it, within a
/// test (the RESP socket's tests and the client libraries' share them).
pub const QUICK_BREAKER: &str = "\
redis:
  command_timeout: 200ms
breaker:
  failure_threshold: 2
  recovery_timeout: 300ms
  recovery_jitter: 0
  recovery_timeout_max: 1s
";

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// What `redis-cli -s <socket> args..` prints (the RESP socket, as an application would use it).
pub fn resp_cli(socket: &std::path::Path, args: &[&str]) -> String {
    let out = output_within(
        Command::new("redis-cli").arg("-s").arg(socket).args(args),
        "redis-cli",
        TOOL_LIMIT,
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// How long a short run of an external tool (a redis-cli command) may take before the test fails.
pub const TOOL_LIMIT: Duration = Duration::from_secs(30);

/// Waits for `child`, an external tool (redis-cli, redis-benchmark, a client library's script), to exit, and
/// returns its output as `wait_with_output` gives it; past `limit` the child is killed and the test fails with
/// what it printed. A tool waiting on a redguard (or a Redis) that stopped answering must fail its test, not
/// hang CI: redis-cli and redis-benchmark have no read timeout of their own.
pub fn wait_within(child: Child, what: &str, limit: Duration) -> Output {
    let pid = child.id();
    let (done, exited) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done.send(());
        out
    });
    let in_time = exited.recv_timeout(limit).is_ok();
    if !in_time {
        // SAFETY: plain kill(2) on a child not yet reaped (its waiter has not returned).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let out = waiter.join().expect("the waiting thread").expect("the child's output");
    assert!(
        in_time,
        "{what} did not exit within {limit:?}; it printed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `command`'s output, as `Command::output` gives it (stdin closed, stdout and stderr captured), within `limit`
/// (see [`wait_within`]).
pub fn output_within(command: &mut Command, what: &str, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} runs (scripts/install-test-deps.sh installs it): {e}"));
    wait_within(child, what, limit)
}

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(20));
    }
}

/// A loopback port for a server a test starts (redis-server, its cluster bus, Prometheus, redguard's admin
/// listener), free when handed out and handed out once per test process.
///
/// Not `bind(127.0.0.1:0)`: that port is free again as soon as the probe closes, and it lies in the kernel's
/// ephemeral range, which every outgoing connection on the machine draws its local port from. By the time
/// redis-server binds it (or binds it again after a restart), a client socket may hold it; CI lost a cluster
/// bus port that way. So ports come from below that range, where the kernel hands out nothing: a counter
/// shared by the test threads, starting at a point drawn from the pid so that two test processes on one
/// machine rarely meet, and each port is probed before it is handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = below_ephemeral_range();
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919) % span;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = (low + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// The ports tests draw from: the 12,000 below the kernel's ephemeral range (`ip_local_port_range`, 32768 by
/// default), and never below 1024.
fn below_ephemeral_range() -> (u32, u32) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let high = first_ephemeral.max(1024 + 2_000);
    (high.saturating_sub(12_000).max(1024), high)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a child we own.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// An HTTP response from redguard.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes on a fresh connection and reads the response until the server closes it.
pub fn raw_request(socket: &Path, request: &[u8]) -> Response {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response within 10 s");
    parse_response(&raw)
}

/// Parses a raw HTTP/1.1 response (head and body, chunked or not).
pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Response { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn http(socket: &Path, method: &str, path: &str, body: &str) -> Response {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: redguard\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(socket, req.as_bytes())
}

/// A GET over plain TCP (the admin listener).
pub fn http_tcp(addr: SocketAddr, path: &str) -> Response {
    try_http_tcp(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// A GET over plain TCP, or the error if the server cannot be reached.
pub fn try_http_tcp(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: redguard\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

/// The real redguard binary, with its own socket and config in a temp dir.
pub struct Redguard {
    pub socket: PathBuf,
    pub admin: SocketAddr,
    pub dir: TempDir,
    child: Option<Child>,
}

impl Redguard {
    /// Starts redguard on `redis_url` with `yaml` as its config file. The socket (in a temp dir), the admin
    /// address (a free port), the drain timeout and the Redis URL come from `REDGUARD_*` environment overrides,
    /// so `yaml` may hold any sections. Waits until the socket answers.
    pub fn start(redis_url: &str, yaml: &str) -> Redguard {
        Self::start_with_env(redis_url, yaml, &[])
    }

    pub fn start_with_env(redis_url: &str, yaml: &str, env: &[(&str, &str)]) -> Redguard {
        Self::start_limited(redis_url, yaml, env, None)
    }

    /// Like [`Redguard::start_with_env`], with the process's open-file limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(redis_url: &str, yaml: &str, nofile: u64) -> Redguard {
        Self::start_limited(redis_url, yaml, &[], Some(nofile))
    }

    fn start_limited(redis_url: &str, yaml: &str, env: &[(&str, &str)], nofile: Option<u64>) -> Redguard {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("redguard.yaml");
        std::fs::write(&config, yaml).unwrap();
        Self::start_in(dir, &config, redis_url, env, nofile)
    }

    /// Like [`Redguard::start_with_env`], with the config file at `config` (written by the caller, e.g. behind
    /// the symlinks of a Kubernetes ConfigMap volume) and the socket and log in `dir`.
    pub fn start_with_config_at(dir: TempDir, config: &Path, redis_url: &str, env: &[(&str, &str)]) -> Redguard {
        Self::start_in(dir, config, redis_url, env, None)
    }

    fn start_in(dir: TempDir, config: &Path, redis_url: &str, env: &[(&str, &str)], nofile: Option<u64>) -> Redguard {
        let socket = dir.path().join("redguard.sock");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (socket_s, admin_s) = (socket.display().to_string(), admin.to_string());
        let mut all_env = vec![
            ("REDGUARD_LISTEN_SOCKET", socket_s.as_str()),
            ("REDGUARD_ADMIN_LISTEN", admin_s.as_str()),
            ("REDGUARD_LISTEN_DRAIN_TIMEOUT", "5s"),
            ("REDGUARD_REDIS_URL", redis_url),
        ];
        all_env.extend_from_slice(env);
        let mut rg = Redguard {
            socket,
            admin,
            dir,
            child: None,
        };
        rg.child = Some(rg.spawn(config, &all_env, nofile));
        rg.wait_ready();
        rg
    }

    /// Like [`Redguard::start`], with the Redis-protocol socket (`listen.resp_socket`) on too, in a temp dir of its
    /// own (returned with it); waits until that socket accepts connections as well.
    pub fn start_with_resp(redis_url: &str, yaml: &str) -> (Redguard, PathBuf, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let resp = dir.path().join("redis.sock");
        let rg = Self::start_with_env(
            redis_url,
            yaml,
            &[("REDGUARD_LISTEN_RESP_SOCKET", resp.to_str().unwrap())],
        );
        // Both sockets are bound before redguard serves either; the JSON one (which `start` waits for) first.
        wait_for("the RESP socket", Duration::from_secs(10), || {
            UnixStream::connect(&resp).ok()
        });
        (rg, resp, dir)
    }

    /// The process id, to read its memory and file descriptors from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redguard is running").id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redguard.log")
    }

    /// The line redguard logs when it cannot use Redis at start (it then serves degraded), once it is logged.
    pub fn startup_error_line(&self) -> String {
        wait_for("the start-up log line", Duration::from_secs(10), || {
            self.log()
                .lines()
                .find(|l| l.contains("cannot use Redis at start"))
                .map(str::to_owned)
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&self, config: &Path, env: &[(&str, &str)], nofile: Option<u64>) -> Child {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_redguard"));
        if let Some(n) = nofile {
            limit_open_files(&mut command, n);
        }
        command
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        // `("RUST_LOG", "")` in `env` means: leave it unset, so the config's `log.level` applies.
        if env.contains(&("RUST_LOG", "")) {
            command.env_remove("RUST_LOG");
        }
        command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("redguard binary runs")
    }

    fn wait_ready(&mut self) {
        wait_for("redguard to listen", Duration::from_secs(10), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redguard exited early with {status}; log:\n{}", self.log());
            }
            UnixStream::connect(&self.socket).ok()
        });
    }

    pub fn cmd(&self, body: &str) -> Response {
        http(&self.socket, "POST", "/v1/cmd", body)
    }

    /// POSTs a JSON body to one of the API routes (`/v1/command`, `/v1/pipeline`, `/v1/ratelimit` ...).
    pub fn post(&self, path: &str, body: &Value) -> Response {
        http(&self.socket, "POST", path, &body.to_string())
    }

    pub fn breaker(&self) -> Value {
        http(&self.socket, "GET", "/v1/breaker", "").json()
    }

    pub fn breaker_state(&self) -> String {
        self.breaker()["state"].as_str().unwrap().to_owned()
    }

    pub fn control(&self, action: &str) -> Response {
        http(
            &self.socket,
            "POST",
            "/v1/breaker",
            &format!(r#"{{"action":"{action}"}}"#),
        )
    }

    pub fn metrics(&self) -> String {
        http_tcp(self.admin, "/metrics").body
    }

    /// The value of one sample line of /metrics, e.g. `redguard_calls_total{result="success"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    pub fn sigterm(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGTERM);
    }

    pub fn sighup(&self) {
        signal(self.child.as_ref().unwrap(), libc::SIGHUP);
    }

    /// The config file of [`Redguard::start`] and its variants that write it.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("redguard.yaml")
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let status = wait_for("redguard to exit", timeout, || child.try_wait().ok().flatten());
        self.child = None;
        status.code()
    }
}

impl Drop for Redguard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes `command`'s process start with an open-file limit (RLIMIT_NOFILE, soft and hard) of `n`.
pub fn limit_open_files(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: n as libc::rlim_t,
        rlim_max: n as libc::rlim_t,
    };
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The resident memory of process `pid` (VmRSS in /proc/<pid>/status), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process is running");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/<pid>/status has VmRSS")
}

/// Finds `series` in a text exposition and returns its value (0 if absent, like an untouched counter).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad value for {series}: {v}"))
        })
        .unwrap_or(0.0)
}

/// `redguard_calls_total{result}` in a text exposition.
pub fn calls(metrics: &str, result: &str) -> f64 {
    metric_value(metrics, &format!("redguard_calls_total{{result=\"{result}\"}}"))
}

/// `redguard_circuit_transitions_total{from, to}` in a text exposition.
pub fn transitions(metrics: &str, from: &str, to: &str) -> f64 {
    metric_value(
        metrics,
        &format!("redguard_circuit_transitions_total{{from=\"{from}\",to=\"{to}\"}}"),
    )
}
