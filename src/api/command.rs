//! `POST /v1/command` bodies: `{"args": ["ZADD", "k", "1", "m"], "encoding"?: "base64"}`, one raw command.
//!
//! With base64, every argument is base64, the command name too, and so are the strings of the reply. The same
//! shape is a raw slot of `/v1/pipeline`.

use serde::Deserialize;

use super::error::ApiError;
use super::request::{self, decode, Encoding, Str};
use crate::op::Bytes;

/// A parsed raw command.
#[derive(Debug)]
pub(crate) struct Command<'a> {
    /// The command name first.
    pub args: Vec<Bytes<'a>>,
    pub encoding: Encoding,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow)]
    args: Option<Vec<Str<'a>>>,
    encoding: Option<Encoding>,
}

pub(crate) fn parse(body: &[u8]) -> Result<Command<'_>, ApiError> {
    let raw: Raw<'_> = request::deserialize(body)?;
    let encoding = raw.encoding.unwrap_or_default();
    let list = raw
        .args
        .ok_or_else(|| ApiError::BadRequest("missing field `args`".into()))?;
    if list.is_empty() {
        return Err(ApiError::BadRequest(
            "field `args` must not be empty: the command name comes first".into(),
        ));
    }
    let args = list
        .into_iter()
        .enumerate()
        .map(|(i, a)| decode(a.0, encoding, &format!("args[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if args[0].is_empty() {
        return Err(ApiError::BadRequest(
            "field `args[0]` (the command name) must not be empty".into(),
        ));
    }
    Ok(Command { args, encoding })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn bad(body: &str) -> String {
        match parse(body.as_bytes()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn args_borrow_from_the_body_or_decode_from_base64() {
        let c = parse(br#"{"args":["SET","k","v"]}"#).unwrap();
        assert_eq!(c.args, [b"SET".as_slice(), b"k", b"v"]);
        assert!(matches!(c.args[1], Cow::Borrowed(_)));
        let c = parse(br#"{"args":["R0VU","AP8="],"encoding":"base64"}"#).unwrap();
        assert_eq!(c.args, [b"GET".as_slice(), &[0, 255]]);
        assert_eq!(c.encoding, Encoding::Base64);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert!(bad(r#"{}"#).contains("missing field `args`"));
        assert!(bad(r#"{"args":[]}"#).contains("must not be empty"));
        assert!(bad(r#"{"args":[""]}"#).contains("`args[0]`"));
        assert!(bad(r#"{"args":["GET",5]}"#).contains("field `args[1]`"));
        assert!(bad(r#"{"args":["GET","%"],"encoding":"base64"}"#).contains("`args[0]` is not valid base64"));
        assert!(bad(r#"{"args":["GET"],"op":"get"}"#).contains("unknown field `op`"));
        assert!(bad(r#"["GET"]"#).contains("expected a JSON object"));
        assert!(bad(r#"{"args":["GET","a"]}{"args":["DEL","a"]}"#).contains("exactly one JSON value"));
        assert!(bad(r#"{"args":["GET","a"],"args":["DEL","a"]}"#).contains("duplicate field `args`"));
    }
}
