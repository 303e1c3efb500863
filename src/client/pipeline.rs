//! Pipelines: many commands, typed or raw, in one round trip and one breaker call; atomic ones in MULTI/EXEC.
//!
//! Each command gets its own answer, in order: its reply, or the application error Redis gave it alone
//! (inside MULTI/EXEC too: Redis runs the commands after a failing one). A typed op's reply goes through the
//! same `answer_and_update_cache` (`answer.rs`) as on `/v1/cmd`, so it updates the cache exactly as it would alone, with the PTTL probes that
//! go with it on `/v1/cmd` sent in the same batch, after all the caller's commands (so that the positions in
//! Redis's answers, EXECABORT's included, stay the caller's; inside a transaction they see the TTLs the
//! transaction leaves); a raw command drops the cached keys it names. A transaction Redis refuses to run at all (EXECABORT, for a command it rejected
//! while queueing) is one error for the whole call.
//!
//! When Redis cannot be asked: a non-atomic pipeline made only of reads is answered slot by slot from the
//! fallback (each slot says its own source); anything else fails as a whole (no command in it is reported
//! as done), with each typed write's cache entry handled as a failed write alone would be.

use super::answer::{pttl_cmd, Ttls};
use super::raw::raw_cmd;
use super::{CallError, Failure, Resilient, Served, Source, Unanswered};
use crate::backend::{Backend, SlotReply};
use crate::commands;
use crate::metrics::RedisCall;
use crate::op::cmd::script_cmd;
use crate::op::{Bytes, Fallback, Op};

/// One command of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    Op(Op<'a>),
    /// A raw command: its arguments, the name first, and the name's [`commands::position`], found once by
    /// whoever built the item (the policy judged it by that position already; see [`Item::raw`]).
    Raw {
        args: Vec<Bytes<'a>>,
        position: Option<usize>,
    },
}

impl<'a> Item<'a> {
    /// A raw command, its name looked up in the command table.
    pub fn raw(args: Vec<Bytes<'a>>) -> Item<'a> {
        let position = args.first().and_then(|name| commands::position(name));
        Item::Raw { args, position }
    }
}

/// One slot's answer: served, or the application error for that command alone.
pub type SlotAnswer = Result<Served, String>;

/// Why one command of a batch ([`Resilient::execute_batch`]) was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Redis answered this command with an error.
    Redis(String),
    /// Redis could not be asked (or the circuit is open), and nothing can stand in for this command.
    Call(CallError),
}

impl<B: Backend> Resilient<B> {
    /// Runs `items` as one pipeline (see the module docs).
    pub async fn execute_pipeline(&self, items: &[Item<'_>], atomic: bool) -> Result<Vec<SlotAnswer>, CallError> {
        match self.send(items, atomic).await {
            Ok(answers) => Ok(answers),
            // EXECABORT: Redis ran none of it.
            Err(Unanswered::App(message)) => Err(CallError::Redis(message)),
            Err(Unanswered::Failed(failure)) => self.pipeline_fallback(items, atomic, failure),
        }
    }

    /// Runs `items` as one non-atomic batch, as pipelined commands on the RESP socket: one round trip and one
    /// breaker call, like [`Resilient::execute_pipeline`], but when Redis cannot be asked each command is
    /// answered on its own, as it would be alone: a cacheable read from the fallback cache (or its default),
    /// anything else with the error, its cache entry handled as a failed write alone would be.
    pub async fn execute_batch(&self, items: &[Item<'_>]) -> Vec<Result<Served, BatchError>> {
        match self.send(items, false).await {
            Ok(answers) => answers.into_iter().map(|a| a.map_err(BatchError::Redis)).collect(),
            Err(Unanswered::App(message)) => items.iter().map(|_| Err(BatchError::Redis(message.clone()))).collect(),
            Err(Unanswered::Failed(failure)) => items
                .iter()
                .map(|item| match item {
                    Item::Op(op) if op.fallback() == Fallback::Cache => Ok(self.read_fallback(op)),
                    Item::Op(op) => {
                        let cached = self.forget_failed_write(op, &failure);
                        Err(BatchError::Call(failure.clone().into_error(cached)))
                    }
                    Item::Raw { args, position } => {
                        if failure.reached_redis() {
                            self.forget_raw(args, *position);
                        }
                        Err(BatchError::Call(failure.clone().into_error(false)))
                    }
                })
                .collect(),
        }
    }

    /// Sends `items` (with the PTTL probes of the typed reads behind them) and settles each slot's answer.
    async fn send(&self, items: &[Item<'_>], atomic: bool) -> Result<Vec<SlotAnswer>, Unanswered> {
        let asked = self.cache.now();
        // Built only once the breaker has granted the call: an open circuit turns the batch away without the
        // work (a command and its buffers per item).
        let send = || async move {
            let mut pipe = redis::pipe();
            if atomic {
                pipe.atomic();
            }
            for item in items {
                pipe.add_command(self.item_cmd(item));
            }
            for item in items {
                for key in self.item_probes(item) {
                    pipe.add_command(pttl_cmd(key));
                }
            }
            self.backend.pipeline(&pipe).await
        };
        let mut slots = self.guarded(RedisCall::Pipeline, send).await?;
        let answered = items.len().min(slots.len());
        let (replies, probed) = slots.split_at_mut(answered);
        let mut probed: &[SlotReply] = probed;
        let mut answers = Vec::with_capacity(items.len());
        for (item, slot) in items.iter().zip(replies) {
            let (ttls, rest) = probed.split_at(self.item_probes(item).len().min(probed.len()));
            probed = rest;
            let slot = std::mem::replace(slot, Ok(redis::Value::Nil));
            answers.push(self.settle(item, slot, Ttls { asked, replies: ttls }));
        }
        Ok(answers)
    }

    fn item_cmd(&self, item: &Item<'_>) -> redis::Cmd {
        match item {
            Item::Raw { args, .. } => raw_cmd(args),
            // No second round trip can follow a NOSCRIPT here, so a script whose body is known goes by body.
            Item::Op(Op::EvalSha { sha, keys, args }) => match self.script_body(sha) {
                Some(body) => script_cmd("EVAL", &body, keys, args),
                None => script_cmd("EVALSHA", sha, keys, args),
            },
            Item::Op(op) => op.to_cmd(),
        }
    }

    /// The keys whose PTTL is sent behind `item` (none for a raw command: it fills nothing).
    fn item_probes<'i, 'a>(&self, item: &'i Item<'a>) -> &'i [Bytes<'a>] {
        match item {
            Item::Op(op) => self.ttl_probes(op),
            Item::Raw { .. } => &[],
        }
    }

    /// One slot's reply becomes its answer; the cache learns from it as it would from the command alone.
    fn settle(&self, item: &Item<'_>, slot: SlotReply, ttls: Ttls<'_>) -> SlotAnswer {
        match (item, slot) {
            (Item::Op(op), Ok(value)) => self
                .answer_and_update_cache(op, value, ttls)
                .map(Served::redis)
                .map_err(|e| match e {
                    CallError::Redis(message) => message,
                    other => format!("{other:?}"),
                }),
            (Item::Op(op), Err(message)) => {
                self.forget_after_app_error(op);
                Err(message)
            }
            (Item::Raw { args, position }, Ok(value)) => {
                self.forget_raw(args, *position);
                Ok(Served::redis(super::Reply::Raw(value)))
            }
            (Item::Raw { args, position }, Err(message)) => {
                self.forget_raw_after_error(args, *position);
                Err(message)
            }
        }
    }

    fn pipeline_fallback(
        &self,
        items: &[Item<'_>],
        atomic: bool,
        failure: Failure,
    ) -> Result<Vec<SlotAnswer>, CallError> {
        let only_reads = !atomic
            && items
                .iter()
                .all(|item| matches!(item, Item::Op(op) if op.fallback() == Fallback::Cache));
        if only_reads {
            let answers = items.iter().map(|item| match item {
                Item::Op(op) => Ok(self.read_fallback(op)),
                Item::Raw { .. } => unreachable!("only typed reads get here"),
            });
            return Ok(answers.collect());
        }
        // `cached` is true only if every write of the pipeline was kept: a raw command's effects never are,
        // and a typed write may be refused by the cache.
        let (mut writes, mut kept) = (0, 0);
        for item in items {
            match item {
                Item::Op(op) => {
                    // Counted as a write: every op the cache does not answer (EXISTS, TTL and PING too).
                    let uncached = matches!(op.fallback(), Fallback::NoCache(_));
                    let was_kept = self.forget_failed_write(op, &failure);
                    writes += usize::from(uncached);
                    kept += usize::from(uncached && was_kept);
                }
                Item::Raw { args, position } => {
                    writes += 1;
                    if failure.reached_redis() {
                        self.forget_raw(args, *position);
                    }
                }
            }
        }
        Err(failure.into_error(writes > 0 && kept == writes))
    }
}

/// Where a pipeline's answers came from, as a whole: Redis, or (for a fallback) the cache if any slot was.
pub fn pipeline_source(answers: &[SlotAnswer]) -> Source {
    let sources = answers.iter().filter_map(|a| a.as_ref().ok()).map(|s| s.source);
    let mut overall = Source::Redis;
    for source in sources {
        match source {
            Source::Redis => return Source::Redis,
            Source::Cache => overall = Source::Cache,
            Source::Default if overall != Source::Cache => overall = Source::Default,
            Source::Default => {}
        }
    }
    overall
}
