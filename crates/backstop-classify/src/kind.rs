//! *What* failed: [`Kind`] and the small enums it carries.

use std::fmt;

use http::StatusCode;

/// Which timer gave up, for [`Kind::TimedOut`].
///
/// Every timer in backstop names itself, so a reader of the error knows whether the connect bound,
/// the idle bound, one attempt's bound or the whole call's deadline ran out. They are not
/// interchangeable: an attempt timeout may be retried, a deadline never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// Establishing the connection (DNS + TCP + TLS) took longer than the connect bound.
    Connect,
    /// No byte moved for longer than the idle bound while we were waiting for one.
    Idle,
    /// One attempt of the call took longer than the per-attempt bound.
    Attempt,
    /// The whole call, retries and backoff included, ran past its deadline.
    Deadline,
    /// The peer did not send a complete request head in time (hyper's header read timeout).
    Header,
    /// The operating system gave up (`ETIMEDOUT`): e.g. TCP retransmissions or keep-alive probes
    /// went unanswered.
    Os,
}

impl Timer {
    /// A short lower-case name, e.g. `"connect"`.
    pub const fn name(self) -> &'static str {
        match self {
            Timer::Connect => "connect",
            Timer::Idle => "idle",
            Timer::Attempt => "attempt",
            Timer::Deadline => "deadline",
            Timer::Header => "header",
            Timer::Os => "os",
        }
    }
}

/// The two ways a TLS session fails, for [`Kind::Tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer's certificate was rejected (unknown issuer, expired, wrong name, revoked…).
    /// Retrying the same peer cannot fix it.
    Certificate,
    /// The handshake itself failed: no common protocol or cipher, an alert from the peer, or a
    /// message that was not TLS.
    Handshake,
}

/// What went wrong at the HTTP protocol level, for [`Kind::Protocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolFailure {
    /// The peer sent bytes that are not valid HTTP (a garbage status line, a bad header).
    Malformed,
    /// The peer closed the connection before the message was complete.
    Incomplete,
    /// HTTP/2 `REFUSED_STREAM`: the server promises it did not process the stream.
    RefusedStream,
    /// HTTP/2 `GOAWAY`: the server is shutting the connection down. When the server's GOAWAY
    /// reached the request's own stream (above its last-stream-id), the request was never
    /// processed and the failure is retryable for any method.
    GoAway,
    /// Any other HTTP/2 stream or connection error.
    Http2,
}

/// A gRPC status code (`grpc-status`), for [`Kind::Grpc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 0 `OK`.
    Ok,
    /// 1 `CANCELLED`.
    Cancelled,
    /// 2 `UNKNOWN`, and any code outside the 0–16 range.
    Unknown,
    /// 3 `INVALID_ARGUMENT`.
    InvalidArgument,
    /// 4 `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// 5 `NOT_FOUND`.
    NotFound,
    /// 6 `ALREADY_EXISTS`.
    AlreadyExists,
    /// 7 `PERMISSION_DENIED`.
    PermissionDenied,
    /// 8 `RESOURCE_EXHAUSTED`.
    ResourceExhausted,
    /// 9 `FAILED_PRECONDITION`.
    FailedPrecondition,
    /// 10 `ABORTED`.
    Aborted,
    /// 11 `OUT_OF_RANGE`.
    OutOfRange,
    /// 12 `UNIMPLEMENTED`.
    Unimplemented,
    /// 13 `INTERNAL`.
    Internal,
    /// 14 `UNAVAILABLE`.
    Unavailable,
    /// 15 `DATA_LOSS`.
    DataLoss,
    /// 16 `UNAUTHENTICATED`.
    Unauthenticated,
}

impl GrpcCode {
    /// Maps the numeric value of `grpc-status`; values outside 0–16 are [`GrpcCode::Unknown`], as
    /// the gRPC specification asks.
    pub const fn from_i32(code: i32) -> GrpcCode {
        match code {
            0 => GrpcCode::Ok,
            1 => GrpcCode::Cancelled,
            3 => GrpcCode::InvalidArgument,
            4 => GrpcCode::DeadlineExceeded,
            5 => GrpcCode::NotFound,
            6 => GrpcCode::AlreadyExists,
            7 => GrpcCode::PermissionDenied,
            8 => GrpcCode::ResourceExhausted,
            9 => GrpcCode::FailedPrecondition,
            10 => GrpcCode::Aborted,
            11 => GrpcCode::OutOfRange,
            12 => GrpcCode::Unimplemented,
            13 => GrpcCode::Internal,
            14 => GrpcCode::Unavailable,
            15 => GrpcCode::DataLoss,
            16 => GrpcCode::Unauthenticated,
            _ => GrpcCode::Unknown,
        }
    }

    /// The numeric value sent in `grpc-status`.
    pub const fn as_i32(self) -> i32 {
        match self {
            GrpcCode::Ok => 0,
            GrpcCode::Cancelled => 1,
            GrpcCode::Unknown => 2,
            GrpcCode::InvalidArgument => 3,
            GrpcCode::DeadlineExceeded => 4,
            GrpcCode::NotFound => 5,
            GrpcCode::AlreadyExists => 6,
            GrpcCode::PermissionDenied => 7,
            GrpcCode::ResourceExhausted => 8,
            GrpcCode::FailedPrecondition => 9,
            GrpcCode::Aborted => 10,
            GrpcCode::OutOfRange => 11,
            GrpcCode::Unimplemented => 12,
            GrpcCode::Internal => 13,
            GrpcCode::Unavailable => 14,
            GrpcCode::DataLoss => 15,
            GrpcCode::Unauthenticated => 16,
        }
    }
}

/// *What* failed.
///
/// Each kind carries a human [`explanation`](Kind::explanation) and a
/// [`next step`](Kind::next_step), so a log line or a diagnostic tool can say more than
/// "error trying to connect".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `ECONNREFUSED`: nothing is listening at that address.
    Refused,
    /// `ECONNRESET` / `ECONNABORTED`: the peer tore the connection down.
    Reset,
    /// A timer gave up; which one is in the [`Timer`].
    TimedOut(Timer),
    /// `EHOSTUNREACH`: no route to the host.
    HostUnreachable,
    /// `ENETUNREACH`: no route to the network.
    NetworkUnreachable,
    /// `EPIPE`: we wrote to a connection the peer had already closed.
    BrokenPipe,
    /// `EADDRINUSE`: the local address or port is taken by another socket.
    AddrInUse,
    /// `EADDRNOTAVAIL`: the local address cannot be used (not ours, or ephemeral ports exhausted).
    AddrNotAvailable,
    /// The name has no address (`NXDOMAIN`, "Name or service not known").
    DnsNotFound,
    /// The resolver failed for now (`EAI_AGAIN`, a timeout, a server failure).
    DnsTemporary,
    /// TLS failed; certificate or handshake.
    Tls(TlsFailure),
    /// HTTP itself went wrong; how is in the [`ProtocolFailure`].
    Protocol(ProtocolFailure),
    /// The connection closed before the request was written: typically a pooled keep-alive
    /// connection the server had already closed. The request never reached the peer.
    Closed,
    /// The peer answered with an HTTP status the policy counts as a failure.
    Status(StatusCode),
    /// The peer answered with a gRPC status the policy counts as a failure.
    Grpc(GrpcCode),
    /// The caller gave up on the call (its future was dropped or it was told to stop).
    Cancelled,
    /// A circuit breaker is open for this destination; the call was not attempted.
    BreakerOpen,
    /// The retry budget is spent; the failure was not retried. The retry layer itself reports
    /// the failure it did not retry (with the reason beside it); this kind is for a layer that
    /// rejects a whole call for want of budget.
    BudgetExhausted,
    /// A local load shedder (e.g. tower's `LoadShed`) rejected the call: the service is at
    /// capacity. Nothing was sent.
    Overloaded,
    /// The request body was larger than the replay buffer, so it could not be sent again.
    BodyNotReplayable,
    /// Anything else; the source error says more.
    Other,
}

impl Kind {
    /// The gRPC status a gRPC client reports for this failure, so that a gRPC stack (tonic's
    /// `Channel` under backstop's layers) can hand its caller a status instead of an opaque
    /// error: any timer → `DEADLINE_EXCEEDED`, the caller giving up → `CANCELLED`, a failure to
    /// reach or keep the server (refused, reset, closed, DNS, TLS, an open breaker, a load
    /// shedder, a refused stream or `GOAWAY`) → `UNAVAILABLE`, an exhausted retry budget →
    /// `RESOURCE_EXHAUSTED`, a gRPC status as it is, an HTTP status as gRPC maps it (`429`, `502`,
    /// `503`, `504` → `UNAVAILABLE`, `401` → `UNAUTHENTICATED`, `403` → `PERMISSION_DENIED`,
    /// `404` → `UNIMPLEMENTED`, `400` → `INTERNAL`, any other → `UNKNOWN`), anything else
    /// → `INTERNAL` or `UNKNOWN`.
    ///
    /// ```
    /// use backstop_classify::{GrpcCode, Kind, Timer};
    /// use http::StatusCode;
    ///
    /// assert_eq!(Kind::TimedOut(Timer::Deadline).grpc_code(), GrpcCode::DeadlineExceeded);
    /// assert_eq!(Kind::BreakerOpen.grpc_code(), GrpcCode::Unavailable);
    /// assert_eq!(Kind::Status(StatusCode::BAD_GATEWAY).grpc_code(), GrpcCode::Unavailable);
    /// // With tonic: `tonic::Status::new(tonic::Code::from_i32(code.as_i32()), err.to_string())`.
    /// ```
    pub fn grpc_code(&self) -> GrpcCode {
        match *self {
            Kind::Grpc(code) => code,
            Kind::Status(status) => match status.as_u16() {
                400 => GrpcCode::Internal,
                401 => GrpcCode::Unauthenticated,
                403 => GrpcCode::PermissionDenied,
                404 => GrpcCode::Unimplemented,
                429 | 502 | 503 | 504 => GrpcCode::Unavailable,
                _ => GrpcCode::Unknown,
            },
            Kind::TimedOut(_) => GrpcCode::DeadlineExceeded,
            Kind::Cancelled => GrpcCode::Cancelled,
            Kind::Refused
            | Kind::Reset
            | Kind::HostUnreachable
            | Kind::NetworkUnreachable
            | Kind::BrokenPipe
            | Kind::AddrNotAvailable
            | Kind::DnsNotFound
            | Kind::DnsTemporary
            | Kind::Tls(_)
            | Kind::Closed
            | Kind::BreakerOpen
            | Kind::Overloaded
            | Kind::Protocol(ProtocolFailure::RefusedStream | ProtocolFailure::GoAway) => {
                GrpcCode::Unavailable
            }
            Kind::BudgetExhausted => GrpcCode::ResourceExhausted,
            Kind::AddrInUse | Kind::Protocol(_) | Kind::BodyNotReplayable => GrpcCode::Internal,
            Kind::Other => GrpcCode::Unknown,
        }
    }

    /// A short name for logs and tables, e.g. `"refused"`, `"timed out (connect)"`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::Reset => "reset",
            Kind::TimedOut(Timer::Connect) => "timed out (connect)",
            Kind::TimedOut(Timer::Idle) => "timed out (idle)",
            Kind::TimedOut(Timer::Attempt) => "timed out (attempt)",
            Kind::TimedOut(Timer::Deadline) => "timed out (deadline)",
            Kind::TimedOut(Timer::Header) => "timed out (header)",
            Kind::TimedOut(Timer::Os) => "timed out (os)",
            Kind::HostUnreachable => "host unreachable",
            Kind::NetworkUnreachable => "network unreachable",
            Kind::BrokenPipe => "broken pipe",
            Kind::AddrInUse => "address in use",
            Kind::AddrNotAvailable => "address not available",
            Kind::DnsNotFound => "dns not found",
            Kind::DnsTemporary => "dns temporary failure",
            Kind::Tls(TlsFailure::Certificate) => "tls certificate",
            Kind::Tls(TlsFailure::Handshake) => "tls handshake",
            Kind::Protocol(ProtocolFailure::Malformed) => "protocol (malformed)",
            Kind::Protocol(ProtocolFailure::Incomplete) => "protocol (incomplete message)",
            Kind::Protocol(ProtocolFailure::RefusedStream) => "protocol (refused stream)",
            Kind::Protocol(ProtocolFailure::GoAway) => "protocol (goaway)",
            Kind::Protocol(ProtocolFailure::Http2) => "protocol (http2)",
            Kind::Closed => "closed before send",
            Kind::Status(_) => "http status",
            Kind::Grpc(_) => "grpc status",
            Kind::Cancelled => "cancelled",
            Kind::BreakerOpen => "breaker open",
            Kind::BudgetExhausted => "retry budget exhausted",
            Kind::Overloaded => "overloaded",
            Kind::BodyNotReplayable => "body not replayable",
            Kind::Other => "other",
        }
    }

    /// What this failure means, in a sentence a person on call can act on.
    pub fn explanation(&self) -> &'static str {
        match self {
            Kind::Refused => {
                "nothing is listening at that address: the server is down, the port is wrong, or a \
                 firewall rejected the connection"
            }
            Kind::Reset => {
                "the peer hung up mid-conversation: it crashed, restarted, hit a limit, or a \
                 middlebox dropped the connection"
            }
            Kind::TimedOut(Timer::Connect) => {
                "we gave up establishing the connection (name lookup, TCP or TLS): the address may \
                 be black-holed, the host down, or the network dropping packets"
            }
            Kind::TimedOut(Timer::Idle) => {
                "no byte arrived for too long while we were waiting for one: the peer stalled or \
                 the connection is dead without having been closed"
            }
            Kind::TimedOut(Timer::Attempt) => {
                "this attempt took longer than its bound: the server is slow or stuck"
            }
            Kind::TimedOut(Timer::Deadline) => {
                "the whole call ran out of time, retries included: the caller's time budget is spent"
            }
            Kind::TimedOut(Timer::Header) => {
                "the peer did not send a complete request head in time: a slow or silent client"
            }
            Kind::TimedOut(Timer::Os) => {
                "the operating system gave up: packets went unanswered (TCP retransmission or \
                 keep-alive timeout)"
            }
            Kind::HostUnreachable | Kind::NetworkUnreachable => {
                "there is no route to that address: the network or host is unreachable from here"
            }
            Kind::BrokenPipe => "we wrote after the peer had closed the connection",
            Kind::AddrInUse => "another socket already holds that local address or port",
            Kind::AddrNotAvailable => {
                "the local address cannot be used: it is not this machine's, or the ephemeral \
                 ports are exhausted"
            }
            Kind::DnsNotFound => {
                "the name has no address: a typo, an expired domain, or a record that was removed"
            }
            Kind::DnsTemporary => {
                "the resolver could not answer right now: DNS servers down, slow, or unreachable"
            }
            Kind::Tls(TlsFailure::Certificate) => {
                "the peer's certificate was rejected: unknown issuer, expired, or issued for \
                 another name"
            }
            Kind::Tls(TlsFailure::Handshake) => {
                "the TLS handshake failed: no common protocol or cipher, an alert from the peer, or \
                 the peer does not speak TLS on that port"
            }
            Kind::Protocol(ProtocolFailure::Malformed) => {
                "the peer answered with bytes that are not valid HTTP: wrong port, wrong protocol, \
                 or a broken server"
            }
            Kind::Protocol(ProtocolFailure::Incomplete) => {
                "the connection closed before the message was complete: the peer crashed or gave \
                 up mid-response"
            }
            Kind::Protocol(ProtocolFailure::RefusedStream) => {
                "the HTTP/2 server refused the stream without processing it"
            }
            Kind::Protocol(ProtocolFailure::GoAway) => {
                "the HTTP/2 server is closing the connection (GOAWAY)"
            }
            Kind::Protocol(ProtocolFailure::Http2) => "an HTTP/2 stream or connection error",
            Kind::Closed => {
                "the connection closed before the request was written, typically a keep-alive \
                 connection the server had already closed"
            }
            Kind::Status(_) => "the server answered with a status that counts as a failure",
            Kind::Grpc(_) => "the server answered with a gRPC status that counts as a failure",
            Kind::Cancelled => "the caller gave up on the call before it finished",
            Kind::BreakerOpen => {
                "the circuit breaker for this destination is open after repeated failures; the \
                 call was not attempted"
            }
            Kind::BudgetExhausted => {
                "too many retries were sent recently; this failure was not retried to avoid a \
                 retry storm"
            }
            Kind::Overloaded => {
                "a local load shedder rejected the call: too many calls are in flight; nothing was \
                 sent"
            }
            Kind::BodyNotReplayable => {
                "the request body was larger than the replay buffer, so the request could be sent \
                 only once"
            }
            Kind::Other => "an error backstop does not classify further; see the source error",
        }
    }

    /// What to do about it.
    pub fn next_step(&self) -> &'static str {
        match self {
            Kind::Refused => {
                "check the target host and port, health-check the service, retry with backoff"
            }
            Kind::Reset => {
                "reconnect; never assume a partial write succeeded — retry only if the request is \
                 idempotent"
            }
            Kind::TimedOut(Timer::Connect) => {
                "check that the address is reachable (nc -vz host port); try another address"
            }
            Kind::TimedOut(Timer::Idle) => {
                "check the peer's health and load; retry if idempotent; enable keep-alive pings \
                 for long-lived connections"
            }
            Kind::TimedOut(Timer::Attempt) => {
                "retry if idempotent; if it keeps happening, the bound or the server needs attention"
            }
            Kind::TimedOut(Timer::Deadline) => {
                "do not retry: the caller has already given up; raise the deadline or make the \
                 call cheaper"
            }
            Kind::TimedOut(Timer::Header) => "nothing to do on this side; the client was too slow",
            Kind::TimedOut(Timer::Os) => {
                "check connectivity to the peer; an application retry rarely helps immediately"
            }
            Kind::HostUnreachable | Kind::NetworkUnreachable => {
                "check routing, VPN and firewall; an application retry will not fix it"
            }
            Kind::BrokenPipe => {
                "reconnect; the peer may have read part of the request — retry only if idempotent"
            }
            Kind::AddrInUse => "find the process holding the port (ss -ltnp), or bind another port",
            Kind::AddrNotAvailable => {
                "check the bind address; if ephemeral ports are exhausted, reuse connections"
            }
            Kind::DnsNotFound => "check the name for typos and that the record exists (dig NAME)",
            Kind::DnsTemporary => "retry with backoff; check the resolver configuration",
            Kind::Tls(TlsFailure::Certificate) => {
                "inspect the certificate (openssl s_client -connect host:port); fix trust or name"
            }
            Kind::Tls(TlsFailure::Handshake) => {
                "check that the port speaks TLS and that versions and ciphers overlap"
            }
            Kind::Protocol(ProtocolFailure::Malformed) => {
                "check that the port speaks HTTP (curl -v); do not retry blindly"
            }
            Kind::Protocol(ProtocolFailure::Incomplete) => {
                "retry if idempotent; check the server's logs for crashes or limits"
            }
            Kind::Protocol(ProtocolFailure::RefusedStream) => {
                "retry: the request was not processed"
            }
            Kind::Protocol(ProtocolFailure::GoAway) => {
                "retry on a new connection: any method when the GOAWAY says the stream was not \
                 processed, otherwise only if idempotent"
            }
            Kind::Protocol(ProtocolFailure::Http2) => "retry on a new connection if idempotent",
            Kind::Closed => "retry on a fresh connection: the request was never sent",
            Kind::Status(_) | Kind::Grpc(_) => {
                "read the response; retry only what the status and method make safe"
            }
            Kind::Cancelled => "nothing: the caller is gone",
            Kind::BreakerOpen => "wait for the breaker to probe the destination, or use another",
            Kind::BudgetExhausted => "let the dependency recover; look at why so many calls fail",
            Kind::Overloaded => "slow down or raise the concurrency limit; retry later",
            Kind::BodyNotReplayable => {
                "raise the replay limit, or make the body cheaper to resend (a bytes body)"
            }
            Kind::Other => "read the source error",
        }
    }

    /// `true` for every [`Kind::TimedOut`].
    pub const fn is_timeout(&self) -> bool {
        matches!(self, Kind::TimedOut(_))
    }

    /// `true` when the kind is a failed connection attempt (refused, unreachable, connect timeout,
    /// DNS, address errors) rather than a failure of a request on an established connection.
    pub const fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            Kind::Refused
                | Kind::TimedOut(Timer::Connect)
                | Kind::HostUnreachable
                | Kind::NetworkUnreachable
                | Kind::AddrInUse
                | Kind::AddrNotAvailable
                | Kind::DnsNotFound
                | Kind::DnsTemporary
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Status(status) => write!(f, "http status {}", status.as_u16()),
            Kind::Grpc(code) => write!(f, "grpc status {}", code.as_i32()),
            other => f.write_str(other.name()),
        }
    }
}
