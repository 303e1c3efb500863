//! redguard: a circuit-breaking Redis sidecar.
//!
//! # Layout
//!
//! ```text
//!  application ──HTTP/1.1+JSON──▶ Unix socket ──▶ api (routes, request parsing, replies, errors)
//!                                                   │        └──▶ policy (which commands may pass)
//!                                                   ▼
//!                  ratelimit (script + local) ──▶ client::Resilient ──▶ breaker (state machine, clock)
//!                                         │        │
//!                                         │        └──▶ cache (fallback LRU + TTL)
//!                                         ▼
//!                                       backend (redis-rs, command timeout, pipelines) ──▶ Redis
//!
//!  breaker transitions ──▶ observers: metrics, log, recovery probe, cache clear-on-close, notifier
//!                                                                        │ (bounded queues, never waits)
//!                                                                        ▼
//!                                              per-sink workers ──HTTPS──▶ Slack, PagerDuty, webhooks
//!  admin (TCP, read-only) ──▶ /metrics, health, /livez, /readyz
//! ```
//!
//! - [`config`]: YAML + environment, parsed and validated once at start.
//! - [`breaker`]: the pure state machine ([`breaker::state`]) and its thread-safe wrapper.
//! - [`cache`]: the bounded fallback cache.
//! - [`backend`]: Redis access behind a small trait.
//! - [`client`]: breaker + backend + cache; where the sidecar's promises are kept, for typed ops, raw
//!   commands, pipelines and scripts.
//! - [`op`]: the typed ops; [`policy`]: the command allow/deny rules.
//! - [`commands`]: the command table (read/write, resend, keys, flags) that policy, cache, retry and routing share.
//! - [`ratelimit`]: the sliding-window limiter, in Redis or, while Redis is away, in process.
//! - [`api`], [`admin`], [`health`], [`metrics`]: the edges; [`resp`]: the Redis-protocol socket, a second
//!   edge onto the same client.
//! - [`notify`]: state-change notifications to Slack, PagerDuty and webhooks, off the request path.
//! - [`clock`] and [`jitter`]: injected time, and the seeded randomness that spreads retries.
//! - [`preflight`]: the checks `run` makes before serving, which `check-config` makes too.
//! - [`resources`]: the descriptors both listeners and Redis share, and returning freed memory.
//! - [`reload`]: live reconfiguration (SIGHUP, a changed config file, `POST /v1/reload`).
//!
//! [`run`] wires them together and returns when the shutdown future resolves, the API has drained and pending
//! notifications have had their grace.

// The route futures nest many async fns (route -> client -> breaker-guarded backend call); computing their layout
// exceeds rustc's default query depth in instrumented builds (cargo fuzz's sanitizer flags).
#![recursion_limit = "256"]

pub(crate) mod admin;
pub mod api;
pub(crate) mod backend;
pub mod breaker;
pub mod cache;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub(crate) mod health;
pub(crate) mod jitter;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod op;
pub(crate) mod policy;
pub mod preflight;
pub(crate) mod ratelimit;
pub mod reload;
pub(crate) mod resources;
pub mod resp;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::breaker::{Breaker, Observer, Settings, State, Transition};
use crate::cache::{CacheSettings, FallbackCache};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::notify::Notifier;

/// The client the API serves from: the backend is the one of `redis.mode` (standalone, cluster, sentinel).
pub type Client = client::Resilient<backend::AnyBackend>;

/// Why redguard could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config cannot be used on this host (the pre-flight check): nothing was started.
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Socket(#[from] api::socket::SocketError),
    #[error("cannot bind listen.resp_tcp {addr}: {source}")]
    RespTcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the admin listener on {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Redis(#[from] backend::BuildError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Notify(#[from] notify::NotifyError),
}

/// Logs every transition: opening and half-open probes failing at warn, recovery at info.
struct LogTransitions {
    redis: String,
}

impl Observer for LogTransitions {
    fn on_transition(&self, t: &Transition, last_error: Option<&str>) {
        let (from, to, lasted) = (t.from.as_str(), t.to.as_str(), t.previous_lasted.as_secs_f64());
        let reason = t.reason.to_string();
        if t.to == State::Closed {
            info!(from, to, reason, lasted_s = lasted, redis = %self.redis, "circuit closed");
        } else {
            warn!(from, to, reason, last_error, failures = t.consecutive_failures, lasted_s = lasted, redis = %self.redis, "circuit state changed");
        }
    }
}

fn breaker_settings(cfg: &Config) -> Settings {
    let b = &cfg.breaker;
    Settings {
        mode: b.mode,
        failure_threshold: b.failure_threshold,
        failure_rate_threshold: b.failure_rate_threshold,
        slow_call_duration: b.slow_call_duration,
        slow_call_rate_threshold: b.slow_call_rate_threshold,
        window_size: b.window_size,
        minimum_calls: b.minimum_calls,
        recovery_timeout: b.recovery_timeout,
        recovery_jitter: b.recovery_jitter,
        recovery_backoff: b.recovery_backoff,
        recovery_timeout_max: b.recovery_timeout_max,
        half_open_max_calls: b.half_open_max_calls,
        success_threshold: b.success_threshold,
        probe_timeout: cfg.redis.command_timeout,
    }
}

fn cache_settings(cfg: &Config) -> CacheSettings {
    CacheSettings {
        max_entries: cfg.cache.max_entries,
        max_bytes: cfg.cache.max_bytes,
        ttl: cfg.cache.ttl,
    }
}

/// What a reload applies to ([`reload::Targets`]): every owner of a live key.
struct LiveParts {
    client: Arc<Client>,
    app: Arc<api::App>,
    resp: Arc<resp::Resp>,
    admin: Arc<admin::Admin>,
    notifier: Arc<Notifier>,
    /// The `notify` section the notifier runs on: its sinks are rebuilt only when it changes.
    notify: std::sync::Mutex<config::NotifyConfig>,
    set_log_level: Option<reload::SetLogLevel>,
}

impl reload::Targets for LiveParts {
    fn apply(&self, cfg: &Config) -> Result<(), reload::Refusal> {
        // A password can be rotated, not added or removed: connections without one send no AUTH at all.
        if cfg.redis.password.is_some() != self.client.has_password() {
            return Err(reload::Refusal::RestartRequired(vec!["redis.password"]));
        }
        let mut notify = self.notify.lock().unwrap_or_else(|e| e.into_inner());
        // First what can fail: new sinks, and the HTTP client they send with.
        let sinks = if cfg.notify == *notify {
            None
        } else {
            let invalid = |e: &dyn std::fmt::Display| reload::Refusal::Invalid(e.to_string());
            let prepared = self.notifier.prepare(cfg).map_err(|e| invalid(&e))?;
            let transport = if cfg.notify.sinks.is_empty() {
                None
            } else {
                Some(notify_transport(cfg).map_err(|e| invalid(&e))?)
            };
            Some((prepared, transport))
        };
        self.client
            .reconfigure(breaker_settings(cfg), cache_settings(cfg), cfg.cache.clear_on_close);
        if let Some(password) = &cfg.redis.password {
            self.client.set_password(password.expose());
        }
        self.app.reconfigure(cfg);
        self.resp.reconfigure(cfg);
        self.admin
            .ready_requires_redis
            .store(cfg.admin.ready_requires_redis, Ordering::Relaxed);
        self.admin.read_timeout.set(cfg.admin.read_timeout);
        if let Some(set) = &self.set_log_level {
            set(&cfg.log.level);
        }
        if let Some((prepared, transport)) = sinks {
            self.notifier.install(prepared, transport);
            *notify = cfg.notify.clone();
        }
        Ok(())
    }
}

/// Builds the resilient client and its observers from the config. The notifier is one of them; it is returned
/// too so the caller can start its workers and give it its grace at shutdown.
pub fn build_client(cfg: &Config) -> Result<(Arc<Client>, Arc<Notifier>), RunError> {
    // rustls needs one crypto provider for the process: ring (no C toolchain, no OpenSSL). Installing it a
    // second time (tests build several clients) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(metrics::Metrics::new(cfg.redis.mode.as_str()));
    metrics.set_redis_info(&cfg.redis.paging_target(), cfg.redis.mode.as_str());
    let notifier = Arc::new(Notifier::new(cfg, &metrics)?);
    let cache = Arc::new(FallbackCache::new(cache_settings(cfg), Arc::new(SystemClock)));
    let clear_on_close = Arc::new(AtomicBool::new(cfg.cache.clear_on_close));
    let opened = Arc::new(Notify::new());
    let mut observers: Vec<Arc<dyn Observer>> = vec![
        metrics.clone(),
        Arc::new(LogTransitions {
            redis: cfg.redis.display_target(),
        }),
        Arc::new(client::RecoveryWaker(opened.clone())),
    ];
    observers.push(Arc::new(client::ClearCacheOnClose {
        cache: cache.clone(),
        enabled: clear_on_close.clone(),
    }));
    // Registered even without sinks: a reload may add some.
    observers.push(notifier.clone());
    // Each sidecar gets its own jitter sequence, so a fleet that opened together spreads its probes.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let breaker = Breaker::new(breaker_settings(cfg), Arc::new(SystemClock), seed, observers);
    let (backend, password) = backend::build(&cfg.redis, breaker_settings(cfg), metrics.clone())?;
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn({
            let backend = backend.clone();
            let r = &cfg.redis;
            let (target, username, sentinel_username) = (
                r.display_target(),
                backend::effective_username(r),
                backend::effective_sentinel_username(r),
            );
            async move { backend.log_startup(target, username, sentinel_username).await }
        });
    }
    let client = Arc::new(client::Resilient::new(
        backend,
        breaker,
        cache,
        metrics,
        clear_on_close,
        password,
        opened,
    ));
    Ok((client, notifier))
}

/// Binds the RESP listeners the config asks for (`listen.resp_socket`, `listen.resp_tcp`) and starts serving
/// them until `stopped` resolves. The socket file is returned for removal at exit, as the JSON socket's is.
async fn start_resp<F, Fut>(
    cfg: &Config,
    resp: &Arc<resp::Resp>,
    gid: Option<u32>,
    stopped: &F,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, Option<api::socket::SocketFile>), RunError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = Vec::new();
    let mut file = None;
    if let Some(path) = &cfg.listen.resp_socket {
        let (listener, socket_file) = api::socket::bind("listen.resp_socket", path, cfg.listen.socket_mode, gid)?;
        file = Some(socket_file);
        let listener = resp::Listener::Unix(listener);
        tasks.push(tokio::spawn(resp::serve(resp.clone(), listener, stopped())));
        info!(socket = %path.display(), "redis protocol socket listening");
    }
    if let Some(addr) = cfg.listen.resp_tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::RespTcp { addr, source })?;
        tasks.push(tokio::spawn(resp::serve(
            resp.clone(),
            resp::Listener::Tcp(listener),
            stopped(),
        )));
        info!(%addr, "redis protocol listening on loopback TCP");
    }
    Ok((tasks, file))
}

/// The HTTP client the notifier sends with.
fn notify_transport(cfg: &Config) -> Result<Arc<dyn notify::transport::Transport>, RunError> {
    let http = notify::transport::Http::new(cfg.notify.timeout)
        .map_err(|e| notify::NotifyError::Client(e.without_url().to_string()))?;
    Ok(Arc::new(http))
}

/// `redguard notify-test`: sends one test event to every configured sink and reports each outcome.
pub async fn notify_test(cfg: &Config) -> Result<Vec<notify::TestReport>, RunError> {
    let metrics = Arc::new(metrics::Metrics::new("standalone"));
    let notifier = Notifier::new(cfg, &metrics)?;
    Ok(notifier.send_test(notify_transport(cfg)?).await)
}

/// Runs redguard until `shutdown` resolves, then drains in-flight requests (bounded by
/// `listen.drain_timeout`), removes the socket file (if it is still the one it created), gives pending
/// notifications `notify.shutdown_grace` and returns. Starts only if the [`preflight`] check passes; a start
/// that fails after the socket was bound removes it again.
///
/// `loaded` is the config read from `live.path` (none: the defaults); reloads read it again when asked through
/// `live.channel` (SIGHUP, `POST /v1/reload`) or, with `reload.watch`, when the file or a file it names changes.
pub async fn run(
    loaded: reload::Loaded,
    live: reload::Live,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let cfg = loaded.config.clone();
    let reload::Live {
        path,
        channel: reloads,
        set_log_level,
    } = live;
    if let Some(set) = &set_log_level {
        set(&cfg.log.level);
    }
    // Raised first, so the pre-flight check (which compares with the hard limit) holds for this process.
    if let Err(e) = resources::raise_descriptor_limit() {
        warn!(error = %e, "cannot raise the open-file limit");
    }
    let checked = preflight::check(&cfg)?;
    resources::return_freed_memory();
    let (client, notifier) = build_client(&cfg)?;
    if notifier.is_enabled() {
        notifier.start(notify_transport(&cfg)?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let admin_state = Arc::new(admin::Admin {
        client: client.clone(),
        socket_ready: false.into(),
        ready_requires_redis: cfg.admin.ready_requires_redis.into(),
        read_timeout: api::server::ReadTimeout::new(cfg.admin.read_timeout),
    });
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|source| RunError::Admin {
            addr: cfg.admin.listen,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().map_err(RunError::Serve)?;
    let admin_router = admin::router(admin_state.clone());
    let admin_limits = api::server::Limits {
        name: "admin",
        max_connections: cfg.admin.max_connections,
        read_timeout: admin_state.read_timeout.clone(),
        saturation: None,
    };
    let admin_task = tokio::spawn(api::server::serve(
        admin_listener,
        admin_limits,
        move |_: &tokio::net::TcpStream| admin::AdminHandler(admin_router.clone()),
        stopped(),
    ));

    // From here on, every way out of this function removes the socket file through `socket_file` (dropped on
    // an early return, removed explicitly after the drain), and only if it is still the one bound here.
    let (listener, socket_file) = api::socket::bind(
        "listen.socket",
        &cfg.listen.socket,
        cfg.listen.socket_mode,
        checked.socket_gid,
    )?;
    let app = Arc::new(api::App::new(client.clone(), &cfg, Some(reloads.requests.clone())));
    let resp = Arc::new(resp::Resp::new(client.clone(), app.clone(), &cfg));
    let (resp_tasks, resp_socket_file) = start_resp(&cfg, &resp, checked.socket_gid, &stopped).await?;
    let reloader = Arc::new(reload::Reloader::new(
        path.clone(),
        loaded,
        Arc::new(LiveParts {
            client: client.clone(),
            app: app.clone(),
            resp: resp.clone(),
            admin: admin_state.clone(),
            notifier: notifier.clone(),
            notify: std::sync::Mutex::new(cfg.notify.clone()),
            set_log_level,
        }),
        reload::ReloadMetrics::new(client.metrics().registry()),
    ));
    tokio::spawn(reload::serve(reloader.clone(), reloads.receiver));
    match &path {
        Some(path) if cfg.reload.watch => {
            let folders = reload::watched_folders(path, &cfg);
            tokio::spawn(reload::watch(folders, reloads.requests.clone(), stopped()));
        }
        _ => {}
    }
    drop(reloads.requests);
    let limits = api::server::Limits {
        name: "api",
        max_connections: cfg.api.max_connections,
        read_timeout: app.read_timeout.clone(),
        saturation: Some(client.metrics().api_saturation.clone()),
    };
    let api_handler = move |stream: &tokio::net::UnixStream| api::server::ApiHandler::new(app.clone(), stream);
    let mut api_task = tokio::spawn(api::server::serve(listener, limits, api_handler, stopped()));
    let mut resp_tasks = resp_tasks;
    admin_state.socket_ready.store(true, Ordering::Release);
    info!(socket = %cfg.listen.socket.display(), admin = %admin_addr, redis = %cfg.redis.display_target(), redis_mode = cfg.redis.mode.as_str(), "redguard listening");

    tokio::spawn(client.clone().run_recovery(stopped()));
    tokio::spawn(backend::keep_timer_armed(cfg.redis.command_timeout, stopped()));
    let checker = client.clone();
    tokio::spawn(async move { checker.check_redis().await });

    tokio::select! {
        _ = shutdown => info!("shutdown requested; draining"),
        res = &mut api_task => {
            // The accept loop only returns after shutdown; getting here means its task died.
            socket_file.remove();
            if let Some(file) = resp_socket_file {
                file.remove();
            }
            return Err(RunError::Serve(std::io::Error::other(format!("the API server stopped: {res:?}"))));
        }
    }
    admin_state.socket_ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let drain_timeout = reloader.current().listen.drain_timeout;
    let drained = async {
        let _ = (&mut api_task).await;
        for task in &mut resp_tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        warn!(
            timeout_seconds = drain_timeout.as_secs_f64(),
            "drain timeout elapsed; closing remaining connections"
        );
        api_task.abort();
        resp_tasks.iter().for_each(|t| t.abort());
    }
    admin_task.abort();
    socket_file.remove();
    if let Some(file) = resp_socket_file {
        file.remove();
    }
    // After the drain, so transitions caused by the last requests are sent too.
    notifier.shutdown(reloader.current().notify.shutdown_grace).await;
    info!("redguard stopped");
    Ok(())
}
