//! Subscriptions on the RESP socket: a client that sends `SUBSCRIBE`, `PSUBSCRIBE` or `SSUBSCRIBE` gets Redis
//! connections of its own (each one of `resp.max_dedicated_connections`) for as long as it stays subscribed.
//!
//! While subscribed, the client's connection carries two streams at once, as Redis's does: the client's
//! (un)subscriptions, `PING`, `QUIT` and `RESET` (in RESP3, any command, as Redis 7 allows: answered the
//! ordinary way by the connection), each confirmed in Redis's shape (`["subscribe", channel,
//! count]`), and what Redis publishes (`["message", channel, payload]`, `["pmessage", pattern, channel,
//! payload]`, `["smessage", channel, payload]`; RESP3 pushes after `HELLO 3`). The connections to Redis speak
//! RESP3, so what Redis publishes arrives as pushes on one queue per client ([`Backlog`] bounds it), whatever
//! the connection it came on.
//!
//! One connection carries the channels and patterns; a shard channel lives on the master of its slot, so in
//! cluster mode a client may hold one connection per master its shard channels hash to (in the other modes,
//! everything shares one). The counts in the confirmations are the client's, as one Redis would give them.
//!
//! Unsubscribed from everything, the client's connection returns to ordinary commands and gives its Redis
//! connections back. The breaker judges the connecting and each (un)subscription like any call; if Redis drops
//! a connection, or the client leaves more than Redis's own pub/sub output limit unread, the client's
//! connection is closed, which is what a client library reconnects and resubscribes on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use redis::{PushInfo, PushKind, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{watch, Notify, SemaphorePermit};

use super::conn::{self, Connection};
use super::encode::{Out, Proto};
use super::forward;
use super::local::After;
use super::Resp;
use crate::backend::PubSubConnection;
use crate::client::CallError;
use crate::metrics::RespResult;

/// What a subscriber may leave unread before its connection is closed: Redis's own default hard limit for pub/sub
/// clients (`client-output-buffer-limit pubsub 32mb`), so a client that stops reading costs no more here than
/// it would in Redis, and is treated the same way.
pub(crate) const MAX_BACKLOG_BYTES: usize = 32 * 1024 * 1024;

/// The bytes of pushes waiting for one subscriber, counted as they are queued and taken off as they are written.
#[derive(Default)]
struct Backlog {
    bytes: AtomicUsize,
    overflowed: AtomicBool,
    /// Wakes the client's connection when the backlog passes [`MAX_BACKLOG_BYTES`], even mid-write.
    overflow: Notify,
}

impl Backlog {
    fn queued(&self, size: usize) {
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_BACKLOG_BYTES {
            self.overflowed.store(true, Ordering::Relaxed);
            self.overflow.notify_one();
        }
    }

    fn taken(&self, size: usize) {
        self.bytes.fetch_sub(size, Ordering::Relaxed);
    }
}

/// About what a push takes in memory: its payloads' bytes.
fn push_size(push: &PushInfo) -> usize {
    push.data
        .iter()
        .map(|v| match v {
            Value::BulkString(b) => b.len(),
            _ => 16,
        })
        .sum()
}

/// What one subscribing client holds.
struct Subscriber<'a> {
    /// The client's connections to Redis, each with its share of `resp.max_dedicated_connections`.
    upstreams: Vec<(PubSubConnection, SemaphorePermit<'a>)>,
    /// The connection (in `upstreams`) the channels and patterns are on.
    plain: Option<usize>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    /// Each shard channel, and the connection it is on.
    shard: BTreeMap<Vec<u8>, usize>,
    /// Redis's `sunsubscribe` pushes still due for the client's own SUNSUBSCRIBEs, by channel: those are answered
    /// already, and only a `sunsubscribe` beyond them is Redis dropping the channel (its slot moved).
    own_sunsubscribes: BTreeMap<Vec<u8>, usize>,
    /// Every connection's pushes, in the order each connection received them.
    pushes: UnboundedReceiver<PushInfo>,
    sender: UnboundedSender<PushInfo>,
    backlog: Arc<Backlog>,
}

impl Subscriber<'_> {
    fn new() -> Self {
        let (sender, pushes) = unbounded_channel();
        Subscriber {
            upstreams: Vec::new(),
            plain: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard: BTreeMap::new(),
            own_sunsubscribes: BTreeMap::new(),
            pushes,
            sender,
            backlog: Arc::default(),
        }
    }

    /// The count Redis confirms a change of `kind` with: channels and patterns together, shard channels apart.
    fn count(&self, kind: Kind) -> i64 {
        match kind {
            Kind::Shard => self.shard.len() as i64,
            Kind::Channel | Kind::Pattern => (self.channels.len() + self.patterns.len()) as i64,
        }
    }

    fn subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty())
    }

    /// What a connection opened now gives its pushes to: the client's queue, counted in its backlog.
    fn push_sender(&self) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
        let (sender, backlog) = (self.sender.clone(), self.backlog.clone());
        move |push: PushInfo| {
            // Over the limit, the client is being closed: nothing more is kept for it, even while its connection
            // waits on a command of its own (a blocking one, in RESP3).
            if backlog.overflowed.load(Ordering::Relaxed) {
                return Ok(());
            }
            backlog.queued(push_size(&push));
            sender.send(push).map_err(|_| ())
        }
    }
}

/// The three kinds of subscription, by the command that changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Channel,
    Pattern,
    Shard,
}

/// A subscription command: its kind and whether it adds (`None` for any other command).
fn subscription_command(name: &str) -> Option<(Kind, bool)> {
    Some(match name {
        "SUBSCRIBE" => (Kind::Channel, true),
        "UNSUBSCRIBE" => (Kind::Channel, false),
        "PSUBSCRIBE" => (Kind::Pattern, true),
        "PUNSUBSCRIBE" => (Kind::Pattern, false),
        "SSUBSCRIBE" => (Kind::Shard, true),
        "SUNSUBSCRIBE" => (Kind::Shard, false),
        _ => return None,
    })
}

/// What ended subscribed mode.
pub(super) enum Left {
    /// Unsubscribed from everything (or RESET): back to ordinary commands.
    Unsubscribed,
    /// QUIT, a protocol error, Redis dropping a connection, a backlog over the limit, the client leaving, or
    /// shutdown.
    Close,
}

impl Connection {
    /// Runs subscribed mode, starting with `first` (the command that began it), until the client leaves it.
    /// Replies go to `self.out`, written here.
    pub(super) async fn subscribed<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        buf: &mut BytesMut,
        first: Vec<Vec<u8>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Left {
        let resp = self.resp.clone();
        let mut sub = Subscriber::new();
        if let Err(left) = self.subscription(&resp, &mut sub, &first).await {
            return left;
        }
        // What the client sent after it in the same write.
        if let Some(left) = self.subscribed_requests(&resp, &mut sub, buf).await {
            return left;
        }
        let backlog = sub.backlog.clone();
        // A request half sent must go on arriving, as on an ordinary connection: silence longer than
        // `api.read_timeout` in the middle of one closes the connection.
        let mut last_read = tokio::time::Instant::now();
        loop {
            if !self.out.buf.is_empty() {
                let written = tokio::select! {
                    written = stream.write_all(&self.out.buf) => written.is_ok(),
                    () = backlog.overflow.notified() => false,
                };
                if !written {
                    return overflowed(&backlog);
                }
                self.out.written();
            }
            if backlog.overflowed.load(Ordering::Relaxed) || !sub.subscribed() {
                return overflowed(&backlog);
            }
            buf.reserve(16 * 1024);
            // Mid-request, shutdown waits for the request (bounded by the timeout above), as it does elsewhere.
            let partial = self.reader.in_request(buf);
            tokio::select! {
                push = sub.pushes.recv() => match push {
                    Some(push) => {
                        if let Err(left) = self.pushed(&mut sub, push) {
                            return left;
                        }
                    }
                    None => return Left::Close,
                },
                read = stream.read_buf(buf) => match read {
                    Ok(0) | Err(_) => return Left::Close,
                    Ok(_) => {
                        last_read = tokio::time::Instant::now();
                        if let Some(left) = self.subscribed_requests(&resp, &mut sub, buf).await {
                            return left;
                        }
                    }
                },
                () = tokio::time::sleep_until(last_read + self.resp.app.read_timeout.get()), if partial => {
                    self.out.error("ERR", conn::NOT_COMPLETED);
                    return Left::Close;
                }
                // Mapped to (): the guard `wait_for` answers must not live on into the other arms' awaits.
                () = async { let _ = stop.wait_for(|s| *s).await; }, if !partial => return Left::Close,
            }
            // Pushes already queued go out in the same write as the one that woke the loop.
            for _ in 0..256 {
                let Ok(push) = sub.pushes.try_recv() else { break };
                if let Err(left) = self.pushed(&mut sub, push) {
                    return left;
                }
            }
        }
    }

    /// One push from Redis: a message is passed on; a shard channel Redis dropped (its slot moved to another
    /// node) is confirmed to the client as Redis confirms it, so the client can subscribe again; a connection
    /// lost ends subscribed mode. The confirmations of the client's own commands were answered already.
    fn pushed(&mut self, sub: &mut Subscriber<'_>, push: PushInfo) -> Result<(), Left> {
        sub.backlog.taken(push_size(&push));
        let kind: &[u8] = match push.kind {
            PushKind::Message => b"message",
            PushKind::PMessage => b"pmessage",
            PushKind::SMessage => b"smessage",
            PushKind::SUnsubscribe => {
                let Some(Value::BulkString(channel)) = push.data.first() else {
                    return Ok(());
                };
                match sub.own_sunsubscribes.get_mut(channel) {
                    Some(due) if *due > 1 => *due -= 1,
                    Some(_) => {
                        sub.own_sunsubscribes.remove(channel);
                    }
                    None => {
                        if sub.shard.remove(channel).is_some() {
                            confirm(&mut self.out, "sunsubscribe", Some(channel), sub.count(Kind::Shard));
                        }
                    }
                }
                return Ok(());
            }
            PushKind::Disconnection => return Err(Left::Close),
            _ => return Ok(()),
        };
        self.out.push(1 + push.data.len());
        self.out.bulk(kind);
        push.data.iter().for_each(|v| self.out.value(v));
        Ok(())
    }

    /// The complete requests in `buf` while subscribed.
    async fn subscribed_requests<'a>(
        &mut self,
        resp: &'a Resp,
        sub: &mut Subscriber<'a>,
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
            if let Err(left) = self.subscription(resp, sub, &args).await {
                return Some(left);
            }
            if !sub.subscribed() {
                return Some(Left::Unsubscribed);
            }
        }
    }

    /// One command while subscribed (or the one that starts it).
    async fn subscription<'a>(
        &mut self,
        resp: &'a Resp,
        sub: &mut Subscriber<'a>,
        args: &[Vec<u8>],
    ) -> Result<(), Left> {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        if self.answers_as_usual(&name) {
            return match self.command_while_subscribed(args).await {
                After::Close => Err(Left::Close),
                _ => Ok(()),
            };
        }
        let started = std::time::Instant::now();
        let result = if let Some((kind, adding)) = subscription_command(&name) {
            self.change(resp, sub, args, kind, adding).await?
        } else {
            match name.as_str() {
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
                    return Err(Left::Unsubscribed);
                }
                _ => {
                    self.out.error(
                        "ERR",
                        &format!(
                            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are \
                             allowed in this context",
                            name.to_ascii_lowercase()
                        ),
                    );
                    RespResult::RedisError
                }
            }
        };
        record(self, args, result, started);
        Ok(())
    }

    /// Whether a command while subscribed is answered as it would be unsubscribed: in RESP3 (where Redis accepts
    /// any command while subscribed), every one but the subscriptions', PING, QUIT and RESET; inside MULTI, every
    /// one but QUIT and RESET, so that the transaction queues it (or refuses it) as it would any other.
    fn answers_as_usual(&self, name: &str) -> bool {
        let own = matches!(name, "PING" | "QUIT" | "RESET") || subscription_command(name).is_some();
        self.out.proto == Proto::Resp3
            && if self.session.in_transaction() {
                !matches!(name, "QUIT" | "RESET")
            } else {
                !own
            }
    }

    /// A (P|S)SUBSCRIBE or (P|S)UNSUBSCRIBE: sent to Redis one channel at a time (so every reply is that
    /// channel's confirmation), each confirmed to the client with the client's count. Subscribing passes the
    /// command policy; leaving only ends what a permitted command started, so it always may.
    async fn change<'a>(
        &mut self,
        resp: &'a Resp,
        sub: &mut Subscriber<'a>,
        args: &[Vec<u8>],
        kind: Kind,
        adding: bool,
    ) -> Result<RespResult, Left> {
        let command = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        if adding {
            if let Err(d) = resp.app.settings().policy().check_own_connection(args) {
                let message = format!("redguard: command {} is denied by api.commands", d.command);
                self.out.error("NOPERM", &message);
                return Ok(RespResult::Denied);
            }
        }
        // UNSUBSCRIBE with no channel leaves every one of its kind; SUBSCRIBE needs one.
        let targets: Vec<Vec<u8>> = match (args.len() > 1, kind) {
            (true, _) => args[1..].to_vec(),
            _ if adding => {
                self.out
                    .error("ERR", &format!("wrong number of arguments for '{command}' command"));
                return Ok(RespResult::RedisError);
            }
            (false, Kind::Channel) => sub.channels.iter().cloned().collect(),
            (false, Kind::Pattern) => sub.patterns.iter().cloned().collect(),
            (false, Kind::Shard) => sub.shard.keys().cloned().collect(),
        };
        if targets.is_empty() {
            confirm(&mut self.out, &command, None, sub.count(kind));
        }
        for target in targets {
            let upstream = match (kind, adding) {
                (Kind::Shard, false) => sub.shard.get(&target).copied(),
                (_, false) => sub.plain,
                (_, true) => match self.upstream(resp, sub, kind, &target).await {
                    Ok(index) => Some(index),
                    Err(result) => return Ok(result),
                },
            };
            // Leaving what was never joined needs no Redis: only the confirmation.
            if let Some(index) = upstream {
                let mut cmd = redis::cmd(&command);
                cmd.arg(&target);
                let reply = resp.client.subscription(&mut sub.upstreams[index].0.conn, &cmd).await;
                match reply {
                    Ok(reply) if confirms(&reply, &command, &target) => {}
                    Ok(_) => {
                        self.out.error(
                            "UNAVAILABLE",
                            "redguard: Redis answered a subscription out of step; reconnect",
                        );
                        return Err(Left::Close);
                    }
                    Err(CallError::Redis(message)) => {
                        self.out.redis_error(&message);
                        return Ok(RespResult::RedisError);
                    }
                    Err(e) => {
                        forward::call_error(&mut self.out, &e);
                        return Err(Left::Close);
                    }
                }
                match (kind, adding) {
                    (Kind::Channel, true) => {
                        sub.channels.insert(target.clone());
                    }
                    (Kind::Channel, false) => {
                        sub.channels.remove(&target);
                    }
                    (Kind::Pattern, true) => {
                        sub.patterns.insert(target.clone());
                    }
                    (Kind::Pattern, false) => {
                        sub.patterns.remove(&target);
                    }
                    (Kind::Shard, true) => {
                        sub.shard.insert(target.clone(), index);
                    }
                    (Kind::Shard, false) => {
                        sub.shard.remove(&target);
                        *sub.own_sunsubscribes.entry(target.clone()).or_default() += 1;
                    }
                }
            }
            confirm(&mut self.out, &command, Some(&target), sub.count(kind));
        }
        Ok(RespResult::Ok)
    }

    /// The connection a new subscription of `kind` to `target` goes on: the channels' and patterns' one, or for
    /// a shard channel the one to the master of its slot; opened if the client has none yet. On failure the
    /// client has its error reply, and the result to record.
    async fn upstream<'a>(
        &mut self,
        resp: &'a Resp,
        sub: &mut Subscriber<'a>,
        kind: Kind,
        target: &[u8],
    ) -> Result<usize, RespResult> {
        let slot = (kind == Kind::Shard).then(|| crate::commands::key_slot(target));
        let existing = match slot {
            // Channels and patterns reach every subscriber wherever it listens, so any connection will do.
            None => sub.plain.or((!sub.upstreams.is_empty()).then_some(0)),
            // In the modes with one master there is no owner to tell, and every connection reaches it.
            Some(slot) => {
                let owner = resp.client.master_of(slot);
                sub.upstreams.iter().position(|(u, _)| u.node == owner)
            }
        };
        let index = match existing {
            Some(index) => index,
            None => {
                let Ok(permit) = resp.dedicated.try_acquire() else {
                    self.out.error(
                        "ERR",
                        &format!(
                            "redguard: all {} connections of their own (resp.max_dedicated_connections) are in use; \
                             try again",
                            resp.max_dedicated
                        ),
                    );
                    return Err(RespResult::Unavailable);
                };
                match resp.client.open_pubsub(slot, sub.push_sender()).await {
                    Ok(conn) => sub.upstreams.push((conn, permit)),
                    Err(e) => return Err(forward::call_error(&mut self.out, &e)),
                }
                sub.upstreams.len() - 1
            }
        };
        if kind != Kind::Shard {
            sub.plain = Some(index);
        }
        Ok(index)
    }
}

/// Ends subscribed mode: closed if the client left more unread than [`MAX_BACKLOG_BYTES`], else unsubscribed.
fn overflowed(backlog: &Backlog) -> Left {
    if backlog.overflowed.load(Ordering::Relaxed) {
        tracing::warn!(
            limit_bytes = MAX_BACKLOG_BYTES,
            "RESP subscriber closed: it left more published messages unread than Redis's pub/sub output limit"
        );
        Left::Close
    } else {
        Left::Unsubscribed
    }
}

/// Whether Redis's `reply` to one (un)subscription is its confirmation (a RESP3 push `[command, target,
/// count]`), and not something else a connection could deliver out of step.
fn confirms(reply: &Value, command: &str, target: &[u8]) -> bool {
    match reply {
        Value::Push { kind, data } => {
            kind.to_string() == command && matches!(data.first(), Some(Value::BulkString(t)) if t == target)
        }
        _ => false,
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

/// Whether `args` starts subscribed mode on the RESP socket.
pub(super) fn starts_subscription(args: &[crate::op::Bytes<'_>]) -> bool {
    let name = args[0].as_ref();
    args.len() > 1
        && (name.eq_ignore_ascii_case(b"SUBSCRIBE")
            || name.eq_ignore_ascii_case(b"PSUBSCRIBE")
            || name.eq_ignore_ascii_case(b"SSUBSCRIBE"))
}

impl From<Left> for After {
    fn from(left: Left) -> After {
        match left {
            Left::Unsubscribed => After::Continue,
            Left::Close => After::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn only_the_six_subscription_commands_change_subscriptions() {
        assert_eq!(subscription_command("SUBSCRIBE"), Some((Kind::Channel, true)));
        assert_eq!(subscription_command("UNSUBSCRIBE"), Some((Kind::Channel, false)));
        assert_eq!(subscription_command("PSUBSCRIBE"), Some((Kind::Pattern, true)));
        assert_eq!(subscription_command("PUNSUBSCRIBE"), Some((Kind::Pattern, false)));
        assert_eq!(subscription_command("SSUBSCRIBE"), Some((Kind::Shard, true)));
        assert_eq!(subscription_command("SUNSUBSCRIBE"), Some((Kind::Shard, false)));
        for other in ["PING", "PUBLISH", "SPUBLISH", "RESET", "subscribe"] {
            assert_eq!(subscription_command(other), None, "{other}");
        }
    }

    #[test]
    fn a_reply_confirms_only_its_own_command_and_channel() {
        let push = |kind: PushKind, channel: &str| Value::Push {
            kind,
            data: vec![bulk(channel), Value::Int(1)],
        };
        assert!(confirms(&push(PushKind::SSubscribe, "a"), "ssubscribe", b"a"));
        assert!(confirms(&push(PushKind::Unsubscribe, "a"), "unsubscribe", b"a"));
        // An unsolicited sunsubscribe (a slot moved) taken for the reply to a subscription is out of step.
        assert!(!confirms(&push(PushKind::SUnsubscribe, "a"), "ssubscribe", b"a"));
        assert!(!confirms(&push(PushKind::SSubscribe, "b"), "ssubscribe", b"a"));
        // The connections speak RESP3: the RESP2 shape of a confirmation is not one there.
        let array = Value::Array(vec![bulk("subscribe"), bulk("a"), Value::Int(1)]);
        assert!(!confirms(&array, "subscribe", b"a"));
        assert!(!confirms(&Value::Array(vec![]), "subscribe", b"a"));
        assert!(!confirms(&Value::Okay, "subscribe", b"a"));
    }

    #[test]
    fn the_backlog_overflows_past_the_limit_and_not_before() {
        let backlog = Backlog::default();
        backlog.queued(MAX_BACKLOG_BYTES - 10);
        backlog.queued(10);
        assert!(!backlog.overflowed.load(Ordering::Relaxed), "at the limit is within it");
        backlog.taken(10);
        backlog.queued(10);
        assert!(
            !backlog.overflowed.load(Ordering::Relaxed),
            "what was written is taken off"
        );
        backlog.queued(1);
        assert!(backlog.overflowed.load(Ordering::Relaxed));
        assert!(matches!(overflowed(&backlog), Left::Close));
        assert!(matches!(overflowed(&Backlog::default()), Left::Unsubscribed));
    }

    #[test]
    fn a_push_weighs_its_payloads() {
        let push = PushInfo {
            kind: PushKind::Message,
            data: vec![bulk("chan"), bulk("payload"), Value::Int(3)],
        };
        assert_eq!(push_size(&push), 4 + 7 + 16);
    }

    #[test]
    fn counts_are_redis_s_channels_and_patterns_together_shard_channels_apart() {
        let mut sub = Subscriber::new();
        assert!(!sub.subscribed());
        sub.channels.insert(b"c".to_vec());
        sub.patterns.insert(b"p*".to_vec());
        assert!(sub.subscribed());
        assert_eq!(sub.count(Kind::Channel), 2);
        assert_eq!(sub.count(Kind::Pattern), 2);
        assert_eq!(sub.count(Kind::Shard), 0);
        sub.channels.clear();
        sub.patterns.clear();
        sub.shard.insert(b"s".to_vec(), 0);
        assert!(sub.subscribed());
        assert_eq!(sub.count(Kind::Shard), 1);
        assert_eq!(sub.count(Kind::Channel), 0);
    }

    #[tokio::test]
    async fn pushes_reach_the_queue_counted_in_the_backlog() {
        let mut sub = Subscriber::new();
        let send = sub.push_sender();
        send(PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk("s"), bulk("hello")],
        })
        .unwrap();
        assert_eq!(sub.backlog.bytes.load(Ordering::Relaxed), 6);
        let push = sub.pushes.recv().await.unwrap();
        assert_eq!(push.kind, PushKind::SMessage);
    }

    #[test]
    fn past_the_limit_nothing_more_is_queued() {
        let mut sub = Subscriber::new();
        let send = sub.push_sender();
        let big = vec![0u8; MAX_BACKLOG_BYTES - 1];
        let push = |payload: &[u8]| PushInfo {
            kind: PushKind::Message,
            data: vec![bulk("c"), Value::BulkString(payload.to_vec())],
        };
        send(push(&big)).unwrap();
        assert!(
            !sub.backlog.overflowed.load(Ordering::Relaxed),
            "at the limit, not past it"
        );
        send(push(b"x")).unwrap();
        assert!(sub.backlog.overflowed.load(Ordering::Relaxed));
        send(push(b"y")).unwrap();
        assert_eq!(
            sub.backlog.bytes.load(Ordering::Relaxed),
            MAX_BACKLOG_BYTES + 2,
            "y was not counted"
        );
        let queued = std::iter::from_fn(|| sub.pushes.try_recv().ok()).count();
        assert_eq!(queued, 2, "y was not queued");
    }

    #[test]
    fn the_three_subscribing_commands_start_subscribed_mode_with_a_channel() {
        for line in ["SUBSCRIBE c", "psubscribe p*", "SSUBSCRIBE s"] {
            assert!(starts_subscription(&crate::resp::test_args(line)), "{line}");
        }
        for line in ["SUBSCRIBE", "UNSUBSCRIBE c", "SPUBLISH s m", "GET k"] {
            assert!(!starts_subscription(&crate::resp::test_args(line)), "{line}");
        }
    }
}
