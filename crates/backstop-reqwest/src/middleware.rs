//! [`BackstopMiddleware`]: the call loop — deadline, attempts through the breaker, the retry
//! decision, what the caller gets.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backstop_breaker::{Breakers, CircuitBreakerLayer, Gate, PerAuthority, RequestHead};
use backstop_classify::{Error, Failure, HttpPolicy, Kind, Outcome, Phase, Retryable, Timer};
use backstop_deadline::Deadline;
use backstop_retry::{
    Backoff, RetryBudget, RetryInfo, RetryOverride, StopReason, is_idempotent_method,
};
use http::{Extensions, HeaderName, StatusCode};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use reqwest_middleware::{Middleware, Next};

use crate::attempt::Sender;
use crate::builder::Builder;

/// The header that makes a non-idempotent request safe to send twice (as in backstop-retry).
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// How long after the deadline reqwest's own timer, which bounds the response body, fires.
const BODY_TIMER_SLACK: Duration = Duration::from_millis(1);

/// The checked settings, shared by the middleware's clones.
pub(crate) struct Config {
    pub(crate) deadline: Duration,
    pub(crate) deadline_covers_body: bool,
    pub(crate) attempt_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) retry_after_max: Duration,
    pub(crate) retry_conflict: bool,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) policy: HttpPolicy,
    pub(crate) breaker: Option<CircuitBreakerLayer>,
    pub(crate) seed: u64,
    /// Numbers each call's stream of jitter, so a seeded middleware repeats its delays.
    pub(crate) sequence: AtomicU64,
}

/// backstop's rules for a reqwest client, as a [`reqwest_middleware::Middleware`].
///
/// Every call gets a deadline over all its attempts; each attempt goes through the host's
/// circuit breaker and is bounded by the attempt timeout; a failed attempt is classified
/// ([`classify`](crate::classify())) and retried when that is safe for the request, within the
/// retry budget, after a jittered backoff or the server's `Retry-After`. Clones share the budget
/// and the breakers.
///
/// What the caller gets:
/// - a response: the first success, or the last failed response (503, 429…) when retrying
///   stopped, with a [`RetryInfo`] in its extensions whenever it was retried or retrying was
///   declined (`res.extensions().get::<RetryInfo>()`);
/// - an error: `reqwest_middleware::Error::Middleware` holding a backstop
///   [`Error`] ([`classified`](crate::classified)) whose kind is the last real failure (refused,
///   reset, a timeout, the breaker's `BreakerOpen`…), whose `source()` is reqwest's error, and
///   whose extensions hold the [`RetryInfo`] ([`RetryInfo::of_error`]).
///
/// Where to put it: first in the chain (`ClientBuilder::new(client).with(backstop)`), so that
/// every middleware after it runs once per attempt.
#[derive(Clone)]
pub struct BackstopMiddleware {
    config: Arc<Config>,
}

impl fmt::Debug for BackstopMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        f.debug_struct("BackstopMiddleware")
            .field("deadline", &config.deadline)
            .field("attempt_timeout", &config.attempt_timeout)
            .field("max_attempts", &config.max_attempts)
            .field("backoff", &config.backoff)
            .field("retry_after_max", &config.retry_after_max)
            .field("budget", &config.budget)
            .field("breaker", &config.breaker.is_some())
            .finish_non_exhaustive()
    }
}

/// What one call knows about itself while it runs.
struct Call {
    deadline: Deadline,
    idempotent: bool,
    never_retry: bool,
}

impl BackstopMiddleware {
    /// A builder with backstop's `Policy` defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_config(config: Config) -> BackstopMiddleware {
        BackstopMiddleware {
            config: Arc::new(config),
        }
    }

    /// The circuit breakers, one per host (scheme, host, port): their states, and manual
    /// control. `None` when built with [`Builder::no_breaker`].
    pub fn breakers(&self) -> Option<Breakers<PerAuthority>> {
        self.config
            .breaker
            .as_ref()
            .map(CircuitBreakerLayer::breakers)
    }

    /// The retry budget shared by every call. `None` when built with [`Builder::no_budget`].
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.config.budget.as_ref()
    }

    async fn run(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let config = &*self.config;
        let own = Deadline::after(config.deadline);
        let over = extensions.get::<RetryOverride>().copied();
        let call = Call {
            deadline: Deadline::current_in(extensions).map_or(own, |outer| outer.earliest(own)),
            idempotent: over == Some(RetryOverride::Idempotent)
                || is_idempotent_method(request.method())
                || request.headers().contains_key(&IDEMPOTENCY_KEY),
            never_retry: over == Some(RetryOverride::NeverRetry),
        };
        if let Some(budget) = &config.budget {
            budget.deposit();
        }
        let mut info = RetryInfo::default();
        let mut rng = None;
        // One per call: its retries find the host's breaker without looking it up again.
        let mut gate = config.breaker.as_ref().map(CircuitBreakerLayer::gate);
        loop {
            if call.deadline.is_expired() {
                info.stop(StopReason::Deadline);
                let spent = Error::new(Kind::TimedOut(Timer::Deadline), Phase::Local);
                return Err(failed(spent, info));
            }
            // reqwest hands back no request it failed to send: the copy for the next attempt is
            // made now, while one may follow. A streaming body has none.
            let spare = if !call.never_retry && info.attempts() < config.max_attempts {
                request.try_clone()
            } else {
                None
            };
            if config.deadline_covers_body {
                // A tick after the deadline: while the head is awaited the middleware's own timer
                // fires first, and the breaker is not told of the caller's deadline.
                let left = call.deadline.remaining() + BODY_TIMER_SLACK;
                let timeout = request.timeout_mut();
                *timeout = Some(timeout.map_or(left, |own| own.min(left)));
            }
            let attempt = self.attempt(request, extensions, next.clone(), &call, &mut gate);
            let (failure, last) = match attempt.await {
                Ok((res, Outcome::Success)) => return Ok(answered(res, info)),
                Ok((res, Outcome::Failure(failure))) => (failure, Ok(res)),
                Err(err) => (err.failure(), Err(err)),
            };
            let verdict = self.decide(&failure, &call, &info, spare.is_some(), &mut rng);
            match (verdict, spare) {
                (Ok(delay), Some(spare)) => {
                    tracing::debug!(
                        attempt = info.attempts(),
                        kind = %failure.kind(),
                        ?delay,
                        "retrying"
                    );
                    // The failed response goes back to the pool before the wait, not after it.
                    drop(last);
                    tokio::time::sleep(delay).await;
                    info.record_attempt(delay);
                    request = spare;
                }
                (verdict, _) => {
                    let reason = verdict.err().unwrap_or(StopReason::BodyNotReplayable);
                    if reason == StopReason::BodyNotReplayable {
                        tracing::debug!(
                            kind = %failure.kind(),
                            "not retried: the request body is a stream, which reqwest cannot \
                             send again"
                        );
                    }
                    info.stop(reason);
                    return match last {
                        Ok(res) => Ok(answered(res, info)),
                        Err(err) => Err(failed(err, info)),
                    };
                }
            }
        }
    }

    /// One attempt, admitted by the host's breaker when there is one, which records its outcome.
    async fn attempt(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        call: &Call,
        gate: &mut Option<Gate>,
    ) -> Result<(reqwest::Response, Outcome), Error> {
        let config = &*self.config;
        // The breaker keys on the origin (scheme, host, port); a URL without one (opaque
        // origins) has no host to protect.
        let permit = match gate {
            Some(gate) => match http::Uri::try_from(request.url().origin().ascii_serialization()) {
                Ok(origin) => {
                    let mut head = http::Request::new(());
                    *head.method_mut() = request.method().clone();
                    *head.uri_mut() = origin;
                    Some(gate.admit(&RequestHead::of(&head))?)
                }
                Err(_) => None,
            },
            None => None,
        };
        let sender = Sender {
            next,
            attempt_timeout: config.attempt_timeout,
            deadline: call.deadline,
            policy: &config.policy,
        };
        match tokio::time::timeout_at(call.deadline.instant(), sender.send(request, extensions))
            .await
        {
            Ok(result) => {
                if let Some(permit) = permit {
                    match &result {
                        Ok((_, outcome)) => permit.record(outcome),
                        Err(err) => permit.record_error(err),
                    }
                }
                result
            }
            // The caller's time ran out, which says nothing about the host: the attempt is
            // dropped and its permit with it, unrecorded, as backstop's deadline layer, outside
            // its breaker, drops the attempt.
            Err(_elapsed) => Err(Error::new(
                Kind::TimedOut(Timer::Deadline),
                Phase::AwaitHeaders,
            )),
        }
    }

    /// Whether the failed attempt recorded in `info` is tried again, and after which delay: the
    /// order of backstop-retry's own decision (whose function is private to that crate), from
    /// the same pieces — classification, method, attempts, body, the server's wait, the
    /// deadline, the budget.
    fn decide(
        &self,
        failure: &Failure,
        call: &Call,
        info: &RetryInfo,
        replayable: bool,
        rng: &mut Option<SmallRng>,
    ) -> Result<Duration, StopReason> {
        let config = &*self.config;
        if failure.phase() == Phase::Local {
            // Rejected before any I/O (an open breaker): another attempt now would be too.
            return Err(match failure.kind() {
                Kind::TimedOut(Timer::Deadline) => StopReason::Deadline,
                _ => StopReason::RejectedLocally,
            });
        }
        let failure = match failure.kind() {
            Kind::Status(StatusCode::CONFLICT) if config.retry_conflict => {
                failure.with_retryable(Retryable::IfIdempotent)
            }
            _ => *failure,
        };
        if call.never_retry || !failure.may_retry(call.idempotent) {
            return Err(StopReason::NotRetryable);
        }
        if info.attempts() >= config.max_attempts {
            return Err(StopReason::AttemptsExhausted);
        }
        if !replayable {
            return Err(StopReason::BodyNotReplayable);
        }
        let server_wait = failure.retry_after().filter(|_| {
            matches!(
                failure.kind(),
                Kind::Status(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
            )
        });
        let delay = match server_wait {
            // Coming back sooner than the server asked is what its `Retry-After` forbids.
            Some(wait) if wait > config.retry_after_max => {
                return Err(StopReason::ServerWaitTooLong);
            }
            Some(wait) => wait,
            None => {
                let rng = rng.get_or_insert_with(|| {
                    let call = config.sequence.fetch_add(1, Ordering::Relaxed);
                    SmallRng::seed_from_u64(config.seed ^ call.rotate_left(32))
                });
                let previous = info.delays().last().unwrap_or(Duration::ZERO);
                let delay = config.backoff.delay(info.attempts() - 1, previous, rng);
                // tokio's timer ticks in whole milliseconds: report the delay it can sleep.
                Duration::from_millis(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
        };
        // The next attempt must be able to start before the deadline, not merely wake at it.
        if delay >= call.deadline.remaining() {
            return Err(StopReason::Deadline);
        }
        if config
            .budget
            .as_ref()
            .is_some_and(|budget| !budget.try_withdraw())
        {
            tracing::debug!(
                attempts = info.attempts(),
                kind = %failure.kind(),
                "retry budget exhausted; returning the failure"
            );
            return Err(StopReason::BudgetExhausted);
        }
        Ok(delay)
    }
}

#[async_trait::async_trait]
impl Middleware for BackstopMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.run(req, extensions, next).await
    }
}

/// The response the caller gets, telling what happened when more than one plain attempt did.
fn answered(mut res: reqwest::Response, info: RetryInfo) -> reqwest::Response {
    if info.attempts() > 1 || info.stopped().is_some() {
        res.extensions_mut().insert(info);
    }
    res
}

/// The error the caller gets: the last real failure, with the attempts made.
fn failed(err: Error, info: RetryInfo) -> reqwest_middleware::Error {
    let mut err = err.with_attempts(info.attempts());
    err.extensions_mut().insert(info);
    reqwest_middleware::Error::middleware(err)
}
