//! Rendering an answer as the API's JSON: `{"result": .., "source": ..}`, plus `"degraded": true` (and
//! `"cached": true` for a write kept in the fallback cache) when Redis did not answer.

use base64::Engine;
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::request::Encoding;
use crate::client::{Reply, Served, Source};

struct Value<'a> {
    reply: &'a Reply,
    encoding: Encoding,
}

/// One string value, in the request's encoding.
struct Text<'a>(&'a [u8], Encoding);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Encoding::Base64 => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0)),
            Encoding::Utf8 => s.serialize_str(std::str::from_utf8(self.0).map_err(|_| S::Error::custom(NOT_UTF8))?),
        }
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.reply {
            Reply::Nil => s.serialize_none(),
            Reply::Bool(b) => s.serialize_bool(*b),
            Reply::Int(i) => s.serialize_i64(*i),
            Reply::Bytes(b) => Text(b, self.encoding).serialize(s),
            Reply::Hash(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (field, value) in pairs {
                    // Field names are never base64: they are the names the caller used.
                    let field = std::str::from_utf8(field).map_err(|_| S::Error::custom(NOT_UTF8))?;
                    map.serialize_entry(field, &Text(value, self.encoding))?;
                }
                map.end()
            }
        }
    }
}

const NOT_UTF8: &str = "not utf-8";

#[derive(Serialize)]
#[serde(untagged)]
enum Answer<'a> {
    Value(Value<'a>),
    Default(&'a RawValue),
}

#[derive(Serialize)]
struct Body<'a> {
    result: Answer<'a>,
    source: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
}

/// Renders a served call. For a read with no answer (`source: default`), `default` is the caller's default.
pub fn render(served: &Served, encoding: Encoding, default: Option<&RawValue>) -> Result<Vec<u8>, ApiError> {
    let result = match (served.source, &served.reply, default) {
        (Source::Default, Reply::Nil, Some(raw)) => Answer::Default(raw),
        _ => Answer::Value(Value {
            reply: &served.reply,
            encoding,
        }),
    };
    let body = Body {
        result,
        source: served.source.as_str(),
        degraded: served.source != Source::Redis,
        cached: served.cached,
    };
    let mut out = Vec::with_capacity(64);
    serde_json::to_writer(&mut out, &body).map_err(|_| ApiError::NotUtf8)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(reply: Reply, source: Source) -> Served {
        Served {
            reply,
            source,
            cached: false,
        }
    }

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn redis_answers_carry_no_degraded_flag() {
        let out = render(
            &served(Reply::Bytes(b"v\"1".to_vec()), Source::Redis),
            Encoding::Utf8,
            None,
        )
        .unwrap();
        assert_eq!(text(out), r#"{"result":"v\"1","source":"redis"}"#);
    }

    #[test]
    fn fallback_answers_say_where_they_came_from() {
        let out = render(
            &served(Reply::Bytes(b"v".to_vec()), Source::Cache),
            Encoding::Utf8,
            None,
        )
        .unwrap();
        assert_eq!(text(out), r#"{"result":"v","source":"cache","degraded":true}"#);
        let default = RawValue::from_string(r#"{"guest":true}"#.into()).unwrap();
        let out = render(&served(Reply::Nil, Source::Default), Encoding::Utf8, Some(&default)).unwrap();
        assert_eq!(
            text(out),
            r#"{"result":{"guest":true},"source":"default","degraded":true}"#
        );
        let out = render(&served(Reply::Nil, Source::Default), Encoding::Utf8, None).unwrap();
        assert_eq!(text(out), r#"{"result":null,"source":"default","degraded":true}"#);
        let kept = Served {
            reply: Reply::Bool(false),
            source: Source::Default,
            cached: true,
        };
        assert_eq!(
            text(render(&kept, Encoding::Utf8, None).unwrap()),
            r#"{"result":false,"source":"default","degraded":true,"cached":true}"#
        );
    }

    #[test]
    fn binary_values_need_base64() {
        let bin = served(Reply::Bytes(vec![0, 255]), Source::Redis);
        assert_eq!(render(&bin, Encoding::Utf8, None), Err(ApiError::NotUtf8));
        assert_eq!(
            text(render(&bin, Encoding::Base64, None).unwrap()),
            r#"{"result":"AP8=","source":"redis"}"#
        );
        let hash = served(Reply::Hash(vec![(b"f".to_vec(), vec![255])]), Source::Redis);
        assert_eq!(
            text(render(&hash, Encoding::Base64, None).unwrap()),
            r#"{"result":{"f":"/w=="},"source":"redis"}"#
        );
    }
}
