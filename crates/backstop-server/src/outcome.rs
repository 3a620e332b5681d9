//! [`OutcomeLayer`]: classifies every response a server sends, for metrics and logs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use backstop_classify::{Classify, HttpPolicy, Kind, Outcome};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Counts of what a server answered, shared by every service made from one [`OutcomeLayer`].
#[derive(Debug, Default)]
pub struct OutcomeCounts {
    success: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    shed: AtomicU64,
    timed_out: AtomicU64,
}

impl OutcomeCounts {
    /// Responses classified as successes.
    pub fn success(&self) -> u64 {
        self.success.load(Ordering::Relaxed)
    }

    /// 4xx answers (the caller's fault), except 408 and 429.
    pub fn client_errors(&self) -> u64 {
        self.client_errors.load(Ordering::Relaxed)
    }

    /// 5xx answers, except shed (503 + `Retry-After`) and timed-out (504) ones.
    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    /// Requests shed under overload (503 with `Retry-After`) or rate limited (429).
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Requests whose deadline expired (504, 408).
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// Classifies each response with [`HttpPolicy`], stores the [`Outcome`] in its extensions, counts
/// it in [`OutcomeCounts`], and logs failures at debug with the request's method and path.
#[derive(Debug, Clone, Default)]
pub struct OutcomeLayer {
    counts: Arc<OutcomeCounts>,
    policy: HttpPolicy,
}

impl OutcomeLayer {
    /// A layer with fresh counters.
    pub fn new() -> OutcomeLayer {
        OutcomeLayer::default()
    }

    /// The counters, for a metrics endpoint.
    pub fn counts(&self) -> Arc<OutcomeCounts> {
        Arc::clone(&self.counts)
    }
}

impl<S> Layer<S> for OutcomeLayer {
    type Service = OutcomeService<S>;

    fn layer(&self, inner: S) -> OutcomeService<S> {
        OutcomeService {
            inner,
            counts: Arc::clone(&self.counts),
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`OutcomeLayer`].
#[derive(Debug, Clone)]
pub struct OutcomeService<S> {
    inner: S,
    counts: Arc<OutcomeCounts>,
    policy: HttpPolicy,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OutcomeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = OutcomeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        OutcomeFuture {
            inner: self.inner.call(req),
            counts: Arc::clone(&self.counts),
            policy: self.policy.clone(),
        }
    }
}

pin_project! {
    /// The future of [`OutcomeService`].
    #[derive(Debug)]
    pub struct OutcomeFuture<F> {
        #[pin]
        inner: F,
        counts: Arc<OutcomeCounts>,
        policy: HttpPolicy,
    }
}

impl<F, B, E> Future for OutcomeFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let outcome = this.policy.classify_response(res.status(), res.headers());
        let counter = match outcome.failure().map(|f| f.kind()) {
            None => &this.counts.success,
            Some(Kind::Status(StatusCode::TOO_MANY_REQUESTS)) => &this.counts.shed,
            Some(Kind::Status(StatusCode::SERVICE_UNAVAILABLE))
                if res.headers().contains_key(http::header::RETRY_AFTER) =>
            {
                &this.counts.shed
            }
            Some(Kind::Status(StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT)) => {
                &this.counts.timed_out
            }
            Some(Kind::Status(status)) if status.is_client_error() => &this.counts.client_errors,
            Some(_) => &this.counts.server_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Outcome::Failure(failure) = outcome {
            tracing::debug!(status = res.status().as_u16(), %failure, "answered with a failure");
        }
        res.extensions_mut().insert(outcome);
        Poll::Ready(Ok(res))
    }
}
