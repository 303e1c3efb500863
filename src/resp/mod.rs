//! The RESP socket: the Redis protocol itself, so an unmodified Redis client gets the breaker, the fallback cache
//! and the metrics by changing only its URL (`unix:///var/run/redguard/redis.sock`).
//!
//! It is a second listener beside the JSON API (`listen.resp_socket`, optionally `listen.resp_tcp` on
//! loopback), serving from the same [`Client`] (one breaker, one cache, one backend, one set of metrics) and
//! judged by the same command policy and API settings ([`crate::api::App`]), so a reload changes both alike.
//!
//! - `parse`: requests off the wire, bounded by what has arrived;
//! - `encode`: replies onto the wire, RESP2 or RESP3;
//! - `conn`: one connection: read, split into batches, answer in order, write once per batch;
//! - `local`: the connection handshake and introspection commands redguard answers itself (HELLO, AUTH,
//!   CLIENT SETNAME, SELECT, PING, INFO, COMMAND ...), never forwarded;
//! - `forward`: everything else, through the resilient client: a batch of pipelined commands is one round
//!   trip, the cacheable reads (GET, MGET, HGET, HGETALL) go as typed ops so they fill the cache and are
//!   answered from it while Redis is away, and every failure is an error reply whose first word says what
//!   happened ([`forward::CIRCUIT_OPEN`] ...);
//! - `pubsub`: subscribed mode, on a Redis pub/sub connection of the client's own;
//! - `resp3`: RESP3's shapes (maps, sets, doubles) for the replies Redis gives in RESP2;
//! - `listener`: the accept loop, its connection limit and peer check, and shutdown.

mod conn;
pub mod encode;
mod forward;
mod listener;
mod local;
pub mod parse;
mod pubsub;
mod resp3;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::api::App;
use crate::config::Config;
use crate::Client;

use conn::Session;
pub(crate) use listener::{serve, Listener};

/// What every RESP connection shares.
pub(crate) struct Resp {
    pub client: Arc<Client>,
    /// The JSON API's shared state: the policy, the limits and `api.on_unavailable` a reload changes.
    pub app: Arc<App>,
    /// The database every connection uses (from `redis.url`): `SELECT` of another is refused.
    pub db: i64,
    /// `redis.mode`, as `INFO` and `HELLO` report it to clients.
    pub cluster: bool,
    /// `api.max_connections`, a budget of its own beside the JSON socket's.
    pub max_connections: usize,
    /// `resp.serve_cached_reads`: answer reads from the fallback cache while Redis is away.
    pub serve_cached_reads: AtomicBool,
    /// `resp.max_dedicated_connections`: the blocking commands waiting at once, each on a Redis connection of
    /// its own.
    pub dedicated: tokio::sync::Semaphore,
    pub max_dedicated: usize,
    /// Client ids (`CLIENT ID`, `HELLO`), unique per process.
    next_id: std::sync::atomic::AtomicU64,
}

impl Resp {
    pub(crate) fn new(client: Arc<Client>, app: Arc<App>, cfg: &Config) -> Resp {
        Resp {
            client,
            app,
            db: database(cfg),
            max_connections: cfg.api.max_connections,
            cluster: cfg.redis.mode == crate::config::RedisMode::Cluster,
            serve_cached_reads: AtomicBool::new(cfg.resp.serve_cached_reads),
            dedicated: tokio::sync::Semaphore::new(cfg.resp.max_dedicated_connections),
            max_dedicated: cfg.resp.max_dedicated_connections,
            next_id: 1.into(),
        }
    }

    /// Applies a reloaded config's live RESP keys.
    pub(crate) fn reconfigure(&self, cfg: &Config) {
        self.serve_cached_reads
            .store(cfg.resp.serve_cached_reads, Ordering::Relaxed);
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The database number of `redis.url` (0 when it names none, and always in cluster mode).
fn database(cfg: &Config) -> i64 {
    use redis::IntoConnectionInfo;
    if cfg.redis.mode == crate::config::RedisMode::Cluster {
        return 0;
    }
    cfg.redis
        .url
        .as_str()
        .into_connection_info()
        .map(|info| info.redis_settings().db())
        .unwrap_or(0)
}

/// A command line as the arguments a request holds (`"GET k"`: `["GET", "k"]`), for the unit tests here.
#[cfg(test)]
fn test_args(line: &str) -> Vec<crate::op::Bytes<'_>> {
    line.split(' ')
        .map(|w| std::borrow::Cow::Borrowed(w.as_bytes()))
        .collect()
}
