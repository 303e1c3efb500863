//! Live reconfiguration: a new config applied to the running sidecar, without dropping a connection.
//!
//! Three things ask for a reload: SIGHUP, a change of the config file or of a file it names (seen by
//! [`watch`], which follows Kubernetes' ConfigMap swap), and `POST /v1/reload` on the Unix socket. Every
//! request goes to one task ([`serve`]), so reloads never interleave; requests that arrive while one is
//! waiting fold into it. A reload
//!
//! 1. loads the file exactly as `run` did at start (the same parsing, environment overrides and validation as
//!    `redguard check-config`, every problem at once). A file that is briefly missing or unreadable (the
//!    kubelet swapping its folder) is retried for up to [`RETRY_FOR`] before the reload counts as invalid;
//! 2. compares it with the config in effect, key by key ([`KEYS`]): each key is either applied live or needs
//!    a restart. A change to a restart-only key refuses the whole reload, so the process always runs one
//!    version of the file, never half of two; it keeps serving on the old one and says which keys need a
//!    restart;
//! 3. otherwise applies every live key to its owner ([`Targets::apply`]): the breaker (a circuit keeps its
//!    state), the fallback cache (shrinking evicts), the API's limits and command policy, the rate limiter,
//!    readiness, the notification sinks (in-flight deliveries finish on the old ones), `cache.clear_on_close`,
//!    `listen.drain_timeout` and the log level.
//!
//! Its outcome is logged, answered to `POST /v1/reload`, and counted in the metrics below, in the style
//! Prometheus uses for its own reloads.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::{Config, ConfigError};

/// Whether a reload can apply a key to the running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Applied by a reload.
    Live,
    /// Needs a restart: what it sets was bound, sized or connected at start (sockets, listeners, the Redis
    /// connections, the notification workers).
    Restart,
}

/// One config key: its name (`section.key`, as in docs/configuration.md), whether it applies live, and how to
/// tell whether two configs differ in it.
pub struct Key {
    pub name: &'static str,
    pub apply: Apply,
    changed: fn(&Config, &Config) -> bool,
}

/// `keys!(Live breaker.failure_threshold; ...)`: one [`Key`] per line, its comparison written by the macro so
/// the name and the field it compares cannot differ.
macro_rules! keys {
    ($($apply:ident $first:ident $(. $rest:ident)*;)*) => {
        &[$(Key {
            name: concat!(stringify!($first) $(, ".", stringify!($rest))*),
            apply: Apply::$apply,
            changed: |a: &Config, b: &Config| a.$first$(.$rest)* != b.$first$(.$rest)*,
        },)*]
    };
}

/// Every key of the config, and whether a reload applies it. `tests/docs.rs` checks that this lists exactly the
/// keys the config accepts, and that docs/configuration.md marks each one the same way.
/// `redis.password` and `redis.sentinel_password` are the passwords read from their file or variable: a rotated
/// password file changes them.
pub static KEYS: &[Key] = keys! {
    Restart listen.socket;
    Restart listen.socket_mode;
    Restart listen.socket_group;
    Live listen.allowed_uids;
    Live listen.drain_timeout;
    Restart listen.resp_socket;
    Restart listen.resp_tcp;
    Restart redis.url;
    Restart redis.mode;
    Restart redis.nodes;
    Restart redis.master_name;
    Restart redis.sentinels;
    Restart redis.username;
    Restart redis.password_file;
    Live redis.password;
    Restart redis.sentinel_username;
    Restart redis.sentinel_password_file;
    Restart redis.sentinel_password;
    Restart redis.tls.ca_file;
    Restart redis.tls.cert_file;
    Restart redis.tls.key_file;
    Restart redis.command_timeout;
    Restart redis.connect_timeout;
    Restart redis.node_metrics_limit;
    Live breaker.mode;
    Live breaker.failure_threshold;
    Live breaker.failure_rate_threshold;
    Live breaker.slow_call_duration;
    Live breaker.slow_call_rate_threshold;
    Live breaker.window_size;
    Live breaker.minimum_calls;
    Live breaker.recovery_timeout;
    Live breaker.recovery_jitter;
    Live breaker.recovery_backoff;
    Live breaker.recovery_timeout_max;
    Live breaker.half_open_max_calls;
    Live breaker.success_threshold;
    Live cache.max_entries;
    Live cache.max_bytes;
    Live cache.ttl;
    Live cache.clear_on_close;
    Live api.max_body_bytes;
    Live api.max_key_bytes;
    Live api.max_value_bytes;
    Restart api.max_connections;
    Live api.read_timeout;
    Live api.on_unavailable;
    Live api.max_pipeline_commands;
    Restart api.max_inflight_body_bytes;
    Live api.commands.deny;
    Live api.commands.allow;
    Restart admin.listen;
    Live admin.ready_requires_redis;
    Restart admin.max_connections;
    Live admin.read_timeout;
    Live notify.instance;
    Live notify.on;
    Live notify.min_interval;
    Live notify.queue_size;
    Live notify.timeout;
    Live notify.max_attempts;
    Live notify.shutdown_grace;
    Live notify.sinks;
    Live notify.runbook_url;
    Live notify.dashboard_url;
    Live ratelimit.on_unavailable;
    Live ratelimit.local_max_keys;
    Restart reload.watch;
    Live log.level;
    Restart log.format;
    Live resp.serve_cached_reads;
    Restart resp.max_dedicated_connections;
};

/// The keys in which `old` and `new` differ.
pub fn changed_keys<'k>(old: &Config, new: &Config) -> Vec<&'k Key> {
    KEYS.iter().filter(|k| (k.changed)(old, new)).collect()
}

/// How long a config or secret file that cannot be read is retried: the kubelet's swap of a mounted folder is
/// one rename, but a file written in place by hand can be caught half-way.
pub const RETRY_FOR: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// What one reload did. Serialized as the answer of `POST /v1/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The new config is in effect; `changed` lists the keys that differed (possibly none).
    Success { changed: Vec<&'static str>, hash: String },
    /// The new config failed to load or validate; the old one stays. `errors` has every problem.
    Invalid { errors: Vec<String> },
    /// The new config changes keys that need a restart; nothing was applied, the old config stays.
    RestartRequired { keys: Vec<&'static str> },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::Invalid { .. } => "invalid",
            Outcome::RestartRequired { .. } => "restart_required",
        }
    }
}

/// What triggered a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChange,
    Api,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
            Trigger::Api => "POST /v1/reload",
        }
    }
}

struct Request {
    trigger: Trigger,
    reply: Option<oneshot::Sender<Outcome>>,
}

/// Asks the reload task for a reload. Cheap to clone; every listener, signal handler and watcher holds one.
#[derive(Clone)]
pub struct Requests(mpsc::Sender<Request>);

/// The reload task's end of the channel.
pub struct Receiver(mpsc::Receiver<Request>);

/// Sets the log filter (a validated `log.level`); given by the binary, which owns the subscriber. Ignored while
/// `RUST_LOG` is set, which wins over the config.
pub type SetLogLevel = Arc<dyn Fn(&str) + Send + Sync>;

/// What `run` needs to reload: the file, the channel, and the log filter's setter.
pub struct Live {
    /// The config file (none: the defaults, which a reload reads again as they are).
    pub path: Option<PathBuf>,
    pub channel: Channel,
    pub set_log_level: Option<SetLogLevel>,
}

/// Both ends of the channel between whatever asks for reloads and the one task that does them.
pub struct Channel {
    pub requests: Requests,
    pub receiver: Receiver,
}

/// The channel holds one request: a burst of signals or file events while a reload waits to run folds into
/// that one (the reload reads the file as it is when it runs, so nothing is lost).
pub fn channel() -> Channel {
    let (tx, rx) = mpsc::channel(1);
    Channel {
        requests: Requests(tx),
        receiver: Receiver(rx),
    }
}

impl Requests {
    /// Asks for a reload without waiting for it; does nothing if one is already waiting to run.
    pub fn nudge(&self, trigger: Trigger) {
        let _ = self.0.try_send(Request { trigger, reply: None });
    }

    /// Asks for a reload and waits for its outcome; `None` if redguard is shutting down.
    pub async fn reload(&self, trigger: Trigger) -> Option<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(Request {
                trigger,
                reply: Some(tx),
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// The reload metrics, named like Prometheus's own (`prometheus_config_last_reload_successful` ...).
pub(crate) struct ReloadMetrics {
    last_successful: IntGauge,
    last_success_timestamp: Gauge,
    reloads: IntCounterVec,
    info: IntGaugeVec,
}

impl ReloadMetrics {
    pub(crate) fn new(registry: &Registry) -> ReloadMetrics {
        let last_successful = IntGauge::new(
            "redguard_config_last_reload_successful",
            "Whether the last config reload applied (1) or was refused (0); 1 at start.",
        )
        .expect("valid metric");
        let last_success_timestamp = Gauge::new(
            "redguard_config_last_reload_success_timestamp_seconds",
            "Unix time of the start or of the last config reload that applied.",
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "redguard_config_reloads_total",
                "Config reloads by result: success, invalid, restart_required.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let info = IntGaugeVec::new(
            Opts::new(
                "redguard_config_info",
                "Always 1; `hash` identifies the config in effect (SHA-256 of the file and the REDGUARD_* variables).",
            ),
            &["hash"],
        )
        .expect("valid metric");
        for c in [
            Box::new(last_successful.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_success_timestamp.clone()),
            Box::new(reloads.clone()),
            Box::new(info.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for result in ["success", "invalid", "restart_required"] {
            reloads.with_label_values(&[result]);
        }
        ReloadMetrics {
            last_successful,
            last_success_timestamp,
            reloads,
            info,
        }
    }

    fn succeeded(&self, hash: &str, previous_hash: Option<&str>) {
        self.last_successful.set(1);
        self.last_success_timestamp.set(unix_now());
        if let Some(previous) = previous_hash.filter(|p| *p != hash) {
            let _ = self.info.remove_label_values(&[previous]);
        }
        self.info.with_label_values(&[hash]).set(1);
    }

    fn record(&self, outcome: &Outcome) {
        self.reloads.with_label_values(&[outcome.label()]).inc();
        if !matches!(outcome, Outcome::Success { .. }) {
            self.last_successful.set(0);
        }
    }

    #[cfg(test)]
    fn count(&self, result: &str) -> u64 {
        self.reloads.with_label_values(&[result]).get()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The config as loaded, with what identifies it: a hash of the file's bytes and the `REDGUARD_*` variables
/// (secrets read from files are not part of it, so a rotated password does not show in `redguard_config_info`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub hash: String,
}

/// Loads the config the way `run` did: `path` (none: the defaults) and the process's `REDGUARD_*` variables.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = crate::config::process_env().collect();
    let config = Config::load(path, env.iter().cloned())?;
    let mut hasher = Sha256::new();
    if let Some(path) = path {
        // Read again for the hash: Config::load has just read it, and a file that changed in between only
        // means the next event reloads once more.
        hasher.update(std::fs::read(path).unwrap_or_default());
    }
    let mut ours: Vec<&(String, String)> = env.iter().filter(|(k, _)| k.starts_with("REDGUARD_")).collect();
    ours.sort();
    for (k, v) in ours {
        hasher.update([0]);
        hasher.update(k.as_bytes());
        hasher.update([b'=']);
        hasher.update(v.as_bytes());
    }
    let hash = hex::encode(hasher.finalize())[..12].to_owned();
    Ok(Loaded { config, hash })
}

/// Whether a load failure may be the kubelet's swap caught half-way (a file missing or unreadable for a
/// moment), so that it is worth retrying before calling the config invalid.
fn transient(e: &ConfigError) -> bool {
    matches!(e, ConfigError::Read { .. } | ConfigError::PasswordFile { .. })
        || matches!(e, ConfigError::Invalid { problems, .. } if problems.iter().any(|p| p.contains("cannot read")))
}

/// Why [`Targets::apply`] applied nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The new config cannot be put to use (a sink that cannot be built).
    Invalid(String),
    /// A live key whose new value needs a restart all the same (a password where there was none).
    RestartRequired(Vec<&'static str>),
}

/// The parts of the running sidecar a reload changes.
pub trait Targets: Send + Sync {
    /// Applies every live key of `config` (all of them, changed or not: applying is idempotent). What can
    /// fail or refuse is checked first: an error means nothing was applied.
    fn apply(&self, config: &Config) -> Result<(), Refusal>;
}

/// Does the reloads: holds the config in effect and the things to apply a new one to.
pub struct Reloader {
    path: Option<PathBuf>,
    current: Mutex<Loaded>,
    targets: Arc<dyn Targets>,
    metrics: ReloadMetrics,
}

impl Reloader {
    pub(crate) fn new(
        path: Option<PathBuf>,
        loaded: Loaded,
        targets: Arc<dyn Targets>,
        metrics: ReloadMetrics,
    ) -> Self {
        metrics.succeeded(&loaded.hash, None);
        Reloader {
            path,
            current: Mutex::new(loaded),
            targets,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config in effect.
    pub fn current(&self) -> Config {
        self.lock().config.clone()
    }

    /// One reload: load (retrying a briefly missing file), compare, apply or refuse; logged and counted.
    pub async fn reload(&self, trigger: Trigger) -> Outcome {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let loaded = loop {
            match load(self.path.as_deref()) {
                Ok(loaded) => break Ok(loaded),
                Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_EVERY).await;
                }
                Err(e) => break Err(e),
            }
        };
        let outcome = match loaded {
            Err(e) => Outcome::Invalid {
                errors: match e {
                    ConfigError::Invalid { problems, .. } => problems,
                    other => vec![other.to_string()],
                },
            },
            Ok(new) => self.compare_and_apply(new),
        };
        self.metrics.record(&outcome);
        match &outcome {
            Outcome::Success { changed, hash } if changed.is_empty() => {
                info!(trigger = trigger.as_str(), hash, "config reloaded: nothing changed")
            }
            Outcome::Success { changed, hash } => {
                info!(trigger = trigger.as_str(), hash, changed = %changed.join(","), "config reloaded and applied")
            }
            Outcome::Invalid { errors } => warn!(
                trigger = trigger.as_str(),
                errors = %errors.join("; "),
                "config reload refused: the new config is invalid; still running on the previous one"
            ),
            Outcome::RestartRequired { keys } => warn!(
                trigger = trigger.as_str(),
                keys = %keys.join(","),
                "config reload refused: these keys only change on a restart; still running on the previous config"
            ),
        }
        outcome
    }

    fn compare_and_apply(&self, new: Loaded) -> Outcome {
        let mut current = self.lock();
        let changed = changed_keys(&current.config, &new.config);
        let restart: Vec<&'static str> = changed
            .iter()
            .filter(|k| k.apply == Apply::Restart)
            .map(|k| k.name)
            .collect();
        if !restart.is_empty() {
            return Outcome::RestartRequired { keys: restart };
        }
        if !changed.is_empty() {
            match self.targets.apply(&new.config) {
                Ok(()) => {}
                Err(Refusal::Invalid(e)) => return Outcome::Invalid { errors: vec![e] },
                Err(Refusal::RestartRequired(keys)) => return Outcome::RestartRequired { keys },
            }
        }
        self.metrics.succeeded(&new.hash, Some(&current.hash));
        let outcome = Outcome::Success {
            changed: changed.iter().map(|k| k.name).collect(),
            hash: new.hash.clone(),
        };
        *current = new;
        outcome
    }
}

/// The reload task: does each request in turn until every [`Requests`] is dropped.
pub async fn serve(reloader: Arc<Reloader>, mut requests: Receiver) {
    while let Some(request) = requests.0.recv().await {
        let outcome = reloader.reload(request.trigger).await;
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
    }
}

/// How long the watcher waits after the last file event before it asks for a reload: the kubelet's swap
/// and an editor's save are each a few events within milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What to watch for `config`'s file at `path`: its own folder and those of the files it names, each with the
/// names in it that matter. Folders, not files: the kubelet replaces a ConfigMap's files by renaming the
/// folder's `..data` symlink, which a watch on the old file would never see; and an editor's save often
/// renames a new file over the old one. Other names in the folder (the socket, a log file) are not ours: a
/// change to them must not reload, or a reload's own log line would trigger the next.
pub fn watched_folders(path: &Path, config: &Config) -> Vec<(PathBuf, Vec<OsString>)> {
    let mut files: Vec<&Path> = vec![path];
    let r = &config.redis;
    files.extend(r.password_file.as_deref());
    files.extend(r.sentinel_password_file.as_deref());
    files.extend(r.tls.ca_file.as_deref());
    files.extend(r.tls.cert_file.as_deref());
    files.extend(r.tls.key_file.as_deref());
    files.extend(config.notify.sinks.iter().flat_map(|s| s.files()));
    let mut folders: Vec<(PathBuf, Vec<OsString>)> = Vec::new();
    for file in files {
        let folder = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let names = match folders.iter_mut().find(|(f, _)| *f == folder) {
            Some((_, names)) => names,
            None => {
                folders.push((folder, vec![OsString::from(KUBELET_DATA)]));
                &mut folders.last_mut().expect("just pushed").1
            }
        };
        if let Some(name) = file.file_name() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    folders.sort();
    folders
}

/// The symlink the kubelet renames over to publish a new version of a mounted ConfigMap or Secret.
const KUBELET_DATA: &str = "..data";

/// Watches `folders` with inotify and asks for a reload after each burst of changes to the names that matter
/// ([`DEBOUNCE`]). Runs until `stopped` resolves. A folder that cannot be watched is logged and skipped (SIGHUP
/// and `POST /v1/reload` still work).
pub async fn watch(
    folders: Vec<(PathBuf, Vec<OsString>)>,
    requests: Requests,
    stopped: impl std::future::Future<Output = ()>,
) {
    use inotify::{Inotify, WatchMask};

    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "cannot watch the config for changes (inotify); SIGHUP and POST /v1/reload still reload");
            return;
        }
    };
    // What puts a new version of a name in place: a write in place (closed), a rename over it (an editor's save,
    // the kubelet's `..data` swap), a new file or symlink. A name removed is not a new version, and reloading
    // for it would only report the file missing.
    let mask = WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE;
    let mut watching = Vec::new();
    for (folder, names) in folders {
        match inotify.watches().add(&folder, mask) {
            Ok(wd) => watching.push((wd, names)),
            Err(e) => warn!(folder = %folder.display(), error = %e, "cannot watch this folder for config changes"),
        }
    }
    if watching.is_empty() {
        return;
    }
    let matters = |(wd, name): &(inotify::WatchDescriptor, Option<OsString>)| matters(&watching, wd, name.as_deref());
    let mut buffer = [0u8; 4096];
    let mut events = match inotify.into_event_stream(&mut buffer) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot watch the config for changes (inotify); SIGHUP and POST /v1/reload still reload");
            return;
        }
    };
    tokio::pin!(stopped);
    loop {
        // Wait for an event on a name that matters.
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                event = stream::next(&mut events) => match event {
                    None => return,
                    Some(event) if matters(&event) => break,
                    Some(_) => {}
                },
            }
        }
        // Debounce: wait until the names that matter have been quiet for DEBOUNCE, then reload once.
        let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                event = tokio::time::timeout_at(quiet_at, stream::next(&mut events)) => match event {
                    Ok(Some(event)) if matters(&event) => quiet_at = tokio::time::Instant::now() + DEBOUNCE,
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    Err(_quiet) => break,
                },
            }
        }
        requests.nudge(Trigger::FileChange);
    }
}

/// Whether an event on watch `wd` about `name` is about a name that matters in that folder.
fn matters<W: PartialEq>(watching: &[(W, Vec<OsString>)], wd: &W, name: Option<&std::ffi::OsStr>) -> bool {
    watching
        .iter()
        .any(|(w, names)| w == wd && name.is_some_and(|n| names.iter().any(|m| m == n)))
}

/// The one stream call the watcher needs, kept apart so the loop above reads as what it does.
mod stream {
    use std::ffi::OsString;

    use inotify::{EventStream, StreamExt, WatchDescriptor};

    /// The next event's watch and name; `None` when the stream ended or failed (the watcher then stops).
    pub(super) async fn next<B: AsMut<[u8]> + AsRef<[u8]> + Unpin>(
        events: &mut EventStream<B>,
    ) -> Option<(WatchDescriptor, Option<OsString>)> {
        match events.next().await {
            Some(Ok(event)) => Some((event.wd, event.name)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every config it is asked to apply.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Config>>);

    impl Targets for Recorder {
        fn apply(&self, config: &Config) -> Result<(), Refusal> {
            self.0.lock().unwrap().push(config.clone());
            Ok(())
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        path: PathBuf,
        targets: Arc<Recorder>,
        registry: Registry,
        reloader: Reloader,
    }

    const BASE: &str = "listen:\n  socket: ./a.sock\nbreaker:\n  failure_threshold: 5\n";

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redguard.yaml");
        std::fs::write(&path, BASE).unwrap();
        let targets = Arc::new(Recorder::default());
        let registry = Registry::new();
        let loaded = load(Some(&path)).unwrap();
        let reloader = Reloader::new(
            Some(path.clone()),
            loaded,
            targets.clone(),
            ReloadMetrics::new(&registry),
        );
        Fixture {
            dir,
            path,
            targets,
            registry,
            reloader,
        }
    }

    impl Fixture {
        fn write(&self, text: &str) {
            std::fs::write(&self.path, text).unwrap();
        }

        fn applied(&self) -> Vec<Config> {
            self.targets.0.lock().unwrap().clone()
        }

        /// The samples of one metric in the rendered registry, as (labels inside the braces, value).
        fn sample(&self, name: &str) -> Vec<(String, f64)> {
            let mut text = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.registry.gather(), &mut text).unwrap();
            String::from_utf8(text)
                .unwrap()
                .lines()
                .filter_map(|line| {
                    let rest = line.strip_prefix(name)?;
                    let (labels, value) = match rest.strip_prefix('{') {
                        Some(rest) => rest.split_once("} ")?,
                        None => ("", rest.strip_prefix(' ')?),
                    };
                    Some((labels.replace('"', ""), value.parse().ok()?))
                })
                .collect()
        }

        fn successful(&self) -> f64 {
            self.sample("redguard_config_last_reload_successful")[0].1
        }
    }

    #[tokio::test]
    async fn a_live_change_is_applied_and_counted() {
        let f = fixture();
        let first_hash = f.sample("redguard_config_info")[0].0.clone();
        f.write(&BASE.replace("failure_threshold: 5", "failure_threshold: 2"));
        let outcome = f.reloader.reload(Trigger::Signal).await;
        let Outcome::Success { changed, hash } = outcome else {
            panic!("expected success, got {outcome:?}");
        };
        assert_eq!(changed, vec!["breaker.failure_threshold"]);
        let applied = f.applied();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].breaker.failure_threshold, 2);
        assert_eq!(f.reloader.current().breaker.failure_threshold, 2);
        assert_eq!(f.reloader.metrics.count("success"), 1);
        assert_eq!(f.successful(), 1.0);
        let applied_at = f.sample("redguard_config_last_reload_success_timestamp_seconds")[0].1;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - applied_at).abs() < 60.0, "{applied_at} is now ({now})");
        // The info metric names the new config only.
        assert_eq!(f.sample("redguard_config_info"), vec![(format!("hash={hash}"), 1.0)]);
        assert_ne!(first_hash, format!("hash={hash}"));
    }

    #[tokio::test]
    async fn an_unchanged_file_applies_nothing() {
        let f = fixture();
        let outcome = f.reloader.reload(Trigger::Api).await;
        assert!(
            matches!(&outcome, Outcome::Success { changed, .. } if changed.is_empty()),
            "{outcome:?}"
        );
        assert!(f.applied().is_empty());
        assert_eq!(f.reloader.metrics.count("success"), 1);
    }

    #[tokio::test]
    async fn a_restart_only_key_refuses_the_whole_reload() {
        let f = fixture();
        f.write(
            &BASE
                .replace("./a.sock", "./b.sock")
                .replace("failure_threshold: 5", "failure_threshold: 2"),
        );
        let outcome = f.reloader.reload(Trigger::Signal).await;
        assert_eq!(
            outcome,
            Outcome::RestartRequired {
                keys: vec!["listen.socket"]
            }
        );
        assert!(f.applied().is_empty(), "nothing applied, the live key neither");
        assert_eq!(f.reloader.current().breaker.failure_threshold, 5);
        assert_eq!(f.reloader.current().listen.socket, PathBuf::from("./a.sock"));
        assert_eq!(f.reloader.metrics.count("restart_required"), 1);
        assert_eq!(f.successful(), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_file_keeps_the_old_config_and_reports_every_problem() {
        let f = fixture();
        f.write("breaker:\n  failure_threshold: 0\n  window_size: 0\n  minimum_calls: 0\n");
        let started = tokio::time::Instant::now();
        let outcome = f.reloader.reload(Trigger::FileChange).await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "an invalid file is not retried, only an unreadable one"
        );
        let Outcome::Invalid { errors } = outcome else {
            panic!("expected invalid, got {outcome:?}");
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("breaker.failure_threshold")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("breaker.minimum_calls")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("breaker.window_size")), "{errors:?}");
        assert!(f.applied().is_empty());
        assert_eq!(f.reloader.current().breaker.failure_threshold, 5);
        assert_eq!(f.successful(), 0.0);
        assert_eq!(f.reloader.metrics.count("invalid"), 1);

        // Fixed: the next reload applies and the gauge recovers.
        f.write(&BASE.replace("failure_threshold: 5", "failure_threshold: 3"));
        let outcome = f.reloader.reload(Trigger::FileChange).await;
        assert!(matches!(outcome, Outcome::Success { .. }), "{outcome:?}");
        assert_eq!(f.successful(), 1.0);
        assert_eq!(f.reloader.current().breaker.failure_threshold, 3);
    }

    #[tokio::test]
    async fn a_syntax_error_is_invalid_with_its_location() {
        let f = fixture();
        f.write("breaker: [\n");
        let outcome = f.reloader.reload(Trigger::Signal).await;
        let Outcome::Invalid { errors } = outcome else {
            panic!("expected invalid, got {outcome:?}");
        };
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("redguard.yaml"), "{errors:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_missing_for_a_moment_is_retried() {
        let f = fixture();
        let moved = f.dir.path().join("aside.yaml");
        std::fs::rename(&f.path, &moved).unwrap();
        let path = f.path.clone();
        let back = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::fs::write(&path, BASE.replace("failure_threshold: 5", "failure_threshold: 4")).unwrap();
        });
        let outcome = f.reloader.reload(Trigger::FileChange).await;
        back.await.unwrap();
        assert!(matches!(outcome, Outcome::Success { .. }), "{outcome:?}");
        assert_eq!(f.reloader.current().breaker.failure_threshold, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_missing_for_longer_is_invalid() {
        let f = fixture();
        std::fs::remove_file(&f.path).unwrap();
        let started = tokio::time::Instant::now();
        let outcome = f.reloader.reload(Trigger::FileChange).await;
        assert!(started.elapsed() >= RETRY_FOR, "retried for {:?}", started.elapsed());
        let Outcome::Invalid { errors } = outcome else {
            panic!("expected invalid, got {outcome:?}");
        };
        assert!(errors[0].starts_with("cannot read config file"), "{errors:?}");
        assert_eq!(f.reloader.current().breaker.failure_threshold, 5);
    }

    #[tokio::test]
    async fn requests_reach_the_one_reload_task_and_a_burst_of_nudges_folds_into_one() {
        let f = fixture();
        let reloader = Arc::new(f.reloader);
        let channel = channel();
        let task = tokio::spawn(serve(reloader.clone(), channel.receiver));
        let first = channel.requests.reload(Trigger::Api).await;
        assert!(matches!(first, Some(Outcome::Success { .. })), "{first:?}");
        // Five nudges before the task runs again: one waits in the channel, the rest fold into it.
        for _ in 0..5 {
            channel.requests.nudge(Trigger::Signal);
        }
        let last = channel.requests.reload(Trigger::Api).await;
        assert!(matches!(last, Some(Outcome::Success { .. })), "{last:?}");
        assert_eq!(
            reloader.metrics.count("success"),
            3,
            "the first, one for the nudges, the last"
        );
        drop(channel.requests);
        task.await.unwrap();
    }

    #[test]
    fn only_events_about_a_watched_name_in_its_own_folder_matter() {
        let names = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let watching = [
            (1, names(&["..data", "redguard.yaml"])),
            (2, names(&["..data", "password"])),
        ];
        let name = |n: &'static str| Some(std::ffi::OsStr::new(n));
        assert!(matters(&watching, &1, name("redguard.yaml")));
        assert!(matters(&watching, &2, name("..data")));
        assert!(
            !matters(&watching, &1, name("redguard.log")),
            "a log file beside the config"
        );
        assert!(!matters(&watching, &1, name("password")), "a name of the other folder");
        assert!(!matters(&watching, &3, name("redguard.yaml")), "another watch");
        assert!(!matters(&watching, &1, None), "an event on the folder itself");
    }

    #[tokio::test]
    async fn the_watcher_asks_for_a_reload_when_the_config_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redguard.yaml");
        std::fs::write(&path, BASE).unwrap();
        let Channel { requests, receiver } = channel();
        let mut receiver = receiver.0;
        let folders = watched_folders(&path, &Config::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let watcher = tokio::spawn(watch(folders, requests, async move {
            let _ = stopped.await;
        }));
        // Each way a new version arrives: a rename over it (an editor's save), a write in place, a new symlink.
        // Each is repeated until it is seen: the first may come before the watch is in place.
        let ways: [&dyn Fn(); 3] = [
            &|| {
                let new = dir.path().join(".redguard.yaml.swp");
                std::fs::write(&new, BASE.replace('5', "6")).unwrap();
                std::fs::rename(&new, &path).unwrap();
            },
            &|| std::fs::write(&path, BASE.replace('5', "7")).unwrap(),
            &|| {
                let _ = std::fs::remove_file(&path);
                let target = dir.path().join("v2.yaml");
                std::fs::write(&target, BASE).unwrap();
                std::os::unix::fs::symlink(&target, &path).unwrap();
            },
        ];
        for (i, way) in ways.iter().enumerate() {
            let asked = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    way();
                    if let Ok(Some(request)) = tokio::time::timeout(DEBOUNCE * 3, receiver.recv()).await {
                        return request.trigger;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("way {i}: a reload was asked for"));
            assert_eq!(asked, Trigger::FileChange);
            // Let the rest of this burst (a repeat of the way) be asked for, so the next way is seen on its own.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE * 2, receiver.recv()).await {}
        }
        let _ = stop.send(());
        watcher.await.unwrap();
    }

    #[test]
    fn every_key_name_is_unique_and_compares_its_own_field() {
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate key names");
        let base = Config::default();
        let mut other = base.clone();
        other.cache.ttl = None;
        other.admin.ready_requires_redis = true;
        other.redis.tls.ca_file = Some(PathBuf::from("/ca.pem"));
        let changed: Vec<&str> = changed_keys(&base, &other).iter().map(|k| k.name).collect();
        assert_eq!(
            changed,
            vec!["redis.tls.ca_file", "cache.ttl", "admin.ready_requires_redis"]
        );
    }

    #[test]
    fn the_watched_folders_are_those_of_the_config_and_the_files_it_names() {
        let mut cfg = Config::default();
        cfg.redis.password_file = Some(PathBuf::from("/run/secrets/redis/password"));
        cfg.redis.tls.ca_file = Some(PathBuf::from("/etc/redguard/ca.pem"));
        let folders = watched_folders(Path::new("/etc/redguard/redguard.yaml"), &cfg);
        let names = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            folders,
            vec![
                (
                    PathBuf::from("/etc/redguard"),
                    names(&["..data", "redguard.yaml", "ca.pem"])
                ),
                (PathBuf::from("/run/secrets/redis"), names(&["..data", "password"])),
            ]
        );
        assert_eq!(
            watched_folders(Path::new("redguard.yaml"), &Config::default()),
            vec![(PathBuf::from("."), names(&["..data", "redguard.yaml"]))]
        );
    }
}
