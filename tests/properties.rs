//! Property tests over request parsing and dispatch: whatever bytes or JSON a client sends, redguard answers
//! with a JSON body and a documented status, and never panics. (`fuzz/` holds the coverage-guided version of
//! the same property for longer runs.)
//!
//! The API's handler is driven in-process (no socket) with the breaker forced open, so no case touches Redis and
//! every write takes the documented 503 path.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use redguard::api::{self, request, App};
use redguard::breaker::Override;
use redguard::config::Config;
use serde_json::Value;

fn app() -> App {
    // Nothing listens on port 1: even an admitted call would fail fast, but the breaker is forced open anyway.
    let cfg = Config::from_yaml(
        "redis:\n  url: redis://127.0.0.1:1\napi:\n  max_body_bytes: 4096\n  max_key_bytes: 64\n  max_value_bytes: 256\n",
        "<test>",
    )
    .unwrap();
    let (client, _notifier) = redguard::build_client(&cfg).unwrap();
    client.breaker().apply(Override::ForceOpen);
    App::new(client, &cfg, None)
}

/// One runtime and app for every case.
fn shared() -> &'static (tokio::runtime::Runtime, Arc<App>) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, Arc<App>)> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(async { app() });
        (rt, Arc::new(app))
    })
}

/// Sends `body` to /v1/cmd and returns the status and the parsed JSON body.
fn dispatch(body: Vec<u8>) -> (u16, Value) {
    let (rt, app) = shared();
    rt.block_on(async {
        let req = Request::post("/v1/cmd").body(Body::from(body)).unwrap();
        let res = api::handle(app, req).await;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("status {status}: not JSON ({e}): {bytes:?}"));
        (status, json)
    })
}

fn check_answer(status: u16, json: &Value) {
    match status {
        200 => assert!(json.get("result").is_some() && json["source"].is_string(), "{json}"),
        400 | 413 | 422 | 503 => {
            let code = json["error"]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("no error code: {json}"));
            let allowed = [
                "bad_request",
                "unknown_op",
                "payload_too_large",
                "redis_error",
                "not_utf8",
                "circuit_open",
            ];
            assert!(allowed.contains(&code), "{status} {json}");
            assert!(json["error"]["message"].is_string(), "{json}");
        }
        other => panic!("undocumented status {other}: {json}"),
    }
}

/// JSON values shaped like requests: real field names and ops mixed with noise, at any type.
fn json_request() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "[a-z:0-9]{0,12}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
        prop::sample::select(vec![
            "get", "set", "del", "hset", "hgetall", "incr", "ping", "base64", "default"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let field = prop::sample::select(vec![
        "op",
        "key",
        "keys",
        "value",
        "field",
        "fields",
        "default",
        "ttl_ms",
        "nx",
        "xx",
        "seconds",
        "by",
        "encoding",
        "on_unavailable",
        "extra",
    ]);
    prop::collection::btree_map(field, value, 0..6)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_always_get_a_json_answer(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let (status, json) = dispatch(body);
        check_answer(status, &json);
    }

    #[test]
    fn arbitrary_json_always_gets_a_json_answer(req in json_request()) {
        let (status, json) = dispatch(serde_json::to_vec(&req).unwrap());
        check_answer(status, &json);
        // A body that parsed must not be answered as a parse error, and vice versa.
        let parsed = request::parse(&serde_json::to_vec(&req).unwrap(), &request::Limits { max_key_bytes: 64, max_value_bytes: 256 }).is_ok();
        prop_assert_eq!(parsed, status != 400, "parse {} but status {}: {}", parsed, status, json);
    }

    /// A body is exactly one JSON value: whatever follows a request that parses on its own (another request,
    /// any non-whitespace bytes) makes the whole body a 400, and trailing whitespace changes nothing.
    #[test]
    fn a_body_is_exactly_one_json_value(
        req in prop_oneof![
            json_request(),
            // Requests that parse on their own, so that the tail is what decides.
            "[a-z:0-9]{1,12}".prop_map(|k| serde_json::json!({"op": "get", "key": k})),
            ("[a-z]{1,8}", "\\PC{0,8}").prop_map(|(k, v)| serde_json::json!({"op": "set", "key": k, "value": v})),
            prop::collection::vec("[a-z]{1,8}", 1..4).prop_map(|keys| serde_json::json!({"op": "del", "keys": keys})),
            Just(serde_json::json!({"op": "ping"})),
        ],
        tail in prop::collection::vec(any::<u8>(), 1..32),
        ws in "[ \t\r\n]{0,4}",
    ) {
        let limits = request::Limits { max_key_bytes: 64, max_value_bytes: 256 };
        let mut body = serde_json::to_vec(&req).unwrap();
        let alone = request::parse(&body, &limits).is_ok();
        body.extend_from_slice(ws.as_bytes());
        prop_assert_eq!(request::parse(&body, &limits).is_ok(), alone, "trailing whitespace changed the verdict");
        if tail.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        body.extend_from_slice(&tail);
        prop_assert!(request::parse(&body, &limits).is_err(), "accepted with a tail: {:?}", String::from_utf8_lossy(&body));
        let (status, json) = dispatch(body);
        prop_assert_eq!(status, 400, "{}", json);
    }
}
