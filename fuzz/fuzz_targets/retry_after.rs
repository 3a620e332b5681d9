//! `Retry-After` from the network: any bytes.
//!
//! Asserts, for several clocks and caps: no panic; a wait never exceeds the cap; delay-seconds
//! (ASCII digits, spaces around them) always parse, to exactly the number of seconds or the cap;
//! anything else parses only as an HTTP-date, and then the wait shrinks (never grows) as the
//! clock moves forward.
#![no_main]

use std::time::{Duration, SystemTime};

use backstop_classify::parse_retry_after;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

const CAPS: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(3600),
    Duration::MAX,
];

fn nows() -> [SystemTime; 4] {
    let epoch = SystemTime::UNIX_EPOCH;
    [
        epoch,
        epoch + Duration::from_secs(1_700_000_000),
        epoch + Duration::from_secs(1_700_000_001),
        // The last second an HTTP-date can name (year 9999).
        epoch + Duration::from_secs(253_402_300_799),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let text = value.to_str().ok().map(str::trim);
    let digits = text.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    for cap in CAPS {
        let mut previous: Option<Duration> = None;
        for now in nows() {
            let wait = parse_retry_after(&value, now, cap);
            if let Some(wait) = wait {
                assert!(wait <= cap, "{value:?}: {wait:?} above the cap {cap:?}");
            }
            match digits {
                Some(digits) => {
                    let expected = match digits.parse::<u64>() {
                        Ok(secs) => Duration::from_secs(secs).min(cap),
                        Err(_) => cap,
                    };
                    assert_eq!(wait, Some(expected), "{value:?} with cap {cap:?}");
                }
                None => {
                    let is_date = text.is_some_and(|t| httpdate::parse_http_date(t).is_ok());
                    assert_eq!(wait.is_some(), is_date, "{value:?}: a wait without a date");
                    if let (Some(before), Some(after)) = (previous, wait) {
                        assert!(after <= before, "{value:?}: the wait grew as time passed");
                    }
                }
            }
            previous = wait;
        }
    }
});
