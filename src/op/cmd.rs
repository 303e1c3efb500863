//! Building blocks of the Redis commands the family files send.

use super::Bytes;

/// A command with room for `args` more arguments of `bytes` in all, for the ops on every request's path:
/// `redis::cmd` starts empty and grew its buffers twice for a GET.
pub(super) fn sized(name: &str, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(1 + args, name.len() + bytes);
    cmd.arg(name);
    cmd
}

pub(super) fn with_all(mut cmd: redis::Cmd, args: &[Bytes<'_>]) -> redis::Cmd {
    args.iter().for_each(|a| {
        cmd.arg(a.as_ref());
    });
    cmd
}

/// `EVAL script numkeys key.. arg..` or `EVALSHA sha numkeys key.. arg..`.
pub(crate) fn script_cmd(name: &str, head: &str, keys: &[Bytes<'_>], args: &[Bytes<'_>]) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(head).arg(keys.len());
    with_all(with_all(cmd, keys), args)
}

#[cfg(test)]
pub(super) mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::op::Op;

    /// A command's arguments as strings.
    pub(crate) fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    /// A borrowed key or value.
    pub(crate) fn k(s: &'static str) -> Bytes<'static> {
        Cow::Borrowed(s.as_bytes())
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
