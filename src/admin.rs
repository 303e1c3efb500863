//! The admin listener: read-only HTTP on TCP for Prometheus and Kubernetes probes.
//!
//! It serves `/metrics`, the two health routes, `/livez` and `/readyz`, and nothing else: no route here changes
//! state or reads data, because this listener may be reachable from the pod network (`0.0.0.0:9190`). It is
//! served by the same bounded accept loop as the Unix socket ([`crate::api::server`]), with its own connection
//! limit and read timeout (`admin.max_connections`, `admin.read_timeout`), through [`AdminHandler`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;
use tower_service::Service;

use crate::api::server::Handler;
use crate::api::ApiError;
use crate::breaker::State as CircuitState;
use crate::{health, Client};

pub(crate) struct Admin {
    pub client: Arc<Client>,
    /// Set once the Unix socket is bound and served.
    pub socket_ready: AtomicBool,
    /// `admin.ready_requires_redis`: not ready while the breaker is open. A reload changes it.
    pub ready_requires_redis: AtomicBool,
    /// `admin.read_timeout`, which the admin accept loop reads for each connection; a reload changes it.
    pub read_timeout: crate::api::server::ReadTimeout,
}

pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route(
            "/api/v1/health/redis",
            get(|State(a): State<Arc<Admin>>| async move { Json(health::redis(&a.client)) }),
        )
        .route(
            "/api/v1/health/circuit-breaker",
            get(|State(a): State<Arc<Admin>>| async move { Json(health::circuit_breaker(&a.client)) }),
        )
        .fallback(|uri: Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(admin)
}

/// The admin listener's handler for one connection: the router.
pub(crate) struct AdminHandler(pub Router);

impl Handler for AdminHandler {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response> + Send + use<> {
        let mut router = self.0.clone();
        async move { router.call(req).await.unwrap_or_else(|e: Infallible| match e {}) }
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    // Refresh the mirrored gauges (state-derived figures, cache size) before rendering.
    let client = &admin.client;
    client.metrics().mirror(client.breaker(), client.cache());
    let body = client.metrics().render();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Answering at all shows the process is alive and its runtime is scheduling tasks.
async fn livez() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// With `admin.ready_requires_redis`, only an outage the breaker measured makes the pod unready: a circuit forced
/// open is an operator's choice for every pod at once (taking them all out of the Service would turn a
/// deliberate degradation into an outage), and observe mode turns no call away.
async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let listening = admin.socket_ready.load(Ordering::Acquire);
    let snapshot = admin.client.breaker().snapshot();
    let state = snapshot.state;
    let measured_open = state == CircuitState::Open && health::Status::of(&snapshot) == health::Status::Outage;
    let redis_blocks = admin.ready_requires_redis.load(Ordering::Relaxed) && measured_open;
    let ready = listening && !redis_blocks;
    let reason = if !listening {
        Some("the Unix socket is not listening yet")
    } else if redis_blocks {
        Some("the circuit is open and admin.ready_requires_redis is set")
    } else {
        None
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "circuit": state.as_str(),
        "mode": snapshot.mode.as_str(),
        "override": crate::metrics::override_name(snapshot.forced),
        "reason": reason,
    });
    (status, Json(body)).into_response()
}
