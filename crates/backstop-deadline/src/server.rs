//! The server [`ServerDeadlineLayer`]: reads how long the caller is still willing to wait, enforces it
//! on the handler, and makes it [ambient](mod@crate::ambient) for every backstop client the handler
//! calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::SIDE_SERVER;
use crate::propagate::{
    DEFAULT_TIMEOUT_HEADER, GRPC_TIMEOUT, Incoming, is_grpc, parse_grpc_timeout, parse_timeout_ms,
};
use crate::{Carry, ConfigError, Deadline, ambient};

/// The server's default deadline when the caller sends none: 30 s.
pub const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest deadline allowed by default: 2 min. It bounds the server's own deadline, and what
/// a caller may ask for when the server sets none of its own
/// ([`no_default_timeout`](ServerDeadlineLayerBuilder::no_default_timeout)).
pub const DEFAULT_SERVER_MAX: Duration = Duration::from_secs(120);

/// The longest [`max_timeout`](ServerDeadlineLayerBuilder::max_timeout) accepted: a year.
pub const MAX_SERVER_TIMEOUT: Duration = Duration::from_secs(86_400 * 365);

/// Enforces the caller's deadline on a server handler.
///
/// For each request it reads `grpc-timeout` and the milliseconds header(s) (by default
/// [`request-timeout-ms`](DEFAULT_TIMEOUT_HEADER)) and takes the shortest valid value. The server
/// has a deadline of its own — the default timeout (30 s unless set), or with
/// [`no_default_timeout`](ServerDeadlineLayerBuilder::no_default_timeout) the maximum — and a caller
/// can only ever *shorten* it, never extend it: a client sending `request-timeout-ms: 120000` or
/// `grpc-timeout: 99999S` gets the server's own deadline, not two minutes or a day, so it cannot
/// hold a handler (and its load-shed slot) longer than the server would on its own. Incoming
/// headers are untrusted: malformed values are ignored (logged at debug), zero or negative ones
/// are answered at once without calling the handler, absurd ones are clamped.
///
/// The handler then runs with the deadline in its request extensions and as the
/// [ambient](mod@crate::ambient) deadline, so any backstop client it calls inherits the time left. At
/// the deadline the handler future is dropped and the caller gets `504 Gateway Timeout`, or for
/// gRPC requests `200` with `grpc-status: 4` (`DEADLINE_EXCEEDED`); both configurable.
///
/// The deadline covers the handler until it returns the response head; the response body then
/// streams on its own.
///
/// ```
/// use std::time::Duration;
/// use backstop_deadline::{Deadline, ServerDeadlineLayer, ambient};
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = ServerDeadlineLayer::builder()
///     .default_timeout(Duration::from_secs(10))
///     .max_timeout(Duration::from_secs(60))
///     .build()?;
/// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<()>| async move {
///     // Any backstop client called here inherits this deadline.
///     assert_eq!(ambient::current(), Deadline::of(&req));
///     let left = ambient::current().map(|d| d.remaining().as_millis()).unwrap_or_default();
///     Ok::<_, std::convert::Infallible>(Response::new(left.to_string()))
/// }));
///
/// let req = Request::builder().header("request-timeout-ms", "1500").body(())?;
/// assert_eq!(svc.clone().oneshot(req).await?.into_body(), "1500");
/// // A caller cannot extend the server's own 10 s.
/// let longer = Request::builder().header("request-timeout-ms", "30000").body(())?;
/// assert_eq!(svc.clone().oneshot(longer).await?.into_body(), "10000");
/// let absurd = Request::builder().header("grpc-timeout", "99999999H").body(())?;
/// assert_eq!(svc.clone().oneshot(absurd).await?.into_body(), "10000");
/// let zero = Request::builder().header("request-timeout-ms", "0").body(())?;
/// assert_eq!(svc.oneshot(zero).await?.status(), 504);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ServerDeadlineLayer {
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    default: Option<Duration>,
    max: Duration,
    /// The server's own deadline, which a caller may only shorten: the default, or the maximum
    /// when there is no default. Set by `build`.
    ceiling: Duration,
    read_grpc_timeout: bool,
    headers: Vec<HeaderName>,
    expired_status: StatusCode,
    grpc_aware: bool,
    carry: Carry,
}

impl Default for ServerDeadlineLayer {
    fn default() -> Self {
        ServerDeadlineLayer {
            config: Arc::new(Config::default()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default: Some(DEFAULT_SERVER_TIMEOUT),
            max: DEFAULT_SERVER_MAX,
            ceiling: DEFAULT_SERVER_TIMEOUT,
            read_grpc_timeout: true,
            headers: vec![DEFAULT_TIMEOUT_HEADER],
            expired_status: StatusCode::GATEWAY_TIMEOUT,
            grpc_aware: true,
            carry: Carry::Extensions,
        }
    }
}

impl ServerDeadlineLayer {
    /// The defaults: 30 s when the caller sends nothing, at most 2 min, reading `grpc-timeout`
    /// and `request-timeout-ms`, answering 504 (or gRPC `DEADLINE_EXCEEDED`).
    pub fn new() -> ServerDeadlineLayer {
        ServerDeadlineLayer::default()
    }

    /// A builder starting from the defaults.
    pub fn builder() -> ServerDeadlineLayerBuilder {
        ServerDeadlineLayerBuilder {
            config: Config::default(),
            default_set: false,
        }
    }
}

/// Builds a server [`ServerDeadlineLayer`]; invalid settings are rejected by [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct ServerDeadlineLayerBuilder {
    config: Config,
    default_set: bool,
}

impl ServerDeadlineLayerBuilder {
    /// The server's own deadline: applied when the caller sends none, and the longest a caller
    /// may ask for (callers can only shorten it). Must not exceed the maximum. Left unset, it is
    /// 30 s or the maximum if that is shorter.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default = Some(timeout);
        self.default_set = true;
        self
    }

    /// No deadline at all when the caller sends none; a caller's deadline is then clamped to the
    /// maximum.
    #[must_use]
    pub fn no_default_timeout(mut self) -> Self {
        self.config.default = None;
        self.default_set = true;
        self
    }

    /// The longest deadline allowed (default 2 min): the default timeout must not exceed it, and
    /// without a default it is the longest a caller may ask for; longer ones are clamped.
    #[must_use]
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.config.max = max;
        self
    }

    /// Reads the milliseconds header `name` instead of the default `request-timeout-ms`.
    #[must_use]
    pub fn header(mut self, name: HeaderName) -> Self {
        self.config.headers.clear();
        self.config.headers.push(name);
        self
    }

    /// Also reads the milliseconds header `name` (e.g. `x-envoy-expected-rq-timeout-ms`); the
    /// shortest valid value of all wins.
    #[must_use]
    pub fn also_header(mut self, name: HeaderName) -> Self {
        self.config.headers.push(name);
        self
    }

    /// Whether `grpc-timeout` is read (default `true`).
    #[must_use]
    pub fn read_grpc_timeout(mut self, enabled: bool) -> Self {
        self.config.read_grpc_timeout = enabled;
        self
    }

    /// The status answered when the deadline expires (default `504 Gateway Timeout`); must be a
    /// 4xx or 5xx.
    #[must_use]
    pub fn expired_status(mut self, status: StatusCode) -> Self {
        self.config.expired_status = status;
        self
    }

    /// Whether gRPC requests get a gRPC `DEADLINE_EXCEEDED` status instead (default `true`).
    #[must_use]
    pub fn grpc_aware(mut self, enabled: bool) -> Self {
        self.config.grpc_aware = enabled;
        self
    }

    /// How the handler receives the deadline besides the ambient task-local: in the request
    /// extensions too (default), or only as the ambient one (saves the extension's allocations).
    #[must_use]
    pub fn carry(mut self, carry: Carry) -> Self {
        self.config.carry = carry;
        self
    }

    /// The layer, or the first rule the settings break, naming the field: `max_timeout` more
    /// than zero and at most [`MAX_SERVER_TIMEOUT`]; `default_timeout` more than zero and at most
    /// `max_timeout`; `expired_status` a 4xx or 5xx.
    pub fn build(self) -> Result<ServerDeadlineLayer, ConfigError> {
        let mut config = self.config;
        if !self.default_set {
            config.default = config.default.map(|d| d.min(config.max));
        }
        if config.max.is_zero() {
            return Err(ConfigError::new("max_timeout", "must be greater than zero"));
        }
        if config.max > MAX_SERVER_TIMEOUT {
            return Err(ConfigError::new("max_timeout", "must be at most a year"));
        }
        if let Some(default) = config.default {
            if default.is_zero() {
                return Err(ConfigError::new(
                    "default_timeout",
                    "must be greater than zero",
                ));
            }
            if default > config.max {
                return Err(ConfigError::new(
                    "default_timeout",
                    "must not exceed max_timeout",
                ));
            }
        }
        config.ceiling = config.default.unwrap_or(config.max);
        if !(config.expired_status.is_client_error() || config.expired_status.is_server_error()) {
            return Err(ConfigError::new(
                "expired_status",
                "must be a 4xx or 5xx status",
            ));
        }
        Ok(ServerDeadlineLayer {
            config: Arc::new(config),
        })
    }
}

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadlineService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service made by the server [`ServerDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct ServerDeadlineService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ServerDeadlineService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What the incoming headers ask for, all sources combined.
enum Asked {
    Nothing,
    Expired,
    Timeout(Duration),
}

impl Config {
    fn asked(&self, headers: &HeaderMap) -> Asked {
        let mut shortest: Option<Duration> = None;
        let mut consider = |name: &HeaderName, parse: fn(&HeaderValue) -> Incoming| {
            for value in headers.get_all(name) {
                match parse(value) {
                    Incoming::Timeout(t) => shortest = Some(shortest.map_or(t, |s| s.min(t))),
                    Incoming::Expired => return true,
                    Incoming::Malformed => {
                        tracing::debug!(header = %name, ?value, "ignoring malformed deadline header");
                    }
                }
            }
            false
        };
        if self.read_grpc_timeout && consider(&GRPC_TIMEOUT, parse_grpc_timeout) {
            return Asked::Expired;
        }
        for name in &self.headers {
            if consider(name, parse_timeout_ms) {
                return Asked::Expired;
            }
        }
        match shortest {
            Some(timeout) => Asked::Timeout(timeout),
            None => Asked::Nothing,
        }
    }

    fn expired_response<B: Default>(&self, grpc: bool) -> Response<B> {
        expired_response(self.expired_status, grpc && self.grpc_aware)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerDeadlineService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let grpc = is_grpc(&req);
        let timeout = match config.asked(req.headers()) {
            Asked::Expired => {
                tracing::debug!("caller's deadline already expired; not calling the handler");
                crate::telemetry::expired(SIDE_SERVER, None);
                return ResponseFuture::expired(config.expired_response(grpc));
            }
            // Only ever shorter than the server's own deadline, whatever the caller asks.
            Asked::Timeout(asked) => Some(asked.min(config.ceiling)),
            Asked::Nothing => config.default,
        };
        let now = Instant::now();
        let mut deadline = timeout.map(|t| Deadline::at(now + t));
        // The deadline's total, while it is the one this layer set.
        let mut budget = timeout;
        for inherited in [Deadline::of(&req), ambient::current()]
            .into_iter()
            .flatten()
        {
            if deadline.is_none_or(|d| inherited.instant() < d.instant()) {
                budget = None;
            }
            deadline = Some(deadline.map_or(inherited, |d| d.earliest(inherited)));
        }
        let Some(deadline) = deadline else {
            return ResponseFuture::running(self.inner.call(req), None, None, config, grpc);
        };
        if deadline.instant() <= now {
            crate::telemetry::expired(SIDE_SERVER, budget);
            return ResponseFuture::expired(config.expired_response(grpc));
        }
        if config.carry == Carry::Extensions {
            crate::carry_in_extensions(&mut req, deadline);
        }
        let entered = ambient::Entered::new(ambient::Budget::At(deadline));
        let future = self.inner.call(req);
        drop(entered);
        ResponseFuture::running(future, Some(deadline), budget, config, grpc)
    }
}

pin_project! {
    #[derive(Debug)]
    /// The response future of the server [`ServerDeadlineService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Option<Deadline>,
        // The deadline's total when this layer set it, for the expiry event.
        budget: Option<Duration>,
        expired: Option<Response<B>>,
        expired_status: StatusCode,
        grpc_response: bool,
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn running(
        inner: F,
        deadline: Option<Deadline>,
        budget: Option<Duration>,
        config: &Config,
        grpc: bool,
    ) -> Self {
        ResponseFuture {
            inner: Some(inner),
            sleep: None,
            deadline,
            budget,
            expired: None,
            expired_status: config.expired_status,
            grpc_response: grpc && config.grpc_aware,
        }
    }

    fn expired(response: Response<B>) -> Self {
        ResponseFuture {
            inner: None,
            sleep: None,
            deadline: None,
            budget: None,
            expired: Some(response),
            expired_status: StatusCode::GATEWAY_TIMEOUT,
            grpc_response: false,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(res) = this.expired.take() {
            return Poll::Ready(Ok(res));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            // Polled after completion: answer like an expiry rather than panic.
            return Poll::Ready(Ok(expired_response(
                *this.expired_status,
                *this.grpc_response,
            )));
        };
        let Some(deadline) = *this.deadline else {
            return inner.poll(cx);
        };
        let entered = ambient::Entered::new(ambient::Budget::At(deadline));
        let polled = inner.poll(cx);
        drop(entered);
        if let Poll::Ready(result) = polled {
            this.inner.set(None);
            return Poll::Ready(result);
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep_until(deadline.instant())));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                crate::telemetry::expired(SIDE_SERVER, *this.budget);
                // Dropped under the ambient deadline, so the handler's own drop code still sees
                // it.
                let entered = ambient::Entered::new(ambient::Budget::At(deadline));
                this.inner.set(None);
                drop(entered);
                Poll::Ready(Ok(expired_response(
                    *this.expired_status,
                    *this.grpc_response,
                )))
            }
            _ => Poll::Pending,
        }
    }
}

fn expired_response<B: Default>(status: StatusCode, grpc: bool) -> Response<B> {
    let mut res = Response::new(B::default());
    if grpc {
        // A trailers-only gRPC response: the status travels in the head.
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static("4"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("Deadline exceeded"),
        );
    } else {
        *res.status_mut() = status;
    }
    res
}
