//! `redis.mode: standalone`: one multiplexed, auto-reconnecting connection to one server.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, TlsCertificates, Value};

use super::{bounded, client_for, into_values, pipeline_slots, Backend, BackendError, SlotReply};
use crate::config::RedisConfig;

/// One multiplexed, auto-reconnecting connection to a standalone Redis.
#[derive(Clone)]
pub struct Standalone {
    conn: ConnectionManager,
    command_timeout: Duration,
}

impl Standalone {
    /// Sets up the connection lazily: redguard starts (degraded) even when Redis is down, and heals when it
    /// comes back.
    pub fn new(cfg: &RedisConfig, tls: Option<TlsCertificates>) -> Result<Self, RedisError> {
        let client = client_for(&cfg.url, cfg, tls.as_ref())?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            // Few, short retries: while Redis is down, calls should fail fast and let the breaker decide.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_cfg)?;
        Ok(Standalone {
            conn,
            command_timeout: cfg.command_timeout,
        })
    }
}

impl Backend for Standalone {
    async fn query(&self, cmd: &Cmd) -> Result<Value, BackendError> {
        let mut conn = self.conn.clone();
        bounded(self.command_timeout, cmd.query_async::<Value>(&mut conn)).await
    }

    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        let mut conn = self.conn.clone();
        // With ignore_errors, redis-rs leaves each command's error in its slot instead of failing the batch.
        let mut pipe = pipe.clone();
        pipe.ignore_errors();
        let replies = bounded(self.command_timeout, pipe.query_async::<Value>(&mut conn)).await;
        pipeline_slots(pipe.len(), replies.and_then(into_values))
    }
}
