//! `POST /v1/pipeline` bodies and answers.
//!
//! `{"commands": [{"op": ..} or {"args": [..]}, ..], "atomic"?: bool}`. Each command is a whole `/v1/cmd` body
//! (a typed op, with its own `encoding` and `default`) or a whole `/v1/command` body (raw `args`, with its own
//! `encoding`), parsed by the same code, so the same fields mean the same thing. `on_unavailable` has no place in
//! a pipeline: its writes fail as a whole. The answer is `{"results": [..], "source": ..}`, one slot per
//! command in order, each shaped like a `/v1/cmd` answer or, when that command failed alone, like an error body.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::command;
use super::error::ApiError;
use super::reply::Answer;
use super::request::{self, Encoding};
use crate::client::{Item, SlotAnswer, Source};

/// What one slot's answer is rendered with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape<'a> {
    pub encoding: Encoding,
    pub default: Option<&'a RawValue>,
}

/// A parsed pipeline: the commands, and per command the shape of its answer.
#[derive(Debug)]
pub(crate) struct Pipeline<'a> {
    pub items: Vec<Item<'a>>,
    pub shapes: Vec<Shape<'a>>,
    pub atomic: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow)]
    commands: Option<Vec<&'a RawValue>>,
    atomic: Option<bool>,
}

/// Which kind of command a slot holds; the slot's own parser checks everything else (a repeated field too,
/// which this probe lets pass so that the slot's parser can name it).
struct Probe {
    op: bool,
    args: bool,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Probe;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
                let mut probe = Probe { op: false, args: false };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "op" => probe.op = true,
                        "args" => probe.args = true,
                        _ => {}
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(probe)
            }
        }
        d.deserialize_map(V)
    }
}

pub(crate) fn parse<'a>(
    body: &'a [u8],
    max_commands: usize,
    limits: &request::Limits,
) -> Result<Pipeline<'a>, ApiError> {
    let raw: Raw<'_> = request::deserialize(body)?;
    let commands = raw
        .commands
        .ok_or_else(|| ApiError::BadRequest("missing field `commands`".into()))?;
    if commands.is_empty() {
        return Err(ApiError::BadRequest("field `commands` must not be empty".into()));
    }
    if commands.len() > max_commands {
        return Err(ApiError::BadRequest(format!(
            "field `commands` has {} commands; api.max_pipeline_commands allows {max_commands}",
            commands.len()
        )));
    }
    let (items, shapes) = commands
        .iter()
        .enumerate()
        .map(|(i, command)| slot(command, limits).map_err(|e| in_slot(i, e)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    Ok(Pipeline {
        items,
        shapes,
        atomic: raw.atomic.unwrap_or(false),
    })
}

fn slot<'a>(command: &'a RawValue, limits: &request::Limits) -> Result<(Item<'a>, Shape<'a>), ApiError> {
    let text = command.get();
    let probe: Probe = serde_json::from_str(text).map_err(|_| {
        ApiError::BadRequest("must be an object with `op` (a typed op) or `args` (a raw command)".into())
    })?;
    match (probe.op, probe.args) {
        (true, _) => {
            let req = request::parse(text.as_bytes(), limits)?;
            if req.on_unavailable.is_some() {
                return Err(ApiError::BadRequest(
                    "field `on_unavailable` is not used in a pipeline (its writes fail as a whole)".into(),
                ));
            }
            let shape = Shape {
                encoding: req.encoding,
                default: req.default,
            };
            Ok((Item::Op(req.op), shape))
        }
        (false, true) => {
            let c = command::parse(text.as_bytes())?;
            let shape = Shape {
                encoding: c.encoding,
                default: None,
            };
            Ok((Item::raw(c.args), shape))
        }
        (false, false) => Err(ApiError::BadRequest(
            "needs `op` (a typed op) or `args` (a raw command)".into(),
        )),
    }
}

/// Names the slot in a parse error: "commands[2]: field `key` ...".
fn in_slot(i: usize, e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("commands[{i}]: {m}")),
        ApiError::UnknownOp(op) => ApiError::BadRequest(format!("commands[{i}]: unknown op `{op}`")),
        other => other,
    }
}

#[derive(Serialize)]
struct Body<'a> {
    results: Vec<Box<RawValue>>,
    source: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
}

/// The answer: each slot rendered on its own, so a value one slot cannot show (not UTF-8) fails only that slot.
pub(crate) fn render(shapes: &[Shape<'_>], answers: &[SlotAnswer]) -> Vec<u8> {
    let results = shapes
        .iter()
        .zip(answers)
        .map(|(shape, answer)| {
            let json = match answer {
                Ok(served) => Answer::new(served, shape.encoding, shape.default)
                    .to_json()
                    .unwrap_or_else(|e| e.to_json()),
                Err(message) => ApiError::Redis(message.clone()).to_json(),
            };
            let json = String::from_utf8(json).expect("serde_json writes UTF-8");
            RawValue::from_string(json).expect("serde_json writes valid JSON")
        })
        .collect();
    let source = crate::client::pipeline_source(answers);
    let body = Body {
        results,
        source: source.as_str(),
        degraded: source != Source::Redis,
    };
    serde_json::to_vec(&body).expect("raw values and strings always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Reply, Served};
    use crate::op::Op;

    fn bad(body: &str) -> String {
        match parse(body.as_bytes(), 3, &request::Limits::default()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn typed_and_raw_slots_parse_with_their_own_options() {
        let p = parse(
            br#"{"commands":[{"op":"get","key":"k","default":0},{"args":["R0VU","aw=="],"encoding":"base64"}],"atomic":true}"#,
            3, &request::Limits::default()
        )
        .unwrap();
        assert!(p.atomic);
        assert!(matches!(p.items[0], Item::Op(Op::Get { .. })));
        assert_eq!(p.shapes[0].default.map(RawValue::get), Some("0"));
        assert!(
            matches!(&p.items[1], Item::Raw { args, position } if args == &[b"GET".as_slice(), b"k"] && *position == crate::commands::position(b"GET"))
        );
        assert_eq!(p.shapes[1].encoding, Encoding::Base64);
        assert!(
            !parse(br#"{"commands":[{"op":"ping"}]}"#, 3, &request::Limits::default())
                .unwrap()
                .atomic
        );
    }

    #[test]
    fn bad_pipelines_name_the_slot_and_field() {
        for (body, want) in [
            (r#"{}"#, "missing field `commands`"),
            (r#"{"commands":[]}"#, "must not be empty"),
            (
                r#"{"commands":[{"op":"ping"},{"op":"ping"},{"op":"ping"},{"op":"ping"}]}"#,
                "has 4 commands; api.max_pipeline_commands allows 3",
            ),
            (
                r#"{"commands":[{"op":"ping"},{"op":"get"}]}"#,
                "commands[1]: op `get` needs field `key`",
            ),
            (
                r#"{"commands":[{"op":"teleport"}]}"#,
                "commands[0]: unknown op `teleport`",
            ),
            (
                r#"{"commands":[{"args":[]}]}"#,
                "commands[0]: field `args` must not be empty",
            ),
            (r#"{"commands":[{"key":"k"}]}"#, "commands[0]: needs `op`"),
            (r#"{"commands":[5]}"#, "commands[0]: must be an object"),
            (
                r#"{"commands":[{"op":"set","key":"k","value":"v","on_unavailable":"default"}]}"#,
                "commands[0]: field `on_unavailable` is not used in a pipeline",
            ),
            (r#"{"commands":[{"op":"ping"}],"atomic":"yes"}"#, "field `atomic`"),
            (
                r#"{"commands":[{"op":"ping"}]}{"commands":[{"op":"del","keys":["a"]}]}"#,
                "exactly one JSON value",
            ),
            (
                r#"{"commands":[{"op":"get","key":"a","key":"b"}]}"#,
                "commands[0]: invalid JSON body: duplicate field `key`",
            ),
            (
                r#"{"commands":[{"args":["GET","a"],"args":["DEL","a"]}]}"#,
                "commands[0]: invalid JSON body: duplicate field `args`",
            ),
            (
                r#"{"commands":[{"op":"ping"}],"commands":[{"op":"ping"}]}"#,
                "duplicate field `commands`",
            ),
        ] {
            let got = bad(body);
            assert!(got.contains(want), "{body}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn each_slot_renders_alone() {
        let p = parse(
            br#"{"commands":[{"op":"get","key":"a"},{"op":"get","key":"b"},{"args":["GET","c"]}]}"#,
            3,
            &request::Limits::default(),
        )
        .unwrap();
        let answers = vec![
            Ok(Served {
                reply: Reply::Bytes(b"1".to_vec()),
                source: Source::Redis,
                cached: false,
            }),
            Err("WRONGTYPE Operation against a key".to_owned()),
            Ok(Served {
                reply: Reply::Raw(redis::Value::BulkString(vec![255])),
                source: Source::Redis,
                cached: false,
            }),
        ];
        let body: serde_json::Value = serde_json::from_slice(&render(&p.shapes, &answers)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "results": [
                    {"result": "1", "source": "redis"},
                    {"error": {"code": "redis_error", "message": "WRONGTYPE Operation against a key"}},
                    {"error": {"code": "not_utf8", "message": "the value is not valid UTF-8; ask for it with \"encoding\": \"base64\""}},
                ],
                "source": "redis"
            })
        );
    }
}
