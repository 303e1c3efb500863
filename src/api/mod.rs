//! The application-facing API: HTTP/1.1 + JSON on a Unix socket.
//!
//! Routes are thin: they parse ([`request`], [`command`], [`pipeline`], [`ratelimit`]), ask the command policy,
//! call the resilient client or the rate limiter, and render ([`reply`], [`raw_reply`]); every failure is an
//! [`ApiError`], shaped into a response in one place. The policy judges every command an application sends,
//! typed ops by the command they send. The control routes (`/v1/breaker`) exist only here, never on a
//! network listener.

pub(crate) mod command;
pub(crate) mod error;
pub(crate) mod pipeline;
pub(crate) mod protocol_errors;
pub(crate) mod ratelimit;
pub(crate) mod raw_reply;
pub mod reply;
pub mod request;
pub(crate) mod server;
pub(crate) mod socket;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

pub use error::ApiError;

use crate::backend::{AnyBackend, NodeView};
use crate::breaker::{Override, State as CircuitState};
use crate::client::{Item, Reply, Served, Source};
use crate::clock::SystemClock;
use crate::config::{Config, OnUnavailable, RedisMode};
use crate::metrics::ApiRoute;
use crate::op::OpName;
use crate::policy::Policy;
use crate::ratelimit::RateLimiter;
use crate::{commands, health, reload, Client};

/// What the routes share.
pub struct App {
    pub client: Arc<Client>,
    /// `api.max_inflight_body_bytes`: one permit per byte that request bodies being read may hold together.
    body_budget: Semaphore,
    /// `api.read_timeout`: the deadline of a request's headers (the accept loop's) and of its body (here).
    pub(crate) read_timeout: server::ReadTimeout,
    /// What a reload may change, replaced as a whole ([`App::reconfigure`]): a request reads the settings of
    /// one config, never half of two.
    settings: ArcSwap<Settings>,
    pub ratelimiter: RateLimiter<AnyBackend>,
    /// `redis.mode: cluster`: a pipeline must keep to one slot.
    pub cluster: bool,
    /// Where `POST /v1/reload` sends its request; none in tests that build an App without a reload task.
    reloads: Option<reload::Requests>,
}

/// The API settings a config reload applies live (docs/configuration.md marks them).
pub struct Settings {
    pub max_body_bytes: usize,
    pub limits: request::Limits,
    pub max_pipeline_commands: usize,
    /// `api.on_unavailable`: what a non-read answers while Redis is unavailable, unless its request says.
    pub on_unavailable: OnUnavailable,
    policy: Policy,
    /// The policy's verdict on each typed op, by `OpName::index`: a typed op always sends the same command, so
    /// it is judged once per config instead of on every request.
    op_denied: Vec<Option<String>>,
    /// `listen.allowed_uids`: judged when a peer connects.
    pub allowed_uids: Option<Vec<u32>>,
}

impl Settings {
    /// The command policy in force (`api.commands`), which the RESP socket applies too.
    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn new(cfg: &Config) -> Settings {
        let commands = &cfg.api.commands;
        let policy = Policy::from_config(&commands.deny, commands.allow.as_deref());
        Settings {
            max_body_bytes: cfg.api.max_body_bytes,
            limits: request::Limits {
                max_key_bytes: cfg.api.max_key_bytes,
                max_value_bytes: cfg.api.max_value_bytes,
            },
            max_pipeline_commands: cfg.api.max_pipeline_commands,
            on_unavailable: cfg.api.on_unavailable,
            allowed_uids: cfg.listen.allowed_uids.clone(),
            op_denied: OpName::ALL
                .iter()
                .map(|op| policy.check(&[op.command()]).err().map(|d| d.command))
                .collect(),
            policy,
        }
    }
}

impl App {
    /// The routes' shared state, from the config. `reloads` is where `POST /v1/reload` asks for a reload.
    pub fn new(client: Arc<Client>, cfg: &Config, reloads: Option<reload::Requests>) -> App {
        App {
            body_budget: Semaphore::new(cfg.api.max_inflight_body_bytes.min(Semaphore::MAX_PERMITS)),
            read_timeout: server::ReadTimeout::new(cfg.api.read_timeout),
            settings: ArcSwap::from_pointee(Settings::new(cfg)),
            ratelimiter: RateLimiter::new(client.clone(), &cfg.ratelimit, Arc::new(SystemClock)),
            cluster: cfg.redis.mode == RedisMode::Cluster,
            client,
            reloads,
        }
    }

    /// The settings in effect. A cheap, allocation-free load; keep it for the synchronous part of a request.
    pub fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// Applies a reloaded config's live API keys: requests that start from now on see them all; requests in
    /// flight finish on the settings they started with.
    pub fn reconfigure(&self, cfg: &Config) {
        self.settings.store(Arc::new(Settings::new(cfg)));
        self.read_timeout.set(cfg.api.read_timeout);
        self.ratelimiter.reconfigure(&cfg.ratelimit);
    }
}

/// Each body's first bytes are not counted against `api.max_inflight_body_bytes`, so that while large bodies
/// hold the whole budget, ordinary requests (a few hundred bytes) are still served. Their worst case,
/// `api.max_connections` times this, is part of each connection's own memory, like its read buffer.
pub const UNCOUNTED_BODY_BYTES: usize = 8 * 1024;

/// A request body, with its share of `api.max_inflight_body_bytes` held until it is dropped (after the
/// request is answered: parsed requests borrow from it).
pub struct Body<'a> {
    bytes: BodyBytes,
    _share: Option<SemaphorePermit<'a>>,
}

/// A body that arrived in one piece stays the buffer hyper read it into; one in several pieces is copied into
/// one buffer as it arrives (each piece freed at once), sized from `Content-Length` when there is one.
enum BodyBytes {
    One(Bytes),
    Many(Vec<u8>),
}

impl std::ops::Deref for Body<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            BodyBytes::One(b) => b,
            BodyBytes::Many(v) => v,
        }
    }
}

/// Reads a whole body, refusing it past `api.max_body_bytes` (413), when its share of
/// `api.max_inflight_body_bytes` is not free (503 `overloaded`), or when it does not arrive within
/// `api.read_timeout` (408: a client trickling bytes must not hold a connection slot forever).
///
/// A declared `Content-Length` is judged before a byte is read: over the limit it is 413 at once, and over the
/// budget 503 at once; hyper sends `100 Continue` only when the body is first read, so a client that asked
/// first is told without sending the body. A body without a length draws on the budget as it arrives.
async fn read_body<'a>(app: &'a App, max: usize, body: impl RequestBody) -> Result<Body<'a>, ApiError> {
    let hint = body.size_hint();
    if hint.lower() > max as u64 {
        return Err(ApiError::PayloadTooLarge(max));
    }
    let declared = hint.exact().map(|n| n as usize);
    let mut share = None;
    reserve(&app.body_budget, &mut share, declared.unwrap_or(0))?;
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut bytes = BodyBytes::Many(Vec::new());
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::BadRequest(format!("could not read the request body: {}", e.into())))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            len += data.len();
            if len > max {
                return Err(ApiError::PayloadTooLarge(max));
            }
            reserve(&app.body_budget, &mut share, len)?;
            bytes = match bytes {
                BodyBytes::Many(v) if v.is_empty() && len == data.len() => BodyBytes::One(data),
                BodyBytes::One(first) => {
                    let mut v = Vec::with_capacity(declared.unwrap_or(len).max(len));
                    v.extend_from_slice(&first);
                    v.extend_from_slice(&data);
                    BodyBytes::Many(v)
                }
                BodyBytes::Many(mut v) => {
                    v.extend_from_slice(&data);
                    BodyBytes::Many(v)
                }
            };
        }
        Ok(bytes)
    };
    match tokio::time::timeout(app.read_timeout.get(), read).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(bytes)) => Ok(Body { bytes, _share: share }),
    }
}

/// Grows `share` of the body budget to cover a body of `len` bytes (its uncounted first bytes aside), or
/// refuses with 503 `overloaded` without waiting: a client told to come back is better than one kept waiting
/// while others trickle their bodies.
fn reserve<'a>(budget: &'a Semaphore, share: &mut Option<SemaphorePermit<'a>>, len: usize) -> Result<(), ApiError> {
    let counted = len.saturating_sub(UNCOUNTED_BODY_BYTES);
    let held = share.as_ref().map_or(0, SemaphorePermit::num_permits);
    if counted <= held {
        return Ok(());
    }
    // Configuration caps api.max_body_bytes at u32::MAX, and len never exceeds it.
    let more = u32::try_from(counted - held).map_err(|_| ApiError::Overloaded)?;
    let permit = budget.try_acquire_many(more).map_err(|_| ApiError::Overloaded)?;
    match share {
        Some(held) => held.merge(permit),
        None => *share = Some(permit),
    }
    Ok(())
}

/// Reads the body (bounded in size and time), runs it through `run`, and records the request's route,
/// status and duration.
macro_rules! timed {
    ($app:expr, $body:expr, $run:ident) => {{
        let started = Instant::now();
        // One load of the settings per request: the body limit and the route see the same config.
        let settings = $app.settings.load_full();
        let (route, response) = match read_body($app, settings.max_body_bytes, $body).await {
            Ok(body) => $run($app, &settings, &body).await,
            Err(e) => (ApiRoute::Invalid, e.into_response()),
        };
        let status = response.status().as_u16();
        $app.client
            .metrics()
            .observe_api(route, status, started.elapsed().as_secs_f64());
        response
    }};
}

/// What a request body may be: hyper's on the socket, any buffered body in tests.
pub trait RequestBody: hyper::body::Body<Data = Bytes, Error: Into<axum::BoxError>> {}
impl<B: hyper::body::Body<Data = Bytes, Error: Into<axum::BoxError>>> RequestBody for B {}

/// Answers one request. The API is a handful of fixed routes, so a `match` on the path and the method is the
/// whole router: it reads as the route table, and spares every request the generic router's work (its route
/// lookup, a boxed future and extension map per request: about a tenth of a GET's instructions, see
/// BENCHMARKS.md, change 11). `HEAD` is answered like `GET`, without the body; a known path with another
/// method gets 405 with `Allow`.
pub async fn handle(app: &App, req: Request<impl RequestBody>) -> Response {
    let (parts, body) = req.into_parts();
    let method = &parts.method;
    let read = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match parts.uri.path() {
        "/v1/cmd" if post => timed!(app, body, run_cmd),
        "/v1/command" if post => timed!(app, body, run_command),
        "/v1/pipeline" if post => timed!(app, body, run_pipeline),
        "/v1/ratelimit" if post => timed!(app, body, run_ratelimit),
        "/v1/breaker" if read => breaker_get(app),
        "/v1/breaker" if post => breaker_post(app, body).await,
        "/v1/reload" if post => reload_post(app, body).await,
        "/api/v1/health/redis" if read => {
            observe(app, ApiRoute::Health, 200);
            Json(health::redis(&app.client)).into_response()
        }
        "/api/v1/health/circuit-breaker" if read => {
            observe(app, ApiRoute::Health, 200);
            Json(health::circuit_breaker(&app.client)).into_response()
        }
        "/v1/cmd" | "/v1/command" | "/v1/pipeline" | "/v1/ratelimit" => method_not_allowed("POST"),
        "/v1/breaker" => method_not_allowed("GET,HEAD,POST"),
        "/v1/reload" => method_not_allowed("POST"),
        "/api/v1/health/redis" | "/api/v1/health/circuit-breaker" => method_not_allowed("GET,HEAD"),
        path => ApiError::NotFound(path.to_owned()).into_response(),
    }
}

/// 405, with the methods the route takes (RFC 9110 asks for `Allow`).
fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = ApiError::MethodNotAllowed.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A 200 with a rendered JSON body. Built by hand rather than from axum's tuple parts, which validate the
/// header value on every call (a few hundred instructions per request).
fn json(body: Vec<u8>) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The policy's verdict on a typed op (judged once, when the config was read).
fn permit_op(settings: &Settings, op: OpName) -> Result<(), ApiError> {
    match &settings.op_denied[op.index()] {
        Some(command) => Err(ApiError::CommandDenied(command.clone())),
        None => Ok(()),
    }
}

/// Asks the policy about one command, whose name's [`commands::position`] the caller has found; a refusal names
/// it.
fn permit<A: AsRef<[u8]>>(settings: &Settings, position: Option<usize>, args: &[A]) -> Result<(), ApiError> {
    settings
        .policy
        .check_at(position, args)
        .map_err(|d| ApiError::CommandDenied(d.command))
}

async fn run_cmd(app: &App, settings: &Settings, body: &[u8]) -> (ApiRoute, Response) {
    let req = match request::parse(body, &settings.limits) {
        Ok(req) => req,
        Err(e) => return (ApiRoute::Invalid, e.into_response()),
    };
    let route = ApiRoute::Op(req.op.name());
    if let Err(e) = permit_op(settings, req.op.name()) {
        return (route, e.into_response());
    }
    let on_unavailable = req.on_unavailable.unwrap_or(settings.on_unavailable);
    let response = match app.client.execute(&req.op, on_unavailable).await {
        Ok(served) => match reply::render(&served, req.encoding, req.default) {
            Ok(body) => json(body),
            Err(e) => e.into_response(),
        },
        Err(e) => ApiError::from(e).into_response(),
    };
    (route, response)
}

async fn run_command(app: &App, settings: &Settings, body: &[u8]) -> (ApiRoute, Response) {
    let c = match command::parse(body) {
        Ok(c) => c,
        Err(e) => return (ApiRoute::Invalid, e.into_response()),
    };
    // Found once, for the policy and for what the command may have changed in the cache.
    let position = c.args.first().and_then(|name| commands::position(name));
    if let Err(e) = permit(settings, position, &c.args) {
        return (ApiRoute::Command, e.into_response());
    }
    let response = match app.client.execute_raw(&c.args, position).await {
        Ok(value) => {
            let served = Served {
                reply: Reply::Raw(value),
                source: Source::Redis,
                cached: false,
            };
            match reply::render(&served, c.encoding, None) {
                Ok(body) => json(body),
                Err(e) => e.into_response(),
            }
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    (ApiRoute::Command, response)
}

async fn run_pipeline(app: &App, settings: &Settings, body: &[u8]) -> (ApiRoute, Response) {
    let p = match pipeline::parse(body, settings.max_pipeline_commands, &settings.limits) {
        Ok(p) => p,
        Err(e) => return (ApiRoute::Invalid, e.into_response()),
    };
    for item in &p.items {
        let judged = match item {
            Item::Op(op) => permit_op(settings, op.name()),
            Item::Raw { args, position } => permit(settings, *position, args),
        };
        if let Err(e) = judged {
            return (ApiRoute::Pipeline, e.into_response());
        }
    }
    if app.cluster {
        if let Err(e) = one_slot(&p.items) {
            return (ApiRoute::Pipeline, e.into_response());
        }
    }
    let response = match app.client.execute_pipeline(&p.items, p.atomic).await {
        Ok(answers) => json(pipeline::render(&p.shapes, &answers)),
        Err(e) => ApiError::from(e).into_response(),
    };
    (ApiRoute::Pipeline, response)
}

async fn run_ratelimit(app: &App, settings: &Settings, body: &[u8]) -> (ApiRoute, Response) {
    let check = match ratelimit::parse(body, settings.limits.max_key_bytes) {
        Ok(c) => c,
        Err(e) => return (ApiRoute::Invalid, e.into_response()),
    };
    let response = match app.ratelimiter.check(&check.key, &check.limit).await {
        Ok(decision) => json(ratelimit::render(&decision)),
        Err(e) => ApiError::from(e).into_response(),
    };
    (ApiRoute::RateLimit, response)
}

/// Cluster mode sends a pipeline to one node in one round trip, so its keys must share a slot; a pipeline that
/// spans slots is the caller's mistake, answered before anything is sent.
fn one_slot(items: &[Item<'_>]) -> Result<(), ApiError> {
    let mut first: Option<(usize, u16)> = None;
    for (i, item) in items.iter().enumerate() {
        let slot = match item {
            Item::Op(op) => commands::slot(&op.to_cmd()),
            Item::Raw { args, .. } => commands::slot(args.as_slice()),
        };
        match (first, slot) {
            (None, Some(slot)) => first = Some((i, slot)),
            (Some((j, a)), Some(b)) if a != b => {
                return Err(ApiError::BadRequest(format!(
                    "field `commands`: in cluster mode a pipeline's keys must share one slot; command {j} uses \
                     slot {a}, command {i} slot {b} (use hash tags such as {{user:1}})"
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `GET /v1/breaker` and the answer to `POST /v1/breaker`: the sidecar-wide breaker, and in cluster mode each
/// master's own (`nodes`; absent, not null, in the other modes, so their answer keeps its shape).
#[derive(Serialize)]
struct BreakerView {
    state: &'static str,
    failure_count: u32,
    seconds_until_half_open: Option<f64>,
    forced: Option<&'static str>,
    mode: &'static str,
    /// The manual override in force, `none`, `force_open` or `force_closed`, named as the health JSON and the
    /// `redguard_circuit_override` gauge name it, so one word means one thing wherever an operator reads it.
    #[serde(rename = "override")]
    override_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeView>>,
}

fn breaker_view(client: &Client) -> BreakerView {
    let b = client.breaker();
    let s = b.snapshot();
    BreakerView {
        state: s.state.as_str(),
        failure_count: s.consecutive_failures,
        seconds_until_half_open: s.until_half_open.map(|d| d.as_secs_f64()),
        forced: s.forced.map(CircuitState::as_str),
        mode: b.settings().mode.as_str(),
        override_: crate::metrics::override_name(s.forced),
        nodes: client.nodes(),
    }
}

fn breaker_get(app: &App) -> Response {
    observe(app, ApiRoute::Breaker, 200);
    Json(breaker_view(&app.client)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerAction {
    action: String,
}

async fn breaker_post(app: &App, body: impl RequestBody) -> Response {
    let max = app.settings().max_body_bytes;
    let body = read_body(app, max, body).await;
    let result = body.and_then(|body| {
        // The same reader as every other body: one JSON object, each field once, nothing after it.
        let req: BreakerAction = request::deserialize(&body)?;
        match req.action.as_str() {
            "force_open" => Ok(Override::ForceOpen),
            "force_closed" => Ok(Override::ForceClosed),
            "reset" => Ok(Override::Reset),
            other => Err(ApiError::BadRequest(format!(
                "field `action`: unknown action `{other}`, expected force_open, force_closed or reset"
            ))),
        }
    });
    let response = match result {
        Ok(action) => {
            app.client.breaker().apply(action);
            tracing::warn!(action = action.as_str(), "manual breaker override");
            Json(breaker_view(&app.client)).into_response()
        }
        Err(e) => e.into_response(),
    };
    observe(app, ApiRoute::Breaker, response.status().as_u16());
    response
}

/// `POST /v1/reload` takes no fields: an empty body or `{}`, anything else is refused like any other body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {}

/// `POST /v1/reload`: reloads the config file now and answers the outcome ([`reload::Outcome`]): 200 with the
/// keys that changed, 422 with every validation error, or 409 with the keys that need a restart.
async fn reload_post(app: &App, body: impl RequestBody) -> Response {
    let max = app.settings().max_body_bytes;
    let body = read_body(app, max, body).await.and_then(|body| {
        if !body.iter().all(u8::is_ascii_whitespace) {
            request::deserialize::<ReloadRequest>(&body)?;
        }
        Ok(())
    });
    let response = match (body, &app.reloads) {
        (Err(e), _) => e.into_response(),
        (Ok(_), None) => ApiError::ReloadUnavailable("live reload is not running".into()).into_response(),
        (Ok(_), Some(reloads)) => match reloads.reload(reload::Trigger::Api).await {
            None => ApiError::ReloadUnavailable("redguard is shutting down".into()).into_response(),
            Some(outcome) => {
                let status = match outcome {
                    reload::Outcome::Success { .. } => axum::http::StatusCode::OK,
                    reload::Outcome::Invalid { .. } => axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    reload::Outcome::RestartRequired { .. } => axum::http::StatusCode::CONFLICT,
                };
                (status, Json(outcome)).into_response()
            }
        },
    };
    observe(app, ApiRoute::Reload, response.status().as_u16());
    response
}

fn observe(app: &App, route: ApiRoute, status: u16) {
    app.client.metrics().observe_api(route, status, 0.0);
}
