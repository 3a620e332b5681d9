//! `grpc-timeout` from the network: any bytes, parsed and then served.
//!
//! Asserts: no panic; a timeout is never zero and never beyond the grammar's largest
//! (99 999 999 hours); `Expired` only for zero or a leading `-`; a parsed timeout formats back
//! to a value that parses to at most it and loses less than a 100 000th of it; and the server
//! layer gives the handler exactly the timeout clamped to its ceiling (never more, never a
//! negative or zero budget), refuses an expired one with 504 without calling the handler, and
//! ignores a malformed one.
#![no_main]

#[path = "common/deadline.rs"]
mod deadline;

use std::time::Duration;

use backstop_deadline::propagate::{Incoming, format_grpc_timeout, parse_grpc_timeout};
use deadline::{MAX, Served, serve};
use http::{HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

const LARGEST: Duration = Duration::from_secs(99_999_999 * 3600);

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let trimmed = value.as_bytes().trim_ascii();
    let parsed = parse_grpc_timeout(&value);
    match parsed {
        Incoming::Timeout(t) => {
            assert!(!t.is_zero() && t <= LARGEST, "{value:?}: {t:?}");
            assert!(
                (2..=9).contains(&trimmed.len()),
                "{value:?} has the wrong length"
            );
            let formatted = format_grpc_timeout(t);
            let Incoming::Timeout(back) = parse_grpc_timeout(&formatted) else {
                panic!("{t:?} formatted as {formatted:?}, which does not parse");
            };
            assert!(back <= t, "{t:?} grew to {back:?} through {formatted:?}");
            let lost = (t - back).as_nanos();
            assert!(
                lost * 100_000 <= t.as_nanos(),
                "{t:?} lost {lost} ns through {formatted:?}"
            );
        }
        Incoming::Expired => {
            let digits = trimmed.strip_prefix(b"-").unwrap_or(trimmed);
            let zero = digits
                .iter()
                .take(digits.len().saturating_sub(1))
                .all(|&b| b == b'0');
            assert!(trimmed.starts_with(b"-") || zero, "{value:?} expired");
        }
        Incoming::Malformed => {}
    }
    let served = serve("grpc-timeout", value.clone());
    let expected = match parsed {
        Incoming::Timeout(t) => Served::Ran(Some(t.min(MAX))),
        Incoming::Expired => Served::Refused(StatusCode::GATEWAY_TIMEOUT),
        Incoming::Malformed => Served::Ran(None),
    };
    assert_eq!(served, expected, "{value:?}");
});
