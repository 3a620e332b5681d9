//! Deadlines on the wire: writing the time left into outgoing requests ([`Propagation`]) and
//! reading it from incoming ones ([`parse_grpc_timeout`], [`parse_timeout_ms`]).
//!
//! The time left travels as a **relative duration**, never as an absolute time, so the two ends
//! need not agree on the clock. Two encodings:
//!
//! - `grpc-timeout` for gRPC requests (`content-type: application/grpc…`): at most 8 ASCII digits
//!   then a unit, `H` hours, `M` minutes, `S` seconds, `m` millis, `u` micros, `n` nanos. gRPC
//!   servers expect it, so it is written by default.
//! - [`DEFAULT_TIMEOUT_HEADER`], `request-timeout-ms`, for every other request: the time left in
//!   whole milliseconds, ASCII digits only, e.g. `request-timeout-ms: 1490`. The name carries its
//!   unit so nobody reads it as seconds, has no `x-` prefix (RFC 6648), and says what it is: the
//!   sender gives up on this request after that many milliseconds. Any name can be configured,
//!   e.g. Envoy's `x-envoy-expected-rq-timeout-ms`, which has the same encoding.
//!
//! Plain HTTP requests carry nothing unless asked: the header tells whoever receives it how long
//! the caller waits, which is nobody's business outside the services that read it, and costs a
//! header on every call. Turn it on for every destination ([`Propagation::header`]), for some
//! ([`Propagation::only_to`]), or for one request ([`PropagateDeadline`]).
//!
//! Incoming values are untrusted: parsing never panics, never allocates, and tells malformed
//! values (ignored) apart from zero or negative ones (the caller has already given up).

use std::sync::Arc;
use std::time::Duration;

use backstop_classify::{Error, Failure, Kind, Phase, Timer};
use http::header::{CONTENT_TYPE, HOST};
use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Request};
use tokio::time::Instant;

use crate::ConfigError;

/// The header for the time left on non-gRPC requests unless another is configured:
/// `request-timeout-ms`, whole milliseconds as ASCII digits. Written only where propagation to
/// plain HTTP is turned on ([`Propagation::header`], [`Propagation::only_to`],
/// [`PropagateDeadline::Always`]); the server layer reads it by default.
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

/// Forces, for one request, whether the layers write its deadline into it, whatever the
/// [`Propagation`]'s destinations say: a caller, or a layer in front of the client (e.g. a
/// gateway route's), inserts it in the request extensions.
///
/// It decides only where a header would go; it adds no header a layer is not configured to
/// write at all ([`Propagation::disabled`], [`Propagation::no_header`]), and it removes nothing
/// already on the request.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::{AttemptTimeoutLayer, PropagateDeadline};
/// use http::{Request, Response};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Answers with the milliseconds header it was sent, if any.
/// let echo = service_fn(|req: Request<()>| async move {
///     let sent = req.headers().get("request-timeout-ms").cloned();
///     Ok::<_, std::convert::Infallible>(Response::new(sent))
/// });
/// // The default: no header on plain HTTP requests...
/// let svc = AttemptTimeoutLayer::new(Duration::from_millis(300))?.layer(echo);
/// assert_eq!(svc.clone().oneshot(Request::new(())).await?.into_body(), None);
/// // ...unless this request asks for it.
/// let mut req = Request::new(());
/// req.extensions_mut().insert(PropagateDeadline::Always);
/// assert_eq!(svc.oneshot(req).await?.into_body().unwrap(), "290");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropagateDeadline {
    /// Write the milliseconds header into this request (a gRPC one gets `grpc-timeout`, as
    /// always), even to a destination the propagation does not list.
    Always,
    /// Write no deadline header into this request, neither the milliseconds header nor
    /// `grpc-timeout`, even to a destination the propagation lists.
    Never,
}

/// How the time left is written into outgoing requests.
///
/// By default ([`Propagation::new`]): `grpc-timeout` on gRPC requests (`content-type:
/// application/grpc…`), whose servers expect it, and **nothing** on plain HTTP requests. The
/// milliseconds header ([`DEFAULT_TIMEOUT_HEADER`] unless renamed) is opt-in:
///
/// - for every destination: [`header`](Propagation::header), e.g.
///   `Propagation::new().header(DEFAULT_TIMEOUT_HEADER)`;
/// - for some destinations: [`only_to`](Propagation::only_to), matched against each request's
///   authority;
/// - for one request: [`PropagateDeadline`] in its extensions, which overrides both.
///
/// Each header carries the time left minus [`DEFAULT_MARGIN`]. A value already on the request
/// that is shorter is kept: propagation never extends a budget.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::propagate::{DEFAULT_TIMEOUT_HEADER, Propagation};
/// use http::HeaderName;
///
/// // Our own services only, under their usual names.
/// let internal = Propagation::new().only_to(["*.internal", "127.0.0.1:8080"])?;
/// # let _ = internal;
/// // Everywhere, under Envoy's name.
/// let envoy = Propagation::new()
///     .header(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"))
///     .margin(Duration::from_millis(5));
/// assert_eq!(envoy.margin_value(), Duration::from_millis(5));
/// assert_eq!(envoy.header_name(), Some(&HeaderName::from_static("x-envoy-expected-rq-timeout-ms")));
/// assert!(!Propagation::disabled().is_enabled());
/// # Ok::<(), backstop_deadline::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation {
    // The milliseconds header, `None` when it is never written. Behind a pointer: the layers
    // (which hold a `Propagation` and are cloned into every service) stay the same size however
    // many destinations are listed, and the default path never looks behind it.
    ms: Option<Arc<MsHeader>>,
    grpc: bool,
    margin: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MsHeader {
    name: HeaderName,
    to: Destinations,
}

/// Where the milliseconds header goes, short of a [`PropagateDeadline`] on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destinations {
    /// Nowhere: only requests marked [`PropagateDeadline::Always`] get it.
    Marked,
    Everywhere,
    /// Requests whose authority matches one of these.
    Only(Box<[HostPattern]>),
}

/// Which header one request gets.
enum Target<'a> {
    Grpc,
    Ms(&'a HeaderName),
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation::new()
    }
}

impl Propagation {
    /// The default: `grpc-timeout` on gRPC requests, nothing on plain HTTP ones unless they are
    /// marked [`PropagateDeadline::Always`] (then [`DEFAULT_TIMEOUT_HEADER`]), 10 ms margin.
    pub fn new() -> Propagation {
        Propagation {
            ms: Some(Arc::new(MsHeader {
                name: DEFAULT_TIMEOUT_HEADER,
                to: Destinations::Marked,
            })),
            grpc: true,
            margin: DEFAULT_MARGIN,
        }
    }

    /// Writes nothing, whatever the request says ([`PropagateDeadline`] included): for a layer
    /// that leaves propagation to another, e.g. a deadline layer with an attempt timeout inside.
    pub fn disabled() -> Propagation {
        Propagation {
            ms: None,
            grpc: false,
            margin: Duration::ZERO,
        }
    }

    /// Writes the milliseconds header `name` into plain HTTP requests (and gRPC ones when
    /// [`grpc`](Propagation::grpc) is off): to every destination, or to those of
    /// [`only_to`](Propagation::only_to) if it was called.
    ///
    /// `Propagation::new().header(DEFAULT_TIMEOUT_HEADER)` turns `request-timeout-ms` on for
    /// every request.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Propagation {
        let to = match self.ms.as_deref() {
            Some(MsHeader {
                to: to @ Destinations::Only(_),
                ..
            }) => to.clone(),
            _ => Destinations::Everywhere,
        };
        self.ms = Some(Arc::new(MsHeader { name, to }));
        self
    }

    /// Writes the milliseconds header ([`DEFAULT_TIMEOUT_HEADER`] unless
    /// [renamed](Propagation::header)) only into requests whose authority — the URI's, or the
    /// `Host` header's for a request without one — matches one of `hosts`:
    ///
    /// - `payments.internal`: that host, on any port;
    /// - `127.0.0.1:8080`, `payments.internal:443`: that host on that port (a URI without a port
    ///   has its scheme's: 80 for `http`, 443 for `https`);
    /// - `*.internal`: any host ending in `.internal` (not `internal` itself), optionally with a
    ///   port, `*.internal:8443`;
    /// - IPv6 addresses in brackets: `[::1]`, `[::1]:8080`.
    ///
    /// Host names match case-insensitively. gRPC requests are not filtered: they get
    /// `grpc-timeout` wherever they go, as gRPC servers expect (turn it off with
    /// [`grpc(false)`](Propagation::grpc)). A [`PropagateDeadline`] on a request overrides the
    /// list either way.
    ///
    /// An empty list, or a pattern that is none of the above, is rejected naming the field
    /// `propagation.only_to`.
    ///
    /// ```
    /// use backstop_deadline::propagate::Propagation;
    ///
    /// assert!(Propagation::new().only_to(["*.internal", "10.0.0.7:8080"]).is_ok());
    /// let err = Propagation::new().only_to(["https://payments.internal/"]).unwrap_err();
    /// assert_eq!(err.field(), "propagation.only_to");
    /// ```
    pub fn only_to<I>(mut self, hosts: I) -> Result<Propagation, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let patterns = hosts
            .into_iter()
            .map(|host| {
                let host = host.as_ref();
                HostPattern::parse(host).ok_or_else(|| {
                    ConfigError::new(
                        "propagation.only_to",
                        format!("`{host}` is not a host, host:port, *.suffix or [IPv6] pattern"),
                    )
                })
            })
            .collect::<Result<Box<[HostPattern]>, ConfigError>>()?;
        if patterns.is_empty() {
            return Err(ConfigError::new(
                "propagation.only_to",
                "must list at least one host (use `header` for every destination)",
            ));
        }
        let name = self
            .ms
            .as_ref()
            .map_or(DEFAULT_TIMEOUT_HEADER, |ms| ms.name.clone());
        self.ms = Some(Arc::new(MsHeader {
            name,
            to: Destinations::Only(patterns),
        }));
        Ok(self)
    }

    /// Never writes the milliseconds header, not even into a request marked
    /// [`PropagateDeadline::Always`].
    #[must_use]
    pub fn no_header(mut self) -> Propagation {
        self.ms = None;
        self
    }

    /// Whether gRPC requests get `grpc-timeout` (default `true`). When off, they are treated as
    /// plain HTTP requests, and no `content-type` is looked up.
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

    /// The milliseconds header's name, unless it is never written ([`no_header`](Self::no_header),
    /// [`disabled`](Self::disabled)). Whether a given request gets it depends on its destination
    /// and its [`PropagateDeadline`].
    pub fn header_name(&self) -> Option<&HeaderName> {
        self.ms.as_deref().map(|ms| &ms.name)
    }

    /// Whether anything may be written at all.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.ms.is_some() || self.grpc
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

    /// Writes `time_left` minus the margin into `req`, if this request is to get a header at all.
    ///
    /// Fails with timed out (deadline) in phase [`Local`](Phase::Local) when a header is to be
    /// written and less than [`MIN_PROPAGATED`] would be left: the callee could not finish in
    /// time, so the request is not sent.
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
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(target) = self.target(req) else {
            return Ok(());
        };
        let budget = until
            .saturating_duration_since(now)
            .saturating_sub(self.margin);
        if budget < MIN_PROPAGATED {
            return Err(Failure::new(Kind::TimedOut(Timer::Deadline), Phase::Local));
        }
        match target {
            Target::Grpc => write_if_shorter(req, GRPC_TIMEOUT, budget, parse_grpc_timeout, || {
                format_grpc_timeout(budget)
            }),
            Target::Ms(name) => {
                write_if_shorter(req, name.clone(), budget, parse_timeout_ms, || {
                    format_timeout_ms(budget)
                })
            }
        }
        Ok(())
    }

    /// Which header `req` gets, if any. At most one header lookup (`content-type`, and only with
    /// gRPC on) and one extension lookup (free when the request has no extensions); the
    /// destination is matched only when a list is configured.
    #[inline]
    fn target<B>(&self, req: &Request<B>) -> Option<Target<'_>> {
        let forced = || req.extensions().get::<PropagateDeadline>().copied();
        if self.grpc && is_grpc(req) {
            return (forced() != Some(PropagateDeadline::Never)).then_some(Target::Grpc);
        }
        let ms = self.ms.as_deref()?;
        let wanted = match forced() {
            Some(PropagateDeadline::Always) => true,
            Some(PropagateDeadline::Never) => false,
            None => match &ms.to {
                Destinations::Marked => false,
                Destinations::Everywhere => true,
                Destinations::Only(patterns) => matches_destination(patterns, req),
            },
        };
        wanted.then_some(Target::Ms(&ms.name))
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
        let ms = self.ms.is_some().then(|| {
            let mut value = format_timeout_ms(budget);
            shareable(&mut value);
            value
        });
        let grpc = self.grpc.then(|| {
            let mut value = format_grpc_timeout(budget);
            shareable(&mut value);
            value
        });
        Some(Prepared { budget, ms, grpc })
    }

    /// Writes the prepared values (the whole timeout left) into `req`, if it is to get a header.
    #[inline]
    pub(crate) fn write_prepared<B>(&self, req: &mut Request<B>, prepared: &Prepared) {
        match (self.target(req), &prepared.grpc, &prepared.ms) {
            (Some(Target::Grpc), Some(grpc), _) => write_if_shorter(
                req,
                GRPC_TIMEOUT,
                prepared.budget,
                parse_grpc_timeout,
                || grpc.clone(),
            ),
            (Some(Target::Ms(name)), _, Some(value)) => {
                write_if_shorter(req, name.clone(), prepared.budget, parse_timeout_ms, || {
                    value.clone()
                });
            }
            // Prepared from this same configuration: whatever the target, its value is there.
            _ => {}
        }
    }
}

/// One destination of [`Propagation::only_to`], lowercased when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(Box<str>),
    /// The suffix with its leading dot, `.internal` for `*.internal`.
    Suffix(Box<str>),
}

impl HostPattern {
    fn parse(pattern: &str) -> Option<HostPattern> {
        let (host, port) = split_port(pattern)?;
        let port = match port {
            None => None,
            Some(digits) => Some(parse_port(digits)?),
        };
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            valid_name(suffix).then(|| HostMatch::Suffix(format!(".{suffix}").into()))?
        } else if host.starts_with('[') {
            valid_ipv6(host).then(|| HostMatch::Exact(host.into()))?
        } else {
            // A fully qualified name's trailing dot names the same host.
            let host = host.strip_suffix('.').unwrap_or(host);
            valid_name(host).then(|| HostMatch::Exact(host.into()))?
        };
        let host = match host {
            HostMatch::Exact(h) => HostMatch::Exact(h.to_ascii_lowercase().into()),
            HostMatch::Suffix(s) => HostMatch::Suffix(s.to_ascii_lowercase().into()),
        };
        Some(HostPattern { host, port })
    }

    /// Whether `destination` is this one: byte comparisons, no allocation.
    #[inline]
    fn matches(&self, destination: &Destination<'_>) -> bool {
        let host = destination.host;
        let host_matches = match &self.host {
            HostMatch::Exact(exact) => host.eq_ignore_ascii_case(exact),
            HostMatch::Suffix(suffix) => {
                let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        };
        host_matches && (self.port.is_none() || self.port == destination.port())
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6) into its host and, if present, its port digits;
/// `None` for an unbracketed IPv6 address or an empty host.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            None => (authority, None),
            Some((host, port)) => (host, Some(port)),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&port| port != 0)
}

/// A DNS name or an IPv4 address: dot-separated labels of letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[` hex digits, `:` and `.` (an embedded IPv4) `]`, as `http` writes an IPv6 host.
fn valid_ipv6(host: &str) -> bool {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|inner| {
            inner.contains(':')
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
}

/// Whether the request's authority matches one of `patterns`. No allocation, and the port is
/// parsed only for a pattern that names one whose host matches.
fn matches_destination<B>(patterns: &[HostPattern], req: &Request<B>) -> bool {
    let Some(destination) = Destination::of(req) else {
        return false;
    };
    patterns.iter().any(|pattern| pattern.matches(&destination))
}

/// Where a request goes, as slices of its URI's authority or of its `Host` header.
struct Destination<'a> {
    /// Without a trailing dot.
    host: &'a str,
    port: Option<&'a str>,
    scheme: Option<&'a Scheme>,
}

impl<'a> Destination<'a> {
    /// The URI's authority, or else the `Host` header (a request in origin form).
    fn of<B>(req: &'a Request<B>) -> Option<Destination<'a>> {
        let uri = req.uri();
        let authority = match uri.authority() {
            Some(authority) => authority.as_str(),
            None => req.headers().get(HOST)?.to_str().ok()?,
        };
        // Userinfo is no part of the destination (and `@` cannot appear after it).
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = split_port(authority)?;
        Some(Destination {
            host: host.strip_suffix('.').unwrap_or(host),
            port,
            scheme: uri.scheme(),
        })
    }

    /// The explicit port, or the scheme's default one.
    fn port(&self) -> Option<u16> {
        match self.port {
            Some(digits) => parse_port(digits),
            None => match self.scheme {
                Some(scheme) if *scheme == Scheme::HTTP => Some(80),
                Some(scheme) if *scheme == Scheme::HTTPS => Some(443),
                _ => None,
            },
        }
    }
}

/// Header values formatted once for a fixed budget; see [`Propagation::prepare`].
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    budget: Duration,
    ms: Option<HeaderValue>,
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
