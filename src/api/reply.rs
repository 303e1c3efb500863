//! Rendering an answer as the API's JSON: `{"result": .., "source": ..}`, plus `"degraded": true` (and
//! `"cached": true` for a write kept in the fallback cache) when Redis did not answer. A pipeline renders each
//! of its slots the same way ([`Answer`]).
//!
//! Shapes beyond strings and numbers: a hash is an object; sorted-set members are an array, and with scores an
//! array of `{"member": .., "score": ..}` in order; a score is a number (`"inf"` / `"-inf"` as strings); MGET
//! is an array with `null` for a missing key; TIME is `{"seconds": .., "microseconds": ..}`; raw replies and
//! script results follow [`super::raw_reply`]. An MGET answered from the fallback puts the caller's `default` in
//! place of each key the cache did not have, and adds `"sources"`: where each key's value came from.

use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::error::ApiError;
use super::raw_reply::{serialize_f64, RawReply, Text, NOT_UTF8};
use super::request::Encoding;
use crate::client::{Reply, Served, Source};

struct Value<'a> {
    reply: &'a Reply,
    encoding: Encoding,
    /// The caller's default, for keys of a fallback MGET that the cache did not have.
    default: Option<&'a RawValue>,
}

struct Float(f64);

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_f64(self.0, s)
    }
}

#[derive(Serialize)]
struct ScoredMember<'a> {
    member: Text<'a>,
    score: Float,
}

#[derive(Serialize)]
struct Time {
    seconds: i64,
    microseconds: i64,
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = self.encoding;
        match self.reply {
            Reply::Nil => s.serialize_none(),
            Reply::Bool(b) => s.serialize_bool(*b),
            Reply::Int(i) => s.serialize_i64(*i),
            Reply::Float(f) => serialize_f64(*f, s),
            Reply::Bytes(b) => Text(b, enc).serialize(s),
            Reply::Hash(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (field, value) in pairs {
                    // Field names are never base64: they are the names the caller used.
                    let field = std::str::from_utf8(field).map_err(|_| S::Error::custom(NOT_UTF8))?;
                    map.serialize_entry(field, &Text(value, enc))?;
                }
                map.end()
            }
            Reply::Members(members) => s.collect_seq(members.iter().map(|m| Text(m, enc))),
            Reply::Scored(scored) => s.collect_seq(scored.iter().map(|(m, score)| ScoredMember {
                member: Text(m, enc),
                score: Float(*score),
            })),
            Reply::Values(values) => s.collect_seq(values.iter().map(|v| v.as_deref().map(|v| Text(v, enc)))),
            Reply::Sourced(values) => {
                let mut seq = s.serialize_seq(Some(values.len()))?;
                for (value, _) in values {
                    match (value, self.default) {
                        (Some(v), _) => seq.serialize_element(&Text(v, enc))?,
                        (None, Some(default)) => seq.serialize_element(default)?,
                        (None, None) => seq.serialize_element(&None::<()>)?,
                    }
                }
                seq.end()
            }
            Reply::Time { seconds, microseconds } => Time {
                seconds: *seconds,
                microseconds: *microseconds,
            }
            .serialize(s),
            Reply::Raw(value) => RawReply(value, enc).serialize(s),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Result_<'a> {
    Value(Value<'a>),
    Default(&'a RawValue),
}

/// One answer as JSON: the body of `/v1/cmd` and `/v1/command`, and each slot of a pipeline.
#[derive(Serialize)]
pub struct Answer<'a> {
    result: Result_<'a>,
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
}

impl<'a> Answer<'a> {
    /// For a read with no answer (`source: default`), `default` is the caller's default.
    pub fn new(served: &'a Served, encoding: Encoding, default: Option<&'a RawValue>) -> Answer<'a> {
        let result = match (served.source, &served.reply, default) {
            (Source::Default, Reply::Nil, Some(raw)) => Result_::Default(raw),
            _ => Result_::Value(Value {
                reply: &served.reply,
                encoding,
                default,
            }),
        };
        let sources = match &served.reply {
            Reply::Sourced(values) => Some(values.iter().map(|(_, source)| source.as_str()).collect()),
            _ => None,
        };
        Answer {
            result,
            source: served.source.as_str(),
            sources,
            degraded: served.source != Source::Redis,
            cached: served.cached,
        }
    }

    pub fn to_json(&self) -> Result<Vec<u8>, ApiError> {
        // Sized for the common single value up front (base64 is the larger encoding): growing the buffer
        // while a 100-byte value is escaped into it cost two reallocations per GET.
        let payload = match &self.result {
            Result_::Value(Value {
                reply: Reply::Bytes(bytes),
                ..
            }) => bytes.len().div_ceil(3) * 4,
            Result_::Value(_) => 0,
            Result_::Default(raw) => raw.get().len(),
        };
        let mut out = Vec::with_capacity(64 + payload);
        serde_json::to_writer(&mut out, self).map_err(|_| ApiError::NotUtf8)?;
        Ok(out)
    }
}

/// Renders a served call. For a read with no answer (`source: default`), `default` is the caller's default.
pub fn render(served: &Served, encoding: Encoding, default: Option<&RawValue>) -> Result<Vec<u8>, ApiError> {
    Answer::new(served, encoding, default).to_json()
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

    #[test]
    fn sorted_sets_scores_and_time_have_their_shapes() {
        let out = |reply: Reply| text(render(&served(reply, Source::Redis), Encoding::Utf8, None).unwrap());
        assert_eq!(out(Reply::Float(1.5)), r#"{"result":1.5,"source":"redis"}"#);
        assert_eq!(
            out(Reply::Float(f64::NEG_INFINITY)),
            r#"{"result":"-inf","source":"redis"}"#
        );
        assert_eq!(
            out(Reply::Members(vec![b"a".to_vec(), b"b".to_vec()])),
            r#"{"result":["a","b"],"source":"redis"}"#
        );
        assert_eq!(
            out(Reply::Scored(vec![
                (b"a".to_vec(), 1.0),
                (b"b".to_vec(), f64::INFINITY)
            ])),
            r#"{"result":[{"member":"a","score":1.0},{"member":"b","score":"inf"}],"source":"redis"}"#
        );
        assert_eq!(
            out(Reply::Values(vec![Some(b"1".to_vec()), None])),
            r#"{"result":["1",null],"source":"redis"}"#
        );
        assert_eq!(
            out(Reply::Time {
                seconds: 1_700_000_000,
                microseconds: 5
            }),
            r#"{"result":{"seconds":1700000000,"microseconds":5},"source":"redis"}"#
        );
        assert_eq!(
            out(Reply::Raw(redis::Value::Array(vec![
                redis::Value::Int(1),
                redis::Value::Nil
            ]))),
            r#"{"result":[1,null],"source":"redis"}"#
        );
    }

    #[test]
    fn a_fallback_mget_fills_misses_with_the_default_and_names_each_source() {
        let reply = Reply::Sourced(vec![(Some(b"v".to_vec()), Source::Cache), (None, Source::Default)]);
        let default = RawValue::from_string("0".into()).unwrap();
        assert_eq!(
            text(render(&served(reply.clone(), Source::Cache), Encoding::Utf8, Some(&default)).unwrap()),
            r#"{"result":["v",0],"source":"cache","sources":["cache","default"],"degraded":true}"#
        );
        assert_eq!(
            text(render(&served(reply, Source::Cache), Encoding::Utf8, None).unwrap()),
            r#"{"result":["v",null],"source":"cache","sources":["cache","default"],"degraded":true}"#
        );
    }
}
