//! Parsing a `POST /v1/cmd` body (or one typed slot of a pipeline) into an [`Op`] plus the request's options.
//!
//! One pass of serde over the body fills a flat struct of every field any op may take (unknown fields are
//! rejected by name); then each op checks that it got exactly the fields it uses. Keys and values borrow
//! from the body unless they contain JSON escapes or are base64. With `"encoding": "base64"`, values, hash
//! values, sorted-set members and script arguments are base64; keys, hash field names and scripts never are.
//! Every problem becomes a `bad_request` naming the field, or `unknown_op`; nothing here can panic on client
//! input, and nothing is accepted in part: a body is one JSON value with each key once, and every number is
//! checked against its field's bounds rather than rounded or cut.

mod fields;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::config::OnUnavailable;
use crate::op::{Op, OpName};
use fields::{bytes, keys, non_empty, Bound, Fields, Members, RangeLimit, UniqueMap};
pub use fields::{decode, integer, Str};

/// Largest `ttl_ms` of `set`: 10^18 ms (about 31.7 million years). Redis refuses an expiry whose deadline
/// (now + ttl) passes 2^63 ms; this bound keeps every accepted value clear of that for good.
pub const MAX_TTL_MS: i64 = 1_000_000_000_000_000_000;
/// Bound of `seconds` of `expire`, either way: 10^15 s (the same deadline as [`MAX_TTL_MS`]). A negative or
/// zero `seconds` is Redis's own meaning: the key is deleted.
pub const MAX_EXPIRE_SECONDS: i64 = 1_000_000_000_000_000;

/// How values travel in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Values are JSON strings (UTF-8).
    #[default]
    Utf8,
    /// Values are base64 strings (binary-safe).
    Base64,
}

/// A parsed request.
#[derive(Debug)]
pub struct Request<'a> {
    pub op: Op<'a>,
    pub encoding: Encoding,
    pub on_unavailable: Option<OnUnavailable>,
    /// For reads: what to answer when neither Redis nor the cache can.
    pub default: Option<&'a RawValue>,
}

/// Declares [`Raw`], the flat struct of every field any op may take, from one list: the list also gives
/// [`Raw::present`] (which fields a request gave) and [`FIELD_NAMES`], so a field cannot be added to the struct
/// without being known to the check that refuses a field its op does not use. `op`, `encoding` and
/// `on_unavailable` belong to every op and are outside the list.
macro_rules! raw_fields {
    ($($(#[$attr:meta])* $field:ident: $ty:ty,)*) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct Raw<'a> {
            #[serde(borrow)]
            pub op: Option<Str<'a>>,
            $($(#[$attr])* pub $field: Option<$ty>,)*
            pub encoding: Option<Encoding>,
            pub on_unavailable: Option<OnUnavailable>,
        }

        /// The op-specific fields of [`Raw`], in its order.
        pub(crate) const FIELD_NAMES: &[&str] = &[$(stringify!($field)),*];

        impl Raw<'_> {
            /// Each op-specific field, in order, with whether the request gave it.
            fn present(&self) -> [(&'static str, bool); FIELD_NAMES.len()] {
                [$((stringify!($field), self.$field.is_some()),)*]
            }
        }
    };
}

raw_fields! {
    #[serde(borrow)]
    key: Str<'a>,
    keys: Vec<String>,
    #[serde(borrow)]
    value: Str<'a>,
    #[serde(borrow)]
    field: Str<'a>,
    fields: Fields,
    #[serde(borrow)]
    default: &'a RawValue,
    ttl_ms: serde_json::Number,
    nx: bool,
    xx: bool,
    seconds: serde_json::Number,
    /// An integer for `incr`, any number for `zincrby`.
    by: serde_json::Number,
    #[serde(borrow)]
    member: Str<'a>,
    members: Members,
    start: serde_json::Number,
    stop: serde_json::Number,
    withscores: bool,
    min: Bound,
    max: Bound,
    limit: RangeLimit,
    pairs: UniqueMap<String>,
    #[serde(borrow)]
    script: Str<'a>,
    #[serde(borrow)]
    sha: Str<'a>,
    args: Vec<String>,
}

/// The fields each op may carry besides `op`, `encoding` and `on_unavailable`.
fn allowed(op: OpName) -> &'static [&'static str] {
    match op {
        OpName::Get | OpName::HGetAll | OpName::ZCard => &["key", "default"],
        OpName::Set => &["key", "value", "ttl_ms", "nx", "xx"],
        OpName::Del | OpName::Exists => &["keys"],
        OpName::Expire => &["key", "seconds"],
        OpName::Ttl => &["key"],
        OpName::Incr => &["key", "by"],
        OpName::HGet => &["key", "field", "default"],
        OpName::HSet | OpName::HDel => &["key", "fields"],
        OpName::Ping => &[],
        OpName::ZAdd | OpName::ZRem => &["key", "members"],
        OpName::ZScore => &["key", "member", "default"],
        OpName::ZIncrBy => &["key", "member", "by"],
        OpName::ZRange => &["key", "start", "stop", "withscores", "default"],
        OpName::ZRangeByScore => &["key", "min", "max", "withscores", "limit", "default"],
        OpName::ZRemRangeByScore => &["key", "min", "max"],
        OpName::Time => &["default"],
        OpName::MGet => &["keys", "default"],
        OpName::MSet => &["pairs"],
        OpName::Eval => &["script", "keys", "args"],
        OpName::EvalSha => &["sha", "keys", "args"],
    }
}

/// Reads a body that must be exactly one JSON object (trailing whitespace aside) into `T`; every problem is a
/// `bad_request` naming the field it happened in. A repeated field is refused by serde's derived structs, a
/// repeated key inside a map field by [`UniqueMap`], and anything after the value by the end check.
pub fn deserialize<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    // serde would also accept a struct written as an array of its fields; the API takes objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("invalid JSON body: expected a JSON object".into()));
    }
    // Tracking the path costs about a third of a small request's parse, so it is paid only for a body that
    // fails: parsing is deterministic, so the second pass fails at the same place, now with its path.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if matches!(path.as_str(), "." | "?" | "") {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("field `{path}`: {inner}"))
        }
    })?;
    // The value parsed, so the first pass failed on what follows it: a body is exactly one JSON value, and a
    // second one (or anything else) must not be dropped without a word.
    de.end().map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid JSON body: {e}; a body is exactly one JSON value (trailing whitespace aside)"
        ))
    })?;
    Ok(value)
}

/// Size limits on keys and values of typed ops (`api.max_key_bytes`, `api.max_value_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 512 * 1024,
        }
    }
}

pub fn parse<'a>(body: &'a [u8], limits: &Limits) -> Result<Request<'a>, ApiError> {
    let raw: Raw<'_> = deserialize(body)?;
    let name = raw
        .op
        .as_ref()
        .map(|s| s.0.as_ref())
        .ok_or_else(|| ApiError::BadRequest("missing field `op`".into()))?;
    let op_name = OpName::parse(name).ok_or_else(|| ApiError::UnknownOp(name.to_owned()))?;

    let present = raw.present();
    if let Some((field, _)) = present.iter().find(|(f, set)| *set && !allowed(op_name).contains(f)) {
        return Err(ApiError::BadRequest(format!(
            "field `{field}` is not used by op `{name}`"
        )));
    }
    check_sizes(&raw, limits)?;
    let op = build(op_name, name, &raw)?;
    Ok(Request {
        op,
        encoding: raw.encoding.unwrap_or_default(),
        on_unavailable: raw.on_unavailable,
        default: raw.default,
    })
}

/// Refuses keys (and field or member names) over `max_key_bytes` and values over `max_value_bytes`, naming the
/// field. Base64 values count by their decoded length.
fn check_sizes(raw: &Raw<'_>, limits: &Limits) -> Result<(), ApiError> {
    let base64 = raw.encoding == Some(Encoding::Base64);
    let check = |field: &str, len: usize, limit: usize, name: &str| {
        if len > limit {
            Err(ApiError::BadRequest(format!(
                "field `{field}` is {len} bytes, over api.{name} ({limit})"
            )))
        } else {
            Ok(())
        }
    };
    let key = |field: &str, k: &str| check(field, k.len(), limits.max_key_bytes, "max_key_bytes");
    let value = |field: &str, v: &str| {
        let len = if base64 {
            (v.len() / 4 * 3).saturating_sub(v.bytes().rev().take_while(|&b| b == b'=').count())
        } else {
            v.len()
        };
        check(field, len, limits.max_value_bytes, "max_value_bytes")
    };
    let strs = [("key", &raw.key), ("field", &raw.field), ("member", &raw.member)];
    for (field, s) in strs {
        if let Some(s) = s {
            key(field, &s.0)?;
        }
    }
    for k in raw.keys.iter().flatten() {
        key("keys", k)?;
    }
    if let Some(v) = &raw.value {
        value("value", &v.0)?;
    }
    match &raw.fields {
        Some(Fields::Map(map)) => map
            .iter()
            .try_for_each(|(f, v)| key("fields", f).and_then(|_| value("fields", v)))?,
        Some(Fields::List(list)) => list.iter().try_for_each(|f| key("fields", f))?,
        None => {}
    }
    for (k, v) in raw.pairs.iter().flat_map(|p| &p.0) {
        key("pairs", k)?;
        value("pairs", v)?;
    }
    Ok(())
}

/// Builds the op from the fields it uses (the envelope has rejected any others).
fn build<'a>(op_name: OpName, name: &str, raw: &Raw<'a>) -> Result<Op<'a>, ApiError> {
    let encoding = raw.encoding.unwrap_or_default();
    let need = |field: &str| ApiError::BadRequest(format!("op `{name}` needs field `{field}`"));
    let bad = |message: String| ApiError::BadRequest(message);
    let key = || {
        raw.key
            .as_ref()
            .map(|s| non_empty("key")(s.0.clone()))
            .ok_or_else(|| need("key"))?
    };
    let key_list = |field: &'static str| {
        let list = raw.keys.as_deref().ok_or_else(|| need(field))?;
        if list.is_empty() {
            return Err(bad(format!("field `{field}` must not be empty")));
        }
        keys(list, field)
    };
    let member = || {
        let m = raw.member.as_ref().ok_or_else(|| need("member"))?;
        decode(m.0.clone(), encoding, "member")
    };
    let index = |field: &'static str, n: &Option<serde_json::Number>| {
        integer(field, n.as_ref().ok_or_else(|| need(field))?, i64::MIN, i64::MAX)
    };
    let range = |field: &'static str, bound: &Option<Bound>| bound.as_ref().ok_or_else(|| need(field))?.to_redis(field);
    let script_parts = || -> Result<_, ApiError> {
        let keys = keys(raw.keys.as_deref().unwrap_or_default(), "keys")?;
        let args = raw.args.iter().flatten();
        let args = args
            .map(|a| decode(Cow::Owned(a.clone()), encoding, "args").map(|b| Cow::Owned(b.into_owned())))
            .collect::<Result<_, _>>()?;
        Ok((keys, args))
    };
    Ok(match op_name {
        OpName::Get => Op::Get { key: key()? },
        OpName::HGetAll => Op::HGetAll { key: key()? },
        OpName::Ttl => Op::Ttl { key: key()? },
        OpName::ZCard => Op::ZCard { key: key()? },
        OpName::Set => {
            let (nx, xx) = (raw.nx.unwrap_or(false), raw.xx.unwrap_or(false));
            if nx && xx {
                return Err(bad("fields `nx` and `xx` cannot both be true".into()));
            }
            let ttl_ms = raw
                .ttl_ms
                .as_ref()
                .map(|n| integer("ttl_ms", n, 1, MAX_TTL_MS))
                .transpose()?;
            let value = raw.value.as_ref().map(|s| s.0.clone()).ok_or_else(|| need("value"))?;
            Op::Set {
                key: key()?,
                value: decode(value, encoding, "value")?,
                ttl_ms: ttl_ms.map(|ms| ms as u64),
                nx,
                xx,
            }
        }
        OpName::Del => Op::Del {
            keys: key_list("keys")?,
        },
        OpName::Exists => Op::Exists {
            keys: key_list("keys")?,
        },
        OpName::MGet => Op::MGet {
            keys: key_list("keys")?,
        },
        OpName::Expire => Op::Expire {
            key: key()?,
            seconds: integer(
                "seconds",
                raw.seconds.as_ref().ok_or_else(|| need("seconds"))?,
                -MAX_EXPIRE_SECONDS,
                MAX_EXPIRE_SECONDS,
            )?,
        },
        OpName::Incr => Op::Incr {
            key: key()?,
            by: match &raw.by {
                None => 1,
                Some(n) => integer("by", n, i64::MIN, i64::MAX)?,
            },
        },
        OpName::HGet => {
            let field = raw.field.as_ref().map(|s| s.0.clone()).ok_or_else(|| need("field"))?;
            Op::HGet {
                key: key()?,
                field: bytes(field),
            }
        }
        OpName::HSet => match raw.fields {
            Some(Fields::Map(ref map)) if !map.is_empty() => {
                let fields = map
                    .iter()
                    .map(|(f, v)| {
                        Ok((
                            Cow::Owned(f.clone().into_bytes()),
                            decode(Cow::Owned(v.clone()), encoding, "fields")?,
                        ))
                    })
                    .collect::<Result<_, ApiError>>()?;
                Op::HSet { key: key()?, fields }
            }
            Some(_) => return Err(bad("field `fields` must be a non-empty object for op `hset`".into())),
            None => return Err(need("fields")),
        },
        OpName::HDel => match raw.fields {
            Some(Fields::List(ref list)) if !list.is_empty() => Op::HDel {
                key: key()?,
                fields: list.iter().map(|f| Cow::Owned(f.clone().into_bytes())).collect(),
            },
            Some(_) => return Err(bad("field `fields` must be a non-empty array for op `hdel`".into())),
            None => return Err(need("fields")),
        },
        OpName::Ping => Op::Ping,
        OpName::Time => Op::Time,
        OpName::ZAdd => {
            let member = |m: &String| decode(Cow::Owned(m.clone()), encoding, "members");
            let members = match &raw.members {
                Some(Members::Scores(map)) if !map.is_empty() => {
                    map.iter().map(|(m, s)| Ok((*s, member(m)?))).collect::<Result<_, ApiError>>()?
                }
                Some(Members::Pairs(list)) if !list.is_empty() => {
                    list.iter().map(|(s, m)| Ok((*s, member(m)?))).collect::<Result<_, ApiError>>()?
                }
                Some(_) => {
                    return Err(bad(
                        "field `members` must be a non-empty object of member: score or list of [score, member] for op `zadd`"
                            .into(),
                    ))
                }
                None => return Err(need("members")),
            };
            Op::ZAdd { key: key()?, members }
        }
        OpName::ZRem => match &raw.members {
            Some(Members::Names(list)) if !list.is_empty() => Op::ZRem {
                key: key()?,
                members: list
                    .iter()
                    .map(|m| decode(Cow::Owned(m.clone()), encoding, "members"))
                    .collect::<Result<_, _>>()?,
            },
            Some(_) => {
                return Err(bad(
                    "field `members` must be a non-empty array of members for op `zrem`".into(),
                ))
            }
            None => return Err(need("members")),
        },
        OpName::ZScore => Op::ZScore {
            key: key()?,
            member: member()?,
        },
        OpName::ZIncrBy => {
            let by = raw.by.as_ref().ok_or_else(|| need("by"))?;
            let by = by
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| bad(format!("field `by` must be a finite number, got {by}")))?;
            Op::ZIncrBy {
                key: key()?,
                member: member()?,
                by,
            }
        }
        OpName::ZRange => Op::ZRange {
            key: key()?,
            start: index("start", &raw.start)?,
            stop: index("stop", &raw.stop)?,
            withscores: raw.withscores.unwrap_or(false),
        },
        OpName::ZRangeByScore => Op::ZRangeByScore {
            key: key()?,
            min: range("min", &raw.min)?,
            max: range("max", &raw.max)?,
            withscores: raw.withscores.unwrap_or(false),
            limit: raw
                .limit
                .as_ref()
                .map(|l| {
                    let offset = integer("limit.offset", &l.offset, 0, i64::MAX)?;
                    Ok::<_, ApiError>((offset, integer("limit.count", &l.count, i64::MIN, i64::MAX)?))
                })
                .transpose()?,
        },
        OpName::ZRemRangeByScore => Op::ZRemRangeByScore {
            key: key()?,
            min: range("min", &raw.min)?,
            max: range("max", &raw.max)?,
        },
        OpName::MSet => match raw.pairs.as_ref().map(|p| &p.0) {
            Some(pairs) if !pairs.is_empty() => Op::MSet {
                pairs: pairs
                    .iter()
                    .map(|(k, v)| {
                        let k = non_empty("pairs")(Cow::Owned(k.clone()))?.into_owned();
                        Ok((Cow::Owned(k), decode(Cow::Owned(v.clone()), encoding, "pairs")?))
                    })
                    .collect::<Result<_, ApiError>>()?,
            },
            Some(_) => return Err(bad("field `pairs` must be a non-empty object of key: value".into())),
            None => return Err(need("pairs")),
        },
        OpName::Eval => {
            let script = raw.script.as_ref().ok_or_else(|| need("script"))?;
            if script.0.trim().is_empty() {
                return Err(bad("field `script` must not be empty".into()));
            }
            let (keys, args) = script_parts()?;
            Op::Eval {
                script: script.0.clone(),
                keys,
                args,
            }
        }
        OpName::EvalSha => {
            let sha = raw.sha.as_ref().ok_or_else(|| need("sha"))?;
            if sha.0.len() != 40 || !sha.0.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("field `sha` must be the 40 hex digits of a script's SHA1".into()));
            }
            let (keys, args) = script_parts()?;
            Op::EvalSha {
                sha: Cow::Owned(sha.0.to_ascii_lowercase()),
                keys,
                args,
            }
        }
    })
}

#[cfg(test)]
mod tests;
