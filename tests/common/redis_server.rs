//! The one `redis-server` fixture: a process owned by one test, on loopback, with its own temp dir and log,
//! which the test may kill, pause (SIGSTOP) and restart. Plain servers for most tests; TLS, ACL, cluster and
//! sentinel nodes (see `topology`) are the same fixture with extra arguments and redis-cli flags.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;

/// One `redis-server` (or sentinel) process, and the redis-cli flags to reach it.
pub struct RedisServer {
    pub port: u16,
    pub dir: TempDir,
    args: Vec<String>,
    /// Extra redis-cli flags (TLS files, ACL user) used by [`RedisServer::cmd`] and [`RedisServer::cli`].
    pub cli_flags: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A plain server on a free port.
    pub fn start() -> RedisServer {
        RedisServer::plain(&[])
    }

    /// A plain server on a free port, with `args` added to its command line.
    pub fn plain(args: &[&str]) -> RedisServer {
        let port = free_port();
        let port_s = port.to_string();
        let mut all = vec!["--port", port_s.as_str()];
        all.extend_from_slice(args);
        RedisServer::start_with(port, &all, &[])
    }

    /// Starts `redis-server` with `args` (which must make it listen on `port`), and waits until it answers
    /// PING through redis-cli with `cli_flags`.
    pub fn start_with(port: u16, args: &[&str], cli_flags: &[&str]) -> RedisServer {
        RedisServer::start_in(tempfile::tempdir().unwrap(), port, args, cli_flags)
    }

    /// Like [`RedisServer::start_with`], in a dir the caller prepared (e.g. with a config file in it).
    pub fn start_in(dir: TempDir, port: u16, args: &[&str], cli_flags: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            cli_flags: cli_flags.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let log = self.log_path().to_str().unwrap().to_owned();
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &dir, "--logfile", &log])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-test-deps.sh)");
        self.child = Some(child);
        // Not `wait_for`: the panic message should carry the log as it is when the wait gives up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cmd(&["PING"]).as_deref() != Some("PONG") {
            if Instant::now() >= deadline {
                panic!(
                    "redis-server on port {} did not answer PING in 10 s; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command with redis-cli and returns its answer, error replies included; None if the server
    /// could not be reached.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        let out = redis_cli(self.port, &self.cli_flags, args)?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// Like [`RedisServer::cmd`], but None for an error reply too (ERR, NOAUTH, WRONGPASS).
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, &self.cli_flags, args)
    }

    /// Like [`RedisServer::cli`], panicking when the server does not answer.
    pub fn must(&self, args: &[&str]) -> String {
        self.cli(args)
            .unwrap_or_else(|| panic!("redis on {} did not answer {args:?}; log:\n{}", self.port, self.log()))
    }

    /// Commands Redis has processed so far (INFO stats), to prove a call did not reach it.
    pub fn commands_processed(&self) -> u64 {
        let info = self.cmd(&["INFO", "stats"]).expect("redis answers INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO has total_commands_processed")
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on a child we own and have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    /// Starts the process again with the same arguments and the same dir (a cluster node keeps its
    /// nodes.conf; a plain server comes back empty).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs redis-cli against 127.0.0.1:`port`; None if it could not connect or the server answered an error.
fn cli(port: u16, flags: &[String], args: &[&str]) -> Option<String> {
    let out = redis_cli(port, flags, args)?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let failed = !out.status.success()
        || text.starts_with("Could not connect")
        || text.starts_with("ERR")
        || text.starts_with("NOAUTH")
        || text.starts_with("WRONGPASS")
        || text.is_empty() && !out.stderr.is_empty();
    (!failed).then_some(text)
}

fn redis_cli(port: u16, flags: &[String], args: &[&str]) -> Option<std::process::Output> {
    let child = Command::new("redis-cli")
        .args(["--no-auth-warning", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(flags)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    Some(super::wait_within(child, "redis-cli", super::TOOL_LIMIT))
}
