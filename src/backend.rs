//! Redis access behind a small trait, so cluster and sentinel modes can be added beside the standalone one.
//!
//! A backend only sends a command (or a pipeline) and classifies what came back: a reply, an application error
//! (Redis is healthy, the command was wrong), or a failure (Redis is not healthy). In a pipeline each command
//! gets its own reply or application error, but one unhealthy answer (LOADING, READONLY ...) fails the whole
//! batch, as it would fail a single command. A backend knows nothing of the breaker or the cache; the resilient
//! client adds those. Every call is bounded by the command timeout here, including any wait for a
//! reconnection, because redis-rs sets no response timeout of its own by default and a hung Redis must be seen
//! as a failure.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ServerError, ServerErrorKind, Value};

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

/// One command's outcome inside a pipeline: its reply, or the application error Redis answered it with.
pub type SlotReply = Result<Value, String>;

/// Redis access. Implemented by the standalone connection now; cluster and sentinel later.
pub trait Backend: Send + Sync + 'static {
    fn query(&self, cmd: &Cmd) -> impl Future<Output = Result<Value, BackendError>> + Send;

    /// Sends every command of `pipe` in one round trip (inside MULTI/EXEC if it is atomic) and answers one
    /// [`SlotReply`] per command, in order. A transaction Redis refused to run (EXECABORT) is one
    /// [`BackendError::App`] naming the commands that caused it.
    fn pipeline(&self, pipe: &Pipeline) -> impl Future<Output = Result<Vec<SlotReply>, BackendError>> + Send;
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
    } else if err.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) {
        BackendError::App(exec_abort_message(err.clone()))
    } else {
        let code = err.code().unwrap_or_default();
        BackendError::App(redis_cli_style(code, err.detail()))
    }
}

/// "WRONGTYPE Operation against a key ...", as redis-cli shows it.
fn redis_cli_style(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{code} {detail}"),
        None => code.to_owned(),
    }
}

/// "EXECABORT Transaction discarded because of previous errors: command 1: ERR unknown command ..."; the
/// indices are positions in the caller's list of commands.
fn exec_abort_message(err: RedisError) -> String {
    let causes: Vec<String> = err
        .into_server_errors()
        .iter()
        .flat_map(|errs| errs.iter())
        .map(|(i, e)| format!("command {i}: {}", redis_cli_style(e.code(), e.details())))
        .collect();
    let mut message = "EXECABORT Transaction discarded because of previous errors".to_owned();
    if !causes.is_empty() {
        message.push_str(": ");
        message.push_str(&causes.join("; "));
    }
    message
}

/// One pipeline slot: an unhealthy server error fails the batch, any other is that command's own answer.
fn slot(value: Value) -> Result<SlotReply, BackendError> {
    match value {
        Value::ServerError(e) => {
            let message = server_error_message(&e);
            if UNHEALTHY_CODES.contains(&e.code()) {
                Err(BackendError::Unavailable(message))
            } else {
                Ok(Err(message))
            }
        }
        other => Ok(Ok(other)),
    }
}

fn server_error_message(e: &ServerError) -> String {
    redis_cli_style(e.code(), e.details())
}

/// One multiplexed, auto-reconnecting connection to a standalone Redis.
#[derive(Clone)]
pub struct Standalone {
    conn: ConnectionManager,
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
        match tokio::time::timeout(self.command_timeout, cmd.query_async::<Value>(&mut conn)).await {
            Err(_elapsed) => Err(BackendError::Timeout),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(&err)),
        }
    }

    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        let mut conn = self.conn.clone();
        // With ignore_errors, redis-rs leaves each command's error in its slot instead of failing the batch.
        let mut pipe = pipe.clone();
        pipe.ignore_errors();
        match tokio::time::timeout(self.command_timeout, pipe.query_async::<Value>(&mut conn)).await {
            Err(_elapsed) => Err(BackendError::Timeout),
            Ok(Ok(Value::Array(values))) if values.len() == pipe.len() => values.into_iter().map(slot).collect(),
            Ok(Ok(other)) => Err(BackendError::Unavailable(format!(
                "expected {} replies to a pipeline, got {other:?}",
                pipe.len()
            ))),
            Ok(Err(err)) => Err(classify(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_slots_keep_application_errors_and_fail_on_unhealthy_ones() {
        let wrongtype = redis::make_extension_error("WRONGTYPE".into(), Some("Operation against a key".into()));
        let Some(errs) = wrongtype.into_server_errors() else {
            panic!("a server error")
        };
        let value = Value::ServerError(errs[0].1.clone());
        assert_eq!(slot(value), Ok(Err("WRONGTYPE Operation against a key".to_owned())));
        assert_eq!(slot(Value::Int(3)), Ok(Ok(Value::Int(3))));
        let loading = redis::make_extension_error("LOADING".into(), Some("loading the dataset".into()));
        let value = Value::ServerError(loading.into_server_errors().unwrap()[0].1.clone());
        assert_eq!(
            slot(value),
            Err(BackendError::Unavailable("LOADING loading the dataset".to_owned()))
        );
    }

    #[test]
    fn application_errors_read_like_redis_cli() {
        let err = redis::make_extension_error("NOSCRIPT".into(), Some("No matching script.".into()));
        assert_eq!(classify(&err), BackendError::App("NOSCRIPT No matching script.".into()));
        let err = redis::make_extension_error("BUSY".into(), Some("Redis is busy running a script.".into()));
        assert!(matches!(classify(&err), BackendError::Unavailable(_)));
    }
}
