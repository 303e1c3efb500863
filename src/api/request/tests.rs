//! Tests of request parsing: every op, and every kind of bad request naming its problem.

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
    assert!(bad(r#"{"op":"set","key":"k","value":"!!","encoding":"base64"}"#).contains("`value` is not valid base64"));
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
fn invalid_utf8_is_a_bad_request_not_a_panic() {
    assert!(parse(b"{\"op\":\"get\",\"key\":\"\xff\"}", &Limits::default()).is_err());
}

fn op(body: &str) -> Op<'_> {
    match parse(body.as_bytes(), &Limits::default()) {
        Ok(r) => r.op,
        Err(e) => panic!("{body}: {e}"),
    }
}

fn b(s: &str) -> Cow<'static, [u8]> {
    Cow::Owned(s.as_bytes().to_vec())
}

#[test]
fn sorted_set_ops_parse_both_member_shapes() {
    let by_map = op(r#"{"op":"zadd","key":"z","members":{"a":1,"b":2.5}}"#);
    let by_list = op(r#"{"op":"zadd","key":"z","members":[[1,"a"],[2.5,"b"]]}"#);
    assert_eq!(by_map, by_list);
    assert!(matches!(&by_map, Op::ZAdd { members, .. } if members == &vec![(1.0, b("a")), (2.5, b("b"))]));
    assert!(matches!(
        op(r#"{"op":"zrem","key":"z","members":["a","b"]}"#),
        Op::ZRem { members, .. } if members == vec![b("a"), b("b")]
    ));
    assert!(matches!(
        op(r#"{"op":"zincrby","key":"z","member":"a","by":-0.5}"#),
        Op::ZIncrBy { by, .. } if by == -0.5
    ));
    assert!(matches!(
        op(r#"{"op":"zrange","key":"z","start":0,"stop":-1,"withscores":true}"#),
        Op::ZRange {
            start: 0,
            stop: -1,
            withscores: true,
            ..
        }
    ));
    let r = op(r#"{"op":"zrangebyscore","key":"z","min":"(1","max":"+inf","limit":{"offset":1,"count":2}}"#);
    assert!(
        matches!(&r, Op::ZRangeByScore { min, max, limit: Some((1, 2)), withscores: false, .. } if min == "(1" && max == "+inf"),
        "{r:?}"
    );
    // Redis's own order works too: LIMIT offset count.
    assert!(matches!(
        op(r#"{"op":"zrangebyscore","key":"z","min":0,"max":1,"limit":[3,4]}"#),
        Op::ZRangeByScore {
            limit: Some((3, 4)),
            ..
        }
    ));
    assert!(matches!(
        op(r#"{"op":"zremrangebyscore","key":"z","min":0,"max":2.5}"#),
        Op::ZRemRangeByScore { min, max, .. } if min == "0" && max == "2.5"
    ));
    let r = op(r#"{"op":"zscore","key":"z","member":"AP8=","encoding":"base64"}"#);
    assert!(matches!(r, Op::ZScore { member, .. } if member.as_ref() == [0u8, 255]));
}

#[test]
fn multi_key_and_script_ops_parse() {
    assert!(matches!(op(r#"{"op":"mget","keys":["a","b"]}"#), Op::MGet { keys } if keys.len() == 2));
    assert!(matches!(
        op(r#"{"op":"mset","pairs":{"a":"AQ==","b":"Ag=="},"encoding":"base64"}"#),
        Op::MSet { pairs } if pairs == vec![(b("a"), Cow::Owned(vec![1])), (b("b"), Cow::Owned(vec![2]))]
    ));
    assert_eq!(op(r#"{"op":"time"}"#), Op::Time);
    let eval = op(r#"{"op":"eval","script":"return ARGV[1]","keys":["k"],"args":["x"]}"#);
    assert!(matches!(eval, Op::Eval { ref keys, ref args, .. } if keys == &vec![b("k")] && args == &vec![b("x")]));
    let eval = op(r#"{"op":"eval","script":"return 1"}"#);
    assert!(matches!(eval, Op::Eval { ref keys, ref args, .. } if keys.is_empty() && args.is_empty()));
    let sha = "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB";
    let body = format!(r#"{{"op":"evalsha","sha":"{sha}"}}"#);
    let r = op(&body);
    assert!(matches!(r, Op::EvalSha { sha, .. } if sha == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"));
}

#[test]
fn new_ops_name_their_bad_fields() {
    let cases = [
        (r#"{"op":"zadd","key":"z"}"#, "op `zadd` needs field `members`"),
        (r#"{"op":"zadd","key":"z","members":{}}"#, "must be a non-empty object"),
        (r#"{"op":"zadd","key":"z","members":["a"]}"#, "for op `zadd`"),
        (r#"{"op":"zadd","key":"z","members":{"a":"high"}}"#, "field `members.a`"),
        (
            r#"{"op":"zrem","key":"z","members":{"a":1}}"#,
            "non-empty array of members",
        ),
        (r#"{"op":"zincrby","key":"z","member":"a"}"#, "needs field `by`"),
        (r#"{"op":"incr","key":"n","by":1.5}"#, "must be an integer"),
        (r#"{"op":"zrange","key":"z","start":0}"#, "needs field `stop`"),
        (r#"{"op":"zrange","key":"z","start":"a","stop":1}"#, "field `start`"),
        (
            r#"{"op":"zrangebyscore","key":"z","min":"low","max":1}"#,
            "field `min`: \"low\" is not a score bound",
        ),
        (
            r#"{"op":"zrangebyscore","key":"z","min":0,"max":1,"limit":{"offset":-1,"count":1}}"#,
            "field `limit.offset`",
        ),
        (
            r#"{"op":"zrangebyscore","key":"z","min":0,"max":1,"limit":{"count":1}}"#,
            "field `limit`: missing field `offset`",
        ),
        (
            r#"{"op":"zscore","key":"z","member":"a","by":1}"#,
            "field `by` is not used by op `zscore`",
        ),
        (r#"{"op":"mget","keys":[]}"#, "field `keys` must not be empty"),
        (
            r#"{"op":"mget","keys":["a",""]}"#,
            "field `keys` must not be an empty string",
        ),
        (r#"{"op":"mset","pairs":{}}"#, "non-empty object"),
        (r#"{"op":"mset","pairs":{"a":1}}"#, "field `pairs.a`"),
        (r#"{"op":"eval","script":" "}"#, "field `script` must not be empty"),
        (r#"{"op":"eval","script":"return 1","args":[1]}"#, "field `args[0]`"),
        (r#"{"op":"evalsha","sha":"abc"}"#, "40 hex digits"),
        (
            r#"{"op":"evalsha","script":"return 1"}"#,
            "field `script` is not used by op `evalsha`",
        ),
        (r#"{"op":"time","key":"k"}"#, "field `key` is not used by op `time`"),
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
    assert!(check(r#"{"op":"mset","pairs":{"abcde":"v"}}"#).contains("`pairs`"));
    assert!(
        parse(br#"{"op":"set","key":"abcd","value":"abc"}"#, &limits).is_ok(),
        "limits are inclusive"
    );
    // base64 values count by their decoded length: "YWJj" is "abc".
    assert!(parse(br#"{"op":"set","key":"k","value":"YWJj","encoding":"base64"}"#, &limits).is_ok());
    assert!(parse(
        br#"{"op":"set","key":"k","value":"YWJjZA==","encoding":"base64"}"#,
        &limits
    )
    .is_err());
}

#[test]
fn a_body_is_exactly_one_json_value() {
    // A second request, or anything else after the first value, is refused rather than dropped.
    for body in [
        r#"{"op":"get","key":"a"}{"op":"del","keys":["a"]}"#,
        r#"{"op":"get","key":"a"} x"#,
        r#"{"op":"get","key":"a"},"#,
        r#"{"op":"get","key":"a"}]"#,
        r#"{"op":"get","key":"a"}null"#,
    ] {
        let got = bad(body);
        assert!(got.contains("trailing characters"), "{body}: {got}");
        assert!(got.contains("exactly one JSON value"), "{body}: {got}");
    }
    assert!(parse(b"{\"op\":\"get\",\"key\":\"a\"} \r\n\t ", &Limits::default()).is_ok());
}

#[test]
fn a_key_given_twice_is_refused_wherever_it_is() {
    for (body, want) in [
        (r#"{"op":"get","key":"a","key":"b"}"#, "duplicate field `key`"),
        (r#"{"op":"get","op":"del","key":"a"}"#, "duplicate field `op`"),
        (r#"{"op":"mset","pairs":{"a":"1","a":"2"}}"#, "duplicate key \"a\""),
        (
            r#"{"op":"hset","key":"h","fields":{"f":"1","f":"2"}}"#,
            "duplicate key \"f\"",
        ),
        (
            r#"{"op":"zadd","key":"z","members":{"m":1,"m":2}}"#,
            "duplicate key \"m\"",
        ),
    ] {
        let got = bad(body);
        assert!(got.contains(want), "{body}: got {got:?}, want {want:?}");
    }
}

#[test]
fn numbers_out_of_bounds_name_the_field_and_its_bounds() {
    let max_ttl = format!("1..={MAX_TTL_MS}");
    let max_seconds = format!("-{MAX_EXPIRE_SECONDS}..={MAX_EXPIRE_SECONDS}");
    let i64s = format!("{}..={}", i64::MIN, i64::MAX);
    let cases = [
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":0}"#.to_owned(),
            format!("field `ttl_ms` must be an integer in {max_ttl}, got 0"),
        ),
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":9223372036854775808}"#.into(),
            format!("field `ttl_ms` must be an integer in {max_ttl}"),
        ),
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":18446744073709551616}"#.into(),
            format!("field `ttl_ms` must be an integer in {max_ttl}"),
        ),
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":1000000000000000001}"#.into(),
            format!("field `ttl_ms` must be an integer in {max_ttl}"),
        ),
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":1.5}"#.into(),
            "field `ttl_ms` must be an integer".into(),
        ),
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":-1}"#.into(),
            "field `ttl_ms` must be an integer".into(),
        ),
        (
            r#"{"op":"expire","key":"k","seconds":1000000000000001}"#.into(),
            format!("field `seconds` must be an integer in {max_seconds}"),
        ),
        (
            r#"{"op":"expire","key":"k","seconds":-1e300}"#.into(),
            format!("field `seconds` must be an integer in {max_seconds}"),
        ),
        (
            r#"{"op":"incr","key":"k","by":9223372036854775808}"#.into(),
            format!("field `by` must be an integer in {i64s}"),
        ),
        (
            r#"{"op":"zrange","key":"z","start":0,"stop":1e19}"#.into(),
            format!("field `stop` must be an integer in {i64s}"),
        ),
        (
            r#"{"op":"zrangebyscore","key":"z","min":0,"max":1,"limit":[-1,1]}"#.into(),
            "field `limit.offset` must be an integer in 0..=".into(),
        ),
        (
            r#"{"op":"zrangebyscore","key":"z","min":0,"max":1,"limit":[0,0.5]}"#.into(),
            "field `limit.count` must be an integer".into(),
        ),
        (
            r#"{"op":"set","key":"k","value":"v","ttl_ms":"5"}"#.into(),
            "field `ttl_ms`: invalid type: string".into(),
        ),
    ];
    for (body, want) in cases {
        let got = bad(&body);
        assert!(got.contains(&want), "{body}: got {got:?}, want {want:?}");
    }
    // The bounds themselves are accepted.
    let r = op(r#"{"op":"set","key":"k","value":"v","ttl_ms":1000000000000000000}"#);
    assert!(matches!(
        r,
        Op::Set {
            ttl_ms: Some(1_000_000_000_000_000_000),
            ..
        }
    ));
    let r = op(r#"{"op":"expire","key":"k","seconds":-1000000000000000}"#);
    assert!(matches!(
        r,
        Op::Expire {
            seconds: -1_000_000_000_000_000,
            ..
        }
    ));
    let r = op(r#"{"op":"zrangebyscore","key":"z","min":0,"max":1,"limit":[9223372036854775807,-1]}"#);
    assert!(matches!(
        r,
        Op::ZRangeByScore {
            limit: Some((i64::MAX, -1)),
            ..
        }
    ));
}

#[test]
fn infinite_scores_are_the_strings_zrange_answers_with() {
    let by_map = op(r#"{"op":"zadd","key":"z","members":{"a":"inf","b":"-inf","c":"+inf","d":2}}"#);
    let by_list = op(r#"{"op":"zadd","key":"z","members":[["inf","a"],["-inf","b"],["+inf","c"],[2,"d"]]}"#);
    assert_eq!(by_map, by_list);
    let want = vec![
        (f64::INFINITY, b("a")),
        (f64::NEG_INFINITY, b("b")),
        (f64::INFINITY, b("c")),
        (2.0, b("d")),
    ];
    assert!(
        matches!(&by_map, Op::ZAdd { members, .. } if members == &want),
        "{by_map:?}"
    );
    // Redis reads these as the infinities.
    let args: Vec<Vec<u8>> = by_map
        .to_cmd()
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(a) => a.to_vec(),
            _ => vec![],
        })
        .collect();
    assert_eq!(args[2], b"inf");
    assert_eq!(args[4], b"-inf");
    for (body, want) in [
        (
            r#"{"op":"zadd","key":"z","members":{"a":"nan"}}"#,
            "field `members.a`: invalid value: string \"nan\"",
        ),
        (
            r#"{"op":"zadd","key":"z","members":{"a":"Infinity"}}"#,
            "field `members.a`",
        ),
        (
            r#"{"op":"zadd","key":"z","members":[["1","a"]]}"#,
            "field `members[0][0]`: invalid value: string \"1\"",
        ),
        (r#"{"op":"zadd","key":"z","members":[[1,"a",2]]}"#, "field `members[0]`"),
        (
            r#"{"op":"zadd","key":"z","members":[[1,"a"],"b"]}"#,
            "mixes member names and [score, member] pairs",
        ),
    ] {
        let got = bad(body);
        assert!(got.contains(want), "{body}: got {got:?}, want {want:?}");
    }
}

#[test]
fn every_field_an_op_takes_is_a_field_of_the_request_and_every_field_has_an_op() {
    for op in OpName::ALL {
        for field in op.fields() {
            assert!(FIELD_NAMES.contains(field), "{op:?} takes unknown field `{field}`");
        }
    }
    for field in FIELD_NAMES {
        assert!(
            OpName::ALL.into_iter().any(|op| op.fields().contains(field)),
            "no op takes field `{field}`"
        );
    }
}

/// A value of the right shape for each field, so that a body with it gets past serde to the field check.
fn sample(field: &str) -> &'static str {
    match field {
        "key" | "value" | "field" | "member" => r#""k""#,
        "keys" | "args" => r#"["k"]"#,
        "fields" | "pairs" => r#"{"f":"v"}"#,
        "members" => r#"["m"]"#,
        "default" | "ttl_ms" | "seconds" | "by" | "start" | "stop" | "min" | "max" => "1",
        "nx" | "xx" | "withscores" => "true",
        "limit" => "[0,1]",
        "script" => r#""return 1""#,
        "sha" => r#""0123456789abcdef0123456789abcdef01234567""#,
        other => panic!("no sample value for field `{other}`: add one"),
    }
}

#[test]
fn every_field_an_op_does_not_take_is_refused_naming_it() {
    for op in OpName::ALL {
        for field in FIELD_NAMES.iter().filter(|f| !op.fields().contains(f)) {
            let body = format!(r#"{{"op":"{}","{field}":{}}}"#, op.as_str(), sample(field));
            assert_eq!(
                bad(&body),
                format!("field `{field}` is not used by op `{}`", op.as_str()),
                "{body}"
            );
        }
    }
}

#[test]
fn every_op_name_reaches_the_parser_of_its_family() {
    for op in OpName::ALL {
        let body = format!(r#"{{"op":"{}"}}"#, op.as_str());
        match parse(body.as_bytes(), &Limits::default()) {
            Ok(req) => assert_eq!(req.op.name(), op),
            Err(ApiError::BadRequest(m)) => {
                assert!(m.starts_with(&format!("op `{}` needs field `", op.as_str())), "{m}")
            }
            Err(other) => panic!("{body}: {other:?}"),
        }
    }
}
