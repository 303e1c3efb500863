//! Redis access behind a small trait: one implementation per `redis.mode` (standalone, cluster, sentinel),
//! chosen once at start ([`build`]).
//!
//! A backend only sends a command (or a pipeline) and classifies what came back: a reply, an application error
//! (Redis is healthy, the command was wrong), or a failure (Redis is not healthy). In a pipeline each command
//! gets its own reply or application error, but one unhealthy answer (LOADING, READONLY ...) fails the whole
//! batch, as it would fail a single command. It knows nothing of the sidecar's
//! breaker or cache; the resilient client adds those. Every call is bounded by the command timeout here,
//! including any wait for a reconnection, a slot-map refresh or a sentinel lookup, because redis-rs sets no
//! response timeout of its own by default and a hung Redis must be seen as a failure.
//!
//! The standalone backend replaces a connection that let a command time out, and sends a read once more when
//! its connection turns out to have been closed; see [`standalone`].
//!
//! The cluster backend also keeps one small breaker per master node, so that a failing shard is reported as
//! [`BackendError::ShardUnavailable`] (answered from the fallback, but not counted by the sidecar-wide breaker)
//! while other shards still answer, and shows them through [`Backend::nodes`]; see [`cluster`].

pub(crate) mod cluster;
pub(crate) mod credentials;
pub(crate) mod sentinel;
pub(crate) mod standalone;

use std::future::Future;
use std::sync::Arc;

use redis::aio::{AsyncPushSender, MultiplexedConnection};

use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, Pipeline, ProtocolVersion, RedisError, ServerError,
    ServerErrorKind, TlsCertificates, Value,
};

pub(crate) use cluster::{Cluster, NodeView};
pub(crate) use sentinel::Sentinel;
pub(crate) use standalone::Standalone;

pub(crate) use self::credentials::Password;
use crate::config::{mask_url, RedisConfig, RedisMode, TlsConfig};
use crate::metrics::Metrics;

/// What went wrong with a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Redis answered with an error about the command itself (WRONGTYPE, ERR syntax, CROSSSLOT, NOSCRIPT ...).
    App(String),
    /// Redis could not be reached, broke the connection, or reported it cannot serve (LOADING, READONLY ...).
    Unavailable(String),
    /// No answer within the command timeout.
    Timeout,
    /// Cluster mode: the node owning the key failed (or its own breaker is open) while other nodes still
    /// answer. The call is answered like [`BackendError::Unavailable`], but it is not a failure of Redis as a
    /// whole: the sidecar-wide breaker does not count it, so one shard's outage cannot cut off the others.
    ShardUnavailable(String),
}

/// One command's outcome inside a pipeline: its reply, or the application error Redis answered it with.
pub(crate) type SlotReply = Result<Value, String>;

/// Redis access. Implemented by [`Standalone`], [`Cluster`] and [`Sentinel`], and [`AnyBackend`] over them.
pub trait Backend: Send + Sync + 'static {
    fn query(&self, cmd: &Cmd) -> impl Future<Output = Result<Value, BackendError>> + Send;

    /// Sends every command of `pipe` in one round trip (inside MULTI/EXEC if it is atomic) and answers one
    /// [`SlotReply`] per command, in order. A transaction Redis refused to run (EXECABORT) is one
    /// [`BackendError::App`] naming the commands that caused it.
    fn pipeline(&self, pipe: &Pipeline) -> impl Future<Output = Result<Vec<SlotReply>, BackendError>> + Send;

    /// Sends `pipe`'s first command and, behind it, the read-only probes that follow it (PTTL of the keys the
    /// command reads): one [`SlotReply`] per command, in order. An application error on a probe is that probe's
    /// slot; any failure of the batch fails the call. By default one pipeline (one round trip).
    fn query_then(&self, pipe: &Pipeline) -> impl Future<Output = Result<Vec<SlotReply>, BackendError>> + Send {
        self.pipeline(pipe)
    }

    /// Cluster mode: each master's own breaker, for the JSON routes. `None` in the modes that have one node at a
    /// time, so their answers keep their shape.
    fn nodes(&self) -> Option<Vec<NodeView>> {
        None
    }

    /// Cluster mode: gives each master's own breaker reloaded settings. The other modes have none.
    fn reconfigure_breakers(&self, _settings: &crate::breaker::Settings) {}

    /// A new connection of its own to Redis (the master; in cluster mode, the master of `slot`, the slot of
    /// the command's first key), with no response timeout, for one blocking command (BLPOP, XREAD BLOCK ...),
    /// which holds its connection until something happens: on the shared one it would stall every call queued
    /// behind it. Connecting is bounded by `redis.connect_timeout`.
    fn dedicated(&self, slot: Option<u16>) -> impl Future<Output = Result<MultiplexedConnection, BackendError>> + Send;

    /// A new connection of one subscribing client's own, to the master (in cluster mode: the master of `slot`,
    /// a shard channel's slot, or for `None` any master believed up, since Redis Cluster carries a `PUBLISH`
    /// to every node). It speaks RESP3, so what Redis publishes arrives as pushes, which go to `pushes`; each
    /// (un)subscription sent on it is bounded by `redis.command_timeout`, connecting by `redis.connect_timeout`.
    fn pubsub<P: AsyncPushSender>(
        &self,
        slot: Option<u16>,
        pushes: P,
    ) -> impl Future<Output = Result<PubSubConnection, BackendError>> + Send;

    /// Cluster mode: the address of the master that owns `slot` now, so that a subscriber can tell whether a
    /// connection it has reaches the node a shard channel lives on. `None` in the modes with one master.
    fn master_of(&self, _slot: u16) -> Option<String> {
        None
    }
}

/// A subscribing client's connection of its own ([`Backend::pubsub`]), and the master it reached (cluster mode;
/// `None` in the modes with one master).
pub struct PubSubConnection {
    pub conn: MultiplexedConnection,
    pub node: Option<String>,
}

/// Opens a subscriber's connection like `client`'s, but in RESP3, with `config`'s settings (its connect timeout
/// and credentials), a response timeout of `command_timeout` and Redis's pushes sent to `pushes`.
pub(crate) async fn open_pubsub<P: AsyncPushSender>(
    client: &redis::Client,
    config: &AsyncConnectionConfig,
    command_timeout: std::time::Duration,
    pushes: P,
) -> Result<MultiplexedConnection, BackendError> {
    let info = client.get_connection_info().clone();
    let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(|e| classify(&e))?;
    let config = config
        .clone()
        .set_response_timeout(Some(command_timeout))
        .set_push_sender(pushes);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| classify(&e))
}

/// Server error codes that mean Redis cannot serve right now, rather than that the command was wrong.
/// WRONGPASS / NOAUTH: redguard's own credentials are refused, so no command can succeed either.
/// MOVED / ASK: a cluster redirect that could not be followed within the retries (the target is down).
const UNHEALTHY_CODES: [&str; 10] = [
    "MOVED",
    "ASK",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "BUSY",
    "WRONGPASS",
    "NOAUTH",
];

/// Sorts a redis-rs error into the breaker's two kinds.
pub(crate) fn classify(err: &RedisError) -> BackendError {
    if err.is_timeout() {
        return BackendError::Timeout;
    }
    let unhealthy = err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.kind() == ErrorKind::AuthenticationFailed
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

pub(crate) fn server_error_message(e: &ServerError) -> String {
    redis_cli_style(e.code(), e.details())
}

/// The per-command answers of a pipeline sent with `ignore_errors`, which leaves each error in its slot.
fn pipeline_slots(expected: usize, replies: Result<Vec<Value>, BackendError>) -> Result<Vec<SlotReply>, BackendError> {
    let values = replies?;
    if values.len() != expected {
        return Err(BackendError::Unavailable(format!(
            "expected {expected} replies to a pipeline, got {}",
            values.len()
        )));
    }
    values.into_iter().map(slot).collect()
}

/// A pipeline's reply as a list of values (redis-rs answers one array for the whole batch).
fn into_values(value: Value) -> Result<Vec<Value>, BackendError> {
    match value {
        Value::Array(values) => Ok(values),
        other => Err(BackendError::Unavailable(format!(
            "expected an array of replies to a pipeline, got {other:?}"
        ))),
    }
}

/// Runs `fut` within `timeout`; a late answer is [`BackendError::Timeout`], an error is classified.
///
/// A combinator, not an `async fn`: an `async fn` would keep its argument `fut` and the timeout that moved
/// it, so twice the size of a Redis call's future (over a kilobyte), which every request would then copy.
fn bounded<T>(
    timeout: std::time::Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> impl Future<Output = Result<T, BackendError>> {
    use futures_util::FutureExt as _;
    tokio::time::timeout(timeout, fut).map(|result| match result {
        Err(_elapsed) => Err(BackendError::Timeout),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(classify(&err)),
    })
}

/// Keeps one timer armed at all times, at most `command_timeout` ahead, until `stop` resolves.
///
/// Why: every call to Redis is bounded by a timer ([`bounded`]). When tokio registers a timer while its time
/// driver knows of no earlier one (the usual state after an idle moment, when every earlier call has finished
/// and dropped its timer), it wakes the driver by writing to an eventfd, even on this one-threaded runtime,
/// where the driver cannot be asleep at that moment (tokio issue 5207). Measured with `strace -c`, that was one
/// extra `write` system call per request. With this timer pending, the driver always knows of a deadline no
/// later than any new call's, so registering one never wakes it. The cost: `1 / command_timeout` wake-ups a
/// second (4 at the default 250 ms).
pub(crate) async fn keep_timer_armed(command_timeout: std::time::Duration, stop: impl Future<Output = ()>) {
    let period = command_timeout.max(std::time::Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stop => return,
        }
    }
}

/// Why the Redis connection settings could not be turned into a backend (redguard does not start).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] RedisError),
    #[error("cannot read {key} {}: {source}", .path.display())]
    TlsFile {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The backend of the configured `redis.mode`.
#[derive(Clone)]
pub enum AnyBackend {
    Standalone(Standalone),
    Cluster(Cluster),
    Sentinel(Sentinel),
}

/// Builds the backend for `cfg.redis.mode`. No connection is made here: redguard starts (degraded) even when
/// Redis is down, and heals when it comes back. Cluster mode needs a tokio runtime (it spawns its health task).
/// With a password configured, also the [`Password`] its connections authenticate with, which a reload can
/// change.
pub(crate) fn build(
    cfg: &RedisConfig,
    breaker: crate::breaker::Settings,
    metrics: Arc<Metrics>,
) -> Result<(AnyBackend, Option<Password>), BuildError> {
    let tls = tls_certificates(&cfg.tls)?;
    let password = cfg
        .password
        .as_ref()
        .map(|p| Password::new(effective_username(cfg), p.expose()));
    let backend = match cfg.mode {
        RedisMode::Standalone => AnyBackend::Standalone(Standalone::new(cfg, tls, password.clone())?),
        RedisMode::Cluster => AnyBackend::Cluster(Cluster::new(cfg, tls, breaker, metrics, password.clone())?),
        RedisMode::Sentinel => AnyBackend::Sentinel(Sentinel::new(cfg, tls, password.clone())?),
    };
    Ok((backend, password))
}

/// Every reason [`build`] would refuse these settings, found without connecting (and without a runtime): the
/// `redis.tls` files, each URL of the mode (all bad ones are named, masked), then the mode's client, built by
/// the same function [`build`] uses. Part of the pre-flight check that `run` and `check-config` share.
pub(crate) fn check(cfg: &RedisConfig) -> Vec<String> {
    let mut p = Vec::new();
    let tls = tls_certificates(&cfg.tls).unwrap_or_else(|e| {
        p.push(e.to_string());
        None
    });
    let key = match cfg.mode {
        RedisMode::Standalone => "redis.url",
        RedisMode::Cluster => "redis.nodes",
        RedisMode::Sentinel => "redis.sentinels",
    };
    for url in cfg.mode_urls() {
        if let Err(e) = url.parse::<ConnectionInfo>() {
            p.push(format!("{key}: {:?} is not a valid Redis URL: {e}", mask_url(url)));
        }
    }
    if p.is_empty() {
        let built = match cfg.mode {
            RedisMode::Standalone => client_for(&cfg.url, cfg, tls.as_ref()).map(drop),
            RedisMode::Cluster => cluster::clients(cfg, tls, None).map(drop),
            RedisMode::Sentinel => sentinel::client(cfg, tls).map(drop),
        };
        if let Err(e) = built {
            p.push(BuildError::Redis(e).to_string());
        }
    }
    p
}

/// The cluster client's futures are about seven times the size of the standalone ones (3.4 KB against 0.5 KB),
/// and an enum's future is as large as its largest arm. Boxed, they cost cluster calls one allocation and keep
/// every other mode's request future small (hyper moves the whole handler future into its connection's slot
/// on every request).
impl Backend for AnyBackend {
    async fn query(&self, cmd: &Cmd) -> Result<Value, BackendError> {
        match self {
            AnyBackend::Standalone(b) => b.query(cmd).await,
            AnyBackend::Cluster(b) => Box::pin(b.query(cmd)).await,
            AnyBackend::Sentinel(b) => b.query(cmd).await,
        }
    }

    async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        match self {
            AnyBackend::Standalone(b) => b.pipeline(pipe).await,
            AnyBackend::Cluster(b) => Box::pin(b.pipeline(pipe)).await,
            AnyBackend::Sentinel(b) => b.pipeline(pipe).await,
        }
    }

    async fn query_then(&self, pipe: &Pipeline) -> Result<Vec<SlotReply>, BackendError> {
        match self {
            AnyBackend::Standalone(b) => b.query_then(pipe).await,
            AnyBackend::Cluster(b) => Box::pin(b.query_then(pipe)).await,
            AnyBackend::Sentinel(b) => b.pipeline(pipe).await,
        }
    }

    async fn pubsub<P: AsyncPushSender>(&self, slot: Option<u16>, pushes: P) -> Result<PubSubConnection, BackendError> {
        match self {
            AnyBackend::Standalone(b) => b.pubsub(slot, pushes).await,
            AnyBackend::Cluster(b) => b.pubsub(slot, pushes).await,
            AnyBackend::Sentinel(b) => b.pubsub(slot, pushes).await,
        }
    }

    fn master_of(&self, slot: u16) -> Option<String> {
        match self {
            AnyBackend::Cluster(b) => b.master_of(slot),
            AnyBackend::Standalone(_) | AnyBackend::Sentinel(_) => None,
        }
    }

    async fn dedicated(&self, slot: Option<u16>) -> Result<MultiplexedConnection, BackendError> {
        match self {
            AnyBackend::Standalone(b) => b.dedicated(slot).await,
            AnyBackend::Cluster(b) => b.dedicated(slot).await,
            AnyBackend::Sentinel(b) => b.dedicated(slot).await,
        }
    }

    fn nodes(&self) -> Option<Vec<NodeView>> {
        match self {
            AnyBackend::Cluster(b) => b.nodes(),
            AnyBackend::Standalone(_) | AnyBackend::Sentinel(_) => None,
        }
    }

    fn reconfigure_breakers(&self, settings: &crate::breaker::Settings) {
        if let AnyBackend::Cluster(b) = self {
            b.reconfigure_breakers(settings);
        }
    }
}

/// The ACL user redguard authenticates to Redis (the master, in sentinel mode) as: `redis.username`, else the
/// user in the URL (the first seed's in cluster mode; sentinel URLs carry none), else Redis's `default` user.
/// Read from the URL as redis-rs reads it (percent-decoded), so the log names the user the connection uses.
pub(crate) fn effective_username(cfg: &RedisConfig) -> String {
    if let Some(user) = &cfg.username {
        return user.clone();
    }
    let url = match cfg.mode {
        RedisMode::Standalone => Some(cfg.url.as_str()),
        RedisMode::Cluster => cfg.nodes.first().map(String::as_str),
        RedisMode::Sentinel => None,
    };
    url.and_then(|u| u.parse::<ConnectionInfo>().ok())
        .and_then(|info| info.redis_settings().username().map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_USER.to_owned())
}

/// The user Redis authenticates a connection as when it names none (`AUTH <password>`, or no AUTH at all).
const DEFAULT_USER: &str = "default";

/// Sentinel mode: the user redguard authenticates to the sentinels as (`redis.sentinel_username`, else `default`).
pub(crate) fn effective_sentinel_username(cfg: &RedisConfig) -> String {
    cfg.sentinel_username.clone().unwrap_or_else(|| DEFAULT_USER.to_owned())
}

impl AnyBackend {
    /// Connects once and logs the outcome, so a wrong password, an unknown master name or a TLS problem shows
    /// up in the start-up log (never with the password in it), even before the first call fails. In sentinel
    /// mode a refusal may come from the sentinels or from the master (redis-rs reports both alike), so the hint
    /// names both sets of credentials.
    /// `username` and `sentinel_username` are the effective users ([`effective_username`]).
    pub async fn log_startup(&self, target: String, username: String, sentinel_username: String) {
        let username = username.as_str();
        let error = match self.query(&redis::cmd("PING")).await {
            Ok(_) => {
                tracing::info!(redis = %target, username, "connected to Redis");
                return;
            }
            Err(BackendError::Timeout) => {
                tracing::warn!(
                    redis = %target,
                    "Redis did not answer within redis.command_timeout at start; serving degraded"
                );
                return;
            }
            Err(BackendError::Unavailable(e) | BackendError::ShardUnavailable(e) | BackendError::App(e)) => e,
        };
        let is_refusal = |error: &str| {
            ["WRONGPASS", "NOAUTH", "authentication failed"]
                .iter()
                .any(|a| error.to_ascii_lowercase().contains(&a.to_ascii_lowercase()))
        };
        // The cluster client hides why no node could be used ("No connections found"): ask a seed directly.
        let error = match self {
            AnyBackend::Cluster(cluster) if !is_refusal(&error) => match cluster.seed_error().await {
                Some(seed) => format!("{error} ({seed})"),
                None => error,
            },
            _ => error,
        };
        let refused = is_refusal(&error);
        let master = "redis.username and the password (REDGUARD_REDIS_PASSWORD or redis.password_file)";
        match (self, refused) {
            (AnyBackend::Sentinel(_), true) => {
                let sentinel_username = sentinel_username.as_str();
                tracing::error!(
                    redis = %target, username, sentinel_username, error = %error,
                    "cannot use Redis at start; check redis.sentinel_username and the sentinel password \
                     (REDGUARD_REDIS_SENTINEL_PASSWORD or redis.sentinel_password_file) for the sentinels, and \
                     {master} for the master; serving degraded"
                )
            }
            (_, true) => tracing::error!(
                redis = %target, username, error = %error,
                "cannot use Redis at start; check {master}; serving degraded"
            ),
            (_, false) => {
                tracing::error!(
                    redis = %target, username, error = %error,
                    "cannot use Redis at start; serving degraded"
                )
            }
        }
    }
}

/// TCP options of every connection to Redis: `TCP_NODELAY`, which redis-rs leaves off by default. With Nagle's
/// algorithm on, a command written while an earlier one is still unacknowledged waits for that ACK, which puts
/// one request's latency into the next one's whenever concurrent requests share the multiplexed connection.
/// Proxies (twemproxy, Envoy) set it for the same reason.
pub(crate) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Applies `redis.username` and the password (which win over the URL's user:pass) and [`tcp_settings`] to one
/// parsed URL.
fn with_settings(info: ConnectionInfo, cfg: &RedisConfig) -> ConnectionInfo {
    let mut redis = info.redis_settings().clone();
    if let Some(user) = &cfg.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &cfg.password {
        redis = redis.set_password(password.expose());
    }
    info.set_redis_settings(redis).set_tcp_settings(tcp_settings())
}

/// Reads the PEM files of `redis.tls`; `None` when none is set (the system trust store is used for rediss://).
fn tls_certificates(cfg: &TlsConfig) -> Result<Option<TlsCertificates>, BuildError> {
    if !cfg.is_set() {
        return Ok(None);
    }
    let read = |key: &'static str, path: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, BuildError> {
        path.as_ref()
            .map(|p| {
                std::fs::read(p).map_err(|source| BuildError::TlsFile {
                    key,
                    path: p.clone(),
                    source,
                })
            })
            .transpose()
    };
    let root_cert = read("redis.tls.ca_file", &cfg.ca_file)?;
    let cert = read("redis.tls.cert_file", &cfg.cert_file)?;
    let key = read("redis.tls.key_file", &cfg.key_file)?;
    let client_tls = cert.zip(key).map(|(client_cert, client_key)| redis::ClientTlsConfig {
        client_cert,
        client_key,
    });
    Ok(Some(TlsCertificates { client_tls, root_cert }))
}

/// A `redis::Client` for one URL with the configured credentials and certificates.
fn client_for(url: &str, cfg: &RedisConfig, tls: Option<&TlsCertificates>) -> Result<redis::Client, RedisError> {
    let info = with_settings(url.parse::<ConnectionInfo>()?, cfg);
    match tls {
        Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
        None => redis::Client::open(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_armed_timer_runs_until_shutdown_and_survives_a_zero_timeout() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(keep_timer_armed(std::time::Duration::from_millis(250), async {
            let _ = stopped.await;
        }));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!task.is_finished(), "it keeps ticking while redguard runs");
        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), task)
            .await
            .expect("it ends once shutdown begins")
            .unwrap();
        // `tokio::time::interval` panics on a zero period; a zero timeout must not take the process down.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            keep_timer_armed(std::time::Duration::ZERO, std::future::ready(())),
        )
        .await
        .unwrap();
    }

    #[test]
    fn the_effective_user_is_the_configured_one_else_the_urls_else_default() {
        let cfg = |mode, url: &str, username: Option<&str>| RedisConfig {
            mode,
            url: url.into(),
            nodes: vec![url.into()],
            username: username.map(Into::into),
            ..RedisConfig::default()
        };
        let user = |c: &RedisConfig| effective_username(c);
        assert_eq!(user(&cfg(RedisMode::Standalone, "redis://app:pw@h:6379", None)), "app");
        assert_eq!(
            user(&cfg(RedisMode::Standalone, "redis://a%40b:pw@h:6379", None)),
            "a@b"
        );
        assert_eq!(
            user(&cfg(RedisMode::Standalone, "redis://app:pw@h:6379", Some("ops"))),
            "ops"
        );
        assert_eq!(user(&cfg(RedisMode::Standalone, "redis://:pw@h:6379", None)), "default");
        assert_eq!(user(&cfg(RedisMode::Standalone, "redis://h:6379", None)), "default");
        assert_eq!(user(&cfg(RedisMode::Cluster, "redis://app:pw@h:7000", None)), "app");
        assert_eq!(user(&cfg(RedisMode::Sentinel, "redis://h:26379", None)), "default");
        assert_eq!(effective_sentinel_username(&RedisConfig::default()), "default");
    }

    #[test]
    fn connections_to_redis_disable_nagle_and_keep_the_credentials() {
        let cfg = RedisConfig {
            username: Some("app".into()),
            ..RedisConfig::default()
        };
        let info = client_for("redis://127.0.0.1:1/", &cfg, None)
            .unwrap()
            .get_connection_info()
            .clone();
        assert!(info.tcp_settings().nodelay(), "TCP_NODELAY must be set");
        assert_eq!(info.redis_settings().username(), Some("app"));
    }

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
        assert!(
            pipeline_slots(2, Ok(vec![Value::Int(1)])).is_err(),
            "a short answer is a broken connection"
        );
    }

    /// LOADING (a restarted Redis reading its dataset) cannot be produced in a test without gigabytes of data;
    /// it takes the same path as READONLY and BUSY, which tests/faults.rs produces for real.
    #[test]
    fn server_states_are_failures_and_command_errors_are_app_errors() {
        let server_error = |reply: &str| -> RedisError {
            match redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap() {
                Value::ServerError(e) => e.into(),
                other => panic!("not an error reply: {other:?}"),
            }
        };
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
        let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
        assert_eq!(classify(&server_error(wrongtype)), BackendError::App(wrongtype.into()));
        assert!(matches!(
            classify(&server_error("ERR syntax error")),
            BackendError::App(_)
        ));
    }

    #[test]
    fn application_errors_read_like_redis_cli() {
        let err = redis::make_extension_error("NOSCRIPT".into(), Some("No matching script.".into()));
        assert_eq!(classify(&err), BackendError::App("NOSCRIPT No matching script.".into()));
        let err = redis::make_extension_error("BUSY".into(), Some("Redis is busy running a script.".into()));
        assert!(matches!(classify(&err), BackendError::Unavailable(_)));
    }

    #[test]
    fn auth_and_cluster_state_errors_are_failures_and_crossslot_is_an_app_error() {
        let parsed = |text: &str| -> RedisError {
            let v = redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap();
            match v {
                Value::ServerError(e) => e.into(),
                other => panic!("{other:?}"),
            }
        };
        assert!(matches!(
            classify(&parsed("WRONGPASS invalid username-password pair or user is disabled.")),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            classify(&parsed("CLUSTERDOWN The cluster is down")),
            BackendError::Unavailable(_)
        ));
        assert_eq!(
            classify(&parsed("CROSSSLOT Keys in request don't hash to the same slot")),
            BackendError::App("CROSSSLOT Keys in request don't hash to the same slot".to_owned())
        );
    }
}
