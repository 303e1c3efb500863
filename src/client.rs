//! The resilient client: every op goes through the breaker to the backend, and falls back to the cache.
//!
//! This is where the sidecar's promises are kept:
//! - a call the breaker rejects never touches Redis;
//! - a read that cannot be served by Redis is answered from the fallback cache, else with the caller's
//!   default, and says so (`source`);
//! - a write that did not reach Redis is never reported as written (a SET is kept in the cache for this pod's
//!   later reads, and the answer says that too);
//! - every successful answer from Redis refreshes or invalidates the cache, so it never serves a value older
//!   than the last acknowledged write; a write whose fate is unknown (it failed or timed out) drops the entry.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;
use tokio::sync::Notify;

use crate::backend::{Backend, BackendError};
use crate::breaker::{Breaker, Observer, Rejected, State, Transition};
use crate::cache::{FallbackCache, Lookup};
use crate::config::OnUnavailable;
use crate::metrics::{CallResult, Metrics};
use crate::op::{Class, Op, SafeDefault};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Redis,
    Cache,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Cache => "cache",
            Source::Default => "default",
        }
    }
}

/// An op's answer, independent of JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No value (a missing key; or, from the fallback, "use the caller's default").
    Nil,
    Bool(bool),
    Int(i64),
    Bytes(Vec<u8>),
    Hash(Pairs),
}

/// A call that was answered, by Redis or by the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub reply: Reply,
    pub source: Source,
    /// A write that did not reach Redis was kept in the fallback cache.
    pub cached: bool,
}

/// A call that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The breaker is open; Redis was not called.
    CircuitOpen { retry_after: Duration, cached: bool },
    /// Redis failed on this call.
    Unavailable { message: String, cached: bool },
    /// Redis did not answer within the command timeout.
    Timeout { cached: bool },
    /// Redis answered with an application error (or a reply this op cannot have).
    Redis(String),
}

/// Why Redis could not serve a call.
enum Failure {
    Rejected(Duration),
    Unavailable(String),
    Timeout,
}

/// The breaker, the cache and the backend, glued together.
pub struct Resilient<B> {
    backend: B,
    breaker: Breaker,
    cache: Arc<FallbackCache>,
    metrics: Arc<Metrics>,
    on_unavailable: OnUnavailable,
    /// Woken when the breaker opens, so the recovery task can schedule its probe.
    opened: Arc<Notify>,
}

/// Wakes the recovery task on every transition.
pub struct RecoveryWaker(pub Arc<Notify>);

impl Observer for RecoveryWaker {
    fn on_transition(&self, _t: &Transition, _last_error: Option<&str>) {
        self.0.notify_one();
    }
}

/// `cache.clear_on_close`: drops the fallback cache whenever the breaker closes.
pub struct ClearCacheOnClose(pub Arc<FallbackCache>);

impl Observer for ClearCacheOnClose {
    fn on_transition(&self, t: &Transition, _last_error: Option<&str>) {
        if t.to == State::Closed {
            self.0.clear();
        }
    }
}

impl<B: Backend> Resilient<B> {
    /// `opened` must be the Notify inside a [`RecoveryWaker`] registered with `breaker`.
    pub fn new(
        backend: B,
        breaker: Breaker,
        cache: Arc<FallbackCache>,
        metrics: Arc<Metrics>,
        on_unavailable: OnUnavailable,
        opened: Arc<Notify>,
    ) -> Self {
        Resilient {
            backend,
            breaker,
            cache,
            metrics,
            on_unavailable,
            opened,
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn cache(&self) -> &FallbackCache {
        &self.cache
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configured policy for calls that cannot reach Redis, unless a request overrides it.
    pub fn default_on_unavailable(&self) -> OnUnavailable {
        self.on_unavailable
    }

    /// Runs one op. `on_unavailable` is the request's (or the configured) policy for non-reads.
    pub async fn execute(&self, op: &Op<'_>, on_unavailable: OnUnavailable) -> Result<Served, CallError> {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(Rejected { retry_after }) => {
                self.metrics.call(CallResult::Rejected);
                return self.fallback(op, Failure::Rejected(retry_after), on_unavailable);
            }
        };
        let cmd = op.to_cmd();
        let started = Instant::now();
        let result = self.backend.query(&cmd).await;
        self.metrics.observe_redis(op.name(), started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                permit.success();
                self.healthy();
                self.metrics.call(CallResult::Success);
                let reply = self.absorb(op, value)?;
                Ok(Served {
                    reply,
                    source: Source::Redis,
                    cached: false,
                })
            }
            Err(BackendError::App(message)) => {
                permit.success();
                self.healthy();
                self.metrics.call(CallResult::AppError);
                Err(CallError::Redis(message))
            }
            Err(BackendError::ShardUnavailable(message)) => {
                // One cluster shard is down while others serve: its own node breaker counted this, the
                // sidecar-wide one must not (it would cut off the healthy shards). The permit is given back.
                drop(permit);
                self.metrics.call(CallResult::Failure);
                self.fallback(op, Failure::Unavailable(message), on_unavailable)
            }
            Err(err) => {
                let (message, failure) = match err {
                    BackendError::Timeout => ("timed out".to_owned(), Failure::Timeout),
                    BackendError::Unavailable(m) => (m.clone(), Failure::Unavailable(m)),
                    BackendError::App(_) | BackendError::ShardUnavailable(_) => unreachable!("handled above"),
                };
                permit.failure(&message);
                self.metrics.call(CallResult::Failure);
                self.metrics.redis_up.set(0);
                let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                self.metrics.last_failure_timestamp.set(unix.as_secs_f64());
                self.fallback(op, failure, on_unavailable)
            }
        }
    }

    fn healthy(&self) {
        self.metrics.redis_up.set(1);
    }

    /// Checks Redis once without the breaker, to report `redis_up` before the first call.
    pub async fn check_redis(&self) {
        let up = self.backend.query(&redis::cmd("PING")).await.is_ok();
        self.metrics.redis_up.set(i64::from(up));
    }

    /// Turns Redis's reply into the op's answer, and teaches the cache what Redis now holds.
    fn absorb(&self, op: &Op<'_>, value: Value) -> Result<Reply, CallError> {
        let unexpected = |v: &Value| CallError::Redis(format!("unexpected reply to {}: {v:?}", op.name().as_str()));
        let c = &self.cache;
        Ok(match (op, value) {
            (Op::Get { key }, Value::Nil) => {
                c.remove(key);
                Reply::Nil
            }
            (Op::Get { key }, Value::BulkString(v)) => {
                c.put_str(key, &v, None);
                Reply::Bytes(v)
            }
            (Op::Set { key, value, ttl_ms, .. }, Value::Okay) => {
                c.put_str(key, value, ttl_ms.map(Duration::from_millis));
                Reply::Bool(true)
            }
            (Op::Set { key, .. }, Value::Nil) => {
                // NX/XX not met: Redis kept a value we have not seen.
                c.remove(key);
                Reply::Bool(false)
            }
            (Op::Del { keys }, Value::Int(n)) => {
                keys.iter().for_each(|k| c.remove(k));
                Reply::Int(n)
            }
            (Op::Exists { .. } | Op::Ttl { .. }, Value::Int(n)) => Reply::Int(n),
            (Op::Expire { key, seconds }, Value::Int(n)) => {
                if n == 1 {
                    c.cap_expiry(key, Duration::from_secs((*seconds).max(0) as u64));
                } else {
                    c.remove(key);
                }
                Reply::Bool(n == 1)
            }
            (Op::Incr { key, .. }, Value::Int(n)) => {
                c.put_str(key, n.to_string().as_bytes(), None);
                Reply::Int(n)
            }
            (Op::HGet { key, field }, Value::BulkString(v)) => {
                c.set_hash_fields(key, &[(field, &v)]);
                Reply::Bytes(v)
            }
            (Op::HGet { key, field }, Value::Nil) => {
                c.remove_hash_fields(key, &[field]);
                Reply::Nil
            }
            (Op::HGetAll { key }, value) => {
                let pairs = hash_pairs(value).map_err(|v| unexpected(&v))?;
                c.put_hash(key, &pairs);
                Reply::Hash(pairs)
            }
            (Op::HSet { key, fields }, Value::Int(n)) => {
                let pairs: Vec<(&[u8], &[u8])> = fields.iter().map(|(f, v)| (f.as_ref(), v.as_ref())).collect();
                c.set_hash_fields(key, &pairs);
                Reply::Int(n)
            }
            (Op::HDel { key, fields }, Value::Int(n)) => {
                let fields: Vec<&[u8]> = fields.iter().map(AsRef::as_ref).collect();
                c.remove_hash_fields(key, &fields);
                Reply::Int(n)
            }
            (Op::Ping, Value::SimpleString(_) | Value::Okay) => Reply::Bool(true),
            (_, v) => return Err(unexpected(&v)),
        })
    }

    /// Answers a call Redis could not serve.
    fn fallback(&self, op: &Op<'_>, failure: Failure, on_unavailable: OnUnavailable) -> Result<Served, CallError> {
        match op.class() {
            Class::Read => Ok(self.read_fallback(op)),
            Class::Write(safe) => {
                let cached = self.forget_failed_write(op, &failure);
                if let (OnUnavailable::Default, Some(safe)) = (on_unavailable, safe) {
                    self.metrics.fallback_default.inc();
                    let reply = match safe {
                        SafeDefault::False => Reply::Bool(false),
                        SafeDefault::Zero => Reply::Int(0),
                    };
                    return Ok(Served {
                        reply,
                        source: Source::Default,
                        cached,
                    });
                }
                Err(match failure {
                    Failure::Rejected(retry_after) => CallError::CircuitOpen { retry_after, cached },
                    Failure::Unavailable(message) => CallError::Unavailable { message, cached },
                    Failure::Timeout => CallError::Timeout { cached },
                })
            }
        }
    }

    fn read_fallback(&self, op: &Op<'_>) -> Served {
        let lookup = match op {
            Op::Get { key } => lift(self.cache.get_str(key), Reply::Bytes),
            Op::HGet { key, field } => lift(self.cache.get_hash_field(key, field), Reply::Bytes),
            Op::HGetAll { key } => lift(self.cache.get_hash(key), Reply::Hash),
            _ => None,
        };
        match lookup {
            Some(reply) => {
                self.metrics.cache_hits.inc();
                self.metrics.fallback_cache.inc();
                Served {
                    reply,
                    source: Source::Cache,
                    cached: false,
                }
            }
            None => {
                self.metrics.cache_misses.inc();
                self.metrics.fallback_default.inc();
                Served {
                    reply: Reply::Nil,
                    source: Source::Default,
                    cached: false,
                }
            }
        }
    }

    /// Keeps the cache honest after a write that did not (or may not have) reached Redis.
    /// Returns whether the written value was kept in the cache.
    fn forget_failed_write(&self, op: &Op<'_>, failure: &Failure) -> bool {
        let c = &self.cache;
        match op {
            // As the original design did: this pod's later reads see the value, and the answer says it is cached.
            // With NX/XX the outcome depends on what Redis holds, which we cannot know.
            Op::Set {
                key,
                value,
                ttl_ms,
                nx: false,
                xx: false,
            } => {
                c.put_str(key, value, ttl_ms.map(Duration::from_millis));
                true
            }
            // A rejected call never left this process: what the cache holds is still what Redis holds.
            _ if matches!(failure, Failure::Rejected(_)) => false,
            Op::Set { key, .. }
            | Op::Expire { key, .. }
            | Op::Incr { key, .. }
            | Op::HSet { key, .. }
            | Op::HDel { key, .. } => {
                c.remove(key);
                false
            }
            Op::Del { keys } => {
                keys.iter().for_each(|k| c.remove(k));
                false
            }
            _ => false,
        }
    }

    /// Probes Redis when the open period ends, so the breaker closes again even if no application call
    /// arrives (an idle sidecar would otherwise stay open, and keep alerts firing, long after Redis is back).
    pub async fn run_recovery(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let woken = self.opened.notified();
            let snapshot = self.breaker.snapshot();
            let wait = match (snapshot.state, snapshot.until_half_open) {
                (State::Open, Some(wait)) => Some(wait),
                _ => None,
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = woken, if wait.is_none() => {}
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                    if self.breaker.state() == State::Open {
                        // Outcome already recorded by the breaker; nobody waits for the answer.
                        let _ = self.execute(&Op::Ping, OnUnavailable::Error).await;
                    }
                }
            }
        }
    }
}

fn lift<T>(lookup: Lookup<T>, f: impl FnOnce(T) -> Reply) -> Option<Reply> {
    match lookup {
        Lookup::Hit(v) => Some(f(v)),
        Lookup::Miss | Lookup::Expired => None,
    }
}

/// A hash as (field, value) pairs.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// HGETALL answers a flat array in RESP2 and a map in RESP3.
fn hash_pairs(value: Value) -> Result<Pairs, Value> {
    fn bytes(v: Value) -> Result<Vec<u8>, Value> {
        match v {
            Value::BulkString(b) => Ok(b),
            Value::SimpleString(s) => Ok(s.into_bytes()),
            other => Err(other),
        }
    }
    match value {
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                pairs.push((bytes(f)?, bytes(v)?));
            }
            Ok(pairs)
        }
        Value::Map(items) => items.into_iter().map(|(f, v)| Ok((bytes(f)?, bytes(v)?))).collect(),
        other => Err(other),
    }
}
