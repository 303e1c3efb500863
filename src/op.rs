//! The typed Redis operations the API offers, independent of JSON and of the connection.
//!
//! The API layer parses a request into an [`Op`]; the resilient client runs it through the breaker, turns it
//! into a Redis command ([`Op::to_cmd`]), and uses [`Op::class`] to decide what the fallback may do for it. Keys
//! and values borrow from the request body where they can, so a plain request costs no copies before the
//! command is encoded.

use std::borrow::Cow;

/// Binary-safe bytes, borrowed from the request when possible.
pub type Bytes<'a> = Cow<'a, [u8]>;

/// The names of the ops, as used in requests and as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpName {
    Get,
    Set,
    Del,
    Exists,
    Expire,
    Ttl,
    Incr,
    HGet,
    HGetAll,
    HSet,
    HDel,
    Ping,
}

impl OpName {
    pub const ALL: [OpName; 12] = [
        OpName::Get,
        OpName::Set,
        OpName::Del,
        OpName::Exists,
        OpName::Expire,
        OpName::Ttl,
        OpName::Incr,
        OpName::HGet,
        OpName::HGetAll,
        OpName::HSet,
        OpName::HDel,
        OpName::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpName::Get => "get",
            OpName::Set => "set",
            OpName::Del => "del",
            OpName::Exists => "exists",
            OpName::Expire => "expire",
            OpName::Ttl => "ttl",
            OpName::Incr => "incr",
            OpName::HGet => "hget",
            OpName::HGetAll => "hgetall",
            OpName::HSet => "hset",
            OpName::HDel => "hdel",
            OpName::Ping => "ping",
        }
    }

    pub fn parse(name: &str) -> Option<OpName> {
        OpName::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Position in [`OpName::ALL`], for label-indexed metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How an op behaves when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Answered from the fallback cache, else the caller's default.
    Read,
    /// Not answered; with `on_unavailable: default`, answered with this safe value instead.
    Write(Option<SafeDefault>),
}

/// The original design's safe answers for calls that could not reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafeDefault {
    False,
    Zero,
}

/// One typed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    Get {
        key: Bytes<'a>,
    },
    Set {
        key: Bytes<'a>,
        value: Bytes<'a>,
        ttl_ms: Option<u64>,
        nx: bool,
        xx: bool,
    },
    Del {
        keys: Vec<Bytes<'a>>,
    },
    Exists {
        keys: Vec<Bytes<'a>>,
    },
    Expire {
        key: Bytes<'a>,
        seconds: i64,
    },
    Ttl {
        key: Bytes<'a>,
    },
    Incr {
        key: Bytes<'a>,
        by: i64,
    },
    HGet {
        key: Bytes<'a>,
        field: Bytes<'a>,
    },
    HGetAll {
        key: Bytes<'a>,
    },
    HSet {
        key: Bytes<'a>,
        fields: Vec<(Bytes<'a>, Bytes<'a>)>,
    },
    HDel {
        key: Bytes<'a>,
        fields: Vec<Bytes<'a>>,
    },
    Ping,
}

impl Op<'_> {
    pub fn name(&self) -> OpName {
        match self {
            Op::Get { .. } => OpName::Get,
            Op::Set { .. } => OpName::Set,
            Op::Del { .. } => OpName::Del,
            Op::Exists { .. } => OpName::Exists,
            Op::Expire { .. } => OpName::Expire,
            Op::Ttl { .. } => OpName::Ttl,
            Op::Incr { .. } => OpName::Incr,
            Op::HGet { .. } => OpName::HGet,
            Op::HGetAll { .. } => OpName::HGetAll,
            Op::HSet { .. } => OpName::HSet,
            Op::HDel { .. } => OpName::HDel,
            Op::Ping => OpName::Ping,
        }
    }

    pub fn class(&self) -> Class {
        match self {
            Op::Get { .. } | Op::HGet { .. } | Op::HGetAll { .. } => Class::Read,
            Op::Set { .. } | Op::Expire { .. } | Op::Ping => Class::Write(Some(SafeDefault::False)),
            Op::Del { .. } | Op::Exists { .. } | Op::HSet { .. } | Op::HDel { .. } => {
                Class::Write(Some(SafeDefault::Zero))
            }
            // No answer would be honest here: a TTL or a counter value cannot be made up.
            Op::Ttl { .. } | Op::Incr { .. } => Class::Write(None),
        }
    }

    /// The Redis command for this op.
    pub fn to_cmd(&self) -> redis::Cmd {
        let mut cmd;
        match self {
            Op::Get { key } => {
                cmd = redis::cmd("GET");
                cmd.arg(key.as_ref());
            }
            Op::Set {
                key,
                value,
                ttl_ms,
                nx,
                xx,
            } => {
                cmd = redis::cmd("SET");
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
            Op::Del { keys } => {
                cmd = redis::cmd("DEL");
                keys.iter().for_each(|k| {
                    cmd.arg(k.as_ref());
                });
            }
            Op::Exists { keys } => {
                cmd = redis::cmd("EXISTS");
                keys.iter().for_each(|k| {
                    cmd.arg(k.as_ref());
                });
            }
            Op::Expire { key, seconds } => {
                cmd = redis::cmd("EXPIRE");
                cmd.arg(key.as_ref()).arg(*seconds);
            }
            Op::Ttl { key } => {
                cmd = redis::cmd("TTL");
                cmd.arg(key.as_ref());
            }
            Op::Incr { key, by } => {
                cmd = redis::cmd("INCRBY");
                cmd.arg(key.as_ref()).arg(*by);
            }
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
                fields.iter().for_each(|f| {
                    cmd.arg(f.as_ref());
                });
            }
            Op::Ping => cmd = redis::cmd("PING"),
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn ops_become_the_expected_commands() {
        let k = |s: &'static str| Cow::Borrowed(s.as_bytes());
        let set = Op::Set {
            key: k("a"),
            value: k("v"),
            ttl_ms: Some(1500),
            nx: true,
            xx: false,
        };
        assert_eq!(args(&set.to_cmd()), ["SET", "a", "v", "PX", "1500", "NX"]);
        assert_eq!(args(&Op::Incr { key: k("n"), by: -3 }.to_cmd()), ["INCRBY", "n", "-3"]);
        let hset = Op::HSet {
            key: k("h"),
            fields: vec![(k("f1"), k("1")), (k("f2"), k("2"))],
        };
        assert_eq!(args(&hset.to_cmd()), ["HSET", "h", "f1", "1", "f2", "2"]);
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

    #[test]
    fn every_name_round_trips_and_indexes_its_position() {
        for (i, op) in OpName::ALL.into_iter().enumerate() {
            assert_eq!(OpName::parse(op.as_str()), Some(op));
            assert_eq!(op.index(), i);
        }
        assert_eq!(OpName::parse("flushall"), None);
    }
}
