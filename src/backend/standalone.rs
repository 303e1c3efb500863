//! `redis.mode: standalone`: one multiplexed, auto-reconnecting connection to one server, given up for a fresh
//! one whenever a command times out on it.
//!
//! redis-rs reconnects only after a connection fails, and a silently dead one (a Redis host that vanished
//! without a reset, a stale NAT entry, a proxy that hangs) may not fail for many minutes: every probe would be
//! sent down it again and the breaker would never close. So a timeout replaces the connection. And a read (a
//! command the command table marks safe to resend, [`crate::commands::Command::resend`]) that finds its connection
//! closed is sent once more within the same timeout: redis-rs learns that a connection was closed only when it
//! next uses it, and that call should not fail while Redis is healthy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, TlsCertificates, Value};

use super::{
    bounded, client_for, into_values, pipeline_slots, Backend, BackendError, Password, PubSubConnection, SlotReply,
};
use crate::commands;
use crate::config::RedisConfig;

#[derive(Clone)]
pub struct Standalone {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager_cfg: ConnectionManagerConfig,
    /// The connection in use, and how many times it has been replaced.
    current: Mutex<(u64, ConnectionManager)>,
    command_timeout: Duration,
    /// How a connection of its own is opened ([`Backend::dedicated`]).
    dedicated: AsyncConnectionConfig,
}

impl Standalone {
    /// Sets up the connection lazily: redguard starts (degraded) even when Redis is down, and heals when it
    /// comes back.
    pub(crate) fn new(
        cfg: &RedisConfig,
        tls: Option<TlsCertificates>,
        password: Option<Password>,
    ) -> Result<Self, RedisError> {
        let client = client_for(&cfg.url, cfg, tls.as_ref())?;
        let mut manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            // Every call is bounded by `bounded` below (which also replaces a hung connection); a second,
            // redundant timer inside redis-rs would cost a wake-up of tokio's driver on every request.
            .set_response_timeout(None)
            // Few, short retries: while Redis is down, calls should fail fast and let the breaker decide.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let mut dedicated = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(None);
        if let Some(password) = password {
            dedicated = dedicated.set_credentials_provider(password.clone());
            manager_cfg = manager_cfg.set_credentials_provider(password);
        }
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())?;
        Ok(Standalone {
            inner: Arc::new(Inner {
                client,
                manager_cfg,
                current: Mutex::new((0, conn)),
                command_timeout: cfg.command_timeout,
                dedicated,
            }),
        })
    }

    fn connection(&self) -> (u64, ConnectionManager) {
        // Held only to clone a handle; nothing can panic under it.
        self.inner.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Gives up the connection `generation` after a command timed out on it. The replacement connects on its
    /// first use; the old one closes once the calls still holding it are done, and the replies it still owed
    /// go with it. Concurrent timeouts on one connection replace it once.
    fn replace(&self, generation: u64) {
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.inner.client.clone(), self.inner.manager_cfg.clone()) {
            Ok(conn) => *current = (generation + 1, conn),
            // Cannot happen with the settings above (they were accepted once already); keep the old one.
            Err(e) => tracing::warn!(error = %e, "cannot replace a Redis connection that timed out"),
        }
    }

    /// Bounds `result`'s wait by the command timeout, and replaces the connection if it timed out.
    fn after(&self, generation: u64, result: &Result<impl Sized, BackendError>) {
        if matches!(result, Err(BackendError::Timeout)) {
            self.replace(generation);
        }
    }
}

/// Whether sending `cmd` twice changes nothing, as the command table says. Asked only after a command failed
/// with a dropped (or refused) connection, never on a command's way out: a binary search of the table there costs
/// nothing next to the failed system call.
fn read_only(cmd: &Cmd) -> bool {
    commands::lookup(cmd).is_some_and(commands::Command::resend)
}

impl Backend for Standalone {
    async fn query(&self, cmd: &Cmd) -> Result<Value, BackendError> {
        let (generation, mut conn) = self.connection();
        // `send_packed_command` is what `cmd.query_async` calls, less a boxed future per call (the trait's). It
        // is awaited in one place only, so this future holds one of its (large) futures, not two.
        let attempt = async {
            let mut resent = false;
            loop {
                match conn.send_packed_command(cmd).await {
                    // The connection was closed under us (Redis's idle `timeout`, CLIENT KILL, a load balancer, a
                    // reset), which redis-rs learns only now, as it starts reconnecting. Redis itself may be fine:
                    // a read is sent once more, on the fresh connection. A write is not: it may have been applied.
                    Err(e) if !resent && e.is_connection_dropped() && read_only(cmd) => resent = true,
                    other => break other.and_then(Value::extract_error),
                }
            }
        };
        let result = bounded(self.inner.command_timeout, attempt).await;
        self.after(generation, &result);
        result
    }

    /// A read and its PTTL probes, and any pipeline that is not a transaction: the replies are taken as Redis
    /// sent them (each error in its slot), which is all redis-rs's `ignore_errors` would do, without copying the
    /// pipeline to set that flag. This is every cached read's path and every RESP batch's, so the copy (a
    /// vector and each command's buffers) is worth saving.
    async fn query_then(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        debug_assert!(
            !pipe.is_transaction(),
            "a transaction goes through `pipeline`, which copies it"
        );
        let (generation, mut conn) = self.connection();
        let attempt = async {
            let mut resent = false;
            loop {
                match conn.send_packed_commands(pipe, 0, pipe.len()).await {
                    // As for a single read (see `query`): a batch of reads is sent again on a fresh connection.
                    Err(e) if !resent && e.is_connection_dropped() && pipe.cmd_iter().all(read_only) => resent = true,
                    other => break other,
                }
            }
        };
        let replies = bounded(self.inner.command_timeout, attempt).await;
        self.after(generation, &replies);
        pipeline_slots(pipe.len(), replies)
    }

    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        if !pipe.is_transaction() {
            // Each reply as Redis sent it, errors in their slots: what `query_then` does, without a copy.
            return self.query_then(pipe).await;
        }
        let (generation, mut conn) = self.connection();
        // With ignore_errors, redis-rs leaves each command's error in its slot instead of failing the batch.
        let mut pipe = pipe.clone();
        pipe.ignore_errors();
        let attempt = async {
            let mut resent = false;
            loop {
                match pipe.query_async::<Value>(&mut conn).await {
                    // As for a single read (see `query`): a transaction of reads only is sent again.
                    Err(e) if !resent && e.is_connection_dropped() && pipe.cmd_iter().all(read_only) => resent = true,
                    other => break other,
                }
            }
        };
        let replies = bounded(self.inner.command_timeout, attempt).await;
        self.after(generation, &replies);
        pipeline_slots(pipe.len(), replies.and_then(into_values))
    }

    async fn pubsub<P: AsyncPushSender>(
        &self,
        _slot: Option<u16>,
        pushes: P,
    ) -> Result<PubSubConnection, BackendError> {
        let inner = &self.inner;
        let conn = super::open_pubsub(&inner.client, &inner.dedicated, inner.command_timeout, pushes).await?;
        Ok(PubSubConnection { conn, node: None })
    }

    async fn dedicated(&self, _slot: Option<u16>) -> Result<MultiplexedConnection, BackendError> {
        self.inner
            .client
            .get_multiplexed_async_connection_with_config(&self.inner.dedicated)
            .await
            .map_err(|e| super::classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_are_sent_twice() {
        for name in ["GET", "HGET", "HGETALL", "EXISTS", "TTL", "PTTL", "PING"] {
            assert!(read_only(redis::cmd(name).arg("k")), "{name}");
        }
        for name in ["SET", "DEL", "EXPIRE", "INCRBY", "HSET", "HDEL"] {
            assert!(!read_only(redis::cmd(name).arg("k")), "{name}");
        }
        // The typed reads the 6-entry list left out, raw reads in any case, and what must never go twice.
        for name in ["MGET", "ZSCORE", "ZRANGE", "TIME", "lrange", "Object"] {
            let mut cmd = redis::cmd(name);
            cmd.arg("ENCODING").arg("k");
            assert!(read_only(&cmd), "{name}");
        }
        for name in [
            "PUBLISH",
            "EVAL",
            "BLPOP",
            "XREAD",
            "XREADGROUP",
            "INCR",
            "JSON.GET",
            "OBJECT",
        ] {
            assert!(!read_only(&redis::cmd(name)), "{name}");
        }
    }
}
