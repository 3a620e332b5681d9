//! The deadline headers on the wire: `grpc-timeout` and the milliseconds header, parsed from
//! untrusted input without panics or allocations, and formatted rounding down.

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Request};

/// The header for the time left on non-gRPC requests unless another is configured:
/// `request-timeout-ms`, whole milliseconds as ASCII digits. Written only where propagation to
/// plain HTTP is turned on ([`Propagation::header`](super::Propagation::header),
/// [`Propagation::only_to`](super::Propagation::only_to),
/// [`PropagateDeadline::Always`](super::PropagateDeadline::Always)); the server layer reads it by
/// default.
pub const DEFAULT_TIMEOUT_HEADER: HeaderName = HeaderName::from_static("request-timeout-ms");

/// gRPC's deadline header.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// What one incoming timeout header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// The caller waits at most this long (not yet clamped to any maximum).
    Timeout(Duration),
    /// Zero or negative: the caller has already given up.
    Expired,
    /// Not a valid value: to be ignored.
    Malformed,
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits then one of `H M S m u n`, surrounding
/// spaces and tabs tolerated. `0` is [`Incoming::Expired`], and so is a value that would be valid
/// but for a leading `-`.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use backstop_deadline::propagate::{Incoming, parse_grpc_timeout};
///
/// let parse = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
/// assert_eq!(parse("250m"), Incoming::Timeout(Duration::from_millis(250)));
/// assert_eq!(parse("0S"), Incoming::Expired);
/// assert_eq!(parse("123456789S"), Incoming::Malformed); // more than 8 digits
/// assert_eq!(parse("1.5S"), Incoming::Malformed);
/// ```
pub fn parse_grpc_timeout(value: &HeaderValue) -> Incoming {
    let (negative, body) = split_sign(trim(value.as_bytes()));
    let Some((&unit, digits)) = body.split_last() else {
        return Incoming::Malformed;
    };
    if digits.is_empty() || digits.len() > 8 {
        return Incoming::Malformed;
    }
    let Some(n) = parse_digits(digits) else {
        return Incoming::Malformed;
    };
    // n < 10^8, so none of these multiplications can overflow.
    let duration = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Incoming::Malformed,
    };
    judge(negative, duration)
}

/// Parses a milliseconds header such as [`DEFAULT_TIMEOUT_HEADER`]: ASCII digits, surrounding
/// spaces and tabs tolerated. `0` or a leading `-` is [`Incoming::Expired`]; a number too large
/// for `u64` saturates (the server clamps it to its maximum anyway).
///
/// ```
/// use std::time::Duration;
/// use http::HeaderValue;
/// use backstop_deadline::propagate::{Incoming, parse_timeout_ms};
///
/// let parse = |s: &'static str| parse_timeout_ms(&HeaderValue::from_static(s));
/// assert_eq!(parse(" 1500 "), Incoming::Timeout(Duration::from_millis(1500)));
/// assert_eq!(parse("-20"), Incoming::Expired);
/// assert_eq!(parse("1e3"), Incoming::Malformed);
/// ```
pub fn parse_timeout_ms(value: &HeaderValue) -> Incoming {
    let (negative, digits) = split_sign(trim(value.as_bytes()));
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Incoming::Malformed;
    }
    let millis = parse_digits(digits).unwrap_or(u64::MAX);
    judge(negative, Duration::from_millis(millis))
}

/// Formats `timeout` as a `grpc-timeout` value in the finest unit that fits in 8 digits, rounding
/// down so the callee never gets more time than we have.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::propagate::format_grpc_timeout;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(1990)), "1990000u");
/// assert_eq!(format_grpc_timeout(Duration::from_millis(50)), "50000000n");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365)), "31536000S");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365 * 4)), "2102400M");
/// ```
pub fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    const LIMIT: u128 = 100_000_000;
    let nanos = timeout.as_nanos();
    let secs = u128::from(timeout.as_secs());
    let (value, unit) = if nanos < LIMIT {
        (nanos, b'n')
    } else if nanos / 1_000 < LIMIT {
        (nanos / 1_000, b'u')
    } else if nanos / 1_000_000 < LIMIT {
        (nanos / 1_000_000, b'm')
    } else if secs < LIMIT {
        (secs, b'S')
    } else if secs / 60 < LIMIT {
        (secs / 60, b'M')
    } else {
        ((secs / 3600).min(LIMIT - 1), b'H')
    };
    let mut buf = [0u8; 40];
    let len = write_digits(&mut buf, value);
    buf[len] = unit;
    header_value(&buf[..=len])
}

/// Formats `timeout` as whole milliseconds (rounded down) for a milliseconds header.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::propagate::format_timeout_ms;
///
/// assert_eq!(format_timeout_ms(Duration::from_micros(1_490_900)), "1490");
/// ```
pub fn format_timeout_ms(timeout: Duration) -> HeaderValue {
    let mut buf = [0u8; 40];
    let len = write_digits(&mut buf, timeout.as_millis());
    header_value(&buf[..len])
}

/// `true` when the request is gRPC (`content-type: application/grpc`, `application/grpc+proto`…).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

pub(super) fn judge(negative: bool, duration: Duration) -> Incoming {
    if negative || duration.is_zero() {
        Incoming::Expired
    } else {
        Incoming::Timeout(duration)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

fn split_sign(bytes: &[u8]) -> (bool, &[u8]) {
    match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    }
}

/// Decimal digits to a number, saturating; `None` if any byte is not a digit.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
    })
}

/// Writes `n` in decimal at the start of `buf` (40 bytes hold any `u128`); returns the length.
fn write_digits(buf: &mut [u8; 40], mut n: u128) -> usize {
    let mut tmp = [0u8; 40];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    // Digits and a unit letter are always a valid header value; the fallback is unreachable but
    // errs on the side of the shortest budget.
    HeaderValue::from_bytes(bytes).unwrap_or(HeaderValue::from_static("1n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_round_trips_through_every_unit() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(99),
            Duration::from_millis(100),
            Duration::from_secs(99),
            Duration::from_secs(100_000),
            Duration::from_secs(100_000_000),
            Duration::from_secs(u64::MAX),
        ] {
            let value = format_grpc_timeout(d);
            let Incoming::Timeout(back) = parse_grpc_timeout(&value) else {
                panic!("{value:?} did not parse");
            };
            assert!(back <= d, "{value:?} grew {d:?} to {back:?}");
            assert!(
                value.len() <= 9,
                "{value:?} is longer than 8 digits and a unit"
            );
        }
    }

    #[test]
    fn ms_parsing_edges() {
        let parse = |s: &'static str| parse_timeout_ms(&HeaderValue::from_static(s));
        assert_eq!(parse(""), Incoming::Malformed);
        assert_eq!(parse("-"), Incoming::Malformed);
        assert_eq!(parse("+5"), Incoming::Malformed);
        assert_eq!(parse("0"), Incoming::Expired);
        assert_eq!(parse("-0"), Incoming::Expired);
        assert_eq!(
            parse("99999999999999999999999999"),
            Incoming::Timeout(Duration::from_millis(u64::MAX))
        );
    }
}
