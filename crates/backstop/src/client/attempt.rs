//! [`Attempt`]: one attempt of a client call, admitted, classified and bounded in one future.
//!
//! The rules are those of four layers a user can stack alone — `CircuitBreakerLayer`,
//! `ClassifyLayer`, `AttemptTimeoutLayer` and `BodyIdleTimeoutLayer` — applied here by one
//! service, one future and one body wrapper. Stacked, each of them receives the response from
//! the layer below, takes it apart (or reads it again) and hands it on; composed, the response
//! is built once, the breaker records the outcome the classification just made (rather than
//! looking it up in the response's extensions), and the glue of three futures and one body
//! wrapper is not run on every call. The breaker is the layer's own, through its
//! [`Gate`]: the same rules, keys and breakers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_breaker::{Authority, Gate, PerAuthority, Permit, RequestHead};
use backstop_classify::{BoxError, Classify, Error, Failure, HttpPolicy, Kind, Outcome, Phase};
use backstop_deadline::{AttemptBound, AttemptBounds};
use backstop_timeout::IdleBody;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

use super::host::HostHeader;

/// Admits each attempt through its host's circuit breaker (when the client has breakers),
/// classifies its answer with [`HttpPolicy`] (its [`Outcome`] in the response's extensions,
/// errors as [`Error`]s) and records that outcome with the breaker, bounds it by the attempt
/// timeout and the deadline ([`AttemptBounds`]) until its head arrives, and its body by the
/// idle period.
#[derive(Clone, Debug)]
pub(super) struct Attempt<S> {
    inner: S,
    policy: HttpPolicy,
    bounds: AttemptBounds,
    body_idle: Duration,
    breaker: Option<Gate<PerAuthority>>,
    host: HostHeader,
}

impl<S> Attempt<S> {
    pub(super) fn new(
        inner: S,
        policy: HttpPolicy,
        bounds: AttemptBounds,
        body_idle: Duration,
        breaker: Option<Gate<PerAuthority>>,
        host: HostHeader,
    ) -> Self {
        Attempt {
            inner,
            policy,
            bounds,
            body_idle,
            breaker,
            host,
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Attempt<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<IdleBody<ResBody>>;
    type Error = Error;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Local))
    }

    // Always inlined into the layer outside, which builds the future where it keeps it.
    #[inline(always)]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The breaker first, as when it is stacked outside: a rejected call starts no timer.
        let permit = match &mut self.breaker {
            Some(gate) => match gate.admit(&RequestHead::of(&req)) {
                Ok(permit) => Some(permit),
                Err(rejected) => {
                    return AttemptFuture {
                        state: State::Failed {
                            failure: rejected.failure(),
                            permit: None,
                        },
                    };
                }
            },
            None => None,
        };
        match self.bounds.start(&mut req) {
            Ok(bound) => AttemptFuture {
                state: State::Running {
                    inner: {
                        self.host.write(&mut req);
                        self.inner.call(req)
                    },
                    bound,
                    policy: self.policy.clone(),
                    body_idle: self.body_idle,
                    permit,
                },
            },
            // Admitted, then out of time before it left: the breaker judges that failure, as
            // it would the error of the layers inside it.
            Err(failure) => AttemptFuture {
                state: State::Failed { failure, permit },
            },
        }
    }
}

pin_project! {
    /// The future of [`Attempt`].
    #[derive(Debug)]
    pub(super) struct AttemptFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[derive(Debug)]
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            bound: AttemptBound,
            policy: HttpPolicy,
            body_idle: Duration,
            // The breaker's admission, recorded with the outcome; `None` without breakers (or
            // for a call let through unrecorded). Dropped unrecorded when the attempt is.
            permit: Option<Permit<Authority>>,
        },
        Failed {
            failure: Failure,
            permit: Option<Permit<Authority>>,
        },
        Done,
    }
}

impl<F, ResBody, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<IdleBody<ResBody>>, Error>;

    // Always inlined into the layer outside: the response is built once, where that layer
    // reads it.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let (error, permit) = match state.as_mut().project() {
            StateProj::Running {
                inner,
                bound,
                policy,
                body_idle,
                permit,
            } => match inner.poll(cx) {
                Poll::Ready(Ok(mut res)) => {
                    let outcome = policy.classify_response(res.status(), res.headers());
                    if let Some(permit) = permit.take() {
                        permit.record(&outcome);
                    }
                    res.extensions_mut().insert(outcome);
                    let period = *body_idle;
                    return Poll::Ready(Ok(res.map(|body| IdleBody::new(body, period))));
                }
                Poll::Ready(Err(err)) => (Error::classify(err, Phase::AwaitHeaders), permit.take()),
                // The request may have reached the peer: an attempt timeout is retryable only
                // for idempotent requests.
                Poll::Pending => match bound.poll_expired(cx) {
                    Poll::Ready(err) => (err, permit.take()),
                    Poll::Pending => return Poll::Pending,
                },
            },
            StateProj::Failed { failure, permit } => (Error::from_failure(*failure), permit.take()),
            StateProj::Done => (Error::new(Kind::Other, Phase::Local), None),
        };
        if let Some(permit) = permit {
            permit.record(&Outcome::Failure(error.failure()));
        }
        // Dropping the inner future here is what cancels an attempt that ran out of time.
        state.set(State::Done);
        Poll::Ready(Err(error))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use backstop_breaker::{CircuitBreakerLayer, State as BreakerState};

    use backstop_classify::{Outcome, Timer};
    use backstop_deadline::AttemptTimeoutLayer;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use super::*;

    fn attempt<S>(inner: S, timeout: Duration) -> Attempt<S> {
        with_breaker(inner, timeout, None)
    }

    fn with_breaker<S>(inner: S, timeout: Duration, breaker: Option<Gate>) -> Attempt<S> {
        let bounds = AttemptTimeoutLayer::new(timeout).bounds();
        Attempt::new(
            inner,
            HttpPolicy::new(),
            bounds,
            Duration::from_secs(30),
            breaker,
            HostHeader::new(true),
        )
    }

    /// Sets its flag when dropped: the attempt's inner future.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_response_carries_its_outcome_and_its_body_passes_through() {
        let svc = attempt(
            tower::service_fn(|_req: Request<()>| async {
                let mut res = Response::new(Full::new(bytes::Bytes::from_static(b"busy")));
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, std::io::Error>(res)
            }),
            Duration::from_secs(5),
        );
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let outcome = Outcome::of(res.extensions()).copied();
        assert_eq!(
            outcome
                .as_ref()
                .and_then(Outcome::failure)
                .map(|f| f.kind()),
            Some(Kind::Status(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "busy");
    }

    #[tokio::test]
    async fn an_attempt_out_of_time_fails_retryably_and_drops_its_request_at_once() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let svc = attempt(
            tower::service_fn(move |_req: Request<()>| {
                let guard = DropFlag(flag.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<Result<Response<Full<bytes::Bytes>>, std::io::Error>>()
                        .await
                }
            }),
            // Nothing to wait for: the first wait ends the attempt.
            Duration::ZERO,
        );
        let mut future = std::pin::pin!(svc.oneshot(Request::new(())));
        let err = std::future::poll_fn(|cx| future.as_mut().poll(cx))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
        assert_eq!(err.phase(), Phase::AwaitHeaders);
        assert!(err.failure().may_retry(true) && !err.failure().may_retry(false));
        assert!(dropped.load(Ordering::SeqCst), "cancelled when it failed");
    }

    fn gated<S>(inner: S, timeout: Duration, breaker: &CircuitBreakerLayer) -> Attempt<S> {
        with_breaker(inner, timeout, Some(breaker.gate()))
    }

    fn two_failures_trip() -> CircuitBreakerLayer {
        CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .no_failure_rate()
            .build()
            .unwrap()
    }

    /// An attempt through `breaker` whose answer never comes: it times out after 10 ms.
    fn hanging(
        breaker: &CircuitBreakerLayer,
    ) -> Attempt<
        impl Service<Request<()>, Response = Response<Full<bytes::Bytes>>, Error = std::io::Error>
        + Clone,
    > {
        gated(
            tower::service_fn(|_req: Request<()>| {
                std::future::pending::<Result<Response<Full<bytes::Bytes>>, std::io::Error>>()
            }),
            Duration::from_millis(10),
            breaker,
        )
    }

    fn get() -> Request<()> {
        Request::get("http://api.internal/").body(()).unwrap()
    }

    fn state(breaker: &CircuitBreakerLayer) -> Vec<BreakerState> {
        breaker
            .breakers()
            .snapshots()
            .into_iter()
            .map(|(_, snapshot)| snapshot.state)
            .collect()
    }

    /// The breaker records the outcome the attempt classified: two 503s open it, and the next
    /// attempt is refused before it reaches the inner service.
    #[tokio::test]
    async fn classified_statuses_trip_the_breaker_and_a_refused_attempt_never_leaves() {
        let breaker = two_failures_trip();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let svc = gated(
            tower::service_fn(move |_req: Request<()>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    let mut res = Response::new(Full::new(bytes::Bytes::new()));
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    Ok::<_, std::io::Error>(res)
                }
            }),
            Duration::from_secs(5),
            &breaker,
        );
        for _ in 0..2 {
            let res = svc.clone().oneshot(get()).await.unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(state(&breaker), [BreakerState::Open]);
        let err = svc.clone().oneshot(get()).await.unwrap_err();
        assert_eq!((err.kind(), err.phase()), (Kind::BreakerOpen, Phase::Local));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the refused attempt never left"
        );
    }

    /// Attempts that run out of time are failures to the breaker, as they are when it is
    /// stacked outside the attempt timeout; successes keep it closed.
    #[tokio::test]
    async fn attempts_out_of_time_are_failures_and_successes_keep_it_closed() {
        let breaker = two_failures_trip();
        let ok = gated(
            tower::service_fn(|_req: Request<()>| async {
                Ok::<_, std::io::Error>(Response::new(Full::new(bytes::Bytes::new())))
            }),
            Duration::from_secs(5),
            &breaker,
        );
        let hang = hanging(&breaker);
        ok.clone().oneshot(get()).await.unwrap();
        let err = hang.clone().oneshot(get()).await.unwrap_err();
        assert_eq!(err.kind(), Kind::TimedOut(Timer::Attempt));
        ok.clone().oneshot(get()).await.unwrap();
        // A success in between ended the run of failures.
        hang.clone().oneshot(get()).await.unwrap_err();
        assert_eq!(state(&breaker), [BreakerState::Closed]);
        hang.clone().oneshot(get()).await.unwrap_err();
        assert_eq!(state(&breaker), [BreakerState::Open]);
    }

    /// An attempt dropped before its answer (cancelled) records nothing; one that ends is
    /// counted.
    #[tokio::test]
    async fn a_cancelled_attempt_records_nothing() {
        let breaker = CircuitBreakerLayer::builder().build().unwrap();
        let hang = hanging(&breaker);
        let calls = || breaker.breakers().snapshots()[0].1.calls;
        let mut cancelled = Box::pin(hang.clone().oneshot(get()));
        assert!(futures_poll_once(cancelled.as_mut()).is_pending());
        drop(cancelled);
        assert_eq!(calls(), 0);
        hang.clone().oneshot(get()).await.unwrap_err();
        assert_eq!(calls(), 1);
    }

    fn futures_poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn an_inner_error_is_classified_as_awaiting_headers() {
        let svc = attempt(
            tower::service_fn(|_req: Request<()>| async {
                Err::<Response<Full<bytes::Bytes>>, _>(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))
            }),
            Duration::from_secs(5),
        );
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), Kind::Reset);
        assert_eq!(err.phase(), Phase::AwaitHeaders);
    }
}
