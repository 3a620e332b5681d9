//! [`ResponseFuture`]: one attempt, then perhaps a delay and another — the retry state machine.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use backstop_classify::{
    BoxError, Classify, DEFAULT_RETRY_AFTER_CAP, Error, Failure, Kind, Outcome, Phase, Pushback,
    parse_grpc_pushback,
};
use backstop_deadline::Deadline;
use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;
use tracing::Span;

use crate::budget::RetryBudget;
use crate::decide::{GrpcCall, Verdict, decide, log_not_replayed};
use crate::idempotency::is_idempotent;
use crate::info::{RetryInfo, StopReason};
use crate::layer::Config;
use crate::random::NO_STREAM;
use crate::replay::{BufferedReplay, NEVER, NotReplayable, ReplayStrategy};
use crate::service::{Shared, attempt_value, classify};
use crate::telemetry::{self, HostMetrics, attempt_span, record_answer};

pin_project! {
    #[project = AttemptProj]
    pub(crate) enum AttemptState<F, B> {
        Calling { #[pin] future: F },
        // Boxed: a timer is only needed once a retry is due, and it would otherwise double the
        // size of every request's future.
        Waiting { sleep: Option<Pin<Box<Sleep>>>, body: Option<B> },
    }
}

pin_project! {
    /// The future of [`RetryService`](crate::RetryService): one attempt, then perhaps a delay and another.
    pub struct ResponseFuture<S, B, P, R = BufferedReplay>
    where
        R: ReplayStrategy<B>,
        S: Service<Request<R::Body>>,
    {
        // The retained request head, `None` when the request may not be retried.
        pub(crate) parts: Option<Parts>,
        #[pin]
        pub(crate) state: AttemptState<S::Future, R::Body>,
        // The instance retries call, cloned from the spare at the first retry. Boxed: a whole
        // stack instance is large, and most requests never retry, yet every request's future is
        // built and moved with this field in it.
        pub(crate) service: Option<Box<S>>,
        pub(crate) shared: Arc<Shared<S, P>>,
        // What the strategy keeps to make a retry's body, `None` when the request may not be
        // retried.
        pub(crate) replay: Option<R::Kept>,
        // Boxed, and made at the first retry: most requests never need it.
        pub(crate) retries: Option<Box<Retries>>,
        pub(crate) host_budget: Option<RetryBudget>,
        // The current attempt's `http.client.attempt` span, entered around every poll of the
        // attempt; `None` between attempts and when no subscriber listens.
        pub(crate) span: Option<Span>,
        // The first attempt's span is still to be opened, at the first poll.
        pub(crate) span_pending: bool,
        // The call's host label for metrics (nothing without the `metrics` feature).
        pub(crate) host: HostMetrics,
    }
}

// === impl ResponseFuture ===

impl<S, B, P, R, ResBody> Future for ResponseFuture<S, B, P, R>
where
    R: ReplayStrategy<B>,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: Classify,
{
    type Output = Result<Response<ResBody>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let AttemptProj::Calling { future } = this.state.as_mut().project() else {
                if let Err(err) = ready!(self.as_mut().poll_waiting(cx)) {
                    return Poll::Ready(Err(err));
                }
                continue;
            };
            if *this.span_pending {
                // The first attempt, polled for the first time, its head kept.
                *this.span_pending = false;
                if let Some(span) = this.parts.as_ref().and_then(|p| attempt_span(p, None)) {
                    *this.span = Some(span);
                }
            }
            let entered = this.span.as_ref().map(Span::enter);
            // Each arm leaves the span first: the attempt is over, and its span closes (taken
            // below) before any delay or retry event.
            let (result, failure) = match ready!(future.poll(cx)) {
                Ok(mut res) => match response_failure(&this.shared.config.policy, &res) {
                    None => {
                        drop(entered);
                        if this.span.is_some() {
                            record_answer(this.span.take(), Some(res.status()), None);
                        }
                        if let Some(retries) = this.retries {
                            res.extensions_mut().insert(retries.info);
                        }
                        return Poll::Ready(Ok(res));
                    }
                    Some(failure) => {
                        drop(entered);
                        let span = this.span.take();
                        record_answer(span, Some(res.status()), Some(&failure));
                        (Ok(res), failure)
                    }
                },
                Err(err) => {
                    drop(entered);
                    let err = classify(&this.shared.config.policy, err.into(), Phase::AwaitHeaders);
                    let failure = err.failure();
                    record_answer(this.span.take(), None, Some(&failure));
                    (Err(err), failure)
                }
            };
            if let Some(output) = self.as_mut().failed(result, &failure) {
                return Poll::Ready(output);
            }
        }
    }
}

impl<S, B, P, R, ResBody> ResponseFuture<S, B, P, R>
where
    R: ReplayStrategy<B>,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: Classify,
{
    /// After a failed attempt: waits for the next one, or gives the caller its result.
    ///
    /// Out of line, as is [`poll_waiting`](Self::poll_waiting): the first attempt's poll is
    /// every call's path, and what only a retry needs would otherwise widen its stack frame,
    /// under which every poll of the layers below runs.
    #[cold]
    #[inline(never)]
    fn failed(
        self: Pin<&mut Self>,
        result: Result<Response<ResBody>, Error>,
        failure: &Failure,
    ) -> Option<Result<Response<ResBody>, Error>> {
        let mut this = self.project();
        let (body, delay) = match next_attempt::<P, B, R, ResBody>(
            &this.shared.config,
            this.parts.as_ref(),
            this.replay,
            this.retries,
            this.host_budget.as_ref(),
            this.host,
            result,
            failure,
        ) {
            Ok(next) => next,
            Err(output) => return Some(output),
        };
        let sleep = (!delay.is_zero()).then(|| Box::pin(tokio::time::sleep(delay)));
        this.state.set(AttemptState::Waiting {
            sleep,
            body: Some(body),
        });
        None
    }

    /// Waits out the delay before a retry, then calls the next attempt.
    #[cold]
    #[inline(never)]
    fn poll_waiting(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut this = self.project();
        let AttemptProj::Waiting { sleep, body } = this.state.as_mut().project() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(timer) = sleep {
            ready!(timer.as_mut().poll(cx));
            *sleep = None;
        }
        if this.service.is_none() {
            let spare = match this.shared.spare.lock() {
                Ok(spare) => S::clone(&spare),
                Err(poisoned) => S::clone(&poisoned.into_inner()),
            };
            *this.service = Some(Box::new(spare));
        }
        let Some(service) = this.service.as_mut() else {
            return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
        };
        if let Err(err) = ready!(service.poll_ready(cx)) {
            let err = classify(&this.shared.config.policy, err.into(), Phase::Local);
            let info = this.retries.as_ref().map(|r| r.info).unwrap_or_default();
            return Poll::Ready(Err(record(err, &info)));
        }
        let (Some(parts), Some(body)) = (this.parts.as_ref(), body.take()) else {
            return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
        };
        let mut parts = parts.clone();
        let attempt = attempts(this.retries);
        if let Some(name) = &this.shared.config.attempt_header {
            parts.headers.insert(name.clone(), attempt_value(attempt));
        }
        let span = attempt_span(&parts, Some(attempt.saturating_sub(1)));
        this.host.attempt();
        let future = match &span {
            Some(span) => {
                let _entered = span.enter();
                service.call(Request::from_parts(parts, body))
            }
            None => service.call(Request::from_parts(parts, body)),
        };
        *this.span = span;
        this.state.set(AttemptState::Calling { future });
        Poll::Ready(Ok(()))
    }
}

// === after a failed attempt: the next one, or the caller's result ===

/// The failure a response stands for: the [`Outcome`] a classifier left in it, or the policy's
/// verdict when there is none.
#[inline]
fn response_failure<P: Classify, R>(policy: &P, res: &Response<R>) -> Option<Failure> {
    match Outcome::of(res.extensions()) {
        Some(Outcome::Success) => None,
        Some(Outcome::Failure(failure)) => Some(*failure),
        None => match policy.classify_response(res.status(), res.headers()) {
            Outcome::Success => None,
            Outcome::Failure(failure) => Some(failure),
        },
    }
}

/// The state of a request that has been retried.
pub(crate) struct Retries {
    info: RetryInfo,
    /// The request's stream of randomness, drawn at its first backoff.
    stream: u64,
    /// The retry from which the backoff counts again from its initial delay (0, or the retry
    /// after one timed by a gRPC pushback).
    backoff_restart: u32,
}

fn attempts(retries: &Option<Box<Retries>>) -> u32 {
    retries
        .as_ref()
        .map_or(1, |retries| retries.info.attempts())
}

/// After a failed attempt: the body of the next one and the delay before it, or what the caller
/// gets.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn next_attempt<P, B, R: ReplayStrategy<B>, ResBody>(
    config: &Config<P>,
    parts: Option<&Parts>,
    replay: &Option<R::Kept>,
    retries: &mut Option<Box<Retries>>,
    host_budget: Option<&RetryBudget>,
    host: &HostMetrics,
    result: Result<Response<ResBody>, Error>,
    failure: &Failure,
) -> Result<(R::Body, Duration), Result<Response<ResBody>, Error>> {
    let mut first = Retries {
        info: RetryInfo::default(),
        stream: NO_STREAM,
        backoff_restart: 0,
    };
    let state = match retries.as_deref_mut() {
        Some(state) => state,
        None => &mut first,
    };
    let Some(parts) = parts else {
        // Never retried: a single attempt was all it had, or an override said never.
        let reason = if config.max_attempts <= 1 {
            StopReason::AttemptsExhausted
        } else {
            StopReason::NotRetryable
        };
        return Err(stop(&mut state.info, reason, failure, host, result));
    };
    let grpc = config
        .grpc
        .as_ref()
        .and_then(|methods| methods.for_request(parts))
        .map(|method| GrpcCall {
            method,
            pushback_refused: result.as_ref().is_ok_and(pushback_refused),
        });
    let verdict = decide(
        config,
        failure,
        is_idempotent(parts, &config.idempotency_key),
        grpc,
        // The deadline travels ambiently (set by the deadline layer around every poll) or in
        // the retained request head; the earlier wins. Read only when a retry is considered.
        Deadline::current_in(&parts.extensions),
        &state.info,
        || can_replay::<B, R>(replay).is_ok(),
        &mut state.stream,
        &mut state.backoff_restart,
        host_budget,
    );
    let delay = match verdict {
        Verdict::Stop(reason) => {
            match reason {
                StopReason::BodyNotReplayable => {
                    log_not_replayed(can_replay::<B, R>(replay).err(), failure);
                }
                StopReason::BudgetExhausted => host.budget_rejection(),
                _ => {}
            }
            return Err(stop(&mut state.info, reason, failure, host, result));
        }
        Verdict::Retry(delay) => delay,
    };
    let body = match kept(replay).and_then(R::replay) {
        Ok(body) => body,
        Err(why) => {
            log_not_replayed(Some(why.reason()), failure);
            let reason = StopReason::BodyNotReplayable;
            return Err(stop(&mut state.info, reason, failure, host, result));
        }
    };
    // The failed response is dropped here, freeing its connection before the delay.
    drop(result);
    state.info.record_attempt(delay);
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    telemetry::retry_scheduled(failure, delay_ms, state.info.attempts() - 1);
    host.retry(failure);
    if retries.is_none() {
        *retries = Some(Box::new(first));
    }
    Ok((body, delay))
}

/// Whether the strategy can make a body for another attempt.
fn can_replay<B, R: ReplayStrategy<B>>(replay: &Option<R::Kept>) -> Result<(), &'static str> {
    kept(replay)
        .and_then(R::can_replay)
        .map_err(|why| why.reason())
}

/// What the strategy kept of the body; nothing when the request was never to be retried.
fn kept<K>(replay: &Option<K>) -> Result<&K, NotReplayable> {
    replay.as_ref().ok_or(NotReplayable::new(NEVER))
}

/// Whether the response's `grpc-retry-pushback-ms` says "do not retry" (negative or garbage).
fn pushback_refused<R>(res: &Response<R>) -> bool {
    res.headers()
        .get("grpc-retry-pushback-ms")
        .is_some_and(|value| {
            parse_grpc_pushback(value, DEFAULT_RETRY_AFTER_CAP) == Pushback::DoNotRetry
        })
}

fn finish<B>(mut res: Response<B>, info: &RetryInfo) -> Response<B> {
    if info.attempts() > 1 || info.stopped().is_some() {
        res.extensions_mut().insert(*info);
    }
    res
}

/// Records why the layer stopped (in `info`, an event and a metric) and returns what the caller
/// gets.
fn stop<R>(
    info: &mut RetryInfo,
    reason: StopReason,
    failure: &Failure,
    host: &HostMetrics,
    result: Result<Response<R>, Error>,
) -> Result<Response<R>, Error> {
    info.stop(reason);
    telemetry::retry_stopped(reason, failure, result.is_err());
    host.stopped(reason);
    stopped(result, info)
}

/// What the caller gets when the layer stops: the last response, or the last error with its
/// kind untouched (the real failure, not the reason retrying stopped), both carrying the record
/// of the call.
fn stopped<R>(result: Result<Response<R>, Error>, info: &RetryInfo) -> Result<Response<R>, Error> {
    match result {
        Ok(res) => Ok(finish(res, info)),
        Err(err) => Err(record(err, info)),
    }
}

/// Records the call's attempts and delays, and why it stopped, in an error.
#[cold]
fn record(mut err: Error, info: &RetryInfo) -> Error {
    err.extensions_mut().insert(*info);
    err.with_attempts(info.attempts())
}
