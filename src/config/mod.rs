//! Configuration: the YAML file, `REDGUARD_*` environment overrides and the Redis password, parsed
//! and validated once at start into typed structs. Every section and key is optional and falls back
//! to a documented default; unknown keys are rejected so typos fail loudly. Parse errors name the
//! file, line and key; validation reports every bad setting at once (as `section.key`), so an
//! operator fixes a file in one pass. The rest of redguard only ever sees a valid [`Config`].

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod notify;
mod target;

use crate::breaker;
use crate::policy;
pub use notify::{NotifyConfig, NotifyOn, Severity, SinkConfig, SinkKind, DEFAULT_PAGERDUTY_URL};

/// Every key that an environment variable `REDGUARD_<SECTION>_<KEY>` may override.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "listen",
        &[
            "socket",
            "socket_mode",
            "socket_group",
            "allowed_uids",
            "drain_timeout",
            "resp_socket",
            "resp_tcp",
        ],
    ),
    (
        "redis",
        &[
            "url",
            "mode",
            "nodes",
            "master_name",
            "sentinels",
            "username",
            "password_file",
            "sentinel_username",
            "sentinel_password_file",
            "tls",
            "command_timeout",
            "connect_timeout",
            "node_metrics_limit",
        ],
    ),
    (
        "breaker",
        &[
            "mode",
            "failure_threshold",
            "failure_rate_threshold",
            "slow_call_duration",
            "slow_call_rate_threshold",
            "window_size",
            "minimum_calls",
            "recovery_timeout",
            "recovery_jitter",
            "recovery_backoff",
            "recovery_timeout_max",
            "half_open_max_calls",
            "success_threshold",
        ],
    ),
    ("cache", &["max_entries", "max_bytes", "ttl", "clear_on_close"]),
    (
        "api",
        &[
            "max_body_bytes",
            "max_key_bytes",
            "max_value_bytes",
            "max_connections",
            "read_timeout",
            "on_unavailable",
            "max_pipeline_commands",
            "max_inflight_body_bytes",
        ],
    ),
    (
        "admin",
        &["listen", "ready_requires_redis", "max_connections", "read_timeout"],
    ),
    (
        "notify",
        &[
            "instance",
            "on",
            "min_interval",
            "queue_size",
            "timeout",
            "max_attempts",
            "shutdown_grace",
            "runbook_url",
            "dashboard_url",
        ],
    ),
    ("ratelimit", &["on_unavailable", "local_max_keys"]),
    ("reload", &["watch"]),
    ("log", &["level", "format"]),
    ("resp", &["serve_cached_reads", "max_dedicated_connections"]),
];

/// Keys that only the file can set: lists and nested sections, which one environment variable cannot hold.
/// Together with [`KNOWN_KEYS`] they are every key of a section.
const FILE_ONLY_KEYS: &[(&str, &[&str])] = &[("notify", &["sinks"]), ("api", &["commands"])];

/// The environment variable holding the Redis password; it wins over `redis.password_file`.
const PASSWORD_ENV: &str = "REDGUARD_REDIS_PASSWORD";
/// The environment variable holding the sentinels' password; it wins over `redis.sentinel_password_file`.
const SENTINEL_PASSWORD_ENV: &str = "REDGUARD_REDIS_SENTINEL_PASSWORD";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The YAML is malformed, has an unknown key or a value of the wrong type.
    #[error("{origin}{}: {message}", location(*.line, *.column))]
    Parse {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A `REDGUARD_*` environment variable holds a value of the wrong type.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// `redis.password_file` or `redis.sentinel_password_file` (the `key`) could not be read.
    #[error("cannot read {key} {}: {source}", .path.display())]
    PasswordFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// One or more settings are out of range or inconsistent; each problem names its `section.key`.
    #[error("invalid configuration in {origin}:\n  {}", .problems.join("\n  "))]
    Invalid { origin: String, problems: Vec<String> },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        _ => String::new(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where redguard accepts client connections.
    #[serde(deserialize_with = "section")]
    pub listen: ListenConfig,
    /// The upstream Redis server.
    #[serde(deserialize_with = "section")]
    pub redis: RedisConfig,
    /// When calls to Redis are cut off and how they are let through again.
    #[serde(deserialize_with = "section")]
    pub breaker: BreakerConfig,
    /// The local cache that answers while Redis is unavailable.
    #[serde(deserialize_with = "section")]
    pub cache: CacheConfig,
    /// Limits and behaviour of the client-facing API.
    #[serde(deserialize_with = "section")]
    pub api: ApiConfig,
    /// The admin HTTP endpoint (health, readiness, metrics).
    #[serde(deserialize_with = "section")]
    pub admin: AdminConfig,
    /// State-change notifications (Slack, PagerDuty, webhooks).
    #[serde(deserialize_with = "section")]
    pub notify: NotifyConfig,
    /// The sliding-window rate limiter (`POST /v1/ratelimit`).
    #[serde(deserialize_with = "section")]
    pub ratelimit: RateLimitConfig,
    /// Live reconfiguration (SIGHUP, a changed config file, `POST /v1/reload`).
    #[serde(deserialize_with = "section")]
    pub reload: ReloadConfig,
    /// What is logged.
    #[serde(deserialize_with = "section")]
    pub log: LogConfig,
    /// The RESP socket (`listen.resp_socket`): how it answers Redis clients.
    #[serde(deserialize_with = "section")]
    pub resp: RespConfig,
}

const DEFAULT_SOCKET: &str = "./redguard.sock";
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `listen`: the Unix socket clients connect to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Path of the Unix socket redguard listens on. Its directory must exist, it fits `sun_path` (107 bytes on
    /// Linux), and nothing but a stale socket may be at it at start: anything else is refused, never replaced
    /// (checked by [`crate::preflight`], in `run` and `check-config` alike).
    pub socket: PathBuf,
    /// Permission bits of the socket file, written as an octal string ("0660").
    #[serde(deserialize_with = "socket_mode")]
    pub socket_mode: u32,
    /// Group owning the socket file (a name from /etc/group, or a numeric gid), so the application's
    /// group can connect under mode 0660. None keeps the process's group.
    pub socket_group: Option<String>,
    /// If set, only these peer uids (checked with SO_PEERCRED) may use the socket; others get 403.
    pub allowed_uids: Option<Vec<u32>>,
    /// How long in-flight requests may finish after shutdown begins.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Path of a second Unix socket that speaks the Redis protocol (RESP), for unmodified Redis clients; off
    /// when unset. The same `socket_mode`, `socket_group` and `allowed_uids` apply to it.
    pub resp_socket: Option<PathBuf>,
    /// A loopback TCP address for the Redis protocol, for clients that cannot dial a Unix socket; off when
    /// unset. Only loopback addresses are accepted: it has no peer-uid check.
    pub resp_tcp: Option<SocketAddr>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: None,
            allowed_uids: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            resp_socket: None,
            resp_tcp: None,
        }
    }
}

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_NODE_METRICS_LIMIT: usize = 16;

/// How redguard finds the Redis that serves its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server at `redis.url`.
    #[default]
    Standalone,
    /// A Redis Cluster reached through the seed nodes in `redis.nodes`; keys are routed by slot.
    Cluster,
    /// The master named `redis.master_name`, as reported by the sentinels in `redis.sentinels`.
    Sentinel,
}

impl RedisMode {
    /// The name used in the config and in `redguard_build_info{redis_mode}`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// `redis`: the upstream server(s) and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL in standalone mode, `redis://` or `rediss://` (TLS). Log it via [`RedisConfig::display_url`].
    pub url: String,
    /// `standalone`, `cluster` or `sentinel`.
    pub mode: RedisMode,
    /// Cluster mode: seed node URLs (a YAML list, or one comma-separated string); the rest is discovered.
    #[serde(deserialize_with = "string_list")]
    pub nodes: Vec<String>,
    /// Sentinel mode: the name the sentinels monitor the master under.
    pub master_name: Option<String>,
    /// Sentinel mode: sentinel URLs (a YAML list, or one comma-separated string). `rediss://` here means
    /// TLS to the sentinels and to the master they name.
    #[serde(deserialize_with = "string_list")]
    pub sentinels: Vec<String>,
    /// ACL user for AUTH; wins over a user in the URL.
    pub username: Option<String>,
    /// File whose content (trailing newline trimmed) is the password; relative to the working directory.
    pub password_file: Option<PathBuf>,
    /// Password for AUTH: from `REDGUARD_REDIS_PASSWORD` or else `password_file`. Not a YAML key.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// Sentinel mode: ACL user for AUTH to the sentinels themselves (`redis.username` is the master's).
    pub sentinel_username: Option<String>,
    /// Sentinel mode: file whose content (trailing newline trimmed) is the sentinels' password.
    pub sentinel_password_file: Option<PathBuf>,
    /// Password for AUTH to the sentinels (their `requirepass` or an ACL user's): from
    /// `REDGUARD_REDIS_SENTINEL_PASSWORD` or else `sentinel_password_file`. Not a YAML key, like `password`.
    #[serde(skip)]
    pub sentinel_password: Option<Secret>,
    /// Certificates for `rediss://` connections.
    #[serde(deserialize_with = "section")]
    pub tls: TlsConfig,
    /// Deadline for one command; a call that misses it counts as a failure.
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Deadline for establishing a connection.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Cluster mode: at most this many nodes get their own `node` label in the per-node metrics; the others
    /// are counted under `node="other"`.
    pub node_metrics_limit: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_REDIS_URL.to_owned(),
            mode: RedisMode::default(),
            nodes: Vec::new(),
            master_name: None,
            sentinels: Vec::new(),
            username: None,
            password_file: None,
            password: None,
            sentinel_username: None,
            sentinel_password_file: None,
            sentinel_password: None,
            tls: TlsConfig::default(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            node_metrics_limit: DEFAULT_NODE_METRICS_LIMIT,
        }
    }
}

/// `redis.tls`: PEM files for `rediss://` connections (rustls). Without `ca_file` the system's trust store
/// is used; `cert_file` + `key_file` (both or neither) present a client certificate (mutual TLS).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) that sign the server certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (chain) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Private key of the client certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether any TLS file is configured.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Masks the password (or a bare user-info part) of one URL; see [`RedisConfig::display_url`].
pub(crate) fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let user = match authority[..at].split_once(':') {
        Some((user, _)) => format!("{user}:"),
        None => String::new(),
    };
    format!("{}{user}***{}", &url[..scheme_end], &rest[at..])
}

impl RedisConfig {
    /// The URL with any password replaced by `***`, safe for logs and notifications.
    /// A user-info part without `:` is masked whole, since some clients read it as a password.
    pub fn display_url(&self) -> String {
        mask_url(&self.url)
    }

    /// What redguard talks to in the configured mode, masked like [`RedisConfig::display_url`]:
    /// the URL, `cluster <seed>,<seed>`, or `sentinel <master_name> via <sentinel>,<sentinel>`.
    pub fn display_target(&self) -> String {
        let list = |urls: &[String]| urls.iter().map(|u| mask_url(u)).collect::<Vec<_>>().join(",");
        match self.mode {
            RedisMode::Standalone => self.display_url(),
            RedisMode::Cluster => format!("cluster {}", list(&self.nodes)),
            RedisMode::Sentinel => format!(
                "sentinel {} via {}",
                self.master_name.as_deref().unwrap_or_default(),
                list(&self.sentinels)
            ),
        }
    }

    /// The URLs of the configured mode: the server, the seed nodes or the sentinels.
    pub fn mode_urls(&self) -> Vec<&str> {
        match self.mode {
            RedisMode::Standalone => vec![self.url.as_str()],
            RedisMode::Cluster => self.nodes.iter().map(String::as_str).collect(),
            RedisMode::Sentinel => self.sentinels.iter().map(String::as_str).collect(),
        }
    }

    /// Whether the configured mode connects over TLS (`rediss://`).
    pub fn uses_tls(&self) -> bool {
        self.mode_urls().first().is_some_and(|u| u.starts_with("rediss://"))
    }

    /// The sentinels' credentials outside sentinel mode: an error, since nothing would use them and the
    /// operator most likely meant the master's (`redis.username`, the password).
    fn sentinel_credentials_unused(&self, p: &mut Vec<String>) {
        for (key, set) in [
            ("redis.sentinel_username", self.sentinel_username.is_some()),
            ("redis.sentinel_password_file", self.sentinel_password_file.is_some()),
            (SENTINEL_PASSWORD_ENV, self.sentinel_password.is_some()),
        ] {
            if set {
                p.push(format!(
                    "{key} is only used when redis.mode is sentinel (this one is {})",
                    self.mode.as_str()
                ));
            }
        }
    }

    /// The `redis.*` rules that depend on the mode.
    fn problems(&self, p: &mut Vec<String>) {
        let scheme_ok = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        let unused = |key: &str, set: bool, p: &mut Vec<String>| {
            if set {
                p.push(format!(
                    "redis.{key} is only used in another redis.mode (this one is {})",
                    self.mode.as_str()
                ));
            }
        };
        match self.mode {
            RedisMode::Standalone => {
                if !scheme_ok(&self.url) {
                    p.push(format!(
                        "redis.url must start with redis:// or rediss://, got {:?}",
                        self.display_url()
                    ));
                }
                unused("nodes", !self.nodes.is_empty(), p);
                unused("master_name", self.master_name.is_some(), p);
                unused("sentinels", !self.sentinels.is_empty(), p);
                self.sentinel_credentials_unused(p);
            }
            RedisMode::Cluster => {
                if self.nodes.is_empty() {
                    p.push("redis.nodes must list at least one seed node when redis.mode is cluster".to_owned());
                }
                unused("master_name", self.master_name.is_some(), p);
                unused("sentinels", !self.sentinels.is_empty(), p);
                self.sentinel_credentials_unused(p);
            }
            RedisMode::Sentinel => {
                if self.master_name.as_deref().is_none_or(str::is_empty) {
                    p.push("redis.master_name must be set when redis.mode is sentinel".to_owned());
                }
                if self.sentinels.is_empty() {
                    p.push("redis.sentinels must list at least one sentinel when redis.mode is sentinel".to_owned());
                }
                if self.sentinels.iter().any(|u| u.contains('@')) {
                    p.push(
                        "redis.sentinels must not carry credentials; set redis.sentinel_username and the sentinel \
                         password (REDGUARD_REDIS_SENTINEL_PASSWORD or redis.sentinel_password_file) instead \
                         (redis.username and the password are for the master)"
                            .to_owned(),
                    );
                }
                unused("nodes", !self.nodes.is_empty(), p);
            }
        }
        if self.mode != RedisMode::Standalone {
            let key = if self.mode == RedisMode::Cluster {
                "redis.nodes"
            } else {
                "redis.sentinels"
            };
            let urls = self.mode_urls();
            for u in urls.iter().filter(|u| !scheme_ok(u)) {
                p.push(format!(
                    "{key} entries must start with redis:// or rediss://, got {:?}",
                    mask_url(u)
                ));
            }
            if urls.iter().any(|u| u.starts_with("rediss://")) && !urls.iter().all(|u| u.starts_with("rediss://")) {
                p.push(format!(
                    "{key} must all use the same scheme (all redis:// or all rediss://)"
                ));
            }
        }
        if self.username.as_deref() == Some("") {
            p.push("redis.username must not be empty".to_owned());
        }
        if self.sentinel_username.as_deref() == Some("") {
            p.push("redis.sentinel_username must not be empty".to_owned());
        }
        if self.node_metrics_limit == 0 {
            p.push("redis.node_metrics_limit must be at least 1".to_owned());
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            p.push("redis.tls.cert_file and redis.tls.key_file must be set together".to_owned());
        }
        if t.is_set() && !self.uses_tls() {
            let key = match self.mode {
                RedisMode::Standalone => "redis.url",
                RedisMode::Cluster => "redis.nodes",
                RedisMode::Sentinel => "redis.sentinels",
            };
            p.push(format!("redis.tls is set but {key} does not use rediss://"));
        }
    }
}

/// A string that never prints its content; use [`Secret::expose`] where the real value is needed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `breaker`: when to open the circuit and how to probe for recovery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// `enforce` rejects calls while open; `observe` only reports.
    pub mode: breaker::Mode,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Failure percentage over the window that opens the breaker; off when `None`.
    pub failure_rate_threshold: Option<f64>,
    /// A call slower than this counts as slow; set together with `slow_call_rate_threshold`.
    #[serde(deserialize_with = "opt_duration")]
    pub slow_call_duration: Option<Duration>,
    /// Slow-call percentage over the window that opens the breaker; off when `None`.
    pub slow_call_rate_threshold: Option<f64>,
    /// Number of most recent calls the rate thresholds are computed over.
    pub window_size: usize,
    /// Rates are only evaluated once the window holds this many calls.
    pub minimum_calls: usize,
    /// How long the breaker stays open before the first half-open probe.
    #[serde(deserialize_with = "duration")]
    pub recovery_timeout: Duration,
    /// Random spread applied to each open period, as a fraction of it.
    pub recovery_jitter: f64,
    /// Factor the open period grows by each time a half-open probe fails.
    pub recovery_backoff: f64,
    /// Upper bound for the backed-off open period.
    #[serde(deserialize_with = "duration")]
    pub recovery_timeout_max: Duration,
    /// Calls let through concurrently while half-open.
    pub half_open_max_calls: u32,
    /// Successful half-open calls needed to close the breaker.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    /// The breaker's own defaults ([`breaker::Settings`]), so they are written once.
    fn default() -> Self {
        let d = breaker::Settings::default();
        Self {
            mode: d.mode,
            failure_threshold: d.failure_threshold,
            failure_rate_threshold: d.failure_rate_threshold,
            slow_call_duration: d.slow_call_duration,
            slow_call_rate_threshold: d.slow_call_rate_threshold,
            window_size: d.window_size,
            minimum_calls: d.minimum_calls,
            recovery_timeout: d.recovery_timeout,
            recovery_jitter: d.recovery_jitter,
            recovery_backoff: d.recovery_backoff,
            recovery_timeout_max: d.recovery_timeout_max,
            half_open_max_calls: d.half_open_max_calls,
            success_threshold: d.success_threshold,
        }
    }
}

const DEFAULT_CACHE_MAX_ENTRIES: usize = 1000;
const DEFAULT_CACHE_MAX_BYTES: u64 = 16 * 1024 * 1024;
const DEFAULT_CACHE_TTL: Option<Duration> = Some(Duration::from_secs(300));

/// `cache`: the local copy of recent values served while Redis is unavailable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Maximum number of cached keys.
    pub max_entries: usize,
    /// Maximum total size of cached values, in bytes ("16MiB", "100KB", or an integer).
    #[serde(deserialize_with = "size")]
    pub max_bytes: u64,
    /// How long an entry stays usable; `None` (written as 0) means it never expires.
    #[serde(deserialize_with = "ttl")]
    pub ttl: Option<Duration>,
    /// Empty the cache when the breaker closes again.
    pub clear_on_close: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_CACHE_MAX_ENTRIES,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            ttl: DEFAULT_CACHE_TTL,
            clear_on_close: false,
        }
    }
}

/// What the API answers when Redis is unavailable and the cache has nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Return an error to the client.
    #[default]
    Error,
    /// Return the caller-supplied default value.
    Default,
}

const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub(crate) const DEFAULT_MAX_KEY_BYTES: usize = 1024;
pub(crate) const DEFAULT_MAX_VALUE_BYTES: usize = 512 * 1024;
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_PIPELINE_COMMANDS: usize = 1000;
/// 16 MiB: with an idle process of under 10 MiB and a full default-sized cache, the bodies still fit the shipped
/// 64 Mi memory limit (deploy/kubernetes/components/redguard-sidecar/sidecar-patch.yaml).
const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 16 * 1024 * 1024;

/// `api`: the client-facing request handling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes (a size like "1MiB").
    #[serde(deserialize_with = "size_usize")]
    pub max_body_bytes: usize,
    /// Longest accepted key (and hash field name), in bytes.
    #[serde(deserialize_with = "size_usize")]
    pub max_key_bytes: usize,
    /// Longest accepted value, in bytes (after base64 decoding).
    #[serde(deserialize_with = "size_usize")]
    pub max_value_bytes: usize,
    /// Concurrent connections on the socket; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send a request's headers, and then its body, within this time; idle keep-alive
    /// connections are closed after it too. Protects against slow or stuck clients.
    #[serde(deserialize_with = "duration")]
    pub read_timeout: Duration,
    /// `error` or `default`: the answer when neither Redis nor the cache can serve.
    pub on_unavailable: OnUnavailable,
    /// Most commands one `/v1/pipeline` request may carry.
    pub max_pipeline_commands: usize,
    /// The bytes all request bodies being read at once may hold together (each body's first
    /// [`crate::api::UNCOUNTED_BODY_BYTES`] aside); a body that would exceed it is answered 503 `overloaded`
    /// before it is read.
    #[serde(deserialize_with = "size_usize")]
    pub max_inflight_body_bytes: usize,
    /// Which commands applications may send (see [`crate::policy`]).
    #[serde(deserialize_with = "section")]
    pub commands: CommandsConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_timeout: DEFAULT_READ_TIMEOUT,
            on_unavailable: OnUnavailable::default(),
            max_pipeline_commands: DEFAULT_MAX_PIPELINE_COMMANDS,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            commands: CommandsConfig::default(),
        }
    }
}

/// `api.commands`: the command policy's lists. Entries are `"NAME"` or `"NAME SUBCOMMAND"`, any case.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// Commands refused; setting it replaces the default list ([`crate::policy::default_deny`]), except for the
    /// built-in denials, which always apply.
    pub deny: Vec<String>,
    /// When set, only these commands pass (and deny still wins).
    pub allow: Option<Vec<String>>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            deny: policy::default_deny(),
            allow: None,
        }
    }
}

/// What `POST /v1/ratelimit` answers when Redis cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitFallback {
    /// Decide with this sidecar's own in-process limiter (same semantics, per sidecar).
    #[default]
    Local,
    /// Fail open: allow every call.
    Allow,
    /// Fail closed: deny every call.
    Deny,
}

const DEFAULT_RATELIMIT_LOCAL_MAX_KEYS: usize = 10_000;

/// `ratelimit`: the sliding-window rate limiter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `local`, `allow` or `deny`: the decision while Redis is unavailable.
    pub on_unavailable: RateLimitFallback,
    /// Most keys the local limiter tracks; the least recently used is forgotten beyond it.
    pub local_max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            on_unavailable: RateLimitFallback::default(),
            local_max_keys: DEFAULT_RATELIMIT_LOCAL_MAX_KEYS,
        }
    }
}

/// `reload`: how a running redguard learns of a new config ([`crate::reload`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the config file and the files it names (password and secret files), through their folders, so a
    /// Kubernetes ConfigMap edit applies without a signal. SIGHUP and `POST /v1/reload` work either way.
    pub watch: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true }
    }
}

/// `log`: what is logged, and how.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`, `debug` ...) or directives (`info,redguard::notify=debug`). The
    /// `RUST_LOG` variable, when set, wins over it.
    pub level: String,
    /// How each line is written. The command line's `--log-format`, when given, wins over it; read at start
    /// only, since the subscriber is installed once.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::default(),
        }
    }
}

/// `resp`: how the RESP socket answers Redis clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {
    /// While Redis is unavailable, answer GET, MGET, HGET and HGETALL from the fallback cache (else nil or empty,
    /// as on the JSON API). Off: those reads get the same error reply as every other command, for callers who
    /// cannot tell a cached answer from Redis's over RESP and prefer an error.
    pub serve_cached_reads: bool,
    /// The most blocking commands (BLPOP, XREAD BLOCK ...) waiting at once, each on a Redis connection of its own;
    /// one more gets an error reply.
    pub max_dedicated_connections: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        Self {
            serve_cached_reads: true,
            max_dedicated_connections: 64,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people: one line per event, fields as `key=value`.
    #[default]
    Text,
    /// For log pipelines (Kubernetes): one JSON object per line, `message` and every field at the top level,
    /// fields as JSON values.
    Json,
}

const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9190));
/// Prometheus and the kubelet's probes need a handful; the rest is room for a second scraper.
const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 32;
const DEFAULT_ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `admin`: the operator endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// TCP address of the admin HTTP server.
    pub listen: SocketAddr,
    /// Report not-ready while Redis is unreachable (instead of serving from the cache).
    pub ready_requires_redis: bool,
    /// Concurrent connections on the admin listener; further clients wait in the listen backlog. Counted apart
    /// from `api.max_connections`, so neither listener can take the other's connections or descriptors.
    pub max_connections: usize,
    /// A client must send a request's headers within this time; idle keep-alive connections are closed after it
    /// too.
    #[serde(deserialize_with = "duration")]
    pub read_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN,
            ready_requires_redis: false,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            read_timeout: DEFAULT_ADMIN_READ_TIMEOUT,
        }
    }
}

/// The process environment, as [`Config::load`] takes it, skipping variables that are not valid UTF-8 (they
/// cannot be ours).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

impl Config {
    /// Parse + validate YAML text. `origin` names the source in errors (a file path, or "`<defaults>`").
    /// Sink secret files are read; `*_env` references resolve against an empty environment (use [`Config::load`]).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse(text, origin)?.validated(origin, &|_| None)
    }

    /// The whole start-up path: read the file (None = all defaults), apply environment overrides from
    /// `env` (name, value pairs; a `REDGUARD_<SECTION>_*` name that is no key of the section is an error, other
    /// `REDGUARD_*` names are ignored), read `password_file`, validate.
    /// `env` also answers the sinks' `*_env` references and `POD_NAME` / `POD_NAMESPACE` for `notify.instance`.
    pub fn load<I: IntoIterator<Item = (String, String)>>(path: Option<&Path>, env: I) -> Result<Config, ConfigError> {
        let origin = path.map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        // Parse the text itself first so file errors carry line numbers.
        let mut config = parse(&text, &origin)?;

        let env: Vec<(String, String)> = env.into_iter().collect();
        let (mut env_password, mut env_sentinel_password) = (None, None);
        let mut overrides = Vec::new();
        // Variables the sinks name for their secrets are theirs, whatever they are called.
        let sink_vars: Vec<&str> = config
            .notify
            .sinks
            .iter()
            .flat_map(|s| [&s.url_env, &s.routing_key_env, &s.secret_env])
            .filter_map(|v| v.as_deref())
            .collect();
        for (var, value) in &env {
            if var == PASSWORD_ENV {
                env_password = Some(value.clone()).filter(|v| !v.is_empty());
            } else if var == SENTINEL_PASSWORD_ENV {
                env_sentinel_password = Some(value.clone()).filter(|v| !v.is_empty());
            } else if let Some((section, key)) = known_key(var) {
                overrides.push((var.clone(), section, key, scalar(value)));
            } else if let Some((section, key)) = find_key(FILE_ONLY_KEYS, var) {
                // Silently ignoring it would leave the operator wondering where the sinks went.
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("{section}.{key} can only be set in the config file"),
                });
            } else if let Some(message) = unknown_key_of_section(var).filter(|_| !sink_vars.contains(&var.as_str())) {
                // A misspelt key (REDGUARD_BREAKER_FAILURE_TRESHOLD) is refused like an unknown YAML key, rather
                // than leaving the default in force unnoticed.
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message,
                });
            }
        }
        if !overrides.is_empty() {
            config = apply_overrides(&text, &origin, overrides)?;
        }

        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if config.notify.instance.is_none() {
            config.notify.instance = notify::instance_from_env(&lookup);
        }
        // Set before validation, so that a sentinel password outside sentinel mode is reported with the rest.
        config.redis.sentinel_password = env_sentinel_password.map(Secret);
        let mut config = config.validated(&origin, &lookup)?;
        let r = &mut config.redis;
        r.password = match (env_password, &r.password_file) {
            (Some(p), _) => Some(Secret(p)),
            (None, Some(file)) => Some(read_password("redis.password_file", file)?),
            (None, None) => None,
        };
        if let (None, Some(file)) = (&r.sentinel_password, &r.sentinel_password_file) {
            r.sentinel_password = Some(read_password("redis.sentinel_password_file", file)?);
        }
        Ok(config)
    }

    /// Checks every rule and returns all violations, each naming its `section.key`.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let (l, r, b, a) = (&self.listen, &self.redis, &self.breaker, &self.api);
        if l.socket_mode > 0o777 {
            p.push(format!(
                "listen.socket_mode must be at most 0777, got {:04o}",
                l.socket_mode
            ));
        }
        if let Some(addr) = l.resp_tcp {
            if !addr.ip().is_loopback() {
                p.push(format!(
                    "listen.resp_tcp must be a loopback address (127.0.0.1 or ::1), got {addr}: the Redis protocol \
                     socket has no access control of its own"
                ));
            }
        }
        if l.resp_socket.as_ref().is_some_and(|r| *r == l.socket) {
            p.push("listen.resp_socket must differ from listen.socket".to_owned());
        }
        r.problems(&mut p);
        for (key, d) in [
            ("redis.command_timeout", r.command_timeout),
            ("redis.connect_timeout", r.connect_timeout),
            ("breaker.recovery_timeout", b.recovery_timeout),
            ("api.read_timeout", a.read_timeout),
            ("admin.read_timeout", self.admin.read_timeout),
        ] {
            if d.is_zero() {
                p.push(format!("{key} must be greater than 0"));
            }
        }
        for (key, n) in [
            ("breaker.failure_threshold", b.failure_threshold as usize),
            ("breaker.window_size", b.window_size),
            ("breaker.half_open_max_calls", b.half_open_max_calls as usize),
            ("breaker.success_threshold", b.success_threshold as usize),
            ("api.max_body_bytes", a.max_body_bytes),
            ("api.max_key_bytes", a.max_key_bytes),
            ("api.max_value_bytes", a.max_value_bytes),
            ("api.max_connections", a.max_connections),
            ("api.max_pipeline_commands", a.max_pipeline_commands),
            ("admin.max_connections", self.admin.max_connections),
            ("ratelimit.local_max_keys", self.ratelimit.local_max_keys),
        ] {
            if n == 0 {
                p.push(format!("{key} must be at least 1"));
            }
        }
        for (key, rate) in [
            ("breaker.failure_rate_threshold", b.failure_rate_threshold),
            ("breaker.slow_call_rate_threshold", b.slow_call_rate_threshold),
        ] {
            match rate {
                Some(v) if !(v > 0.0 && v <= 100.0) => p.push(format!("{key} must be in (0, 100], got {v}")),
                _ => {}
            }
        }
        if a.max_inflight_body_bytes < a.max_body_bytes {
            // Otherwise a body within api.max_body_bytes could never be read.
            p.push(format!(
                "api.max_inflight_body_bytes ({}) must be at least api.max_body_bytes ({})",
                a.max_inflight_body_bytes, a.max_body_bytes
            ));
        }
        if a.max_body_bytes > u32::MAX as usize {
            p.push(format!(
                "api.max_body_bytes must be at most {} (4 GiB), got {}",
                u32::MAX,
                a.max_body_bytes
            ));
        }
        match (b.slow_call_duration, b.slow_call_rate_threshold) {
            (Some(_), None) => {
                p.push("breaker.slow_call_duration is set but breaker.slow_call_rate_threshold is not".to_owned())
            }
            (None, Some(_)) => {
                p.push("breaker.slow_call_rate_threshold is set but breaker.slow_call_duration is not".to_owned())
            }
            (Some(d), Some(_)) if d.is_zero() => p.push("breaker.slow_call_duration must be greater than 0".to_owned()),
            _ => {}
        }
        if b.minimum_calls == 0 || b.minimum_calls > b.window_size {
            p.push(format!(
                "breaker.minimum_calls must be in 1..={} (breaker.window_size), got {}",
                b.window_size, b.minimum_calls
            ));
        }
        if !(0.0..1.0).contains(&b.recovery_jitter) {
            p.push(format!(
                "breaker.recovery_jitter must be in [0, 1), got {}",
                b.recovery_jitter
            ));
        }
        if b.recovery_backoff.is_nan() || b.recovery_backoff < 1.0 {
            p.push(format!(
                "breaker.recovery_backoff must be at least 1.0, got {}",
                b.recovery_backoff
            ));
        }
        if b.recovery_timeout_max < b.recovery_timeout {
            p.push(format!(
                "breaker.recovery_timeout_max ({}) must be at least breaker.recovery_timeout ({})",
                humantime::format_duration(b.recovery_timeout_max),
                humantime::format_duration(b.recovery_timeout)
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            p.push(format!(
                "log.level: {:?} is not a level or a filter: {e}",
                self.log.level
            ));
        }
        let lists = [("deny", Some(&a.commands.deny)), ("allow", a.commands.allow.as_ref())];
        for (list, entries) in lists {
            for (i, entry) in entries.into_iter().flatten().enumerate() {
                match policy::Rule::parse(entry) {
                    Err(e) => p.push(format!("api.commands.{list}[{i}]: {e}")),
                    // Blocking commands and subscriptions may be allowed: the RESP socket runs them on connections
                    // of their own (the JSON API's built-in denials still refuse them).
                    Ok(rule) if list == "allow" && rule.is_always_denied() && !rule.runs_on_own_connection() => {
                        p.push(format!(
                        "api.commands.allow[{i}]: {rule} can never be allowed: it would block or change the state of \
                         the connection all requests share (use /v1/pipeline with \"atomic\": true for transactions)"
                    ))
                    }
                    Ok(_) => {}
                }
            }
        }
        p
    }

    fn validated(mut self, origin: &str, env: notify::EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut problems = self.problems();
        self.notify.resolve(env, &mut problems);
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
        }
    }
}

/// Deserializes YAML text (empty or comment-only means all defaults) without validating it.
fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    serde_yaml_ng::from_str::<Option<Config>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| parse_error(&e, origin))
}

fn parse_error(e: &serde_yaml_ng::Error, origin: &str) -> ConfigError {
    let message = e.to_string();
    let loc = e.location();
    let message = loc
        .as_ref()
        .and_then(|l| message.strip_suffix(&format!(" at line {} column {}", l.line(), l.column())))
        .map_or(message.clone(), str::to_owned);
    ConfigError::Parse {
        origin: origin.to_owned(),
        line: loc.as_ref().map(|l| l.line()),
        column: loc.as_ref().map(|l| l.column()),
        message,
    }
}

/// For `REDGUARD_<SECTION>_<WORDS>` whose section exists but whose words name none of its keys (checked after
/// [`known_key`], the passwords and the file-only keys): why it is refused. A nested key
/// (`REDGUARD_REDIS_TLS_CA_FILE`) is file-only; anything else is a misspelt key, answered with the section's
/// variables. Other `REDGUARD_*` names (`REDGUARD_SOCKET`, a tool's `REDGUARD_BIN`) are not redguard's config and
/// are left alone.
fn unknown_key_of_section(var: &str) -> Option<String> {
    let rest = var.strip_prefix("REDGUARD_")?;
    let (section, keys, words) = KNOWN_KEYS.iter().find_map(|&(section, keys)| {
        let words = rest.strip_prefix(&section.to_ascii_uppercase())?.strip_prefix('_')?;
        (!words.is_empty()).then_some((section, keys, words))
    })?;
    let file_only = FILE_ONLY_KEYS
        .iter()
        .filter(|(s, _)| *s == section)
        .flat_map(|(_, k)| k.iter());
    if let Some(key) = keys
        .iter()
        .chain(file_only)
        .find(|k| words.starts_with(&format!("{}_", k.to_ascii_uppercase())))
    {
        return Some(format!("{section}.{key}.* can only be set in the config file"));
    }
    let names: Vec<String> = keys
        .iter()
        .map(|k| format!("REDGUARD_{}_{}", section.to_ascii_uppercase(), k.to_ascii_uppercase()))
        .collect();
    Some(format!(
        "names no key of the `{section}` section; its variables are {}",
        names.join(", ")
    ))
}

/// Maps `REDGUARD_<SECTION>_<KEY>` to its section and key, if it names one in [`KNOWN_KEYS`].
fn known_key(var: &str) -> Option<(&'static str, &'static str)> {
    find_key(KNOWN_KEYS, var)
}

fn find_key(table: &[(&'static str, &[&'static str])], var: &str) -> Option<(&'static str, &'static str)> {
    let rest = var.strip_prefix("REDGUARD_")?;
    table.iter().find_map(|&(section, keys)| {
        let key_part = rest.strip_prefix(&section.to_ascii_uppercase())?.strip_prefix('_')?;
        let key = keys.iter().find(|k| k.to_ascii_uppercase() == key_part)?;
        Some((section, *key))
    })
}

/// Reads an environment value as a YAML scalar ("5" is a number, "true" a bool, "" null), else a string.
fn scalar(raw: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(raw) {
        Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(raw.to_owned()),
    }
}

/// Merges the overrides into the file's mapping and deserializes the result. Each override is first
/// checked on its own so a bad value is blamed on its variable.
fn apply_overrides(
    text: &str,
    origin: &str,
    overrides: Vec<(String, &str, &str, Value)>,
) -> Result<Config, ConfigError> {
    let mut root = match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => m,
        Ok(_) => Mapping::new(),
        Err(e) => return Err(parse_error(&e, origin)),
    };
    for (var, section, key, value) in overrides {
        let single = Mapping::from_iter([(key.into(), value.clone())]);
        let probe = Mapping::from_iter([(section.into(), Value::Mapping(single))]);
        if let Err(e) = serde_yaml_ng::from_value::<Config>(Value::Mapping(probe)) {
            return Err(ConfigError::Env {
                var,
                message: e.to_string(),
            });
        }
        let slot = root.entry(section.into()).or_insert(Value::Null);
        if !slot.is_mapping() {
            *slot = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(m) = slot {
            m.insert(key.into(), value);
        }
    }
    let mut merged = Value::Mapping(root);
    merged
        .apply_merge()
        .and_then(|()| serde_yaml_ng::from_value(merged))
        .map_err(|e| parse_error(&e, origin))
}

fn read_password(key: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let err = |source| ConfigError::PasswordFile {
        key,
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(err)?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "file is empty",
        )));
    }
    Ok(Secret(password.to_owned()))
}

// ---- Field deserializers: each parses inside the visitor so errors keep the value's location. ----

/// A scalar as YAML presents it, before it is interpreted as a duration, size or mode.
enum Raw<'a> {
    Null,
    Int(i128),
    Str(&'a str),
}

struct RawVisitor<T> {
    expecting: &'static str,
    parse: fn(Raw<'_>) -> Result<T, String>,
}

impl<'de, T> Visitor<'de> for RawVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(Raw::Str(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.parse)(Raw::Int(v.into())).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.parse)(Raw::Int(v.into())).map_err(E::custom)
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        (self.parse)(Raw::Null).map_err(E::custom)
    }
    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

fn raw<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    parse: fn(Raw<'_>) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_any(RawVisitor { expecting, parse })
}

/// A list of strings: a YAML sequence, or one comma-separated string (as an environment override gives).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    Ok(match Option::<List>::deserialize(d)? {
        None => Vec::new(),
        Some(List::Many(items)) => items,
        Some(List::One(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// A section written with no keys (`redis:` followed only by comments) means its defaults.
fn section<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

const DURATION: &str = "a duration like \"250ms\", \"60s\" or \"5m\"";

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    raw(d, DURATION, |r| match r {
        Raw::Str(s) => parse_duration(s),
        Raw::Int(n) => Err(format!("expected {DURATION}, got the bare number {n}")),
        Raw::Null => Err(format!("expected {DURATION}, got null")),
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    raw(d, DURATION, |r| match r {
        Raw::Str(s) => parse_duration(s).map(Some),
        Raw::Int(n) => Err(format!("expected {DURATION}, got the bare number {n}")),
        Raw::Null => Ok(None),
    })
}

fn ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    raw(d, "a duration like \"5m\", or 0 for no expiry", |r| match r {
        Raw::Str(s) => parse_duration(s).map(|d| Some(d).filter(|d| !d.is_zero())),
        Raw::Int(0) | Raw::Null => Ok(None),
        Raw::Int(n) => Err(format!("expected {DURATION} or 0, got the bare number {n}")),
    })
}

const SIZE: &str = "a size in bytes like 1048576, \"512KiB\", \"16MiB\" or \"100KB\"";

fn parse_size(r: Raw<'_>) -> Result<u64, String> {
    let s = match r {
        Raw::Int(n) => return u64::try_from(n).map_err(|_| format!("expected {SIZE}, got {n}")),
        Raw::Null => return Err(format!("expected {SIZE}, got null")),
        Raw::Str(s) => s.trim(),
    };
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let multiplier: Option<u64> = match unit.trim_start() {
        "" | "B" => Some(1),
        "KB" => Some(1000),
        "MB" => Some(1000 * 1000),
        "GB" => Some(1000 * 1000 * 1000),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        "GiB" => Some(1 << 30),
        _ => None,
    };
    number
        .parse::<u64>()
        .ok()
        .zip(multiplier)
        .and_then(|(n, m)| n.checked_mul(m))
        .ok_or_else(|| format!("invalid size {s:?}: expected {SIZE} (units B, KB, MB, GB, KiB, MiB, GiB)"))
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    raw(d, SIZE, parse_size)
}

fn size_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    raw(d, SIZE, |r| {
        parse_size(r).and_then(|n| usize::try_from(n).map_err(|_| format!("size {n} is too large")))
    })
}

fn socket_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    raw(d, "an octal mode string like \"0660\"", |r| match r {
        Raw::Str(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8)
                .ok()
                .filter(|_| !digits.starts_with('+'))
                .ok_or_else(|| format!("invalid octal mode {s:?}: expected digits 0-7 like \"0660\""))
        }
        Raw::Int(n) => Err(format!(
            "expected an octal mode string like \"0660\", got the number {n} (quote it)"
        )),
        Raw::Null => Err("expected an octal mode string like \"0660\", got null".to_owned()),
    })
}

#[cfg(test)]
mod tests;
