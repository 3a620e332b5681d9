//! [`Client`]: a ready resilient HTTP client.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_breaker::{Breakers, CircuitBreakerLayer, PerAuthority, State, Window};
use backstop_classify::{BoxError, ClassifyLayer, Error, Kind, Phase};
use backstop_deadline::{AttemptTimeoutLayer, Covers, DeadlineLayer, InnerWaits, Propagation};
use backstop_retry::{ReplayBody, RetryBudget, RetryInfo, RetryLayer, StopReason};
use backstop_timeout::{ConnectTimeoutLayer, IdleTimeoutLayer, TcpConnector};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::policy::{BudgetPolicy, ConfigError, JitterMode, Policy, PropagationPolicy};
pub use crate::timed::ConnectTimings;

/// The response body of a [`Client`]: the bytes, with every error classified.
pub type ResponseBody = BoxBody<Bytes, Error>;

/// The request body a [`Client`] sends: bytes held in memory, or a stream.
///
/// Bytes in memory ([`Full`], [`Bytes`], made with `.into()` or [`RequestBody::full`]) cost
/// nothing beyond themselves: they are not boxed. A stream ([`RequestBody::stream`]) is boxed
/// once and sent as it is read; a retry replays the bytes the retry layer kept of it (up to the
/// policy's `replay_limit`, see [`crate::RetryPolicy`]), so a stream larger than that is sent
/// once and not retried after any of it was sent.
///
/// ```no_run
/// use backstop::{Client, RequestBody};
/// use bytes::Bytes;
///
/// # async fn demo(client: Client, upload: axum::body::Body) -> Result<(), backstop::Error> {
/// // In memory: a `Full<Bytes>` or `Bytes` body is sent as it is.
/// let req = http::Request::put("http://127.0.0.1:3000/small")
///     .body(Bytes::from_static(b"{}"))
///     .map_err(|e| backstop::Error::new(backstop::Kind::Other, backstop::Phase::Local).with_source(e))?;
/// client.send(req).await?;
///
/// // Streamed: here, the body an axum handler received, passed on as it arrives.
/// let req = http::Request::put("http://127.0.0.1:3000/large")
///     .body(RequestBody::stream(upload))
///     .map_err(|e| backstop::Error::new(backstop::Kind::Other, backstop::Phase::Local).with_source(e))?;
/// client.send(req).await?;
/// # Ok(())
/// # }
/// ```
pub struct RequestBody {
    kind: BodyKind,
}

enum BodyKind {
    Full(Full<Bytes>),
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// A body of `bytes`, held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> RequestBody {
        RequestBody {
            kind: BodyKind::Full(Full::new(bytes.into())),
        }
    }

    /// An empty body.
    pub fn empty() -> RequestBody {
        RequestBody::full(Bytes::new())
    }

    /// A streamed body: sent as `body` yields it. Its `size_hint` is passed on, so one that
    /// declares more bytes than the retry's `replay_limit` is never buffered for replay.
    pub fn stream<B>(body: B) -> RequestBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        RequestBody {
            kind: BodyKind::Stream(body.map_err(Into::into).boxed_unsync()),
        }
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            BodyKind::Full(_) => "full",
            BodyKind::Stream(_) => "stream",
        };
        f.debug_struct("RequestBody")
            .field("kind", &kind)
            .field("size_hint", &self.size_hint())
            .finish()
    }
}

impl Default for RequestBody {
    fn default() -> RequestBody {
        RequestBody::empty()
    }
}

impl From<Full<Bytes>> for RequestBody {
    fn from(body: Full<Bytes>) -> RequestBody {
        RequestBody {
            kind: BodyKind::Full(body),
        }
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> RequestBody {
        RequestBody::full(bytes)
    }
}

impl From<http_body_util::Empty<Bytes>> for RequestBody {
    fn from(_: http_body_util::Empty<Bytes>) -> RequestBody {
        RequestBody::empty()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both variants are `Unpin` (`Full` holds plain bytes, the stream is boxed).
        match &mut self.get_mut().kind {
            BodyKind::Full(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
            BodyKind::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(body) => body.is_end_stream(),
            BodyKind::Stream(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(body) => body.size_hint(),
            BodyKind::Stream(body) => body.size_hint(),
        }
    }
}

/// What happened during a call, in the response's extensions.
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// The backoff delays slept between attempts.
    pub delays: Vec<Duration>,
    /// Why the client stopped retrying, when the call ended on a failure: attempts exhausted,
    /// budget spent, not retryable, body not replayable, the deadline, a local rejection (open
    /// breaker) or a server asking to wait longer than the client will. `None` on success.
    pub retry_stopped: Option<StopReason>,
    /// The state of the destination's circuit breaker after the call (`None` when breakers are
    /// off).
    pub breaker: Option<State>,
    /// Time from the call until the response head arrived (time to first byte), retries
    /// included; for a failed call, until it failed.
    pub time_to_headers: Duration,
    /// How long establishing the connection took, in all and per phase (DNS, TCP, TLS), when
    /// this call opened a new one; `None` when it reused a pooled connection.
    pub connect: Option<ConnectTimings>,
}

impl CallInfo {
    fn new(
        retry: RetryInfo,
        breaker: Option<State>,
        time_to_headers: Duration,
        connect: Option<ConnectTimings>,
    ) -> CallInfo {
        CallInfo {
            attempts: retry.attempts(),
            delays: retry.delays().collect(),
            retry_stopped: retry.stopped(),
            breaker,
            time_to_headers,
            connect,
        }
    }

    /// The call info of a response from a [`Client`].
    pub fn of<B>(res: &Response<B>) -> Option<&CallInfo> {
        res.extensions().get::<CallInfo>()
    }

    /// The call info of an error from a [`Client`]: the same record as a response's, for a call
    /// that failed.
    pub fn of_error(err: &Error) -> Option<&CallInfo> {
        err.extensions().get::<CallInfo>()
    }
}

/// `.call_info()` on what a [`Client`] returns, response or error.
///
/// ```no_run
/// use backstop::CallInfoExt;
/// # async fn demo(client: backstop::Client) {
/// match client.get("http://127.0.0.1:3000/").await {
///     Ok(res) => println!("{:?}", res.call_info()),
///     Err(err) => println!("{err}: {:?}", err.call_info()),
/// }
/// # }
/// ```
pub trait CallInfoExt: sealed::Sealed {
    /// What happened during the call.
    fn call_info(&self) -> Option<&CallInfo>;
}

impl<B> CallInfoExt for Response<B> {
    fn call_info(&self) -> Option<&CallInfo> {
        CallInfo::of(self)
    }
}

impl CallInfoExt for Error {
    fn call_info(&self) -> Option<&CallInfo> {
        CallInfo::of_error(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl<B> Sealed for http::Response<B> {}
    impl Sealed for backstop_classify::Error {}
}

/// The future a resolver returns: the addresses of a name.
type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;

/// A resolver built from an async function, for [`ClientBuilder::resolver`].
#[derive(Clone)]
pub struct FnResolver {
    resolve: Arc<dyn Fn(Name) -> ResolveFuture + Send + Sync>,
}

impl fmt::Debug for FnResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnResolver").finish_non_exhaustive()
    }
}

impl FnResolver {
    /// Wraps `resolve`.
    pub fn new<F, Fut>(resolve: F) -> FnResolver
    where
        F: Fn(Name) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send + 'static,
    {
        FnResolver {
            resolve: Arc::new(move |name| {
                let fut = resolve(name);
                Box::pin(async move { fut.await.map(Vec::into_iter) })
            }),
        }
    }
}

impl Service<Name> for FnResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        (self.resolve)(name)
    }
}

/// Builds a [`Client`]. Every setting starts at the documented default of [`Policy`]; `build`
/// validates them all and names the field of the first one that breaks a rule.
pub struct ClientBuilder {
    policy: Policy,
    tls: Option<rustls::ClientConfig>,
    resolver: Option<FnResolver>,
    seed: Option<u64>,
    judge: Option<backstop_breaker::Judge>,
    /// hyper's HTTP/1 buffer bound, when not its default (about 400 KiB).
    http1_max_buf_size: Option<usize>,
    http2_prior_knowledge: bool,
}

/// The builder's settings that are not part of a [`Policy`]: they shape the transport, not the
/// rules.
struct Transport {
    seed: Option<u64>,
    judge: Option<backstop_breaker::Judge>,
    http1_max_buf_size: Option<usize>,
    http2_prior_knowledge: bool,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("policy", &self.policy)
            .field("custom_tls", &self.tls.is_some())
            .field("custom_resolver", &self.resolver.is_some())
            .field("custom_breaker_judge", &self.judge.is_some())
            .field("http1_max_buf_size", &self.http1_max_buf_size)
            .field("http2_prior_knowledge", &self.http2_prior_knowledge)
            .finish()
    }
}

impl ClientBuilder {
    /// Applies `policy` (e.g. one loaded from configuration) on top of the settings so far.
    ///
    /// Settings compose in call order: every field `policy` sets to something other than its
    /// default replaces what earlier calls set; the fields it leaves at their defaults keep
    /// them; setters called afterwards override it. So
    /// `builder().max_attempts(1).policy(from_toml)` keeps one attempt unless the TOML names
    /// `retry.max_attempts`, and `builder().policy(p).seed(7)` is `p` plus a seed.
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy.overlay(policy);
        self
    }

    /// The ceiling over the whole call, retries and backoff included. Default 30 s.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// Whether the deadline also bounds reading the response body, until its end. Default on.
    #[must_use]
    pub fn deadline_covers_body(mut self, covers: bool) -> Self {
        self.policy.deadline_covers_body = covers;
        self
    }

    /// The bound on one attempt. Unset, it follows the deadline: 10 s, or the deadline when that
    /// is shorter. Set, it must not exceed the deadline.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = Some(timeout);
        self
    }

    /// The bound on establishing a connection (DNS + TCP + TLS). Default 5 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.policy.connect_timeout = timeout;
        self
    }

    /// The idle bound on connections and response bodies. Default 30 s.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.policy.idle_timeout = timeout;
        self
    }

    /// Attempts per request, the first included (1 = never retry). Default 3.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.retry.max_attempts = attempts;
        self
    }

    /// The first and the longest backoff delay. Defaults 50 ms and 5 s.
    #[must_use]
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.policy.retry.base_delay = base;
        self.policy.retry.max_delay = max;
        self
    }

    /// How backoff delays are randomised. Default [`JitterMode::Full`].
    #[must_use]
    pub fn jitter(mut self, jitter: JitterMode) -> Self {
        self.policy.retry.jitter = jitter;
        self
    }

    /// The longest server `Retry-After` (or gRPC pushback) honoured; a server asking for longer
    /// is not retried, and its response is returned. Default 30 s.
    #[must_use]
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.policy.retry.retry_after_max = max;
        self
    }

    /// The largest request body kept for replay, in bytes. Default 64 KiB.
    #[must_use]
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.policy.retry.replay_limit = bytes;
        self
    }

    /// Attach a fresh `Idempotency-Key` to non-idempotent requests so they may be retried.
    /// Default off: the server must understand the header.
    #[must_use]
    pub fn attach_idempotency_key(mut self, attach: bool) -> Self {
        self.policy.retry.attach_idempotency_key = attach;
        self
    }

    /// Retry 409 Conflict for requests that may be retried at all. Default off.
    #[must_use]
    pub fn retry_conflict(mut self, retry: bool) -> Self {
        self.policy.retry.retry_conflict = retry;
        self
    }

    /// The retry budget (default 20 % of requests + 10/s over 10 s; `enabled: false` turns it
    /// off).
    #[must_use]
    pub fn retry_budget(mut self, budget: BudgetPolicy) -> Self {
        self.policy.retry.budget = budget;
        self
    }

    /// Turns the circuit breakers on or off. Default on, one per host.
    #[must_use]
    pub fn breaker(mut self, enabled: bool) -> Self {
        self.policy.breaker.enabled = enabled;
        self
    }

    /// Consecutive failed attempts that open a host's breaker. Default 5.
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.policy.breaker.consecutive_failures = failures;
        self
    }

    /// The failure rate that opens a breaker, over the last `window_calls` attempts once it holds
    /// `minimum_calls`. Defaults 0.5, 100 and 20.
    #[must_use]
    pub fn failure_rate(mut self, rate: f64, window_calls: u32, minimum_calls: u32) -> Self {
        self.policy.breaker.failure_rate = rate;
        self.policy.breaker.window_calls = window_calls;
        self.policy.breaker.minimum_calls = minimum_calls;
        self
    }

    /// The first cool-down of an open breaker and the longest after repeated trips. Defaults
    /// 5 s and 300 s.
    #[must_use]
    pub fn open_for(mut self, first: Duration, max: Duration) -> Self {
        self.policy.breaker.open_for = first;
        self.policy.breaker.max_open_for = max;
        self
    }

    /// Probes a half-open breaker lets through. Default 1.
    #[must_use]
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.policy.breaker.half_open_probes = probes;
        self
    }

    /// Allow a policy in which one call's own retries can open its host's breaker (the breaker
    /// counts attempts). Default off: such a policy is rejected at build.
    #[must_use]
    pub fn single_call_may_trip(mut self, allow: bool) -> Self {
        self.policy.breaker.single_call_may_trip = allow;
        self
    }

    /// Where the time left before the deadline is written into requests. Default: `grpc-timeout`
    /// on gRPC requests, nothing on plain HTTP ones.
    #[must_use]
    pub fn propagation(mut self, propagation: PropagationPolicy) -> Self {
        self.policy.propagation = propagation;
        self
    }

    /// The TLS configuration (default: the Mozilla root certificates, TLS 1.2 and 1.3, ring).
    ///
    /// Build it with the crypto provider named, e.g.
    /// `rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))`:
    /// `rustls::ClientConfig::builder()` panics when the application compiles in both of
    /// rustls' providers (`ring` and `aws-lc-rs`) and none was installed as the process default.
    ///
    /// ALPN: leave `alpn_protocols` empty and the client offers `h2` then `http/1.1`, speaking
    /// whichever the server picks. A non-empty list is honoured as given — exactly those
    /// protocols, in that order — so `vec![b"h2".to_vec()]` offers HTTP/2 alone and
    /// `vec![b"http/1.1".to_vec()]` HTTP/1.1 alone (a server that picks none is spoken to in
    /// HTTP/1.1, as TLS allows). Any entry other than `h2` and `http/1.1`, or one listed twice,
    /// makes [`build`](ClientBuilder::build) return a [`ConfigError`] naming
    /// `tls.alpn_protocols`: the client could not speak it if the server chose it.
    #[must_use]
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// The DNS resolver (default: the system's `getaddrinfo`).
    #[must_use]
    pub fn resolver(mut self, resolver: FnResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// How the breakers judge an outcome: what counts as a failure of the destination. Default
    /// [`backstop_breaker::default_verdict`] (every `5xx`, timeouts, connect failures…). The
    /// [`Gateway`](crate::Gateway) uses it for a route's `breaker_counts`.
    #[must_use]
    pub fn breaker_judge(mut self, judge: backstop_breaker::Judge) -> Self {
        self.judge = Some(judge);
        self
    }

    /// Seeds the jitter and the breakers' randomness, for reproducible tests and demos.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Speak HTTP/2 on every connection, `http://` ones included (h2c with prior knowledge), as
    /// gRPC servers and HTTP/2-only upstreams expect. Default off: HTTP/2 where TLS's ALPN
    /// negotiates it, HTTP/1.1 otherwise.
    #[must_use]
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> Self {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// Bounds hyper's HTTP/1 read buffer and write queue per connection (at least 8 KiB).
    ///
    /// The gateway streams request bodies through its route clients: each chunk queued for the
    /// upstream is a slice of the client connection's read buffer, and keeps that whole buffer
    /// allocated while it waits. A short queue bounds what each upload pins.
    pub(crate) fn http1_max_buf_size(mut self, bytes: usize) -> Self {
        self.http1_max_buf_size = Some(bytes.max(8 * 1024));
        self
    }

    /// The policy as set so far (the gateway reads the retry rules that decide what a route
    /// keeps for replay).
    pub(crate) fn current_policy(&self) -> &Policy {
        &self.policy
    }

    /// Validates every setting and builds the client.
    ///
    /// Never panics: a setting that breaks a rule, the TLS configuration included (see
    /// [`tls`](ClientBuilder::tls)), is a [`ConfigError`] naming it.
    pub fn build(self) -> Result<Client, ConfigError> {
        let policy = self.policy;
        policy.validate()?;
        let transport = Transport {
            seed: self.seed,
            judge: self.judge,
            http1_max_buf_size: self.http1_max_buf_size,
            http2_prior_knowledge: self.http2_prior_knowledge,
        };
        let tls = match self.tls {
            Some(tls) => tls,
            None => default_tls()?,
        };
        match self.resolver {
            Some(resolver) => Client::assemble(&policy, tls, resolver, transport),
            None => Client::assemble(&policy, tls, GaiResolver::new(), transport),
        }
    }
}

/// The default TLS configuration, its crypto provider (ring) named so that it cannot panic.
fn default_tls() -> Result<rustls::ClientConfig, ConfigError> {
    crate::tls::default_config()
}

/// A ready HTTP client with every resilience rule, in this order from the outside in:
///
/// `Deadline → Retry (budget, backoff, Retry-After, body replay) → CircuitBreaker (per host) →
/// Classify → AttemptTimeout → hyper-util client (HTTP/1 + HTTP/2, HTTPS via rustls)`, whose
/// connector is `ConnectTimeout(IdleTimeout(HTTPS(TCP with happy eyeballs)))` and whose response
/// bodies fail when idle.
///
/// Every error is a [`backstop_classify::Error`] (what failed, where, whether a retry was safe):
/// always the last real failure, never the reason retrying stopped. Every response and every
/// error carries a [`CallInfo`] ([`CallInfoExt::call_info`]): attempts, delays, breaker state,
/// timings, and why retrying stopped.
///
/// The breaker sits inside the retry, so it counts attempts; a policy whose single call could
/// open it is rejected at build (see [`crate::BreakerPolicy`]). A call rejected locally (an open
/// breaker) ends at once, with no delay and no retry budget spent. Only gRPC requests carry the
/// time left (`grpc-timeout`) unless [`ClientBuilder::propagation`] opts plain HTTP in.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = backstop::Client::builder()
///     .deadline(std::time::Duration::from_secs(5))
///     .build()?;
/// let res = client.get("https://example.com/").await?;
/// println!("{} after {} attempt(s)", res.status(), backstop::CallInfo::of(&res).map_or(1, |i| i.attempts));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    service: Arc<ServicePool>,
    breakers: Option<Breakers<PerAuthority>>,
    /// Half-open admits a single probe, so a first-attempt success proves the breaker closed.
    single_probe: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with the documented defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            policy: Policy::default(),
            tls: None,
            resolver: None,
            seed: None,
            judge: None,
            http1_max_buf_size: None,
            http2_prior_knowledge: false,
        }
    }

    /// A client with every default.
    pub fn new() -> Result<Client, ConfigError> {
        Client::builder().build()
    }

    fn assemble<R>(
        policy: &Policy,
        tls: rustls::ClientConfig,
        resolver: R,
        transport: Transport,
    ) -> Result<Client, ConfigError>
    where
        R: Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr> + Send,
        R::Error: Into<BoxError>,
        R::Future: Send,
    {
        let tcp = TcpConnector::builder().resolver(resolver).build()?;
        let https = crate::tls::https_connector(tls, tcp)?;
        let idle = IdleTimeoutLayer::new(policy.idle_timeout)
            .map_err(|e| ConfigError::new("idle_timeout", e.rule().to_owned()))?;
        let connector = ServiceBuilder::new()
            .layer(
                ConnectTimeoutLayer::new(policy.connect_timeout)
                    .map_err(|e| ConfigError::new("connect_timeout", e.rule().to_owned()))?,
            )
            .layer(idle)
            .service(https);
        let connector = crate::timed::TimedConnector::new(connector);
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder.pool_timer(hyper_util::rt::TokioTimer::new());
        builder.pool_idle_timeout(Duration::from_secs(90));
        if let Some(bytes) = transport.http1_max_buf_size {
            builder.http1_max_buf_size(bytes);
        }
        builder.http2_only(transport.http2_prior_knowledge);
        idle.http2_keep_alive().apply_to_client(&mut builder);
        let hyper_client = builder.build::<_, ReplayBody<RequestBody>>(connector);

        let deadline = DeadlineLayer::builder()
            .timeout(policy.deadline)
            // The attempt timeout inside writes the time left into every attempt (the earlier
            // of its own bound and this deadline): a header written here would only be parsed
            // and overwritten, after being copied into the head retry keeps.
            .propagation(Propagation::disabled())
            // The attempt timeout inside bounds every attempt by this deadline too, and retry
            // never waits past it: one timer per attempt, the attempt timeout's.
            .inner_waits(InnerWaits::BoundedByAttemptTimeout)
            .covers(if policy.deadline_covers_body {
                Covers::Body
            } else {
                Covers::Head
            })
            .build()
            .map_err(|e| ConfigError::new("deadline", e.rule().to_owned()))?;
        let attempt = AttemptTimeoutLayer::builder()
            .timeout(policy.effective_attempt_timeout())
            .propagation(policy.propagation.to_propagation()?)
            .build()
            .map_err(|e| ConfigError::new("attempt_timeout", e.rule().to_owned()))?;
        let retry = retry_layer(policy, transport.seed)?;

        let inner = ServiceBuilder::new()
            .layer(ClassifyLayer::new())
            .layer(attempt)
            .layer(idle.body_layer())
            .service(hyper_client);

        let (service, breakers) = if policy.breaker.enabled {
            let breaker = breaker_layer(policy, transport.seed, transport.judge)?;
            let breakers = breaker.breakers();
            let service = ServiceBuilder::new()
                .layer(deadline)
                .layer(retry)
                .layer(breaker)
                .service(inner)
                .map_response(|res: Response<_>| res.map(BodyExt::boxed));
            (BoxCloneSyncService::new(service), Some(breakers))
        } else {
            let service = ServiceBuilder::new()
                .layer(deadline)
                .layer(retry)
                .service(inner)
                .map_response(|res: Response<_>| res.map(BodyExt::boxed));
            (BoxCloneSyncService::new(service), None)
        };
        Ok(Client {
            service: Arc::new(ServicePool::new(service)),
            breakers,
            single_probe: policy.breaker.half_open_probes == 1,
        })
    }

    /// Sends `req` through every layer. Its body is anything that makes a [`RequestBody`]:
    /// bytes in memory ([`Full`], [`Bytes`]) or a stream ([`RequestBody::stream`]).
    ///
    /// A response carries a [`CallInfo`]; so does an error ([`CallInfo::of_error`]), whose kind
    /// is the last real failure and whose call info says why retrying stopped.
    pub fn send<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + '_
    where
        B: Into<RequestBody>,
    {
        // Not an `async fn` of its own: the conversion happens now, and the caller awaits the
        // one state machine that does the work instead of one wrapped in another.
        self.send_body(req.map(Into::into))
    }

    async fn send_body(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, Error> {
        let started = Instant::now();
        // Kept to find the destination's breaker afterwards; a `Uri` clone shares its bytes.
        let uri = self.breakers.is_some().then(|| req.uri().clone());
        let (res, connect) = crate::timed::ConnectScope::new(self.service.call(req)).await;
        let time_to_headers = started.elapsed();
        match res {
            Ok(mut res) => {
                let retry = RetryInfo::of(&res);
                let breaker = match (&self.breakers, uri) {
                    (Some(breakers), Some(uri)) => {
                        self.breaker_state(breakers, &res, retry.attempts(), uri)
                    }
                    _ => None,
                };
                let info = CallInfo::new(retry, breaker, time_to_headers, connect);
                res.extensions_mut().insert(info);
                Ok(res)
            }
            Err(err) => Err(self.failed(err, uri, time_to_headers, connect)),
        }
    }

    /// Records what happened in a failed call's error.
    #[cold]
    fn failed(
        &self,
        mut err: Error,
        uri: Option<http::Uri>,
        elapsed: Duration,
        connect: Option<ConnectTimings>,
    ) -> Error {
        let retry = RetryInfo::of_error(&err).unwrap_or_default();
        let breaker = match (&self.breakers, uri) {
            (Some(breakers), Some(uri)) => Request::get(uri)
                .body(())
                .ok()
                .and_then(|head| breakers.state(&breaker_key(&head))),
            _ => None,
        };
        let info = CallInfo::new(retry, breaker, elapsed, connect);
        err.extensions_mut().insert(info);
        err
    }

    /// The state of the breaker that judged this call, after it.
    ///
    /// A success on the first attempt was admitted by a closed breaker (which a success keeps
    /// closed) or was the single half-open probe (whose success closes it): the breaker is
    /// closed, and the registry need not be searched on the hot path.
    fn breaker_state<B>(
        &self,
        breakers: &Breakers<PerAuthority>,
        res: &Response<B>,
        attempts: u32,
        uri: http::Uri,
    ) -> Option<State> {
        let succeeded = res
            .extensions()
            .get::<backstop_classify::Outcome>()
            .is_some_and(backstop_classify::Outcome::is_success);
        if succeeded && attempts == 1 && self.single_probe {
            return Some(State::Closed);
        }
        let head = Request::get(uri).body(()).ok()?;
        breakers.state(&breaker_key(&head))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Response<ResponseBody>, Error> {
        self.send(request(Method::GET, url, Bytes::new())?).await
    }

    /// `POST url` with `body`.
    pub async fn post(
        &self,
        url: &str,
        body: impl Into<Bytes>,
    ) -> Result<Response<ResponseBody>, Error> {
        self.send(request(Method::POST, url, body.into())?).await
    }

    /// The circuit breakers, one per host, for dashboards and manual control (`None` when off).
    pub fn breakers(&self) -> Option<&Breakers<PerAuthority>> {
        self.breakers.as_ref()
    }
}

type StackService = BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, Error>;

/// Instances of the service stack, reused across calls.
///
/// A tower service is called through `&mut self`, so a client shared by many tasks needs an
/// instance per call in flight. Cloning the whole stack for every call (and dropping it after)
/// costs a dozen reference-count updates and an allocation, and throws away what an instance
/// learned (the circuit breaker caches the breaker of the host it last called). Instances are
/// taken from this pool for the synchronous `call` only — the response future they return owns
/// everything it needs — and put back at once.
struct ServicePool {
    template: StackService,
    idle: std::sync::Mutex<Vec<StackService>>,
}

/// The most idle instances kept; beyond that, returned instances are dropped.
const POOLED_INSTANCES: usize = 64;

impl ServicePool {
    fn new(template: StackService) -> ServicePool {
        ServicePool {
            template,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The pool is never waited for: a worker thread blocked on it would stall every task it
    /// runs, so when another thread holds it, a fresh instance is cloned (and, on return,
    /// dropped) instead.
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Vec<StackService>>> {
        match self.idle.try_lock() {
            Ok(idle) => Some(idle),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn take(&self) -> StackService {
        let pooled = self.lock().and_then(|mut idle| idle.pop());
        pooled.unwrap_or_else(|| self.template.clone())
    }

    fn give(&self, service: StackService) {
        if let Some(mut idle) = self.lock()
            && idle.len() < POOLED_INSTANCES
        {
            idle.push(service);
        }
    }

    async fn call(&self, req: Request<RequestBody>) -> Result<Response<ResponseBody>, Error> {
        let mut service = self.take();
        // Every layer of the stack is ready at once (none applies back-pressure), so this does
        // not wait in practice; it is awaited all the same, as tower requires.
        let future = match service.ready().await {
            Ok(ready) => ready.call(req),
            Err(err) => return Err(err),
        };
        self.give(service);
        future.await
    }
}

/// The breaker key of a request, as the per-host breaker computes it.
fn breaker_key<B>(req: &Request<B>) -> backstop_breaker::Authority {
    backstop_breaker::BreakerKey::key(&PerAuthority, &backstop_breaker::RequestHead::of(req))
}

fn request(method: Method, url: &str, body: Bytes) -> Result<Request<RequestBody>, Error> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(RequestBody::full(body))
        .map_err(|err| Error::new(Kind::Other, Phase::Local).with_source(err))
}

fn retry_layer(policy: &Policy, seed: Option<u64>) -> Result<RetryLayer, ConfigError> {
    let retry = &policy.retry;
    let mut builder = RetryLayer::builder()
        .max_attempts(retry.max_attempts)
        .base_delay(retry.base_delay)
        .max_delay(retry.max_delay)
        .jitter(retry.jitter.into())
        .retry_after_max(retry.retry_after_max)
        .replay_limit(retry.replay_limit)
        .attach_idempotency_key(retry.attach_idempotency_key)
        .retry_conflict(retry.retry_conflict);
    builder = if retry.budget.enabled {
        let budget = RetryBudget::builder()
            .ratio(retry.budget.ratio)
            .min_per_second(retry.budget.min_per_second)
            .window(retry.budget.window)
            .build()
            .map_err(|e| e.within("retry.budget"))?;
        builder.budget(budget)
    } else {
        builder.no_budget()
    };
    if let Some(seed) = seed {
        builder = builder.seed(seed);
    }
    builder.build().map_err(|e| e.within("retry"))
}

fn breaker_layer(
    policy: &Policy,
    seed: Option<u64>,
    judge: Option<backstop_breaker::Judge>,
) -> Result<CircuitBreakerLayer<PerAuthority>, ConfigError> {
    let b = &policy.breaker;
    let mut builder = CircuitBreakerLayer::builder()
        .consecutive_failures(b.consecutive_failures)
        .failure_rate(b.failure_rate)
        .window(Window::Count(b.window_calls))
        .minimum_calls(b.minimum_calls)
        .open_for(b.open_for)
        .max_open_for(b.max_open_for)
        .half_open_probes(b.half_open_probes);
    if let Some(seed) = seed {
        builder = builder.seed(seed);
    }
    if let Some(judge) = judge {
        builder = builder.judge(judge);
    }
    builder.build().map_err(|e| e.within("breaker"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every `Policy` field can be set from the builder, and setters and `policy()` compose in
    /// call order.
    #[test]
    fn every_policy_field_is_reachable_from_the_builder() {
        let ms = Duration::from_millis;
        let budget = BudgetPolicy {
            enabled: false,
            ratio: 0.1,
            min_per_second: 3,
            window: Duration::from_secs(20),
        };
        let propagation = PropagationPolicy {
            http: true,
            header: "x-timeout-ms".into(),
            only_to: vec!["*.internal".into()],
            grpc: false,
        };
        let built = Client::builder()
            .deadline(ms(900))
            .deadline_covers_body(false)
            .attempt_timeout(ms(300))
            .connect_timeout(ms(100))
            .idle_timeout(ms(200))
            .max_attempts(4)
            .backoff(ms(10), ms(100))
            .jitter(JitterMode::Decorrelated)
            .retry_after_max(ms(500))
            .replay_limit(1024)
            .attach_idempotency_key(true)
            .retry_conflict(true)
            .retry_budget(budget.clone())
            .breaker(false)
            .consecutive_failures(9)
            .failure_rate(0.3, 50, 10)
            .open_for(ms(700), ms(7000))
            .half_open_probes(2)
            .single_call_may_trip(true)
            .propagation(propagation.clone())
            .policy;
        let expected = Policy {
            deadline: ms(900),
            deadline_covers_body: false,
            attempt_timeout: Some(ms(300)),
            connect_timeout: ms(100),
            idle_timeout: ms(200),
            retry: crate::RetryPolicy {
                max_attempts: 4,
                base_delay: ms(10),
                max_delay: ms(100),
                jitter: JitterMode::Decorrelated,
                retry_after_max: ms(500),
                replay_limit: 1024,
                attach_idempotency_key: true,
                retry_conflict: true,
                budget,
            },
            breaker: crate::BreakerPolicy {
                enabled: false,
                consecutive_failures: 9,
                failure_rate: 0.3,
                window_calls: 50,
                minimum_calls: 10,
                open_for: ms(700),
                max_open_for: ms(7000),
                half_open_probes: 2,
                single_call_may_trip: true,
            },
            propagation,
        };
        assert_eq!(built, expected);
        // Nothing in `expected` is left at its default, so the comparison covers every field.
        let mut overlaid = Policy::default();
        overlaid.overlay(expected.clone());
        assert_eq!(overlaid, expected);

        // policy() after a setter keeps the setter where the policy says nothing…
        let p = Policy::from_toml("deadline = \"2s\"").unwrap();
        let b = Client::builder().max_attempts(1).policy(p.clone());
        assert_eq!(
            (b.policy.retry.max_attempts, b.policy.deadline),
            (1, ms(2000))
        );
        // …and a setter after policy() overrides it.
        let b = Client::builder().policy(p).deadline(ms(500));
        assert_eq!(b.policy.deadline, ms(500));
    }
}
