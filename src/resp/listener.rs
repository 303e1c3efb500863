//! The RESP socket's accept loop: the same rules as the JSON socket's (`api.max_connections` connections at
//! once, further clients waiting in the listen backlog; `listen.allowed_uids` judged when a peer connects),
//! and an explicit shutdown: stop accepting, let each connection finish the batch it is answering, then close.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::warn;

use super::conn;
use super::Resp;
use crate::api::server::{peer_uid_refused, Throttled};
use crate::metrics::Counted;

/// Either listener the RESP socket can serve.
pub(crate) enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Serves `listener` until `shutdown` resolves; then waits for open connections to finish the batch they are
/// answering (the caller bounds that wait).
pub(crate) async fn serve(resp: Arc<Resp>, listener: Listener, shutdown: impl Future<Output = ()>) {
    let max = resp.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let saturation = resp.client.metrics().resp_saturation.clone();
    saturation.max_connections.set(i64::try_from(max).unwrap_or(i64::MAX));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let (mut failed_accepts, mut at_limit) = (Throttled::default(), Throttled::default());
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 {
            if let Some(times) = at_limit.record(Instant::now()) {
                warn!(
                    listener = "resp",
                    max_connections = max,
                    times,
                    "connection limit reached; new connections wait in the listen backlog"
                );
            }
        }
        // Reap finished connections so the set does not grow with every client that came and went.
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                if let Some(times) = failed_accepts.record(Instant::now()) {
                    warn!(listener = "resp", error = %e, times, "accept failed");
                }
                // EMFILE and friends: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (resp, stop) = (resp.clone(), stop_rx.clone());
        let open = Counted::start(&saturation.connections);
        conns.spawn(async move {
            match stream {
                Stream::Unix(s) => {
                    let refused = peer_uid_refused(&s, resp.app.settings().allowed_uids.as_deref());
                    run_one(resp, s, refused, stop).await
                }
                // Loopback TCP carries no peer uid: `listen.resp_tcp` is for clients that cannot dial a socket,
                // and the docs say it bypasses `listen.allowed_uids`.
                Stream::Tcp(s) => run_one(resp, s, None, stop).await,
            }
            drop((slot, open));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Stream> {
    match listener {
        Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
    }
}

async fn run_one<S: AsyncRead + AsyncWrite + Unpin>(
    resp: Arc<Resp>,
    mut stream: S,
    refused: Option<u32>,
    stop: watch::Receiver<bool>,
) {
    if let Some(uid) = refused {
        let line = format!("-NOPERM redguard: peer uid {uid} is not in listen.allowed_uids\r\n");
        let _ = stream.write_all(line.as_bytes()).await;
        return;
    }
    conn::Connection::new(resp).run(stream, stop).await;
}
