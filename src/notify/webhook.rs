//! The generic webhook: one flat JSON object per state change, with an event id, optionally signed, following
//! the Standard Webhooks specification (standardwebhooks.com) so that receivers can use its libraries.
//!
//! # Headers
//!
//! - `webhook-id`: the event's id (`msg_` + 32 hex digits), also in the body as `id`. It is drawn once per
//!   notice and is the same on every retry of it, so a receiver that saw it already can drop the repeat: a
//!   retry after a timeout may follow a request the receiver did get.
//! - `webhook-timestamp`: unix seconds of this attempt (each attempt is signed afresh).
//! - `webhook-signature`, with a `secret`: `v1,<base64 of HMAC-SHA256 over "<id>.<timestamp>.<body>">`. A
//!   secret of the spec's form `whsec_<base64>` is decoded and its bytes are the key; any other secret is used
//!   as its bytes. A receiver recomputes it, compares in constant time, and rejects a timestamp more than a
//!   few minutes from its own clock, so a captured request cannot be replayed later.
//! - `X-Redguard-Signature`, with a `secret`: redguard's earlier scheme, kept for receivers written against
//!   it and deprecated: `t=<timestamp>,v1=<hex of HMAC-SHA256 over "<timestamp>.<body>">`, keyed with the
//!   secret's bytes exactly as written (a `whsec_` secret is not decoded here).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::context::Context;
use super::event::{Kind, Notice};
use super::text::headline;
use crate::clock::iso8601;

/// The event id, the same on every attempt.
pub(crate) const ID_HEADER: &str = "webhook-id";
/// Unix seconds of the attempt.
pub(crate) const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The Standard Webhooks signature.
pub(crate) const SIGNATURE_HEADER: &str = "webhook-signature";
/// redguard's earlier signature, kept beside the standard one (deprecated).
pub(crate) const LEGACY_SIGNATURE_HEADER: &str = "x-redguard-signature";
/// The prefix of a secret in the spec's form, whose rest is the key in base64.
const SECRET_PREFIX: &str = "whsec_";

/// The body for `n`, sent under the event id `id`.
pub(crate) fn render(n: &Notice, ctx: &Context, id: &str) -> Value {
    let e = &n.event;
    json!({
        "id": id,
        "event": match e.kind {
            Kind::StateChanged => "circuit_state_changed",
            Kind::Test => "notification_test",
        },
        "from": e.from.as_str(),
        "to": e.to.as_str(),
        "reason": e.reason,
        "cause": e.cause.as_str(),
        "last_error": e.last_error,
        "instance": ctx.instance,
        "redis": ctx.redis,
        "failure_count": e.failure_count,
        "at": iso8601(e.at),
        "at_unix": e.unix_seconds(),
        "previous_state_seconds": e.previous_lasted.as_secs_f64(),
        "changes": n.changes,
        "summary": headline(n, ctx),
    })
}

/// A fresh event id: `msg_` and 128 random bits in hex. Should the OS's random source fail, a hash of the
/// process, the time and a counter still gives an id no other event of this process has.
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut h = Sha256::new();
        h.update(std::process::id().to_le_bytes());
        h.update(now.to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        bytes.copy_from_slice(&h.finalize()[..16]);
    }
    format!("msg_{}", hex::encode(bytes))
}

/// The HMAC key a secret stands for: the decoded bytes of a `whsec_<base64>` secret, else the secret's bytes.
/// None for a `whsec_` secret that is not base64 (refused when the config is loaded).
pub(crate) fn signing_key(secret: &str) -> Option<Vec<u8>> {
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => BASE64.decode(encoded).ok().filter(|k| !k.is_empty()),
        None => Some(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` value for `body` of event `id` sent at unix time `t`.
pub(crate) fn signature(key: &[u8], id: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The `X-Redguard-Signature` value for `body` sent at unix time `t` (the deprecated scheme).
pub(crate) fn legacy_signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::State;
    use crate::notify::testing::{ctx, notice};

    #[test]
    fn the_event_is_flat_json_with_every_field() {
        let v = render(
            &notice(State::Closed, State::Open, Some("refused")),
            &ctx(),
            "msg_0123456789abcdef0123456789abcdef",
        );
        assert_eq!(
            v,
            json!({
                "id": "msg_0123456789abcdef0123456789abcdef",
                "event": "circuit_state_changed",
                "from": "closed",
                "to": "open",
                "reason": "2 consecutive failures",
                "cause": "measured",
                "last_error": "refused",
                "instance": "prod/api-0",
                "redis": "redis://:***@cache:6379",
                "failure_count": 2,
                "at": "2023-11-14T22:13:20Z",
                "at_unix": 1_700_000_000u64,
                "previous_state_seconds": 75.0,
                "changes": 1,
                "summary": "Redis circuit OPEN on prod/api-0 (Redis redis://:***@cache:6379): 2 consecutive failures",
            })
        );
    }

    /// Receivers route on `cause`: an operator's override or an observe-mode change is not an outage.
    #[test]
    fn the_cause_names_an_override_or_observe_mode_for_receivers_to_route_on() {
        use crate::breaker::Override;
        use crate::notify::event::{Cause, Event};
        use crate::notify::testing::event;
        use std::sync::Arc;
        let with = |cause| {
            let e = Event {
                cause,
                ..(*event(State::Closed, State::Open, None)).clone()
            };
            render(&Notice::single(Arc::new(e)), &ctx(), "msg_1")["cause"].clone()
        };
        assert_eq!(with(Cause::Measured), "measured");
        assert_eq!(with(Cause::Manual(Override::ForceOpen)), "manual");
        assert_eq!(with(Cause::Manual(Override::ForceClosed)), "manual");
        assert_eq!(with(Cause::Observed), "observed");
    }

    #[test]
    fn the_legacy_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Known answer, computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k3y
        assert_eq!(
            legacy_signature(b"k3y", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
        );
        assert_ne!(
            legacy_signature(b"k3y", 1_700_000_001, br#"{"a":1}"#),
            legacy_signature(b"k3y", 1_700_000_000, br#"{"a":1}"#)
        );
    }

    #[test]
    fn the_signature_follows_standard_webhooks() {
        // The example of the Standard Webhooks specification (its secret, id, timestamp, body and signature).
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.len(), 24);
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Each input counts.
        let sig = |id, t, body: &[u8]| signature(&key, id, t, body);
        let base = sig("msg_1", 1, b"{}");
        assert_ne!(sig("msg_2", 1, b"{}"), base);
        assert_ne!(sig("msg_1", 2, b"{}"), base);
        assert_ne!(sig("msg_1", 1, b"[]"), base);
    }

    #[test]
    fn a_whsec_secret_is_decoded_and_any_other_is_its_bytes() {
        assert_eq!(signing_key("whsec_aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(signing_key("hmac-secret"), Some(b"hmac-secret".to_vec()));
        assert_eq!(signing_key("whsec_not base64!"), None);
        assert_eq!(signing_key("whsec_"), None);
    }

    #[test]
    fn ids_are_fresh_and_shaped_like_the_spec_examples() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let hex = id.strip_prefix("msg_").unwrap_or_else(|| panic!("{id}"));
            assert!(hex.len() == 32 && hex.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
    }
}
