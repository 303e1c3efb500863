//! The accept loop of the Unix socket: HTTP/1.1 connections (hyper's), bounded and guarded, each request
//! answered by [`super::handle`].
//!
//! `axum::serve` offers no connection limit, read timeout or peer check, which a sidecar sharing a pod with
//! code it does not control needs. So the loop is ours:
//! - at most `api.max_connections` connections are served at once; further clients wait in the kernel's
//!   listen backlog until one closes (back-pressure, not errors);
//! - a client must send a request's headers within `api.read_timeout` (idle keep-alive connections are closed
//!   after it too); the body has its own deadline in the handler;
//! - with `listen.allowed_uids`, a peer whose uid (SO_PEERCRED) is not listed gets 403 on every request;
//! - on shutdown the loop stops accepting and in-flight requests finish; the caller bounds that wait.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{handle, ApiError, App};

/// Limits of the accept loop, from the config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub read_timeout: Duration,
    pub allowed_uids: Option<Vec<u32>>,
}

/// Serves the API to `listener` until `shutdown` resolves, then waits for open connections to finish their
/// in-flight request (the caller bounds this with `listen.drain_timeout`).
pub async fn serve(listener: UnixListener, app: Arc<App>, limits: Limits, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.read_timeout);
    tokio::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let refused = peer_uid_refused(&stream, limits.allowed_uids.as_deref());
        if let Some(uid) = refused {
            debug!(uid, "peer uid not in listen.allowed_uids");
        }
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move {
                Ok::<_, Infallible>(match refused {
                    None => handle(&app, req).await,
                    Some(uid) => ApiError::PeerNotAllowed(uid).into_response(),
                })
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The peer's uid if `allowed` is set and does not contain it (or the uid cannot be read).
fn peer_uid_refused(stream: &tokio::net::UnixStream, allowed: Option<&[u32]>) -> Option<u32> {
    let allowed = allowed?;
    match stream.peer_cred() {
        Ok(cred) if allowed.contains(&cred.uid()) => None,
        Ok(cred) => Some(cred.uid()),
        Err(_) => Some(u32::MAX),
    }
}
