//! A configured destination, ready to render and address notifications: which transitions it takes, the
//! bodies for a notice (pure, via [`super::slack`], [`super::pagerduty`], [`super::webhook`]) and the HTTP
//! request for one attempt.
//!
//! A sink is logged and labelled by its name and type only. Everything secret about it (the URL, the routing
//! key, header values, the HMAC secret) stays in [`Secret`] or a sensitive header value, and
//! [`Sink::redact`] scrubs those strings from any text that came back from the network before it is logged.

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue};

use super::event::{Context, Notice};
use super::transport::Request;
use super::{pagerduty, slack, webhook};
use crate::breaker::State;
use crate::config::{Secret, Severity, SinkConfig, SinkKind};

/// Shorter fragments are too common to scrub without mangling ordinary words.
const MIN_REDACTED_LEN: usize = 6;

/// The sink's config lacks something validation guarantees; only reachable with an unvalidated config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notify sink {name}: {what} is missing or invalid")]
pub struct SinkError {
    pub name: String,
    pub what: &'static str,
}

enum Target {
    Slack,
    PagerDuty {
        routing_key: Secret,
        severity: Severity,
    },
    Webhook {
        headers: Vec<(HeaderName, HeaderValue)>,
        secret: Option<Secret>,
    },
}

/// One destination.
pub(crate) struct Sink {
    /// The metric label and log name.
    pub name: String,
    pub kind: SinkKind,
    url: Secret,
    target: Target,
    /// Secret strings to scrub from logged text.
    secrets: Vec<String>,
}

impl Sink {
    pub(crate) fn from_config(c: &SinkConfig) -> Result<Sink, SinkError> {
        let missing = |what| SinkError {
            name: c.name().to_owned(),
            what,
        };
        let url = c.url.clone().ok_or_else(|| missing("url"))?;
        let mut secrets = vec![url.expose().to_owned()];
        if let Ok(parsed) = reqwest::Url::parse(url.expose()) {
            // Errors sometimes quote only the path (where Slack keeps its token) or the query.
            secrets.extend([parsed.path().to_owned(), parsed.query().unwrap_or_default().to_owned()]);
        }
        let target = match c.kind {
            SinkKind::Slack => Target::Slack,
            SinkKind::PagerDuty => {
                let routing_key = c.routing_key.clone().ok_or_else(|| missing("routing_key"))?;
                secrets.push(routing_key.expose().to_owned());
                Target::PagerDuty {
                    routing_key,
                    severity: c.severity.unwrap_or_default(),
                }
            }
            SinkKind::Webhook => {
                let mut headers = Vec::with_capacity(c.headers.len());
                for (name, value) in &c.headers {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| missing("a header name"))?;
                    let mut value = HeaderValue::from_str(value.expose()).map_err(|_| missing("a header value"))?;
                    value.set_sensitive(true);
                    headers.push((name, value));
                }
                secrets.extend(c.headers.values().map(|v| v.expose().to_owned()));
                secrets.extend(c.secret.iter().map(|s| s.expose().to_owned()));
                Target::Webhook {
                    headers,
                    secret: c.secret.clone(),
                }
            }
        };
        secrets.retain(|s| s.len() >= MIN_REDACTED_LEN);
        // Longest first, so a URL is replaced whole before its path is looked for.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Sink {
            name: c.name().to_owned(),
            kind: c.kind,
            url,
            target,
            secrets,
        })
    }

    /// Whether a change into `to` concerns this sink (PagerDuty ignores half-open).
    pub(crate) fn accepts(&self, to: State) -> bool {
        match self.target {
            Target::PagerDuty { .. } => pagerduty::accepts(to),
            Target::Slack | Target::Webhook { .. } => true,
        }
    }

    /// The bodies to send for `n`, in order (none, one, or PagerDuty's test trigger + resolve).
    pub(crate) fn bodies(&self, n: &Notice, ctx: &Context) -> Vec<Bytes> {
        let values = match &self.target {
            Target::Slack => vec![slack::render(n, ctx)],
            // An override or an observe-mode change pages lower than configured (`Event::severity`).
            Target::PagerDuty { routing_key, severity } => {
                pagerduty::render(n, ctx, routing_key.expose(), n.event.severity(*severity))
            }
            Target::Webhook { .. } => vec![webhook::render(n, ctx)],
        };
        values
            .into_iter()
            .map(|v| Bytes::from(serde_json::to_vec(&v).expect("JSON values serialize")))
            .collect()
    }

    /// The request for one attempt at unix time `now` (a webhook signs each attempt afresh).
    pub(crate) fn request(&self, body: &Bytes, now: u64) -> Request {
        let mut headers = Vec::new();
        if let Target::Webhook { headers: extra, secret } = &self.target {
            headers.extend(extra.iter().cloned());
            if let Some(secret) = secret {
                let mut value = HeaderValue::from_str(&webhook::signature(secret.expose().as_bytes(), now, body))
                    .expect("the signature is ASCII");
                value.set_sensitive(true);
                headers.push((HeaderName::from_static(webhook::SIGNATURE_HEADER), value));
            }
        }
        Request {
            url: self.url.clone(),
            headers,
            body: body.clone(),
        }
    }

    /// `text` with every secret of this sink replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |acc, secret| acc.replace(secret.as_str(), "***"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::{ctx, notice};

    fn sink(yaml: &str) -> Sink {
        let c = crate::config::Config::from_yaml(&format!("notify:\n  sinks:\n    - {yaml}\n"), "t").unwrap();
        Sink::from_config(&c.notify.sinks[0]).unwrap()
    }

    #[test]
    fn a_signed_webhook_carries_its_headers_and_a_fresh_signature() {
        let s = sink("{type: webhook, url: 'https://h.example/in?token=abcdef123', secret: k3y, headers: {Authorization: Bearer xyz123}}");
        let body = Bytes::from_static(br#"{"a":1}"#);
        let r = s.request(&body, 1_700_000_000);
        assert_eq!(r.url.expose(), "https://h.example/in?token=abcdef123");
        let get = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.to_str().unwrap());
        assert_eq!(get("authorization"), Some("Bearer xyz123"));
        assert_eq!(
            get("x-redguard-signature"),
            Some(webhook::signature(b"k3y", 1_700_000_000, &body).as_str())
        );
        assert!(r.headers.iter().all(|(_, v)| v.is_sensitive()));
        assert_ne!(s.request(&body, 1_700_000_001).headers, r.headers);
    }

    #[test]
    fn redact_scrubs_the_url_its_parts_and_every_secret() {
        let s = sink("{type: webhook, url: 'https://h.example/hooks/T0SECRET?token=abcdef123', secret: hmac-secret-1, headers: {X-Key: header-secret-2}}");
        let text = "failed https://h.example/hooks/T0SECRET?token=abcdef123; path /hooks/T0SECRET; token=abcdef123; hmac-secret-1 header-secret-2";
        assert_eq!(s.redact(text), "failed ***; path ***; ***; *** ***");
        let pd = sink("{type: pagerduty, routing_key: R0UT1NGKEY}");
        assert_eq!(pd.redact("bad key R0UT1NGKEY"), "bad key ***");
    }

    #[test]
    fn pagerduty_skips_half_open_and_slack_takes_everything() {
        let pd = sink("{type: pagerduty, routing_key: R0UT1NGKEY}");
        let slack = sink("{type: slack, url: 'https://hooks.slack.com/services/T/B/x'}");
        assert!(!pd.accepts(State::HalfOpen) && pd.accepts(State::Open));
        assert!(State::ALL.iter().all(|&s| slack.accepts(s)));
        assert_eq!(pd.bodies(&notice(State::Closed, State::Open, None), &ctx()).len(), 1);
        assert!(pd.request(&Bytes::new(), 0).headers.is_empty());
        assert_eq!(pd.name, "pagerduty");
    }
}
