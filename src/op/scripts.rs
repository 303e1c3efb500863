//! Script ops: `eval`, `evalsha`.
//!
//! A script's effects cannot be modelled, so whatever Redis says (an answer, an error: a script may have
//! written before it failed; or nothing) drops every cached key it names, in `keys` and in `args`, and there is
//! no fallback answer. The client may send `eval` as EVALSHA first (`client::scripts`), built with
//! [`script_cmd`] so both forms carry the same keys and arguments.

use std::borrow::Cow;

use redis::Value;

use super::cmd::script_cmd;
use super::{not_in_family, Fallback, Family, Op, OpName};
use crate::api::error::ApiError;
use crate::api::request::{bad, Parser};
use crate::cache::FallbackCache;
use crate::client::{forget_named, Reply, Ttls};

pub(super) struct Scripts;

impl Family for Scripts {
    fn fields(name: OpName) -> &'static [&'static str] {
        match name {
            OpName::Eval => &["script", "keys", "args"],
            OpName::EvalSha => &["sha", "keys", "args"],
            other => not_in_family("script", other),
        }
    }

    fn parse<'a>(name: OpName, p: &Parser<'_, 'a>) -> Result<Op<'a>, ApiError> {
        Ok(match name {
            OpName::Eval => {
                let script = p.raw.script.as_ref().ok_or_else(|| p.need("script"))?;
                if script.0.trim().is_empty() {
                    return Err(bad("field `script` must not be empty"));
                }
                let (keys, args) = p.script_parts()?;
                Op::Eval {
                    script: script.0.clone(),
                    keys,
                    args,
                }
            }
            OpName::EvalSha => {
                let sha = p.raw.sha.as_ref().ok_or_else(|| p.need("sha"))?;
                if sha.0.len() != 40 || !sha.0.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("field `sha` must be the 40 hex digits of a script's SHA1"));
                }
                let (keys, args) = p.script_parts()?;
                Op::EvalSha {
                    sha: Cow::Owned(sha.0.to_ascii_lowercase()),
                    keys,
                    args,
                }
            }
            other => not_in_family("script", other),
        })
    }

    fn to_cmd(op: &Op<'_>) -> redis::Cmd {
        match op {
            Op::Eval { script, keys, args } => script_cmd("EVAL", script, keys, args),
            Op::EvalSha { sha, keys, args } => script_cmd("EVALSHA", sha, keys, args),
            other => not_in_family("script", other.name()),
        }
    }

    fn fallback(_name: OpName) -> Fallback {
        // A script's result cannot be made up.
        Fallback::NoCache(None)
    }

    fn answer(op: &Op<'_>, value: Value, _ttls: Ttls<'_>, cache: &FallbackCache) -> Result<Reply, Value> {
        forget_script_keys(op, cache);
        Ok(Reply::Raw(value))
    }

    fn forget_failed_write(op: &Op<'_>, cache: &FallbackCache, reached_redis: bool) -> bool {
        if reached_redis {
            forget_script_keys(op, cache);
        }
        false
    }

    fn forget_after_app_error(op: &Op<'_>, cache: &FallbackCache) {
        forget_script_keys(op, cache);
    }
}

/// Drops every cached key a script names, in `keys` and in `args`.
fn forget_script_keys(op: &Op<'_>, cache: &FallbackCache) {
    if let Op::Eval { keys, args, .. } | Op::EvalSha { keys, args, .. } = op {
        forget_named(cache, keys.iter().chain(args));
    }
}

#[cfg(test)]
mod tests {
    use super::super::cmd::tests::{args, k};
    use super::*;

    #[test]
    fn script_ops_become_the_expected_commands() {
        let eval = Op::Eval {
            script: Cow::Borrowed("return 1"),
            keys: vec![k("k1"), k("k2")],
            args: vec![k("x")],
        };
        assert_eq!(args(&eval.to_cmd()), ["EVAL", "return 1", "2", "k1", "k2", "x"]);
        let evalsha = Op::EvalSha {
            sha: Cow::Borrowed("abc"),
            keys: vec![],
            args: vec![],
        };
        assert_eq!(args(&evalsha.to_cmd()), ["EVALSHA", "abc", "0"]);
    }
}
