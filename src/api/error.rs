//! Every way an API call can fail, and the one place where failures become HTTP responses.
//!
//! The body is always `{"error": {"code": .., "message": ..}}`; calls that could not reach Redis add
//! `"degraded": true` and `"cached"` (whether a write was kept in the fallback cache), and `circuit_open` adds
//! `retry_after_ms` and a `Retry-After` header (except while the circuit is forced open: no time would be true),
//! as does `overloaded` (too many request bytes in flight). hyper's own answers to requests it cannot parse get the
//! same body ([`super::protocol_errors`]). A pipeline slot that failed on its own carries the same body
//! ([`ApiError::to_json`]) in its place.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::client::CallError;

/// The retry hint of a 503 `overloaded`.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown op `{0}`; see docs/api.md for the ops redguard offers")]
    UnknownOp(String),
    #[error("request body is larger than api.max_body_bytes ({0} bytes)")]
    PayloadTooLarge(usize),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("circuit breaker is open; Redis was not called")]
    /// `retry_after` is `None` while the circuit is forced open: it will not half-open by itself.
    CircuitOpen {
        retry_after: Option<Duration>,
        cached: bool,
    },
    #[error("Redis is unavailable: {message}")]
    RedisUnavailable { message: String, cached: bool },
    #[error("Redis did not answer within redis.command_timeout")]
    Timeout { cached: bool },
    #[error("{0}")]
    Redis(String),
    #[error("the value is not valid UTF-8; ask for it with \"encoding\": \"base64\"")]
    NotUtf8,
    #[error("the request body did not arrive within api.read_timeout")]
    RequestTimeout,
    #[error("peer uid {0} is not in listen.allowed_uids")]
    PeerNotAllowed(u32),
    #[error("command {0} is not allowed through redguard (api.commands)")]
    CommandDenied(String),
    /// The request bodies being read already hold `api.max_inflight_body_bytes`.
    #[error("too many request bytes in flight (api.max_inflight_body_bytes); retry shortly")]
    Overloaded,
    /// The request's header block did not fit hyper's read buffer.
    #[error("the request's header block is larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("the request target is too long")]
    UriTooLong,
    /// `POST /v1/reload` while no reload can run (redguard is shutting down).
    #[error("{0}")]
    ReloadUnavailable(String),
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::CircuitOpen { retry_after, cached } => ApiError::CircuitOpen { retry_after, cached },
            CallError::Unavailable { message, cached } => ApiError::RedisUnavailable { message, cached },
            CallError::Timeout { cached } => ApiError::Timeout { cached },
            CallError::Redis(message) => ApiError::Redis(message),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::UnknownOp(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::CircuitOpen { .. } | ApiError::RedisUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Redis(_) | ApiError::NotUtf8 => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PeerNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::CommandDenied(_) => StatusCode::FORBIDDEN,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::ReloadUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnknownOp(_) => "unknown_op",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::CircuitOpen { .. } => "circuit_open",
            ApiError::RedisUnavailable { .. } => "redis_unavailable",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Redis(_) => "redis_error",
            ApiError::NotUtf8 => "not_utf8",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::PeerNotAllowed(_) => "peer_not_allowed",
            ApiError::CommandDenied(_) => "command_denied",
            ApiError::Overloaded => "overloaded",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::ReloadUnavailable(_) => "reload_unavailable",
        }
    }

    fn retry_after_and_cached(&self) -> (Option<Duration>, Option<bool>) {
        match self {
            ApiError::CircuitOpen { retry_after, cached } => (*retry_after, Some(*cached)),
            ApiError::RedisUnavailable { cached, .. } | ApiError::Timeout { cached } => (None, Some(*cached)),
            // A body's share of the budget is released within api.read_timeout at the latest; most much sooner.
            ApiError::Overloaded => (Some(OVERLOADED_RETRY_AFTER), None),
            _ => (None, None),
        }
    }

    /// The error body, as a response carries it and as a pipeline slot does.
    pub fn to_json(&self) -> Vec<u8> {
        let message = self.to_string();
        let (retry_after, cached) = self.retry_after_and_cached();
        let body = Body {
            error: Detail {
                code: self.code(),
                message: &message,
                retry_after_ms: retry_after.map(|d| d.as_millis().max(1) as u64),
            },
            degraded: cached.map(|_| true),
            cached,
        };
        serde_json::to_vec(&body).expect("error bodies always serialize")
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached: Option<bool>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (retry_after, _) = self.retry_after_and_cached();
        let json = self.to_json();
        let mut response = (self.status(), [(header::CONTENT_TYPE, "application/json")], json).into_response();
        if let Some(d) = retry_after {
            // Whole seconds, rounded up: "0" would invite an immediate retry into a still-open circuit.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
