//! Parsing a `POST /v1/cmd` body (or one typed slot of a pipeline) into an [`Op`] plus the request's options.
//!
//! One pass of serde over the body fills a flat struct of every field any op may take (unknown fields are
//! rejected by name); then each op checks that it got only the fields it uses (listed, and turned into the op
//! with a `Parser`, in the op's family file under `src/op/`). Keys and values borrow
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
use crate::op::{Bytes, Op, OpName, ScoreBound};
pub(crate) use fields::{bytes, non_empty, Bound, Fields, Members};
pub use fields::{decode, integer, Str};
use fields::{keys, RangeLimit, UniqueMap};

pub use crate::op::{MAX_EXPIRE_SECONDS, MAX_TTL_MS};

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

/// The config's defaults (`api.max_key_bytes`, `api.max_value_bytes`).
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: crate::config::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: crate::config::DEFAULT_MAX_VALUE_BYTES,
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
    if let Some((field, _)) = present.iter().find(|(f, set)| *set && !op_name.fields().contains(f)) {
        return Err(ApiError::BadRequest(format!(
            "field `{field}` is not used by op `{name}`"
        )));
    }
    check_sizes(&raw, limits)?;
    let op = op_name.parse_op(&Parser {
        raw: &raw,
        name,
        encoding: raw.encoding.unwrap_or_default(),
    })?;
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

/// A request's fields, with the checks the ops share; each op's family file (`src/op/`) builds the op with it.
pub(crate) struct Parser<'r, 'a> {
    pub raw: &'r Raw<'a>,
    /// The op's name as the request gave it, for messages.
    pub name: &'r str,
    pub encoding: Encoding,
}

impl<'a> Parser<'_, 'a> {
    /// The error for a missing field the op needs.
    pub(crate) fn need(&self, field: &str) -> ApiError {
        ApiError::BadRequest(format!("op `{}` needs field `{field}`", self.name))
    }

    /// `key`: a non-empty string.
    pub(crate) fn key(&self) -> Result<Bytes<'a>, ApiError> {
        self.raw
            .key
            .as_ref()
            .map(|s| non_empty("key")(s.0.clone()))
            .ok_or_else(|| self.need("key"))?
    }

    /// A non-empty list of keys.
    pub(crate) fn key_list(&self, field: &'static str) -> Result<Vec<Bytes<'a>>, ApiError> {
        let list = self.raw.keys.as_deref().ok_or_else(|| self.need(field))?;
        if list.is_empty() {
            return Err(bad(format!("field `{field}` must not be empty")));
        }
        keys(list, field)
    }

    /// `member`, in the request's encoding.
    pub(crate) fn member(&self) -> Result<Bytes<'a>, ApiError> {
        let m = self.raw.member.as_ref().ok_or_else(|| self.need("member"))?;
        decode(m.0.clone(), self.encoding, "member")
    }

    /// A required integer field, any 64-bit value.
    pub(crate) fn index(&self, field: &'static str, n: &Option<serde_json::Number>) -> Result<i64, ApiError> {
        integer(field, n.as_ref().ok_or_else(|| self.need(field))?, i64::MIN, i64::MAX)
    }

    /// A required score bound, in Redis syntax.
    pub(crate) fn range(&self, field: &'static str, bound: &Option<Bound>) -> Result<ScoreBound<'a>, ApiError> {
        bound.as_ref().ok_or_else(|| self.need(field))?.to_redis(field)
    }

    /// A value of the named field, in the request's encoding, owned.
    pub(crate) fn value(&self, s: &str, field: &str) -> Result<Bytes<'a>, ApiError> {
        decode(Cow::Owned(s.to_owned()), self.encoding, field)
    }

    /// The `keys` (optional, may be empty) and `args` of a script.
    pub(crate) fn script_parts(&self) -> Result<(Vec<Bytes<'a>>, Vec<Bytes<'a>>), ApiError> {
        let keys = keys(self.raw.keys.as_deref().unwrap_or_default(), "keys")?;
        let args = self.raw.args.iter().flatten();
        let args = args
            .map(|a| decode(Cow::Owned(a.clone()), self.encoding, "args").map(|b| Cow::Owned(b.into_owned())))
            .collect::<Result<_, _>>()?;
        Ok((keys, args))
    }
}

/// A `bad_request` with this message.
pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

#[cfg(test)]
mod tests;
