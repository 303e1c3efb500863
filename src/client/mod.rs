//! The resilient client: every call goes through the breaker to the backend, and falls back to the cache.
//!
//! This is where the sidecar's promises are kept, for typed ops, raw commands, pipelines and scripts alike:
//! - a call the breaker rejects never touches Redis (every kind of call goes through `Resilient::guarded`);
//! - a read that cannot be served by Redis is answered from the fallback cache, else with the caller's
//!   default, and says so (`source`);
//! - a write that did not reach Redis is never reported as written (a SET is kept in the cache for this pod's
//!   later reads, and the answer says that too);
//! - every successful answer from Redis refreshes or invalidates the cache, so it never serves a value older
//!   than the last acknowledged write; a write whose fate is unknown (it failed or timed out) drops the entry.
//!   Raw commands and scripts, whose effects the cache cannot model, drop every cached key they name
//!   (`raw`).
//!
//! Files: `answer` turns replies into answers and updates the cache; `raw` runs raw commands; `pipeline`
//! runs batches; `scripts` runs Lua with the SHA registry.

mod answer;
mod pipeline;
mod raw;
mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use redis::Value;

use crate::backend::{Backend, BackendError, SlotReply};
use crate::breaker::{Breaker, Observer, Rejected, State, Transition};
use crate::cache::FallbackCache;
use crate::config::OnUnavailable;
use crate::metrics::{CallResult, Metrics, RedisCall};
use crate::op::{Cached, Fallback, Op, SafeDefault};

pub use answer::Pairs;
pub(crate) use answer::{bulk_bytes, Ttls};
pub use pipeline::{pipeline_source, BatchError, Item, SlotAnswer};
pub(crate) use raw::forget_named;
pub use scripts::{Script, ScriptRegistry};

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
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// No value (a missing key; or, from the fallback, "use the caller's default").
    Nil,
    Bool(bool),
    Int(i64),
    /// A score (ZSCORE, ZINCRBY).
    Float(f64),
    Bytes(Vec<u8>),
    Hash(Pairs),
    /// Sorted-set members without scores, in order.
    Members(Vec<Vec<u8>>),
    /// Sorted-set members with their scores, in order.
    Scored(Vec<(Vec<u8>, f64)>),
    /// MGET from Redis: one value per key, `None` for a missing key.
    Values(Vec<Option<Vec<u8>>>),
    /// MGET from the fallback: per key, the cached value and where it came from (`None` + `Default` is a miss).
    Sourced(Vec<(Option<Vec<u8>>, Source)>),
    /// Redis's clock (TIME).
    Time {
        seconds: i64,
        microseconds: i64,
    },
    /// A reply passed through as Redis gave it: raw commands and scripts.
    Raw(redis::Value),
}

/// A call that was answered, by Redis or by the fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub reply: Reply,
    pub source: Source,
    /// A write that did not reach Redis was kept in the fallback cache.
    pub cached: bool,
}

impl Served {
    fn redis(reply: Reply) -> Served {
        Served {
            reply,
            source: Source::Redis,
            cached: false,
        }
    }
}

/// A call that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The breaker is open; Redis was not called.
    /// `retry_after` is `None` while the circuit is forced open.
    CircuitOpen {
        retry_after: Option<Duration>,
        cached: bool,
    },
    /// Redis failed on this call.
    Unavailable { message: String, cached: bool },
    /// Redis did not answer within the command timeout.
    Timeout { cached: bool },
    /// Redis answered with an application error (or a reply this op cannot have).
    Redis(String),
}

/// Why Redis could not serve a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Rejected(Option<Duration>),
    Unavailable(String),
    Timeout,
}

impl Failure {
    /// The error for a call nothing could answer; `cached` says whether a write was kept in the cache.
    pub(crate) fn into_error(self, cached: bool) -> CallError {
        match self {
            Failure::Rejected(retry_after) => CallError::CircuitOpen { retry_after, cached },
            Failure::Unavailable(message) => CallError::Unavailable { message, cached },
            Failure::Timeout => CallError::Timeout { cached },
        }
    }

    /// A rejected call never left this process: what the cache holds is still what Redis holds.
    fn reached_redis(&self) -> bool {
        !matches!(self, Failure::Rejected(_))
    }
}

/// What became of a guarded call that Redis did not answer with a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// Redis answered with an application error: it is healthy, the command was wrong.
    App(String),
    /// The breaker refused the call, or Redis failed or timed out.
    Failed(Failure),
}

/// The breaker, the cache and the backend, glued together.
pub struct Resilient<B> {
    backend: B,
    breaker: Breaker,
    cache: Arc<FallbackCache>,
    metrics: Arc<Metrics>,
    /// `cache.clear_on_close`, shared with the [`ClearCacheOnClose`] observer so a reload can switch it.
    clear_on_close: Arc<AtomicBool>,
    /// The Redis password connections authenticate with, if one was configured at start.
    password: Option<crate::backend::Password>,
    /// Woken when the breaker opens, so the recovery task can schedule its probe.
    opened: Arc<Notify>,
    scripts: ScriptRegistry,
}

/// Wakes the recovery task on every transition.
pub struct RecoveryWaker(pub Arc<Notify>);

impl Observer for RecoveryWaker {
    fn on_transition(&self, _t: &Transition, _last_error: Option<&str>) {
        self.0.notify_one();
    }
}

/// `cache.clear_on_close`: drops the fallback cache whenever the breaker closes, while `enabled` (a reload
/// switches it).
pub struct ClearCacheOnClose {
    pub cache: Arc<FallbackCache>,
    pub enabled: Arc<AtomicBool>,
}

impl Observer for ClearCacheOnClose {
    fn on_transition(&self, t: &Transition, _last_error: Option<&str>) {
        if t.to == State::Closed && self.enabled.load(Ordering::Relaxed) {
            self.cache.clear();
        }
    }
}

impl<B: Backend> Resilient<B> {
    /// `opened` must be the Notify inside a [`RecoveryWaker`] registered with `breaker`.
    pub(crate) fn new(
        backend: B,
        breaker: Breaker,
        cache: Arc<FallbackCache>,
        metrics: Arc<Metrics>,
        clear_on_close: Arc<AtomicBool>,
        password: Option<crate::backend::Password>,
        opened: Arc<Notify>,
    ) -> Self {
        Resilient {
            backend,
            breaker,
            cache,
            metrics,
            clear_on_close,
            password,
            opened,
            scripts: ScriptRegistry::default(),
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Applies a reloaded config's breaker and cache keys ([`crate::reload`]): the breaker (and, in cluster
    /// mode, every node's) keeps its state and takes the new settings, the cache evicts down to its new bounds.
    pub fn reconfigure(
        &self,
        breaker: crate::breaker::Settings,
        cache: crate::cache::CacheSettings,
        clear_on_close: bool,
    ) {
        self.backend.reconfigure_breakers(&breaker);
        self.breaker.reconfigure(breaker);
        self.cache.set_limits(cache);
        self.clear_on_close.store(clear_on_close, Ordering::Relaxed);
    }

    /// Whether the Redis password can change without a restart: one was configured at start.
    pub(crate) fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// A rotated Redis password (a reload read a changed `redis.password_file`): connections opened from now on
    /// use it, and open ones re-authenticate with it. Does nothing without a password at start.
    pub(crate) fn set_password(&self, password: &str) {
        if let Some(p) = &self.password {
            p.set(password);
        }
    }

    pub fn cache(&self) -> &FallbackCache {
        &self.cache
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cluster mode: each master's own breaker (see [`Backend::nodes`]); `None` in the other modes.
    pub fn nodes(&self) -> Option<Vec<crate::backend::NodeView>> {
        self.backend.nodes()
    }

    /// Runs one op. `on_unavailable` is the request's (or the configured) policy for non-reads.
    pub async fn execute(&self, op: &Op<'_>, on_unavailable: OnUnavailable) -> Result<Served, CallError> {
        let label = RedisCall::Op(op.name());
        // The script calls' futures are twice the size of all the others together (EVALSHA, then EVAL within
        // one timeout); boxed, they no longer make every request's future that large: the whole handler future
        // is moved on each request (into a box by axum's router then, into hyper's connection slot now), and
        // callgrind saw that copy as 16% of a GET's instructions.
        let asked = self.cache.now();
        let probes = self.ttl_probes(op);
        let result = match op {
            Op::Eval { script, keys, args } => Box::pin(self.eval(label, &Script::new(script), keys, args))
                .await
                .map(|v| (v, Vec::new())),
            Op::EvalSha { sha, keys, args } => Box::pin(self.evalsha(label, sha, keys, args))
                .await
                .map(|v| (v, Vec::new())),
            // The commands are built only once the breaker has granted the call: an open circuit turns the
            // op away without the work (a command's buffers, a pipeline's).
            _ if probes.is_empty() => self
                .guarded(label, || async move {
                    let cmd = op.to_cmd();
                    self.backend.query(&cmd).await
                })
                .await
                .map(|v| (v, Vec::new())),
            _ => {
                let send = || async move {
                    let mut pipe = redis::Pipeline::with_capacity(1 + probes.len());
                    pipe.add_command(op.to_cmd());
                    probes.iter().for_each(|key| {
                        pipe.add_command(answer::pttl_cmd(key));
                    });
                    self.query_with_ttls(&pipe).await
                };
                self.guarded(label, send).await
            }
        };
        match result {
            Ok((value, slots)) => {
                let ttls = Ttls {
                    asked,
                    replies: slots.get(1..).unwrap_or_default(),
                };
                Ok(Served::redis(self.answer_and_update_cache(op, value, ttls)?))
            }
            Err(Unanswered::App(message)) => {
                self.forget_after_app_error(op);
                Err(CallError::Redis(message))
            }
            Err(Unanswered::Failed(failure)) => self.fallback(op, failure, on_unavailable),
        }
    }

    /// The keys whose PTTL goes with `op`: none while the cache is off, since nothing would be kept.
    fn ttl_probes<'o, 'a>(&self, op: &'o Op<'a>) -> &'o [crate::op::Bytes<'a>] {
        if self.cache.is_enabled() {
            op.ttl_probes()
        } else {
            &[]
        }
    }

    /// Sends an op's command with its PTTL probes behind it (see `answer`): the op's reply, and every slot (the
    /// first, the op's, emptied). An application error on the op's own command is the call's, as if it had been
    /// sent alone.
    async fn query_with_ttls(&self, pipe: &redis::Pipeline) -> Result<(Value, Vec<SlotReply>), BackendError> {
        let mut slots = self.backend.query_then(pipe).await?;
        let first = match slots.first_mut() {
            Some(first) => std::mem::replace(first, Ok(Value::Nil)),
            None => return Err(BackendError::Unavailable("no reply to a command".into())),
        };
        first.map(|value| (value, slots)).map_err(BackendError::App)
    }

    /// Makes one call to Redis through the breaker: asks for a permit, runs `call` only if one is granted,
    /// reports the outcome to the breaker and the metrics. Every path to Redis goes through here.
    async fn guarded<T, F>(&self, label: RedisCall, call: impl FnOnce() -> F) -> Result<T, Unanswered>
    where
        F: Future<Output = Result<T, BackendError>>,
    {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(Rejected { retry_after }) => {
                self.metrics.call(CallResult::Rejected);
                return Err(Unanswered::Failed(Failure::Rejected(retry_after)));
            }
        };
        let started = Instant::now();
        let result = call().await;
        self.metrics.observe_redis(label, started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                permit.success();
                self.healthy();
                self.metrics.call(CallResult::Success);
                Ok(value)
            }
            Err(BackendError::App(message)) => {
                permit.success();
                self.healthy();
                self.metrics.call(CallResult::AppError);
                Err(Unanswered::App(message))
            }
            Err(BackendError::ShardUnavailable(message)) => {
                // One cluster shard is down while others serve: its own node breaker counted this, the
                // sidecar-wide one must not (it would cut off the healthy shards). The permit is given back.
                drop(permit);
                self.metrics.call(CallResult::Failure);
                Err(Unanswered::Failed(Failure::Unavailable(message)))
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
                Err(Unanswered::Failed(failure))
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

    /// Answers a call Redis could not serve.
    fn fallback(&self, op: &Op<'_>, failure: Failure, on_unavailable: OnUnavailable) -> Result<Served, CallError> {
        match op.fallback() {
            Fallback::Cache => Ok(self.read_fallback(op)),
            Fallback::NoCache(safe) => {
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
                Err(failure.into_error(cached))
            }
        }
    }

    /// The answer to a read Redis could not serve: the cache's, else "use the caller's default" (`Nil`).
    fn read_fallback(&self, op: &Op<'_>) -> Served {
        match op.cached(&self.cache) {
            Cached::One(Some(reply)) => {
                self.metrics.cache_hits.inc();
                self.metrics.fallback_cache.inc();
                Served {
                    reply,
                    source: Source::Cache,
                    cached: false,
                }
            }
            Cached::One(None) => {
                self.metrics.cache_misses.inc();
                self.metrics.fallback_default.inc();
                Served {
                    reply: Reply::Nil,
                    source: Source::Default,
                    cached: false,
                }
            }
            Cached::PerKey(values) => self.per_key_fallback(values),
        }
    }

    /// MGET answered key by key from the cache; the answer counts as from the cache if any key was.
    fn per_key_fallback(&self, values: Vec<(Option<Vec<u8>>, Source)>) -> Served {
        for (_, source) in &values {
            match source {
                Source::Cache => self.metrics.cache_hits.inc(),
                _ => self.metrics.cache_misses.inc(),
            }
        }
        let source = if values.iter().any(|(_, s)| *s == Source::Cache) {
            self.metrics.fallback_cache.inc();
            Source::Cache
        } else {
            self.metrics.fallback_default.inc();
            Source::Default
        };
        Served {
            reply: Reply::Sourced(values),
            source,
            cached: false,
        }
    }

    /// Keeps the cache honest after a write that did not (or may not have) reached Redis (the op's family file
    /// says how). Returns whether the written value was kept in the cache (the cache may refuse it: disabled,
    /// or the value larger than `cache.max_bytes`), which is what the answer's `cached` says.
    fn forget_failed_write(&self, op: &Op<'_>, failure: &Failure) -> bool {
        op.forget_failed_write(&self.cache, failure.reached_redis())
    }

    /// After an application error: a script may have written before it failed, so its keys are dropped.
    /// Every other op fails before changing anything.
    fn forget_after_app_error(&self, op: &Op<'_>) {
        op.forget_after_app_error(&self.cache);
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
