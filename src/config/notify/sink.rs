//! One notification sink's settings: its kind (Slack, PagerDuty, webhook), PagerDuty's severities, and the one
//! flat [`SinkConfig`] every kind is parsed into, with the check of which keys belong to which kind.
//!
//! Only the shape lives here; [`super::NotifyConfig::resolve`] validates the section and [`super::secrets`]
//! reads the secrets a sink refers to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::Secret;

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
    pub(super) fn foreign_keys(&self) -> Vec<&'static str> {
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
