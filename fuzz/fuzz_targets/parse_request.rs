//! Coverage-guided fuzzing of request parsing: any bytes either parse into an op or become an API error whose
//! response is a 4xx JSON body; nothing panics. `tests/properties.rs` checks the same property (through the
//! whole router) for a bounded number of cases on every CI run; this target is for longer runs:
//!
//! ```sh
//! cargo install cargo-fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run parse_request -- -max_total_time=60
//! ```
#![no_main]

use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use redguard::api::request::{parse, Limits};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse(data, &Limits::default()) {
        let status = e.into_response().status();
        assert!(status.is_client_error(), "parse errors are 4xx, got {status}");
    }
});
