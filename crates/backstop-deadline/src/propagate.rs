//! Deadlines on the wire: writing the time left into outgoing requests ([`Propagation`]) and
//! reading it from incoming ones ([`parse_grpc_timeout`], [`parse_timeout_ms`]).
//!
//! The time left travels as a **relative duration**, never as an absolute time, so the two ends
//! need not agree on the clock. Two encodings:
//!
//! - `grpc-timeout` for gRPC requests (`content-type: application/grpc…`): at most 8 ASCII digits
//!   then a unit, `H` hours, `M` minutes, `S` seconds, `m` millis, `u` micros, `n` nanos.
//! - [`DEFAULT_TIMEOUT_HEADER`], `request-timeout-ms`, for every other request: the time left in
//!   whole milliseconds, ASCII digits only, e.g. `request-timeout-ms: 1490`. The name carries its
//!   unit so nobody reads it as seconds, has no `x-` prefix (RFC 6648), and says what it is: the
//!   sender gives up on this request after that many milliseconds. Any name can be configured,
//!   e.g. Envoy's `x-envoy-expected-rq-timeout-ms`, which has the same encoding.
//!
//! Incoming values are untrusted: parsing never panics, never allocates, and tells malformed
//! values (ignored) apart from zero or negative ones (the caller has already given up).

use std::time::Duration;

use backstop_classify::{Error, Failure, Kind, Phase, Timer};
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Request};
use tokio::time::Instant;

/// The default header for the time left on non-gRPC requests: `request-timeout-ms`, whole
/// milliseconds as ASCII digits.
pub const DEFAULT_TIMEOUT_HEADER: HeaderName = HeaderName::from_static("request-timeout-ms");

/// gRPC's deadline header.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The default safety margin subtracted from the time left before it is sent: the time the
/// request spends on the wire and the response needs to come back.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

/// The smallest budget worth sending: with less than this left after the margin, the call fails
/// locally instead of asking the callee to start work it cannot finish.
pub const MIN_PROPAGATED: Duration = Duration::from_millis(1);

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

/// How the time left is written into outgoing requests.
///
/// By default: `grpc-timeout` on gRPC requests, [`DEFAULT_TIMEOUT_HEADER`] on all others, each
/// carrying the time left minus [`DEFAULT_MARGIN`]. A value already on the request that is
/// shorter is kept: propagation never extends a budget.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::propagate::Propagation;
/// use http::HeaderName;
///
/// let envoy = Propagation::new()
///     .header(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"))
///     .margin(Duration::from_millis(5));
/// assert_eq!(envoy.margin_value(), Duration::from_millis(5));
/// assert!(!Propagation::disabled().is_enabled());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation {
    header: Option<HeaderName>,
    grpc: bool,
    margin: Duration,
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation::new()
    }
}

impl Propagation {
    /// The default: `grpc-timeout` for gRPC, `request-timeout-ms` otherwise, 10 ms margin.
    pub fn new() -> Propagation {
        Propagation {
            header: Some(DEFAULT_TIMEOUT_HEADER),
            grpc: true,
            margin: DEFAULT_MARGIN,
        }
    }

    /// Writes nothing.
    pub fn disabled() -> Propagation {
        Propagation {
            header: None,
            grpc: false,
            margin: Duration::ZERO,
        }
    }

    /// The milliseconds header for non-gRPC requests (and for gRPC ones when
    /// [`grpc`](Propagation::grpc) is off).
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Propagation {
        self.header = Some(name);
        self
    }

    /// Writes no milliseconds header.
    #[must_use]
    pub fn no_header(mut self) -> Propagation {
        self.header = None;
        self
    }

    /// Whether gRPC requests get `grpc-timeout` (default `true`).
    #[must_use]
    pub fn grpc(mut self, enabled: bool) -> Propagation {
        self.grpc = enabled;
        self
    }

    /// The safety margin subtracted from the time left (default 10 ms).
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Propagation {
        self.margin = margin;
        self
    }

    /// The configured margin.
    pub fn margin_value(&self) -> Duration {
        self.margin
    }

    /// Whether anything is written at all.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.header.is_some() || self.grpc
    }

    /// Rejects a margin that leaves no budget under `timeout`.
    pub(crate) fn validate_against(
        &self,
        timeout: Duration,
        rule: &'static str,
    ) -> Result<(), crate::ConfigError> {
        if self.is_enabled() && self.margin.saturating_add(MIN_PROPAGATED) > timeout {
            return Err(crate::ConfigError::new("propagation.margin", rule));
        }
        Ok(())
    }

    /// Writes `time_left` minus the margin into `req`.
    ///
    /// Fails with timed out (deadline) in phase [`Local`](Phase::Local) when less than
    /// [`MIN_PROPAGATED`] would be left: the callee could not finish in time, so the request is
    /// not sent.
    pub fn apply<B>(&self, req: &mut Request<B>, time_left: Duration) -> Result<(), Error> {
        let now = Instant::now();
        self.write(req, now + time_left, now)
            .map_err(Error::from_failure)
    }

    /// [`apply`](Self::apply) for the layers, which already read the clock; the subtraction is
    /// skipped when nothing is written.
    #[inline]
    pub(crate) fn write<B>(
        &self,
        req: &mut Request<B>,
        until: Instant,
        now: Instant,
    ) -> Result<(), Failure> {
        if self.is_enabled() {
            self.write_enabled(req, until, now)
        } else {
            Ok(())
        }
    }

    fn write_enabled<B>(
        &self,
        req: &mut Request<B>,
        until: Instant,
        now: Instant,
    ) -> Result<(), Failure> {
        let budget = until
            .saturating_duration_since(now)
            .saturating_sub(self.margin);
        if budget < MIN_PROPAGATED {
            return Err(Failure::new(Kind::TimedOut(Timer::Deadline), Phase::Local));
        }
        if self.grpc && is_grpc(req) {
            write_if_shorter(req, GRPC_TIMEOUT, budget, parse_grpc_timeout, || {
                format_grpc_timeout(budget)
            });
        } else if let Some(name) = &self.header {
            write_if_shorter(req, name.clone(), budget, parse_timeout_ms, || {
                format_timeout_ms(budget)
            });
        }
        Ok(())
    }

    /// The header values for a whole `timeout` left, formatted once when a layer is built (`None`
    /// when nothing is written). A deadline that has not started yet has all of its timeout left,
    /// so its headers are always these: writing them clones a shared value instead of formatting
    /// and allocating a new one per call.
    pub(crate) fn prepare(&self, timeout: Duration) -> Option<Prepared> {
        if !self.is_enabled() {
            return None;
        }
        // The builders reject a margin leaving less than `MIN_PROPAGATED` under the timeout.
        let budget = timeout.saturating_sub(self.margin).max(MIN_PROPAGATED);
        let ms = self.header.as_ref().map(|name| {
            let mut value = format_timeout_ms(budget);
            shareable(&mut value);
            (name.clone(), value)
        });
        let grpc = self.grpc.then(|| {
            let mut value = format_grpc_timeout(budget);
            shareable(&mut value);
            value
        });
        Some(Prepared { budget, ms, grpc })
    }

    /// Writes the prepared values (the whole timeout left) into `req`.
    #[inline]
    pub(crate) fn write_prepared<B>(&self, req: &mut Request<B>, prepared: &Prepared) {
        if let Some(grpc) = &prepared.grpc
            && is_grpc(req)
        {
            write_if_shorter(
                req,
                GRPC_TIMEOUT,
                prepared.budget,
                parse_grpc_timeout,
                || grpc.clone(),
            );
        } else if let Some((name, value)) = &prepared.ms {
            write_if_shorter(req, name.clone(), prepared.budget, parse_timeout_ms, || {
                value.clone()
            });
        }
    }
}

/// Header values formatted once for a fixed budget; see [`Propagation::prepare`].
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    budget: Duration,
    ms: Option<(HeaderName, HeaderValue)>,
    grpc: Option<HeaderValue>,
}

/// Makes later clones of `value` share its bytes (a reference count) instead of copying them:
/// `Bytes` built from a `Vec` switches to shared storage on its first clone, so that clone is done
/// here, once, rather than on the first call.
fn shareable(value: &mut HeaderValue) {
    let shared = value.clone();
    *value = shared;
}

fn write_if_shorter<B>(
    req: &mut Request<B>,
    name: HeaderName,
    budget: Duration,
    parse: fn(&HeaderValue) -> Incoming,
    value: impl FnOnce() -> HeaderValue,
) {
    // One lookup for both the check and the write.
    match req.headers_mut().entry(name) {
        http::header::Entry::Occupied(mut entry) => {
            if let Incoming::Timeout(already) = parse(entry.get())
                && already <= budget
            {
                return;
            }
            entry.insert(value());
        }
        http::header::Entry::Vacant(entry) => {
            entry.insert(value());
        }
    }
}

fn judge(negative: bool, duration: Duration) -> Incoming {
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
