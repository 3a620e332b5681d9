//! Property tests of the "come back later" parsers beyond "no panic, never above the cap"
//! (`untrusted_headers.rs`): the value they return is the one the header means. The same
//! properties are fuzzed by `fuzz/fuzz_targets/{retry_after,grpc_pushback}.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use backstop_classify::{Pushback, parse_grpc_pushback, parse_retry_after};
use http::HeaderValue;
use proptest::prelude::*;

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap()
}

fn cap() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..10_000_000).prop_map(Duration::from_millis),
        Just(Duration::MAX),
    ]
}

/// Spaces and tabs around a value, which both parsers tolerate.
fn padding() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Delay-seconds: any number of digits is exactly that many seconds, or the cap.
    #[test]
    fn delay_seconds_are_exact_up_to_the_cap(
        secs in any::<u64>(),
        zeros in 0usize..3,
        (left, right) in (padding(), padding()),
        cap in cap(),
        now_secs in 0u64..4_000_000_000,
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        let text = format!("{left}{}{secs}{right}", "0".repeat(zeros));
        let expected = Duration::from_secs(secs).min(cap);
        prop_assert_eq!(parse_retry_after(&value(&text), now, cap), Some(expected));
        // One digit more than a u64 holds is still just "longer than the cap".
        let huge = format!("{secs}{}", "9".repeat(20));
        prop_assert_eq!(parse_retry_after(&value(&huge), now, cap), Some(cap));
    }

    /// An HTTP-date (in any of its three formats) is the time from now until then, zero once
    /// past, clamped to the cap; and it shrinks as the clock moves on.
    #[test]
    fn http_dates_count_down_from_now(
        now_secs in 0u64..4_000_000_000,
        offset in -100_000i64..10_000_000,
        elapsed in 0u64..200_000,
        format in 0usize..3,
        cap in cap(),
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
        let at = if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now.checked_sub(Duration::from_secs(offset.unsigned_abs())).unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let imf = httpdate::fmt_http_date(at);
        let text = match format {
            0 => imf,
            // RFC 850 and asctime, which a recipient must accept too (RFC 9110 §5.6.7); RFC
            // 850's two-digit year names 1970..=2069 only.
            1 if at < SystemTime::UNIX_EPOCH + Duration::from_secs(3_155_760_000) => rfc850(at),
            1 => imf,
            _ => asctime(at),
        };
        let wait = parse_retry_after(&value(&text), now, cap);
        let expected = at.duration_since(now).unwrap_or(Duration::ZERO).min(cap);
        prop_assert_eq!(wait, Some(expected), "{}", text);
        let later = parse_retry_after(&value(&text), now + Duration::from_secs(elapsed), cap);
        prop_assert!(later <= wait, "{} grew from {:?} to {:?}", text, wait, later);
    }

    /// Anything signed, fractional or worded is no `Retry-After` at all.
    #[test]
    fn signed_or_fractional_delays_are_ignored(n in 0u64..1_000_000, form in 0usize..4) {
        let text = match form {
            0 => format!("-{n}"),
            1 => format!("+{n}"),
            2 => format!("{n}.5"),
            _ => format!("{n} seconds"),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        prop_assert_eq!(parse_retry_after(&value(&text), now, Duration::MAX), None, "{}", text);
    }

    /// grpc-retry-pushback-ms: digits are exactly that many milliseconds (or the cap); a
    /// negative, signed or fractional value is "do not retry", as gRPC specifies.
    #[test]
    fn pushback_is_exact_or_do_not_retry(
        ms in any::<u64>(),
        (left, right) in (padding(), padding()),
        cap in (0u64..100_000_000).prop_map(Duration::from_millis),
        form in 0usize..4,
    ) {
        let expected = Pushback::After(Duration::from_millis(ms).min(cap));
        prop_assert_eq!(parse_grpc_pushback(&value(&format!("{left}{ms}{right}")), cap), expected);
        let refused = match form {
            0 => format!("-{ms}"),
            1 => format!("+{ms}"),
            2 => format!("{ms}.0"),
            _ => format!("{ms}ms"),
        };
        prop_assert_eq!(parse_grpc_pushback(&value(&refused), cap), Pushback::DoNotRetry, "{}", refused);
    }
}

const DAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Civil date of a Unix time (Howard Hinnant's algorithm), for the two obsolete formats that
/// httpdate parses but does not write.
fn civil(at: SystemTime) -> (i64, usize, i64, u64, &'static str) {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86_400) as i64;
    let weekday = DAYS[(days % 7) as usize];
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as usize - 1, day, secs % 86_400, weekday)
}

fn rfc850(at: SystemTime) -> String {
    let (year, month, day, tod, weekday) = civil(at);
    format!(
        "{weekday}, {day:02}-{}-{:02} {:02}:{:02}:{:02} GMT",
        MONTHS[month],
        year % 100,
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

fn asctime(at: SystemTime) -> String {
    let (year, month, day, tod, weekday) = civil(at);
    format!(
        "{} {} {day:>2} {:02}:{:02}:{:02} {year}",
        &weekday[..3],
        MONTHS[month],
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}
