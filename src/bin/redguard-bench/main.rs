//! `redguard-bench`: drives the same workload for a fixed time at a fixed concurrency against Redis directly,
//! through redguard (breaker closed), through redguard with the circuit open (answers from the fallback cache),
//! and through twemproxy, interleaved in rounds, and reports throughput, latency percentiles (HDR histogram),
//! errors, and each sidecar's CPU time per 1,000 requests and RSS (from /proc). See BENCHMARKS.md.
//!
//! It starts everything itself on loopback (ephemeral ports, sockets in a scratch dir) and stops it at the
//! end. It never asserts on a timing: it measures, prints, and writes JSON; the checks it prints are
//! informational.

mod http;
mod procs;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Serialize;

use http::HttpConn;
use procs::{free_port, stats, wait_for, Proc, ProcStats, Scratch};

#[derive(Parser, Debug)]
#[command(
    name = "redguard-bench",
    about = "Load tool: Redis direct vs redguard (closed and open) vs twemproxy"
)]
struct Args {
    /// Measured time of each window (one target, one round).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured traffic before each window (default: a fifth of --duration, at most 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Rounds; each round runs every target once (A B A B ...), and figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent workers, each with its own connection; a list runs each value.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Workloads to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "get,set,mix,pipeline")]
    workload: Vec<Workload>,
    /// Targets to run; `direct` is always run too, as the floor every ratio is taken against.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,redguard,redguard-open,twemproxy"
    )]
    targets: Vec<Target>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The redguard binary (default: the `redguard` next to this tool, i.e. target/release/redguard).
    #[arg(long)]
    redguard_bin: Option<PathBuf>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// The nutcracker (twemproxy) binary (default: from PATH or /usr/sbin; twemproxy is skipped without it).
    #[arg(long)]
    nutcracker: Option<PathBuf>,
    /// Size of the key space (every key is loaded before the run, so GETs hit).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size of the SETs and of the preloaded keys, in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Threads of the load tool's own runtime (1 = a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Register the HTTP client's socket with epoll for readability only (the default registers both
    /// directions, as tokio's UnixStream does), to measure what a client's write interest costs the sidecar.
    #[arg(long)]
    client_read_interest: bool,
    /// `cache.max_bytes` of the sidecars, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    cache_max_bytes: u64,
    /// Value sizes with which a fresh sidecar's cache is filled to `cache.max_bytes` to measure its RSS.
    #[arg(long, value_delimiter = ',', default_value = "100,16384")]
    fill_value_sizes: Vec<usize>,
    /// Skip the cache-full memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Exit 0 even if some requests failed (by default failed requests make the run fail, after the report:
    /// figures from a run with errors are not comparable).
    #[arg(long)]
    allow_errors: bool,
    /// Do not print the issue's targets as met/missed (for smoke runs, whose figures mean nothing).
    #[arg(long)]
    no_checks: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    /// GET of a random existing key.
    Get,
    /// SET of a random key to a value of --value-size bytes.
    Set,
    /// 90% GET / 10% SET over the key space.
    Mix,
    /// 16 GETs in one pipeline.
    Pipeline,
}

const PIPELINE_DEPTH: usize = 16;

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Set => "set",
            Workload::Mix => "mix",
            Workload::Pipeline => "pipeline",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Target {
    /// redis-rs straight to Redis: the floor.
    Direct,
    /// redguard's Unix-socket JSON API, breaker closed.
    Redguard,
    /// redguard with its Redis stopped and the circuit forced open: reads from the fallback cache.
    RedguardOpen,
    /// redis-rs through twemproxy (nutcracker).
    Twemproxy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Redguard => "redguard",
            Target::RedguardOpen => "redguard-open",
            Target::Twemproxy => "twemproxy",
        }
    }
}

/// The `POST /v1/pipeline` body for a pipeline of GETs of `keys` (non-atomic: each slot answered on its own).
fn redguard_pipeline_body(keys: &[&str], body: &mut Vec<u8>) {
    body.clear();
    body.extend_from_slice(br#"{"commands":["#);
    for (n, key) in keys.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"op":"get","key":""#);
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(br#""}"#);
    }
    body.extend_from_slice(b"]}");
}

/// Whether `target` can run `workload`; the reason when not.
fn support(env: &Env, target: Target, workload: Workload) -> Result<(), String> {
    match (target, workload) {
        (Target::Twemproxy, _) if env.twemproxy.is_none() => Err(env
            .twemproxy_note
            .clone()
            .unwrap_or_else(|| "twemproxy not started".into())),
        (Target::RedguardOpen, Workload::Get) => Ok(()),
        (Target::RedguardOpen, _) => Err(
            "not applicable: with the circuit open only reads are served (from the cache); writes get 503 by design"
                .into(),
        ),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The processes.

/// A redguard process and how to reach it.
struct Sidecar {
    proc: Proc,
    socket: PathBuf,
    admin: SocketAddr,
    /// Right after it started listening, before any traffic.
    idle: ProcStats,
}

struct Env {
    redis: Proc,
    redis_port: u16,
    redguard: Option<Sidecar>,
    open: Option<Sidecar>,
    /// The Redis behind `open`; killed once its cache is warm.
    _open_redis: Option<Proc>,
    twemproxy: Option<(Proc, u16)>,
    twemproxy_note: Option<String>,
    versions: BTreeMap<String, String>,
}

impl Env {
    fn sidecar_pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Direct => None,
            Target::Redguard => self.redguard.as_ref().map(|s| s.proc.pid()),
            Target::RedguardOpen => self.open.as_ref().map(|s| s.proc.pid()),
            Target::Twemproxy => self.twemproxy.as_ref().map(|(p, _)| p.pid()),
        }
    }

    /// The Redis that serves `target` (none for the open circuit: its Redis is stopped).
    fn redis_pid(&self, target: Target) -> Option<u32> {
        (target != Target::RedguardOpen).then(|| self.redis.pid())
    }

    fn check_alive(&mut self) -> io::Result<()> {
        self.redis.check_alive()?;
        for s in [&mut self.redguard, &mut self.open].into_iter().flatten() {
            s.proc.check_alive()?;
        }
        if let Some((p, _)) = &mut self.twemproxy {
            p.check_alive()?;
        }
        Ok(())
    }
}

fn version_of(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

async fn start_redis(bin: &Path, dir: &Path, name: &str) -> io::Result<(Proc, u16)> {
    let port = free_port()?;
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(&data);
    let mut proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")))?;
    wait_for(&format!("{name} on port {port}"), Duration::from_secs(10), || async {
        let mut c = redis_conn(port).await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    })
    .await?;
    proc.check_alive()?;
    Ok((proc, port))
}

/// A connection of the load tool's own (no CLIENT SETINFO on connect: twemproxy does not know it).
async fn redis_conn(port: u16) -> redis::RedisResult<MultiplexedConnection> {
    let info: redis::ConnectionInfo = format!("redis://127.0.0.1:{port}").parse()?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    // redis-rs's default response timeout (500 ms) would turn a slow answer on a busy machine into an error:
    // this tool measures slow answers, it does not drop them.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_connection_timeout(Some(Duration::from_secs(10)));
    client.get_multiplexed_async_connection_with_config(&config).await
}

async fn preload(port: u16, shared: &Shared) -> io::Result<()> {
    let mut c = redis_conn(port).await.map_err(io::Error::other)?;
    for chunk in shared.keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("SET").arg(key).arg(&shared.value).ignore();
        }
        pipe.query_async::<()>(&mut c).await.map_err(io::Error::other)?;
    }
    Ok(())
}

async fn start_redguard(
    bin: &Path,
    dir: &Path,
    name: &str,
    redis_port: u16,
    max_entries: usize,
    max_bytes: u64,
) -> io::Result<Sidecar> {
    let socket = dir.join(format!("{name}.sock"));
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let config = dir.join(format!("{name}.yaml"));
    // The cache holds the whole key space, and keeps it for the whole run (the default ttl is 5m).
    std::fs::write(
        &config,
        format!(
            "listen:\n  socket: {}\nredis:\n  url: redis://127.0.0.1:{redis_port}\ncache:\n  max_entries: {max_entries}\n  max_bytes: {max_bytes}\n  ttl: 1h\nadmin:\n  listen: {admin}\n",
            socket.display()
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(&config).env("RUST_LOG", "warn");
    // The config file alone decides: no REDGUARD_* override from the caller's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REDGUARD_") {
            cmd.env_remove(key);
        }
    }
    let mut proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")))?;
    let started = Instant::now();
    while HttpConn::connect(&socket).await.is_err() {
        proc.check_alive()?;
        if started.elapsed() > Duration::from_secs(10) {
            return Err(io::Error::other(format!(
                "{name} did not listen on {} within 10s",
                socket.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let it settle (the first Redis connection, the health check) before reading its idle figures.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = stats(proc.pid())?;
    Ok(Sidecar {
        proc,
        socket,
        admin,
        idle,
    })
}

async fn start_twemproxy(bin: &Path, dir: &Path, redis_port: u16) -> io::Result<(Proc, u16)> {
    let port = free_port()?;
    let stats_port = free_port()?;
    let config = dir.join("nutcracker.yml");
    std::fs::write(
        &config,
        format!(
            "bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  auto_eject_hosts: false\n  timeout: 2000\n  servers:\n   - 127.0.0.1:{redis_port}:1\n"
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&config)
        .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1", "-o"])
        .arg(dir.join("nutcracker.log"))
        .arg("-p")
        .arg(dir.join("nutcracker.pid"));
    let mut proc = Proc::spawn("nutcracker", cmd, dir.join("nutcracker.out"))?;
    wait_for("nutcracker to answer", Duration::from_secs(10), || async {
        let mut c = redis_conn(port).await.ok()?;
        redis::cmd("GET").arg("key:0").query_async::<Value>(&mut c).await.ok()
    })
    .await?;
    proc.check_alive()?;
    Ok((proc, port))
}

/// Starts what the selected targets need. The open-circuit sidecar gets its own Redis, loaded with the same
/// keys; its cache is warmed by reading every key through it, then that Redis is killed and the circuit forced
/// open, so it answers from the cache alone.
async fn start_env(args: &Args, dir: &Path, shared: &Arc<Shared>) -> io::Result<Env> {
    let mut versions = BTreeMap::new();
    versions.insert("redis-server".to_owned(), version_of(&args.redis_server, "--version"));
    let (redis, redis_port) = start_redis(&args.redis_server, dir, "redis").await?;
    preload(redis_port, shared).await?;
    let bin = args.redguard_bin.clone().unwrap_or_else(default_redguard_bin);
    let wants = |t: Target| args.targets.contains(&t);
    let max_entries = (args.keys * 2).max(1000);
    let redguard = if wants(Target::Redguard) {
        versions.insert("redguard".to_owned(), version_of(&bin, "--version"));
        Some(start_redguard(&bin, dir, "redguard", redis_port, max_entries, args.cache_max_bytes).await?)
    } else {
        None
    };
    let (open, open_redis) = if wants(Target::RedguardOpen) {
        let (mut open_redis, open_port) = start_redis(&args.redis_server, dir, "redis-open").await?;
        preload(open_port, shared).await?;
        let sidecar = start_redguard(&bin, dir, "redguard-open", open_port, max_entries, args.cache_max_bytes).await?;
        warm_cache(&sidecar.socket, shared).await?;
        open_redis.kill();
        let mut conn = HttpConn::connect(&sidecar.socket).await?;
        let answer = conn.post("/v1/breaker", br#"{"action":"force_open"}"#).await?;
        if answer.status != 200 {
            return Err(io::Error::other(format!("force_open answered {}", answer.status)));
        }
        let answer = conn.post("/v1/cmd", &shared.get_bodies[0]).await?;
        if answer.status != 200 || !contains(answer.body, br#""source":"cache""#) {
            return Err(io::Error::other(format!(
                "the open circuit does not serve from the cache: {} {}",
                answer.status,
                String::from_utf8_lossy(answer.body)
            )));
        }
        (Some(sidecar), Some(open_redis))
    } else {
        (None, None)
    };
    let (twemproxy, twemproxy_note) = if wants(Target::Twemproxy) {
        match args.nutcracker.clone().or_else(|| procs::which("nutcracker")) {
            Some(bin) => {
                versions.insert("nutcracker".to_owned(), version_of(&bin, "--version"));
                (Some(start_twemproxy(&bin, dir, redis_port).await?), None)
            }
            None => (
                None,
                Some("skipped: nutcracker (twemproxy) is not installed (apt-get install nutcracker)".to_owned()),
            ),
        }
    } else {
        (None, None)
    };
    Ok(Env {
        redis,
        redis_port,
        redguard,
        open,
        _open_redis: open_redis,
        twemproxy,
        twemproxy_note,
        versions,
    })
}

fn default_redguard_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("redguard")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("target/release/redguard"))
}

/// Reads every key once through the sidecar (8 connections), so its cache holds the whole key space.
async fn warm_cache(socket: &Path, shared: &Arc<Shared>) -> io::Result<()> {
    let mut tasks = Vec::new();
    for part in 0..8 {
        let (socket, shared) = (socket.to_owned(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::connect(&socket).await?;
            for i in (part..shared.keys.len()).step_by(8) {
                let answer = conn.post("/v1/cmd", &shared.get_bodies[i]).await?;
                if answer.status != 200 || !contains(answer.body, br#""source":"redis""#) {
                    return Err(io::Error::other(format!(
                        "warming the cache: {} {}",
                        answer.status,
                        String::from_utf8_lossy(answer.body)
                    )));
                }
            }
            io::Result::Ok(())
        }));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// The workload.

/// What every worker reads: the keys, the value, and the JSON bodies (built once, so the client does no
/// formatting per request).
struct Shared {
    keys: Vec<String>,
    value: String,
    get_bodies: Vec<Vec<u8>>,
    set_bodies: Vec<Vec<u8>>,
}

impl Shared {
    fn new(keys: usize, value_size: usize) -> Shared {
        let keys: Vec<String> = (0..keys).map(|i| format!("key:{i}")).collect();
        let value: String = (0..value_size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let get_bodies = keys
            .iter()
            .map(|k| format!(r#"{{"op":"get","key":"{k}"}}"#).into_bytes())
            .collect();
        let set_bodies = keys
            .iter()
            .map(|k| format!(r#"{{"op":"set","key":"{k}","value":"{value}"}}"#).into_bytes())
            .collect();
        Shared {
            keys,
            value,
            get_bodies,
            set_bodies,
        }
    }
}

enum Step {
    Get(usize),
    Set(usize),
    Pipeline([usize; PIPELINE_DEPTH]),
}

/// xorshift64*: plenty for picking keys, and no dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn next_step(workload: Workload, rng: &mut u64, keys: usize) -> Step {
    let mut key = || (next_random(rng) % keys as u64) as usize;
    match workload {
        Workload::Get => Step::Get(key()),
        Workload::Set => Step::Set(key()),
        Workload::Mix => {
            let k = key();
            if next_random(rng).is_multiple_of(10) {
                Step::Set(k)
            } else {
                Step::Get(k)
            }
        }
        Workload::Pipeline => {
            let mut ks = [0; PIPELINE_DEPTH];
            ks.iter_mut().for_each(|k| *k = key());
            Step::Pipeline(ks)
        }
    }
}

enum Conn {
    Redis(MultiplexedConnection),
    Http(HttpConn, &'static [u8]),
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs one step; an error is described, never panics.
async fn exec(conn: &mut Conn, step: &Step, shared: &Shared) -> Result<(), String> {
    match conn {
        Conn::Redis(c) => match step {
            Step::Get(i) => match redis::cmd("GET").arg(&shared.keys[*i]).query_async::<Value>(c).await {
                Ok(Value::BulkString(_)) => Ok(()),
                Ok(other) => Err(format!("GET answered {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            Step::Set(i) => match redis::cmd("SET")
                .arg(&shared.keys[*i])
                .arg(&shared.value)
                .query_async::<Value>(c)
                .await
            {
                Ok(Value::Okay) => Ok(()),
                Ok(other) => Err(format!("SET answered {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            Step::Pipeline(ks) => {
                let mut pipe = redis::pipe();
                for i in ks {
                    pipe.cmd("GET").arg(&shared.keys[*i]);
                }
                match pipe.query_async::<Vec<Value>>(c).await {
                    Ok(vs) if vs.len() == PIPELINE_DEPTH && vs.iter().all(|v| matches!(v, Value::BulkString(_))) => {
                        Ok(())
                    }
                    Ok(vs) => Err(format!("pipeline answered {vs:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
        Conn::Http(h, source) => {
            let mut pipeline_body = Vec::new();
            let (path, body, want): (&str, &[u8], &[u8]) = match step {
                Step::Get(i) => ("/v1/cmd", &shared.get_bodies[*i], source),
                Step::Set(i) => (
                    "/v1/cmd",
                    &shared.set_bodies[*i],
                    br#"{"result":true,"source":"redis"}"#,
                ),
                Step::Pipeline(ks) => {
                    let keys: Vec<&str> = ks.iter().map(|i| shared.keys[*i].as_str()).collect();
                    redguard_pipeline_body(&keys, &mut pipeline_body);
                    ("/v1/pipeline", &pipeline_body, br#""source":"redis"}"#)
                }
            };
            let answer = h.post(path, body).await.map_err(|e| e.to_string())?;
            if answer.status == 200 && contains(answer.body, want) && !answer.body.starts_with(br#"{"result":null"#) {
                Ok(())
            } else {
                Err(format!("{} {}", answer.status, String::from_utf8_lossy(answer.body)))
            }
        }
    }
}

struct WorkerResult {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn new_histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

async fn worker(
    mut conn: Conn,
    shared: Arc<Shared>,
    workload: Workload,
    seed: u64,
    measure_from: Instant,
    end: Instant,
) -> WorkerResult {
    let mut rng = seed | 1;
    let mut result = WorkerResult {
        hist: new_histogram(),
        errors: 0,
        first_error: None,
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let step = next_step(workload, &mut rng, shared.keys.len());
        let outcome = exec(&mut conn, &step, &shared).await;
        let elapsed = t0.elapsed();
        let measured = t0 >= measure_from;
        match outcome {
            Ok(()) if measured => result.hist.saturating_record(elapsed.as_nanos() as u64),
            Ok(()) => {}
            Err(e) => {
                if measured {
                    result.errors += 1;
                }
                result.first_error.get_or_insert(e);
                // A broken connection fails at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    result
}

async fn connect(env: &Env, target: Target) -> io::Result<Conn> {
    let port = |p: u16| async move { redis_conn(p).await.map(Conn::Redis).map_err(io::Error::other) };
    match target {
        Target::Direct => port(env.redis_port).await,
        Target::Twemproxy => port(env.twemproxy.as_ref().map(|(_, p)| *p).unwrap_or_default()).await,
        Target::Redguard => {
            let s = env
                .redguard
                .as_ref()
                .ok_or_else(|| io::Error::other("redguard not started"))?;
            Ok(Conn::Http(HttpConn::connect(&s.socket).await?, br#""source":"redis""#))
        }
        Target::RedguardOpen => {
            let s = env
                .open
                .as_ref()
                .ok_or_else(|| io::Error::other("redguard-open not started"))?;
            Ok(Conn::Http(HttpConn::connect(&s.socket).await?, br#""source":"cache""#))
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// One measured window, and the figures.

/// The figures of one target in one round.
#[derive(Debug, Clone, Serialize)]
struct Round {
    requests: u64,
    errors: u64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// CPU time (user + system) of the sidecar per 1,000 requests; none for `direct`.
    sidecar_cpu_ms_per_1k: Option<f64>,
    /// Resident set of the sidecar at the end of the window, and its peak so far (VmHWM).
    sidecar_rss_mib: Option<f64>,
    sidecar_peak_rss_mib: Option<f64>,
    /// CPU of redis-server per 1,000 requests (none for the open circuit, whose Redis is stopped).
    redis_cpu_ms_per_1k: Option<f64>,
    /// CPU of this load tool per 1,000 requests.
    client_cpu_ms_per_1k: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// One measured window: a target, a workload, a concurrency.
struct Window {
    target: Target,
    workload: Workload,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    seed: u64,
}

async fn run_window(env: &Env, shared: &Arc<Shared>, window: Window) -> io::Result<Round> {
    let Window {
        target,
        workload,
        concurrency,
        warmup,
        duration,
        seed,
    } = window;
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(connect(env, target).await?);
    }
    let sidecar = env.sidecar_pid(target);
    let redis = env.redis_pid(target);
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64 * 7919 + 1);
            tokio::spawn(worker(conn, shared.clone(), workload, seed, measure_from, end))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let before = (
        sidecar.map(stats).transpose()?,
        redis.map(stats).transpose()?,
        procs::self_cpu(),
    );
    let mut hist = new_histogram();
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let r = t.await.map_err(io::Error::other)?;
        hist.add(&r.hist).map_err(io::Error::other)?;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let after = (
        sidecar.map(stats).transpose()?,
        redis.map(stats).transpose()?,
        procs::self_cpu(),
    );
    let requests = hist.len();
    let per_1k = |cpu: Duration| {
        if requests == 0 {
            f64::NAN
        } else {
            cpu.as_secs_f64() * 1000.0 * 1000.0 / requests as f64
        }
    };
    let cpu_per_1k = |a: Option<ProcStats>, b: Option<ProcStats>| Some(per_1k(b?.cpu.saturating_sub(a?.cpu)));
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Round {
        requests,
        errors,
        rps: requests as f64 / duration.as_secs_f64(),
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: hist.max() as f64 / 1000.0,
        sidecar_cpu_ms_per_1k: cpu_per_1k(before.0, after.0),
        sidecar_rss_mib: after.0.map(|s| s.rss as f64 / MIB),
        sidecar_peak_rss_mib: after.0.map(|s| s.peak_rss as f64 / MIB),
        redis_cpu_ms_per_1k: cpu_per_1k(before.1, after.1),
        client_cpu_ms_per_1k: per_1k(after.2.saturating_sub(before.2)),
        first_error,
    })
}

/// Medians over the rounds (peak RSS: the maximum; errors: the sum).
#[derive(Debug, Clone, Serialize)]
struct Summary {
    requests: u64,
    errors: u64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    sidecar_cpu_ms_per_1k: Option<f64>,
    sidecar_peak_rss_mib: Option<f64>,
    redis_cpu_ms_per_1k: Option<f64>,
    client_cpu_ms_per_1k: f64,
}

/// Against `direct` in the same rounds: each figure is the median over rounds of the per-round comparison,
/// so slow drift of the machine's load cancels out.
#[derive(Debug, Clone, Serialize)]
struct VsDirect {
    rps_ratio: f64,
    p50_ratio: f64,
    p99_ratio: f64,
    added_p50_us: f64,
    added_p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Cell {
    workload: Workload,
    concurrency: usize,
    target: Target,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    rounds: Vec<Round>,
    median: Option<Summary>,
    vs_direct: Option<VsDirect>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn median_of(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(rounds.iter().map(f).collect())
}

fn median_opt(rounds: &[Round], f: impl Fn(&Round) -> Option<f64>) -> Option<f64> {
    let xs: Vec<f64> = rounds.iter().filter_map(f).collect();
    (!xs.is_empty()).then(|| median(xs))
}

fn summarize(rounds: &[Round]) -> Summary {
    Summary {
        requests: rounds.iter().map(|r| r.requests).sum(),
        errors: rounds.iter().map(|r| r.errors).sum(),
        rps: median_of(rounds, |r| r.rps),
        p50_us: median_of(rounds, |r| r.p50_us),
        p90_us: median_of(rounds, |r| r.p90_us),
        p99_us: median_of(rounds, |r| r.p99_us),
        p999_us: median_of(rounds, |r| r.p999_us),
        sidecar_cpu_ms_per_1k: median_opt(rounds, |r| r.sidecar_cpu_ms_per_1k),
        sidecar_peak_rss_mib: rounds.iter().filter_map(|r| r.sidecar_peak_rss_mib).reduce(f64::max),
        redis_cpu_ms_per_1k: median_opt(rounds, |r| r.redis_cpu_ms_per_1k),
        client_cpu_ms_per_1k: median_of(rounds, |r| r.client_cpu_ms_per_1k),
    }
}

fn compare(rounds: &[Round], direct: &[Round]) -> Option<VsDirect> {
    let pairs: Vec<(&Round, &Round)> = rounds.iter().zip(direct).collect();
    if pairs.is_empty() {
        return None;
    }
    let m = |f: &dyn Fn(&Round, &Round) -> f64| median(pairs.iter().map(|(r, d)| f(r, d)).collect());
    Some(VsDirect {
        rps_ratio: m(&|r, d| r.rps / d.rps),
        p50_ratio: m(&|r, d| r.p50_us / d.p50_us),
        p99_ratio: m(&|r, d| r.p99_us / d.p99_us),
        added_p50_us: m(&|r, d| r.p50_us - d.p50_us),
        added_p99_us: m(&|r, d| r.p99_us - d.p99_us),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Memory with a full cache.

#[derive(Debug, Clone, Serialize)]
struct MemoryFill {
    value_size: usize,
    max_bytes: u64,
    sets: usize,
    cache_entries: f64,
    cache_bytes: f64,
    idle_rss_mib: f64,
    full_rss_mib: f64,
    full_peak_rss_mib: f64,
    /// Resident set with the cache full, minus `cache.max_bytes`.
    above_max_bytes_mib: f64,
}

/// A GET over TCP to the admin listener.
fn admin_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: redguard\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Starts a fresh sidecar, writes 1.25x `cache.max_bytes` of values through it (so LRU eviction has run and
/// the byte limit binds), and reads its RSS.
async fn measure_full_cache(args: &Args, env: &Env, dir: &Path, value_size: usize) -> io::Result<MemoryFill> {
    let bin = args.redguard_bin.clone().unwrap_or_else(default_redguard_bin);
    let name = format!("redguard-mem-{value_size}");
    let sidecar = start_redguard(&bin, dir, &name, env.redis_port, 100_000_000, args.cache_max_bytes).await?;
    let key_len = "fill:0000000".len();
    let sets = (args.cache_max_bytes as f64 * 1.25 / (value_size + key_len) as f64).ceil() as usize;
    let value: String = "x".repeat(value_size);
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (socket, value) = (sidecar.socket.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::connect(&socket).await?;
            let mut body = Vec::with_capacity(value.len() + 64);
            for i in (w..sets).step_by(workers) {
                body.clear();
                write!(body, r#"{{"op":"set","key":"fill:{i:07}","value":"{value}"}}"#)?;
                let answer = conn.post("/v1/cmd", &body).await?;
                if answer.status != 200 {
                    return Err(io::Error::other(format!(
                        "fill: {} {}",
                        answer.status,
                        String::from_utf8_lossy(answer.body)
                    )));
                }
            }
            io::Result::Ok(())
        }));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    let admin = sidecar.admin;
    let text = tokio::task::spawn_blocking(move || admin_get(admin, "/metrics"))
        .await
        .map_err(io::Error::other)??;
    let full = stats(sidecar.proc.pid())?;
    // The values stay in Redis otherwise; the main run is over, but keep Redis as it was.
    if let Ok(mut c) = redis_conn(env.redis_port).await {
        let keys: Vec<String> = (0..sets).map(|i| format!("fill:{i:07}")).collect();
        for chunk in keys.chunks(1000) {
            let _ = redis::cmd("DEL").arg(chunk).query_async::<Value>(&mut c).await;
        }
    }
    Ok(MemoryFill {
        value_size,
        max_bytes: args.cache_max_bytes,
        sets,
        cache_entries: metric(&text, "redguard_fallback_cache_entries"),
        cache_bytes: metric(&text, "redguard_fallback_cache_bytes"),
        idle_rss_mib: sidecar.idle.rss as f64 / MIB,
        full_rss_mib: full.rss as f64 / MIB,
        full_peak_rss_mib: full.peak_rss as f64 / MIB,
        above_max_bytes_mib: (full.rss as f64 - args.cache_max_bytes as f64) / MIB,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Report.

#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    cpu_model: String,
    kernel: String,
    load_before: String,
    load_after: String,
    versions: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Settings {
    duration_s: f64,
    warmup_s: f64,
    rounds: usize,
    concurrency: Vec<usize>,
    workloads: Vec<Workload>,
    targets: Vec<Target>,
    keys: usize,
    value_size: usize,
    pipeline_depth: usize,
    client_threads: usize,
    client_read_interest: bool,
    cache_max_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Check {
    target: String,
    met: Option<bool>,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    settings: Settings,
    idle_rss_mib: BTreeMap<String, f64>,
    cells: Vec<Cell>,
    memory: Vec<MemoryFill>,
    checks: Vec<Check>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default()
}

fn fmt(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".into()
    }
}

fn fmt_opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".into(), |x| fmt(x, decimals))
}

fn print_table(report: &Report, checks: bool) {
    let s = &report.settings;
    println!(
        "\nredguard-bench: {} round(s) of {}s (+{}s warm-up) per target; medians over rounds; ratios and added latency are medians of per-round comparisons with direct",
        s.rounds, s.duration_s, s.warmup_s
    );
    let mut groups: BTreeMap<(Workload, usize), Vec<&Cell>> = BTreeMap::new();
    for c in &report.cells {
        groups.entry((c.workload, c.concurrency)).or_default().push(c);
    }
    for ((workload, concurrency), cells) in groups {
        let unit = if workload == Workload::Pipeline {
            format!(" (one request = a pipeline of {PIPELINE_DEPTH} GETs)")
        } else {
            String::new()
        };
        println!("\n== {} at concurrency {concurrency}{unit}", workload.name());
        println!(
            "{:<14} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>9} {:>9} {:>7} {:>8} {:>8}",
            "target",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "errors",
            "cpu ms/1k",
            "peak MiB",
            "redis cpu",
            "x rps",
            "+p50 µs",
            "+p99 µs"
        );
        for c in cells {
            let Some(m) = &c.median else {
                println!("{:<14} {}", c.target.name(), c.note.as_deref().unwrap_or("not run"));
                continue;
            };
            let v = c.vs_direct.as_ref();
            println!(
                "{:<14} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>9} {:>9} {:>7} {:>8} {:>8}",
                c.target.name(),
                fmt(m.rps, 0),
                fmt(m.p50_us, 1),
                fmt(m.p90_us, 1),
                fmt(m.p99_us, 1),
                fmt(m.p999_us, 1),
                m.errors,
                fmt_opt(m.sidecar_cpu_ms_per_1k, 1),
                fmt_opt(m.sidecar_peak_rss_mib, 1),
                fmt_opt(m.redis_cpu_ms_per_1k, 1),
                fmt_opt(v.map(|v| v.rps_ratio), 2),
                fmt_opt(v.map(|v| v.added_p50_us), 1),
                fmt_opt(v.map(|v| v.added_p99_us), 1),
            );
            if let Some(e) = c.rounds.iter().find_map(|r| r.first_error.as_deref()) {
                println!("{:<14} first error: {e}", "");
            }
        }
    }
    if !report.memory.is_empty() {
        println!(
            "\n== memory: a fresh redguard, cache.max_bytes {} MiB, filled with 1.25x that",
            fmt(s.cache_max_bytes as f64 / MIB, 1)
        );
        println!(
            "{:>10} {:>8} {:>9} {:>11} {:>9} {:>9} {:>10} {:>12}",
            "value B", "sets", "entries", "cache MiB", "idle MiB", "full MiB", "peak MiB", "full-max MiB"
        );
        for m in &report.memory {
            println!(
                "{:>10} {:>8} {:>9} {:>11} {:>9} {:>9} {:>10} {:>12}",
                m.value_size,
                m.sets,
                fmt(m.cache_entries, 0),
                fmt(m.cache_bytes / MIB, 2),
                fmt(m.idle_rss_mib, 1),
                fmt(m.full_rss_mib, 1),
                fmt(m.full_peak_rss_mib, 1),
                fmt(m.above_max_bytes_mib, 1)
            );
        }
    }
    if !report.idle_rss_mib.is_empty() {
        let idle: Vec<String> = report
            .idle_rss_mib
            .iter()
            .map(|(k, v)| format!("{k} {} MiB", fmt(*v, 1)))
            .collect();
        println!("\nidle RSS at start: {}", idle.join(", "));
    }
    if checks {
        print_checks(&report.checks);
    }
    println!(
        "\nload average (1 5 15 min): before {}, after {}",
        report.machine.load_before, report.machine.load_after
    );
}

fn print_checks(checks: &[Check]) {
    println!("\n== checks (informational; nothing here fails the run)");
    for c in checks {
        let mark = match c.met {
            Some(true) => "met   ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        println!("[{mark}] {}: {}", c.target, c.detail);
    }
}

fn find(cells: &[Cell], w: Workload, c: usize, t: Target) -> Option<&Cell> {
    cells
        .iter()
        .find(|x| x.workload == w && x.concurrency == c && x.target == t && x.median.is_some())
}

/// The issue's targets, evaluated on what this run measured (none is asserted).
fn checks(cells: &[Cell], memory: &[MemoryFill], idle: &BTreeMap<String, f64>) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |target: &str, met: Option<bool>, detail: String| {
        out.push(Check {
            target: target.to_owned(),
            met,
            detail,
        })
    };
    let (get, rg, tw) = (Workload::Get, Target::Redguard, Target::Twemproxy);
    match (find(cells, get, 1, rg), find(cells, get, 1, tw)) {
        (Some(r), Some(t)) => {
            let (r, t) = (r.vs_direct.as_ref().unwrap(), t.vs_direct.as_ref().unwrap());
            push(
                "GET c=1: redguard added p50 <= 1.5x twemproxy added p50",
                Some(r.added_p50_us <= 1.5 * t.added_p50_us),
                format!(
                    "redguard +{} µs, twemproxy +{} µs ({}x)",
                    fmt(r.added_p50_us, 1),
                    fmt(t.added_p50_us, 1),
                    fmt(r.added_p50_us / t.added_p50_us, 2)
                ),
            );
        }
        _ => push(
            "GET c=1: redguard added p50 <= 1.5x twemproxy added p50",
            None,
            "not measured".into(),
        ),
    }
    match find(cells, get, 1, rg) {
        Some(r) => {
            let v = r.vs_direct.as_ref().unwrap();
            push(
                "GET c=1: redguard added p99 <= 150 µs",
                Some(v.added_p99_us <= 150.0),
                format!("+{} µs", fmt(v.added_p99_us, 1)),
            );
        }
        None => push("GET c=1: redguard added p99 <= 150 µs", None, "not measured".into()),
    }
    match find(cells, get, 32, rg) {
        Some(r) => {
            let v = r.vs_direct.as_ref().unwrap();
            push(
                "GET c=32: redguard throughput >= 0.7x direct",
                Some(v.rps_ratio >= 0.7),
                format!("{}x", fmt(v.rps_ratio, 2)),
            );
        }
        None => push(
            "GET c=32: redguard throughput >= 0.7x direct",
            None,
            "not measured".into(),
        ),
    }
    let concurrencies: Vec<usize> = {
        let mut cs: Vec<usize> = cells.iter().map(|c| c.concurrency).collect();
        cs.sort_unstable();
        cs.dedup();
        cs
    };
    for &c in &concurrencies {
        let name = format!("GET c={c}: redguard-open at least as fast as redguard closed");
        match (find(cells, get, c, Target::RedguardOpen), find(cells, get, c, rg)) {
            (Some(o), Some(r)) => {
                let (o, r) = (o.median.as_ref().unwrap(), r.median.as_ref().unwrap());
                push(
                    &name,
                    Some(o.rps >= r.rps && o.p50_us <= r.p50_us),
                    format!(
                        "open {} req/s p50 {} µs, closed {} req/s p50 {} µs",
                        fmt(o.rps, 0),
                        fmt(o.p50_us, 1),
                        fmt(r.rps, 0),
                        fmt(r.p50_us, 1)
                    ),
                );
            }
            _ => push(&name, None, "not measured".into()),
        }
    }
    for w in [Workload::Get, Workload::Set, Workload::Mix] {
        for &c in &concurrencies {
            if let (Some(r), Some(t)) = (find(cells, w, c, rg), find(cells, w, c, tw)) {
                let (r, t) = (r.median.as_ref().unwrap(), t.median.as_ref().unwrap());
                if let (Some(rc), Some(tc)) = (r.sidecar_cpu_ms_per_1k, t.sidecar_cpu_ms_per_1k) {
                    push(
                        &format!("{} c={c}: sidecar CPU per request <= 1.5x twemproxy", w.name()),
                        Some(rc <= 1.5 * tc),
                        format!(
                            "redguard {} ms/1k, twemproxy {} ms/1k ({}x)",
                            fmt(rc, 2),
                            fmt(tc, 2),
                            fmt(rc / tc, 2)
                        ),
                    );
                }
            }
        }
    }
    match idle.get("redguard") {
        Some(mib) => push(
            "redguard idle RSS <= 20 MiB",
            Some(*mib <= 20.0),
            format!("{} MiB", fmt(*mib, 1)),
        ),
        None => push("redguard idle RSS <= 20 MiB", None, "not measured".into()),
    }
    for m in memory {
        push(
            &format!(
                "RSS with the cache full ({} B values) <= max_bytes + 16 MiB",
                m.value_size
            ),
            Some(m.above_max_bytes_mib <= 16.0),
            format!(
                "{} MiB = max_bytes + {} MiB ({} entries)",
                fmt(m.full_rss_mib, 1),
                fmt(m.above_max_bytes_mib, 1),
                fmt(m.cache_entries, 0)
            ),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    http::READ_INTEREST_ONLY.store(args.client_read_interest, std::sync::atomic::Ordering::Relaxed);
    if !args.targets.contains(&Target::Direct) {
        args.targets.insert(0, Target::Direct);
    }
    args.targets.sort();
    args.targets.dedup();
    if args.rounds == 0 || args.concurrency.contains(&0) || args.keys == 0 {
        eprintln!("redguard-bench: --rounds, --concurrency and --keys must be at least 1");
        return std::process::ExitCode::from(2);
    }
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime starts");
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(args) => outcome,
            // Dropping `run` here drops its processes, which kills them, and removes the scratch directory.
            signal = stop_signal() => Err(io::Error::other(format!("{signal}: stopped the processes it started"))),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redguard-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM. The processes the tool starts must not outlive it: Ctrl-C reaches them through the
/// terminal's process group anyway, but `timeout`, `kill` and CI runners signal the tool alone.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler can be installed");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn run(args: Args) -> io::Result<()> {
    let scratch = Scratch::new()?;
    let load_before = procs::loadavg();
    let shared = Arc::new(Shared::new(args.keys, args.value_size));
    let warmup = args
        .warmup
        .unwrap_or_else(|| (args.duration / 5).min(Duration::from_secs(2)));
    eprintln!("redguard-bench: starting processes in {}", scratch.path().display());
    let mut env = start_env(&args, scratch.path(), &shared).await?;
    let mut idle_rss_mib = BTreeMap::new();
    for (name, s) in [("redguard", &env.redguard), ("redguard-open", &env.open)] {
        if let Some(s) = s {
            idle_rss_mib.insert(name.to_owned(), s.idle.rss as f64 / MIB);
        }
    }
    if let Some((p, _)) = &env.twemproxy {
        idle_rss_mib.insert("twemproxy".to_owned(), stats(p.pid())?.rss as f64 / MIB);
    }

    let mut cells = Vec::new();
    let mut seed = 0x5eed_u64;
    for &workload in &args.workload {
        for &concurrency in &args.concurrency {
            let mut rounds: BTreeMap<Target, Vec<Round>> = BTreeMap::new();
            for round in 0..args.rounds {
                for &target in &args.targets {
                    if support(&env, target, workload).is_err() {
                        continue;
                    }
                    env.check_alive()?;
                    seed = seed.wrapping_add(1);
                    let window = Window {
                        target,
                        workload,
                        concurrency,
                        warmup,
                        duration: args.duration,
                        seed,
                    };
                    let r = run_window(&env, &shared, window).await?;
                    eprintln!(
                        "  {} c={concurrency} round {}/{} {:<13} {:>9} req/s p50 {:>7} µs p99 {:>7} µs errors {}",
                        workload.name(),
                        round + 1,
                        args.rounds,
                        target.name(),
                        fmt(r.rps, 0),
                        fmt(r.p50_us, 1),
                        fmt(r.p99_us, 1),
                        r.errors
                    );
                    rounds.entry(target).or_default().push(r);
                }
            }
            let direct = rounds.get(&Target::Direct).cloned().unwrap_or_default();
            for &target in &args.targets {
                let note = support(&env, target, workload).err();
                let rs = rounds.remove(&target).unwrap_or_default();
                cells.push(Cell {
                    workload,
                    concurrency,
                    target,
                    available: note.is_none(),
                    note,
                    median: (!rs.is_empty()).then(|| summarize(&rs)),
                    vs_direct: (!rs.is_empty()).then(|| compare(&rs, &direct)).flatten(),
                    rounds: rs,
                });
            }
        }
    }

    let mut memory = Vec::new();
    if !args.no_memory && env.redguard.is_some() {
        for &size in &args.fill_value_sizes {
            eprintln!("  memory: filling a fresh sidecar's cache with {size}-byte values");
            memory.push(measure_full_cache(&args, &env, scratch.path(), size).await?);
        }
    }
    env.check_alive()?;

    let report = Report {
        machine: Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            load_before,
            load_after: procs::loadavg(),
            versions: env.versions.clone(),
        },
        settings: Settings {
            duration_s: args.duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            rounds: args.rounds,
            concurrency: args.concurrency.clone(),
            workloads: args.workload.clone(),
            targets: args.targets.clone(),
            keys: args.keys,
            value_size: args.value_size,
            pipeline_depth: PIPELINE_DEPTH,
            client_threads: args.client_threads,
            client_read_interest: args.client_read_interest,
            cache_max_bytes: args.cache_max_bytes,
        },
        checks: checks(&cells, &memory, &idle_rss_mib),
        idle_rss_mib,
        cells,
        memory,
    };
    print_table(&report, !args.no_checks);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
        std::fs::write(path, json + "\n")?;
        eprintln!("redguard-bench: wrote {}", path.display());
    }
    let errors: u64 = report.cells.iter().flat_map(|c| &c.rounds).map(|r| r.errors).sum();
    if errors > 0 && !args.allow_errors {
        return Err(io::Error::other(format!(
            "{errors} request(s) failed (first errors are shown under their target); --allow-errors to accept"
        )));
    }
    Ok(())
}
