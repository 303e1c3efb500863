//! Parsing a `POST /v1/cmd` body into an [`Op`] plus the request's options.
//!
//! One pass of serde over the body fills a flat struct of every field any op may take (unknown fields are
//! rejected by name); then each op checks that it got exactly the fields it uses. Keys and values borrow
//! from the body unless they contain JSON escapes or are base64. Every problem becomes a `bad_request`
//! naming the field, or `unknown_op`; nothing here can panic on client input.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::config::OnUnavailable;
use crate::op::{Bytes, Op, OpName};

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

/// Size limits on keys and values (`api.max_key_bytes`, `api.max_value_bytes`).
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

/// A parsed request.
#[derive(Debug)]
pub struct Request<'a> {
    pub op: Op<'a>,
    pub encoding: Encoding,
    pub on_unavailable: Option<OnUnavailable>,
    /// For reads: what to answer when neither Redis nor the cache can.
    pub default: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow)]
    op: Option<Str<'a>>,
    #[serde(borrow)]
    key: Option<Str<'a>>,
    keys: Option<Vec<String>>,
    #[serde(borrow)]
    value: Option<Str<'a>>,
    #[serde(borrow)]
    field: Option<Str<'a>>,
    fields: Option<Fields>,
    #[serde(borrow)]
    default: Option<&'a RawValue>,
    ttl_ms: Option<u64>,
    nx: Option<bool>,
    xx: Option<bool>,
    seconds: Option<i64>,
    by: Option<i64>,
    encoding: Option<Encoding>,
    on_unavailable: Option<OnUnavailable>,
}

/// A JSON string borrowed from the body when it has no escapes. (serde's own `Cow` always copies inside an
/// `Option`.)
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Str)
    }
}

/// `fields` is an object for `hset` and an array for `hdel`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "an object of field: value (hset) or an array of field names (hdel)"
)]
enum Fields {
    Map(std::collections::BTreeMap<String, String>),
    List(Vec<String>),
}

/// The fields each op may carry besides `op`, `encoding` and `on_unavailable`.
fn allowed(op: OpName) -> &'static [&'static str] {
    match op {
        OpName::Get | OpName::HGetAll => &["key", "default"],
        OpName::Set => &["key", "value", "ttl_ms", "nx", "xx"],
        OpName::Del | OpName::Exists => &["keys"],
        OpName::Expire => &["key", "seconds"],
        OpName::Ttl => &["key"],
        OpName::Incr => &["key", "by"],
        OpName::HGet => &["key", "field", "default"],
        OpName::HSet | OpName::HDel => &["key", "fields"],
        OpName::Ping => &[],
    }
}

pub fn parse<'a>(body: &'a [u8], limits: &Limits) -> Result<Request<'a>, ApiError> {
    // serde would also accept a struct written as an array of its fields; the API takes objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("invalid JSON body: expected a JSON object".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let raw: Raw<'_> = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if matches!(path.as_str(), "." | "?" | "") {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("field `{path}`: {inner}"))
        }
    })?;
    let name = raw
        .op
        .as_ref()
        .map(|s| s.0.as_ref())
        .ok_or_else(|| ApiError::BadRequest("missing field `op`".into()))?;
    let op_name = OpName::parse(name).ok_or_else(|| ApiError::UnknownOp(name.to_owned()))?;

    let present = [
        ("key", raw.key.is_some()),
        ("keys", raw.keys.is_some()),
        ("value", raw.value.is_some()),
        ("field", raw.field.is_some()),
        ("fields", raw.fields.is_some()),
        ("default", raw.default.is_some()),
        ("ttl_ms", raw.ttl_ms.is_some()),
        ("nx", raw.nx.is_some()),
        ("xx", raw.xx.is_some()),
        ("seconds", raw.seconds.is_some()),
        ("by", raw.by.is_some()),
    ];
    if let Some((field, _)) = present.iter().find(|(f, set)| *set && !allowed(op_name).contains(f)) {
        return Err(ApiError::BadRequest(format!(
            "field `{field}` is not used by op `{name}`"
        )));
    }

    let encoding = raw.encoding.unwrap_or_default();
    let need = |field: &str| ApiError::BadRequest(format!("op `{name}` needs field `{field}`"));
    let key = || {
        raw.key
            .as_ref()
            .map(|s| non_empty("key")(s.0.clone()))
            .ok_or_else(|| need("key"))?
    };
    let op = match op_name {
        OpName::Get => Op::Get { key: key()? },
        OpName::HGetAll => Op::HGetAll { key: key()? },
        OpName::Ttl => Op::Ttl { key: key()? },
        OpName::Set => {
            let (nx, xx) = (raw.nx.unwrap_or(false), raw.xx.unwrap_or(false));
            if nx && xx {
                return Err(ApiError::BadRequest("fields `nx` and `xx` cannot both be true".into()));
            }
            if raw.ttl_ms == Some(0) {
                return Err(ApiError::BadRequest("field `ttl_ms` must be at least 1".into()));
            }
            let value = raw.value.as_ref().map(|s| s.0.clone()).ok_or_else(|| need("value"))?;
            Op::Set {
                key: key()?,
                value: decode(value, encoding, "value")?,
                ttl_ms: raw.ttl_ms,
                nx,
                xx,
            }
        }
        OpName::Del | OpName::Exists => {
            let keys = raw.keys.clone().ok_or_else(|| need("keys"))?;
            if keys.is_empty() {
                return Err(ApiError::BadRequest("field `keys` must not be empty".into()));
            }
            let keys = keys
                .into_iter()
                .map(|k| non_empty("keys")(Cow::Owned(k)))
                .collect::<Result<_, _>>()?;
            if op_name == OpName::Del {
                Op::Del { keys }
            } else {
                Op::Exists { keys }
            }
        }
        OpName::Expire => Op::Expire {
            key: key()?,
            seconds: raw.seconds.ok_or_else(|| need("seconds"))?,
        },
        OpName::Incr => Op::Incr {
            key: key()?,
            by: raw.by.unwrap_or(1),
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
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "field `fields` must be a non-empty object for op `hset`".into(),
                ))
            }
            None => return Err(need("fields")),
        },
        OpName::HDel => match raw.fields {
            Some(Fields::List(ref list)) if !list.is_empty() => Op::HDel {
                key: key()?,
                fields: list.iter().map(|f| Cow::Owned(f.clone().into_bytes())).collect(),
            },
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "field `fields` must be a non-empty array for op `hdel`".into(),
                ))
            }
            None => return Err(need("fields")),
        },
        OpName::Ping => Op::Ping,
    };
    check_sizes(&op, limits)?;
    Ok(Request {
        op,
        encoding,
        on_unavailable: raw.on_unavailable,
        default: raw.default,
    })
}

fn check_sizes(op: &Op<'_>, limits: &Limits) -> Result<(), ApiError> {
    let check = |field: &str, bytes: &[u8], limit: usize, name: &str| {
        if bytes.len() > limit {
            Err(ApiError::BadRequest(format!(
                "field `{field}` is {} bytes, over api.{name} ({limit})",
                bytes.len()
            )))
        } else {
            Ok(())
        }
    };
    let key = |field: &str, k: &[u8]| check(field, k, limits.max_key_bytes, "max_key_bytes");
    let value = |field: &str, v: &[u8]| check(field, v, limits.max_value_bytes, "max_value_bytes");
    match op {
        Op::Get { key: k }
        | Op::HGetAll { key: k }
        | Op::Ttl { key: k }
        | Op::Expire { key: k, .. }
        | Op::Incr { key: k, .. } => key("key", k),
        Op::Set { key: k, value: v, .. } => key("key", k).and_then(|_| value("value", v)),
        Op::Del { keys } | Op::Exists { keys } => keys.iter().try_for_each(|k| key("keys", k)),
        Op::HGet { key: k, field } => key("key", k).and_then(|_| key("field", field)),
        Op::HSet { key: k, fields } => {
            key("key", k)?;
            fields
                .iter()
                .try_for_each(|(f, v)| key("fields", f).and_then(|_| value("fields", v)))
        }
        Op::HDel { key: k, fields } => {
            key("key", k)?;
            fields.iter().try_for_each(|f| key("fields", f))
        }
        Op::Ping => Ok(()),
    }
}

fn bytes(s: Cow<'_, str>) -> Bytes<'_> {
    match s {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

fn non_empty(field: &'static str) -> impl Fn(Cow<'_, str>) -> Result<Bytes<'_>, ApiError> {
    move |s| {
        if s.is_empty() {
            Err(ApiError::BadRequest(format!(
                "field `{field}` must not be an empty string"
            )))
        } else {
            Ok(bytes(s))
        }
    }
}

fn decode<'a>(s: Cow<'a, str>, encoding: Encoding, field: &str) -> Result<Bytes<'a>, ApiError> {
    match encoding {
        Encoding::Utf8 => Ok(bytes(s)),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Cow::Owned)
            .map_err(|e| ApiError::BadRequest(format!("field `{field}` is not valid base64: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(body: &str) -> String {
        match parse(body.as_bytes(), &Limits::default()) {
            Err(ApiError::BadRequest(m)) => m,
            Err(ApiError::UnknownOp(op)) => format!("unknown_op {op}"),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(r) => panic!("parsed {body}: {r:?}"),
        }
    }

    #[test]
    fn a_plain_get_borrows_its_key_from_the_body() {
        let r = parse(br#"{"op":"get","key":"user:1","default":{"x":1}}"#, &Limits::default()).unwrap();
        assert!(matches!(
            r.op,
            Op::Get {
                key: Cow::Borrowed(b"user:1")
            }
        ));
        assert_eq!(r.default.map(RawValue::get), Some(r#"{"x":1}"#));
    }

    #[test]
    fn base64_values_are_decoded_and_bad_base64_is_named() {
        let r = parse(
            br#"{"op":"set","key":"k","value":"AP8=","encoding":"base64"}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(matches!(r.op, Op::Set { value: Cow::Owned(ref v), .. } if v == &[0u8, 255]));
        assert!(
            bad(r#"{"op":"set","key":"k","value":"!!","encoding":"base64"}"#).contains("`value` is not valid base64")
        );
    }

    #[test]
    fn every_kind_of_bad_request_names_the_problem() {
        let cases = [
            (r#"{"op":"get"}"#, "op `get` needs field `key`"),
            (r#"{"key":"k"}"#, "missing field `op`"),
            (
                r#"{"op":"get","key":5}"#,
                "field `key`: invalid type: integer `5`, expected a string",
            ),
            (r#"{"op":"get","key":"k","tll":1}"#, "unknown field `tll`"),
            (
                r#"{"op":"get","key":"k","value":"v"}"#,
                "field `value` is not used by op `get`",
            ),
            (r#"{"op":"get","key":""}"#, "field `key` must not be an empty string"),
            (r#"{"op":"del","keys":[]}"#, "field `keys` must not be empty"),
            (
                r#"{"op":"set","key":"k","value":"v","nx":true,"xx":true}"#,
                "cannot both be true",
            ),
            (
                r#"{"op":"hset","key":"h","fields":["a"]}"#,
                "must be a non-empty object",
            ),
            (
                r#"{"op":"hdel","key":"h","fields":{"a":"b"}}"#,
                "must be a non-empty array",
            ),
            (r#"{"op":"get","key":"k""#, "invalid JSON body"),
            (r#"[1,2]"#, "invalid JSON body"),
            (
                r#"{"op":"get","key":"k","encoding":"rot13"}"#,
                "field `encoding`: unknown variant `rot13`",
            ),
            (r#"{"op":"flushall"}"#, "unknown_op flushall"),
        ];
        for (body, expected) in cases {
            let got = bad(body);
            assert!(
                got.contains(expected),
                "{body}: got {got:?}, expected it to contain {expected:?}"
            );
        }
    }

    #[test]
    fn keys_and_values_over_the_limits_are_refused_naming_the_limit() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 3,
        };
        let check = |body: &str| match parse(body.as_bytes(), &limits) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            check(r#"{"op":"get","key":"abcde"}"#),
            "field `key` is 5 bytes, over api.max_key_bytes (4)"
        );
        assert_eq!(
            check(r#"{"op":"set","key":"k","value":"abcd"}"#),
            "field `value` is 4 bytes, over api.max_value_bytes (3)"
        );
        assert!(check(r#"{"op":"hset","key":"h","fields":{"f":"abcd"}}"#).contains("`fields`"));
        assert!(
            parse(br#"{"op":"set","key":"abcd","value":"abc"}"#, &limits).is_ok(),
            "limits are inclusive"
        );
    }

    #[test]
    fn invalid_utf8_is_a_bad_request_not_a_panic() {
        assert!(parse(b"{\"op\":\"get\",\"key\":\"\xff\"}", &Limits::default()).is_err());
    }
}
