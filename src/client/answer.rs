//! Turning Redis's reply to a typed op into the op's answer, and updating the cache with what Redis now holds.
//!
//! One function does both, so an op behaves the same alone on `/v1/cmd` and inside a pipeline; what each op's
//! reply means, and what it adds to or removes from the cache, is in its family file under `src/op/` (`answer`).
//! Replies are accepted in their RESP2 and RESP3 shapes (flat arrays or maps, bulk-string or double scores); any
//! other shape is an error naming the op, never a panic.
//!
//! # A cached value never outlives its key
//!
//! The key a value comes from may carry a TTL set by anyone (another client, a raw command), and the value must
//! not be served from the fallback after Redis dropped the key: an expired session token or lock is gone. So
//! every op whose reply fills the cache (GET, MGET, HGET, HGETALL, INCR, HSET: [`Op::ttl_probes`]) is sent with a
//! `PTTL` of each key it fills right behind it, in the same round trip and the same breaker call
//! ([`Backend::query_then`]: a two-command pipeline in standalone and sentinel mode; in cluster mode two routed
//! commands sent together, to the same node since the key is the same, each following its own redirects; in
//! `/v1/pipeline`, after the caller's commands in the same batch). The entry's deadline is that expiry, counted
//! from *before* the command was sent, so the round trip can only shorten it. A key whose PTTL is unknown (an
//! error, or -2: it went away between the two commands) is not cached. Writes that set the expiry themselves
//! (SET with `ttl_ms`, EXPIRE) use what they set; SET and MSET without one clear it. Nothing is asked while the
//! cache is off (a zero limit).
//!
//! The accepted race: PTTL runs just after the read, not atomically with it. A key replaced between the two by
//! another client (deleted and written again with another TTL) gives the old value the new key's TTL; the
//! cache already accepts that another client's write is not seen until the next read. What is never accepted is
//! a value outliving the TTL its key had when it was read: PTTL is read after the value, so any expiry set by
//! then is seen. Fills keep the earliest deadline known for the entry ([`crate::cache::KeyExpiry`]), since the
//! answers of concurrent requests may be handled in another order than Redis ran them; a PERSIST or a longer
//! EXPIRE by someone else therefore only takes effect once the earlier deadline has passed and the key is read
//! again.
//!
//! Not covered: an expiry another client gives a key *after* redguard last read it, with no read through
//! redguard since (the cache learns only from what passes through it, as it does for values). Raw commands
//! through redguard that change a TTL (EXPIRE, PEXPIRE, PERSIST, GETEX, SET .. KEEPTTL ...) are writes in the
//! command table, so they drop the cached entries of their keys (`raw`), and the next read learns the new TTL.
//!
//! Redis's server-assisted client-side caching (`CLIENT TRACKING`) was not chosen: its invalidation messages
//! stop exactly when they would matter (Redis unreachable while a key expires, which is when the fallback
//! serves), so the TTL would have to be learned anyway; it needs RESP3 push handling on every connection, and
//! a flush of the cache on every reconnection, per node in cluster mode and per failover in sentinel mode.

use std::time::{Duration, Instant};

use redis::Value;

use super::{CallError, Reply, Resilient};
use crate::backend::{Backend, SlotReply};
use crate::cache::KeyExpiry;
use crate::op::Op;

/// `PTTL key`.
pub(crate) fn pttl_cmd(key: &[u8]) -> redis::Cmd {
    // Sized up front: `redis::cmd` starts empty and grows its buffers on every GET's probe.
    let mut cmd = redis::Cmd::with_capacity(2, 4 + key.len());
    cmd.arg("PTTL").arg(key);
    cmd
}

/// PTTL's answers for an op's [`Op::ttl_probes`], and when the op was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttls<'r> {
    /// The cache clock's reading before the command left: expiries count from here.
    pub asked: Instant,
    /// One answer per probe, in order; missing ones are unknown.
    pub replies: &'r [SlotReply],
}

impl Ttls<'_> {
    /// The expiry of the `i`th probed key.
    pub(crate) fn expiry(&self, i: usize) -> KeyExpiry {
        match self.replies.get(i) {
            Some(Ok(Value::Int(-1))) => KeyExpiry::Never,
            Some(Ok(Value::Int(ms))) if *ms >= 0 => self.after(Duration::from_millis(*ms as u64)),
            _ => KeyExpiry::Unknown,
        }
    }

    /// The expiry `d` after the command was sent (past any `Instant`: none).
    pub(crate) fn after(&self, d: Duration) -> KeyExpiry {
        self.asked.checked_add(d).map_or(KeyExpiry::Never, KeyExpiry::At)
    }
}

/// A hash as (field, value) pairs.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl<B: Backend> Resilient<B> {
    /// Turns Redis's reply into the op's answer, and updates the cache with what Redis now holds (the op's
    /// family file says how); `ttls` are the answers to the op's [`Op::ttl_probes`].
    pub(super) fn answer_and_update_cache(
        &self,
        op: &Op<'_>,
        value: Value,
        ttls: Ttls<'_>,
    ) -> Result<Reply, CallError> {
        op.answer(value, ttls, &self.cache)
            .map_err(|v| CallError::Redis(format!("unexpected reply to {}: {v:?}", op.name().as_str())))
    }
}

/// A reply that must be a string, as bytes; else the reply, given back.
pub(crate) fn bulk_bytes(v: Value) -> Result<Vec<u8>, Value> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pttl_answers_become_key_expiries_counted_from_the_send() {
        let asked = Instant::now();
        let replies = [
            Ok(Value::Int(-1)),
            Ok(Value::Int(-2)),
            Ok(Value::Int(0)),
            Ok(Value::Int(1500)),
            Err("WRONGTYPE".to_owned()),
            Ok(Value::Nil),
        ];
        let ttls = Ttls {
            asked,
            replies: &replies,
        };
        assert_eq!(ttls.expiry(0), KeyExpiry::Never);
        assert_eq!(ttls.expiry(1), KeyExpiry::Unknown, "the key went away");
        assert_eq!(ttls.expiry(2), KeyExpiry::At(asked));
        assert_eq!(ttls.expiry(3), KeyExpiry::At(asked + Duration::from_millis(1500)));
        assert_eq!(ttls.expiry(4), KeyExpiry::Unknown);
        assert_eq!(ttls.expiry(5), KeyExpiry::Unknown);
        assert_eq!(ttls.expiry(6), KeyExpiry::Unknown, "not asked");
        assert_eq!(ttls.after(Duration::MAX), KeyExpiry::Never);
    }

    #[test]
    fn the_ops_that_fill_the_cache_probe_the_keys_they_fill() {
        let k = |s: &'static str| crate::op::Bytes::Borrowed(s.as_bytes());
        for op in [
            Op::Get { key: k("a") },
            Op::HGet {
                key: k("a"),
                field: k("f"),
            },
            Op::HGetAll { key: k("a") },
            Op::Incr { key: k("a"), by: 1 },
            Op::HSet {
                key: k("a"),
                fields: vec![(k("f"), k("v"))],
            },
        ] {
            assert_eq!(op.ttl_probes(), [k("a")], "{op:?}");
        }
        assert_eq!(
            Op::MGet {
                keys: vec![k("a"), k("b")]
            }
            .ttl_probes(),
            [k("a"), k("b")]
        );
        for op in [
            Op::Del { keys: vec![k("a")] },
            Op::Expire {
                key: k("a"),
                seconds: 1,
            },
            Op::MSet {
                pairs: vec![(k("a"), k("v"))],
            },
            Op::Ping,
        ] {
            assert!(op.ttl_probes().is_empty(), "{op:?}");
        }
        let args: Vec<String> = pttl_cmd(b"k")
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(args, ["PTTL", "k"]);
    }
}
