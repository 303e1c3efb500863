//! The `notify` section: where state-change notifications go and how hard redguard tries to deliver them.
//!
//! Sinks carry secrets (Slack webhook URLs, PagerDuty routing keys, HMAC secrets, header values). Each one may
//! be written inline, read from a file or taken from an environment variable, exactly one of the three; files
//! and variables are read once at load, so a missing secret stops the start instead of surfacing on the first
//! outage. Secret values are held in [`Secret`] and never appear in an error message: problems name the key
//! (`notify.sinks[1].url`), not its content.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{duration, Secret};
use crate::breaker::State;

const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_QUEUE_SIZE: usize = 1000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The PagerDuty Events API v2 endpoint.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Longest accepted `runbook_url` / `dashboard_url`: Slack refuses a button whose URL is longer.
const MAX_LINK_BYTES: usize = 3000;
/// Longest accepted sink name; names become metric label values.
const MAX_SINK_NAME: usize = 64;
/// Headers redguard sets itself; a sink may not override them.
const RESERVED_HEADERS: [&str; 8] = [
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "x-redguard-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Which transitions are notified, by the state entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    ToOpen,
    ToHalfOpen,
    ToClosed,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 3] = [NotifyOn::ToOpen, NotifyOn::ToHalfOpen, NotifyOn::ToClosed];

    /// The state a transition must enter to match.
    pub fn state(self) -> State {
        match self {
            NotifyOn::ToOpen => State::Open,
            NotifyOn::ToHalfOpen => State::HalfOpen,
            NotifyOn::ToClosed => State::Closed,
        }
    }
}

/// `notify`: state-change notifications.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Names this sidecar in notifications. Unset: "namespace/pod" from `POD_NAMESPACE` / `POD_NAME` (filled by
    /// [`super::Config::load`]), else the hostname at start.
    pub instance: Option<String>,
    /// Transitions that notify, as a list or a comma-separated string (`to_open,to_closed`).
    #[serde(deserialize_with = "notify_on")]
    pub on: Vec<NotifyOn>,
    /// Flap damping: at most one notification per sink per interval; changes in between are summarised once
    /// the interval has passed. 0 turns damping off.
    #[serde(deserialize_with = "duration")]
    pub min_interval: Duration,
    /// Notifications waiting per sink; when full, the oldest is dropped (and counted).
    pub queue_size: usize,
    /// Deadline for one HTTP request to a sink.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts per notification, the first included; failures are retried with backoff.
    pub max_attempts: u32,
    /// How long pending notifications may still go out after shutdown begins.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// The runbook for an open circuit: a link in PagerDuty incidents and a button in Slack messages. Unset:
    /// no link at all, never a default that leads nowhere.
    pub runbook_url: Option<String>,
    /// The dashboard that shows this sidecar: PagerDuty's `client_url` and a link, a button in Slack.
    pub dashboard_url: Option<String>,
    /// Where notifications go. None: notifications are off.
    pub sinks: Vec<SinkConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            instance: None,
            on: NotifyOn::ALL.to_vec(),
            min_interval: DEFAULT_MIN_INTERVAL,
            queue_size: DEFAULT_QUEUE_SIZE,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            runbook_url: None,
            dashboard_url: None,
            sinks: Vec::new(),
        }
    }
}

/// The kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A Slack incoming webhook.
    Slack,
    /// A PagerDuty Events API v2 integration.
    #[serde(rename = "pagerduty")]
    PagerDuty,
    /// Any HTTP endpoint that takes a JSON POST.
    Webhook,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Slack => "slack",
            SinkKind::PagerDuty => "pagerduty",
            SinkKind::Webhook => "webhook",
        }
    }
}

/// PagerDuty's event severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One destination. All kinds share this one flat shape so that a parse error keeps its line and
/// `sinks[i].key` path (an internally tagged enum would buffer the entry and lose both); validation then
/// rejects keys that do not belong to the sink's `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `slack`, `pagerduty` or `webhook`.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// The metric label and log name; after validation always set (the type, then `-2`, `-3` on repeats).
    #[serde(default)]
    pub name: Option<String>,
    /// Slack and webhook: the endpoint (a secret: such URLs embed a token). PagerDuty: the Events API endpoint,
    /// [`DEFAULT_PAGERDUTY_URL`] when unset. After load it also holds the value read from `url_file` / `url_env`.
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// PagerDuty: the integration's routing key (or from `routing_key_file` / `routing_key_env`).
    #[serde(default)]
    pub routing_key: Option<Secret>,
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// PagerDuty: `payload.severity` of triggered alerts (default critical).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Webhook: extra request headers (an `Authorization` value, say); values are kept secret.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Webhook: signs each request with HMAC-SHA256 (`webhook-signature`, and the older `X-Redguard-Signature`);
    /// `whsec_<base64>` is decoded as Standard Webhooks' secrets are (or from `secret_file` / `secret_env`).
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl SinkConfig {
    /// The files this sink reads its secrets from (`url_file`, `routing_key_file`, `secret_file`).
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        [&self.url_file, &self.routing_key_file, &self.secret_file]
            .into_iter()
            .filter_map(|f| f.as_deref())
    }

    /// A sink of `kind` with nothing else set.
    pub fn new(kind: SinkKind) -> Self {
        Self {
            kind,
            name: None,
            url: None,
            url_file: None,
            url_env: None,
            routing_key: None,
            routing_key_file: None,
            routing_key_env: None,
            severity: None,
            headers: BTreeMap::new(),
            secret: None,
            secret_file: None,
            secret_env: None,
        }
    }

    /// The sink's name; always set once the config is validated.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The endpoint (resolved at load; PagerDuty's default filled in).
    pub fn endpoint(&self) -> Option<&Secret> {
        self.url.as_ref()
    }

    /// The keys set on this sink that its type does not use.
    fn foreign_keys(&self) -> Vec<&'static str> {
        let pd = self.kind == SinkKind::PagerDuty;
        let webhook = self.kind == SinkKind::Webhook;
        let mut keys = Vec::new();
        let mut check = |set: bool, allowed: bool, key| {
            if set && !allowed {
                keys.push(key);
            }
        };
        check(self.url_file.is_some(), !pd, "url_file");
        check(self.url_env.is_some(), !pd, "url_env");
        check(self.routing_key.is_some(), pd, "routing_key");
        check(self.routing_key_file.is_some(), pd, "routing_key_file");
        check(self.routing_key_env.is_some(), pd, "routing_key_env");
        check(self.severity.is_some(), pd, "severity");
        check(!self.headers.is_empty(), webhook, "headers");
        check(self.secret.is_some(), webhook, "secret");
        check(self.secret_file.is_some(), webhook, "secret_file");
        check(self.secret_env.is_some(), webhook, "secret_env");
        keys
    }
}

/// Looks up an environment variable for `*_env` keys.
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl NotifyConfig {
    /// Validates the section, names unnamed sinks and resolves every secret reference (reading files, looking
    /// up `env`). Each problem is pushed as `notify.key ...`.
    pub(super) fn resolve(&mut self, env: EnvLookup<'_>, p: &mut Vec<String>) {
        if self.instance.as_deref().is_some_and(|i| i.trim().is_empty()) {
            p.push("notify.instance must not be empty".to_owned());
        }
        if self.on.is_empty() {
            p.push("notify.on must list at least one of to_open, to_half_open, to_closed".to_owned());
        }
        for (key, n) in [
            ("notify.queue_size", self.queue_size),
            ("notify.max_attempts", self.max_attempts as usize),
        ] {
            if n == 0 {
                p.push(format!("{key} must be at least 1"));
            }
        }
        if self.timeout.is_zero() {
            p.push("notify.timeout must be greater than 0".to_owned());
        }
        for (key, url) in [
            ("notify.runbook_url", &self.runbook_url),
            ("notify.dashboard_url", &self.dashboard_url),
        ] {
            check_link(key, url.as_deref(), p);
        }
        self.name_sinks(p);
        for (i, s) in self.sinks.iter_mut().enumerate() {
            let at = format!("notify.sinks[{i}]");
            for key in s.foreign_keys() {
                p.push(format!("{at}.{key} is not a setting of type {}", s.kind.as_str()));
            }
            match s.kind {
                SinkKind::Slack | SinkKind::Webhook => {
                    let refs = SecretRef::new(&at, ["url", "url_file", "url_env"], true);
                    refs.resolve(&mut s.url, &s.url_file, &s.url_env, env, p);
                }
                SinkKind::PagerDuty => {
                    let refs = SecretRef::new(&at, ["routing_key", "routing_key_file", "routing_key_env"], true);
                    refs.resolve(&mut s.routing_key, &s.routing_key_file, &s.routing_key_env, env, p);
                    s.url.get_or_insert_with(|| Secret::new(DEFAULT_PAGERDUTY_URL));
                    s.severity.get_or_insert_with(Severity::default);
                }
            }
            check_url(&format!("{at}.url"), s.url.as_ref().map(Secret::expose), p);
            if s.kind == SinkKind::Webhook {
                let refs = SecretRef::new(&at, ["secret", "secret_file", "secret_env"], false);
                refs.resolve(&mut s.secret, &s.secret_file, &s.secret_env, env, p);
                check_signing_secret(&at, s.secret.as_ref(), p);
                check_headers(&at, &s.headers, p);
            }
        }
    }

    /// Gives each unnamed sink its type as name, `-2`, `-3` ... when a type repeats, and checks the names are
    /// usable as metric labels and unique.
    fn name_sinks(&mut self, p: &mut Vec<String>) {
        let mut taken: HashSet<String> = HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let Some(name) = &sink.name else { continue };
            let valid = !name.is_empty()
                && name.len() <= MAX_SINK_NAME
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !valid {
                p.push(format!(
                    "notify.sinks[{i}].name must be 1 to {MAX_SINK_NAME} characters from A-Z a-z 0-9 _ - ., got {name:?}"
                ));
            } else if !taken.insert(name.clone()) {
                p.push(format!("notify.sinks[{i}].name {name:?} is used by another sink"));
            }
        }
        let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        for sink in &mut self.sinks {
            let kind = sink.kind.as_str();
            if sink.name.is_some() {
                continue;
            }
            let n = seen.entry(kind).or_default();
            let name = loop {
                *n += 1;
                let candidate = if *n == 1 {
                    kind.to_owned()
                } else {
                    format!("{kind}-{n}")
                };
                if !taken.contains(&candidate) {
                    break candidate;
                }
            };
            taken.insert(name.clone());
            sink.name = Some(name);
        }
    }
}

/// One secret that may be given inline, as a file or as an environment variable.
struct SecretRef<'a> {
    at: &'a str,
    keys: [&'static str; 3],
    required: bool,
}

impl<'a> SecretRef<'a> {
    fn new(at: &'a str, keys: [&'static str; 3], required: bool) -> Self {
        Self { at, keys, required }
    }

    /// Leaves the value (from whichever source) in `inline`.
    fn resolve(
        &self,
        inline: &mut Option<Secret>,
        file: &Option<PathBuf>,
        var: &Option<String>,
        env: EnvLookup<'_>,
        p: &mut Vec<String>,
    ) {
        let [key, file_key, env_key] = self.keys;
        let at = self.at;
        let set = usize::from(inline.is_some()) + usize::from(file.is_some()) + usize::from(var.is_some());
        if set > 1 {
            p.push(format!("{at}: set only one of {key}, {file_key} or {env_key}"));
            return;
        }
        if let Some(value) = inline.as_ref() {
            if value.expose().trim().is_empty() {
                p.push(format!("{at}.{key} must not be empty"));
            }
        } else if let Some(path) = file {
            match read_secret(path) {
                Ok(secret) => *inline = Some(secret),
                Err(e) => p.push(format!("{at}.{file_key}: cannot read {}: {e}", path.display())),
            }
        } else if let Some(name) = var {
            match env(name).filter(|v| !v.trim().is_empty()) {
                Some(v) => *inline = Some(Secret::new(v.trim())),
                None => p.push(format!(
                    "{at}.{env_key}: environment variable {name} is not set or empty"
                )),
            }
        } else if self.required {
            p.push(format!("{at}: one of {key}, {file_key} or {env_key} is required"));
        }
    }
}

/// The file's content, trailing newline trimmed; an empty file is an error.
fn read_secret(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.trim().is_empty() {
        return Err("file is empty".to_owned());
    }
    Ok(Secret::new(value))
}

/// Checks an endpoint without ever printing it: it may embed a token.
fn check_url(key: &str, url: Option<&str>, p: &mut Vec<String>) {
    let Some(url) = url else { return };
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => p.push(format!("{key} must be an http:// or https:// URL with a host")),
        Err(e) => p.push(format!("{key} is not a valid URL ({e})")),
    }
}

/// Checks a link that people will click: unlike a sink URL it is no secret, so the error may quote it.
fn check_link(key: &str, url: Option<&str>, p: &mut Vec<String>) {
    let Some(url) = url else { return };
    if url.len() > MAX_LINK_BYTES {
        p.push(format!(
            "{key} is longer than {MAX_LINK_BYTES} bytes (Slack's limit for a button's URL)"
        ));
        return;
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && url.trim() == url => {}
        Ok(_) => p.push(format!(
            "{key} must be an absolute http:// or https:// URL with a host, got {url:?}"
        )),
        Err(e) => p.push(format!("{key} is not an absolute URL ({e}), got {url:?}")),
    }
}

/// A secret in Standard Webhooks' form (`whsec_` + base64) is decoded into the HMAC key; one that cannot be
/// is refused now rather than signing with something the receiver does not expect. Never prints the secret.
fn check_signing_secret(at: &str, secret: Option<&Secret>, p: &mut Vec<String>) {
    use base64::Engine;
    let Some(encoded) = secret.and_then(|s| s.expose().strip_prefix("whsec_")) else {
        return;
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => {}
        _ => p.push(format!(
            "{at}: the signing secret (secret, secret_file or secret_env) starts with whsec_, but what follows is \
             not the base64 of a key"
        )),
    }
}

fn check_headers(at: &str, headers: &BTreeMap<String, Secret>, p: &mut Vec<String>) {
    for (name, value) in headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.push(format!("{at}.headers: {name:?} is not a valid header name"));
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            p.push(format!(
                "{at}.headers.{name} is set by redguard and cannot be overridden"
            ));
        } else if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
            p.push(format!(
                "{at}.headers.{name} has characters not allowed in a header value"
            ));
        }
    }
}

/// `POD_NAMESPACE/POD_NAME`, or `POD_NAME` alone, when Kubernetes' downward API provides them.
pub(super) fn instance_from_env(env: EnvLookup<'_>) -> Option<String> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    match (get("POD_NAMESPACE"), get("POD_NAME")) {
        (Some(ns), Some(pod)) => Some(format!("{ns}/{pod}")),
        (None, Some(pod)) => Some(pod),
        _ => None,
    }
}

const NOTIFY_ON: &str = "a list of to_open, to_half_open, to_closed (or the same comma-separated)";

fn notify_on<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NotifyOn>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<NotifyOn>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(NOTIFY_ON)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(on) = seq.next_element::<NotifyOn>()? {
                out.push(on);
            }
            Ok(out)
        }
        // The environment override form: REDGUARD_NOTIFY_ON=to_open,to_closed.
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    NotifyOn::ALL
                        .into_iter()
                        .find(|on| on_name(*on) == s)
                        .ok_or_else(|| E::custom(format!("unknown transition {s:?}, expected {NOTIFY_ON}")))
                })
                .collect()
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

fn on_name(on: NotifyOn) -> &'static str {
    match on {
        NotifyOn::ToOpen => "to_open",
        NotifyOn::ToHalfOpen => "to_half_open",
        NotifyOn::ToClosed => "to_closed",
    }
}
