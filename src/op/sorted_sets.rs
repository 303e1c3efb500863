//! Sorted-set ops: `zadd`, `zcard`, `zscore`, `zincrby`, `zrange`, `zrangebyscore`, `zremrangebyscore`, `zrem`.
//!
//! The cache holds no sorted sets: the reads always fall to the caller's default while Redis is unavailable.
//! But it may hold the key as a string or hash that Redis has just replaced (a write to a missing key creates
//! it), so every sorted-set write drops the key's entry.

use redis::Value;

use super::cmd::with_all;
use super::{not_in_family, Fallback, Family, Op, OpName, SafeDefault};
use crate::api::error::ApiError;
use crate::api::request::{bad, integer, Members, Parser};
use crate::cache::FallbackCache;
use crate::client::{bulk_bytes, Reply, Ttls};

pub(super) struct SortedSets;

impl Family for SortedSets {
    fn fields(name: OpName) -> &'static [&'static str] {
        match name {
            OpName::ZCard => &["key", "default"],
            OpName::ZAdd | OpName::ZRem => &["key", "members"],
            OpName::ZScore => &["key", "member", "default"],
            OpName::ZIncrBy => &["key", "member", "by"],
            OpName::ZRange => &["key", "start", "stop", "withscores", "default"],
            OpName::ZRangeByScore => &["key", "min", "max", "withscores", "limit", "default"],
            OpName::ZRemRangeByScore => &["key", "min", "max"],
            other => not_in_family("sorted-set", other),
        }
    }

    fn parse<'a>(name: OpName, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        let raw = p.raw;
        Ok(match name {
            OpName::ZCard => Op::ZCard { key: p.key()? },
            OpName::ZAdd => {
                let member = |m: &String| p.value(m, "members");
                let members = match &raw.members {
                    Some(Members::Scores(map)) if !map.is_empty() => {
                        map.iter().map(|(m, s)| Ok((*s, member(m)?))).collect::<Result<_, ApiError>>()?
                    }
                    Some(Members::Pairs(list)) if !list.is_empty() => {
                        list.iter().map(|(s, m)| Ok((*s, member(m)?))).collect::<Result<_, ApiError>>()?
                    }
                    Some(_) => {
                        return Err(bad(
                            "field `members` must be a non-empty object of member: score or list of [score, member] for op `zadd`",
                        ))
                    }
                    None => return Err(p.need("members")),
                };
                Op::ZAdd { key: p.key()?, members }
            }
            OpName::ZRem => match &raw.members {
                Some(Members::Names(list)) if !list.is_empty() => Op::ZRem {
                    key: p.key()?,
                    members: list.iter().map(|m| p.value(m, "members")).collect::<Result<_, _>>()?,
                },
                Some(_) => {
                    return Err(bad(
                        "field `members` must be a non-empty array of members for op `zrem`",
                    ))
                }
                None => return Err(p.need("members")),
            },
            OpName::ZScore => Op::ZScore {
                key: p.key()?,
                member: p.member()?,
            },
            OpName::ZIncrBy => {
                let by = raw.by.as_ref().ok_or_else(|| p.need("by"))?;
                let by = by
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| bad(format!("field `by` must be a finite number, got {by}")))?;
                Op::ZIncrBy {
                    key: p.key()?,
                    member: p.member()?,
                    by,
                }
            }
            OpName::ZRange => Op::ZRange {
                key: p.key()?,
                start: p.index("start", &raw.start)?,
                stop: p.index("stop", &raw.stop)?,
                withscores: raw.withscores.unwrap_or(false),
            },
            OpName::ZRangeByScore => Op::ZRangeByScore {
                key: p.key()?,
                min: p.range("min", &raw.min)?,
                max: p.range("max", &raw.max)?,
                withscores: raw.withscores.unwrap_or(false),
                limit: raw
                    .limit
                    .as_ref()
                    .map(|l| {
                        let offset = integer("limit.offset", &l.offset, 0, i64::MAX)?;
                        Ok::<_, ApiError>((offset, integer("limit.count", &l.count, i64::MIN, i64::MAX)?))
                    })
                    .transpose()?,
            },
            OpName::ZRemRangeByScore => Op::ZRemRangeByScore {
                key: p.key()?,
                min: p.range("min", &raw.min)?,
                max: p.range("max", &raw.max)?,
            },
            other => not_in_family("sorted-set", other),
        })
    }

    fn to_cmd(op: &Op<'_>) -> redis::Cmd {
        let mut cmd;
        match op {
            Op::ZAdd { key, members } => {
                cmd = redis::cmd("ZADD");
                cmd.arg(key.as_ref());
                members.iter().for_each(|(score, member)| {
                    cmd.arg(*score).arg(member.as_ref());
                });
            }
            Op::ZCard { key } => {
                cmd = redis::cmd("ZCARD");
                cmd.arg(key.as_ref());
            }
            Op::ZScore { key, member } => {
                cmd = redis::cmd("ZSCORE");
                cmd.arg(key.as_ref()).arg(member.as_ref());
            }
            Op::ZIncrBy { key, member, by } => {
                cmd = redis::cmd("ZINCRBY");
                cmd.arg(key.as_ref()).arg(*by).arg(member.as_ref());
            }
            Op::ZRange {
                key,
                start,
                stop,
                withscores,
            } => {
                cmd = redis::cmd("ZRANGE");
                cmd.arg(key.as_ref()).arg(*start).arg(*stop);
                if *withscores {
                    cmd.arg("WITHSCORES");
                }
            }
            Op::ZRangeByScore {
                key,
                min,
                max,
                withscores,
                limit,
            } => {
                cmd = redis::cmd("ZRANGEBYSCORE");
                cmd.arg(key.as_ref()).arg(min.as_ref()).arg(max.as_ref());
                if *withscores {
                    cmd.arg("WITHSCORES");
                }
                if let Some((offset, count)) = limit {
                    cmd.arg("LIMIT").arg(*offset).arg(*count);
                }
            }
            Op::ZRemRangeByScore { key, min, max } => {
                cmd = redis::cmd("ZREMRANGEBYSCORE");
                cmd.arg(key.as_ref()).arg(min.as_ref()).arg(max.as_ref());
            }
            Op::ZRem { key, members } => {
                cmd = redis::cmd("ZREM");
                cmd.arg(key.as_ref());
                cmd = with_all(cmd, members);
            }
            other => not_in_family("sorted-set", other.name()),
        }
        cmd
    }

    fn fallback(name: OpName) -> Fallback {
        match name {
            // Reads, though the cache holds no sorted sets: they always fall to the default.
            OpName::ZCard | OpName::ZScore | OpName::ZRange | OpName::ZRangeByScore => Fallback::Cache,
            OpName::ZAdd | OpName::ZRem | OpName::ZRemRangeByScore => Fallback::NoCache(Some(SafeDefault::Zero)),
            // A score cannot be made up.
            OpName::ZIncrBy => Fallback::NoCache(None),
            other => not_in_family("sorted-set", other),
        }
    }

    fn answer(op: &Op<'_>, value: Value, _ttls: Ttls<'_>, c: &FallbackCache) -> Result<Reply, Value> {
        Ok(match (op, value) {
            (Op::ZAdd { key, .. } | Op::ZRem { key, .. } | Op::ZRemRangeByScore { key, .. }, Value::Int(n)) => {
                c.remove(key);
                Reply::Int(n)
            }
            (Op::ZIncrBy { key, .. }, value) => {
                c.remove(key);
                Reply::Float(score(value)?)
            }
            (Op::ZCard { .. }, Value::Int(n)) => Reply::Int(n),
            (Op::ZScore { .. }, Value::Nil) => Reply::Nil,
            (Op::ZScore { .. }, value) => Reply::Float(score(value)?),
            (Op::ZRange { withscores, .. } | Op::ZRangeByScore { withscores, .. }, Value::Array(items)) => {
                if *withscores {
                    Reply::Scored(scored(items)?)
                } else {
                    Reply::Members(items.into_iter().map(bulk_bytes).collect::<Result<_, _>>()?)
                }
            }
            (_, v) => return Err(v),
        })
    }

    fn forget_failed_write(op: &Op<'_>, c: &FallbackCache, reached_redis: bool) -> bool {
        if let (
            true,
            Op::ZAdd { key, .. } | Op::ZIncrBy { key, .. } | Op::ZRem { key, .. } | Op::ZRemRangeByScore { key, .. },
        ) = (reached_redis, op)
        {
            c.remove(key);
        }
        false
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
                        (Some(m), Some(s)) => Ok((bulk_bytes(m)?, score(s)?)),
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
        out.push((bulk_bytes(m)?, score(s)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::super::cmd::tests::{args, k};
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn sorted_set_ops_become_the_expected_commands() {
        let zadd = Op::ZAdd {
            key: k("z"),
            members: vec![(1.5, k("a")), (-2.0, k("b"))],
        };
        assert_eq!(args(&zadd.to_cmd()), ["ZADD", "z", "1.5", "a", "-2.0", "b"]);
        let incr = Op::ZIncrBy {
            key: k("z"),
            member: k("a"),
            by: 0.25,
        };
        assert_eq!(args(&incr.to_cmd()), ["ZINCRBY", "z", "0.25", "a"]);
        let range = Op::ZRangeByScore {
            key: k("z"),
            min: Cow::Borrowed("(1"),
            max: Cow::Borrowed("+inf"),
            withscores: true,
            limit: Some((2, 10)),
        };
        assert_eq!(
            args(&range.to_cmd()),
            ["ZRANGEBYSCORE", "z", "(1", "+inf", "WITHSCORES", "LIMIT", "2", "10"]
        );
        let zrange = Op::ZRange {
            key: k("z"),
            start: 0,
            stop: -1,
            withscores: false,
        };
        assert_eq!(args(&zrange.to_cmd()), ["ZRANGE", "z", "0", "-1"]);
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
}
