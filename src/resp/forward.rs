//! Commands sent on to Redis: through the resilient client, so the breaker, the fallback cache and the metrics
//! treat them as they treat the JSON API's.
//!
//! The cacheable reads the command table marks (GET, MGET, HGET, HGETALL) go as typed ops: Redis's answer
//! fills the cache, and while Redis is away the cache (or the same default as on the JSON API: nil, an empty
//! map) answers, unless `resp.serve_cached_reads` is off. Everything else goes as the raw command, with no
//! stand-in: when Redis cannot be asked it gets an error reply whose first word says why, so a client can
//! tell redguard's refusals from Redis's own errors (which pass through unchanged):
//!
//! - `CIRCUITOPEN`: the breaker is open, Redis was not called; the text gives the retry-after;
//! - `UNAVAILABLE`: Redis failed on this call (refused, dropped, down);
//! - `TIMEOUT`: Redis did not answer within `redis.command_timeout` (the command may have run).
//!
//! A write that did not reach Redis is never answered OK.

use std::ops::Range;
use std::time::{Duration, Instant};

use redis::Value;

use super::encode::{Out, Proto};
use super::parse::KEPT_ARGS;
use super::{resp3, Resp};
use crate::client::{BatchError, CallError, Item, Reply, Served};
use crate::commands::{self, Cached};
use crate::config::OnUnavailable;
use crate::metrics::RespResult;
use crate::op::{Bytes, Op};

/// What the typed reads are executed with: nothing, in fact, since a read's fallback is the cache (else nil or
/// empty), whatever `api.on_unavailable` says; that key is for the JSON API's writes.
const READS: OnUnavailable = OnUnavailable::Error;

/// The first word of the reply when the circuit is open.
pub(super) const CIRCUIT_OPEN: &str = "CIRCUITOPEN";
/// The first word of the reply when Redis failed on the call.
pub(super) const UNAVAILABLE: &str = "UNAVAILABLE";
/// The first word of the reply when Redis did not answer in time.
pub(super) const TIMEOUT: &str = "TIMEOUT";

/// Commands waiting to go to Redis together ([`batch`]), kept flat: every argument in one vector, each command
/// a range of it, with the position of its row in the command table ([`commands::position`]), found once when
/// the command was judged and used again for its metric and its cache effects. A connection keeps the two
/// vectors and reuses them batch after batch ([`Batch::recycle`]), so that a command costs no allocation of its
/// own on its way through.
///
/// Vectors that grew past [`KEPT_ARGS`] arguments are not kept: one large pipeline must not make its
/// connection hold that memory for as long as it stays open.
#[derive(Debug, Default)]
pub(super) struct Batch<'b> {
    args: Vec<Bytes<'b>>,
    cmds: Vec<(Range<usize>, Option<usize>)>,
}

impl<'b> Batch<'b> {
    /// Adds a command (its arguments, the name first) and its name's [`commands::position`].
    pub(super) fn push(&mut self, cmd: &[Bytes<'b>], position: Option<usize>) {
        let start = self.args.len();
        self.args.extend_from_slice(cmd);
        self.cmds.push((start..self.args.len(), position));
    }

    pub(super) fn len(&self) -> usize {
        self.cmds.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Each command's arguments and position, in the order they were added.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[Bytes<'b>], Option<usize>)> {
        self.cmds.iter().map(|(r, position)| (&self.args[r.clone()], *position))
    }

    pub(super) fn clear(&mut self) {
        self.args.clear();
        self.cmds.clear();
    }

    /// The same vectors, emptied, for arguments that borrow another buffer: the arguments live as long as one
    /// read of the client's requests, the vectors as long as the connection. New ones if they grew too large.
    pub(super) fn recycle<'c>(self) -> Batch<'c> {
        // Every command has at least its name, so `cmds` never holds more entries than `args`.
        if self.args.capacity() > KEPT_ARGS {
            return Batch::default();
        }
        let mut cmds = self.cmds;
        cmds.clear();
        Batch {
            args: recycle(self.args),
            cmds,
        }
    }
}

/// `args`'s allocation, emptied, for arguments of another lifetime (a new vector if it grew past
/// [`KEPT_ARGS`]). Collecting a vector's own iterator into a vector of a type of the same size reuses its
/// allocation (the standard library does this in place), and an emptied vector has no element to convert.
pub(super) fn recycle<'c>(mut args: Vec<Bytes<'_>>) -> Vec<Bytes<'c>> {
    if args.capacity() > KEPT_ARGS {
        return Vec::new();
    }
    args.clear();
    args.into_iter().map(|_| unreachable!("emptied above")).collect()
}

/// Runs `cmds` (each its arguments, the name first, already allowed by the policy) and writes one reply per
/// command, in order. Several commands are one round trip, except in cluster mode, where each goes alone to
/// its shard.
pub(super) async fn batch(resp: &Resp, cmds: &Batch<'_>, out: &mut Out) {
    let cached_reads = resp.serve_cached_reads.load(std::sync::atomic::Ordering::Relaxed);
    if cmds.len() == 1 || resp.cluster {
        for (cmd, row) in cmds.iter() {
            let started = Instant::now();
            let result = one(resp, cmd, row, cached_reads, out).await;
            record_took(resp, row, result, started.elapsed());
        }
        return;
    }
    let started = Instant::now();
    let items: Vec<Item<'_>> = cmds
        .iter()
        .map(
            |(cmd, row)| match cached_reads.then(|| as_typed_read(cmd, row)).flatten() {
                Some(op) => Item::Op(op),
                None => Item::Raw {
                    args: cmd.to_vec(),
                    position: row,
                },
            },
        )
        .collect();
    let answers = resp.client.execute_batch(&items).await;
    // What each client waited: the batch's time, read once for all of its commands.
    let took = started.elapsed();
    for ((item, answer), (_, row)) in items.into_iter().zip(answers).zip(cmds.iter()) {
        record_took(resp, row, batch_result(&answer), took);
        match answer {
            Ok(served) => slot_reply(out, item, served),
            Err(BatchError::Redis(message)) => out.redis_error(&message),
            Err(BatchError::Call(e)) => {
                call_error(out, &e);
            }
        }
    }
}

/// The reply to one command of a batch or transaction that Redis (or the cache) answered.
fn slot_reply(out: &mut Out, item: Item<'_>, served: Served) {
    match item {
        Item::Op(op) => served_reply(out, &op, &served),
        Item::Raw { args, .. } => match served.reply {
            Reply::Raw(v) => raw_reply(out, &args, v),
            reply => reply_value(out, &reply),
        },
    }
}

/// One command on its own; what it was answered with.
async fn one(resp: &Resp, cmd: &[Bytes<'_>], row: Option<usize>, cached_reads: bool, out: &mut Out) -> RespResult {
    if resp.cluster {
        if let Some(result) = Box::pin(split_by_slot(resp, cmd, cached_reads, out)).await {
            return result;
        }
    }
    if let Some(op) = cached_reads.then(|| as_typed_read(cmd, row)).flatten() {
        return match resp.client.execute(&op, READS).await {
            Ok(served) => {
                served_reply(out, &op, &served);
                RespResult::Ok
            }
            Err(e) => call_error(out, &e),
        };
    }
    match resp.client.execute_raw(cmd, row).await {
        Ok(value) => {
            raw_reply(out, cmd, value);
            RespResult::Ok
        }
        Err(e) => call_error(out, &e),
    }
}

/// How the answers of a multi-key command split by slot are put back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merge {
    /// MGET: each key's value, in the order the client gave the keys.
    Values,
    /// DEL, UNLINK, EXISTS, TOUCH: the sum of the counts.
    Sum,
}

fn merge_of(name: &[u8]) -> Option<Merge> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("MGET") {
        Some(Merge::Values)
    } else if is("DEL") || is("UNLINK") || is("EXISTS") || is("TOUCH") {
        Some(Merge::Sum)
    } else {
        None
    }
}

/// The keys of `keys` grouped by hash slot, each with its position, in slot order; `None` when all share one
/// slot (nothing to split).
fn slot_groups<'k, 'a>(keys: &'k [Bytes<'a>]) -> Option<Vec<Vec<(usize, &'k Bytes<'a>)>>> {
    let mut groups: std::collections::BTreeMap<u16, Vec<(usize, &Bytes<'a>)>> = Default::default();
    for (i, key) in keys.iter().enumerate() {
        groups.entry(commands::key_slot(key)).or_default().push((i, key));
    }
    (groups.len() > 1).then(|| groups.into_values().collect())
}

/// Cluster mode: a multi-key command whose keys span slots, which Redis would refuse with CROSSSLOT, is sent
/// as one command per slot and the answers merged, where Redis's semantics allow it (MGET, DEL, UNLINK, EXISTS,
/// TOUCH; not atomic across slots, as in every cluster proxy). `None` for any other command, which goes as it
/// is (and gets Redis's CROSSSLOT if its keys span slots). A failure of any part answers the whole command with
/// that failure.
async fn split_by_slot(resp: &Resp, cmd: &[Bytes<'_>], cached_reads: bool, out: &mut Out) -> Option<RespResult> {
    let merge = merge_of(&cmd[0])?;
    let groups = slot_groups(cmd.get(1..)?)?;
    let mut values: Vec<Option<Vec<u8>>> = vec![None; cmd.len() - 1];
    let mut sum = 0i64;
    for group in groups {
        let keys: Vec<Bytes<'_>> = group.iter().map(|(_, k)| (*k).clone()).collect();
        let answer = match merge {
            Merge::Values if cached_reads => match resp.client.execute(&Op::MGet { keys }, READS).await {
                Ok(served) => per_key(served.reply, group.len()),
                Err(e) => Err(e),
            },
            _ => {
                let mut part = Vec::with_capacity(keys.len() + 1);
                part.push(cmd[0].clone());
                part.extend(keys);
                resp.client
                    .execute_raw(&part, commands::position(&part[0]))
                    .await
                    .map(|v| match v {
                        Value::Array(items) => items.into_iter().map(|i| crate::client::bulk_bytes(i).ok()).collect(),
                        Value::Int(n) => {
                            sum += n;
                            Vec::new()
                        }
                        _ => Vec::new(),
                    })
            }
        };
        match answer {
            Ok(found) => {
                for ((i, _), v) in group.iter().zip(found) {
                    values[*i] = v;
                }
            }
            Err(e) => return Some(call_error(out, &e)),
        }
    }
    match merge {
        Merge::Values => {
            out.array(values.len());
            for v in &values {
                match v {
                    Some(b) => out.bulk(b),
                    None => out.nil(),
                }
            }
        }
        Merge::Sum => out.int(sum),
    }
    Some(RespResult::Ok)
}

/// A typed MGET's answer as one value (or none) per key.
fn per_key(reply: Reply, keys: usize) -> Result<Vec<Option<Vec<u8>>>, CallError> {
    Ok(match reply {
        Reply::Values(values) => values,
        Reply::Sourced(values) => values.into_iter().map(|(v, _)| v).collect(),
        _ => vec![None; keys],
    })
}

/// Counts one command in `redguard_api_requests_total{listener="resp"}` and its duration (for a batch, the
/// batch's: what the client waited).
pub(super) fn record(resp: &Resp, cmd: &[Bytes<'_>], result: RespResult, started: Instant) {
    record_took(resp, commands::position(&cmd[0]), result, started.elapsed());
}

/// [`record`] for a command whose row ([`commands::position`]) is known.
fn record_took(resp: &Resp, row: Option<usize>, result: RespResult, took: Duration) {
    resp.client.metrics().observe_resp(row, result, took.as_secs_f64());
}

fn batch_result(answer: &Result<Served, BatchError>) -> RespResult {
    match answer {
        Ok(_) => RespResult::Ok,
        Err(BatchError::Redis(_)) => RespResult::RedisError,
        Err(BatchError::Call(e)) => error_result(e),
    }
}

fn error_result(e: &CallError) -> RespResult {
    match e {
        CallError::CircuitOpen { .. } => RespResult::CircuitOpen,
        CallError::Unavailable { .. } => RespResult::Unavailable,
        CallError::Timeout { .. } => RespResult::Timeout,
        CallError::Redis(_) => RespResult::RedisError,
    }
}

/// Redis's reply to a raw command, reshaped for a RESP3 connection ([`resp3::reshape`]).
pub(super) fn raw_reply(out: &mut Out, args: &[Bytes<'_>], value: Value) {
    match out.proto {
        Proto::Resp2 => out.value(&value),
        Proto::Resp3 => out.value(&resp3::reshape(args, value)),
    }
}

/// Runs a transaction's queued commands in MULTI/EXEC: EXEC's reply is one answer per command, or one error
/// for all (Redis refused the transaction, or could not be asked: then nothing is reported as done).
pub(super) async fn exec(resp: &Resp, queued: &[Vec<Vec<u8>>], out: &mut Out) -> RespResult {
    if queued.is_empty() {
        out.array(0);
        return RespResult::Ok;
    }
    let items: Vec<Item<'_>> = queued
        .iter()
        .map(|cmd| {
            let args: Vec<Bytes<'_>> = cmd.iter().map(|a| Bytes::Borrowed(a.as_slice())).collect();
            let position = commands::position(&args[0]);
            match as_typed_read(&args, position) {
                Some(op) => Item::Op(op),
                None => Item::Raw { args, position },
            }
        })
        .collect();
    match resp.client.execute_pipeline(&items, true).await {
        Ok(answers) => {
            out.array(answers.len());
            for (item, answer) in items.into_iter().zip(answers) {
                match answer {
                    Ok(served) => slot_reply(out, item, served),
                    Err(message) => out.redis_error(&message),
                }
            }
            RespResult::Ok
        }
        Err(e) => call_error(out, &e),
    }
}

/// The typed op for a cacheable read with the arguments its op takes; `None` for anything else (sent raw).
/// `row` is the command's [`commands::position`] (a container command, CLIENT or OBJECT, is never one).
fn as_typed_read<'a>(cmd: &[Bytes<'a>], row: Option<usize>) -> Option<Op<'a>> {
    let row = commands::all().get(row?)?;
    let key = || cmd[1].clone();
    match (row.cached?, cmd.len()) {
        (Cached::String, 2) => Some(Op::Get { key: key() }),
        (Cached::HashField, 3) => Some(Op::HGet {
            key: key(),
            field: cmd[2].clone(),
        }),
        (Cached::Hash, 2) => Some(Op::HGetAll { key: key() }),
        (Cached::Strings, n) if n >= 2 => Some(Op::MGet {
            keys: cmd[1..].to_vec(),
        }),
        _ => None,
    }
}

/// A typed read's answer, in the shape Redis would have given it; a default stands in as Redis's empty answer.
fn served_reply(out: &mut Out, op: &Op<'_>, served: &Served) {
    match (&served.reply, op) {
        (Reply::Nil, Op::HGetAll { .. }) => out.map(0),
        (Reply::Nil, Op::MGet { keys }) => {
            out.array(keys.len());
            keys.iter().for_each(|_| out.nil());
        }
        (reply, _) => reply_value(out, reply),
    }
}

fn reply_value(out: &mut Out, reply: &Reply) {
    match reply {
        Reply::Nil => out.nil(),
        Reply::Bool(b) => out.int(i64::from(*b)),
        Reply::Int(n) => out.int(*n),
        Reply::Float(f) => out.value(&Value::Double(*f)),
        Reply::Bytes(b) => out.bulk(b),
        Reply::Hash(pairs) => {
            out.map(pairs.len());
            for (k, v) in pairs {
                out.bulk(k);
                out.bulk(v);
            }
        }
        Reply::Members(members) => {
            out.array(members.len());
            members.iter().for_each(|m| out.bulk(m));
        }
        Reply::Scored(pairs) => {
            out.array(2 * pairs.len());
            for (m, score) in pairs {
                out.bulk(m);
                out.value(&Value::Double(*score));
            }
        }
        Reply::Values(values) => {
            out.array(values.len());
            for v in values {
                match v {
                    Some(b) => out.bulk(b),
                    None => out.nil(),
                }
            }
        }
        Reply::Sourced(values) => {
            out.array(values.len());
            for (v, _) in values {
                match v {
                    Some(b) => out.bulk(b),
                    None => out.nil(),
                }
            }
        }
        Reply::Time { seconds, microseconds } => {
            out.array(2);
            out.bulk(itoa::Buffer::new().format(*seconds).as_bytes());
            out.bulk(itoa::Buffer::new().format(*microseconds).as_bytes());
        }
        Reply::Raw(v) => out.value(v),
    }
}

/// The error reply for a call nothing could answer (see the module docs for the first words).
pub(super) fn call_error(out: &mut Out, e: &CallError) -> RespResult {
    let kept = |cached: bool| {
        if cached {
            "; the written value is kept in this pod's fallback cache only, not in Redis"
        } else {
            ""
        }
    };
    match e {
        CallError::CircuitOpen {
            retry_after: Some(wait),
            cached,
        } => out.error(
            CIRCUIT_OPEN,
            &format!(
                "redguard: circuit open, Redis not called; retry after {:.3}s{}",
                wait.as_secs_f64(),
                kept(*cached)
            ),
        ),
        CallError::CircuitOpen {
            retry_after: None,
            cached,
        } => out.error(
            CIRCUIT_OPEN,
            &format!(
                "redguard: circuit forced open by an operator, Redis not called{}",
                kept(*cached)
            ),
        ),
        CallError::Unavailable { message, cached } => out.error(
            UNAVAILABLE,
            &format!("redguard: Redis unavailable: {message}{}", kept(*cached)),
        ),
        CallError::Timeout { cached } => out.error(
            TIMEOUT,
            &format!(
                "redguard: Redis did not answer within redis.command_timeout; the command may or may not have \
                 run{}",
                kept(*cached)
            ),
        ),
        CallError::Redis(message) => out.redis_error(message),
    }
    error_result(e)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::resp::test_args as args;

    #[test]
    fn a_batch_keeps_its_commands_in_order_and_its_vectors_for_the_next_one() {
        // Capacities no batch of two commands grows to by itself, so that the vectors read back after
        // `recycle` are surely the ones it was given (glibc may hand a freed block out again at the same
        // address, so addresses would not tell).
        let mut batch = Batch {
            args: Vec::with_capacity(37),
            cmds: Vec::with_capacity(23),
        };
        batch.push(&args("SET k v"), commands::position(b"SET"));
        batch.push(&args("GET k"), None);
        assert_eq!((batch.len(), batch.is_empty()), (2, false));
        let cmds: Vec<(Vec<Bytes<'_>>, Option<usize>)> = batch.iter().map(|(c, p)| (c.to_vec(), p)).collect();
        assert_eq!(
            cmds,
            vec![(args("SET k v"), commands::position(b"SET")), (args("GET k"), None)]
        );

        let next: Batch<'_> = batch.recycle();
        assert!(next.is_empty() && next.args.is_empty());
        assert_eq!(
            (next.args.capacity(), next.cmds.capacity()),
            (37, 23),
            "the same vectors"
        );

        let mut full = Batch {
            args: Vec::with_capacity(KEPT_ARGS),
            cmds: Vec::new(),
        };
        full.push(&args("GET k"), None);
        full.clear();
        assert!(full.is_empty() && full.args.is_empty(), "cleared");
        assert_eq!(full.recycle().args.capacity(), KEPT_ARGS, "at the bound: kept");

        let mut large = Batch::default();
        let one = args("GET k");
        (0..KEPT_ARGS).for_each(|_| large.push(&one, None));
        assert!(large.args.capacity() > KEPT_ARGS);
        let next = large.recycle();
        assert_eq!(
            (next.args.capacity(), next.cmds.capacity()),
            (0, 0),
            "too large to keep"
        );

        let mut kept = Vec::with_capacity(KEPT_ARGS);
        kept.push(Bytes::Borrowed(b"x".as_slice()));
        let again = recycle(kept);
        assert_eq!(
            (again.len(), again.capacity()),
            (0, KEPT_ARGS),
            "the same vector, emptied"
        );
        assert_eq!(recycle(Vec::with_capacity(KEPT_ARGS + 1)).capacity(), 0);
    }

    #[test]
    fn the_cacheable_reads_become_typed_ops_with_their_exact_arguments() {
        let as_typed_read = |cmd: &[Bytes<'static>]| as_typed_read(cmd, commands::position(&cmd[0]));
        assert!(matches!(as_typed_read(&args("get k")), Some(Op::Get { key }) if key == b"k".as_slice()));
        assert!(matches!(as_typed_read(&args("HGET h f")), Some(Op::HGet { .. })));
        assert!(matches!(as_typed_read(&args("HGETALL h")), Some(Op::HGetAll { .. })));
        assert!(matches!(as_typed_read(&args("MGET a b c")), Some(Op::MGet { keys }) if keys.len() == 3));
        // Wrong arity goes raw, so Redis gives its own error.
        assert_eq!(as_typed_read(&args("GET a b")), None);
        assert_eq!(as_typed_read(&args("MGET")), None);
        assert_eq!(as_typed_read(&args("HGET h")), None);
        assert_eq!(as_typed_read(&args("SET k v")), None);
        assert_eq!(as_typed_read(&args("GETDEL k")), None);
    }

    #[test]
    fn failures_start_with_a_word_that_says_what_happened() {
        let text = |e: CallError| {
            let mut out = Out::new();
            call_error(&mut out, &e);
            String::from_utf8(out.buf).unwrap()
        };
        let open = text(CallError::CircuitOpen {
            retry_after: Some(Duration::from_millis(1500)),
            cached: false,
        });
        assert_eq!(
            open,
            "-CIRCUITOPEN redguard: circuit open, Redis not called; retry after 1.500s\r\n"
        );
        assert!(text(CallError::CircuitOpen {
            retry_after: None,
            cached: false
        })
        .starts_with("-CIRCUITOPEN redguard: circuit forced open"));
        let down = text(CallError::Unavailable {
            message: "Connection refused".into(),
            cached: true,
        });
        assert!(down.starts_with("-UNAVAILABLE redguard: Redis unavailable: Connection refused; the written"));
        assert!(text(CallError::Timeout { cached: false }).starts_with("-TIMEOUT redguard: "));
        assert_eq!(text(CallError::Redis("WRONGTYPE bad".into())), "-WRONGTYPE bad\r\n");
    }

    #[test]
    fn a_default_stands_in_as_redis_s_empty_answer() {
        let served = Served {
            reply: Reply::Nil,
            source: crate::client::Source::Default,
            cached: false,
        };
        let mut out = Out::new();
        served_reply(
            &mut out,
            &Op::HGetAll {
                key: Cow::Borrowed(b"h"),
            },
            &served,
        );
        served_reply(&mut out, &Op::MGet { keys: args("a b") }, &served);
        served_reply(
            &mut out,
            &Op::Get {
                key: Cow::Borrowed(b"k"),
            },
            &served,
        );
        assert_eq!(out.buf, b"*0\r\n*2\r\n$-1\r\n$-1\r\n$-1\r\n");
    }
}
