//! One RESP connection: read what the client sent, answer every complete request in order, write the answers
//! once per batch, and close on a protocol error, `QUIT`, or shutdown.
//!
//! A batch is every complete request one read brought (at most `api.max_pipeline_commands`): the commands for
//! Redis among them go as one pipeline ([`forward::batch`]), so a client writing 16 commands before reading
//! costs one round trip, not 16. Local commands and refusals keep their place: the commands queued before one
//! are sent first, so the answers stay in the client's order.
//!
//! Timeouts: an idle connection stays open (as with Redis's default `timeout 0`: pooled clients keep theirs);
//! a request begun must arrive in full within `api.read_timeout`, or the connection is closed with an error,
//! so a half-sent frame cannot hold a connection slot forever.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::encode::{Out, Proto};
use super::forward::{self, Batch};
use super::local::{self, After};
use super::parse::{Limits, Reader};
use super::{pubsub, Resp};
use crate::commands::{self, Flags};
use crate::metrics::{Counted, RespResult};
use crate::op::Bytes;
use crate::policy;

/// How much is read at a time; a request larger than this arrives over several reads.
const READ_CHUNK: usize = 16 * 1024;

/// The error a connection is closed with when a request it began stops arriving for `api.read_timeout`.
pub(super) const NOT_COMPLETED: &str = "Protocol error: request not completed within api.read_timeout; closing";

/// The state of one client connection that outlives a request.
#[derive(Debug)]
pub(super) struct Session {
    pub id: u64,
    /// `CLIENT SETNAME` / `HELLO .. SETNAME`.
    pub name: Option<Vec<u8>>,
    /// Inside MULTI: the commands queued for EXEC.
    multi: Option<Transaction>,
}

#[derive(Debug, Default)]
struct Transaction {
    queued: Vec<Vec<Vec<u8>>>,
    /// A command was refused while queueing: EXEC discards the transaction, as Redis does.
    refused: bool,
}

impl Session {
    /// `RESET`: back to a fresh connection's state.
    pub(super) fn reset(&mut self, out: &mut Out) {
        self.name = None;
        self.multi = None;
        out.proto = Proto::Resp2;
    }

    /// Inside MULTI.
    pub(super) fn in_transaction(&self) -> bool {
        self.multi.is_some()
    }
}

pub(super) struct Connection {
    pub(super) resp: Arc<Resp>,
    pub(super) session: Session,
    pub(super) out: Out,
    pub(super) reader: Reader,
    /// The SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE that ended the last batch ([`After::Subscribe`]).
    subscribe: Option<Vec<Vec<u8>>>,
    /// The vectors a batch's commands are collected in, kept between batches so that they are allocated once
    /// per connection, not once per command.
    spare: Spare,
}

#[derive(Debug, Default)]
struct Spare {
    /// One command's arguments, while it is looked at.
    args: Vec<Bytes<'static>>,
    /// The commands waiting for Redis.
    batch: Batch<'static>,
}

fn limits(settings: &crate::api::Settings) -> Limits {
    Limits {
        max_arg_bytes: settings.limits.max_value_bytes.max(settings.limits.max_key_bytes),
        max_request_bytes: settings.max_body_bytes,
    }
}

impl Connection {
    pub(super) fn new(resp: Arc<Resp>) -> Connection {
        let reader = Reader::new(limits(&resp.app.settings()));
        Connection {
            session: Session {
                id: resp.next_id(),
                name: None,
                multi: None,
            },
            resp,
            out: Out::new(),
            reader,
            subscribe: None,
            spare: Spare::default(),
        }
    }

    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut stream: S,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // Set when subscribed mode ends with requests the client sent after leaving it still in `buf`: those are
        // answered before anything more is read.
        let mut unread = false;
        loop {
            if !std::mem::take(&mut unread) && !self.read_more(&mut stream, &mut buf, &mut stop).await {
                return;
            }
            let answering = Counted::start(&self.resp.client.metrics().resp_saturation.inflight);
            let (consumed, after) = self.answer_batch(&buf).await;
            drop(answering);
            buf.advance(consumed);
            if !self.out.buf.is_empty() {
                if stream.write_all(&self.out.buf).await.is_err() {
                    return;
                }
                self.out.written();
            }
            if after == After::Close {
                return;
            }
            if let (After::Subscribe, Some(first)) = (after, self.subscribe.take()) {
                let left = self.subscribed(&mut stream, &mut buf, first, &mut stop).await;
                if !self.out.buf.is_empty() {
                    let _ = stream.write_all(&self.out.buf).await;
                    self.out.written();
                }
                if After::from(left) == After::Close {
                    return;
                }
                unread = !buf.is_empty();
            }
            // Give back a buffer a large request grew, once it is no longer needed.
            if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
                buf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
    }

    /// Reads more of the client's requests into `buf`; false when the connection is to be closed: the client
    /// left, shutdown while idle, or a request not completed within `api.read_timeout` (answered first).
    async fn read_more<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        buf: &mut BytesMut,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let partial = self.reader.in_request(buf);
        if !partial && *stop.borrow() {
            return false;
        }
        buf.reserve(READ_CHUNK);
        let read = if partial {
            let timeout = self.resp.app.read_timeout.get();
            match tokio::time::timeout(timeout, stream.read_buf(buf)).await {
                Ok(read) => read,
                Err(_) => {
                    self.out.error("ERR", NOT_COMPLETED);
                    let _ = stream.write_all(&self.out.buf).await;
                    return false;
                }
            }
        } else {
            tokio::select! {
                // Read first: bytes the client sent before shutdown began are a request under way, not idleness.
                biased;
                read = stream.read_buf(buf) => read,
                // Shutdown while idle: close now; a connection mid-request finishes it first.
                _ = stop.wait_for(|s| *s) => return false,
            }
        };
        matches!(read, Ok(n) if n > 0)
    }

    /// Answers the complete requests at the front of `buf` (up to `api.max_pipeline_commands` of them at a
    /// time, batch after batch); returns how many bytes they took.
    async fn answer_batch(&mut self, buf: &[u8]) -> (usize, After) {
        let max_batch = {
            let settings = self.resp.app.settings();
            self.reader.set_limits(limits(&settings));
            settings.max_pipeline_commands.max(1)
        };
        let mut consumed = 0;
        let spare = std::mem::take(&mut self.spare);
        let (mut args, mut pending) = (forward::recycle(spare.args), spare.batch.recycle());
        loop {
            let request = match self.reader.next(&buf[consumed..]) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(e) => {
                    self.flush(&mut pending).await;
                    self.out.error("ERR", &format!("Protocol error: {e}"));
                    return (consumed, After::Close);
                }
            };
            let start = consumed;
            consumed += request.len;
            args.clear();
            args.extend(
                request
                    .args
                    .iter()
                    .map(|r| Bytes::Borrowed(&buf[start + r.start..start + r.end])),
            );
            self.reader.give_back(request.args);
            if args.is_empty() {
                continue;
            }
            if let Some(after) = self.command(&args, &mut pending, max_batch).await {
                // Whatever returns `Some` has sent the commands waiting first.
                debug_assert!(pending.is_empty());
                self.keep_spare(args, pending);
                return (consumed, after);
            }
        }
        self.flush(&mut pending).await;
        self.keep_spare(args, pending);
        (consumed, After::Continue)
    }

    fn keep_spare(&mut self, args: Vec<Bytes<'_>>, batch: Batch<'_>) {
        self.spare = Spare {
            args: forward::recycle(args),
            batch: batch.recycle(),
        };
    }

    /// One command, answered the ordinary way: queued inside MULTI; answered here if it is a connection
    /// command; sent on a Redis connection of its own if it blocks or subscribes; refused if the policy says so;
    /// else added to `pending`, to go to Redis with the commands around it (`max_batch` at most at a time).
    /// `Some` when the connection stops answering commands this way: QUIT, or a subscription starting.
    async fn command<'b>(&mut self, args: &[Bytes<'b>], pending: &mut Batch<'b>, max_batch: usize) -> Option<After> {
        // The command's row in the table, found once: the policy, the metrics and the cache all index by it.
        let position = commands::position(&args[0]);
        if self.session.multi.is_some() && !ends_transaction(args) {
            self.queue(position, args);
        } else if let Some(after) = self.transaction_command(args, pending).await {
            if after == After::Close {
                return Some(after);
            }
        } else if local::is_local(args) {
            self.flush(pending).await;
            let (started, at) = (Instant::now(), self.out.buf.len());
            let after = local::answer(&self.resp, &mut self.session, args, &mut self.out);
            // A local command refused (wrong arguments, SELECT of another database) counts as an error reply.
            let result = match self.out.buf.get(at) {
                Some(b'-') => RespResult::RedisError,
                _ => RespResult::Ok,
            };
            forward::record(&self.resp, args, result, started);
            if after == After::Close {
                return Some(After::Close);
            }
        } else if pubsub::starts_subscription(args) {
            self.flush(pending).await;
            match self.resp.app.settings().policy().check_own_connection(args) {
                Ok(()) => {
                    self.subscribe = Some(args.iter().map(|a| a.to_vec()).collect());
                    return Some(After::Subscribe);
                }
                Err(d) => {
                    self.out.error(
                        "NOPERM",
                        &format!("redguard: command {} is denied by api.commands", d.command),
                    );
                    forward::record(&self.resp, args, RespResult::Denied, Instant::now());
                }
            }
        } else if policy::blocks(position, args) {
            self.flush(pending).await;
            self.blocking(args).await;
        } else if let Err(message) = self.allowed(position, args) {
            self.flush(pending).await;
            self.out.error("NOPERM", &message);
            forward::record(&self.resp, args, RespResult::Denied, Instant::now());
        } else {
            pending.push(args, position);
            if pending.len() >= max_batch {
                self.flush(pending).await;
            }
        }
        None
    }

    /// A command that is not a subscription's while subscribed in RESP3, which Redis answers as always (in
    /// RESP2 it refuses it): answered as [`Connection::command`] answers it, the pushes waiting meanwhile.
    pub(super) async fn command_while_subscribed(&mut self, args: &[Vec<u8>]) -> After {
        let args: Vec<Bytes<'_>> = args.iter().map(|a| Bytes::Borrowed(a)).collect();
        let mut pending = Batch::default();
        let after = self.command(&args, &mut pending, usize::MAX).await;
        self.flush(&mut pending).await;
        after.unwrap_or(After::Continue)
    }

    /// Sends the commands waiting for Redis, and writes their answers.
    async fn flush(&mut self, pending: &mut Batch<'_>) {
        if !pending.is_empty() {
            forward::batch(&self.resp, pending, &mut self.out).await;
            pending.clear();
        }
    }

    /// A blocking command, on a Redis connection of its own for as long as it waits (see
    /// [`crate::client::Resilient::execute_blocking`]), at most `resp.max_dedicated_connections` at once.
    async fn blocking(&mut self, args: &[Bytes<'_>]) {
        let started = Instant::now();
        if let Err(d) = self.resp.app.settings().policy().check_own_connection(args) {
            self.out.error(
                "NOPERM",
                &format!("redguard: command {} is denied by api.commands", d.command),
            );
            return forward::record(&self.resp, args, RespResult::Denied, started);
        }
        let Ok(_slot) = self.resp.dedicated.try_acquire() else {
            self.out.error(
                "ERR",
                &format!(
                    "redguard: all {} connections for blocking commands (resp.max_dedicated_connections) are in \
                     use; try again",
                    self.resp.max_dedicated
                ),
            );
            return forward::record(&self.resp, args, RespResult::Unavailable, started);
        };
        let result = match self.resp.client.execute_blocking(args).await {
            Ok(value) => {
                forward::raw_reply(&mut self.out, args, value);
                RespResult::Ok
            }
            Err(e) => forward::call_error(&mut self.out, &e),
        };
        forward::record(&self.resp, args, result, started);
    }

    /// The policy's verdict, with the reason a client can act on.
    fn allowed(&self, position: Option<usize>, args: &[Bytes<'_>]) -> Result<(), String> {
        let denied = match self.resp.app.settings().policy().check_at(position, args) {
            Ok(()) => return Ok(()),
            Err(d) => d.command,
        };
        let pushes = commands::lookup(args).is_some_and(|row| row.is(Flags::PUSHES));
        Err(if pushes {
            format!(
                "redguard: {denied} is not offered on the RESP socket (SUBSCRIBE, PSUBSCRIBE and SSUBSCRIBE are; \
                 MONITOR and replication are not)"
            )
        } else if commands::lookup(args).is_some_and(|row| row.is(Flags::CONN_STATE)) {
            format!("redguard: {denied} would change the state of Redis connections every client shares")
        } else {
            format!("redguard: command {denied} is denied by api.commands")
        })
    }

    /// MULTI, EXEC, DISCARD, WATCH and UNWATCH (`None` for any other command).
    async fn transaction_command(&mut self, args: &[Bytes<'_>], pending: &mut Batch<'_>) -> Option<After> {
        let name = args[0].as_ref();
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if !(is(b"MULTI") || is(b"EXEC") || is(b"DISCARD") || is(b"WATCH") || is(b"UNWATCH")) {
            return None;
        }
        self.flush(pending).await;
        let out = &mut self.out;
        if args.len() > 1 && !is(b"WATCH") {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            out.error("ERR", &format!("wrong number of arguments for '{name}' command"));
            return Some(After::Continue);
        }
        let multi = self.session.multi.take();
        if is(b"MULTI") {
            if multi.is_some() {
                out.error("ERR", "MULTI calls can not be nested");
            } else {
                out.ok();
            }
            self.session.multi = Some(multi.unwrap_or_default());
        } else if is(b"EXEC") {
            match multi {
                None => out.error("ERR", "EXEC without MULTI"),
                Some(t) if t.refused => out.error("EXECABORT", "Transaction discarded because of previous errors."),
                Some(t) => {
                    let started = Instant::now();
                    let result = forward::exec(&self.resp, &t.queued, out).await;
                    forward::record(&self.resp, args, result, started);
                }
            }
        } else if is(b"DISCARD") {
            match multi {
                None => out.error("ERR", "DISCARD without MULTI"),
                Some(_) => out.ok(),
            }
        } else if is(b"WATCH") {
            if multi.is_some() {
                out.error("ERR", "WATCH inside MULTI is not allowed");
            } else {
                out.error(
                    "ERR",
                    "redguard: WATCH is not supported on the RESP socket (Redis connections are shared by every \
                     client); use MULTI/EXEC without WATCH, or a Lua script (EVAL) for check-and-set",
                );
            }
            self.session.multi = multi;
        } else {
            // UNWATCH: nothing is ever watched.
            self.session.multi = multi;
            out.ok();
        }
        Some(After::Continue)
    }

    /// Inside MULTI: a command is judged now and queued for EXEC. A transaction holds at most
    /// `api.max_pipeline_commands` commands (the JSON API's atomic pipeline holds no more), so a client cannot
    /// make its connection hold memory without bound.
    fn queue(&mut self, position: Option<usize>, args: &[Bytes<'_>]) {
        let max = self.resp.app.settings().max_pipeline_commands;
        let queued = self.session.multi.as_ref().map_or(0, |t| t.queued.len());
        let verdict = if local::is_local(args) {
            Err("redguard: connection commands cannot be part of a transaction".to_owned())
        } else if policy::blocks(position, args) || pubsub::starts_subscription(args) {
            Err(format!(
                "redguard: {} cannot be part of a transaction on the RESP socket (it needs a Redis connection of \
                 its own)",
                String::from_utf8_lossy(&args[0]).to_ascii_uppercase()
            ))
        } else if queued >= max {
            Err(format!(
                "redguard: a transaction holds at most {max} commands (api.max_pipeline_commands)"
            ))
        } else {
            self.allowed(position, args)
        };
        let Some(t) = self.session.multi.as_mut() else {
            return;
        };
        match verdict {
            Ok(()) => {
                t.queued.push(args.iter().map(|a| a.to_vec()).collect());
                self.out.simple("QUEUED");
            }
            Err(message) => {
                t.refused = true;
                self.out.error("NOPERM", &message);
            }
        }
    }
}

/// Inside MULTI, the commands that act on the transaction rather than join it.
fn ends_transaction(args: &[Bytes<'_>]) -> bool {
    let name = args[0].as_ref();
    [b"EXEC".as_slice(), b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}
