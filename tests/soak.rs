//! A bounded soak: 16 clients write, read and delete their own keys through redguard for about a minute
//! (`REDGUARD_SOAK_SECS` to run longer), while the fault proxy and the test inject, on a schedule, replies
//! slower than usual and slower than the command timeout, connection resets, replies cut in the middle, a black
//! hole, refused connections, and one kill and restart of Redis per cycle (which loses its data). Every answer
//! is checked against a model of what Redis and the fallback cache may hold; at the end the faults stop,
//! redguard must heal by itself, Redis itself must hold only what the model allows, and redguard's memory and
//! file descriptors must have stayed bounded.
//!
//! # The model
//!
//! Each client is the only one to touch its keys, and sends one request at a time, so for each key it knows
//! every operation redguard carried out on it, in order. An answer tells one of three things about a write:
//!
//! - **acknowledged** (200 from Redis): Redis applied it.
//! - **unknown** (503 `redis_unavailable`, 504 `timeout`): it may or may not have been applied. A SET that
//!   timed out waiting for a slow reply was applied; one whose connection was reset or whose reply was cut may
//!   have been; one sent into a black hole or to a dead Redis was not.
//! - **refused** (503 `circuit_open`): it never left redguard, and must never show up as Redis's answer.
//!
//! What Redis may hold for a key is a set of values. An acknowledged SET `v` makes it `{v}` (an acknowledged
//! DEL: `{nothing}`); an unknown SET `v` adds `v` (an unknown DEL adds "nothing"); a refused write changes
//! nothing. A `source: redis` read must return a member of the set, so it may be the last acknowledged value or
//! the value of any write of unknown outcome since, never a refused one. Reads do not narrow the set.
//!
//! This relies on the proxy delaying only replies, never requests: a write reaches Redis before the client
//! sends its next request, or never, so a write of unknown outcome cannot land after a later acknowledged one.
//! In production it can (a frozen Redis applies the commands waiting in its socket buffer when it thaws; a
//! healed partition delivers retransmitted requests late): an application must treat `redis_unavailable` and
//! `timeout` on a write as "unknown", which is all redguard promises.
//!
//! A kill loses everything. The test bumps a restart counter right before it kills Redis and again once the
//! process is gone; a call that started and ended at the same even count did not overlap that window. When a
//! whole window passed between two calls on a key, the set becomes `{nothing}`: everything acknowledged before
//! the kill is gone, so a `source: redis` null for a key whose last acknowledged write is `v` is legitimate
//! only if that write happened before the restart. When a call, or the gap before it, only overlapped the
//! window, "nothing" is added to the set (a write may have reached the old Redis and died with it, or the new
//! one).
//!
//! What the fallback cache holds is known exactly, because only this client's calls change it: an acknowledged
//! SET or a Redis read stores the value, a SET that was not acknowledged stores its value too (the answer says
//! `"cached": true`), a Redis read of nothing, and any DEL that was not refused, drop it; eviction and expiry
//! only drop. So a `source: cache` answer must be exactly that value, and the request must have started within
//! `cache.ttl` of the end of the call that stored it (the cache learned it no later than that). This is
//! stricter than "some value acknowledged or cached within the TTL".
//!
//! Every answer is also checked for shape: 200s, 503 `circuit_open` or `redis_unavailable`, 504 `timeout` and
//! nothing else; `cached` and `degraded` as documented; no call slower than `MAX_CALL`.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::faults::FaultProxy;
use common::{wait_for, Redguard, RedisServer};
use serde_json::{json, Value};

const CLIENTS: usize = 16;
/// Each client's keys; the last one is read-mostly.
const KEYS_PER_CLIENT: usize = 4;
const CACHE_TTL: Duration = Duration::from_secs(3);
const CONFIG: &str = "\
redis:
  command_timeout: 200ms
breaker:
  failure_threshold: 3
  recovery_timeout: 500ms
  recovery_jitter: 0.2
  recovery_timeout_max: 2s
cache:
  ttl: 3s
";
/// A call slower than this is a hang: every call is bounded by the 200 ms command timeout, and this leaves
/// room for a loaded 2-core machine.
const MAX_CALL: Duration = Duration::from_secs(2);
const MAX_RSS_KIB: u64 = 64 * 1024;
const MAX_FDS: usize = 200;
/// At most this many violations are kept word for word (all are counted).
const KEEP: usize = 40;
/// Calls remembered per key, to explain a violation.
const HISTORY: usize = 12;

fn soak_duration() -> Duration {
    let secs = std::env::var("REDGUARD_SOAK_SECS")
        .ok()
        .map(|s| s.parse::<u64>().expect("REDGUARD_SOAK_SECS is a number of seconds"))
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// A tiny PRNG (splitmix64), so the workload needs no dependency.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Rng(now.as_nanos() as u64 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one key may hold; see the module documentation.
struct KeyModel {
    name: String,
    /// What a `source: redis` read may return (None: no such key).
    redis: BTreeSet<Option<String>>,
    /// What the fallback cache holds, and the end of the call that stored it.
    cache: Option<(String, Instant)>,
    /// Values refused with `circuit_open` since the last acknowledged write: they never left redguard. (Only to
    /// name the violation precisely: being unique, they are never in `redis` either. Forgotten on each
    /// acknowledgement, so a long soak does not pile them up.)
    refused: BTreeSet<String>,
    /// The restart counter at the end of the last call on this key.
    restarts_seen: u64,
    /// The last few calls on this key, to explain a violation.
    history: VecDeque<String>,
}

impl KeyModel {
    fn new(name: String) -> KeyModel {
        KeyModel {
            name,
            redis: BTreeSet::from([None]),
            cache: None,
            refused: BTreeSet::new(),
            restarts_seen: 0,
            history: VecDeque::new(),
        }
    }

    /// Before a call that starts at restart count `at`: what a kill since the last call may have done. A whole
    /// kill in between leaves nothing; one that only overlapped (or may still be under way) may have.
    fn before(&mut self, at: u64) {
        self.redis = self.redis_now(at);
    }

    /// What Redis may hold now, at restart count `at`, without touching the model.
    fn redis_now(&self, at: u64) -> BTreeSet<Option<String>> {
        let last = self.restarts_seen;
        if last.is_multiple_of(2) && at >= last + 2 {
            BTreeSet::from([None])
        } else if at != last || !at.is_multiple_of(2) {
            let mut set = self.redis.clone();
            set.insert(None);
            set
        } else {
            self.redis.clone()
        }
    }

    fn redis_allows(&self, value: &Option<String>, overlapped_a_kill: bool) -> bool {
        self.redis.contains(value) || (overlapped_a_kill && value.is_none())
    }
}

/// Counts for the summary.
#[derive(Default)]
struct Totals {
    requests: u64,
    by_source: BTreeMap<String, u64>,
    errors_by_code: BTreeMap<String, u64>,
    max_latency: Duration,
    /// Answers by source (or error code), for each phase of the schedule.
    by_phase: BTreeMap<String, BTreeMap<String, u64>>,
    violations: Vec<String>,
    violation_count: u64,
}

struct Shared<'a> {
    rg: &'a Redguard,
    began: Instant,
    stop: AtomicBool,
    restarts: AtomicU64,
    /// The phase of the fault schedule in force.
    phase: Mutex<Phase>,
    totals: Mutex<Totals>,
}

impl Shared<'_> {
    fn violation(&self, what: String) {
        let mut t = self.totals.lock().unwrap();
        t.violation_count += 1;
        if t.violations.len() < KEEP {
            t.violations.push(what);
        }
    }
}

/// One call, or None if redguard gave no HTTP answer at all (it died, or hung past the client's 10 s).
fn send(rg: &Redguard, body: &Value) -> Option<(u16, Value)> {
    let text = body.to_string();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| rg.cmd(&text))).ok()?;
    let json = serde_json::from_str(&r.body).unwrap_or_else(|_| json!({"unparseable": r.body}));
    Some((r.status, json))
}

/// Checks the shape of a failed call: the documented codes only, `degraded`, and `cached` as the op implies.
fn error_code(status: u16, body: &Value, cached: bool) -> Result<&str, String> {
    let code = body["error"]["code"].as_str().unwrap_or("");
    let documented = matches!(
        (status, code),
        (503, "circuit_open") | (503, "redis_unavailable") | (504, "timeout")
    );
    if !documented {
        return Err(format!("undocumented answer {status} {body}"));
    }
    if body["degraded"] != true || body["cached"] != cached {
        return Err(format!("expected degraded and cached={cached}: {status} {body}"));
    }
    Ok(code)
}

/// One client: its own keys, one request at a time, every answer checked against the model.
fn client(shared: &Shared, id: usize) -> Vec<KeyModel> {
    let mut keys: Vec<KeyModel> = (0..KEYS_PER_CLIENT)
        .map(|k| KeyModel::new(format!("soak:{id}:{k}")))
        .collect();
    let mut rng = Rng::seeded(id as u64);
    let mut writes = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let index = rng.below(KEYS_PER_CLIENT as u64) as usize;
        let key = &mut keys[index];
        // The last key is read-mostly, so that its cache entry outlives an outage and must expire.
        let roll = if index == KEYS_PER_CLIENT - 1 {
            if rng.below(500) == 0 {
                0
            } else {
                50
            }
        } else {
            rng.below(100)
        };
        let (body, value) = if roll < 45 {
            writes += 1;
            let value = format!("c{id}-w{writes}");
            (json!({"op": "set", "key": key.name, "value": value}), Some(value))
        } else if roll < 92 {
            (json!({"op": "get", "key": key.name}), None)
        } else {
            (json!({"op": "del", "keys": [key.name]}), None)
        };
        let at = shared.restarts.load(Ordering::SeqCst);
        let phase = *shared.phase.lock().unwrap();
        key.before(at);
        let started = Instant::now();
        let Some((status, answer)) = send(shared.rg, &body) else {
            shared.violation(format!("{body}: no HTTP answer from redguard"));
            // The request may still be running in redguard: this client's model is no longer exact.
            return keys;
        };
        let ended = Instant::now();
        let end = shared.restarts.load(Ordering::SeqCst);
        let overlapped = at != end || !at.is_multiple_of(2);

        let verdict = match body["op"].as_str().unwrap() {
            "set" => check_set(key, value.unwrap(), status, &answer, ended),
            "get" => check_get(key, status, &answer, overlapped, started, ended),
            _ => check_del(key, status, &answer, overlapped),
        };
        // A kill during the call may have taken whatever Redis held, the effect of this call included.
        if overlapped {
            key.redis.insert(None);
        }
        key.restarts_seen = end;
        let latency = ended - started;
        {
            let mut t = shared.totals.lock().unwrap();
            t.requests += 1;
            t.max_latency = t.max_latency.max(latency);
            let outcome = match answer["source"].as_str() {
                Some(source) => {
                    *t.by_source.entry(source.to_owned()).or_default() += 1;
                    source.to_owned()
                }
                None => {
                    let code = format!("{status} {}", answer["error"]["code"].as_str().unwrap_or("?"));
                    *t.errors_by_code.entry(code.clone()).or_default() += 1;
                    code
                }
            };
            *t.by_phase
                .entry(format!("{phase:?}"))
                .or_default()
                .entry(outcome)
                .or_default() += 1;
        }
        if key.history.len() == HISTORY {
            key.history.pop_front();
        }
        key.history.push_back(format!(
            "{:>8.3}s {phase:?} restarts {at}..{end}: {body} -> {status} {answer} in {latency:?} => {:?}",
            (started - shared.began).as_secs_f64(),
            key.redis
        ));
        if let Err(why) = verdict {
            shared.violation(format!(
                "{}: {why}\n    history:\n      {}",
                key.name,
                key.history.iter().cloned().collect::<Vec<_>>().join("\n      ")
            ));
        }
        if latency > MAX_CALL {
            shared.violation(format!("{body} took {latency:?}"));
        }
        thread::sleep(Duration::from_millis(5));
    }
    keys
}

fn check_set(key: &mut KeyModel, value: String, status: u16, answer: &Value, ended: Instant) -> Result<(), String> {
    if status == 200 {
        if *answer != json!({"result": true, "source": "redis"}) {
            return Err(format!("unexpected success {answer}"));
        }
        key.redis = BTreeSet::from([Some(value.clone())]);
        key.refused.clear();
        key.cache = Some((value, ended));
        return Ok(());
    }
    // A plain SET that did not reach Redis is kept in the cache, and the answer says so.
    let code = error_code(status, answer, true)?;
    if code == "circuit_open" {
        key.refused.insert(value.clone());
    } else {
        key.redis.insert(Some(value.clone()));
    }
    key.cache = Some((value, ended));
    Ok(())
}

fn check_get(
    key: &mut KeyModel,
    status: u16,
    answer: &Value,
    overlapped: bool,
    started: Instant,
    ended: Instant,
) -> Result<(), String> {
    if status != 200 {
        return Err(format!("a read must always be answered: {status} {answer}"));
    }
    let result = match &answer["result"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => return Err(format!("not a string value: {other}")),
    };
    match answer["source"].as_str() {
        Some("redis") => {
            if answer.get("degraded").is_some() {
                return Err(format!("a Redis answer marked degraded: {answer}"));
            }
            // Values are unique per write, so this one was never sent anywhere.
            if let Some(v) = result.as_ref().filter(|v| key.refused.contains(*v)) {
                return Err(format!("{v:?} was refused with circuit_open, yet Redis returned it"));
            }
            if !key.redis_allows(&result, overlapped) {
                return Err(format!("Redis answered {result:?}; it may hold only {:?}", key.redis));
            }
            key.cache = result.map(|v| (v, ended));
        }
        Some("cache") => {
            if answer["degraded"] != true {
                return Err(format!("a cache answer not marked degraded: {answer}"));
            }
            match &key.cache {
                Some((v, stored)) if Some(v) == result.as_ref() => {
                    if started >= *stored + CACHE_TTL {
                        return Err(format!(
                            "served {v:?} from the cache {:?} after it was stored (ttl {CACHE_TTL:?})",
                            started - *stored
                        ));
                    }
                }
                held => return Err(format!("the cache answered {result:?}; it holds {held:?}")),
            }
        }
        Some("default") => {
            if result.is_some() || answer["degraded"] != true {
                return Err(format!("a default answer is null and degraded: {answer}"));
            }
        }
        _ => return Err(format!("no source: {answer}")),
    }
    Ok(())
}

fn check_del(key: &mut KeyModel, status: u16, answer: &Value, overlapped: bool) -> Result<(), String> {
    if status == 200 {
        let removed = answer["result"].as_i64();
        if answer["source"] != "redis" || !matches!(removed, Some(0 | 1)) {
            return Err(format!("unexpected success {answer}"));
        }
        // DEL says whether the key existed: that must be possible too.
        let existed = removed == Some(1);
        let possible = if existed {
            key.redis.iter().any(Option::is_some)
        } else {
            key.redis.contains(&None) || overlapped
        };
        if !possible {
            return Err(format!("DEL removed {removed:?}; Redis may hold only {:?}", key.redis));
        }
        key.redis = BTreeSet::from([None]);
        key.refused.clear();
        key.cache = None;
        return Ok(());
    }
    let code = error_code(status, answer, false)?;
    if code != "circuit_open" {
        // It may have been applied: the cache dropped the key, and Redis may or may not hold it.
        key.redis.insert(None);
        key.cache = None;
    }
    Ok(())
}

/// Resident memory (KiB) and open descriptors of a process, from /proc. None once it is gone (or a zombie).
fn process_usage(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
        return None;
    }
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// One step of the fault schedule.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Calm,
    /// Replies slower than usual, within the command timeout.
    SlowReplies,
    /// Replies slower than the command timeout.
    TimeoutReplies,
    Resets,
    CutReplies,
    BlackHole,
    Refuse,
    /// Kill Redis, stay down for the phase, restart it empty.
    KillAndRestart,
}

const SCHEDULE: [(Phase, u64); 14] = [
    (Phase::Calm, 3),
    (Phase::SlowReplies, 5),
    (Phase::TimeoutReplies, 4),
    (Phase::Calm, 3),
    (Phase::Resets, 5),
    (Phase::Calm, 2),
    (Phase::CutReplies, 5),
    (Phase::Calm, 2),
    (Phase::BlackHole, 4),
    (Phase::Calm, 3),
    (Phase::Refuse, 3),
    (Phase::Calm, 2),
    (Phase::KillAndRestart, 2),
    (Phase::Calm, 4),
];

/// Runs the fault schedule until `deadline`, sampling redguard's memory and descriptors every half second.
/// Sleeping here paces the faults: it is the workload, not a wait for a condition.
fn inject_faults(shared: &Shared, proxy: &FaultProxy, redis: &mut RedisServer, deadline: Instant) -> Usage {
    let pid = shared.rg.pid();
    let mut usage = Usage::default();
    let mut kills = 0;
    let sample = |usage: &mut Usage| match process_usage(pid) {
        Some((rss, fds)) => {
            usage.max_rss_kib = usage.max_rss_kib.max(rss);
            usage.max_fds = usage.max_fds.max(fds);
        }
        None => usage.exited = true,
    };
    'schedule: for (phase, secs) in SCHEDULE.iter().cycle().copied() {
        let until = Instant::now() + Duration::from_secs(secs);
        eprintln!(
            "soak: {:>8.3}s {phase:?} for {secs}s",
            shared.began.elapsed().as_secs_f64()
        );
        *shared.phase.lock().unwrap() = phase;
        match phase {
            Phase::Calm => proxy.pass(),
            Phase::SlowReplies => proxy.jitter(Duration::from_millis(20), Duration::from_millis(120)),
            Phase::TimeoutReplies => proxy.jitter(Duration::from_millis(250), Duration::from_millis(450)),
            Phase::BlackHole => proxy.black_hole(),
            Phase::Refuse => {
                proxy.refuse();
                proxy.reset_all();
            }
            Phase::KillAndRestart => {
                shared.restarts.fetch_add(1, Ordering::SeqCst);
                redis.kill();
                shared.restarts.fetch_add(1, Ordering::SeqCst);
                kills += 1;
            }
            Phase::Resets | Phase::CutReplies => proxy.pass(),
        }
        let mut next_fault = Instant::now();
        let mut next_sample = Instant::now();
        while Instant::now() < until {
            if Instant::now() >= deadline || usage.exited {
                break 'schedule;
            }
            if Instant::now() >= next_fault {
                match phase {
                    Phase::Resets => {
                        proxy.reset_all();
                        next_fault += Duration::from_millis(250);
                    }
                    Phase::CutReplies => {
                        proxy.cut_next_replies(1);
                        next_fault += Duration::from_millis(150);
                    }
                    _ => next_fault = until,
                }
            }
            if Instant::now() >= next_sample {
                sample(&mut usage);
                next_sample += Duration::from_millis(500);
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Phase::KillAndRestart = phase {
            redis.restart();
        }
    }
    if redis.cmd(&["PING"]).is_none() {
        // The deadline fell inside the outage.
        redis.restart();
    }
    proxy.pass();
    sample(&mut usage);
    usage.kills = kills;
    usage
}

#[derive(Debug, Default)]
struct Usage {
    max_rss_kib: u64,
    max_fds: usize,
    exited: bool,
    kills: u32,
}

#[test]
fn sixteen_clients_through_a_minute_of_faults_never_see_a_wrong_answer() {
    let mut redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port);
    let rg = Redguard::start(&proxy.url(), CONFIG);
    let duration = soak_duration();
    let shared = Shared {
        rg: &rg,
        began: Instant::now(),
        stop: AtomicBool::new(false),
        restarts: AtomicU64::new(0),
        phase: Mutex::new(Phase::Calm),
        totals: Mutex::new(Totals::default()),
    };
    let started = Instant::now();
    let (models, usage) = thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                s.spawn({
                    let shared = &shared;
                    move || client(shared, id)
                })
            })
            .collect();
        let usage = inject_faults(&shared, &proxy, &mut redis, started + duration);
        shared.stop.store(true, Ordering::SeqCst);
        let models: Vec<Vec<KeyModel>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (models, usage)
    });
    let ran = started.elapsed();
    assert!(!usage.exited, "redguard exited during the soak; log:\n{}", rg.log());

    // The faults are over: redguard heals by itself, and Redis holds only what the model allows.
    wait_for("the breaker to close after the faults", Duration::from_secs(20), || {
        (rg.breaker_state() == "closed").then_some(())
    });
    for key in models.iter().flatten() {
        let (status, answer) = send(&rg, &json!({"op": "get", "key": key.name})).expect("redguard answers");
        let allowed = key.redis_now(shared.restarts.load(Ordering::SeqCst));
        let value = answer["result"].as_str().map(str::to_owned);
        if status != 200 || answer["source"] != "redis" || !allowed.contains(&value) {
            shared.violation(format!(
                "{}: after the faults, {status} {answer}; Redis may hold only {allowed:?}",
                key.name
            ));
        }
        // And Redis itself, asked directly.
        let direct = redis.cmd(&["GET", &key.name]).expect("Redis answers");
        let direct = (!direct.is_empty()).then_some(direct);
        if !allowed.contains(&direct) {
            shared.violation(format!(
                "{}: Redis holds {direct:?}; the model allows only {allowed:?}",
                key.name
            ));
        }
    }
    let usage = {
        let (rss, fds) = process_usage(rg.pid()).expect("redguard is still running");
        Usage {
            max_rss_kib: usage.max_rss_kib.max(rss),
            max_fds: usage.max_fds.max(fds),
            ..usage
        }
    };

    let totals = shared.totals.into_inner().unwrap();
    eprintln!(
        "soak summary: {:.0?} with {CLIENTS} clients: {} requests; answers by source {:?}; errors by code {:?}; \
         max latency {:?}; faults: {}, {} Redis kill(s) + restart; redguard max RSS {} KiB, max open fds {}; \
         {} violation(s)",
        ran,
        totals.requests,
        totals.by_source,
        totals.errors_by_code,
        totals.max_latency,
        proxy.stats(),
        usage.kills,
        usage.max_rss_kib,
        usage.max_fds,
        totals.violation_count
    );
    for (phase, outcomes) in &totals.by_phase {
        eprintln!("soak:   during {phase}: {outcomes:?}");
    }
    assert!(
        totals.violations.is_empty(),
        "{} violation(s), first ones:\n{}\nredguard log (tail):\n{}",
        totals.violation_count,
        totals.violations.join("\n"),
        tail(&rg.log(), 40)
    );
    assert!(totals.by_source.get("redis").copied().unwrap_or(0) > 0);
    assert!(
        usage.max_rss_kib < MAX_RSS_KIB,
        "redguard RSS reached {} KiB",
        usage.max_rss_kib
    );
    assert!(usage.max_fds < MAX_FDS, "redguard had {} open fds", usage.max_fds);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
