//! Key ops: `del`, `exists`, `expire`, `ttl`.
//!
//! None of them is answered from the cache: DEL and EXPIRE are writes (DEL drops the cached entries, EXPIRE caps
//! their lifetime at the new deadline), and what EXISTS and TTL say cannot be known from a cache that holds only
//! some keys, for a while.

use std::time::Duration;

use redis::Value;

use super::cmd::with_all;
use super::{not_in_family, Fallback, Family, Op, OpName, SafeDefault};
use crate::api::error::ApiError;
use crate::api::request::{integer, Parser};
use crate::cache::FallbackCache;
use crate::client::{Reply, Ttls};

/// Bound of `seconds` of `expire`, either way: 10^15 s (the same deadline as
/// [`MAX_TTL_MS`](super::MAX_TTL_MS)). A negative or zero `seconds` is Redis's own meaning: the key is deleted.
pub const MAX_EXPIRE_SECONDS: i64 = 1_000_000_000_000_000;

pub(super) struct Keys;

impl Family for Keys {
    fn fields(name: OpName) -> &'static [&'static str] {
        match name {
            OpName::Del | OpName::Exists => &["keys"],
            OpName::Expire => &["key", "seconds"],
            OpName::Ttl => &["key"],
            other => not_in_family("key", other),
        }
    }

    fn parse<'a>(name: OpName, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        Ok(match name {
            OpName::Del => Op::Del {
                keys: p.key_list("keys")?,
            },
            OpName::Exists => Op::Exists {
                keys: p.key_list("keys")?,
            },
            OpName::Expire => Op::Expire {
                key: p.key()?,
                seconds: integer(
                    "seconds",
                    p.raw.seconds.as_ref().ok_or_else(|| p.need("seconds"))?,
                    -MAX_EXPIRE_SECONDS,
                    MAX_EXPIRE_SECONDS,
                )?,
            },
            OpName::Ttl => Op::Ttl { key: p.key()? },
            other => not_in_family("key", other),
        })
    }

    fn to_cmd(op: &Op<'_>) -> redis::Cmd {
        let mut cmd;
        match op {
            Op::Del { keys } => cmd = with_all(redis::cmd("DEL"), keys),
            Op::Exists { keys } => cmd = with_all(redis::cmd("EXISTS"), keys),
            Op::Expire { key, seconds } => {
                cmd = redis::cmd("EXPIRE");
                cmd.arg(key.as_ref()).arg(*seconds);
            }
            Op::Ttl { key } => {
                cmd = redis::cmd("TTL");
                cmd.arg(key.as_ref());
            }
            other => not_in_family("key", other.name()),
        }
        cmd
    }

    fn fallback(name: OpName) -> Fallback {
        match name {
            OpName::Expire => Fallback::NoCache(Some(SafeDefault::False)),
            OpName::Del | OpName::Exists => Fallback::NoCache(Some(SafeDefault::Zero)),
            // A TTL cannot be made up.
            OpName::Ttl => Fallback::NoCache(None),
            other => not_in_family("key", other),
        }
    }

    fn answer(op: &Op<'_>, value: Value, ttls: Ttls<'_>, c: &FallbackCache) -> Result<Reply, Value> {
        Ok(match (op, value) {
            (Op::Del { keys }, Value::Int(n)) => {
                keys.iter().for_each(|k| c.remove(k));
                Reply::Int(n)
            }
            (Op::Exists { .. } | Op::Ttl { .. }, Value::Int(n)) => Reply::Int(n),
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
            (_, v) => return Err(v),
        })
    }

    fn forget_failed_write(op: &Op<'_>, c: &FallbackCache, reached_redis: bool) -> bool {
        match op {
            _ if !reached_redis => {}
            Op::Expire { key, .. } => c.remove(key),
            Op::Del { keys } => keys.iter().for_each(|k| c.remove(k)),
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::cmd::tests::{args, k};
    use super::*;

    #[test]
    fn key_ops_become_the_expected_commands() {
        assert_eq!(
            args(
                &Op::Del {
                    keys: vec![k("a"), k("b")]
                }
                .to_cmd()
            ),
            ["DEL", "a", "b"]
        );
    }
}
