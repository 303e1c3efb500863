//! RESP3 shapes for replies Redis gave in RESP2.
//!
//! redguard talks RESP2 to Redis (one protocol for every client on the shared connections), so a client that
//! said `HELLO 3` would otherwise get RESP2's shapes where RESP3 has its own: a flat array for a hash, an array
//! for a set, a bulk string for a score. Redis documents each command's RESP3 reply; the commands whose shape
//! differs and that applications read most are reshaped here, from the command's name and options. Anything
//! else passes as Redis gave it, which RESP3 clients read too (an array is an array).

use redis::Value;

use crate::op::Bytes;

/// `value` (Redis's RESP2 reply to `args`) in the shape Redis gives a RESP3 client.
pub(super) fn reshape(args: &[Bytes<'_>], value: Value) -> Value {
    let name = args[0].as_ref();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let has = |opt: &str| args[1..].iter().any(|a| a.eq_ignore_ascii_case(opt.as_bytes()));
    if is("HGETALL") || (is("CONFIG") && args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"GET"))) {
        pairs(value, |k, v| (k, v)).map_or_else(|v| v, Value::Map)
    } else if is("SMEMBERS") || is("SINTER") || is("SUNION") || is("SDIFF") {
        match value {
            Value::Array(items) => Value::Set(items),
            other => other,
        }
    } else if is("ZSCORE") || is("ZINCRBY") {
        double(value)
    } else if is("ZMSCORE") {
        match value {
            Value::Array(items) => Value::Array(items.into_iter().map(double).collect()),
            other => other,
        }
    } else if (is("ZRANGE") || is("ZRANGEBYSCORE") || is("ZREVRANGE") || is("ZREVRANGEBYSCORE")) && has("WITHSCORES") {
        pairs(value, |m, s| (m, double(s))).map_or_else(
            |v| v,
            |p| Value::Array(p.into_iter().map(|(m, s)| Value::Array(vec![m, s])).collect()),
        )
    } else if (is("HRANDFIELD") && has("WITHVALUES")) || (is("ZRANDMEMBER") && has("WITHSCORES")) {
        let scored = is("ZRANDMEMBER");
        pairs(value, |k, v| (k, if scored { double(v) } else { v })).map_or_else(
            |v| v,
            |p| Value::Array(p.into_iter().map(|(k, v)| Value::Array(vec![k, v])).collect()),
        )
    } else {
        value
    }
}

/// A flat array of even length as pairs (each mapped by `f`); anything else given back unchanged.
fn pairs(value: Value, f: impl Fn(Value, Value) -> (Value, Value)) -> Result<Vec<(Value, Value)>, Value> {
    match value {
        Value::Array(items) if items.len() % 2 == 0 => {
            let mut it = items.into_iter();
            let mut out = Vec::with_capacity(it.len() / 2);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push(f(k, v));
            }
            Ok(out)
        }
        other => Err(other),
    }
}

/// A score Redis sent as a bulk string, as a double; anything else unchanged.
fn double(value: Value) -> Value {
    match &value {
        Value::BulkString(b) => match std::str::from_utf8(b).ok().and_then(|s| s.parse::<f64>().ok()) {
            Some(d) => Value::Double(d),
            None => value,
        },
        _ => value,
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::resp::test_args as args;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn hashes_become_maps_sets_sets_and_scores_doubles() {
        assert_eq!(
            reshape(&args("hgetall h"), Value::Array(vec![b("f"), b("1")])),
            Value::Map(vec![(b("f"), b("1"))])
        );
        assert_eq!(
            reshape(&args("SMEMBERS s"), Value::Array(vec![b("a")])),
            Value::Set(vec![b("a")])
        );
        assert_eq!(reshape(&args("ZSCORE z m"), b("1.5")), Value::Double(1.5));
        assert_eq!(reshape(&args("ZSCORE z m"), Value::Nil), Value::Nil);
        assert_eq!(
            reshape(&args("ZRANGE z 0 -1 withscores"), Value::Array(vec![b("m"), b("2")])),
            Value::Array(vec![Value::Array(vec![b("m"), Value::Double(2.0)])])
        );
        assert_eq!(
            reshape(&args("ZMSCORE z a b"), Value::Array(vec![b("3"), Value::Nil])),
            Value::Array(vec![Value::Double(3.0), Value::Nil])
        );
    }

    #[test]
    fn other_replies_and_odd_shapes_pass_unchanged() {
        let odd = Value::Array(vec![b("f")]);
        assert_eq!(reshape(&args("HGETALL h"), odd.clone()), odd);
        let plain = Value::Array(vec![b("m"), b("2")]);
        assert_eq!(reshape(&args("ZRANGE z 0 -1"), plain.clone()), plain);
        assert_eq!(reshape(&args("GET k"), b("1.5")), b("1.5"));
        assert_eq!(reshape(&args("ZSCORE z m"), b("x")), b("x"));
    }
}
