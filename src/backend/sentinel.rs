//! `redis.mode: sentinel`: the master that the sentinels name, followed across failovers.
//!
//! redguard asks the sentinels for the master of `redis.master_name` (redis-rs checks with ROLE that the node
//! really is a master), keeps one multiplexed connection to it, and drops that connection as soon as a call on
//! it fails or times out, or the node answers READONLY (it was demoted). The next call asks the sentinels
//! again, so once they have promoted a replica, writes reach the new master. Each call, lookup included, is
//! bounded by `redis.command_timeout`; lookups are single-flight, so an outage does not stampede the sentinels.
//!
//! The sentinels and the master have credentials of their own: `redis.sentinel_username` and the sentinel
//! password authenticate to the sentinels, `redis.username` and the password to the master (and to whichever
//! replica is promoted). `rediss://` sentinel URLs mean TLS to both, with the same `redis.tls` files.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, ConnectionInfo, Pipeline, RedisError, TlsCertificates, TlsMode, Value};
use tokio::time::{timeout_at, Instant};

use super::{classify, into_values, pipeline_slots, Backend, BackendError, Password, PubSubConnection, SlotReply};
use crate::config::RedisConfig;

/// The current master connection and a generation number, so a failed call only drops the connection it used.
#[derive(Clone)]
struct Master {
    addr: String,
    conn: MultiplexedConnection,
    generation: u64,
}

struct Inner {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<Master>>,
    last_addr: Mutex<Option<String>>,
    generation: AtomicU64,
    conn_config: AsyncConnectionConfig,
    command_timeout: Duration,
    master_name: String,
}

/// The master of a sentinel-monitored group.
#[derive(Clone)]
pub struct Sentinel {
    inner: Arc<Inner>,
}

/// The sentinel client as configured; no connection is made. Also what the pre-flight check builds
/// ([`super::check`]), so `check-config` refuses exactly the settings this would.
pub(super) fn client(cfg: &RedisConfig, tls: Option<TlsCertificates>) -> Result<SentinelClient, RedisError> {
    let addrs = cfg
        .sentinels
        .iter()
        .map(|url| url.parse::<ConnectionInfo>().map(|info| info.addr().clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let master_name = cfg.master_name.clone().unwrap_or_default();
    let mut builder = SentinelClientBuilder::new(addrs, &master_name, SentinelServerType::Master)?
        .set_client_to_redis_tcp_settings(super::tcp_settings())
        .set_client_to_sentinel_tcp_settings(super::tcp_settings());
    if cfg.uses_tls() {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certs) = tls {
            builder = builder
                .set_client_to_sentinel_certificates(certs.clone())
                .set_client_to_redis_certificates(certs);
        }
    }
    if let Some(user) = &cfg.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &cfg.password {
        builder = builder.set_client_to_redis_password(password.expose());
    }
    // The sentinels' own credentials: their `requirepass` (no username) or an ACL user of theirs.
    if let Some(user) = &cfg.sentinel_username {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &cfg.sentinel_password {
        builder = builder.set_client_to_sentinel_password(password.expose());
    }
    builder.build()
}

impl Sentinel {
    /// Validates the sentinel URLs; connects on the first call.
    pub(crate) fn new(
        cfg: &RedisConfig,
        tls: Option<TlsCertificates>,
        password: Option<Password>,
    ) -> Result<Self, RedisError> {
        let sentinels = client(cfg, tls)?;
        let master_name = cfg.master_name.clone().unwrap_or_default();
        let mut conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            // `on_master` bounds every call, lookups included; a redundant per-request timer inside redis-rs
            // would cost a wake-up of tokio's driver each time (as in standalone mode).
            .set_response_timeout(None);
        if let Some(password) = password {
            conn_config = conn_config.set_credentials_provider(password);
        }
        Ok(Sentinel {
            inner: Arc::new(Inner {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: Mutex::new(None),
                last_addr: Mutex::new(None),
                generation: AtomicU64::new(0),
                conn_config,
                command_timeout: cfg.command_timeout,
                master_name,
            }),
        })
    }

    fn current(&self) -> Option<Master> {
        self.inner.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the connection of `generation` (if it is still the current one).
    fn invalidate(&self, generation: u64) {
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|m| m.generation == generation) {
            *current = None;
        }
    }

    /// Asks the sentinels for the master and connects to it; one lookup at a time.
    async fn resolve(&self) -> Result<Master, RedisError> {
        let mut sentinels = self.inner.sentinels.lock().await;
        if let Some(master) = self.current() {
            // Another call resolved the master while this one waited.
            return Ok(master);
        }
        let client = sentinels.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.inner.conn_config)
            .await?;
        let master = Master {
            addr: addr.clone(),
            conn,
            generation: self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let previous = self
            .inner
            .last_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(addr.clone());
        match previous {
            Some(old) if old != addr => tracing::warn!(
                master_name = %self.inner.master_name, from = %old, to = %addr,
                "sentinel: the master moved (failover); following it"
            ),
            Some(_) => {}
            None => tracing::info!(master_name = %self.inner.master_name, master = %addr, "sentinel: master found"),
        }
        *self.inner.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(master.clone());
        Ok(master)
    }

    /// A client for the master the sentinels name now, for a connection of its own; the lookup is bounded by
    /// `redis.command_timeout`, as every other one.
    async fn master_client(&self) -> Result<redis::Client, BackendError> {
        let lookup = async { self.inner.sentinels.lock().await.async_get_client().await };
        match tokio::time::timeout(self.inner.command_timeout, lookup).await {
            Err(_elapsed) => Err(BackendError::Timeout),
            Ok(result) => result.map_err(|e| classify(&e)),
        }
    }

    /// The address of the master in use, if connected (for tests and logs).
    pub fn master_addr(&self) -> Option<String> {
        self.current().map(|m| m.addr)
    }
}

impl Sentinel {
    /// Runs `send` on the current master's connection (looking it up first if needed), all within the command
    /// timeout. A failure or a timeout forgets the connection, so the next call asks the sentinels again.
    async fn on_master<T, F, Fut>(&self, send: F) -> Result<T, BackendError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let deadline = Instant::now() + self.inner.command_timeout;
        let master = match self.current() {
            Some(master) => master,
            // Boxed: the lookup's future is most of this one's size, and it runs only after a failover.
            None => match timeout_at(deadline, Box::pin(self.resolve())).await {
                Err(_elapsed) => return Err(BackendError::Timeout),
                Ok(Err(err)) => return Err(classify(&err)),
                Ok(Ok(master)) => master,
            },
        };
        let result = match timeout_at(deadline, send(master.conn.clone())).await {
            Err(_elapsed) => Err(BackendError::Timeout),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(&err)),
        };
        if matches!(result, Err(BackendError::Unavailable(_) | BackendError::Timeout)) {
            // Dead, hung or demoted (READONLY): ask the sentinels again on the next call.
            self.invalidate(master.generation);
        }
        result
    }
}

impl Backend for Sentinel {
    async fn query(&self, cmd: &Cmd) -> Result<Value, BackendError> {
        // The connection's own method, as in the standalone backend: `query_async` without its boxed future.
        self.on_master(|mut conn| async move { conn.send_packed_command(cmd).await.and_then(Value::extract_error) })
            .await
    }

    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        if !pipe.is_transaction() {
            // Each reply as Redis sent it, errors in their slots: what `ignore_errors` asks of redis-rs, without
            // copying the pipeline to set it. Every cached read (the read and its PTTL probes) comes this way.
            let len = pipe.len();
            let replies = self
                .on_master(|mut conn| async move { conn.send_packed_commands(pipe, 0, len).await })
                .await;
            return pipeline_slots(len, replies);
        }
        let mut pipe = pipe.clone();
        pipe.ignore_errors();
        let len = pipe.len();
        let replies = self
            .on_master(|mut conn| async move { pipe.query_async::<Value>(&mut conn).await })
            .await;
        pipeline_slots(len, replies.and_then(into_values))
    }

    /// A subscriber's connection to the master the sentinels name now.
    async fn pubsub<P: AsyncPushSender>(
        &self,
        _slot: Option<u16>,
        pushes: P,
    ) -> Result<PubSubConnection, BackendError> {
        let client = self.master_client().await?;
        let inner = &self.inner;
        let conn = super::open_pubsub(&client, &inner.conn_config, inner.command_timeout, pushes).await?;
        Ok(PubSubConnection { conn, node: None })
    }

    /// A connection of its own to the master the sentinels name now (`conn_config` has no response timeout).
    async fn dedicated(&self, _slot: Option<u16>) -> Result<MultiplexedConnection, BackendError> {
        let client = self.master_client().await?;
        let connect = client.get_multiplexed_async_connection_with_config(&self.inner.conn_config);
        connect.await.map_err(|e| classify(&e))
    }
}
