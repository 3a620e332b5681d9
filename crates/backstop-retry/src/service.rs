//! [`RetryService`]: the first attempt of every call, on the service's own inner instance.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use backstop_classify::{BoxError, Classify, Error, HttpPolicy, Phase};
use http::{HeaderValue, Request, Response};
use tower_service::Service;

use crate::future::{AttemptState, ResponseFuture};
use crate::idempotency::attach_idempotency_key;
use crate::info::{MAX_ATTEMPTS_LIMIT, RetryOverride};
use crate::layer::Config;
use crate::replay::{BufferedReplay, ReplayStrategy};
use crate::telemetry::{HostMetrics, attempt_span};

/// The service made by [`RetryLayer`](crate::RetryLayer); `R` is its
/// [`ReplayStrategy`](crate::ReplayStrategy).
pub struct RetryService<S, P = HttpPolicy, R = BufferedReplay> {
    inner: S,
    shared: Arc<Shared<S, P>>,
    replay: PhantomData<fn() -> R>,
}

/// What a service and its futures share: one reference count per call for both.
pub(crate) struct Shared<S, P> {
    pub(crate) config: Arc<Config<P>>,
    /// An instance of the inner service for retries, cloned from only when a retry happens: the
    /// first attempt uses the service's own instance, so a call that needs no retry clones no
    /// service (a whole client stack below costs a dozen reference counts and an allocation to
    /// clone).
    pub(crate) spare: Mutex<S>,
}

impl<S: Clone, P, R> Clone for RetryService<S, P, R> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            replay: PhantomData,
        }
    }
}

impl<S: fmt::Debug, P, R> fmt::Debug for RetryService<S, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S, P, R> RetryService<S, P, R> {
    pub(crate) fn new(inner: S, config: Arc<Config<P>>) -> RetryService<S, P, R>
    where
        S: Clone,
    {
        RetryService {
            shared: Arc::new(Shared {
                config,
                spare: Mutex::new(inner.clone()),
            }),
            inner,
            replay: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

const ATTEMPT_VALUES: [&str; MAX_ATTEMPTS_LIMIT as usize] =
    ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

/// The value of the attempt header for attempt `attempt` (from 1), without allocating.
pub(crate) fn attempt_value(attempt: u32) -> HeaderValue {
    let index = (attempt.max(1) as usize - 1).min(ATTEMPT_VALUES.len() - 1);
    HeaderValue::from_static(ATTEMPT_VALUES[index])
}

impl<S, P, R, B, ResBody> Service<Request<B>> for RetryService<S, P, R>
where
    R: ReplayStrategy<B>,
    S: Service<Request<R::Body>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    P: Classify,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S, B, P, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| classify(&self.shared.config.policy, err.into(), Phase::Local))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &*self.shared.config;
        let (mut parts, body) = req.into_parts();
        let may_retry = (config.max_attempts > 1
            || config
                .grpc
                .as_ref()
                .is_some_and(|grpc| grpc.for_request(&parts).is_some()))
            && parts.extensions.get::<RetryOverride>() != Some(&RetryOverride::NeverRetry);
        if may_retry && config.attach_idempotency_key {
            attach_idempotency_key(config, &mut parts);
        }
        if let Some(name) = &config.attempt_header {
            parts.headers.insert(name.clone(), attempt_value(1));
        }
        if let Some(budget) = &config.budget {
            budget.deposit();
        }
        // Nothing without the `metrics` feature; the host's bounded label with it.
        let host = HostMetrics::of(&parts);
        host.attempt();
        let host_budget = match &config.per_host {
            Some(hosts) => {
                let budget = hosts.budget_for(&parts);
                budget.deposit();
                Some(budget)
            }
            None => None,
        };
        let (body, replay) = if may_retry {
            // Every request that may be retried keeps its bytes up to the limit, idempotent or
            // not: an HTTP/2 REFUSED_STREAM or a GOAWAY above the request's stream says the
            // server never processed it, which makes even a POST safe to send again (as gRPC
            // buffers every call it may retry) — after part of its body went out.
            let (body, kept) = R::keep(body, config.replay_limit);
            (body, Some(kept))
        } else {
            (R::once(body), None)
        };
        // Call the service that was made ready; a retry clones the spare instance, later.
        // The inner service gets the copy and the future keeps the original head. Each branch
        // builds the future itself: one fewer move of the head than a shared `Option`. The head
        // is the last field built, after the reference count's atomic increment, so that it is
        // moved straight from where it is into the future (not through a temporary: one 224-byte
        // copy fewer).
        let shared = self.shared.clone();
        macro_rules! future {
            ($future:expr, $parts:expr, $span:expr, $pending:expr) => {
                ResponseFuture {
                    state: AttemptState::Calling { future: $future },
                    service: None,
                    shared,
                    replay,
                    retries: None,
                    host_budget,
                    span: $span,
                    span_pending: $pending,
                    host,
                    parts: $parts,
                }
            };
        }
        if may_retry {
            // The first attempt's span is opened when the future is first polled, under the span
            // current then (the caller's), from the retained head.
            let future = self.inner.call(Request::from_parts(parts.clone(), body));
            future!(future, Some(parts), None, true)
        } else {
            // The head is not kept: the span is opened now, while the head is at hand.
            let span = attempt_span(&parts, None);
            let future = match &span {
                Some(span) => {
                    let _entered = span.enter();
                    self.inner.call(Request::from_parts(parts, body))
                }
                None => self.inner.call(Request::from_parts(parts, body)),
            };
            future!(future, None, span, false)
        }
    }
}

/// A failure of the inner service as a backstop [`Error`]: ours as it is, another judged by the
/// layer's policy.
pub(crate) fn classify<P: Classify>(policy: &P, err: BoxError, phase_hint: Phase) -> Error {
    match err.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => {
            Error::from_failure(policy.classify_error(&*other, phase_hint)).with_source(other)
        }
    }
}
