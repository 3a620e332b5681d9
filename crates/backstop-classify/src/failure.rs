//! *Where* a call failed ([`Phase`]), *whether* a retry is safe ([`Retryable`]), and the three
//! together ([`Failure`], [`Outcome`]).

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::kind::{GrpcCode, Kind, ProtocolFailure, Timer, TlsFailure};

/// *Where* in the life of a call it failed.
///
/// The phase decides most of what a retry may do: a call that failed before any byte of the
/// request left (resolve, connect, TLS, or rejected locally) can be sent again whatever its method;
/// one that failed later may already have been processed by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Resolving the host name to addresses.
    Resolve,
    /// Establishing the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Writing the request head or body.
    Send,
    /// The request was sent; waiting for the response head.
    AwaitHeaders,
    /// The response head arrived; reading the response body.
    ReadBody,
    /// Rejected locally before any I/O: breaker open, budget exhausted, deadline already spent.
    Local,
}

impl Phase {
    /// A short lower-case name, e.g. `"awaiting headers"`.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Send => "send",
            Phase::AwaitHeaders => "awaiting headers",
            Phase::ReadBody => "reading body",
            Phase::Local => "local",
        }
    }

    /// `true` when no byte of the request can have reached the peer in this phase.
    pub const fn is_before_send(self) -> bool {
        matches!(
            self,
            Phase::Resolve | Phase::Connect | Phase::Tls | Phase::Local
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether sending the request again is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Retryable {
    /// The request never reached the peer: any method may be retried.
    Safe,
    /// The peer may have processed the request: retry only idempotent requests (RFC 9110
    /// §9.2.2 methods, or a request carrying an idempotency key).
    IfIdempotent,
    /// Retrying cannot help (most 4xx, an invalid certificate, a name that does not exist, a spent
    /// deadline) or must not happen.
    Never,
}

impl Retryable {
    /// The default judgement for a failure of `kind` in `phase`.
    ///
    /// Kinds that no retry can fix are [`Never`](Retryable::Never) wherever they happen; kinds that
    /// prove the request was not processed (a refused HTTP/2 stream, a connection closed before
    /// the write, a breaker that never let the call out) are [`Safe`](Retryable::Safe); otherwise
    /// the phase decides.
    pub fn judge(kind: Kind, phase: Phase) -> Retryable {
        match kind {
            Kind::DnsNotFound
            | Kind::Tls(TlsFailure::Certificate)
            | Kind::HostUnreachable
            | Kind::NetworkUnreachable
            | Kind::AddrInUse
            | Kind::TimedOut(Timer::Deadline)
            | Kind::TimedOut(Timer::Header)
            | Kind::Cancelled
            | Kind::BudgetExhausted
            | Kind::BodyNotReplayable => Retryable::Never,
            Kind::Protocol(ProtocolFailure::RefusedStream)
            | Kind::Closed
            | Kind::BreakerOpen
            | Kind::Overloaded => Retryable::Safe,
            Kind::Status(status) => judge_status(status),
            Kind::Grpc(code) => judge_grpc(code),
            _ if phase.is_before_send() => Retryable::Safe,
            _ => Retryable::IfIdempotent,
        }
    }
}

/// The default judgement of an HTTP status: 5xx, 408 and 429 may have been processed, every other
/// status is final.
///
/// 429 is among those that *may* have been processed: a rate limiter usually answers before the
/// handler runs, but nothing in the protocol says so (a limiter behind the handler, or a quota
/// counted after the work, answers 429 just the same). Replaying a POST on it is the bug
/// reqwest-retry is known for; urllib3 retries 429 only for idempotent methods, as here. A
/// service whose 429 is a promise overrides it with [`HttpPolicy::status`](crate::HttpPolicy::status).
pub(crate) fn judge_status(status: StatusCode) -> Retryable {
    match status.as_u16() {
        408 | 429 | 500..=599 => Retryable::IfIdempotent,
        _ => Retryable::Never,
    }
}

/// The default judgement of a gRPC status, after gRPC's own retry guidance: `UNAVAILABLE` and
/// `RESOURCE_EXHAUSTED` are transient; everything else is final.
pub(crate) fn judge_grpc(code: GrpcCode) -> Retryable {
    match code {
        GrpcCode::Unavailable | GrpcCode::ResourceExhausted => Retryable::IfIdempotent,
        _ => Retryable::Never,
    }
}

impl fmt::Display for Retryable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Retryable::Safe => "safe",
            Retryable::IfIdempotent => "if idempotent",
            Retryable::Never => "never",
        })
    }
}

/// One classified failure: what, where, whether to retry, and when the server asked us to.
///
/// `Failure` is `Copy` and small, so layers pass it around and store it in response extensions
/// without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failure {
    kind: Kind,
    phase: Phase,
    retryable: Retryable,
    retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of `kind` in `phase`, judged by [`Retryable::judge`].
    pub fn new(kind: Kind, phase: Phase) -> Failure {
        Failure {
            kind,
            phase,
            retryable: Retryable::judge(kind, phase),
            retry_after: None,
        }
    }

    /// Overrides the retry judgement (a policy that knows better, e.g. "409 means retry later").
    #[must_use]
    pub fn with_retryable(mut self, retryable: Retryable) -> Failure {
        self.retryable = retryable;
        self
    }

    /// Records how long the server asked us to wait before trying again.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Failure {
        self.retry_after = retry_after;
        self
    }

    /// Overrides the phase, keeping the retry judgement unless it depended on the phase.
    #[must_use]
    pub fn with_phase(self, phase: Phase) -> Failure {
        Failure {
            retryable: Retryable::judge(self.kind, phase),
            phase,
            ..self
        }
    }

    /// What failed.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Where it failed.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a retry is safe.
    pub fn retryable(&self) -> Retryable {
        self.retryable
    }

    /// The server's `Retry-After` (or `grpc-retry-pushback-ms`), when it sent a valid one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether this failure may be retried for a request whose idempotency is `idempotent`.
    pub fn may_retry(&self, idempotent: bool) -> bool {
        match self.retryable {
            Retryable::Safe => true,
            Retryable::IfIdempotent => idempotent,
            Retryable::Never => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} while {} (retry: {})",
            self.kind,
            self.phase.name(),
            self.retryable
        )?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        Ok(())
    }
}

/// The verdict on one response or error: success, or a classified failure.
///
/// [`ClassifyLayer`](crate::ClassifyLayer) stores it in the response's extensions so outer layers
/// (retry, breaker, metrics) read it instead of re-deriving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call did what was asked.
    Success,
    /// The call failed; how is in the [`Failure`].
    Failure(Failure),
}

impl Outcome {
    /// `true` for [`Outcome::Success`].
    pub const fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// The failure, if any.
    pub const fn failure(&self) -> Option<&Failure> {
        match self {
            Outcome::Success => None,
            Outcome::Failure(failure) => Some(failure),
        }
    }

    /// The verdict [`ClassifyLayer`](crate::ClassifyLayer) stored in a response's (or a
    /// request's) extensions, if any: `Outcome::of(res.extensions())`.
    ///
    /// Only the emptiness check is inlined: a response nothing classified usually carries no
    /// extensions at all, and then the call is skipped.
    #[inline]
    pub fn of(extensions: &http::Extensions) -> Option<&Outcome> {
        if extensions.is_empty() {
            None
        } else {
            Outcome::stored_in(extensions)
        }
    }

    /// Out of line, and not generic: the breaker, the retry layer and the client each read the
    /// verdict of every response, and all of them then run this one copy of the lookup rather
    /// than one inlined into each (a call's path costs, when it runs cold, per line of code).
    #[inline(never)]
    fn stored_in(extensions: &http::Extensions) -> Option<&Outcome> {
        extensions.get::<Outcome>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_of_extensions_is_the_one_stored_there_or_none() {
        let mut extensions = http::Extensions::new();
        assert_eq!(Outcome::of(&extensions), None);
        let failed = Outcome::Failure(Failure::new(Kind::Reset, Phase::ReadBody));
        extensions.insert(failed);
        assert_eq!(Outcome::of(&extensions), Some(&failed));
        extensions.insert(Outcome::Success);
        assert_eq!(Outcome::of(&extensions), Some(&Outcome::Success));
    }

    #[test]
    fn never_sent_is_safe_and_sent_is_if_idempotent() {
        assert_eq!(
            Failure::new(Kind::Refused, Phase::Connect).retryable(),
            Retryable::Safe
        );
        assert_eq!(
            Failure::new(Kind::TimedOut(Timer::Connect), Phase::Tls).retryable(),
            Retryable::Safe
        );
        assert_eq!(
            Failure::new(Kind::Reset, Phase::AwaitHeaders).retryable(),
            Retryable::IfIdempotent
        );
        assert_eq!(
            Failure::new(Kind::Reset, Phase::Connect).retryable(),
            Retryable::Safe
        );
    }

    #[test]
    fn hopeless_kinds_are_never_retried_anywhere() {
        for phase in [Phase::Resolve, Phase::Connect, Phase::Send, Phase::Local] {
            for kind in [
                Kind::DnsNotFound,
                Kind::Tls(TlsFailure::Certificate),
                Kind::TimedOut(Timer::Deadline),
                Kind::BudgetExhausted,
                Kind::HostUnreachable,
            ] {
                assert_eq!(Failure::new(kind, phase).retryable(), Retryable::Never);
            }
        }
    }

    #[test]
    fn statuses_follow_the_default_policy() {
        let judge = |code: u16| {
            Failure::new(
                Kind::Status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK)),
                Phase::AwaitHeaders,
            )
            .retryable()
        };
        assert_eq!(judge(503), Retryable::IfIdempotent);
        assert_eq!(judge(500), Retryable::IfIdempotent);
        assert_eq!(judge(408), Retryable::IfIdempotent);
        assert_eq!(judge(429), Retryable::IfIdempotent);
        assert_eq!(judge(404), Retryable::Never);
        assert_eq!(judge(422), Retryable::Never);
    }

    #[test]
    fn may_retry_respects_idempotency() {
        let reset = Failure::new(Kind::Reset, Phase::AwaitHeaders);
        assert!(reset.may_retry(true));
        assert!(!reset.may_retry(false));
        let refused = Failure::new(Kind::Refused, Phase::Connect);
        assert!(refused.may_retry(false));
        let missing = Failure::new(Kind::DnsNotFound, Phase::Resolve);
        assert!(!missing.may_retry(true));
    }

    #[test]
    fn failure_stays_small() {
        assert!(std::mem::size_of::<Failure>() <= 32);
    }
}
