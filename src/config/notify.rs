//! The `notify` section: where state-change notifications go and how hard redguard tries to deliver them.
//!
//! Sinks carry secrets (Slack webhook URLs, PagerDuty routing keys, HMAC secrets, header values). Each one may
//! be written inline, read from a file or taken from an environment variable, exactly one of the three; files
//! and variables are read once at load, so a missing secret stops the start instead of surfacing on the first
//! outage. Secret values are held in [`Secret`] and never appear in an error message: problems name the key
//! (`notify.sinks[1].url`), not its content. The sinks' shape lives in [`sink`], the reading and checking of
//! their secrets in [`secrets`]; this file parses and validates the section as a whole.

mod secrets;
mod sink;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use self::secrets::{check_headers, check_signing_secret, check_url, SecretRef};
pub use self::sink::{Severity, SinkConfig, SinkKind};
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
