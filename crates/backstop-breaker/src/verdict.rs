//! What counts as a failure: [`Verdict`] and [`default_verdict`].

use backstop_classify::{GrpcCode, Kind, Outcome, Phase};

/// What one call tells the breaker about the health of its dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The dependency answered: resets the consecutive-failures count.
    Success,
    /// The dependency is sick: counts toward both the consecutive count and the failure rate.
    Failure,
    /// The dependency is overloaded and said so (429, `RESOURCE_EXHAUSTED`): counts toward the
    /// failure rate, and toward the consecutive count only when
    /// [`throttled_counts_consecutive`](crate::Builder::throttled_counts_consecutive) is set.
    Throttled,
    /// Says nothing about the dependency (the caller cancelled, a local layer refused): not
    /// recorded at all.
    Ignored,
}

/// How a breaker judges an [`Outcome`]; a plain function so the judgement costs no allocation
/// and no dynamic dispatch of a closure's state.
pub type Judge = fn(&Outcome) -> Verdict;

/// The default judgement.
///
/// - 5xx, timeouts, connect, TLS, DNS and protocol errors are [`Verdict::Failure`];
/// - 429 (and gRPC `RESOURCE_EXHAUSTED`) is [`Verdict::Throttled`];
/// - other 4xx are [`Verdict::Success`]: the dependency answered, the request was wrong;
/// - gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS` are failures,
///   other gRPC codes are answers;
/// - a cancelled call, a call refused locally (another breaker open, retry budget exhausted, a
///   deadline already spent before sending) is [`Verdict::Ignored`].
///
/// ```
/// use backstop_breaker::{Verdict, default_verdict};
/// use backstop_classify::{Failure, Kind, Outcome, Phase};
/// use http::StatusCode;
///
/// let status = |code| Outcome::Failure(Failure::new(
///     Kind::Status(StatusCode::from_u16(code).unwrap()), Phase::AwaitHeaders));
/// assert_eq!(default_verdict(&status(503)), Verdict::Failure);
/// assert_eq!(default_verdict(&status(429)), Verdict::Throttled);
/// assert_eq!(default_verdict(&status(404)), Verdict::Success);
/// ```
pub fn default_verdict(outcome: &Outcome) -> Verdict {
    let failure = match outcome {
        Outcome::Success => return Verdict::Success,
        Outcome::Failure(failure) => failure,
    };
    match failure.kind() {
        Kind::Status(status) if status.as_u16() == 429 => Verdict::Throttled,
        Kind::Status(status) if status.is_server_error() => Verdict::Failure,
        Kind::Status(_) => Verdict::Success,
        Kind::Grpc(code) => match code {
            GrpcCode::Unavailable
            | GrpcCode::DeadlineExceeded
            | GrpcCode::Internal
            | GrpcCode::Unknown
            | GrpcCode::DataLoss => Verdict::Failure,
            GrpcCode::ResourceExhausted => Verdict::Throttled,
            GrpcCode::Cancelled => Verdict::Ignored,
            _ => Verdict::Success,
        },
        Kind::Cancelled | Kind::BreakerOpen | Kind::BudgetExhausted | Kind::BodyNotReplayable => {
            Verdict::Ignored
        }
        _ if failure.phase() == Phase::Local => Verdict::Ignored,
        _ => Verdict::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_classify::{Failure, Timer};
    use http::StatusCode;

    fn failure(kind: Kind, phase: Phase) -> Outcome {
        Outcome::Failure(Failure::new(kind, phase))
    }

    #[test]
    fn statuses() {
        let status = |s: StatusCode| failure(Kind::Status(s), Phase::AwaitHeaders);
        assert_eq!(default_verdict(&Outcome::Success), Verdict::Success);
        assert_eq!(
            default_verdict(&status(StatusCode::BAD_GATEWAY)),
            Verdict::Failure
        );
        assert_eq!(
            default_verdict(&status(StatusCode::TOO_MANY_REQUESTS)),
            Verdict::Throttled
        );
        assert_eq!(
            default_verdict(&status(StatusCode::NOT_FOUND)),
            Verdict::Success
        );
        assert_eq!(
            default_verdict(&status(StatusCode::REQUEST_TIMEOUT)),
            Verdict::Success
        );
    }

    #[test]
    fn transport_errors_fail_and_local_ones_are_ignored() {
        assert_eq!(
            default_verdict(&failure(Kind::Refused, Phase::Connect)),
            Verdict::Failure
        );
        assert_eq!(
            default_verdict(&failure(
                Kind::TimedOut(Timer::Attempt),
                Phase::AwaitHeaders
            )),
            Verdict::Failure
        );
        assert_eq!(
            default_verdict(&failure(Kind::Cancelled, Phase::AwaitHeaders)),
            Verdict::Ignored
        );
        assert_eq!(
            default_verdict(&failure(Kind::BreakerOpen, Phase::Local)),
            Verdict::Ignored
        );
        assert_eq!(
            default_verdict(&failure(Kind::TimedOut(Timer::Deadline), Phase::Local)),
            Verdict::Ignored
        );
        assert_eq!(
            default_verdict(&failure(
                Kind::Grpc(GrpcCode::Unavailable),
                Phase::AwaitHeaders
            )),
            Verdict::Failure
        );
        assert_eq!(
            default_verdict(&failure(
                Kind::Grpc(GrpcCode::NotFound),
                Phase::AwaitHeaders
            )),
            Verdict::Success
        );
    }
}
