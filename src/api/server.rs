//! The accept loop of both listeners, the Unix socket and the admin TCP listener: HTTP/1.1 connections
//! (hyper's), bounded and guarded, each request answered by the listener's own handler.
//!
//! `axum::serve` offers no connection limit or read timeout, which a sidecar sharing a pod with code it does not
//! control needs (and the admin listener, reachable from the pod network, needs as much). So the loop is ours:
//! - at most `max_connections` connections are served at once; further clients wait in the kernel's listen
//!   backlog until one closes (back-pressure, not errors, and no descriptor held for them);
//! - a client must send a request's headers within `read_timeout` (idle keep-alive connections are closed after
//!   it too); a body has its own deadline in the handler;
//! - hyper's read buffer, which holds a request's header block, is capped at [`MAX_BUF_BYTES`] per connection;
//!   a larger header block gets 431, with the JSON error body like hyper's other own answers
//!   ([`super::protocol_errors`]);
//! - when a burst of connections has ended, the memory they held goes back to the kernel (`Bursts`);
//! - a failed accept (EMFILE and friends) or the limit being reached is logged once per [`LOG_INTERVAL`], with
//!   how often it happened, not once per attempt;
//! - on shutdown the loop stops accepting and in-flight requests finish; the caller bounds that wait;
//! - with [`Limits::saturation`], the open connections and the requests being answered are kept in gauges (an
//!   atomic add each, undone on drop so a cancelled request or a dropped connection is never left counted).
//!
//! On the Unix socket, with `listen.allowed_uids`, a peer whose uid (SO_PEERCRED) is not listed gets 403 on
//! every request, and the connection is closed after it ([`ApiHandler`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::protocol_errors::JsonErrors;
use super::{handle, ApiError, App};
use crate::metrics::{Counted, Saturation};
use crate::resources;

/// The most a connection's read buffer may hold, and so the largest header block (hyper's default is about
/// 400 KiB, which times `api.max_connections` is far more memory than the sidecar has). Request heads here are a
/// few hundred bytes; a body streams through the buffer in pieces of at most this size.
pub(crate) const MAX_BUF_BYTES: usize = 16 * 1024;

/// How often a failed accept, or a listener at its connection limit, is logged at most.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Limits of one accept loop, from the config.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The listener's name in logs: `api` or `admin`, like its config section.
    pub name: &'static str,
    pub max_connections: usize,
    pub read_timeout: ReadTimeout,
    /// Gauges for open connections and requests in flight (the Unix socket's; the admin listener keeps none).
    pub saturation: Option<Saturation>,
}

/// A read timeout a reload can change (`api.read_timeout`): each connection takes the value in force when it
/// is accepted. Shared by clones.
#[derive(Debug, Clone)]
pub(crate) struct ReadTimeout(Arc<AtomicU64>);

impl ReadTimeout {
    pub(crate) fn new(timeout: Duration) -> ReadTimeout {
        let shared = ReadTimeout(Arc::default());
        shared.set(timeout);
        shared
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, timeout: Duration) {
        self.0.store(
            u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// A listening socket the loop can serve.
pub(crate) trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Connections open at once that make a burst, after which freed memory is given back.
const BURST_CONNECTIONS: usize = 64;

/// Notices the end of a burst of connections: once as many as [`BURST_CONNECTIONS`] were open and at most a
/// quarter of that peak still are, the memory they held is given back to the kernel
/// ([`resources::release_free_memory`]). Steady traffic on pooled connections never triggers it.
#[derive(Debug, Default)]
struct Bursts {
    peak: AtomicUsize,
}

impl Bursts {
    /// Called with the number of open connections after one was accepted.
    fn opened(&self, open: usize) {
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    /// Called with the number of open connections after one closed; true when a burst just ended.
    fn closed(&self, open: usize) -> bool {
        let peak = self.peak.load(Ordering::Relaxed);
        if peak < BURST_CONNECTIONS || open > peak / 4 {
            return false;
        }
        self.peak.store(open, Ordering::Relaxed);
        true
    }
}

/// Answers the requests of one connection.
pub(crate) trait Handler: Send + 'static {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response> + Send + 'static + use<Self>;
}

/// Counts an event that is logged at most once per [`LOG_INTERVAL`], so a flood of failed accepts cannot
/// flood the log (or spend the CPU the requests need) too.
#[derive(Debug, Default)]
pub(crate) struct Throttled {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Throttled {
    /// Records one occurrence at `now`; returns how many occurred since the last log line (this one included)
    /// when a line is due.
    pub(crate) fn record(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// Serves `listener` until `shutdown` resolves, then waits for open connections to finish their in-flight
/// request (the caller bounds this). `handler_for` makes each accepted connection's request handler.
pub(crate) async fn serve<L: Listener, H: Handler>(
    listener: L,
    limits: Limits,
    handler_for: impl Fn(&L::Stream) -> H,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).max_buf_size(MAX_BUF_BYTES);
    let (mut failed_accepts, mut at_limit) = (Throttled::default(), Throttled::default());
    let bursts = Arc::new(Bursts::default());
    let max = limits.max_connections;
    let name = limits.name;
    if let Some(s) = &limits.saturation {
        s.max_connections.set(i64::try_from(max).unwrap_or(i64::MAX));
    }
    tokio::pin!(shutdown);

    loop {
        if slots.available_permits() == 0 {
            if let Some(times) = at_limit.record(Instant::now()) {
                warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    times,
                    "connection limit reached; new connections wait in the listen backlog"
                );
            }
        }
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    if let Some(times) = failed_accepts.record(Instant::now()) {
                        warn!(listener = name, error = %e, times, "accept failed");
                    }
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        bursts.opened(max - slots.available_permits());
        let open = limits.saturation.as_ref().map(|s| Counted::start(&s.connections));
        let inflight = limits.saturation.as_ref().map(|s| s.inflight.clone());
        let handler = handler_for(&stream);
        let service = service_fn(move |req| {
            let counted = inflight.as_ref().map(Counted::start);
            let answer = handler.call(req);
            async move {
                let response = answer.await;
                drop(counted);
                Ok::<_, Infallible>(response)
            }
        });
        let io = TokioIo::new(JsonErrors::new(stream, MAX_BUF_BYTES));
        http.header_read_timeout(limits.read_timeout.get());
        let conn = graceful.watch(http.serve_connection(io, service));
        let (slots, bursts) = (slots.clone(), bursts.clone());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
            drop(open);
            drop(slot);
            if bursts.closed(max - slots.available_permits()) {
                resources::release_free_memory();
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The Unix socket's handler for one connection: the API, or 403 on every request for a peer not in
/// `listen.allowed_uids`.
pub(crate) struct ApiHandler {
    app: Arc<App>,
    refused: Option<u32>,
}

impl ApiHandler {
    /// The peer is judged once, when it connects, by the `listen.allowed_uids` in force then.
    pub(crate) fn new(app: Arc<App>, stream: &UnixStream) -> ApiHandler {
        let refused = peer_uid_refused(stream, app.settings().allowed_uids.as_deref());
        if let Some(uid) = refused {
            debug!(uid, "peer uid not in listen.allowed_uids");
        }
        ApiHandler { app, refused }
    }
}

impl Handler for ApiHandler {
    fn call(&self, req: Request<Incoming>) -> impl Future<Output = Response> + Send + use<> {
        let (app, refused) = (self.app.clone(), self.refused);
        async move {
            match refused {
                None => handle(&app, req).await,
                Some(uid) => {
                    // Closed after the answer: a refused peer must not keep connection slots for itself.
                    let mut response = ApiError::PeerNotAllowed(uid).into_response();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    response
                }
            }
        }
    }
}

/// The peer's uid if `allowed` is set and does not contain it (or the uid cannot be read).
pub(crate) fn peer_uid_refused(stream: &UnixStream, allowed: Option<&[u32]>) -> Option<u32> {
    let allowed = allowed?;
    match stream.peer_cred() {
        Ok(cred) if allowed.contains(&cred.uid()) => None,
        Ok(cred) => Some(cred.uid()),
        Err(_) => Some(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ends_once_most_of_its_connections_have_closed() {
        let b = Bursts::default();
        for open in 1..=BURST_CONNECTIONS {
            b.opened(open);
        }
        assert!(!b.closed(BURST_CONNECTIONS / 2), "half still open");
        assert!(b.closed(BURST_CONNECTIONS / 4), "a quarter left: the burst is over");
        assert!(!b.closed(0), "and it ends once");
        // Steady traffic below the burst size never counts as one.
        let steady = Bursts::default();
        steady.opened(BURST_CONNECTIONS - 1);
        assert!(!steady.closed(0));
    }

    #[test]
    fn a_flood_is_logged_once_per_interval_with_its_count() {
        let mut t = Throttled::default();
        let start = Instant::now();
        assert_eq!(t.record(start), Some(1), "the first is logged at once");
        for i in 1..=293 {
            assert_eq!(t.record(start + Duration::from_millis(i)), None);
        }
        assert_eq!(
            t.record(start + LOG_INTERVAL),
            Some(294),
            "then one line with the count"
        );
        assert_eq!(t.record(start + LOG_INTERVAL + Duration::from_secs(1)), None);
    }
}
