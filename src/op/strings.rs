//! String ops: `get`, `set`, `incr`, `mget`, `mset`.
//!
//! The cache's main customers: GET, MGET and INCR fill it with what Redis answered (with the key's TTL, learned
//! by a PTTL sent behind them), SET and MSET with what they wrote; GET and MGET are answered from it while Redis
//! is unavailable. A plain SET that cannot reach Redis is kept in the cache for this pod's later reads (as the
//! original design did), and its answer says so.

use std::time::Duration;

use redis::Value;

use super::cmd::{sized, with_all};
use super::{not_in_family, Cached, Fallback, Family, Op, OpName, SafeDefault};
use crate::api::error::ApiError;
use crate::api::request::{bad, decode, integer, non_empty, Parser};
use crate::cache::{FallbackCache, KeyExpiry, Lookup};
use crate::client::{bulk_bytes, Reply, Source, Ttls};
use crate::op::Bytes;

/// Largest `ttl_ms` of `set`: 10^18 ms (about 31.7 million years). Redis refuses an expiry whose deadline
/// (now + ttl) passes 2^63 ms; this bound keeps every accepted value clear of that for good.
pub const MAX_TTL_MS: i64 = 1_000_000_000_000_000_000;

pub(super) struct Strings;

impl Family for Strings {
    fn fields(name: OpName) -> &'static [&'static str] {
        match name {
            OpName::Get => &["key", "default"],
            OpName::Set => &["key", "value", "ttl_ms", "nx", "xx"],
            OpName::Incr => &["key", "by"],
            OpName::MGet => &["keys", "default"],
            OpName::MSet => &["pairs"],
            other => not_in_family("string", other),
        }
    }

    fn parse<'a>(name: OpName, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        let raw = p.raw;
        Ok(match name {
            OpName::Get => Op::Get { key: p.key()? },
            OpName::Set => {
                let (nx, xx) = (raw.nx.unwrap_or(false), raw.xx.unwrap_or(false));
                if nx && xx {
                    return Err(bad("fields `nx` and `xx` cannot both be true"));
                }
                let ttl_ms = raw
                    .ttl_ms
                    .as_ref()
                    .map(|n| integer("ttl_ms", n, 1, MAX_TTL_MS))
                    .transpose()?;
                let value = raw.value.as_ref().map(|s| s.0.clone()).ok_or_else(|| p.need("value"))?;
                Op::Set {
                    key: p.key()?,
                    value: decode(value, p.encoding, "value")?,
                    ttl_ms: ttl_ms.map(|ms| ms as u64),
                    nx,
                    xx,
                }
            }
            OpName::Incr => Op::Incr {
                key: p.key()?,
                by: match &raw.by {
                    None => 1,
                    Some(n) => integer("by", n, i64::MIN, i64::MAX)?,
                },
            },
            OpName::MGet => Op::MGet {
                keys: p.key_list("keys")?,
            },
            OpName::MSet => match raw.pairs.as_ref().map(|p| &p.0) {
                Some(pairs) if !pairs.is_empty() => Op::MSet {
                    pairs: pairs
                        .iter()
                        .map(|(k, v)| {
                            let k = non_empty("pairs")(std::borrow::Cow::Owned(k.clone()))?.into_owned();
                            Ok((std::borrow::Cow::Owned(k), p.value(v, "pairs")?))
                        })
                        .collect::<Result<_, ApiError>>()?,
                },
                Some(_) => return Err(bad("field `pairs` must be a non-empty object of key: value")),
                None => return Err(p.need("pairs")),
            },
            other => not_in_family("string", other),
        })
    }

    fn to_cmd(op: &Op<'_>) -> redis::Cmd {
        let mut cmd;
        match op {
            Op::Get { key } => {
                cmd = sized("GET", 1, key.len());
                cmd.arg(key.as_ref());
            }
            Op::Set {
                key,
                value,
                ttl_ms,
                nx,
                xx,
            } => {
                // Room for PX ms NX: the optional arguments are short.
                cmd = sized("SET", 5, key.len() + value.len() + 32);
                cmd.arg(key.as_ref()).arg(value.as_ref());
                if let Some(ms) = ttl_ms {
                    cmd.arg("PX").arg(*ms);
                }
                if *nx {
                    cmd.arg("NX");
                }
                if *xx {
                    cmd.arg("XX");
                }
            }
            Op::Incr { key, by } => {
                cmd = redis::cmd("INCRBY");
                cmd.arg(key.as_ref()).arg(*by);
            }
            Op::MGet { keys } => cmd = with_all(redis::cmd("MGET"), keys),
            Op::MSet { pairs } => {
                cmd = redis::cmd("MSET");
                pairs.iter().for_each(|(k, v)| {
                    cmd.arg(k.as_ref()).arg(v.as_ref());
                });
            }
            other => not_in_family("string", other.name()),
        }
        cmd
    }

    fn fallback(name: OpName) -> Fallback {
        match name {
            OpName::Get | OpName::MGet => Fallback::Cache,
            OpName::Set | OpName::MSet => Fallback::NoCache(Some(SafeDefault::False)),
            // A counter cannot be made up.
            OpName::Incr => Fallback::NoCache(None),
            other => not_in_family("string", other),
        }
    }

    fn ttl_probes<'o, 'a>(op: &'o Op<'a>) -> &'o [Bytes<'a>] {
        match op {
            Op::Get { key } | Op::Incr { key, .. } => std::slice::from_ref(key),
            Op::MGet { keys } => keys,
            _ => &[],
        }
    }

    fn answer(op: &Op<'_>, value: Value, ttls: Ttls<'_>, c: &FallbackCache) -> Result<Reply, Value> {
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
            (Op::Incr { key, .. }, Value::Int(n)) => {
                c.put_str(key, n.to_string().as_bytes(), ttls.expiry(0));
                Reply::Int(n)
            }
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
                            let v = bulk_bytes(other)?;
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
            (_, v) => return Err(v),
        })
    }

    fn cached(op: &Op<'_>, cache: &FallbackCache) -> Cached {
        let hit = |lookup| match lookup {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss | Lookup::Expired => None,
        };
        match op {
            Op::Get { key } => Cached::One(hit(cache.get_str(key)).map(Reply::Bytes)),
            Op::MGet { keys } => Cached::PerKey(
                keys.iter()
                    .map(|key| match hit(cache.get_str(key)) {
                        Some(v) => (Some(v), Source::Cache),
                        None => (None, Source::Default),
                    })
                    .collect(),
            ),
            _ => Cached::One(None),
        }
    }

    fn forget_failed_write(op: &Op<'_>, c: &FallbackCache, reached_redis: bool) -> bool {
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
                let expiry = match ttl_ms.and_then(|ms| c.now().checked_add(Duration::from_millis(ms))) {
                    Some(at) => KeyExpiry::At(at),
                    None => KeyExpiry::Never,
                };
                c.put_str(key, value, expiry)
            }
            // MSET is SET for many keys, unconditionally; it is kept only if every value is.
            Op::MSet { pairs } => c.put_strs(pairs),
            _ if !reached_redis => false,
            Op::Set { key, .. } | Op::Incr { key, .. } => {
                c.remove(key);
                false
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cmd::tests::{args, k};
    use super::*;

    #[test]
    fn string_ops_become_the_expected_commands() {
        let set = Op::Set {
            key: k("a"),
            value: k("v"),
            ttl_ms: Some(1500),
            nx: true,
            xx: false,
        };
        assert_eq!(args(&set.to_cmd()), ["SET", "a", "v", "PX", "1500", "NX"]);
        assert_eq!(args(&Op::Incr { key: k("n"), by: -3 }.to_cmd()), ["INCRBY", "n", "-3"]);
        let mset = Op::MSet {
            pairs: vec![(k("a"), k("1")), (k("b"), k("2"))],
        };
        assert_eq!(args(&mset.to_cmd()), ["MSET", "a", "1", "b", "2"]);
    }
}
