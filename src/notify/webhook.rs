//! The generic webhook: one flat JSON object per state change, optionally signed.
//!
//! # Signature
//!
//! With a `secret`, every request carries `X-Redguard-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! HMAC-SHA256 keyed with the secret over the bytes `<t>.<body>` (the decimal timestamp, a dot, then the raw body
//! exactly as sent). A receiver recomputes it, compares in constant time, and rejects a `t` more than a few
//! minutes from its own clock, so a captured request cannot be replayed later. Each attempt is signed afresh, so
//! a retry carries its own send time. The `v1=` prefix leaves room for another scheme beside it.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::event::{headline, Context, Kind, Notice};
use crate::clock::iso8601;

/// The header that carries the signature.
pub(crate) const SIGNATURE_HEADER: &str = "x-redguard-signature";

/// The body for `n`.
pub(crate) fn render(n: &Notice, ctx: &Context) -> Value {
    let e = &n.event;
    json!({
        "event": match e.kind {
            Kind::StateChanged => "circuit_state_changed",
            Kind::Test => "notification_test",
        },
        "from": e.from.as_str(),
        "to": e.to.as_str(),
        "reason": e.reason,
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

/// The `X-Redguard-Signature` value for `body` sent at unix time `t`.
pub(crate) fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
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
        let v = render(&notice(State::Closed, State::Open, Some("refused")), &ctx());
        assert_eq!(
            v,
            json!({
                "event": "circuit_state_changed",
                "from": "closed",
                "to": "open",
                "reason": "2 consecutive failures",
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

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Known answer, computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k3y
        assert_eq!(
            signature(b"k3y", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
        );
        assert_ne!(
            signature(b"k3y", 1_700_000_001, br#"{"a":1}"#),
            signature(b"k3y", 1_700_000_000, br#"{"a":1}"#)
        );
    }
}
