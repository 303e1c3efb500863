//! The typed Redis operations the API offers, independent of JSON and of the connection.
//!
//! The API layer parses a request into an [`Op`]; the resilient client runs it through the breaker, turns it
//! into a Redis command ([`Op::to_cmd`], in `cmd`), and uses [`Op::fallback`] to decide what the fallback may do
//! for it. Keys and values borrow from the request body where they can, so a plain request costs no copies
//! before the command is encoded. [`OpName`] is a fixed set: it doubles as a metric label, so no value from a
//! request ever becomes a label.

pub(crate) mod cmd;

use std::borrow::Cow;

/// Binary-safe bytes, borrowed from the request when possible.
pub type Bytes<'a> = Cow<'a, [u8]>;

macro_rules! op_names {
    ($($variant:ident => $name:literal, $command:literal;)*) => {
        /// The names of the ops, as used in requests and as metric labels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpName {
            $($variant,)*
        }

        impl OpName {
            pub const ALL: [OpName; [$($name),*].len()] = [$(OpName::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(OpName::$variant => $name,)*
                }
            }

            /// The Redis command the op sends: what the command policy judges it by.
            pub fn command(self) -> &'static str {
                match self {
                    $(OpName::$variant => $command,)*
                }
            }
        }
    };
}

op_names! {
    Get => "get", "GET";
    Set => "set", "SET";
    Del => "del", "DEL";
    Exists => "exists", "EXISTS";
    Expire => "expire", "EXPIRE";
    Ttl => "ttl", "TTL";
    Incr => "incr", "INCRBY";
    HGet => "hget", "HGET";
    HGetAll => "hgetall", "HGETALL";
    HSet => "hset", "HSET";
    HDel => "hdel", "HDEL";
    Ping => "ping", "PING";
    ZAdd => "zadd", "ZADD";
    ZCard => "zcard", "ZCARD";
    ZScore => "zscore", "ZSCORE";
    ZIncrBy => "zincrby", "ZINCRBY";
    ZRange => "zrange", "ZRANGE";
    ZRangeByScore => "zrangebyscore", "ZRANGEBYSCORE";
    ZRemRangeByScore => "zremrangebyscore", "ZREMRANGEBYSCORE";
    ZRem => "zrem", "ZREM";
    Time => "time", "TIME";
    MGet => "mget", "MGET";
    MSet => "mset", "MSET";
    Eval => "eval", "EVAL";
    EvalSha => "evalsha", "EVALSHA";
}

impl OpName {
    pub fn parse(name: &str) -> Option<OpName> {
        OpName::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Position in [`OpName::ALL`], for label-indexed metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What answers an op when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The fallback cache, else the caller's default (the reads of strings and hashes; the reads the cache
    /// cannot hold, sorted sets and TIME, always get the default).
    Cache,
    /// Nothing from the cache: an error, or with `on_unavailable: default` this safe value if there is one
    /// (writes, and the reads whose answer a cache cannot give: EXISTS, TTL, PING).
    NoCache(Option<SafeDefault>),
}

/// The original design's safe answers for calls that could not reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafeDefault {
    False,
    Zero,
}

/// A score bound of ZRANGEBYSCORE and ZREMRANGEBYSCORE in Redis syntax (`1.5`, `(1.5`, `-inf`, `+inf`),
/// checked by the API before it gets here.
pub type ScoreBound<'a> = Cow<'a, str>;

/// One typed operation.
#[derive(Debug, Clone, PartialEq)]
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
    /// Members with their scores, in Redis's order (score, member).
    ZAdd {
        key: Bytes<'a>,
        members: Vec<(f64, Bytes<'a>)>,
    },
    ZCard {
        key: Bytes<'a>,
    },
    ZScore {
        key: Bytes<'a>,
        member: Bytes<'a>,
    },
    ZIncrBy {
        key: Bytes<'a>,
        member: Bytes<'a>,
        by: f64,
    },
    ZRange {
        key: Bytes<'a>,
        start: i64,
        stop: i64,
        withscores: bool,
    },
    ZRangeByScore {
        key: Bytes<'a>,
        min: ScoreBound<'a>,
        max: ScoreBound<'a>,
        withscores: bool,
        /// LIMIT offset count.
        limit: Option<(i64, i64)>,
    },
    ZRemRangeByScore {
        key: Bytes<'a>,
        min: ScoreBound<'a>,
        max: ScoreBound<'a>,
    },
    ZRem {
        key: Bytes<'a>,
        members: Vec<Bytes<'a>>,
    },
    Time,
    MGet {
        keys: Vec<Bytes<'a>>,
    },
    MSet {
        pairs: Vec<(Bytes<'a>, Bytes<'a>)>,
    },
    Eval {
        script: Cow<'a, str>,
        keys: Vec<Bytes<'a>>,
        args: Vec<Bytes<'a>>,
    },
    EvalSha {
        /// Lowercase hex SHA1, checked by the API.
        sha: Cow<'a, str>,
        keys: Vec<Bytes<'a>>,
        args: Vec<Bytes<'a>>,
    },
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
            Op::ZAdd { .. } => OpName::ZAdd,
            Op::ZCard { .. } => OpName::ZCard,
            Op::ZScore { .. } => OpName::ZScore,
            Op::ZIncrBy { .. } => OpName::ZIncrBy,
            Op::ZRange { .. } => OpName::ZRange,
            Op::ZRangeByScore { .. } => OpName::ZRangeByScore,
            Op::ZRemRangeByScore { .. } => OpName::ZRemRangeByScore,
            Op::ZRem { .. } => OpName::ZRem,
            Op::Time => OpName::Time,
            Op::MGet { .. } => OpName::MGet,
            Op::MSet { .. } => OpName::MSet,
            Op::Eval { .. } => OpName::Eval,
            Op::EvalSha { .. } => OpName::EvalSha,
        }
    }

    pub fn fallback(&self) -> Fallback {
        match self {
            // The cache only knows strings and hashes: sorted-set reads and TIME always fall to the default.
            Op::Get { .. }
            | Op::HGet { .. }
            | Op::HGetAll { .. }
            | Op::MGet { .. }
            | Op::ZCard { .. }
            | Op::ZScore { .. }
            | Op::ZRange { .. }
            | Op::ZRangeByScore { .. }
            | Op::Time => Fallback::Cache,
            Op::Set { .. } | Op::Expire { .. } | Op::Ping | Op::MSet { .. } => {
                Fallback::NoCache(Some(SafeDefault::False))
            }
            Op::Del { .. }
            | Op::Exists { .. }
            | Op::HSet { .. }
            | Op::HDel { .. }
            | Op::ZAdd { .. }
            | Op::ZRem { .. }
            | Op::ZRemRangeByScore { .. } => Fallback::NoCache(Some(SafeDefault::Zero)),
            // No answer would be honest here: a TTL, a counter, a score or a script's result cannot be made up.
            Op::Ttl { .. } | Op::Incr { .. } | Op::ZIncrBy { .. } | Op::Eval { .. } | Op::EvalSha { .. } => {
                Fallback::NoCache(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_indexes_its_position() {
        for (i, op) in OpName::ALL.into_iter().enumerate() {
            assert_eq!(OpName::parse(op.as_str()), Some(op));
            assert_eq!(op.index(), i);
            assert!(op.command().bytes().all(|b| b.is_ascii_uppercase()), "{op:?}");
        }
        assert_eq!(OpName::parse("flushall"), None);
        assert_eq!(OpName::parse("GET"), None, "op names are lowercase");
    }
}
