//! Each op as the Redis command it sends.
//!
//! `eval` is sent here as a plain EVAL; the client may first try EVALSHA with the script's hash (see
//! `client::scripts`), built with [`script_cmd`] so both forms carry the same keys and arguments.

use super::{Bytes, Op};

impl Op<'_> {
    /// The Redis command for this op.
    pub fn to_cmd(&self) -> redis::Cmd {
        let mut cmd;
        match self {
            Op::Get { key } => {
                cmd = sized("GET", 1, key.len());
                cmd.arg(key.as_ref());
            }
            Op::Set {
                key,
                value,
                ttl_ms,
                nx,
                xx,
            } => {
                // Room for PX ms NX: the optional arguments are short.
                cmd = sized("SET", 5, key.len() + value.len() + 32);
                cmd.arg(key.as_ref()).arg(value.as_ref());
                if let Some(ms) = ttl_ms {
                    cmd.arg("PX").arg(*ms);
                }
                if *nx {
                    cmd.arg("NX");
                }
                if *xx {
                    cmd.arg("XX");
                }
            }
            Op::Del { keys } => cmd = with_all(redis::cmd("DEL"), keys),
            Op::Exists { keys } => cmd = with_all(redis::cmd("EXISTS"), keys),
            Op::Expire { key, seconds } => {
                cmd = redis::cmd("EXPIRE");
                cmd.arg(key.as_ref()).arg(*seconds);
            }
            Op::Ttl { key } => {
                cmd = redis::cmd("TTL");
                cmd.arg(key.as_ref());
            }
            Op::Incr { key, by } => {
                cmd = redis::cmd("INCRBY");
                cmd.arg(key.as_ref()).arg(*by);
            }
            Op::HGet { key, field } => {
                cmd = redis::cmd("HGET");
                cmd.arg(key.as_ref()).arg(field.as_ref());
            }
            Op::HGetAll { key } => {
                cmd = redis::cmd("HGETALL");
                cmd.arg(key.as_ref());
            }
            Op::HSet { key, fields } => {
                cmd = redis::cmd("HSET");
                cmd.arg(key.as_ref());
                fields.iter().for_each(|(f, v)| {
                    cmd.arg(f.as_ref()).arg(v.as_ref());
                });
            }
            Op::HDel { key, fields } => {
                cmd = redis::cmd("HDEL");
                cmd.arg(key.as_ref());
                cmd = with_all(cmd, fields);
            }
            Op::Ping => cmd = redis::cmd("PING"),
            Op::ZAdd { key, members } => {
                cmd = redis::cmd("ZADD");
                cmd.arg(key.as_ref());
                members.iter().for_each(|(score, member)| {
                    cmd.arg(*score).arg(member.as_ref());
                });
            }
            Op::ZCard { key } => {
                cmd = redis::cmd("ZCARD");
                cmd.arg(key.as_ref());
            }
            Op::ZScore { key, member } => {
                cmd = redis::cmd("ZSCORE");
                cmd.arg(key.as_ref()).arg(member.as_ref());
            }
            Op::ZIncrBy { key, member, by } => {
                cmd = redis::cmd("ZINCRBY");
                cmd.arg(key.as_ref()).arg(*by).arg(member.as_ref());
            }
            Op::ZRange {
                key,
                start,
                stop,
                withscores,
            } => {
                cmd = redis::cmd("ZRANGE");
                cmd.arg(key.as_ref()).arg(*start).arg(*stop);
                if *withscores {
                    cmd.arg("WITHSCORES");
                }
            }
            Op::ZRangeByScore {
                key,
                min,
                max,
                withscores,
                limit,
            } => {
                cmd = redis::cmd("ZRANGEBYSCORE");
                cmd.arg(key.as_ref()).arg(min.as_ref()).arg(max.as_ref());
                if *withscores {
                    cmd.arg("WITHSCORES");
                }
                if let Some((offset, count)) = limit {
                    cmd.arg("LIMIT").arg(*offset).arg(*count);
                }
            }
            Op::ZRemRangeByScore { key, min, max } => {
                cmd = redis::cmd("ZREMRANGEBYSCORE");
                cmd.arg(key.as_ref()).arg(min.as_ref()).arg(max.as_ref());
            }
            Op::ZRem { key, members } => {
                cmd = redis::cmd("ZREM");
                cmd.arg(key.as_ref());
                cmd = with_all(cmd, members);
            }
            Op::Time => cmd = redis::cmd("TIME"),
            Op::MGet { keys } => cmd = with_all(redis::cmd("MGET"), keys),
            Op::MSet { pairs } => {
                cmd = redis::cmd("MSET");
                pairs.iter().for_each(|(k, v)| {
                    cmd.arg(k.as_ref()).arg(v.as_ref());
                });
            }
            Op::Eval { script, keys, args } => cmd = script_cmd("EVAL", script, keys, args),
            Op::EvalSha { sha, keys, args } => cmd = script_cmd("EVALSHA", sha, keys, args),
        }
        cmd
    }
}

/// A command with room for `args` more arguments of `bytes` in all, for the ops on every request's path:
/// `redis::cmd` starts empty and grew its buffers twice for a GET.
fn sized(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(1 + args, name.len() + bytes);
    cmd.arg(name);
    cmd
}

fn with_all(mut cmd: redis::Cmd, args: &[Bytes<'_>]) -> redis::Cmd {
    args.iter().for_each(|a| {
        cmd.arg(a.as_ref());
    });
    cmd
}

/// `EVAL script numkeys key.. arg..` or `EVALSHA sha numkeys key.. arg..`.
pub fn script_cmd(name: &str, head: &str, keys: &[Bytes<'_>], args: &[Bytes<'_>]) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(head).arg(keys.len());
    with_all(with_all(cmd, keys), args)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    fn k(s: &'static str) -> Bytes<'static> {
        Cow::Borrowed(s.as_bytes())
    }

    #[test]
    fn ops_become_the_expected_commands() {
        let set = Op::Set {
            key: k("a"),
            value: k("v"),
            ttl_ms: Some(1500),
            nx: true,
            xx: false,
        };
        assert_eq!(args(&set.to_cmd()), ["SET", "a", "v", "PX", "1500", "NX"]);
        assert_eq!(args(&Op::Incr { key: k("n"), by: -3 }.to_cmd()), ["INCRBY", "n", "-3"]);
        let hset = Op::HSet {
            key: k("h"),
            fields: vec![(k("f1"), k("1")), (k("f2"), k("2"))],
        };
        assert_eq!(args(&hset.to_cmd()), ["HSET", "h", "f1", "1", "f2", "2"]);
        assert_eq!(
            args(
                &Op::Del {
                    keys: vec![k("a"), k("b")]
                }
                .to_cmd()
            ),
            ["DEL", "a", "b"]
        );
    }

    #[test]
    fn sorted_set_and_script_ops_become_the_expected_commands() {
        let zadd = Op::ZAdd {
            key: k("z"),
            members: vec![(1.5, k("a")), (-2.0, k("b"))],
        };
        assert_eq!(args(&zadd.to_cmd()), ["ZADD", "z", "1.5", "a", "-2.0", "b"]);
        let incr = Op::ZIncrBy {
            key: k("z"),
            member: k("a"),
            by: 0.25,
        };
        assert_eq!(args(&incr.to_cmd()), ["ZINCRBY", "z", "0.25", "a"]);
        let range = Op::ZRangeByScore {
            key: k("z"),
            min: Cow::Borrowed("(1"),
            max: Cow::Borrowed("+inf"),
            withscores: true,
            limit: Some((2, 10)),
        };
        assert_eq!(
            args(&range.to_cmd()),
            ["ZRANGEBYSCORE", "z", "(1", "+inf", "WITHSCORES", "LIMIT", "2", "10"]
        );
        let zrange = Op::ZRange {
            key: k("z"),
            start: 0,
            stop: -1,
            withscores: false,
        };
        assert_eq!(args(&zrange.to_cmd()), ["ZRANGE", "z", "0", "-1"]);
        let mset = Op::MSet {
            pairs: vec![(k("a"), k("1")), (k("b"), k("2"))],
        };
        assert_eq!(args(&mset.to_cmd()), ["MSET", "a", "1", "b", "2"]);
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

    #[test]
    fn every_op_sends_the_command_its_name_declares() {
        let ops = [
            Op::Ping,
            Op::Time,
            Op::MGet { keys: vec![k("a")] },
            Op::Incr { key: k("n"), by: 1 },
            Op::ZCard { key: k("z") },
            Op::ZRem {
                key: k("z"),
                members: vec![k("m")],
            },
        ];
        for op in ops {
            assert_eq!(args(&op.to_cmd())[0], op.name().command(), "{op:?}");
        }
    }
}
