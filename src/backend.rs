//! Redis access behind a small trait, so cluster and sentinel modes can be added beside the standalone one.
//!
//! A backend only sends a command and classifies what came back: a reply, an application error (Redis is
//! healthy, the command was wrong), or a failure (Redis is not healthy). It knows nothing of the breaker or the
//! cache; the resilient client adds those. Every call is bounded by the command timeout here, including any
//! wait for a reconnection, because redis-rs sets no response timeout of its own by default and a hung Redis
//! must be seen as a failure; and a connection that let a call time out is replaced, because redis-rs only
//! reconnects after a connection fails, which a silently dead one may not do for many minutes. A read that
//! finds its connection closed is sent once more (within the same timeout): redis-rs learns that a connection
//! was closed only when it next uses it, and that call should not fail while Redis is healthy.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisError, Value};

use crate::config::RedisConfig;

/// What went wrong with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Redis answered with an error about the command itself (WRONGTYPE, ERR syntax, NOSCRIPT ...).
    App(String),
    /// Redis could not be reached, broke the connection, or reported it cannot serve (LOADING, READONLY ...).
    Unavailable(String),
    /// No answer within the command timeout.
    Timeout,
}

/// Redis access. Implemented by the standalone connection now; cluster and sentinel later.
pub trait Backend: Send + Sync + 'static {
    fn query(&self, cmd: &Cmd) -> impl Future<Output = Result<Value, BackendError>> + Send;
}

/// Server error codes that mean Redis cannot serve right now, rather than that the command was wrong.
const UNHEALTHY_CODES: [&str; 6] = ["LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY"];

/// Sorts a redis-rs error into the breaker's two kinds.
pub fn classify(err: &RedisError) -> BackendError {
    if err.is_timeout() {
        return BackendError::Timeout;
    }
    let unhealthy = err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.code().is_some_and(|code| UNHEALTHY_CODES.contains(&code));
    if unhealthy || err.code().is_none() {
        // No server error code: the failure happened on the way (I/O, protocol, client state), not in Redis.
        BackendError::Unavailable(err.to_string())
    } else {
        // "WRONGTYPE Operation against a key ...", as redis-cli shows it.
        let code = err.code().unwrap_or_default();
        BackendError::App(match err.detail() {
            Some(detail) => format!("{code} {detail}"),
            None => code.to_owned(),
        })
    }
}

/// One multiplexed, auto-reconnecting connection to a standalone Redis, given up for a fresh one whenever a
/// command times out on it.
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
}

impl Standalone {
    /// Sets up the connection lazily: redguard starts (degraded) even when Redis is down, and heals when it
    /// comes back.
    pub fn new(cfg: &RedisConfig) -> Result<Self, RedisError> {
        let mut info: redis::ConnectionInfo = cfg.url.as_str().parse()?;
        if let Some(password) = &cfg.password {
            let redis = info.redis_settings().clone().set_password(password.expose());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info)?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            // Few, short retries: while Redis is down, calls should fail fast and let the breaker decide.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())?;
        Ok(Standalone {
            inner: Arc::new(Inner {
                client,
                manager_cfg,
                current: Mutex::new((0, conn)),
                command_timeout: cfg.command_timeout,
            }),
        })
    }

    fn connection(&self) -> (u64, ConnectionManager) {
        // Held only to clone a handle; nothing can panic under it.
        self.inner.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Gives up the connection `generation` after a command timed out on it. redis-rs reconnects only when it
    /// sees a connection fail, and a connection that just stops answering may not fail for many minutes (a
    /// Redis host that vanished without a reset, a stale NAT entry, a proxy that hangs; TCP notices only at its
    /// retransmission timeout): every probe would be sent down it again, and the breaker would never close.
    /// The replacement connects on its first use; the old one closes once the calls still holding it are done,
    /// and the replies it still owed go with it. Concurrent timeouts on one connection replace it once.
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
}

/// Commands that only read: sending one twice changes nothing.
const READ_ONLY: [&[u8]; 6] = [b"GET", b"HGET", b"HGETALL", b"EXISTS", b"TTL", b"PING"];

fn read_only(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(name)) if READ_ONLY.contains(&name))
}

impl Backend for Standalone {
    async fn query(&self, cmd: &Cmd) -> Result<Value, BackendError> {
        let (generation, mut conn) = self.connection();
        let attempt = async {
            match cmd.query_async::<Value>(&mut conn).await {
                // The connection was closed under us (Redis's idle `timeout`, CLIENT KILL, a load balancer, a
                // reset), which redis-rs learns only now, as it starts reconnecting. Redis itself may be fine: a
                // read is sent once more, on the fresh connection. A write is not: it may have been applied.
                Err(e) if e.is_connection_dropped() && read_only(cmd) => cmd.query_async::<Value>(&mut conn).await,
                other => other,
            }
        };
        let result = match tokio::time::timeout(self.inner.command_timeout, attempt).await {
            Err(_elapsed) => Err(BackendError::Timeout),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(&err)),
        };
        if result == Err(BackendError::Timeout) {
            self.replace(generation);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error Redis would send, as redis-rs hands it over.
    fn server_error(reply: &str) -> RedisError {
        match redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap() {
            Value::ServerError(e) => e.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    /// LOADING (a restarted Redis reading its dataset) cannot be produced in a test without gigabytes of data;
    /// it takes the same path as READONLY and BUSY, which tests/faults.rs produces for real.
    #[test]
    fn server_states_are_failures_and_command_errors_are_app_errors() {
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
        ] {
            assert!(
                matches!(classify(&server_error(reply)), BackendError::Unavailable(_)),
                "{reply}"
            );
        }
        assert_eq!(
            classify(&server_error(
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            )),
            BackendError::App("WRONGTYPE Operation against a key holding the wrong kind of value".into())
        );
        assert!(matches!(
            classify(&server_error("ERR syntax error")),
            BackendError::App(_)
        ));
    }

    #[test]
    fn only_reads_are_sent_twice() {
        for name in ["GET", "HGET", "HGETALL", "EXISTS", "TTL", "PING"] {
            assert!(read_only(redis::cmd(name).arg("k")), "{name}");
        }
        for name in ["SET", "DEL", "EXPIRE", "INCRBY", "HSET", "HDEL"] {
            assert!(!read_only(redis::cmd(name).arg("k")), "{name}");
        }
    }
}
