//! Raw commands: any Redis command, as one breaker call, with no fallback.
//!
//! Whether a raw command reads or writes is not known here, so no cached value may answer for it and no safe
//! default exists: when Redis cannot be asked, the caller gets the error. The cache still has to stay honest
//! about what such a command may have changed. It cannot model the command, so after every raw command that
//! is not a known read, it drops each cached key that the command names anywhere in its arguments (a value
//! that happens to equal a cached key name only costs that entry), and after commands that reach past the keys
//! they name (FLUSHDB, SWAPDB, REPLICAOF ...) it drops everything. A command Redis answered with an error changed
//! nothing (Redis commands are atomic), except a script, which may have written before it failed. Lua scripts
//! are assumed to name the keys they write in KEYS or ARGV, as Redis asks of them; a script writing keys it was
//! not given is beyond what redguard can see.

use redis::Value;

use super::{CallError, Resilient, Unanswered};
use crate::backend::Backend;
use crate::metrics::RedisCall;
use crate::op::Bytes;

/// Commands that never change data. Anything not listed may write, which only costs cache entries.
const READ_ONLY: &[&str] = &[
    "BITCOUNT",
    "BITFIELD_RO",
    "BITPOS",
    "COMMAND",
    "DBSIZE",
    "DUMP",
    "ECHO",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXISTS",
    "EXPIRETIME",
    "FCALL_RO",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GET",
    "GETBIT",
    "GETRANGE",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HRANDFIELD",
    "HSCAN",
    "HSTRLEN",
    "HVALS",
    "INFO",
    "KEYS",
    "LASTSAVE",
    "LCS",
    "LINDEX",
    "LLEN",
    "LPOS",
    "LRANGE",
    "MEMORY",
    "MGET",
    "OBJECT",
    "PEXPIRETIME",
    "PING",
    "PTTL",
    "PUBLISH",
    "RANDOMKEY",
    "ROLE",
    "SCAN",
    "SCARD",
    "SDIFF",
    "SINTER",
    "SINTERCARD",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SORT_RO",
    "SPUBLISH",
    "SRANDMEMBER",
    "SSCAN",
    "STRLEN",
    "SUBSTR",
    "SUNION",
    "TIME",
    "TTL",
    "TYPE",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREVRANGE",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZINTER",
    "ZINTERCARD",
    "ZLEXCOUNT",
    "ZMSCORE",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
];

/// Commands that change keys they do not name (or the whole data set): the cache is cleared after them.
const KEYSPACE_WIDE: &[&str] = &[
    "DEBUG",
    "FAILOVER",
    "FLUSHALL",
    "FLUSHDB",
    "REPLICAOF",
    "SLAVEOF",
    "SWAPDB",
];

/// Commands that run code: an error from them does not mean nothing was written.
const SCRIPTS: &[&str] = &["EVAL", "EVALSHA", "FCALL"];

/// What a raw command can do to the cache's knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    NamedKeys,
    Everything,
}

fn effect(name: &[u8]) -> Effect {
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    if READ_ONLY.binary_search(&name.as_str()).is_ok() {
        Effect::None
    } else if KEYSPACE_WIDE.contains(&name.as_str()) {
        Effect::Everything
    } else {
        Effect::NamedKeys
    }
}

/// Builds the command from its arguments, the name first.
pub(super) fn raw_cmd(args: &[Bytes<'_>]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    args.iter().for_each(|a| {
        cmd.arg(a.as_ref());
    });
    cmd
}

impl<B: Backend> Resilient<B> {
    /// Runs one raw command. No fallback: its read or write nature is unknown (see the module docs).
    pub async fn execute_raw(&self, args: &[Bytes<'_>]) -> Result<Value, CallError> {
        let cmd = raw_cmd(args);
        let result = self.guarded(RedisCall::Command, || self.backend.query(&cmd)).await;
        match result {
            Ok(value) => {
                self.forget_raw(args);
                Ok(value)
            }
            Err(Unanswered::App(message)) => {
                self.forget_raw_after_error(args);
                Err(CallError::Redis(message))
            }
            Err(Unanswered::Failed(failure)) => {
                if failure.reached_redis() {
                    self.forget_raw(args);
                }
                Err(failure.into_error(false))
            }
        }
    }

    /// Drops what the cache knows that a raw command (which may have run) could have changed.
    pub(super) fn forget_raw(&self, args: &[Bytes<'_>]) {
        let Some((name, rest)) = args.split_first() else {
            return;
        };
        match effect(name) {
            Effect::None => {}
            Effect::NamedKeys => self.forget_named(rest),
            Effect::Everything => self.cache.clear(),
        }
    }

    /// After an application error: only a script may have changed anything.
    pub(super) fn forget_raw_after_error(&self, args: &[Bytes<'_>]) {
        let is_script = args
            .first()
            .is_some_and(|name| SCRIPTS.iter().any(|s| name.eq_ignore_ascii_case(s.as_bytes())));
        if is_script {
            self.forget_raw(args);
        }
    }

    /// Drops every cached entry whose key is one of `names`.
    pub(super) fn forget_named<A: AsRef<[u8]>>(&self, names: impl IntoIterator<Item = A>) {
        if self.cache.is_empty() {
            return;
        }
        for name in names {
            self.cache.remove(name.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_is_sorted_for_binary_search_and_effects_ignore_case() {
        assert!(READ_ONLY.windows(2).all(|w| w[0] < w[1]), "READ_ONLY must stay sorted");
        assert_eq!(effect(b"get"), Effect::None);
        assert_eq!(effect(b"ZRangeByScore"), Effect::None);
        assert_eq!(effect(b"SET"), Effect::NamedKeys);
        assert_eq!(effect(b"eval"), Effect::NamedKeys);
        assert_eq!(effect(b"flushdb"), Effect::Everything);
        assert_eq!(effect(b"\xff"), Effect::NamedKeys);
    }
}
