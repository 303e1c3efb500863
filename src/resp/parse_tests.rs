use proptest::prelude::*;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

use super::*;

const LIMITS: Limits = Limits {
    max_arg_bytes: 1024,
    max_request_bytes: 16 * 1024,
};

/// Every request in `input`, as owned arguments, or the first error.
fn read_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
    let mut reader = Reader::new(LIMITS);
    let mut buf = input;
    let mut out = Vec::new();
    while let Some(req) = reader.next(buf)? {
        out.push(req.args.iter().map(|r| buf[r.clone()].to_vec()).collect());
        buf = &buf[req.len..];
    }
    Ok(out)
}

fn words(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// The request as a client library writes it, by an encoder this project did not write.
fn encoded(args: &[Vec<u8>]) -> Vec<u8> {
    let frame = OwnedFrame::Array(args.iter().cloned().map(OwnedFrame::BulkString).collect());
    let mut buf = vec![0; frame.encode_len(false)];
    let n = encode(&mut buf, &frame, false).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn arrays_of_bulk_strings_and_inline_lines_are_requests() {
    let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET a  b\r\nPING\n*0\r\n";
    assert_eq!(
        read_all(input).unwrap(),
        [
            words(&["GET", "k"]),
            words(&["SET", "a", "b"]),
            words(&["PING"]),
            vec![]
        ]
    );
    assert_eq!(
        read_all(b"SET k \"a b\" 'c'\r\n").unwrap(),
        [words(&["SET", "k", "a b", "c"])]
    );
    assert_eq!(read_all(b"\r\n").unwrap(), [Vec::<Vec<u8>>::new()]);
    assert_eq!(read_all(b"*1\r\n$0\r\n\r\n").unwrap(), [vec![Vec::<u8>::new()]]);
}

#[test]
fn binary_arguments_pass_byte_for_byte() {
    let value = vec![0u8, b'\r', b'\n', 255, b'*', b'$'];
    let input = encoded(&[b"SET".to_vec(), b"k".to_vec(), value.clone()]);
    assert_eq!(read_all(&input).unwrap(), [vec![b"SET".to_vec(), b"k".to_vec(), value]]);
}

#[test]
fn a_request_in_pieces_is_resumed_where_it_stopped() {
    let input = encoded(&words(&["MSET", "a", "1", "b", "22"]));
    let mut reader = Reader::new(LIMITS);
    for cut in 0..input.len() {
        assert_eq!(reader.next(&input[..cut]).unwrap(), None, "cut at {cut}");
        assert_eq!(reader.in_request(&input[..cut]), cut > 0);
    }
    let req = reader.next(&input).unwrap().unwrap();
    assert_eq!(req.len, input.len());
    assert_eq!(req.args.len(), 5);
    assert!(!reader.in_request(&[]), "the reader starts afresh after a request");
}

#[test]
fn malformed_requests_name_what_is_wrong() {
    let err = |input: &[u8]| read_all(input).unwrap_err();
    assert_eq!(err(b"*1\r\n$-5\r\n"), ProtocolError::BulkLength);
    assert_eq!(err(b"*1\r\n$-1\r\n"), ProtocolError::BulkLength);
    assert_eq!(err(b"*x\r\n"), ProtocolError::ArrayLength);
    assert_eq!(err(b"*-2\r\n"), ProtocolError::ArrayLength);
    assert_eq!(err(b"*1\r\n$9223372036854775808\r\n"), ProtocolError::BulkLength);
    // 2^64 + 1: a reader that let the number wrap would see a length of 1.
    assert_eq!(err(b"*1\r\n$18446744073709551617\r\nx\r\n"), ProtocolError::BulkLength);
    // As Redis reads them: no sign but `-`, no empty number, no spaces.
    assert_eq!(err(b"*1\r\n$+1\r\nx\r\n"), ProtocolError::BulkLength);
    assert_eq!(err(b"*+1\r\n$1\r\nx\r\n"), ProtocolError::ArrayLength);
    assert_eq!(err(b"*\r\n"), ProtocolError::ArrayLength);
    assert_eq!(err(b"*1\r\n$-\r\n"), ProtocolError::BulkLength);
    assert_eq!(err(b"*1\r\n$ 1\r\nx\r\n"), ProtocolError::BulkLength);
    // No leading zero, and no `-0`; a lone `0` is a number.
    assert_eq!(err(b"*1\r\n$01\r\nx\r\n"), ProtocolError::BulkLength);
    assert_eq!(err(b"*01\r\n$1\r\nx\r\n"), ProtocolError::ArrayLength);
    assert_eq!(err(b"*-0\r\n"), ProtocolError::ArrayLength);
    assert_eq!(read_all(b"*1\r\n$0\r\n\r\n").unwrap().len(), 1);
    assert_eq!(
        err(b"*1\r\n$9223372036854775807\r\n"),
        ProtocolError::ArgTooLong(i64::MAX as u64, 1024)
    );
    assert_eq!(err(b"*1\r\n:5\r\n"), ProtocolError::ExpectedBulk(b':'));
    assert_eq!(err(b"*1\r\n*1\r\n$1\r\na\r\n"), ProtocolError::ExpectedBulk(b'*'));
    assert_eq!(err(b"*1\r\n$1\r\nab\r\n"), ProtocolError::MissingCrlf);
    assert_eq!(err(b"*1\r\n$1\rx"), ProtocolError::BulkLength);
    assert_eq!(err(b"GET \"k\r\n"), ProtocolError::UnbalancedQuotes);
    assert_eq!(err(b"GET \"k\"x\r\n"), ProtocolError::UnbalancedQuotes);
    // Announced sizes are refused before their bytes are waited for.
    assert_eq!(err(b"*1000000000\r\n"), ProtocolError::RequestTooLong(16 * 1024));
    assert_eq!(err(b"*1\r\n$1025\r\n"), ProtocolError::ArgTooLong(1025, 1024));
    // A header without its line end, longer than any valid one.
    assert_eq!(
        err(&[b"*".as_slice(), &[b'1'; 40]].concat()),
        ProtocolError::ArrayLength
    );
    // An inline line without its end, past the limit.
    assert_eq!(err(&vec![b'a'; MAX_INLINE_BYTES + 1]), ProtocolError::InlineTooLong);
    assert_eq!(
        read_all(&vec![b'a'; MAX_INLINE_BYTES]).unwrap(),
        Vec::<Vec<Vec<u8>>>::new()
    );
}

#[test]
fn the_request_size_counts_what_the_remaining_arguments_must_take_at_least() {
    let limits = Limits {
        max_arg_bytes: 100,
        max_request_bytes: 40,
    };
    // 4 + 2*(4+2+2) = 20 bytes: fits.
    let ok = encoded(&words(&["ab", "cd"]));
    assert!(Reader::new(limits).next(&ok).unwrap().is_some());
    // `*7` needs at least 4 + 7*6 = 46 bytes.
    assert_eq!(
        Reader::new(limits).next(b"*7\r\n"),
        Err(ProtocolError::RequestTooLong(40))
    );
    // One 30-byte argument then one more: 4 + 5 + 30 + 2 + 6 = 47.
    assert_eq!(
        Reader::new(limits).next(b"*2\r\n$30\r\n"),
        Err(ProtocolError::RequestTooLong(40))
    );
}

proptest! {
    /// Whatever a client library encodes comes back argument for argument, in one piece or cut anywhere.
    #[test]
    fn what_an_encoder_writes_reads_back(
        args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let input = encoded(&args);
        prop_assert_eq!(read_all(&input).unwrap(), vec![args.clone()]);
        let cut = cut.index(input.len());
        let mut reader = Reader::new(LIMITS);
        prop_assert_eq!(reader.next(&input[..cut]).unwrap(), None);
        let req = reader.next(&input).unwrap().unwrap();
        let got: Vec<Vec<u8>> = req.args.iter().map(|r| input[r.clone()].to_vec()).collect();
        prop_assert_eq!(got, args);
    }

    /// Any bytes: requests, a wait for more, or an error; never a panic, and a request never claims bytes
    /// beyond the input.
    #[test]
    fn any_bytes_are_read_or_refused(input in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut reader = Reader::new(LIMITS);
        let mut buf = input.as_slice();
        for _ in 0..=input.len() {
            match reader.next(buf) {
                Ok(Some(req)) => {
                    prop_assert!(req.len > 0 && req.len <= buf.len());
                    prop_assert!(req.args.iter().all(|r| r.end <= req.len));
                    buf = &buf[req.len..];
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn an_inline_line_as_long_as_redis_takes_is_a_request() {
    // Redis reads inline lines of up to 64 KiB (PROTO_INLINE_MAX_SIZE), so must this reader.
    let limits = Limits {
        max_arg_bytes: 64 * 1024,
        max_request_bytes: 128 * 1024,
    };
    let value = "x".repeat(60_000);
    let line = format!("SET k {value}\r\n");
    let request = Reader::new(limits)
        .next(line.as_bytes())
        .unwrap()
        .expect("a whole request");
    assert_eq!(request.len, line.len());
    assert_eq!(request.args.len(), 3);
}

#[test]
fn new_limits_apply_to_the_next_request() {
    let mut reader = Reader::new(LIMITS);
    let long = encoded(&words(&["SET", "k", &"v".repeat(500)]));
    assert!(reader.next(&long).unwrap().is_some());
    reader.set_limits(Limits {
        max_arg_bytes: 100,
        max_request_bytes: 16 * 1024,
    });
    assert_eq!(reader.next(&long), Err(ProtocolError::ArgTooLong(500, 100)));
}

#[test]
fn a_finished_request_s_list_is_reused_unless_it_is_large_or_one_is_being_read() {
    let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let mut reader = Reader::new(LIMITS);
    // Capacities no request would grow to by itself, so that the list read back is surely the one given.
    reader.give_back(Vec::with_capacity(100));
    assert_eq!(
        reader.next(get).unwrap().unwrap().args.capacity(),
        100,
        "the list given back"
    );
    reader.give_back(Vec::with_capacity(KEPT_ARGS));
    assert_eq!(
        reader.next(get).unwrap().unwrap().args.capacity(),
        KEPT_ARGS,
        "at the bound"
    );
    reader.give_back(Vec::with_capacity(KEPT_ARGS + 1));
    assert!(
        reader.next(get).unwrap().unwrap().args.capacity() < 100,
        "too large to keep"
    );

    // Half a request read: what it has so far stays.
    assert_eq!(reader.next(&get[..13]).unwrap(), None);
    reader.give_back(Vec::with_capacity(100));
    let req = reader.next(get).unwrap().unwrap();
    assert_eq!(req.args, vec![8..11, 17..18]);
}
