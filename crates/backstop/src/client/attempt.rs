//! [`Attempt`]: one attempt of a client call, classified and bounded in one future.
//!
//! The rules are those of three layers a user can stack alone — `ClassifyLayer`,
//! `AttemptTimeoutLayer` and `BodyIdleTimeoutLayer` — applied here by one service, one future
//! and one body wrapper. Stacked, each of the three receives the response from the layer below,
//! takes it apart around a new body and builds it again; composed, the response is built once,
//! and the glue of two futures and one body wrapper is not run on every call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_classify::{BoxError, Classify, Error, Failure, HttpPolicy, Kind, Phase};
use backstop_deadline::{AttemptBound, AttemptBounds};
use backstop_timeout::IdleBody;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

/// Classifies each attempt's answer with [`HttpPolicy`] (its [`Outcome`](backstop_classify::Outcome)
/// in the response's extensions, errors as [`Error`]s), bounds it by the attempt timeout and the
/// deadline ([`AttemptBounds`]) until its head arrives, and its body by the idle period.
#[derive(Clone, Debug)]
pub(super) struct Attempt<S> {
    inner: S,
    policy: HttpPolicy,
    bounds: AttemptBounds,
    body_idle: Duration,
}

impl<S> Attempt<S> {
    pub(super) fn new(
        inner: S,
        policy: HttpPolicy,
        bounds: AttemptBounds,
        body_idle: Duration,
    ) -> Self {
        Attempt {
            inner,
            policy,
            bounds,
            body_idle,
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
        match self.bounds.start(&mut req) {
            Ok(bound) => AttemptFuture {
                state: State::Running {
                    inner: self.inner.call(req),
                    bound,
                    policy: self.policy.clone(),
                    body_idle: self.body_idle,
                },
            },
            Err(failure) => AttemptFuture {
                state: State::Failed { failure },
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
        },
        Failed {
            failure: Failure,
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
        let error = match state.as_mut().project() {
            StateProj::Running {
                inner,
                bound,
                policy,
                body_idle,
            } => match inner.poll(cx) {
                Poll::Ready(Ok(mut res)) => {
                    let outcome = policy.classify_response(res.status(), res.headers());
                    res.extensions_mut().insert(outcome);
                    let period = *body_idle;
                    return Poll::Ready(Ok(res.map(|body| IdleBody::new(body, period))));
                }
                Poll::Ready(Err(err)) => Error::classify(err, Phase::AwaitHeaders),
                // The request may have reached the peer: an attempt timeout is retryable only
                // for idempotent requests.
                Poll::Pending => match bound.poll_expired(cx) {
                    Poll::Ready(err) => err,
                    Poll::Pending => return Poll::Pending,
                },
            },
            StateProj::Failed { failure } => Error::from_failure(*failure),
            StateProj::Done => Error::new(Kind::Other, Phase::Local),
        };
        // Dropping the inner future here is what cancels an attempt that ran out of time.
        state.set(State::Done);
        Poll::Ready(Err(error))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use backstop_classify::{Outcome, Timer};
    use backstop_deadline::AttemptTimeoutLayer;
    use http::StatusCode;
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use super::*;

    fn attempt<S>(inner: S, timeout: Duration) -> Attempt<S> {
        let bounds = AttemptTimeoutLayer::new(timeout).bounds();
        Attempt::new(inner, HttpPolicy::new(), bounds, Duration::from_secs(30))
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
