//! Lua scripts: EVAL by hash when Redis should already have the script, recovering from NOSCRIPT by itself.
//!
//! The registry remembers, per sidecar and in memory, the body of every script that ran successfully through
//! it, by SHA1 (bounded: [`MAX_SCRIPTS`] scripts of at most [`MAX_SCRIPT_BYTES`] each, least recently used
//! forgotten first). With it:
//! - `eval` sends EVALSHA when the script is in the registry, else EVAL. If Redis answers NOSCRIPT (its script
//!   cache was flushed, or Redis restarted), the same call sends EVAL with the body, so the application never
//!   sees NOSCRIPT for a script it sent through `eval`.
//! - `evalsha` sends EVALSHA. On NOSCRIPT, if the registry knows the body for that SHA, the same call sends
//!   EVAL with it; otherwise the NOSCRIPT error is the answer (`422 redis_error`, "NOSCRIPT ...").
//!
//! The retry is part of the same breaker call; each of its two round trips is bounded by the command timeout.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use redis::Value;

use super::{CallError, Resilient, Unanswered};
use crate::backend::{Backend, BackendError};
use crate::metrics::RedisCall;
use crate::op::cmd::script_cmd;
use crate::op::Bytes;

/// Most scripts the registry remembers.
pub(super) const MAX_SCRIPTS: usize = 256;
/// Larger scripts are not remembered (they are sent with EVAL every time), so the registry stays under
/// `MAX_SCRIPTS * MAX_SCRIPT_BYTES` (16 MiB).
pub(super) const MAX_SCRIPT_BYTES: usize = 64 * 1024;

/// A script with its SHA1, as Redis names it.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    pub code: Cow<'a, str>,
    pub sha: String,
}

impl<'a> Script<'a> {
    pub fn new(code: &'a str) -> Script<'a> {
        Script {
            code: Cow::Borrowed(code),
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

/// Bodies of the scripts that ran through this sidecar, by SHA1.
pub struct ScriptRegistry(Mutex<LruCache<String, Arc<str>>>);

impl Default for ScriptRegistry {
    fn default() -> Self {
        ScriptRegistry(Mutex::new(LruCache::new(
            NonZeroUsize::new(MAX_SCRIPTS).expect("non-zero"),
        )))
    }
}

impl ScriptRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<str>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn knows(&self, sha: &str) -> bool {
        self.lock().contains(sha)
    }

    pub fn body(&self, sha: &str) -> Option<Arc<str>> {
        self.lock().get(sha).cloned()
    }

    pub fn remember(&self, script: &Script<'_>) {
        if script.code.len() <= MAX_SCRIPT_BYTES {
            let mut lru = self.lock();
            if lru.get(&script.sha).is_none() {
                lru.put(script.sha.clone(), Arc::from(script.code.as_ref()));
            }
        }
    }
}

fn is_noscript(result: &Result<Value, BackendError>) -> bool {
    matches!(result, Err(BackendError::App(m)) if m.starts_with("NOSCRIPT"))
}

impl<B: Backend> Resilient<B> {
    /// Runs `script` (see the module docs); `label` names the call in the metrics.
    pub(super) async fn eval(
        &self,
        label: RedisCall,
        script: &Script<'_>,
        keys: &[Bytes<'_>],
        args: &[Bytes<'_>],
    ) -> Result<Value, Unanswered> {
        // Each command is built only when it is sent: not at all while the circuit is open, and the EVAL (a
        // copy of the whole body) only after Redis answered NOSCRIPT.
        let by_body = || script_cmd("EVAL", &script.code, keys, args);
        let result = if self.scripts.knows(&script.sha) {
            self.guarded(label, || {
                self.within_one_timeout(async {
                    let first = self
                        .backend
                        .query(&script_cmd("EVALSHA", &script.sha, keys, args))
                        .await;
                    if is_noscript(&first) {
                        self.backend.query(&by_body()).await
                    } else {
                        first
                    }
                })
            })
            .await
        } else {
            self.guarded(label, || async move { self.backend.query(&by_body()).await })
                .await
        };
        if result.is_ok() {
            self.scripts.remember(script);
        }
        result
    }

    /// Runs `script` for a caller outside the client (the rate limiter): the reply, or the [`CallError`] that
    /// says why there is none (`CallError::Redis` for an application error; any other means Redis could not
    /// serve it, and no write was kept in the cache).
    pub(crate) async fn run_script(
        &self,
        label: RedisCall,
        script: &Script<'_>,
        keys: &[Bytes<'_>],
        args: &[Bytes<'_>],
    ) -> Result<Value, CallError> {
        self.eval(label, script, keys, args)
            .await
            .map_err(|unanswered| match unanswered {
                Unanswered::App(message) => CallError::Redis(message),
                Unanswered::Failed(failure) => failure.into_error(false),
            })
    }

    /// Runs the script Redis knows as `sha`, with the registry's body as the way back from NOSCRIPT.
    pub(super) async fn evalsha(
        &self,
        label: RedisCall,
        sha: &str,
        keys: &[Bytes<'_>],
        args: &[Bytes<'_>],
    ) -> Result<Value, Unanswered> {
        self.guarded(label, || {
            self.within_one_timeout(async {
                let first = self.backend.query(&script_cmd("EVALSHA", sha, keys, args)).await;
                match self.scripts.body(sha) {
                    Some(body) if is_noscript(&first) => {
                        self.backend.query(&script_cmd("EVAL", &body, keys, args)).await
                    }
                    _ => first,
                }
            })
        })
        .await
    }

    /// Bounds the EVALSHA-then-EVAL pair by one command timeout, as every other call is: each query has its
    /// own timeout, and the application must never wait for two.
    async fn within_one_timeout(
        &self,
        pair: impl std::future::Future<Output = Result<Value, BackendError>>,
    ) -> Result<Value, BackendError> {
        let timeout = self.breaker.settings().probe_timeout;
        tokio::time::timeout(timeout, pair)
            .await
            .unwrap_or(Err(BackendError::Timeout))
    }

    /// The body to send instead of EVALSHA inside a pipeline, where there is no second round trip to recover
    /// from NOSCRIPT: known scripts go by body.
    pub(super) fn script_body(&self, sha: &str) -> Option<Arc<str>> {
        self.scripts.body(sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_named_by_their_sha1_and_big_ones_are_not_remembered() {
        let s = Script::new("return 1");
        assert_eq!(s.sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        let registry = ScriptRegistry::default();
        assert!(!registry.knows(&s.sha));
        registry.remember(&s);
        assert_eq!(registry.body(&s.sha).as_deref(), Some("return 1"));
        let big = "x".repeat(MAX_SCRIPT_BYTES + 1);
        let big = Script::new(&big);
        registry.remember(&big);
        assert!(!registry.knows(&big.sha));
    }

    #[test]
    fn the_registry_is_bounded() {
        let registry = ScriptRegistry::default();
        let codes: Vec<String> = (0..=MAX_SCRIPTS).map(|i| format!("return {i}")).collect();
        for code in &codes {
            registry.remember(&Script::new(code));
        }
        assert!(!registry.knows(&Script::new(&codes[0]).sha), "the oldest was forgotten");
        assert!(registry.knows(&Script::new(&codes[MAX_SCRIPTS]).sha));
    }
}
