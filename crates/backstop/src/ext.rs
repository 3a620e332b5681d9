//! [`ServiceBuilderExt`]: backstop's layers as `tower::ServiceBuilder` methods.

use backstop_breaker::{CircuitBreakerLayer, PerAuthority};
use backstop_classify::{ClassifyLayer, HttpPolicy};
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer};
use backstop_retry::RetryLayer;
use backstop_timeout::BodyIdleTimeoutLayer;
use tower::ServiceBuilder;
use tower::layer::util::Stack;

/// backstop's layers as `ServiceBuilder` methods, so any `Service<http::Request<B>>` — your own
/// hyper-util client, a tonic `Channel` — gets the same rules.
///
/// For gRPC, classify with [`classify_with`](ServiceBuilderExt::classify_with)`(GrpcPolicy)`
/// (the HTTP policy of [`classify`](ServiceBuilderExt::classify) takes a trailers-only gRPC error
/// for a `200` success), say which methods may be retried after the server processed them with
/// `RetryLayer::builder().grpc_methods(…)`, and, under tonic's `Channel` (which takes only
/// `tonic::body::Body`), turn the retry layer's replay body back into one at the bottom of the
/// stack: `.map_request(|r: http::Request<_>| r.map(tonic::body::Body::new))`. backstop-retry's
/// `tests/grpc.rs` and `examples/grpc.rs` run that stack against a real tonic server.
///
/// Call them in the documented order, outermost first: deadline → retry → breaker → classify →
/// attempt timeout → body idle timeout → the client.
///
/// Each method adds one layer and returns the `ServiceBuilder`, so the chain never stops for a
/// `?`: the layers whose settings can be invalid are built (and their settings checked) before
/// it. The trait is sealed: only `ServiceBuilder` implements it, so methods can be added without
/// breaking anyone.
///
/// ```
/// use std::time::Duration;
/// use backstop::ServiceBuilderExt;
/// use backstop::breaker::CircuitBreakerLayer;
/// use backstop::deadline::{AttemptTimeoutLayer, DeadlineLayer};
/// use backstop::retry::{ReplayBody, RetryLayer};
/// use backstop::timeout::BodyIdleTimeoutLayer;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), backstop::ConfigError> {
/// let deadline = DeadlineLayer::builder().timeout(Duration::from_secs(5)).build()?;
/// let attempt = AttemptTimeoutLayer::builder().timeout(Duration::from_secs(2)).build()?;
/// let body_idle = BodyIdleTimeoutLayer::try_new(Duration::from_secs(10))?;
///
/// let hyper_client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
/// let client = ServiceBuilder::new()
///     .deadline(deadline)
///     .retry_classified(RetryLayer::new())
///     .circuit_breaker(CircuitBreakerLayer::new())
///     .classify()
///     .attempt_timeout(attempt)
///     .body_idle_timeout(body_idle)
///     .service(hyper_client);
/// # drop(client);
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// One ceiling over the whole call, retries included (see [`DeadlineLayer`]).
    fn deadline(self, layer: DeadlineLayer) -> ServiceBuilder<Stack<DeadlineLayer, L>>;

    /// Retries the attempts that failed in a way classified as retryable: any method when the
    /// request was never sent, idempotent (or keyed) ones after a `5xx`, a reset…, with
    /// backoff, a budget and the request body replayed (see [`RetryLayer`]; build one with
    /// `RetryLayer::builder()` to tune it).
    ///
    /// Not `retry`: `ServiceBuilder` has a method of that name (tower's retry, driven by a
    /// policy you write), which would win.
    fn retry_classified<P>(self, layer: RetryLayer<P>) -> ServiceBuilder<Stack<RetryLayer<P>, L>>;

    /// A circuit breaker per host (see [`CircuitBreakerLayer`]).
    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer<PerAuthority>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<PerAuthority>, L>>;

    /// Classifies responses and errors with the default [`HttpPolicy`] (see [`ClassifyLayer`]).
    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer<HttpPolicy>, L>>;

    /// Classifies responses and errors with `policy`: `GrpcPolicy` for gRPC (status in the
    /// headers of a trailers-only answer or in the trailers), or your own [`Classify`].
    ///
    /// [`Classify`]: backstop_classify::Classify
    fn classify_with<P>(self, policy: P) -> ServiceBuilder<Stack<ClassifyLayer<P>, L>>;

    /// Bounds each attempt (see [`AttemptTimeoutLayer`]).
    fn attempt_timeout(
        self,
        layer: AttemptTimeoutLayer,
    ) -> ServiceBuilder<Stack<AttemptTimeoutLayer, L>>;

    /// Fails a response body that stalls for the layer's period (see [`BodyIdleTimeoutLayer`]).
    fn body_idle_timeout(
        self,
        layer: BodyIdleTimeoutLayer,
    ) -> ServiceBuilder<Stack<BodyIdleTimeoutLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn deadline(self, layer: DeadlineLayer) -> ServiceBuilder<Stack<DeadlineLayer, L>> {
        self.layer(layer)
    }

    fn retry_classified<P>(self, layer: RetryLayer<P>) -> ServiceBuilder<Stack<RetryLayer<P>, L>> {
        self.layer(layer)
    }

    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer<PerAuthority>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<PerAuthority>, L>> {
        self.layer(layer)
    }

    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer<HttpPolicy>, L>> {
        self.layer(ClassifyLayer::new())
    }

    fn classify_with<P>(self, policy: P) -> ServiceBuilder<Stack<ClassifyLayer<P>, L>> {
        self.layer(ClassifyLayer::with_policy(policy))
    }

    fn attempt_timeout(
        self,
        layer: AttemptTimeoutLayer,
    ) -> ServiceBuilder<Stack<AttemptTimeoutLayer, L>> {
        self.layer(layer)
    }

    fn body_idle_timeout(
        self,
        layer: BodyIdleTimeoutLayer,
    ) -> ServiceBuilder<Stack<BodyIdleTimeoutLayer, L>> {
        self.layer(layer)
    }
}

mod sealed {
    /// Only `ServiceBuilder` implements [`ServiceBuilderExt`](super::ServiceBuilderExt).
    #[allow(unreachable_pub)]
    pub trait Sealed<L> {}

    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}
