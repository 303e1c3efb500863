//! Subscriptions on the RESP socket: a client that sends `SUBSCRIBE` or `PSUBSCRIBE` gets a Redis pub/sub
//! connection of its own for as long as it stays subscribed (one of `resp.max_dedicated_connections`).
//!
//! While subscribed, the connection carries two streams at once, as Redis's does: the client's
//! (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT / RESET, each confirmed in Redis's shape
//! (`["subscribe", channel, count]`), and the messages Redis publishes (`["message", channel, payload]`,
//! `["pmessage", pattern, channel, payload]`; RESP3 pushes after `HELLO 3`). Unsubscribed from everything,
//! the connection returns to ordinary commands and gives its pub/sub connection back. The breaker judges the
//! connecting like any call; if Redis drops the pub/sub connection, the client's connection is closed, which is
//! what a client library reconnects and resubscribes on (Redis going away looks the same).

use std::collections::BTreeSet;

use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::conn::Connection;
use super::encode::{Out, Proto};
use super::forward;
use super::local::After;
use crate::metrics::RespResult;

/// The subscriptions of one client.
#[derive(Default)]
struct Subscribed {
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
}

impl Subscribed {
    fn count(&self) -> i64 {
        (self.channels.len() + self.patterns.len()) as i64
    }
}

/// What ended subscribed mode.
pub(super) enum Left {
    /// Unsubscribed from everything (or RESET): back to ordinary commands.
    Unsubscribed,
    /// QUIT, a protocol error, Redis dropping the pub/sub connection, the client leaving, or shutdown.
    Close,
}

impl Connection {
    /// Runs subscribed mode, starting with `first` (the SUBSCRIBE or PSUBSCRIBE that began it), until the client
    /// leaves it. Replies go to `self.out`, written here.
    pub(super) async fn subscribed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        buf: &mut BytesMut,
        first: Vec<Vec<u8>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Left {
        let resp = self.resp.clone();
        let started = std::time::Instant::now();
        let Ok(_slot) = resp.dedicated.try_acquire() else {
            self.out.error(
                "ERR",
                &format!(
                    "redguard: all {} connections of their own (resp.max_dedicated_connections) are in use; try again",
                    resp.max_dedicated
                ),
            );
            return Left::Unsubscribed;
        };
        let (mut sink, mut messages) = match resp.client.open_pubsub().await {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                let result = forward::call_error(&mut self.out, &e);
                record(self, &first, result, started);
                return Left::Unsubscribed;
            }
        };
        let mut subs = Subscribed::default();
        if let Err(left) = self.subscription(&mut sink, &mut subs, &first).await {
            return left;
        }
        loop {
            if !self.out.buf.is_empty() {
                if stream.write_all(&self.out.buf).await.is_err() {
                    return Left::Close;
                }
                self.out.written();
            }
            if subs.count() == 0 {
                return Left::Unsubscribed;
            }
            buf.reserve(16 * 1024);
            tokio::select! {
                message = messages.next() => match message {
                    Some(m) => push_message(&mut self.out, &m),
                    // Redis dropped the connection: the client learns it the way it would from Redis.
                    None => return Left::Close,
                },
                read = stream.read_buf(buf) => match read {
                    Ok(0) | Err(_) => return Left::Close,
                    Ok(_) => {
                        if let Some(left) = self.subscribed_requests(&mut sink, &mut subs, buf).await {
                            return left;
                        }
                    }
                },
                // Mapped to (): the guard `wait_for` answers must not live on into the other arms' awaits.
                () = async { let _ = stop.wait_for(|s| *s).await; } => return Left::Close,
            }
            drain_ready(&mut messages, &mut self.out);
        }
    }

    /// The complete requests in `buf` while subscribed.
    async fn subscribed_requests(
        &mut self,
        sink: &mut PubSubSink,
        subs: &mut Subscribed,
        buf: &mut BytesMut,
    ) -> Option<Left> {
        loop {
            let request = match self.reader.next(buf) {
                Ok(Some(request)) => request,
                Ok(None) => return None,
                Err(e) => {
                    self.out.error("ERR", &format!("Protocol error: {e}"));
                    return Some(Left::Close);
                }
            };
            let args: Vec<Vec<u8>> = request.args.iter().map(|r| buf[r.clone()].to_vec()).collect();
            buf.advance(request.len);
            if args.is_empty() {
                continue;
            }
            if let Err(left) = self.subscription(sink, subs, &args).await {
                return Some(left);
            }
            if subs.count() == 0 {
                return Some(Left::Unsubscribed);
            }
        }
    }

    /// One command while subscribed.
    async fn subscription(
        &mut self,
        sink: &mut PubSubSink,
        subs: &mut Subscribed,
        args: &[Vec<u8>],
    ) -> Result<(), Left> {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let started = std::time::Instant::now();
        let result = match name.as_str() {
            "SUBSCRIBE" | "PSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" => {
                let pattern = name.starts_with('P');
                let adding = !name.contains("UNSUB");
                let set = if pattern {
                    &mut subs.patterns
                } else {
                    &mut subs.channels
                };
                // UNSUBSCRIBE with no channel leaves every one; SUBSCRIBE needs one.
                let targets: Vec<Vec<u8>> = match (args.len() > 1, adding) {
                    (true, _) => args[1..].to_vec(),
                    (false, false) => set.iter().cloned().collect(),
                    (false, true) => {
                        let command = name.to_ascii_lowercase();
                        self.out
                            .error("ERR", &format!("wrong number of arguments for '{command}' command"));
                        return Ok(());
                    }
                };
                if targets.is_empty() {
                    confirm(&mut self.out, &name.to_ascii_lowercase(), None, subs.count());
                }
                for target in targets {
                    if let Err(e) = change(sink, &name, &target).await {
                        self.out
                            .error("UNAVAILABLE", &format!("redguard: Redis unavailable: {e}"));
                        return Err(Left::Close);
                    }
                    let set = if pattern {
                        &mut subs.patterns
                    } else {
                        &mut subs.channels
                    };
                    if adding {
                        set.insert(target.clone());
                    } else {
                        set.remove(&target);
                    }
                    confirm(&mut self.out, &name.to_ascii_lowercase(), Some(&target), subs.count());
                }
                RespResult::Ok
            }
            "PING" => {
                match self.out.proto {
                    Proto::Resp3 => self.out.simple("PONG"),
                    Proto::Resp2 => {
                        self.out.array(2);
                        self.out.bulk(b"pong");
                        self.out.bulk(args.get(1).map_or(&b""[..], Vec::as_slice));
                    }
                }
                RespResult::Ok
            }
            "QUIT" => {
                self.out.ok();
                return Err(Left::Close);
            }
            "RESET" => {
                self.session.reset(&mut self.out);
                self.out.simple("RESET");
                subs.channels.clear();
                subs.patterns.clear();
                return Err(Left::Unsubscribed);
            }
            _ => {
                self.out.error(
                    "ERR",
                    &format!(
                        "Can't execute '{}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT / RESET are allowed in \
                         this context",
                        name.to_ascii_lowercase()
                    ),
                );
                RespResult::RedisError
            }
        };
        record(self, args, result, started);
        Ok(())
    }
}

/// Sends one (un)subscription (`name` is the command, uppercase) on the client's pub/sub connection.
async fn change(sink: &mut PubSubSink, name: &str, target: &[u8]) -> redis::RedisResult<()> {
    match name {
        "SUBSCRIBE" => sink.subscribe(target).await,
        "PSUBSCRIBE" => sink.psubscribe(target).await,
        "UNSUBSCRIBE" => sink.unsubscribe(target).await,
        _ => sink.punsubscribe(target).await,
    }
}

fn record(conn: &Connection, args: &[Vec<u8>], result: RespResult, started: std::time::Instant) {
    let command = crate::commands::position(&args[0]);
    conn.resp
        .client
        .metrics()
        .observe_resp(command, result, started.elapsed().as_secs_f64());
}

/// `["subscribe", channel, count]` and its kin, as a push in RESP3.
fn confirm(out: &mut Out, kind: &str, target: Option<&Vec<u8>>, count: i64) {
    out.push(3);
    out.bulk(kind.as_bytes());
    match target {
        Some(t) => out.bulk(t),
        None => out.nil(),
    }
    out.int(count);
}

fn push_message(out: &mut Out, m: &redis::Msg) {
    let channel: Vec<u8> = m.get_channel().unwrap_or_default();
    match m.get_pattern::<Vec<u8>>() {
        Ok(pattern) if m.from_pattern() => {
            out.push(4);
            out.bulk(b"pmessage");
            out.bulk(&pattern);
        }
        _ => {
            out.push(3);
            out.bulk(b"message");
        }
    }
    out.bulk(&channel);
    out.bulk(m.get_payload_bytes());
}

/// Messages already received, written in the same batch as the one that woke the loop.
fn drain_ready(messages: &mut PubSubStream, out: &mut Out) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..256 {
        match messages.poll_next_unpin(&mut cx) {
            std::task::Poll::Ready(Some(m)) => push_message(out, &m),
            _ => break,
        }
    }
}

/// Whether `args` starts subscribed mode on the RESP socket.
pub(super) fn starts_subscription(args: &[crate::op::Bytes<'_>]) -> bool {
    let name = args[0].as_ref();
    args.len() > 1 && (name.eq_ignore_ascii_case(b"SUBSCRIBE") || name.eq_ignore_ascii_case(b"PSUBSCRIBE"))
}

impl From<Left> for After {
    fn from(left: Left) -> After {
        match left {
            Left::Unsubscribed => After::Continue,
            Left::Close => After::Close,
        }
    }
}
