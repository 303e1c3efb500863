//! Server ops: `ping`, `time`.
//!
//! Neither touches a key, so neither touches the cache. While Redis is unavailable PING answers false (with
//! `on_unavailable: default`) and TIME the caller's default.

use redis::Value;

use super::{not_in_family, Fallback, Family, Op, OpName, SafeDefault};
use crate::api::error::ApiError;
use crate::api::request::Parser;
use crate::cache::FallbackCache;
use crate::client::{Reply, Ttls};

pub(super) struct Server;

impl Family for Server {
    fn fields(name: OpName) -> &'static [&'static str] {
        match name {
            OpName::Ping => &[],
            OpName::Time => &["default"],
            other => not_in_family("server", other),
        }
    }

    fn parse<'a>(name: OpName, _p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        Ok(match name {
            OpName::Ping => Op::Ping,
            OpName::Time => Op::Time,
            other => not_in_family("server", other),
        })
    }

    fn to_cmd(op: &Op<'_>) -> redis::Cmd {
        match op {
            Op::Ping => redis::cmd("PING"),
            Op::Time => redis::cmd("TIME"),
            other => not_in_family("server", other.name()),
        }
    }

    fn fallback(name: OpName) -> Fallback {
        match name {
            OpName::Ping => Fallback::NoCache(Some(SafeDefault::False)),
            // Never cached: straight to the caller's default.
            OpName::Time => Fallback::Cache,
            other => not_in_family("server", other),
        }
    }

    fn answer(op: &Op<'_>, value: Value, _ttls: Ttls<'_>, _cache: &FallbackCache) -> Result<Reply, Value> {
        match (op, value) {
            (Op::Ping, Value::SimpleString(_) | Value::Okay) => Ok(Reply::Bool(true)),
            (Op::Time, value) => time(value),
            (_, v) => Err(v),
        }
    }
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

    #[test]
    fn time_parses_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            time(Value::Array(vec![bulk("1700000000"), bulk("42")])),
            Ok(Reply::Time {
                seconds: 1_700_000_000,
                microseconds: 42
            })
        );
        assert!(time(Value::Array(vec![bulk("x"), bulk("1")])).is_err());
    }
}
