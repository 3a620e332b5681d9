//! [`ServiceBuilderExt`]: backstop's layers as `tower::ServiceBuilder` methods.

use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, PerAuthority};
use backstop_classify::{ClassifyLayer, ConfigError, HttpPolicy};
use backstop_deadline::{AttemptTimeoutLayer, DeadlineLayer};
use backstop_retry::RetryLayer;
use backstop_timeout::BodyIdleTimeoutLayer;
use tower::ServiceBuilder;
use tower::layer::util::Stack;

/// backstop's layers as `ServiceBuilder` methods, so any `Service<http::Request<B>>` — your own
/// hyper-util client, a tonic channel — gets the same rules.
///
/// Call them in the documented order, outermost first: deadline → retry → breaker → classify →
/// attempt timeout → body idle timeout → the client.
///
/// ```
/// use std::time::Duration;
/// use backstop::ServiceBuilderExt;
/// use backstop::retry::ReplayBody;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), backstop::ConfigError> {
/// let hyper_client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
/// let client = ServiceBuilder::new()
///     .deadline(Duration::from_secs(5))?
///     .retry_safely(backstop::retry::RetryLayer::new())
///     .circuit_breaker(backstop::breaker::CircuitBreakerLayer::new())
///     .classify()
///     .attempt_timeout(Duration::from_secs(2))?
///     .body_idle_timeout(Duration::from_secs(10))?
///     .service(hyper_client);
/// # drop(client);
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: Sized {
    /// One ceiling over the whole call, retries included (see [`DeadlineLayer`]).
    fn deadline(
        self,
        timeout: Duration,
    ) -> Result<ServiceBuilder<Stack<DeadlineLayer, L>>, ConfigError>;

    /// Safe retries (see [`RetryLayer`]); build one with `RetryLayer::builder()` to tune it.
    /// (Not `retry`: that name is tower's own `ServiceBuilder::retry`, which would win.)
    fn retry_safely<P>(self, layer: RetryLayer<P>) -> ServiceBuilder<Stack<RetryLayer<P>, L>>;

    /// A circuit breaker per host (see [`CircuitBreakerLayer`]).
    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer<PerAuthority>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<PerAuthority>, L>>;

    /// Classifies responses and errors with the default [`HttpPolicy`] (see [`ClassifyLayer`]).
    fn classify(self) -> ServiceBuilder<Stack<ClassifyLayer<HttpPolicy>, L>>;

    /// Bounds each attempt (see [`AttemptTimeoutLayer`]).
    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> Result<ServiceBuilder<Stack<AttemptTimeoutLayer, L>>, ConfigError>;

    /// Fails a response body that stalls for `period` (see [`BodyIdleTimeoutLayer`]).
    fn body_idle_timeout(
        self,
        period: Duration,
    ) -> Result<ServiceBuilder<Stack<BodyIdleTimeoutLayer, L>>, ConfigError>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn deadline(
        self,
        timeout: Duration,
    ) -> Result<ServiceBuilder<Stack<DeadlineLayer, L>>, ConfigError> {
        Ok(self.layer(DeadlineLayer::builder().timeout(timeout).build()?))
    }

    fn retry_safely<P>(self, layer: RetryLayer<P>) -> ServiceBuilder<Stack<RetryLayer<P>, L>> {
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

    fn attempt_timeout(
        self,
        timeout: Duration,
    ) -> Result<ServiceBuilder<Stack<AttemptTimeoutLayer, L>>, ConfigError> {
        Ok(self.layer(AttemptTimeoutLayer::builder().timeout(timeout).build()?))
    }

    fn body_idle_timeout(
        self,
        period: Duration,
    ) -> Result<ServiceBuilder<Stack<BodyIdleTimeoutLayer, L>>, ConfigError> {
        Ok(self.layer(BodyIdleTimeoutLayer::new(period)?))
    }
}
