//! The JSON shapes of request fields that are more than a string or a number, and the helpers that turn
//! field values into command arguments. Every failure is a `bad_request` naming the field.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Number;

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
pub(crate) enum Fields {
    Map(BTreeMap<String, String>),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of field: value (hset) or an array of field names (hdel)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
                UniqueMap::deserialize(MapAccessDeserializer::new(map)).map(|m| Fields::Map(m.0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Fields, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(Fields::List)
            }
        }
        d.deserialize_any(V)
    }
}

/// `members`: `{member: score}` or `[[score, member], ..]` for `zadd`, `[member, ..]` for `zrem`.
#[derive(Debug)]
pub(crate) enum Members {
    Scores(BTreeMap<String, f64>),
    Names(Vec<String>),
    Pairs(Vec<(f64, String)>),
}

/// One element of a `members` array: a member name, or a `[score, member]` pair.
enum Element {
    Name(String),
    Pair(f64, String),
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member (zrem) or a [score, member] pair (zadd)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
                Ok(Element::Name(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Element, E> {
                Ok(Element::Name(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                let pair = "a [score, member] pair";
                let score: Score = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &pair))?;
                let member: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &pair))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &pair));
                }
                Ok(Element::Pair(score.0, member))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of member: score, a list of [score, member] (zadd) or a list of members (zrem)")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Members, A::Error> {
                let scores = UniqueMap::<Score>::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Members::Scores(scores.0.into_iter().map(|(m, s)| (m, s.0)).collect()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
                let (mut names, mut pairs) = (Vec::new(), Vec::new());
                while let Some(element) = seq.next_element()? {
                    match element {
                        Element::Name(name) => names.push(name),
                        Element::Pair(score, member) => pairs.push((score, member)),
                    }
                }
                match (names.is_empty(), pairs.is_empty()) {
                    (_, true) => Ok(Members::Names(names)),
                    (true, false) => Ok(Members::Pairs(pairs)),
                    (false, false) => Err(de::Error::custom(
                        "mixes member names and [score, member] pairs; use one or the other",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A sorted-set score: a JSON number, or one of the strings `"inf"`, `"+inf"`, `"-inf"` (JSON has no
/// infinity; they are what `zrange` and `zscore` answer for an infinite score, and Redis's own spelling).
pub(super) struct Score(pub f64);

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Score;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a score: a number, \"inf\", \"+inf\" or \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Score, E> {
                Ok(Score(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Score, E> {
                Ok(Score(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Score, E> {
                Ok(Score(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Score, E> {
                match v {
                    "inf" | "+inf" => Ok(Score(f64::INFINITY)),
                    "-inf" => Ok(Score(f64::NEG_INFINITY)),
                    _ => Err(de::Error::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON object whose keys are each given once. serde's own maps keep the last of a repeated key, which would
/// drop part of the request without a word; here a repeated key is an error naming it.
pub(crate) struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for UniqueMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = UniqueMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap<T>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// An integer field within `min..=max`. Anything else (a fraction, an exponent, a number past 64 bits, a value
/// out of the bounds) is a `bad_request` naming the field and its bounds, never a rounded or truncated value.
pub fn integer(field: &str, n: &Number, min: i64, max: i64) -> Result<i64, ApiError> {
    n.as_i64()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| ApiError::BadRequest(format!("field `{field}` must be an integer in {min}..={max}, got {n}")))
}

/// `min` / `max` of a score range: a number, or a string in Redis syntax (`"(1.5"`, `"-inf"`, `"+inf"`).
#[derive(Deserialize)]
#[serde(untagged, expecting = "a number or a string like \"(1.5\", \"-inf\" or \"+inf\"")]
pub(crate) enum Bound {
    Number(f64),
    Text(String),
}

impl Bound {
    /// The bound as Redis reads it, checked so a typo is a 400 here rather than a Redis error.
    pub(crate) fn to_redis(&self, field: &str) -> Result<Cow<'static, str>, ApiError> {
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
/// `{"offset": .., "count": ..}` or `[offset, count]`. Their bounds are checked where the op is built.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeLimit {
    pub offset: Number,
    pub count: Number,
}

pub(crate) fn bytes(s: Cow<'_, str>) -> Bytes<'_> {
    match s {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

pub(crate) fn non_empty(field: &'static str) -> impl Fn(Cow<'_, str>) -> Result<Bytes<'_>, ApiError> {
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
pub(super) fn keys(list: &[String], field: &'static str) -> Result<Vec<Bytes<'static>>, ApiError> {
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
