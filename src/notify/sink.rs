//! A configured destination, ready to render and address notifications: which transitions it takes, the
//! bodies for a notice (pure, via [`super::slack`], [`super::pagerduty`], [`super::webhook`]) and the HTTP
//! request for one attempt.
//!
//! A sink is logged and labelled by its name and type only. Everything secret about it (the URL, the routing
//! key, header values, the HMAC secret) stays in [`Secret`] or a sensitive header value, and
//! [`Sink::redact`] scrubs those strings from any text that came back from the network before it is logged.

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue};

use super::context::Context;
use super::event::Notice;
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
        signing: Option<Signing>,
    },
}

/// A webhook's signing secret, as the two signature schemes key their HMAC.
struct Signing {
    /// Standard Webhooks: a `whsec_` secret decoded, else the secret's bytes.
    key: Vec<u8>,
    /// The deprecated `X-Redguard-Signature`: the secret's bytes as written.
    legacy: Secret,
}

/// One body to deliver, and the id that names it on every attempt (the webhook's `webhook-id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub id: String,
    pub body: Bytes,
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
                let signing = match &c.secret {
                    Some(secret) => Some(Signing {
                        key: webhook::signing_key(secret.expose()).ok_or_else(|| missing("the secret"))?,
                        legacy: secret.clone(),
                    }),
                    None => None,
                };
                Target::Webhook { headers, signing }
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

    /// The bodies to send for `n`, in order (none, one, or PagerDuty's test trigger + resolve), each under a
    /// fresh id that its retries keep.
    pub(crate) fn bodies(&self, n: &Notice, ctx: &Context) -> Vec<Outgoing> {
        let id = webhook::new_id();
        let values = match &self.target {
            Target::Slack => vec![slack::render(n, ctx)],
            // An override or an observe-mode change pages lower than configured (`Event::severity`).
            Target::PagerDuty { routing_key, severity } => {
                pagerduty::render(n, ctx, routing_key.expose(), n.event.severity(*severity))
            }
            Target::Webhook { .. } => vec![webhook::render(n, ctx, &id)],
        };
        values
            .into_iter()
            .map(|v| Outgoing {
                id: id.clone(),
                body: Bytes::from(serde_json::to_vec(&v).expect("JSON values serialize")),
            })
            .collect()
    }

    /// The request for one attempt at unix time `now`: a webhook's carries the event id, this attempt's time
    /// and, with a secret, the signatures over them (each attempt is signed afresh).
    pub(crate) fn request(&self, out: &Outgoing, now: u64) -> Request {
        let mut headers = Vec::new();
        if let Target::Webhook {
            headers: extra,
            signing,
        } = &self.target
        {
            headers.extend(extra.iter().cloned());
            let ascii = |s: &str| HeaderValue::from_str(s).expect("ids, times and signatures are ASCII");
            headers.push((HeaderName::from_static(webhook::ID_HEADER), ascii(&out.id)));
            headers.push((
                HeaderName::from_static(webhook::TIMESTAMP_HEADER),
                ascii(&now.to_string()),
            ));
            if let Some(s) = signing {
                let mut value = ascii(&webhook::signature(&s.key, &out.id, now, &out.body));
                value.set_sensitive(true);
                headers.push((HeaderName::from_static(webhook::SIGNATURE_HEADER), value));
                let mut value = ascii(&webhook::legacy_signature(s.legacy.expose().as_bytes(), now, &out.body));
                value.set_sensitive(true);
                headers.push((HeaderName::from_static(webhook::LEGACY_SIGNATURE_HEADER), value));
            }
        }
        Request {
            url: self.url.clone(),
            headers,
            body: out.body.clone(),
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

    fn outgoing(body: &'static [u8]) -> Outgoing {
        Outgoing {
            id: "msg_1".to_owned(),
            body: Bytes::from_static(body),
        }
    }

    fn header<'r>(r: &'r Request, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn a_signed_webhook_carries_its_headers_the_id_and_fresh_signatures() {
        let s = sink("{type: webhook, url: 'https://h.example/in?token=abcdef123', secret: k3y, headers: {Authorization: Bearer xyz123}}");
        let out = outgoing(br#"{"a":1}"#);
        let r = s.request(&out, 1_700_000_000);
        assert_eq!(r.url.expose(), "https://h.example/in?token=abcdef123");
        let get = |n: &str| header(&r, n);
        assert_eq!(get("authorization"), Some("Bearer xyz123"));
        assert_eq!(get("webhook-id"), Some("msg_1"));
        assert_eq!(get("webhook-timestamp"), Some("1700000000"));
        assert_eq!(
            get("webhook-signature"),
            Some(webhook::signature(b"k3y", "msg_1", 1_700_000_000, &out.body).as_str())
        );
        assert_eq!(
            get("x-redguard-signature"),
            Some(webhook::legacy_signature(b"k3y", 1_700_000_000, &out.body).as_str())
        );
        let secret = |n: &str| r.headers.iter().find(|(k, _)| k == n).unwrap().1.is_sensitive();
        assert!(secret("authorization") && secret("webhook-signature") && secret("x-redguard-signature"));
        let later = s.request(&out, 1_700_000_001);
        assert_eq!(header(&later, "webhook-id"), Some("msg_1"), "a retry keeps the id");
        assert_ne!(header(&later, "webhook-signature"), get("webhook-signature"));
    }

    #[test]
    fn a_whsec_secret_keys_the_standard_signature_with_its_decoded_bytes() {
        let s = sink("{type: webhook, url: 'https://h.example/in', secret: whsec_aGVsbG8gd29ybGQ=}");
        let out = outgoing(b"{}");
        let r = s.request(&out, 7);
        assert_eq!(
            header(&r, "webhook-signature"),
            Some(webhook::signature(b"hello world", "msg_1", 7, b"{}").as_str())
        );
        // The deprecated header keeps its old key: the secret as written.
        assert_eq!(
            header(&r, "x-redguard-signature"),
            Some(webhook::legacy_signature(b"whsec_aGVsbG8gd29ybGQ=", 7, b"{}").as_str())
        );
    }

    #[test]
    fn an_unsigned_webhook_still_sends_the_id_and_time_and_each_notice_gets_a_new_id() {
        let s = sink("{type: webhook, url: 'https://h.example/in'}");
        let n = notice(State::Closed, State::Open, None);
        let (a, b) = (s.bodies(&n, &ctx()), s.bodies(&n, &ctx()));
        assert_ne!(a[0].id, b[0].id);
        let body: serde_json::Value = serde_json::from_slice(&a[0].body).unwrap();
        assert_eq!(body["id"], a[0].id.as_str());
        let r = s.request(&a[0], 42);
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["webhook-id", "webhook-timestamp"]);
        assert_eq!(header(&r, "webhook-id"), Some(a[0].id.as_str()));
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
        assert!(pd.request(&outgoing(b""), 0).headers.is_empty());
        assert_eq!(pd.name, "pagerduty");
    }
}
