//! Hash ops: `hget`, `hgetall`, `hset`, `hdel`.
//!
//! The cache holds hashes field by field: HGET and HGETALL fill it (with the key's TTL, from a PTTL sent behind
//! them) and are answered from it while Redis is unavailable; HSET adds the fields it wrote, HDEL removes them.
//! A hash write whose fate is unknown drops the key's entry.

use std::borrow::Cow;

use redis::Value;

use super::{not_in_family, Cached, Fallback, Family, Op, OpName, SafeDefault};
use crate::api::error::ApiError;
use crate::api::request::{bad, bytes, Fields, Parser};
use crate::cache::{FallbackCache, Lookup};
use crate::client::{bulk_bytes, Pairs, Reply, Ttls};
use crate::op::Bytes;

pub(super) struct Hashes;

impl Family for Hashes {
    fn fields(name: OpName) -> &'static [&'static str] {
        match name {
            OpName::HGetAll => &["key", "default"],
            OpName::HGet => &["key", "field", "default"],
            OpName::HSet | OpName::HDel => &["key", "fields"],
            other => not_in_family("hash", other),
        }
    }

    fn parse<'a>(name: OpName, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        let raw = p.raw;
        Ok(match name {
            OpName::HGetAll => Op::HGetAll { key: p.key()? },
            OpName::HGet => {
                let field = raw.field.as_ref().map(|s| s.0.clone()).ok_or_else(|| p.need("field"))?;
                Op::HGet {
                    key: p.key()?,
                    field: bytes(field),
                }
            }
            OpName::HSet => match raw.fields {
                Some(Fields::Map(ref map)) if !map.is_empty() => {
                    let fields = map
                        .iter()
                        .map(|(f, v)| Ok((Cow::Owned(f.clone().into_bytes()), p.value(v, "fields")?)))
                        .collect::<Result<_, ApiError>>()?;
                    Op::HSet { key: p.key()?, fields }
                }
                Some(_) => return Err(bad("field `fields` must be a non-empty object for op `hset`")),
                None => return Err(p.need("fields")),
            },
            OpName::HDel => match raw.fields {
                Some(Fields::List(ref list)) if !list.is_empty() => Op::HDel {
                    key: p.key()?,
                    fields: list.iter().map(|f| Cow::Owned(f.clone().into_bytes())).collect(),
                },
                Some(_) => return Err(bad("field `fields` must be a non-empty array for op `hdel`")),
                None => return Err(p.need("fields")),
            },
            other => not_in_family("hash", other),
        })
    }

    fn to_cmd(op: &Op<'_>) -> redis::Cmd {
        let mut cmd;
        match op {
            Op::HGet { key, field } => {
                cmd = redis::cmd("HGET");
                cmd.arg(key.as_ref()).arg(field.as_ref());
            }
            Op::HGetAll { key } => {
                cmd = redis::cmd("HGETALL");
                cmd.arg(key.as_ref());
            }
            Op::HSet { key, fields } => {
                cmd = redis::cmd("HSET");
                cmd.arg(key.as_ref());
                fields.iter().for_each(|(f, v)| {
                    cmd.arg(f.as_ref()).arg(v.as_ref());
                });
            }
            Op::HDel { key, fields } => {
                cmd = redis::cmd("HDEL");
                cmd.arg(key.as_ref());
                cmd = super::cmd::with_all(cmd, fields);
            }
            other => not_in_family("hash", other.name()),
        }
        cmd
    }

    fn fallback(name: OpName) -> Fallback {
        match name {
            OpName::HGet | OpName::HGetAll => Fallback::Cache,
            OpName::HSet | OpName::HDel => Fallback::NoCache(Some(SafeDefault::Zero)),
            other => not_in_family("hash", other),
        }
    }

    fn ttl_probes<'o, 'a>(op: &'o Op<'a>) -> &'o [Bytes<'a>] {
        match op {
            Op::HGet { key, .. } | Op::HGetAll { key } | Op::HSet { key, .. } => std::slice::from_ref(key),
            _ => &[],
        }
    }

    fn answer(op: &Op<'_>, value: Value, ttls: Ttls<'_>, c: &FallbackCache) -> Result<Reply, Value> {
        Ok(match (op, value) {
            (Op::HGet { key, field }, Value::BulkString(v)) => {
                c.set_hash_fields(key, &[(field, &v)], ttls.expiry(0));
                Reply::Bytes(v)
            }
            (Op::HGet { key, field }, Value::Nil) => {
                c.remove_hash_fields(key, &[field]);
                Reply::Nil
            }
            (Op::HGetAll { key }, value) => {
                let pairs = hash_pairs(value)?;
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
            (_, v) => return Err(v),
        })
    }

    fn cached(op: &Op<'_>, cache: &FallbackCache) -> Cached {
        fn hit<T>(lookup: Lookup<T>, f: impl FnOnce(T) -> Reply) -> Option<Reply> {
            match lookup {
                Lookup::Hit(v) => Some(f(v)),
                Lookup::Miss | Lookup::Expired => None,
            }
        }
        Cached::One(match op {
            Op::HGet { key, field } => hit(cache.get_hash_field(key, field), Reply::Bytes),
            Op::HGetAll { key } => hit(cache.get_hash(key), Reply::Hash),
            _ => None,
        })
    }

    fn forget_failed_write(op: &Op<'_>, c: &FallbackCache, reached_redis: bool) -> bool {
        if let (true, Op::HSet { key, .. } | Op::HDel { key, .. }) = (reached_redis, op) {
            c.remove(key);
        }
        false
    }
}

/// HGETALL answers a flat array in RESP2 and a map in RESP3.
fn hash_pairs(value: Value) -> Result<Pairs, Value> {
    match value {
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                pairs.push((bulk_bytes(f)?, bulk_bytes(v)?));
            }
            Ok(pairs)
        }
        Value::Map(items) => items
            .into_iter()
            .map(|(f, v)| Ok((bulk_bytes(f)?, bulk_bytes(v)?)))
            .collect(),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cmd::tests::{args, k};
    use super::*;

    #[test]
    fn hash_ops_become_the_expected_commands() {
        let hset = Op::HSet {
            key: k("h"),
            fields: vec![(k("f1"), k("1")), (k("f2"), k("2"))],
        };
        assert_eq!(args(&hset.to_cmd()), ["HSET", "h", "f1", "1", "f2", "2"]);
    }

    #[test]
    fn hashes_parse_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let map = Value::Map(vec![(bulk("f"), bulk("v"))]);
        assert_eq!(hash_pairs(map), Ok(vec![(b"f".to_vec(), b"v".to_vec())]));
        assert!(hash_pairs(Value::Array(vec![bulk("f")])).is_err());
    }
}
