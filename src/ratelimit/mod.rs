//! The sliding-window rate limiter behind `POST /v1/ratelimit`.
//!
//! In Redis, one Lua script on a sorted set per key does the whole check atomically: forget the calls older
//! than the window, sum the costs of the rest, add one entry for this call if it fits, set PEXPIRE to the
//! window, and work out when a call of the same cost would fit (`reset_ms`). The script reads Redis's own clock
//! (`TIME`) rather than taking the time from the caller: every sidecar of a fleet then judges by one clock, so
//! skew between hosts cannot stretch or shrink anyone's window. (TIME before a write needs effect replication,
//! Redis's only mode since 7.0 and the default since 5.0.) Entries carry `<sidecar id>-<call number>`: unique
//! per sidecar (a random id drawn at start) and per call (a counter), so concurrent callers never collide, even
//! in the same microsecond.
//!
//! What one call may cost Redis is bounded, whatever its `cost`: one entry per allowed call carrying its cost and
//! a running total (see `SCRIPT`), so each call does O(log n) work on a key of n <= `limit` live entries and
//! deletes at most [`MAX_DROPPED`] expired ones. Measured on Redis 7.0.15 (`INFO commandstats` usec_per_call,
//! `MEMORY USAGE`), on a 2-core machine at load average 9, where a trivial EVAL took 21 us:
//!
//! | call | Redis time per call | key's memory |
//! |---|---|---|
//! | worst single call: `limit` 100000, `window_ms` 86400000, `cost` 100000, on a new key | 68 us | 136 B |
//! | the same call with the earlier script (one entry per unit of cost) | 408 ms | 10.4 MB |
//! | a denied call on a full key (100000 live entries: the binary search's worst case) | 157 us | 13.6 MB |
//! | a call on a key of 100000 entries that all left the window (it deletes 100) | 164 us | 13.6 MB |
//!
//! Memory is about 136 bytes per allowed call while it counts (at most `limit` per key, so 13.6 MB for a key that
//! took 100000 calls of cost 1 within its window). When such a key expires, Redis frees its entries at once:
//! about 10 ms for 100000 entries on that machine, in Redis's main thread unless `lazyfree-lazy-expire yes`.
//!
//! The script goes through the resilient client like any call: one breaker call, EVALSHA after the first use.
//! When Redis cannot decide, `ratelimit.on_unavailable` does: `local` asks this sidecar's own limiter
//! ([`local`], same semantics), `allow` fails open, `deny` fails closed. Those answers say where they came
//! from and that they are degraded.

pub(crate) mod local;

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use crate::backend::Backend;
use crate::client::{CallError, Resilient, Script};
use crate::clock::SharedClock;
use crate::config::{RateLimitConfig, RateLimitFallback};
use crate::metrics::{DecisionSource, RedisCall};

pub(crate) use local::Limit;

/// Largest `limit` accepted. Each allowed call (whatever its cost) is one sorted-set entry while it counts, so a
/// key holds at most `limit` live entries.
pub(crate) const MAX_LIMIT: u64 = 100_000;
/// Most entries that left the window one call deletes. The script writes it as a literal; a test holds the two
/// equal.
#[allow(dead_code)]
pub(crate) const MAX_DROPPED: u64 = 100;
/// Longest `window_ms` accepted (one day).
pub(crate) const MAX_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Prefix of the Redis keys the limiter owns, so a limiter key never collides with application data.
pub(crate) const KEY_PREFIX: &[u8] = b"redguard:ratelimit:";

/// KEYS[1]: the window's sorted set. ARGV: limit, window in ms, cost, entry id.
/// Returns {allowed (1/0), remaining, reset_ms}. Scores are Redis's clock in microseconds.
///
/// One entry per allowed call, `<running total, 16 digits>:<cost>:<id>`: the total is the sum of the costs allowed
/// on this key up to and including this call, so the cost in the window is the newest entry's total minus the
/// total before the oldest live one, and the entry whose departure makes room for a denied call is found by
/// binary search on the totals. Every step is O(log n) in the entries of the key (at most `limit` live ones), never
/// proportional to `cost`; entries that left the window are deleted at most [`MAX_DROPPED`] per call (the key's
/// PEXPIRE takes any rest). The time never runs backwards within a key (a clock step back counts as no time), so
/// scores, and totals, keep the order the entries were added in. A key holding an entry the script cannot read
/// (written by an earlier version, one entry per unit) is deleted and its window starts over.
const SCRIPT: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) * 1000
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function read(entry)
  local sum, c = string.match(entry or '', '^(%d+):(%d+):')
  return tonumber(sum), tonumber(c)
end

local function decide()
  local now = clock
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > now then
    now = tonumber(last[2])
  end
  local gone = redis.call('ZCOUNT', key, '-inf', string.format('%d', now - window))
  local drop = math.min(gone, 100)
  if drop > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, drop - 1)
  end
  gone = gone - drop
  local size = redis.call('ZCARD', key)
  local base, top = 0, 0
  if gone < size then
    local first_sum, first_cost = read(redis.call('ZRANGE', key, gone, gone)[1])
    top = read(last[1])
    if not first_sum or not first_cost or not top then
      return nil
    end
    base = first_sum - first_cost
  end
  local used = top - base
  local allowed = used + cost <= limit
  if allowed then
    top = top + cost
    redis.call('ZADD', key, string.format('%d', now), string.format('%016d:%d:%s', top, cost, ARGV[4]))
    redis.call('PEXPIRE', key, ARGV[2])
    used = used + cost
    size = size + 1
  end
  local reset = 0
  local need = used + cost - limit
  if need > 0 then
    local lo, hi = gone, size - 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local sum = read(redis.call('ZRANGE', key, mid, mid)[1])
      if not sum then
        return nil
      end
      if sum - base >= need then
        hi = mid
      else
        lo = mid + 1
      end
    end
    local nth = redis.call('ZRANGE', key, lo, lo, 'WITHSCORES')
    reset = math.ceil((tonumber(nth[2]) + window - now) / 1000)
  end
  return {allowed and 1 or 0, limit - used, reset}
end

local answer = decide()
if not answer then
  redis.call('DEL', key)
  answer = decide()
end
return answer
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
    /// `ratelimit.on_unavailable`, as [`RateLimitFallback`]'s index: a reload changes it.
    fallback: AtomicU8,
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
            fallback: AtomicU8::new(cfg.on_unavailable as u8),
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
        let result = self
            .client
            .run_script(RedisCall::RateLimit, &self.script, &keys, &args)
            .await;
        let decision = match result {
            Ok(value) => {
                parse(&value).ok_or_else(|| CallError::Redis(format!("unexpected reply to ratelimit: {value:?}")))?
            }
            Err(CallError::Redis(message)) => return Err(CallError::Redis(message)),
            Err(unavailable) => self.fallback(key, limit, &unavailable),
        };
        self.client
            .metrics()
            .ratelimit_decision(decision.source, decision.allowed);
        Ok(decision)
    }

    /// Applies a reloaded `ratelimit` section: the fallback to the next decisions, a smaller
    /// `local_max_keys` at once.
    pub fn reconfigure(&self, cfg: &RateLimitConfig) {
        self.fallback.store(cfg.on_unavailable as u8, Ordering::Relaxed);
        self.local.set_max_keys(cfg.local_max_keys);
    }

    fn current_fallback(&self) -> RateLimitFallback {
        match self.fallback.load(Ordering::Relaxed) {
            x if x == RateLimitFallback::Allow as u8 => RateLimitFallback::Allow,
            x if x == RateLimitFallback::Deny as u8 => RateLimitFallback::Deny,
            _ => RateLimitFallback::Local,
        }
    }

    fn fallback(&self, key: &[u8], limit: &Limit, unavailable: &CallError) -> Decision {
        match self.current_fallback() {
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
                reset_ms: match unavailable {
                    CallError::CircuitOpen {
                        retry_after: Some(retry_after),
                        ..
                    } => ceil_ms(*retry_after),
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
    fn the_script_drops_at_most_max_dropped_entries_per_call() {
        assert!(
            SCRIPT.contains(&format!("math.min(gone, {MAX_DROPPED})")),
            "the script's literal is MAX_DROPPED"
        );
    }

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
