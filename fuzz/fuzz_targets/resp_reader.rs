//! Coverage-guided fuzzing of the RESP socket's request reader: any bytes, fed whole or in two pieces, are read
//! as requests, wait for more, or are refused with a protocol error; nothing panics, a request never claims
//! bytes past what arrived, and a request read in pieces equals the one read whole. `src/resp/parse_tests.rs`
//! checks the same properties (with proptest) on every CI run; this target is for longer runs:
//!
//! ```sh
//! cargo install cargo-fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run resp_reader -- -max_total_time=60
//! ```
#![no_main]

use libfuzzer_sys::fuzz_target;
use redguard::resp::parse::{Limits, Reader, Request};

const LIMITS: Limits = Limits {
    max_arg_bytes: 512,
    max_request_bytes: 4096,
};

/// Every request in `data`, read from one buffer, until it needs more or refuses.
fn read_all(data: &[u8]) -> Vec<Request> {
    let mut reader = Reader::new(LIMITS);
    let mut rest = data;
    let mut out = Vec::new();
    while let Ok(Some(req)) = reader.next(rest) {
        assert!(req.len > 0 && req.len <= rest.len(), "a request within what arrived");
        assert!(req.args.iter().all(|r| r.start <= r.end && r.end <= req.len));
        rest = &rest[req.len..];
        out.push(req);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = read_all(data);
    // The first request again, with its bytes arriving in two pieces: the reader resumes and agrees.
    if let (Some(first), Some(&cut)) = (whole.first(), data.first()) {
        let cut = usize::from(cut) % first.len;
        let mut reader = Reader::new(LIMITS);
        if let Ok(None) = reader.next(&data[..cut]) {
            assert_eq!(reader.next(data).ok().flatten().as_ref(), Some(first));
        }
    }
});
