//! `request-timeout-ms` from the network: any bytes, parsed and then served.
//!
//! Asserts: no panic; a timeout is whole milliseconds, at least one; `Expired` only for zero or
//! a leading `-`; a parsed timeout formats and parses back to itself exactly; and the server
//! layer gives the handler exactly the timeout clamped to its ceiling, refuses an expired one
//! with 504 without calling the handler, and ignores a malformed one.
#![no_main]

#[path = "common/deadline.rs"]
mod deadline;

use std::time::Duration;

use backstop_deadline::propagate::{Incoming, format_timeout_ms, parse_timeout_ms};
use deadline::{MAX, Served, serve};
use http::{HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let trimmed = value.as_bytes().trim_ascii();
    let parsed = parse_timeout_ms(&value);
    match parsed {
        Incoming::Timeout(t) => {
            assert!(t >= Duration::from_millis(1), "{value:?}: {t:?}");
            assert_eq!(t.subsec_nanos() % 1_000_000, 0, "{value:?}: not whole ms");
            assert!(
                trimmed.iter().all(u8::is_ascii_digit),
                "{value:?} is not digits"
            );
            let formatted = format_timeout_ms(t);
            assert_eq!(
                parse_timeout_ms(&formatted),
                parsed,
                "through {formatted:?}"
            );
        }
        Incoming::Expired => {
            let zero = trimmed.iter().all(|&b| b == b'0');
            assert!(trimmed.starts_with(b"-") || zero, "{value:?} expired");
        }
        Incoming::Malformed => {}
    }
    let served = serve("request-timeout-ms", value.clone());
    let expected = match parsed {
        Incoming::Timeout(t) => Served::Ran(Some(t.min(MAX))),
        Incoming::Expired => Served::Refused(StatusCode::GATEWAY_TIMEOUT),
        Incoming::Malformed => Served::Ran(None),
    };
    assert_eq!(served, expected, "{value:?}");
});
