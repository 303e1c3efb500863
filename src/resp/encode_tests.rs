use redis::Value;
use redis_protocol::resp2::decode::decode as decode2;
use redis_protocol::resp2::types::OwnedFrame as F2;
use redis_protocol::resp3::decode::complete::decode as decode3;
use redis_protocol::resp3::types::OwnedFrame as F3;

use super::*;

/// What a decoder this project did not write reads from `out`: exactly one frame, taking every byte.
fn read2(out: &Out) -> F2 {
    let (frame, used) = decode2(&out.buf).unwrap().unwrap();
    assert_eq!(used, out.buf.len(), "one frame, nothing after it");
    frame
}

fn read3(out: &Out) -> F3 {
    let (frame, used) = decode3(&out.buf).unwrap().unwrap();
    assert_eq!(used, out.buf.len(), "one frame, nothing after it");
    frame
}

fn written(proto: Proto, v: &Value) -> Out {
    let mut out = Out::new();
    out.proto = proto;
    out.value(v);
    out
}

fn sample() -> Value {
    Value::Array(vec![
        Value::Int(-7),
        Value::BulkString(vec![0, b'\r', b'\n', 255]),
        Value::Nil,
        Value::Okay,
        Value::SimpleString("PONG".into()),
        Value::Map(vec![(Value::BulkString(b"f".to_vec()), Value::Double(1.5))]),
        Value::Set(vec![Value::Boolean(true)]),
    ])
}

#[test]
fn resp2_gives_resp3_types_their_resp2_form() {
    let b = |s: &[u8]| F2::BulkString(s.to_vec());
    assert_eq!(
        read2(&written(Proto::Resp2, &sample())),
        F2::Array(vec![
            F2::Integer(-7),
            b(&[0, b'\r', b'\n', 255]),
            F2::Null,
            F2::SimpleString(b"OK".to_vec()),
            F2::SimpleString(b"PONG".to_vec()),
            F2::Array(vec![b(b"f"), b(b"1.5")]),
            F2::Array(vec![F2::Integer(1)]),
        ])
    );
}

#[test]
fn resp3_keeps_maps_sets_doubles_booleans_and_nulls() {
    let F3::Array { data, .. } = read3(&written(Proto::Resp3, &sample())) else {
        panic!("an array")
    };
    assert!(matches!(data[2], F3::Null));
    assert!(matches!(&data[5], F3::Map { data, .. } if data.len() == 1
        && data.values().next().is_some_and(|v| matches!(v, F3::Double { data, .. } if *data == 1.5))));
    assert!(
        matches!(&data[6], F3::Set { data, .. } if data.iter().all(|v| matches!(v, F3::Boolean { data: true, .. })))
    );
}

#[test]
fn errors_keep_their_code_and_stay_on_one_line() {
    let mut out = Out::new();
    out.error("CIRCUITOPEN", "redguard: circuit open\r\nretry after 2s");
    assert_eq!(
        read2(&out),
        F2::Error("CIRCUITOPEN redguard: circuit open  retry after 2s".into())
    );
    let mut out = Out::new();
    out.redis_error("WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(
        out.buf,
        b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    );
}

#[test]
fn doubles_are_written_as_redis_writes_them() {
    for (d, text) in [
        (3.0, "3"),
        (-0.25, "-0.25"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        assert_eq!(
            written(Proto::Resp2, &Value::Double(d)).buf,
            format!("${}\r\n{text}\r\n", text.len()).as_bytes()
        );
        assert_eq!(
            written(Proto::Resp3, &Value::Double(d)).buf,
            format!(",{text}\r\n").as_bytes()
        );
    }
}

#[test]
fn a_map_header_counts_pairs_in_resp3_and_elements_in_resp2() {
    let mut out = Out::new();
    out.map(3);
    assert_eq!(out.buf, b"*6\r\n");
    let mut out = Out::new();
    out.proto = Proto::Resp3;
    out.map(3);
    out.nil();
    assert_eq!(out.buf, b"%3\r\n_\r\n");
}

#[test]
fn a_written_buffer_keeps_little_memory_after_a_large_reply() {
    let mut out = Out::new();
    out.bulk(&vec![b'x'; 1 << 20]);
    out.written();
    assert!(out.buf.is_empty());
    assert!(out.buf.capacity() <= KEPT_BYTES, "{}", out.buf.capacity());
    // A small reply's buffer is reused as it is.
    out.ok();
    let cap = out.buf.capacity();
    out.written();
    assert_eq!(out.buf.capacity(), cap);
}

#[test]
fn a_big_number_keeps_its_digits() {
    let big = Value::BigNumber(b"3492890328409238509324850943850943825024385".to_vec());
    assert_eq!(
        written(Proto::Resp2, &big).buf,
        b"$43\r\n3492890328409238509324850943850943825024385\r\n"
    );
    assert_eq!(
        written(Proto::Resp3, &big).buf,
        b"(3492890328409238509324850943850943825024385\r\n"
    );
}
