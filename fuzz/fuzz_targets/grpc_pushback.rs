//! `grpc-retry-pushback-ms` from the network: any bytes.
//!
//! Asserts, for several caps: no panic; a pushback never exceeds the cap; ASCII digits (spaces
//! around them tolerated) are "retry after exactly that many milliseconds, or the cap", and
//! everything else (negative, signed, fractional, empty, non-ASCII) is "do not retry", as gRPC
//! specifies.
#![no_main]

use std::time::Duration;

use backstop_classify::{Pushback, parse_grpc_pushback};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

const CAPS: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(1500),
    Duration::from_secs(3600),
    Duration::MAX,
];

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let digits = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    for cap in CAPS {
        let pushback = parse_grpc_pushback(&value, cap);
        match (digits, pushback) {
            (Some(digits), Pushback::After(wait)) => {
                assert!(wait <= cap, "{value:?}: {wait:?} above the cap {cap:?}");
                let expected = match digits.parse::<u64>() {
                    Ok(ms) => Duration::from_millis(ms).min(cap),
                    // More digits than a u64 holds: more than any cap in milliseconds.
                    Err(_) => cap.min(Duration::from_millis(u64::MAX)),
                };
                assert_eq!(wait, expected, "{value:?} with cap {cap:?}");
            }
            (None, Pushback::DoNotRetry) => {}
            (digits, pushback) => {
                panic!("{value:?} (digits: {digits:?}) gave {pushback:?}")
            }
        }
    }
});
