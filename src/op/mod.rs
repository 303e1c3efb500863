//! The typed Redis operations the API offers, independent of the connection.
//!
//! Each op lives in the file of its family, as tokio-rs/mini-redis keeps one command per file: `strings.rs`
//! (get, set, incr, mget, mset), `keys.rs` (del, exists, expire, ttl), `hashes.rs` (hget, hgetall, hset,
//! hdel), `sorted_sets.rs`, `scripts.rs` (eval, evalsha) and `server.rs` (ping, time). A family file says,
//! for its ops, everything the `Family` trait asks: the request fields it takes and how they are checked,
//! the Redis command sent, what the reply adds to or removes from the fallback cache, and the answer while
//! Redis is unavailable. This file only declares and dispatches: one row of the `ops!` table declares an op
//! (its [`Op`] variant and fields, its [`OpName`], its Redis command, its family), and every `Op` method is a
//! match on the family calling the family's function (static dispatch, no vtable). Adding an op means its
//! family file and its row.
//!
//! Keys and values borrow from the request body where they can, so a plain request costs no copies before the
//! command is encoded. [`OpName`] is a fixed set: it doubles as a metric label, so no value from a request ever
//! becomes a label.

pub(crate) mod cmd;
mod hashes;
mod keys;
mod scripts;
mod server;
mod sorted_sets;
mod strings;

pub use keys::MAX_EXPIRE_SECONDS;
pub use strings::MAX_TTL_MS;

use std::borrow::Cow;

use redis::Value;

use crate::api::error::ApiError;
use crate::api::request::Parser;
use crate::cache::FallbackCache;
use crate::client::{Reply, Source, Ttls};

/// Binary-safe bytes, borrowed from the request when possible.
pub(crate) type Bytes<'a> = Cow<'a, [u8]>;

/// Declares the ops from one table: [`OpName`] (with its strings and family) and the [`Op`] enum (with each
/// op's fields), so an op is one row.
macro_rules! ops {
    (<$lt:lifetime> $(
        $(#[$doc:meta])*
        $variant:ident => $name:literal, $command:literal, $family:ident
            $({ $($(#[$field_doc:meta])* $field:ident: $ty:ty),* $(,)? })?;
    )*) => {
        /// The names of the ops, as used in requests and as metric labels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpName {
            $($variant,)*
        }

        /// One typed operation.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Op<$lt> {
            $($(#[$doc])* $variant $({ $($(#[$field_doc])* $field: $ty,)* })?,)*
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

            /// The file the op lives in.
            fn family(self) -> FamilyName {
                match self {
                    $(OpName::$variant => FamilyName::$family,)*
                }
            }
        }

        impl Op<'_> {
            pub fn name(&self) -> OpName {
                match self {
                    $(Op::$variant { .. } => OpName::$variant,)*
                }
            }
        }
    };
}

// One row per op: its variant, its name in requests, the Redis command it sends, its family file, its fields.
ops! {<'a>
    Get => "get", "GET", Strings { key: Bytes<'a> };
    Set => "set", "SET", Strings {
        key: Bytes<'a>,
        value: Bytes<'a>,
        ttl_ms: Option<u64>,
        nx: bool,
        xx: bool,
    };
    Del => "del", "DEL", Keys { keys: Vec<Bytes<'a>> };
    Exists => "exists", "EXISTS", Keys { keys: Vec<Bytes<'a>> };
    Expire => "expire", "EXPIRE", Keys { key: Bytes<'a>, seconds: i64 };
    Ttl => "ttl", "TTL", Keys { key: Bytes<'a> };
    Incr => "incr", "INCRBY", Strings { key: Bytes<'a>, by: i64 };
    HGet => "hget", "HGET", Hashes { key: Bytes<'a>, field: Bytes<'a> };
    HGetAll => "hgetall", "HGETALL", Hashes { key: Bytes<'a> };
    HSet => "hset", "HSET", Hashes { key: Bytes<'a>, fields: Vec<(Bytes<'a>, Bytes<'a>)> };
    HDel => "hdel", "HDEL", Hashes { key: Bytes<'a>, fields: Vec<Bytes<'a>> };
    Ping => "ping", "PING", Server;
    /// Members with their scores, in Redis's order (score, member).
    ZAdd => "zadd", "ZADD", SortedSets { key: Bytes<'a>, members: Vec<(f64, Bytes<'a>)> };
    ZCard => "zcard", "ZCARD", SortedSets { key: Bytes<'a> };
    ZScore => "zscore", "ZSCORE", SortedSets { key: Bytes<'a>, member: Bytes<'a> };
    ZIncrBy => "zincrby", "ZINCRBY", SortedSets { key: Bytes<'a>, member: Bytes<'a>, by: f64 };
    ZRange => "zrange", "ZRANGE", SortedSets {
        key: Bytes<'a>,
        start: i64,
        stop: i64,
        withscores: bool,
    };
    ZRangeByScore => "zrangebyscore", "ZRANGEBYSCORE", SortedSets {
        key: Bytes<'a>,
        min: ScoreBound<'a>,
        max: ScoreBound<'a>,
        withscores: bool,
        /// LIMIT offset count.
        limit: Option<(i64, i64)>,
    };
    ZRemRangeByScore => "zremrangebyscore", "ZREMRANGEBYSCORE", SortedSets {
        key: Bytes<'a>,
        min: ScoreBound<'a>,
        max: ScoreBound<'a>,
    };
    ZRem => "zrem", "ZREM", SortedSets { key: Bytes<'a>, members: Vec<Bytes<'a>> };
    Time => "time", "TIME", Server;
    MGet => "mget", "MGET", Strings { keys: Vec<Bytes<'a>> };
    MSet => "mset", "MSET", Strings { pairs: Vec<(Bytes<'a>, Bytes<'a>)> };
    Eval => "eval", "EVAL", Scripts { script: Cow<'a, str>, keys: Vec<Bytes<'a>>, args: Vec<Bytes<'a>> };
    EvalSha => "evalsha", "EVALSHA", Scripts {
        /// Lowercase hex SHA1, checked by the API.
        sha: Cow<'a, str>,
        keys: Vec<Bytes<'a>>,
        args: Vec<Bytes<'a>>,
    };
}

/// The family files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyName {
    Strings,
    Keys,
    Hashes,
    SortedSets,
    Scripts,
    Server,
}

/// Calls `$f` of the family `$name` (an [`OpName`]) belongs to.
macro_rules! by_family {
    ($name:expr, $f:ident($($arg:expr),*)) => {
        match $name.family() {
            FamilyName::Strings => <strings::Strings as Family>::$f($($arg),*),
            FamilyName::Keys => <keys::Keys as Family>::$f($($arg),*),
            FamilyName::Hashes => <hashes::Hashes as Family>::$f($($arg),*),
            FamilyName::SortedSets => <sorted_sets::SortedSets as Family>::$f($($arg),*),
            FamilyName::Scripts => <scripts::Scripts as Family>::$f($($arg),*),
            FamilyName::Server => <server::Server as Family>::$f($($arg),*),
        }
    };
}

/// What a family file says about each of its ops. Each function is given only ops of its family (the dispatch
/// in this file guarantees it), so a family matches on its own variants.
trait Family {
    /// The request fields the op takes besides `op`, `encoding` and `on_unavailable` (names of
    /// `api::request::Raw`'s fields; a test holds them to it).
    fn fields(name: OpName) -> &'static [&'static str];

    /// Builds the op from the request's fields; the request has been checked to carry no others.
    fn parse<'a>(name: OpName, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError>;

    /// The Redis command the op sends.
    fn to_cmd(op: &Op<'_>) -> redis::Cmd;

    /// What answers the op while Redis cannot be reached.
    fn fallback(name: OpName) -> Fallback;

    /// The keys whose PTTL is sent behind the op, in order: those its reply fills the cache with.
    fn ttl_probes<'o, 'a>(_op: &'o Op<'a>) -> &'o [Bytes<'a>] {
        &[]
    }

    /// Redis's reply as the op's answer, after teaching the cache what Redis now holds; `Err` gives back a
    /// reply of a shape the op does not expect.
    fn answer(op: &Op<'_>, value: Value, ttls: Ttls<'_>, cache: &FallbackCache) -> Result<Reply, Value>;

    /// For a [`Fallback::Cache`] op: what the cache holds for it.
    fn cached(_op: &Op<'_>, _cache: &FallbackCache) -> Cached {
        Cached::One(None)
    }

    /// Keeps the cache honest after the op failed without an answer (it may or may not have reached Redis,
    /// as `reached_redis` says). Returns whether the written value was kept in the cache.
    fn forget_failed_write(_op: &Op<'_>, _cache: &FallbackCache, _reached_redis: bool) -> bool {
        false
    }

    /// Keeps the cache honest after Redis answered the op with an error.
    fn forget_after_app_error(_op: &Op<'_>, _cache: &FallbackCache) {}
}

/// What the fallback cache holds for a read.
#[derive(Debug, PartialEq)]
pub(crate) enum Cached {
    /// One answer, or `None`: nothing usable.
    One(Option<Reply>),
    /// Per key (MGET): its value and `Source::Cache`, or `None` and `Source::Default`.
    PerKey(Vec<(Option<Vec<u8>>, Source)>),
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
pub(crate) type ScoreBound<'a> = Cow<'a, str>;

impl OpName {
    /// The request fields the op takes besides `op`, `encoding` and `on_unavailable`.
    pub(crate) fn fields(self) -> &'static [&'static str] {
        by_family!(self, fields(self))
    }

    /// What answers the op while Redis cannot be reached.
    pub fn fallback(self) -> Fallback {
        by_family!(self, fallback(self))
    }

    /// Builds the op from a request's fields.
    pub(crate) fn parse_op<'a>(self, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        by_family!(self, parse(self, p))
    }
}

impl<'a> Op<'a> {
    /// What answers this op while Redis cannot be reached.
    pub fn fallback(&self) -> Fallback {
        self.name().fallback()
    }

    /// The Redis command for this op.
    pub fn to_cmd(&self) -> redis::Cmd {
        by_family!(self.name(), to_cmd(self))
    }

    /// The keys whose PTTL is sent behind this op (see `client/answer.rs`): those its reply fills the cache with.
    pub fn ttl_probes(&self) -> &[Bytes<'a>] {
        by_family!(self.name(), ttl_probes(self))
    }

    /// Redis's reply as this op's answer, after teaching the cache what Redis now holds; `Err` gives back a
    /// reply of a shape the op does not expect.
    pub(crate) fn answer(&self, value: Value, ttls: Ttls<'_>, cache: &FallbackCache) -> Result<Reply, Value> {
        by_family!(self.name(), answer(self, value, ttls, cache))
    }

    /// What the fallback cache holds for this op (nothing, unless it is a read the cache can answer).
    pub(crate) fn cached(&self, cache: &FallbackCache) -> Cached {
        by_family!(self.name(), cached(self, cache))
    }

    /// Keeps the cache honest after this op failed without an answer; whether the written value was kept.
    pub(crate) fn forget_failed_write(&self, cache: &FallbackCache, reached_redis: bool) -> bool {
        by_family!(self.name(), forget_failed_write(self, cache, reached_redis))
    }

    /// Keeps the cache honest after Redis answered this op with an error.
    pub(crate) fn forget_after_app_error(&self, cache: &FallbackCache) {
        by_family!(self.name(), forget_after_app_error(self, cache))
    }
}

/// `other` reached a family that does not hold it: the dispatch above is wrong, not the request.
fn not_in_family(family: &str, other: OpName) -> ! {
    unreachable!("{} is not a {family} op", other.as_str())
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

    /// One op of each name.
    fn one_of_each() -> Vec<Op<'static>> {
        let k = |s: &'static str| Bytes::Borrowed(s.as_bytes());
        let ops = vec![
            Op::Get { key: k("a") },
            Op::Set {
                key: k("a"),
                value: k("v"),
                ttl_ms: None,
                nx: false,
                xx: false,
            },
            Op::Del { keys: vec![k("a")] },
            Op::Exists { keys: vec![k("a")] },
            Op::Expire {
                key: k("a"),
                seconds: 1,
            },
            Op::Ttl { key: k("a") },
            Op::Incr { key: k("a"), by: 1 },
            Op::HGet {
                key: k("h"),
                field: k("f"),
            },
            Op::HGetAll { key: k("h") },
            Op::HSet {
                key: k("h"),
                fields: vec![(k("f"), k("v"))],
            },
            Op::HDel {
                key: k("h"),
                fields: vec![k("f")],
            },
            Op::Ping,
            Op::ZAdd {
                key: k("z"),
                members: vec![(1.0, k("m"))],
            },
            Op::ZCard { key: k("z") },
            Op::ZScore {
                key: k("z"),
                member: k("m"),
            },
            Op::ZIncrBy {
                key: k("z"),
                member: k("m"),
                by: 1.0,
            },
            Op::ZRange {
                key: k("z"),
                start: 0,
                stop: -1,
                withscores: false,
            },
            Op::ZRangeByScore {
                key: k("z"),
                min: Cow::Borrowed("-inf"),
                max: Cow::Borrowed("+inf"),
                withscores: false,
                limit: None,
            },
            Op::ZRemRangeByScore {
                key: k("z"),
                min: Cow::Borrowed("-inf"),
                max: Cow::Borrowed("+inf"),
            },
            Op::ZRem {
                key: k("z"),
                members: vec![k("m")],
            },
            Op::Time,
            Op::MGet { keys: vec![k("a")] },
            Op::MSet {
                pairs: vec![(k("a"), k("v"))],
            },
            Op::Eval {
                script: Cow::Borrowed("return 1"),
                keys: vec![],
                args: vec![],
            },
            Op::EvalSha {
                sha: Cow::Borrowed("abc"),
                keys: vec![],
                args: vec![],
            },
        ];
        let names: Vec<OpName> = ops.iter().map(Op::name).collect();
        assert_eq!(names, OpName::ALL, "one op of each name, in order");
        ops
    }

    #[test]
    fn every_op_is_held_by_its_family() {
        // Each family function refuses an op of another family: the dispatch must send each op to the right one.
        for op in one_of_each() {
            let name = op.name();
            assert_eq!(crate::op::cmd::tests::args(&op.to_cmd())[0], name.command(), "{op:?}");
            let _ = (name.fields(), name.fallback());
        }
    }

    #[test]
    fn each_op_falls_back_as_it_always_did() {
        use OpName::*;
        let (f, z) = (Some(SafeDefault::False), Some(SafeDefault::Zero));
        for (name, want) in [
            (Get, Fallback::Cache),
            (HGet, Fallback::Cache),
            (HGetAll, Fallback::Cache),
            (MGet, Fallback::Cache),
            (ZCard, Fallback::Cache),
            (ZScore, Fallback::Cache),
            (ZRange, Fallback::Cache),
            (ZRangeByScore, Fallback::Cache),
            (Time, Fallback::Cache),
            (Set, Fallback::NoCache(f)),
            (Expire, Fallback::NoCache(f)),
            (Ping, Fallback::NoCache(f)),
            (MSet, Fallback::NoCache(f)),
            (Del, Fallback::NoCache(z)),
            (Exists, Fallback::NoCache(z)),
            (HSet, Fallback::NoCache(z)),
            (HDel, Fallback::NoCache(z)),
            (ZAdd, Fallback::NoCache(z)),
            (ZRem, Fallback::NoCache(z)),
            (ZRemRangeByScore, Fallback::NoCache(z)),
            (Ttl, Fallback::NoCache(None)),
            (Incr, Fallback::NoCache(None)),
            (ZIncrBy, Fallback::NoCache(None)),
            (Eval, Fallback::NoCache(None)),
            (EvalSha, Fallback::NoCache(None)),
        ] {
            assert_eq!(name.fallback(), want, "{name:?}");
        }
    }
}
