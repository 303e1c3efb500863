//! `POST /v1/ratelimit` bodies and answers.
//!
//! `{"key": "login:203.0.113.9", "limit": 10, "window_ms": 60000, "cost"?: 1}` answers
//! `{"allowed": bool, "remaining": n, "reset_ms": n, "source": "redis"}`; a decision made without Redis says
//! `"source": "local"` or `"default"` and `"degraded": true`. A denied call is still a `200`: the decision is
//! the answer, and what to do with it is the application's. `key` is at most `api.max_key_bytes`; `limit` is in
//! 1..=100000, `window_ms` in 1..=86400000 and `cost` in 1..=`limit`, each an integer (anything else is a 400
//! naming the field and its bounds).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::request::{self, integer, Str};
use crate::metrics::DecisionSource;
use crate::op::Bytes;
use crate::ratelimit::{Decision, Limit, MAX_LIMIT, MAX_WINDOW_MS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow)]
    key: Option<Str<'a>>,
    limit: Option<serde_json::Number>,
    window_ms: Option<serde_json::Number>,
    cost: Option<serde_json::Number>,
}

/// A parsed check: the application's key and its limit.
#[derive(Debug)]
pub(crate) struct Check<'a> {
    pub key: Bytes<'a>,
    pub limit: Limit,
}

/// `max_key_bytes` (`api.max_key_bytes`) bounds the key as it bounds a typed op's: the key is held in Redis and,
/// while Redis is away, in this process (`ratelimit.local_max_keys` of them).
pub(crate) fn parse(body: &[u8], max_key_bytes: usize) -> Result<Check<'_>, ApiError> {
    let raw: Raw<'_> = request::deserialize(body)?;
    let need = |field: &str| ApiError::BadRequest(format!("missing field `{field}`"));
    let key = raw.key.ok_or_else(|| need("key"))?.0;
    if key.is_empty() {
        return Err(ApiError::BadRequest("field `key` must not be an empty string".into()));
    }
    if key.len() > max_key_bytes {
        return Err(ApiError::BadRequest(format!(
            "field `key` is {} bytes, over api.max_key_bytes ({max_key_bytes})",
            key.len()
        )));
    }
    // Each bound is checked on the JSON number itself, so a fraction or a number past 64 bits is refused
    // naming the field, never rounded into range.
    let bounded = |field: &str, n: Option<&serde_json::Number>, max: u64| {
        integer(field, n.ok_or_else(|| need(field))?, 1, max as i64).map(|v| v as u64)
    };
    let limit = bounded("limit", raw.limit.as_ref(), MAX_LIMIT)?;
    let window_ms = bounded("window_ms", raw.window_ms.as_ref(), MAX_WINDOW_MS)?;
    let cost = match raw.cost.as_ref() {
        None => 1,
        Some(n) => integer("cost", n, 1, limit as i64)
            .map_err(|e| ApiError::BadRequest(format!("{e} (at most the limit)")))? as u64,
    };
    let key = match key {
        Cow::Borrowed(k) => Cow::Borrowed(k.as_bytes()),
        Cow::Owned(k) => Cow::Owned(k.into_bytes()),
    };
    Ok(Check {
        key,
        limit: Limit {
            limit,
            window: std::time::Duration::from_millis(window_ms),
            cost,
        },
    })
}

#[derive(Serialize)]
struct Body {
    allowed: bool,
    remaining: u64,
    reset_ms: u64,
    source: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
}

pub(crate) fn render(d: &Decision) -> Vec<u8> {
    let body = Body {
        allowed: d.allowed,
        remaining: d.remaining,
        reset_ms: d.reset_ms,
        source: d.source.as_str(),
        degraded: d.source != DecisionSource::Redis,
    };
    serde_json::to_vec(&body).expect("plain fields always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(body: &str) -> String {
        match parse(body.as_bytes(), 8) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_check_parses_with_cost_defaulting_to_one() {
        let c = parse(br#"{"key":"login:203.0.113.9","limit":10,"window_ms":60000}"#, 1024).unwrap();
        assert_eq!(c.key.as_ref(), b"login:203.0.113.9");
        assert_eq!(
            c.limit,
            Limit {
                limit: 10,
                window: std::time::Duration::from_secs(60),
                cost: 1
            }
        );
        assert_eq!(
            parse(br#"{"key":"k","limit":5,"window_ms":1,"cost":5}"#, 1024)
                .unwrap()
                .limit
                .cost,
            5
        );
    }

    #[test]
    fn bad_checks_name_the_field() {
        for (body, want) in [
            (r#"{"limit":1,"window_ms":1}"#, "missing field `key`"),
            (
                r#"{"key":"123456789","limit":1,"window_ms":1}"#,
                "field `key` is 9 bytes, over api.max_key_bytes (8)",
            ),
            (
                r#"{"key":"","limit":1,"window_ms":1}"#,
                "`key` must not be an empty string",
            ),
            (r#"{"key":"k","window_ms":1}"#, "missing field `limit`"),
            (
                r#"{"key":"k","limit":0,"window_ms":1}"#,
                "field `limit` must be an integer in 1..=100000, got 0",
            ),
            (
                r#"{"key":"k","limit":100001,"window_ms":1}"#,
                "field `limit` must be an integer in 1..=100000, got 100001",
            ),
            (r#"{"key":"k","limit":-1,"window_ms":1}"#, "field `limit`"),
            (r#"{"key":"k","limit":1}"#, "missing field `window_ms`"),
            (
                r#"{"key":"k","limit":1,"window_ms":0}"#,
                "field `window_ms` must be an integer in 1..=86400000, got 0",
            ),
            (
                r#"{"key":"k","limit":2,"window_ms":1,"cost":3}"#,
                "field `cost` must be an integer in 1..=2, got 3 (at most the limit)",
            ),
            (
                r#"{"key":"k","limit":2,"window_ms":1,"cost":0}"#,
                "field `cost` must be an integer in 1..=2, got 0",
            ),
            (r#"{"key":"k","limit":2,"window_ms":1.5}"#, "field `window_ms`"),
            (
                r#"{"key":"k","limit":18446744073709551616,"window_ms":1}"#,
                "field `limit` must be an integer in 1..=100000, got 1.8446744073709552e+19",
            ),
            (
                r#"{"key":"k","limit":2,"limit":3,"window_ms":1}"#,
                "duplicate field `limit`",
            ),
            (
                r#"{"key":"k","limit":2,"window_ms":1} {"key":"k"}"#,
                "exactly one JSON value",
            ),
            (
                r#"{"key":"k","limit":2,"window_ms":1,"burst":3}"#,
                "unknown field `burst`",
            ),
        ] {
            let got = bad(body);
            assert!(got.contains(want), "{body}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn degraded_decisions_say_so() {
        let d = Decision {
            allowed: true,
            remaining: 3,
            reset_ms: 0,
            source: DecisionSource::Redis,
        };
        assert_eq!(
            String::from_utf8(render(&d)).unwrap(),
            r#"{"allowed":true,"remaining":3,"reset_ms":0,"source":"redis"}"#
        );
        let d = Decision {
            source: DecisionSource::Local,
            ..d
        };
        assert_eq!(
            String::from_utf8(render(&d)).unwrap(),
            r#"{"allowed":true,"remaining":3,"reset_ms":0,"source":"local","degraded":true}"#
        );
    }
}
