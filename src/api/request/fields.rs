//! The JSON shapes of request fields that are more than a string or a number, and the helpers that turn
//! field values into command arguments. Every failure is a `bad_request` naming the field.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::Encoding;
use crate::api::error::ApiError;
use crate::op::Bytes;

/// A JSON string borrowed from the body when it has no escapes. (serde's own `Cow` always copies inside an
/// `Option`.)
pub struct Str<'a>(pub Cow<'a, str>);

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
pub enum Fields {
    Map(BTreeMap<String, String>),
    List(Vec<String>),
}

/// `members`: `{member: score}` or `[[score, member], ..]` for `zadd`, `[member, ..]` for `zrem`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "an object of member: score, a list of [score, member] (zadd) or a list of members (zrem)"
)]
pub enum Members {
    Scores(BTreeMap<String, f64>),
    Names(Vec<String>),
    Pairs(Vec<(f64, String)>),
}

/// `min` / `max` of a score range: a number, or a string in Redis syntax (`"(1.5"`, `"-inf"`, `"+inf"`).
#[derive(Deserialize)]
#[serde(untagged, expecting = "a number or a string like \"(1.5\", \"-inf\" or \"+inf\"")]
pub enum Bound {
    Number(f64),
    Text(String),
}

impl Bound {
    /// The bound as Redis reads it, checked so a typo is a 400 here rather than a Redis error.
    pub fn to_redis(&self, field: &str) -> Result<Cow<'static, str>, ApiError> {
        match self {
            Bound::Number(n) => Ok(Cow::Owned(n.to_string())),
            Bound::Text(text) => {
                let number = text.strip_prefix('(').unwrap_or(text);
                let valid =
                    matches!(number, "-inf" | "+inf" | "inf") || number.parse::<f64>().is_ok_and(f64::is_finite);
                if valid {
                    Ok(Cow::Owned(text.clone()))
                } else {
                    Err(ApiError::BadRequest(format!(
                        "field `{field}`: {text:?} is not a score bound (a number, \"(\" before a number to exclude it, \"-inf\" or \"+inf\")"
                    )))
                }
            }
        }
    }
}

/// `limit` of `zrangebyscore`: Redis's `LIMIT offset count` (a negative count means all from the offset), as
/// `{"offset": .., "count": ..}` or `[offset, count]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeLimit {
    pub offset: u32,
    pub count: i64,
}

pub fn bytes(s: Cow<'_, str>) -> Bytes<'_> {
    match s {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

pub fn non_empty(field: &'static str) -> impl Fn(Cow<'_, str>) -> Result<Bytes<'_>, ApiError> {
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

/// A value in the request's encoding as bytes.
pub fn decode<'a>(s: Cow<'a, str>, encoding: Encoding, field: &str) -> Result<Bytes<'a>, ApiError> {
    match encoding {
        Encoding::Utf8 => Ok(bytes(s)),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Cow::Owned)
            .map_err(|e| ApiError::BadRequest(format!("field `{field}` is not valid base64: {e}"))),
    }
}

/// Keys: each a non-empty string.
pub fn keys(list: &[String], field: &'static str) -> Result<Vec<Bytes<'static>>, ApiError> {
    list.iter()
        .map(|k| non_empty(field)(Cow::Owned(k.clone())).map(|b| Cow::Owned(b.into_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bounds_accept_redis_syntax_only() {
        for ok in ["1", "-2.5", "(1", "(-0.5", "-inf", "+inf", "inf", "(+inf", "1e3"] {
            assert!(Bound::Text(ok.into()).to_redis("min").is_ok(), "{ok}");
        }
        for bad in ["", "(", "abc", "1..2", "((1", "nan", "infinity", "1 "] {
            let err = Bound::Text(bad.into()).to_redis("min").unwrap_err();
            assert!(err.to_string().starts_with("field `min`"), "{bad}: {err}");
        }
        assert_eq!(Bound::Number(3.0).to_redis("max").unwrap(), "3");
        assert_eq!(Bound::Number(-0.25).to_redis("max").unwrap(), "-0.25");
    }
}
