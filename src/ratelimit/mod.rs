//! The sliding-window rate limiter behind `POST /v1/ratelimit`.
//!
//! In Redis, one Lua script on a sorted set per key does the whole check atomically: drop the entries older
//! than the window, count the rest, add `cost` entries if they fit, set PEXPIRE to the window, and work out
//! when a call of the same cost would fit (`reset_ms`). The script reads Redis's own clock (`TIME`) rather than
//! taking the time from the caller: every sidecar of a fleet then judges by one clock, so skew between hosts
//! cannot stretch or shrink anyone's window. (TIME before a write needs effect replication, Redis's only mode
//! since 7.0 and the default since 5.0.) Entries are named `<sidecar id>-<call number>:<i>`: unique per
//! sidecar (a random id drawn at start) and per call (a counter), so concurrent callers never collide, even
//! in the same microsecond.
//!
//! The script goes through the resilient client like any call: one breaker call, EVALSHA after the first use.
//! When Redis cannot decide, `ratelimit.on_unavailable` does: `local` asks this sidecar's own limiter
//! ([`local`], same semantics), `allow` fails open, `deny` fails closed. Those answers say where they came
//! from and that they are degraded.

pub mod local;

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::backend::Backend;
use crate::client::{CallError, Failure, Resilient, Script, Unanswered};
use crate::clock::SharedClock;
use crate::config::{RateLimitConfig, RateLimitFallback};
use crate::metrics::{DecisionSource, RedisCall};

pub use local::Limit;

/// Largest `limit` accepted: each allowed unit is one sorted-set entry while it counts.
pub const MAX_LIMIT: u64 = 100_000;
/// Longest `window_ms` accepted (one day).
pub const MAX_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Prefix of the Redis keys the limiter owns, so a limiter key never collides with application data.
pub const KEY_PREFIX: &[u8] = b"redguard:ratelimit:";

/// KEYS[1]: the window's sorted set. ARGV: limit, window in ms, cost, entry name prefix.
/// Returns {allowed (1/0), remaining, reset_ms}. Scores are Redis's clock in microseconds.
const SCRIPT: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) * 1000
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
local allowed = used + cost <= limit
if allowed then
  local batch = {}
  for i = 1, cost do
    batch[#batch + 1] = now
    batch[#batch + 1] = ARGV[4] .. ':' .. i
    if #batch >= 1000 or i == cost then
      redis.call('ZADD', key, unpack(batch))
      batch = {}
    end
  end
  used = used + cost
  redis.call('PEXPIRE', key, ARGV[2])
end
local reset = 0
local need = used + cost - limit
if need > 0 then
  local nth = redis.call('ZRANGE', key, need - 1, need - 1, 'WITHSCORES')
  reset = math.ceil((tonumber(nth[2]) + window - now) / 1000)
end
return {allowed and 1 or 0, limit - used, reset}
"#;

/// One decision, wherever it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Cost still allowed in the window after this call (for `allow`, what a fresh window would leave).
    pub remaining: u64,
    /// Milliseconds until a call of the same cost would be allowed; 0 when it would be now (or is unknown).
    pub reset_ms: u64,
    pub source: DecisionSource,
}

/// The limiter: the script in Redis, and the fallback decided by configuration.
pub struct RateLimiter<B> {
    client: Arc<Resilient<B>>,
    local: local::LocalLimiter,
    fallback: RateLimitFallback,
    script: Script<'static>,
    /// This sidecar's part of every entry name.
    instance: String,
    calls: AtomicU64,
}

impl<B: Backend> RateLimiter<B> {
    pub fn new(client: Arc<Resilient<B>>, cfg: &RateLimitConfig, clock: SharedClock) -> Self {
        // RandomState is seeded from the OS per process: a cheap random id without another dependency.
        let mut id = std::collections::hash_map::RandomState::new().build_hasher();
        id.write_u32(std::process::id());
        RateLimiter {
            client,
            local: local::LocalLimiter::new(cfg.local_max_keys, clock),
            fallback: cfg.on_unavailable,
            script: Script::new(SCRIPT),
            instance: format!("{:016x}", id.finish()),
            calls: AtomicU64::new(0),
        }
    }

    /// Checks (and, if allowed, counts) one call of `limit.cost` against `key`'s window.
    pub async fn check(&self, key: &[u8], limit: &Limit) -> Result<Decision, CallError> {
        let redis_key = [KEY_PREFIX, key].concat();
        let entry = format!("{}-{}", self.instance, self.calls.fetch_add(1, Ordering::Relaxed));
        let keys = [Cow::Borrowed(redis_key.as_slice())];
        let args = [
            limit.limit.to_string(),
            (limit.window.as_millis() as u64).to_string(),
            limit.cost.to_string(),
            entry,
        ];
        let args = args.each_ref().map(|a| Cow::Borrowed(a.as_bytes()));
        let result = self.client.eval(RedisCall::RateLimit, &self.script, &keys, &args).await;
        let decision = match result {
            Ok(value) => {
                parse(&value).ok_or_else(|| CallError::Redis(format!("unexpected reply to ratelimit: {value:?}")))?
            }
            Err(Unanswered::App(message)) => return Err(CallError::Redis(message)),
            Err(Unanswered::Failed(failure)) => self.fallback(key, limit, &failure),
        };
        self.client
            .metrics()
            .ratelimit_decision(decision.source, decision.allowed);
        Ok(decision)
    }

    fn fallback(&self, key: &[u8], limit: &Limit, failure: &Failure) -> Decision {
        match self.fallback {
            RateLimitFallback::Local => {
                let v = self.local.check(key, limit);
                Decision {
                    allowed: v.allowed,
                    remaining: v.remaining,
                    reset_ms: ceil_ms(v.reset),
                    source: DecisionSource::Local,
                }
            }
            RateLimitFallback::Allow => Decision {
                allowed: true,
                remaining: limit.limit - limit.cost,
                reset_ms: 0,
                source: DecisionSource::Default,
            },
            RateLimitFallback::Deny => Decision {
                allowed: false,
                remaining: 0,
                // When the circuit is open, Redis will not be asked again before this (unknown, 0, while it is
                // forced open).
                reset_ms: match failure {
                    Failure::Rejected(Some(retry_after)) => ceil_ms(*retry_after),
                    _ => 0,
                },
                source: DecisionSource::Default,
            },
        }
    }
}

fn ceil_ms(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000) as u64
}

/// `{allowed, remaining, reset_ms}` as the script returns it.
fn parse(value: &Value) -> Option<Decision> {
    let Value::Array(items) = value else {
        return None;
    };
    let ints: Vec<i64> = items
        .iter()
        .map(|v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match ints.as_slice() {
        &[allowed, remaining, reset] => Some(Decision {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).ok()?,
            reset_ms: u64::try_from(reset).ok()?,
            source: DecisionSource::Redis,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_reply_is_read_strictly() {
        let reply = Value::Array(vec![Value::Int(1), Value::Int(4), Value::Int(0)]);
        assert_eq!(
            parse(&reply),
            Some(Decision {
                allowed: true,
                remaining: 4,
                reset_ms: 0,
                source: DecisionSource::Redis
            })
        );
        assert_eq!(parse(&Value::Array(vec![Value::Int(0), Value::Int(0)])), None);
        assert_eq!(
            parse(&Value::Array(vec![Value::Int(0), Value::Int(-1), Value::Int(3)])),
            None
        );
        assert_eq!(parse(&Value::Nil), None);
    }

    #[test]
    fn milliseconds_round_up_so_waiting_reset_ms_is_always_enough() {
        assert_eq!(ceil_ms(Duration::from_micros(1)), 1);
        assert_eq!(ceil_ms(Duration::from_millis(3)), 3);
        assert_eq!(ceil_ms(Duration::from_micros(3001)), 4);
        assert_eq!(ceil_ms(Duration::ZERO), 0);
    }
}
