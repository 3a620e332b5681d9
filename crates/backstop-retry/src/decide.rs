//! The retry decision: whether a failed attempt is tried again, after which delay, or why the
//! layer stops — and the logs that say so.

use std::time::Duration;

use backstop_classify::{Failure, Kind, Phase, Retryable};
use backstop_deadline::Deadline;
use http::StatusCode;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::budget::RetryBudget;
use crate::grpc::{MethodRetry, status_code};
use crate::info::{RetryInfo, StopReason};
use crate::layer::Config;
use crate::random::{NO_STREAM, mix, next_stream};

/// What a gRPC call's per-method policy says about its failed attempt.
#[derive(Clone, Copy)]
pub(crate) struct GrpcCall<'a> {
    pub(crate) method: &'a MethodRetry,
    /// The server's `grpc-retry-pushback-ms` was negative or garbage: "do not retry" (A6).
    pub(crate) pushback_refused: bool,
}

/// What [`decide`] answers.
pub(crate) enum Verdict {
    /// Try again after this delay.
    Retry(Duration),
    /// Return the last failure, for this reason.
    Stop(StopReason),
}

/// Whether the failed attempt recorded in `info` is tried again, and after which delay: the
/// classification, the method, the attempt limit, the body, the server's wait, the deadline and
/// the budgets, in that order. A gRPC call under a per-method policy (`grpc`) is judged by its
/// status codes and attempt limit instead of by idempotency.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide<P>(
    config: &Config<P>,
    failure: &Failure,
    idempotent: bool,
    grpc: Option<GrpcCall<'_>>,
    deadline: Option<Deadline>,
    info: &RetryInfo,
    // Asked only once the checks before it passed: it may take the body's lock.
    replayable: impl FnOnce() -> bool,
    stream: &mut u64,
    backoff_restart: &mut u32,
    host_budget: Option<&RetryBudget>,
) -> Verdict {
    // A call rejected before any I/O (an open breaker, a load shedder) would be rejected again:
    // retrying it only sleeps and spends budget, and hides the rejection behind whatever the
    // last attempt says.
    if failure.phase() == Phase::Local {
        return Verdict::Stop(match failure.kind() {
            // Too little time was left to send the request at all.
            Kind::TimedOut(backstop_classify::Timer::Deadline) => StopReason::Deadline,
            _ => StopReason::RejectedLocally,
        });
    }
    let retryable = match failure.kind() {
        Kind::Status(StatusCode::CONFLICT) if config.retry_conflict => Retryable::IfIdempotent,
        _ => failure.retryable(),
    };
    let allowed = match (retryable, grpc) {
        // Never sent, or never processed: A6's transparent retry, policy or not.
        (Retryable::Safe, _) => true,
        // The service owner listed the codes that mean "not processed" (or a method safe to
        // repeat); a status after processing is retried only if listed, and the server's
        // pushback can still forbid it.
        (_, Some(call)) => match status_code(failure.kind()) {
            Some(code) => call.method.retries(code) && !call.pushback_refused,
            None => retryable == Retryable::IfIdempotent && idempotent,
        },
        (Retryable::IfIdempotent, None) => idempotent,
        (Retryable::Never, None) => false,
    };
    if !allowed {
        return Verdict::Stop(StopReason::NotRetryable);
    }
    let max_attempts = grpc.map_or(config.max_attempts, |call| call.method.max_attempts());
    if info.attempts() >= max_attempts {
        return Verdict::Stop(StopReason::AttemptsExhausted);
    }
    if !replayable() {
        return Verdict::Stop(StopReason::BodyNotReplayable);
    }
    let server_wait = failure.retry_after().filter(|_| match failure.kind() {
        Kind::Status(status) => config.retry_after_statuses.contains(&status),
        Kind::Grpc(_) => true,
        _ => false,
    });
    let delay = match server_wait {
        // Going back sooner than the server asked is what its `Retry-After` forbids; the caller
        // gets the response with the header, to wait or give up as it sees fit.
        Some(wait) if wait > config.retry_after_max => {
            return Verdict::Stop(StopReason::ServerWaitTooLong);
        }
        Some(wait) => {
            // gRPC A6: after a retry the server timed with its pushback, the backoff starts over
            // from the initial delay.
            if matches!(failure.kind(), Kind::Grpc(_)) {
                *backoff_restart = info.attempts();
            }
            wait
        }
        None => {
            // Each request draws from its own stream, numbered at its first retry, so a seeded
            // layer repeats its delays whatever the interleaving of successful requests.
            if *stream == NO_STREAM {
                *stream = next_stream(&config.sequence);
            }
            let retry = u64::from(info.attempts() - 1);
            let mut rng = SmallRng::seed_from_u64(mix(config.seed ^ mix(*stream) ^ mix(!retry)));
            let backoff = grpc
                .and_then(|call| call.method.backoff_override())
                .unwrap_or(config.backoff);
            // Retries since the backoff last started over (only a gRPC pushback restarts it).
            let since = (info.attempts() - 1).saturating_sub(*backoff_restart);
            let previous = if since == 0 {
                Duration::ZERO
            } else {
                info.last_delay()
            };
            let delay = backoff.delay(since, previous, &mut rng);
            // tokio's timer ticks in whole milliseconds; a delay it can actually sleep is the
            // one reported.
            Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
        }
    };
    // The deadline travels in the retained request head, read only when a retry is considered.
    if let Some(deadline) = deadline {
        // The next attempt must be able to start before the deadline, not merely wake at it.
        if delay >= deadline.remaining() {
            return Verdict::Stop(StopReason::Deadline);
        }
    }
    let host_refuses = host_budget.filter(|budget| !budget.try_withdraw());
    let refuses = host_refuses.or_else(|| {
        config
            .budget
            .as_ref()
            .filter(|budget| !budget.try_withdraw())
    });
    if let Some(budget) = refuses {
        report_exhausted(budget, info, failure);
        return Verdict::Stop(StopReason::BudgetExhausted);
    }
    Verdict::Retry(delay)
}

/// Says why a body could not be sent again: the caller's error keeps the real failure's kind, so
/// the reason (too large, already read, failed) is told here and in the stop reason.
#[cold]
pub(crate) fn log_not_replayed(why: Option<&'static str>, failure: &Failure) {
    tracing::debug!(
        kind = %failure.kind(),
        why = why.unwrap_or("the request body cannot be replayed"),
        "not retried: the request body cannot be sent again"
    );
}

/// Logs an exhausted budget ("retry budget exhausted"): at warn level at most once a second per
/// budget (an outage would otherwise log every failed request), counting in `suppressed` the
/// exhaustions logged at debug level since.
fn report_exhausted(budget: &RetryBudget, info: &RetryInfo, failure: &Failure) {
    match budget.warning_due() {
        Some(suppressed) => tracing::warn!(
            target: crate::telemetry::TARGET,
            reason = failure.kind().label(),
            attempts = info.attempts(),
            suppressed,
            "retry budget exhausted"
        ),
        None => tracing::debug!(
            target: crate::telemetry::TARGET,
            reason = failure.kind().label(),
            attempts = info.attempts(),
            "retry budget exhausted"
        ),
    }
}
