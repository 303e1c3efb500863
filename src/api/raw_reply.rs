//! How a raw Redis reply (raw commands, scripts) becomes JSON.
//!
//! | Redis reply                         | JSON                                                             |
//! |-------------------------------------|------------------------------------------------------------------|
//! | simple string, bulk string, verbatim | string (base64 with `"encoding": "base64"`; `+OK` is `"OK"`)    |
//! | integer                             | number                                                           |
//! | nil (null bulk / null array / null) | `null`                                                           |
//! | array, set, push                    | array                                                            |
//! | map (RESP3)                         | object; keys rendered as strings. If a key is not a string or   |
//! |                                     | number (or two keys collide), an array of `[key, value]` pairs   |
//! | double (RESP3)                      | number; `"inf"`, `"-inf"`, `"nan"` as strings (JSON has none)    |
//! | boolean (RESP3)                     | `true` / `false`                                                 |
//! | big number (RESP3)                  | string of its digits                                             |
//! | attribute (RESP3)                   | the value it annotates                                           |
//! | error inside an array (scripts)     | `{"error": {"code": "redis_error", "message": ..}}`              |
//!
//! redguard talks RESP2 to Redis, so maps, doubles, booleans and sets do not occur today (HGETALL is a flat
//! array); the mapping is defined for them so a RESP3 connection changes nothing here. A top-level error reply
//! never gets here: it is the `422 redis_error` answer. A string that is not UTF-8 without base64 fails the
//! whole answer with `not_utf8`.

use std::collections::HashSet;

use base64::Engine;
use redis::Value;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::request::Encoding;

pub(crate) const NOT_UTF8: &str = "not utf-8";

/// A raw reply, rendered in the request's encoding.
pub(crate) struct RawReply<'a>(pub &'a Value, pub Encoding);

/// A string value: text, or base64 when asked.
pub(crate) struct Text<'a>(pub &'a [u8], pub Encoding);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Encoding::Base64 => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0)),
            Encoding::Utf8 => s.serialize_str(std::str::from_utf8(self.0).map_err(|_| S::Error::custom(NOT_UTF8))?),
        }
    }
}

/// A number JSON can carry, or Redis's own spelling of the ones it cannot.
pub(crate) fn serialize_f64<S: Serializer>(f: f64, s: S) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        s.serialize_f64(f)
    } else if f.is_nan() {
        s.serialize_str("nan")
    } else if f > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// The bytes a map key is shown as, if it has a string form.
fn key_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes().to_vec()),
        Value::Okay => Some(b"OK".to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

#[derive(Serialize)]
struct ErrorSlot<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'static str,
    message: &'a str,
}

impl Serialize for RawReply<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = self.1;
        let seq = |items: &[Value], s: S| {
            let mut seq = s.serialize_seq(Some(items.len()))?;
            for item in items {
                seq.serialize_element(&RawReply(item, enc))?;
            }
            seq.end()
        };
        match self.0 {
            Value::Nil => s.serialize_none(),
            Value::Int(i) => s.serialize_i64(*i),
            Value::BulkString(b) => Text(b, enc).serialize(s),
            Value::SimpleString(t) => Text(t.as_bytes(), enc).serialize(s),
            Value::VerbatimString { text, .. } => Text(text.as_bytes(), enc).serialize(s),
            Value::Okay => Text(b"OK", enc).serialize(s),
            Value::Array(items) | Value::Set(items) => seq(items, s),
            Value::Push { data, .. } => seq(data, s),
            Value::Map(entries) => {
                let keys: Option<Vec<Vec<u8>>> = entries.iter().map(|(k, _)| key_bytes(k)).collect();
                let unique = keys
                    .as_ref()
                    .is_some_and(|keys| keys.iter().collect::<HashSet<_>>().len() == keys.len());
                match keys {
                    Some(keys) if unique => {
                        let mut map = s.serialize_map(Some(entries.len()))?;
                        for (key, (_, value)) in keys.iter().zip(entries) {
                            map.serialize_entry(&Text(key, enc), &RawReply(value, enc))?;
                        }
                        map.end()
                    }
                    _ => {
                        let mut seq = s.serialize_seq(Some(entries.len()))?;
                        for (key, value) in entries {
                            seq.serialize_element(&[RawReply(key, enc), RawReply(value, enc)])?;
                        }
                        seq.end()
                    }
                }
            }
            Value::Attribute { data, .. } => RawReply(data, enc).serialize(s),
            Value::Double(f) => serialize_f64(*f, s),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::BigNumber(digits) => s.serialize_str(&String::from_utf8_lossy(digits)),
            Value::ServerError(e) => {
                let message = match e.details() {
                    Some(detail) => format!("{} {detail}", e.code()),
                    None => e.code().to_owned(),
                };
                ErrorSlot {
                    error: ErrorDetail {
                        code: "redis_error",
                        message: &message,
                    },
                }
                .serialize(s)
            }
            // A reply type newer than this mapping: shown as redis-rs describes it rather than dropped.
            other => s.serialize_str(&format!("{other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: Value, enc: Encoding) -> Result<String, String> {
        serde_json::to_string(&RawReply(&v, enc)).map_err(|e| e.to_string())
    }

    fn utf8(v: Value) -> String {
        json(v, Encoding::Utf8).unwrap()
    }

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn each_reply_type_has_its_json_form() {
        assert_eq!(utf8(Value::Nil), "null");
        assert_eq!(utf8(Value::Int(-7)), "-7");
        assert_eq!(utf8(bulk(b"a\"b")), r#""a\"b""#);
        assert_eq!(utf8(Value::SimpleString("PONG".into())), r#""PONG""#);
        assert_eq!(utf8(Value::Okay), r#""OK""#);
        assert_eq!(
            utf8(Value::Array(vec![
                Value::Int(1),
                Value::Nil,
                bulk(b"x"),
                Value::Array(vec![])
            ])),
            r#"[1,null,"x",[]]"#
        );
        assert_eq!(utf8(Value::Set(vec![bulk(b"m")])), r#"["m"]"#);
        assert_eq!(utf8(Value::Double(1.5)), "1.5");
        assert_eq!(utf8(Value::Double(f64::INFINITY)), r#""inf""#);
        assert_eq!(utf8(Value::Double(f64::NEG_INFINITY)), r#""-inf""#);
        assert_eq!(utf8(Value::Double(f64::NAN)), r#""nan""#);
        assert_eq!(utf8(Value::Boolean(true)), "true");
        assert_eq!(
            utf8(Value::BigNumber(b"123456789012345678901234567890".to_vec())),
            r#""123456789012345678901234567890""#
        );
        let verbatim = Value::VerbatimString {
            format: redis::VerbatimFormat::Text,
            text: "hello".into(),
        };
        assert_eq!(utf8(verbatim), r#""hello""#);
        let attr = Value::Attribute {
            data: Box::new(Value::Int(3)),
            attributes: vec![(bulk(b"ttl"), Value::Int(1))],
        };
        assert_eq!(utf8(attr), "3");
    }

    #[test]
    fn maps_become_objects_unless_their_keys_cannot_be_names() {
        let map = Value::Map(vec![(bulk(b"f"), bulk(b"v")), (Value::Int(2), Value::Boolean(false))]);
        assert_eq!(utf8(map), r#"{"f":"v","2":false}"#);
        let odd = Value::Map(vec![(Value::Array(vec![Value::Int(1)]), bulk(b"v"))]);
        assert_eq!(utf8(odd), r#"[[[1],"v"]]"#);
        let colliding = Value::Map(vec![(Value::Int(1), bulk(b"a")), (bulk(b"1"), bulk(b"b"))]);
        assert_eq!(utf8(colliding), r#"[[1,"a"],["1","b"]]"#);
    }

    #[test]
    fn base64_applies_to_every_string_and_map_key() {
        let v = Value::Array(vec![bulk(&[0, 255]), Value::Okay, Value::Int(1)]);
        assert_eq!(json(v, Encoding::Base64).unwrap(), r#"["AP8=","T0s=",1]"#);
        let map = Value::Map(vec![(bulk(b"k"), bulk(&[255]))]);
        assert_eq!(json(map, Encoding::Base64).unwrap(), r#"{"aw==":"/w=="}"#);
        let err = json(bulk(&[0, 255]), Encoding::Utf8).unwrap_err();
        assert!(err.contains(NOT_UTF8), "{err}");
    }

    #[test]
    fn errors_inside_arrays_are_error_objects() {
        let err = redis::make_extension_error("ERR".into(), Some("boom".into()));
        let e = err.into_server_errors().unwrap()[0].1.clone();
        let v = Value::Array(vec![Value::Int(1), Value::ServerError(e)]);
        assert_eq!(utf8(v), r#"[1,{"error":{"code":"redis_error","message":"ERR boom"}}]"#);
    }
}
