//! Raw commands: any Redis command, as one breaker call, with no fallback.
//!
//! No cached value answers for a raw command and no safe default exists: when Redis cannot be asked, the caller
//! gets the error. The cache still has to stay honest about what such a command may have changed, and the
//! command table ([`crate::commands`]) says what that is: a read, admin or connection command changes no key; a
//! write drops the cached keys the table says it touches; commands that reach past the keys they name (FLUSHDB,
//! SWAPDB, REPLICAOF ...) drop everything. For a command the table does not know, or whose keys it cannot tell
//! (SORT .. STORE, MIGRATE .. KEYS), and for scripts, every argument is taken for a key (a value that happens to
//! equal a cached key name only costs that entry). A command Redis answered with an error changed nothing
//! (Redis commands are atomic), except a script, which may have written before it failed. Lua scripts are
//! assumed to name the keys they write in KEYS or ARGV, as Redis asks of them; a script writing keys it was not
//! given is beyond what redguard can see.

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::Value;

use super::{CallError, Resilient, Unanswered};
use crate::backend::{Backend, BackendError, PubSubConnection};
use crate::cache::FallbackCache;
use crate::commands::{self, Command, Flags, Keys, Kind};
use crate::metrics::RedisCall;
use crate::op::Bytes;

/// What a raw command can do to the cache's knowledge, as the command table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// A read, or an admin, connection or pub/sub command: no key changed.
    None,
    /// A write whose keys the table gives: those keys.
    TableKeys,
    /// Not in the table, a script (which may write keys it got as arguments), or keys the table cannot tell
    /// (SORT .. STORE, MIGRATE .. KEYS): every argument.
    EveryArgument,
    /// Changes keys it does not name (FLUSHDB, SWAPDB, REPLICAOF ...): everything.
    Everything,
}

fn effect(row: Option<&'static Command>) -> Effect {
    let Some(row) = row else {
        return Effect::EveryArgument;
    };
    if row.is(Flags::KEYSPACE) {
        Effect::Everything
    } else if row.kind != Kind::Write {
        Effect::None
    } else if row.is(Flags::SCRIPT) || matches!(row.keys, Keys::Movable { .. }) {
        Effect::EveryArgument
    } else {
        Effect::TableKeys
    }
}

/// Builds the command from its arguments, the name first.
pub(super) fn raw_cmd(args: &[Bytes<'_>]) -> redis::Cmd {
    // Sized up front: an empty `Cmd` grows its buffers several times for a plain SET.
    let bytes = args.iter().map(|a| a.len()).sum();
    let mut cmd = redis::Cmd::with_capacity(args.len(), bytes);
    args.iter().for_each(|a| {
        cmd.arg(a.as_ref());
    });
    cmd
}

impl<B: Backend> Resilient<B> {
    /// Runs one raw command. No fallback: its read or write nature is unknown (see the module docs).
    /// `position` is its name's [`commands::position`], which the caller has found already.
    pub async fn execute_raw(&self, args: &[Bytes<'_>], position: Option<usize>) -> Result<Value, CallError> {
        let row = commands::row_at(position, args);
        // Built only once the breaker has granted the call, as every command is (see `Resilient::execute`).
        let send = || async move {
            let cmd = raw_cmd(args);
            self.backend.query(&cmd).await
        };
        let result = self.guarded(RedisCall::Command, send).await;
        match result {
            Ok(value) => {
                self.forget_row(args, row);
                Ok(value)
            }
            Err(Unanswered::App(message)) => {
                self.forget_row_after_error(args, row);
                Err(CallError::Redis(message))
            }
            Err(Unanswered::Failed(failure)) => {
                if failure.reached_redis() {
                    self.forget_row(args, row);
                }
                Err(failure.into_error(false))
            }
        }
    }

    /// Runs one blocking command (BLPOP, XREAD BLOCK ...) on a connection of its own, opened for it and closed
    /// after it ([`Backend::dedicated`]). The breaker judges the connecting, as it judges any call (a refused
    /// connection is a failure, and an open circuit turns the command away); the wait that follows is the
    /// command's own, unbounded by `redis.command_timeout` and not a slow call. A connection lost during the
    /// wait answers `Unavailable` without counting against the breaker: the shared connection's calls say
    /// soon enough whether Redis is down.
    pub async fn execute_blocking(&self, args: &[Bytes<'_>]) -> Result<Value, CallError> {
        let slot = commands::slot(args);
        let mut conn = match self.guarded(RedisCall::Command, || self.backend.dedicated(slot)).await {
            Ok(conn) => conn,
            Err(Unanswered::App(message)) => return Err(CallError::Redis(message)),
            Err(Unanswered::Failed(failure)) => return Err(failure.into_error(false)),
        };
        let row = commands::lookup(args);
        match raw_cmd(args).query_async::<Value>(&mut conn).await {
            Ok(value) => {
                self.forget_row(args, row);
                Ok(value)
            }
            Err(e) => {
                // BLMOVE and friends may have moved an element before the connection broke.
                self.forget_row(args, row);
                let message = match crate::backend::classify(&e) {
                    BackendError::App(message) => return Err(CallError::Redis(message)),
                    BackendError::Unavailable(m) | BackendError::ShardUnavailable(m) => m,
                    BackendError::Timeout => "timed out".to_owned(),
                };
                Err(CallError::Unavailable { message, cached: false })
            }
        }
    }

    /// Opens a connection of a subscribing client's own ([`Backend::pubsub`]); the breaker judges the connecting
    /// like any call. What Redis pushes on it afterwards goes to `pushes`, unjudged.
    pub async fn open_pubsub<P: AsyncPushSender>(
        &self,
        slot: Option<u16>,
        pushes: P,
    ) -> Result<PubSubConnection, CallError> {
        match self
            .guarded(RedisCall::Command, || self.backend.pubsub(slot, pushes))
            .await
        {
            Ok(pubsub) => Ok(pubsub),
            Err(Unanswered::App(message)) => Err(CallError::Redis(message)),
            Err(Unanswered::Failed(failure)) => Err(failure.into_error(false)),
        }
    }

    /// One (un)subscription on a subscriber's connection, judged by the breaker like any call (the
    /// connection's own response timeout is `redis.command_timeout`).
    pub async fn subscription(&self, conn: &mut MultiplexedConnection, cmd: &redis::Cmd) -> Result<Value, CallError> {
        let send = move || async move {
            cmd.query_async::<Value>(conn)
                .await
                .map_err(|e| crate::backend::classify(&e))
        };
        match self.guarded(RedisCall::Command, send).await {
            Ok(value) => Ok(value),
            Err(Unanswered::App(message)) => Err(CallError::Redis(message)),
            Err(Unanswered::Failed(failure)) => Err(failure.into_error(false)),
        }
    }

    /// The master that owns `slot` now, in cluster mode ([`Backend::master_of`]).
    pub fn master_of(&self, slot: u16) -> Option<String> {
        self.backend.master_of(slot)
    }

    /// Drops what the cache knows that a raw command (which may have run) could have changed. `position` is its
    /// name's [`commands::position`].
    pub(super) fn forget_raw(&self, args: &[Bytes<'_>], position: Option<usize>) {
        self.forget_row(args, commands::row_at(position, args));
    }

    /// [`Resilient::forget_raw`] for a command whose row ([`commands::row_at`]) is known.
    fn forget_row(&self, args: &[Bytes<'_>], row: Option<&'static Command>) {
        let every_argument = || args.get(1..).unwrap_or_default();
        match (effect(row), row) {
            (Effect::None, _) => {}
            (Effect::TableKeys, Some(row)) => match row.keys(args) {
                Some(keys) => self.forget_named(keys.map(|i| &args[i])),
                // Arguments the table cannot read keys from (a bad count); Redis refuses them, but be safe.
                None => self.forget_named(every_argument()),
            },
            (Effect::TableKeys | Effect::EveryArgument, _) => self.forget_named(every_argument()),
            (Effect::Everything, _) => self.cache.clear(),
        }
    }

    /// After an application error: only a script may have changed anything.
    pub(super) fn forget_raw_after_error(&self, args: &[Bytes<'_>], position: Option<usize>) {
        self.forget_row_after_error(args, commands::row_at(position, args));
    }

    fn forget_row_after_error(&self, args: &[Bytes<'_>], row: Option<&'static Command>) {
        if row.is_some_and(|row| row.is(Flags::SCRIPT)) {
            self.forget_row(args, row);
        }
    }

    /// Drops every cached entry whose key is one of `names`.
    pub(super) fn forget_named<A: AsRef<[u8]>>(&self, names: impl IntoIterator<Item = A>) {
        forget_named(&self.cache, names);
    }
}

/// Drops every entry of `cache` whose key is one of `names` (a script's keys and arguments, a raw command's).
pub(crate) fn forget_named<A: AsRef<[u8]>>(cache: &FallbackCache, names: impl IntoIterator<Item = A>) {
    if cache.is_empty() {
        return;
    }
    for name in names {
        cache.remove(name.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_follow_the_command_table_and_ignore_case() {
        let effect_of = |line: &str| {
            let args: Vec<Bytes<'_>> = line.split(' ').map(|w| Bytes::from(w.as_bytes())).collect();
            effect(commands::lookup(args.as_slice()))
        };
        assert_eq!(effect_of("get k"), Effect::None);
        assert_eq!(effect_of("ZRangeByScore z 0 1"), Effect::None);
        assert_eq!(effect_of("PUBLISH ch m"), Effect::None);
        assert_eq!(effect_of("CONFIG SET maxmemory 1"), Effect::None);
        assert_eq!(effect_of("object encoding k"), Effect::None);
        assert_eq!(effect_of("SET k v"), Effect::TableKeys);
        assert_eq!(effect_of("xgroup create s g $"), Effect::TableKeys);
        assert_eq!(effect_of("eval s 1 k"), Effect::EveryArgument);
        assert_eq!(effect_of("SORT l STORE d"), Effect::EveryArgument);
        assert_eq!(effect_of("JSON.SET k $ 1"), Effect::EveryArgument);
        assert_eq!(effect_of("OBJECT NOPE k"), Effect::EveryArgument);
        assert_eq!(effect_of("\u{e9}"), Effect::EveryArgument);
        assert_eq!(effect_of("flushdb"), Effect::Everything);
        assert_eq!(effect_of("SWAPDB 0 1"), Effect::Everything);
    }
}
