//! Parsing the server's "come back later" headers: `Retry-After` and `grpc-retry-pushback-ms`.
//!
//! Both arrive from the network and are untrusted: a malformed value is ignored, an absurd one is
//! clamped, and nothing here can panic or overflow.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

/// The longest wait any parsed `Retry-After` yields unless a policy says otherwise: one hour.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(60 * 60);

/// Parses a `Retry-After` value: delay-seconds (`120`) or an HTTP-date
/// (`Fri, 31 Dec 1999 23:59:59 GMT`), relative to `now`.
///
/// Returns `None` for anything else (garbage, negative numbers, fractions, non-ASCII). A delay
/// longer than `cap`, however many digits it has, is clamped to `cap`; a date in the past means
/// "now" (zero).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use backstop_classify::parse_retry_after;
///
/// let cap = Duration::from_secs(300);
/// let now = SystemTime::now();
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("2"), now, cap), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("99999"), now, cap), Some(cap));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now, cap), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime, cap: Duration) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(seconds_clamped(text, cap));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    let wait = date.duration_since(now).unwrap_or(Duration::ZERO);
    Some(wait.min(cap))
}

/// Parses `grpc-retry-pushback-ms`.
///
/// gRPC defines a non-negative integer as "retry after exactly that many milliseconds" and a
/// negative or unparsable value as "do not retry": that is [`Pushback::DoNotRetry`].
pub fn parse_grpc_pushback(value: &HeaderValue, cap: Duration) -> Pushback {
    let Ok(text) = value.to_str() else {
        return Pushback::DoNotRetry;
    };
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        let millis = text
            .parse::<u64>()
            .map_or(cap_ms, |millis| millis.min(cap_ms));
        Pushback::After(Duration::from_millis(millis))
    } else {
        Pushback::DoNotRetry
    }
}

/// What a `grpc-retry-pushback-ms` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry after this long (already clamped to the cap).
    After(Duration),
    /// Do not retry this call.
    DoNotRetry,
}

/// Whole seconds from ASCII digits, clamped to `cap` without ever overflowing: a value with more
/// digits than a `u64` holds is simply "more than the cap".
fn seconds_clamped(digits: &str, cap: Duration) -> Duration {
    match digits.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs).min(cap),
        Err(_) => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(600);

    fn parse(text: &'static str) -> Option<Duration> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        parse_retry_after(&HeaderValue::from_static(text), now, CAP)
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
    }

    #[test]
    fn absurd_values_are_clamped() {
        assert_eq!(parse("99999"), Some(CAP));
        assert_eq!(parse("99999999999999999999999999999999"), Some(CAP));
    }

    #[test]
    fn garbage_is_ignored() {
        for text in ["", "-1", "1.5", "soon", "0x10", "2 seconds", "+3"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn http_dates_are_relative_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ahead = httpdate::fmt_http_date(now + Duration::from_secs(2));
        let value = HeaderValue::from_str(&ahead).unwrap_or(HeaderValue::from_static(""));
        assert_eq!(
            parse_retry_after(&value, now, CAP),
            Some(Duration::from_secs(2))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        let value = HeaderValue::from_str(&past).unwrap_or(HeaderValue::from_static(""));
        assert_eq!(parse_retry_after(&value, now, CAP), Some(Duration::ZERO));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        let value = HeaderValue::from_str(&far).unwrap_or(HeaderValue::from_static(""));
        assert_eq!(parse_retry_after(&value, now, CAP), Some(CAP));
    }

    #[test]
    fn grpc_pushback() {
        let cap = Duration::from_secs(10);
        let parse = |text: &'static str| parse_grpc_pushback(&HeaderValue::from_static(text), cap);
        assert_eq!(parse("250"), Pushback::After(Duration::from_millis(250)));
        assert_eq!(parse("99999999"), Pushback::After(cap));
        assert_eq!(parse("-1"), Pushback::DoNotRetry);
        assert_eq!(parse("later"), Pushback::DoNotRetry);
        assert_eq!(parse(""), Pushback::DoNotRetry);
    }
}
