//! [`GatewayReason`]: why the gateway answered a request itself, as a short code next to the
//! status (after Envoy's response flags), and the answers it makes.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::body::GatewayBody;
use crate::{Error, Kind, Timer};

/// The response header that carries a [`GatewayReason`] code, e.g. `x-backstop-reason: UF`.
pub const REASON_HEADER: &str = "x-backstop-reason";

/// Why the gateway answered a request itself instead of relaying the upstream's answer.
///
/// Each has a status and a short code, sent in the [`REASON_HEADER`] header and kept in the
/// response's extensions; the body is one short line with no address, URL or detail — those go
/// to the log (`tracing::warn!`, with the full classified error). An upstream's own answers,
/// `5xx` included, are relayed as they are and carry no code.
///
/// | code | status | meaning |
/// |---|---|---|
/// | `NR` | 404 | no route for this path and method |
/// | `DP` | 400 | denied path: ambiguous once decoded (`%2F`, `%2e%2e`, `..;`), malformed, or leaving the route it was sent to |
/// | `RB` | 413 | request body larger than the route's `body_limit` (declared, or as it streamed) |
/// | `DPE` | 400 | downstream protocol error: the client's request body was malformed or broken off while forwarded |
/// | `BB` | 503 | buffer budget: the gateway cannot keep this request's body for replay now (with `Retry-After: 1`) |
/// | `UF` | 503 | upstream connection failure: refused, unreachable, DNS, TLS, connect timeout |
/// | `UO` | 503 | overflow: the route's circuit breaker is open (with `Retry-After`), or its retry budget or capacity is spent |
/// | `UT` | 504 | upstream timeout: no answer within the attempt timeout or the deadline |
/// | `UC` | 502 | upstream connection terminated before a complete answer (reset, closed) |
/// | `UPE` | 502 | upstream protocol error (a malformed or incomplete answer) |
/// | `UE` | 502 | any other upstream failure |
///
/// ```
/// use backstop::GatewayReason;
/// assert_eq!(GatewayReason::BreakerOpen.code(), "UO");
/// assert_eq!(GatewayReason::BreakerOpen.status().as_u16(), 503);
/// assert_eq!(GatewayReason::from_code("UT"), Some(GatewayReason::UpstreamTimeout));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GatewayReason {
    /// `NR`, 404: no route serves this path and method.
    NoRoute,
    /// `DP`, 400: the path was refused before routing.
    DeniedPath,
    /// `RB`, 413: the request body is larger than the route's `body_limit`.
    RequestBody,
    /// `DPE`, 400: the client's request body was malformed, or ended early, while forwarded.
    BrokenRequestBody,
    /// `BB`, 503: the gateway-wide buffer budget cannot cover keeping this request's body for
    /// replay right now.
    BufferBudget,
    /// `UF`, 503: the upstream could not be connected to.
    UpstreamConnectFailure,
    /// `UO`, 503: the route's breaker is open, or its retry budget or capacity is spent.
    BreakerOpen,
    /// `UT`, 504: the upstream did not answer in time.
    UpstreamTimeout,
    /// `UC`, 502: the upstream's connection ended before a complete answer.
    ConnectionTerminated,
    /// `UPE`, 502: the upstream's answer was not valid HTTP.
    ProtocolError,
    /// `UE`, 502: another upstream failure.
    UpstreamError,
}

const ALL: [GatewayReason; 11] = [
    GatewayReason::NoRoute,
    GatewayReason::DeniedPath,
    GatewayReason::RequestBody,
    GatewayReason::BrokenRequestBody,
    GatewayReason::BufferBudget,
    GatewayReason::UpstreamConnectFailure,
    GatewayReason::BreakerOpen,
    GatewayReason::UpstreamTimeout,
    GatewayReason::ConnectionTerminated,
    GatewayReason::ProtocolError,
    GatewayReason::UpstreamError,
];

impl GatewayReason {
    /// The short code, e.g. `"UF"`.
    pub const fn code(self) -> &'static str {
        match self {
            GatewayReason::NoRoute => "NR",
            GatewayReason::DeniedPath => "DP",
            GatewayReason::RequestBody => "RB",
            GatewayReason::BrokenRequestBody => "DPE",
            GatewayReason::BufferBudget => "BB",
            GatewayReason::UpstreamConnectFailure => "UF",
            GatewayReason::BreakerOpen => "UO",
            GatewayReason::UpstreamTimeout => "UT",
            GatewayReason::ConnectionTerminated => "UC",
            GatewayReason::ProtocolError => "UPE",
            GatewayReason::UpstreamError => "UE",
        }
    }

    /// The reason with this code.
    pub fn from_code(code: &str) -> Option<GatewayReason> {
        ALL.into_iter().find(|reason| reason.code() == code)
    }

    /// The status the gateway answers with.
    pub const fn status(self) -> StatusCode {
        match self {
            GatewayReason::NoRoute => StatusCode::NOT_FOUND,
            GatewayReason::DeniedPath | GatewayReason::BrokenRequestBody => StatusCode::BAD_REQUEST,
            GatewayReason::RequestBody => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayReason::UpstreamConnectFailure
            | GatewayReason::BreakerOpen
            | GatewayReason::BufferBudget => StatusCode::SERVICE_UNAVAILABLE,
            GatewayReason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayReason::ConnectionTerminated
            | GatewayReason::ProtocolError
            | GatewayReason::UpstreamError => StatusCode::BAD_GATEWAY,
        }
    }

    /// The one-line body sent to the client.
    const fn body(self) -> &'static str {
        match self {
            GatewayReason::NoRoute => "no route\n",
            GatewayReason::DeniedPath => "bad request path\n",
            GatewayReason::RequestBody => "request body too large\n",
            GatewayReason::BrokenRequestBody => "malformed request body\n",
            GatewayReason::BufferBudget => "gateway busy, retry later\n",
            GatewayReason::UpstreamConnectFailure => "upstream unavailable\n",
            GatewayReason::BreakerOpen => "upstream unavailable, retry later\n",
            GatewayReason::UpstreamTimeout => "upstream timed out\n",
            GatewayReason::ConnectionTerminated => "upstream connection closed\n",
            GatewayReason::ProtocolError => "invalid upstream response\n",
            GatewayReason::UpstreamError => "upstream failed\n",
        }
    }

    /// The reason of a response the gateway made itself (`None` for a relayed one).
    pub fn of<B>(res: &Response<B>) -> Option<GatewayReason> {
        res.extensions().get::<GatewayReason>().copied()
    }

    /// The reason for a failed upstream call.
    pub(crate) fn of_error(err: &Error) -> GatewayReason {
        match err.kind() {
            Kind::Refused
            | Kind::HostUnreachable
            | Kind::NetworkUnreachable
            | Kind::AddrNotAvailable
            | Kind::AddrInUse
            | Kind::DnsNotFound
            | Kind::DnsTemporary
            | Kind::Tls(_)
            | Kind::TimedOut(Timer::Connect) => GatewayReason::UpstreamConnectFailure,
            Kind::BreakerOpen | Kind::BudgetExhausted | Kind::Overloaded => {
                GatewayReason::BreakerOpen
            }
            Kind::TimedOut(_) => GatewayReason::UpstreamTimeout,
            Kind::Reset | Kind::BrokenPipe | Kind::Closed => GatewayReason::ConnectionTerminated,
            Kind::Protocol(_) => GatewayReason::ProtocolError,
            _ => GatewayReason::UpstreamError,
        }
    }

    /// The gateway's answer for this reason.
    pub(crate) fn respond(self) -> Response<GatewayBody> {
        let mut res = Response::new(GatewayBody::Local(Full::new(Bytes::from_static(
            self.body().as_bytes(),
        ))));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(REASON_HEADER, HeaderValue::from_static(self.code()));
        res.extensions_mut().insert(self);
        res
    }

    /// The answer for a failed upstream call; `retry_after` is the time until the open
    /// breaker lets a probe through, when known.
    pub(crate) fn respond_to_error(
        err: &Error,
        retry_after: Option<Duration>,
    ) -> Response<GatewayBody> {
        let reason = GatewayReason::of_error(err);
        let mut res = match retry_after {
            Some(wait) => reason.respond_retry_after(wait),
            None => reason.respond(),
        };
        res.extensions_mut().insert(err.failure());
        res
    }

    /// The gateway's answer for this reason, asking the client to wait `wait` before trying
    /// again.
    pub(crate) fn respond_retry_after(self, wait: Duration) -> Response<GatewayBody> {
        let mut res = self.respond();
        // Whole seconds, rounded up, and at least 1: `Retry-After: 0` invites a retry that
        // would be refused again.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        res
    }
}

impl fmt::Display for GatewayReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
