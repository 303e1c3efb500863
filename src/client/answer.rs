//! Turning Redis's reply to a typed op into the op's answer, and updating the cache with what Redis now holds.
//!
//! One function does both, so an op behaves the same alone on `/v1/cmd` and inside a pipeline. Replies are
//! accepted in their RESP2 and RESP3 shapes (flat arrays or maps, bulk-string or double scores); any other
//! shape is an error naming the op, never a panic.
//!
//! # A cached value never outlives its key
//!
//! The key a value comes from may carry a TTL set by anyone (another client, a raw command), and the value must
//! not be served from the fallback after Redis dropped the key: an expired session token or lock is gone. So
//! every op whose reply fills the cache (GET, MGET, HGET, HGETALL, INCR, HSET: [`ttl_probes`]) is sent with a
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
use crate::op::{Bytes, Op};

/// The keys whose PTTL is sent behind `op`, in order: those its reply fills the cache with.
pub(super) fn ttl_probes<'o, 'a>(op: &'o Op<'a>) -> &'o [Bytes<'a>] {
    match op {
        Op::Get { key } | Op::HGet { key, .. } | Op::HGetAll { key } | Op::Incr { key, .. } | Op::HSet { key, .. } => {
            std::slice::from_ref(key)
        }
        Op::MGet { keys } => keys,
        _ => &[],
    }
}

/// `PTTL key`.
pub(super) fn pttl_cmd(key: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("PTTL");
    cmd.arg(key);
    cmd
}

/// PTTL's answers for an op's [`ttl_probes`], and when the op was sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ttls<'r> {
    /// The cache clock's reading before the command left: expiries count from here.
    pub asked: Instant,
    /// One answer per probe, in order; missing ones are unknown.
    pub replies: &'r [SlotReply],
}

impl Ttls<'_> {
    /// The expiry of the `i`th probed key.
    pub fn expiry(&self, i: usize) -> KeyExpiry {
        match self.replies.get(i) {
            Some(Ok(Value::Int(-1))) => KeyExpiry::Never,
            Some(Ok(Value::Int(ms))) if *ms >= 0 => self.after(Duration::from_millis(*ms as u64)),
            _ => KeyExpiry::Unknown,
        }
    }

    /// The expiry `d` after the command was sent (past any `Instant`: none).
    pub fn after(&self, d: Duration) -> KeyExpiry {
        self.asked.checked_add(d).map_or(KeyExpiry::Never, KeyExpiry::At)
    }
}

/// A hash as (field, value) pairs.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl<B: Backend> Resilient<B> {
    /// Turns Redis's reply into the op's answer, and teaches the cache what Redis now holds; `ttls` are the
    /// answers to the op's [`ttl_probes`].
    pub(super) fn answer_and_update_cache(
        &self,
        op: &Op<'_>,
        value: Value,
        ttls: Ttls<'_>,
    ) -> Result<Reply, CallError> {
        let unexpected = |v: &Value| CallError::Redis(format!("unexpected reply to {}: {v:?}", op.name().as_str()));
        let c = &self.cache;
        Ok(match (op, value) {
            (Op::Get { key }, Value::Nil) => {
                c.remove(key);
                Reply::Nil
            }
            (Op::Get { key }, Value::BulkString(v)) => {
                c.put_str(key, &v, ttls.expiry(0));
                Reply::Bytes(v)
            }
            (Op::Set { key, value, ttl_ms, .. }, Value::Okay) => {
                // SET without a TTL clears the key's.
                let expiry = ttl_ms.map_or(KeyExpiry::Never, |ms| ttls.after(Duration::from_millis(ms)));
                c.put_str(key, value, expiry);
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
            (Op::Exists { .. } | Op::Ttl { .. } | Op::ZCard { .. }, Value::Int(n)) => Reply::Int(n),
            (Op::Expire { key, seconds }, Value::Int(n)) => {
                if n == 1 {
                    let at = ttls.asked.checked_add(Duration::from_secs((*seconds).max(0) as u64));
                    if let Some(at) = at {
                        c.cap_expiry(key, at);
                    }
                } else {
                    c.remove(key);
                }
                Reply::Bool(n == 1)
            }
            (Op::Incr { key, .. }, Value::Int(n)) => {
                c.put_str(key, n.to_string().as_bytes(), ttls.expiry(0));
                Reply::Int(n)
            }
            (Op::HGet { key, field }, Value::BulkString(v)) => {
                c.set_hash_fields(key, &[(field, &v)], ttls.expiry(0));
                Reply::Bytes(v)
            }
            (Op::HGet { key, field }, Value::Nil) => {
                c.remove_hash_fields(key, &[field]);
                Reply::Nil
            }
            (Op::HGetAll { key }, value) => {
                let pairs = hash_pairs(value).map_err(|v| unexpected(&v))?;
                c.put_hash(key, &pairs, ttls.expiry(0));
                Reply::Hash(pairs)
            }
            (Op::HSet { key, fields }, Value::Int(n)) => {
                let pairs: Vec<(&[u8], &[u8])> = fields.iter().map(|(f, v)| (f.as_ref(), v.as_ref())).collect();
                c.set_hash_fields(key, &pairs, ttls.expiry(0));
                Reply::Int(n)
            }
            (Op::HDel { key, fields }, Value::Int(n)) => {
                let fields: Vec<&[u8]> = fields.iter().map(AsRef::as_ref).collect();
                c.remove_hash_fields(key, &fields);
                Reply::Int(n)
            }
            (Op::Ping, Value::SimpleString(_) | Value::Okay) => Reply::Bool(true),
            // The cache holds no sorted sets, but it may hold this key as a string or hash that Redis has just
            // replaced (a write to a missing key creates it), so a sorted-set write drops the entry.
            (Op::ZAdd { key, .. } | Op::ZRem { key, .. } | Op::ZRemRangeByScore { key, .. }, Value::Int(n)) => {
                c.remove(key);
                Reply::Int(n)
            }
            (Op::ZIncrBy { key, .. }, value) => {
                c.remove(key);
                Reply::Float(score(value).map_err(|v| unexpected(&v))?)
            }
            (Op::ZScore { .. }, Value::Nil) => Reply::Nil,
            (Op::ZScore { .. }, value) => Reply::Float(score(value).map_err(|v| unexpected(&v))?),
            (Op::ZRange { withscores, .. } | Op::ZRangeByScore { withscores, .. }, Value::Array(items)) => {
                if *withscores {
                    Reply::Scored(scored(items).map_err(|v| unexpected(&v))?)
                } else {
                    let members = items.into_iter().map(bytes).collect::<Result<_, _>>();
                    Reply::Members(members.map_err(|v| unexpected(&v))?)
                }
            }
            (Op::Time, value) => time(value).map_err(|v| unexpected(&v))?,
            (Op::MGet { keys }, Value::Array(items)) if items.len() == keys.len() => {
                let mut values = Vec::with_capacity(items.len());
                for (i, (key, item)) in keys.iter().zip(items).enumerate() {
                    match item {
                        // Nil also answers a key of another type: dropping its entry is only ever cautious.
                        Value::Nil => {
                            c.remove(key);
                            values.push(None);
                        }
                        other => {
                            let v = bytes(other).map_err(|v| unexpected(&v))?;
                            c.put_str(key, &v, ttls.expiry(i));
                            values.push(Some(v));
                        }
                    }
                }
                Reply::Values(values)
            }
            (Op::MSet { pairs }, Value::Okay) => {
                // MSET clears the keys' TTLs.
                pairs.iter().for_each(|(k, v)| {
                    c.put_str(k, v, KeyExpiry::Never);
                });
                Reply::Bool(true)
            }
            (Op::Eval { keys, args, .. } | Op::EvalSha { keys, args, .. }, value) => {
                self.forget_named(keys.iter().chain(args));
                Reply::Raw(value)
            }
            (_, v) => return Err(unexpected(&v)),
        })
    }
}

fn bytes(v: Value) -> Result<Vec<u8>, Value> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(other),
    }
}

/// HGETALL answers a flat array in RESP2 and a map in RESP3.
fn hash_pairs(value: Value) -> Result<Pairs, Value> {
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

/// A score: a bulk string in RESP2 ("1.5", "inf"), a double in RESP3.
fn score(value: Value) -> Result<f64, Value> {
    match value {
        Value::Double(d) => Ok(d),
        Value::Int(i) => Ok(i as f64),
        Value::BulkString(ref b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(value),
        other => Err(other),
    }
}

/// WITHSCORES replies: flat `[member, score, ..]` in RESP2, `[[member, score], ..]` in RESP3.
fn scored(items: Vec<Value>) -> Result<Vec<(Vec<u8>, f64)>, Value> {
    if items.iter().all(|i| matches!(i, Value::Array(pair) if pair.len() == 2)) && !items.is_empty() {
        return items
            .into_iter()
            .map(|pair| match pair {
                Value::Array(pair) => {
                    let mut it = pair.into_iter();
                    match (it.next(), it.next()) {
                        (Some(m), Some(s)) => Ok((bytes(m)?, score(s)?)),
                        _ => Err(Value::Nil),
                    }
                }
                other => Err(other),
            })
            .collect();
    }
    if !items.len().is_multiple_of(2) {
        return Err(Value::Array(items));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        out.push((bytes(m)?, score(s)?));
    }
    Ok(out)
}

/// TIME: `[seconds, microseconds]` as strings (RESP2) or integers.
fn time(value: Value) -> Result<Reply, Value> {
    let int = |v: Value| match v {
        Value::Int(i) => Ok(i),
        Value::BulkString(ref b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(v),
        other => Err(other),
    };
    match value {
        Value::Array(items) if items.len() == 2 => {
            let mut it = items.into_iter();
            let (s, us) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
            Ok(Reply::Time {
                seconds: int(s)?,
                microseconds: int(us)?,
            })
        }
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

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
        let k = |s: &'static str| Bytes::Borrowed(s.as_bytes());
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
            assert_eq!(ttl_probes(&op), [k("a")], "{op:?}");
        }
        assert_eq!(
            ttl_probes(&Op::MGet {
                keys: vec![k("a"), k("b")]
            }),
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
            assert!(ttl_probes(&op).is_empty(), "{op:?}");
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

    #[test]
    fn scores_come_as_strings_or_doubles() {
        assert_eq!(score(bulk("1.5")), Ok(1.5));
        assert_eq!(score(bulk("-inf")), Ok(f64::NEG_INFINITY));
        assert_eq!(score(Value::Double(2.0)), Ok(2.0));
        assert!(score(bulk("x")).is_err());
        assert!(score(Value::Nil).is_err());
    }

    #[test]
    fn withscores_replies_come_flat_or_paired() {
        let flat = vec![bulk("a"), bulk("1"), bulk("b"), bulk("2.5")];
        let want = vec![(b"a".to_vec(), 1.0), (b"b".to_vec(), 2.5)];
        assert_eq!(scored(flat), Ok(want.clone()));
        let paired = vec![
            Value::Array(vec![bulk("a"), Value::Double(1.0)]),
            Value::Array(vec![bulk("b"), Value::Double(2.5)]),
        ];
        assert_eq!(scored(paired), Ok(want));
        assert_eq!(scored(vec![]), Ok(vec![]));
        assert!(scored(vec![bulk("a")]).is_err());
    }

    #[test]
    fn time_and_hashes_parse_both_protocols() {
        assert_eq!(
            time(Value::Array(vec![bulk("1700000000"), bulk("42")])),
            Ok(Reply::Time {
                seconds: 1_700_000_000,
                microseconds: 42
            })
        );
        assert!(time(Value::Array(vec![bulk("x"), bulk("1")])).is_err());
        let map = Value::Map(vec![(bulk("f"), bulk("v"))]);
        assert_eq!(hash_pairs(map), Ok(vec![(b"f".to_vec(), b"v".to_vec())]));
        assert!(hash_pairs(Value::Array(vec![bulk("f")])).is_err());
    }
}
