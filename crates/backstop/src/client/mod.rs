//! [`Client`]: a ready resilient HTTP client, and its send path.
//!
//! One concept per file: `builder.rs` holds the settings ([`ClientBuilder`]) and validates
//! them; `Client::assemble` (here) turns a validated [`Policy`] into the layer stack; a call goes
//! through [`Client::send`] (here), an instance of the stack taken from the `ServicePool`
//! (`pool.rs`), and comes back with a [`CallInfo`] (`call_info.rs`). The body types are in
//! `body.rs`, the resolver made from a function in `resolver.rs`, which URLs a client calls
//! (`https://` only with TLS, `http://` unless `https_only`) in `scheme.rs`; the call's span and
//! metrics in `telemetry.rs`.

mod attempt;
mod body;
mod builder;
mod call_info;
mod host;
#[cfg(feature = "config")]
mod json;
mod pool;
mod resolver;
mod scheme;
mod service;
mod telemetry;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backstop_breaker::{Breakers, CircuitBreakerLayer, PerAuthority, State, Window};
use backstop_classify::{BoxError, Error, HttpPolicy, Kind, Phase};
use backstop_deadline::{
    AttemptTimeoutLayer, CallDeadline, Covers, DeadlineBounds, DeadlineLayer, InnerWaits,
    Propagation,
};
use backstop_retry::{RetryBudget, RetryInfo, RetryLayer};
use backstop_timeout::{ConnectTimeoutLayer, ConnectionIdleTimeoutLayer, TcpConnector};
use bytes::Bytes;
use http::{Method, Request, Response};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};

use self::attempt::Attempt;
use self::body::RequestReplay;
pub use self::body::{RequestBody, ResponseBody};
pub use self::builder::ClientBuilder;
use self::builder::Transport;
pub use self::call_info::{CallInfo, CallInfoExt};
use self::host::HostHeader;
#[cfg(feature = "config")]
pub use self::json::{JSON_BODY_LIMIT, JsonBodyExt};
use self::pool::ServicePool;
pub use self::resolver::FnResolver;
#[cfg(feature = "gateway")]
pub(crate) use self::scheme::NO_TLS;
use self::scheme::Schemes;
pub use self::service::ClientFuture;
use crate::policy::{ConfigError, Policy};
pub use crate::timed::ConnectTimings;
use crate::timed::OpenedConnection;

/// A ready HTTP client with every resilience rule, in this order from the outside in:
///
/// `Deadline → Retry (budget, backoff, Retry-After, body replay) → CircuitBreaker (per host) →
/// Classify → AttemptTimeout → hyper-util client (HTTP/1 + HTTP/2, HTTPS via rustls with the
/// `tls` feature)`, whose connector is `ConnectTimeout(IdleTimeout(HTTPS(TCP with happy
/// eyeballs)))` (without `tls`, TCP alone: `http://` only, see [the crate docs](crate#features))
/// and whose response bodies fail when idle.
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
/// A `Client` is also a [`tower_service::Service`] of `http::Request<B>` for any body `B`
/// (see the `Service` impl below: bodies in memory stay zero-copy, `poll_ready` is always
/// ready), so it fits at the bottom of a `tower::ServiceBuilder` stack and works with
/// `tower::ServiceExt::oneshot(client.clone(), req)`.
///
/// Cloning is cheap and shares everything: the layer stack and its connection pool behind one
/// `Arc`, the breakers behind another. Clone it rather than building one per call.
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
    shared: Arc<Shared>,
    breakers: Option<Breakers<PerAuthority>>,
    /// Half-open admits a single probe, so a first-attempt success proves the breaker closed.
    single_probe: bool,
    schemes: Schemes,
}

/// What every clone of a client shares behind one `Arc` (so that a clone stays two reference
/// counts): the stack's instances, and what the client reads beside them.
struct Shared {
    stack: ServicePool,
    /// The stack's retry budget, for [`Client::retry_budget`].
    retry_budget: Option<RetryBudget>,
    /// The client's deadline rules, which its calls apply around the stack (see `Call`).
    deadline: DeadlineBounds,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with the documented defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client with every default.
    pub fn new() -> Result<Client, ConfigError> {
        Client::builder().build()
    }

    fn assemble<R>(
        policy: &Policy,
        resolver: R,
        transport: Transport,
        schemes: Schemes,
    ) -> Result<Client, ConfigError>
    where
        R: Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr> + Send,
        R::Error: Into<BoxError>,
        R::Future: Send,
    {
        let tcp = transport
            .tcp
            .build(TcpConnector::builder().resolver(resolver))?;
        #[cfg(feature = "tls")]
        let tcp = crate::tls::https_connector(transport.tls, tcp)?;
        let idle = ConnectionIdleTimeoutLayer::try_new(policy.idle_timeout)
            .map_err(|e| ConfigError::new("idle_timeout", e.rule().to_owned()))?;
        let connector = ServiceBuilder::new()
            .layer(
                ConnectTimeoutLayer::try_new(policy.connect_timeout)
                    .map_err(|e| ConfigError::new("connect_timeout", e.rule().to_owned()))?,
            )
            .layer(idle)
            .service(tcp);
        // Outermost, so the timings include every layer's work.
        let connector = crate::timed::TimedConnector::new(connector);
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder.pool_timer(hyper_util::rt::TokioTimer::new());
        builder.pool_idle_timeout(Duration::from_secs(90));
        if let Some(bytes) = transport.http1_max_buf_size {
            builder.http1_max_buf_size(bytes);
        }
        builder.http2_only(transport.http2_prior_knowledge);
        idle.http2_keep_alive().apply_to_client(&mut builder);
        let hyper_client = builder.build::<_, RequestBody>(connector);

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
        // Below the retry layer every request is a `Request<RequestBody>` (256 bytes): in-memory
        // bytes replay as a clone of themselves, streams through the buffered replay.
        let retry = retry_layer(policy, transport.seed)?.with_replay::<RequestReplay>();
        let retry_budget = retry.budget().cloned();

        let breaker = if policy.breaker.enabled {
            Some(breaker_layer(policy, transport.seed, transport.judge)?)
        } else {
            None
        };
        let breakers = breaker.as_ref().map(CircuitBreakerLayer::breakers);
        // The breaker, classify, the attempt timeout and the body idle timeout, composed: one
        // future and one body wrapper instead of four layers handing the response on in turn.
        let inner = Attempt::new(
            hyper_client,
            HttpPolicy::new(),
            attempt.bounds(),
            idle.period(),
            breaker.as_ref().map(CircuitBreakerLayer::gate),
            HostHeader::new(!transport.http2_prior_knowledge),
        );
        // The deadline's rules are applied by the call itself (`Call`), around the stack: an
        // instant from the clock reading the call's record takes anyway, made ambient around
        // the call and its polls, with no future, timer or clock of its own (the attempt
        // timeout inside wakes the call at the deadline).
        let deadline = deadline
            .bounds()
            .map_err(|e| ConfigError::new("deadline", e.rule().to_owned()))?;
        let service = BoxCloneSyncService::new(ServiceBuilder::new().layer(retry).service(inner));
        Ok(Client {
            shared: Arc::new(Shared {
                stack: ServicePool::new(service),
                retry_budget,
                deadline,
            }),
            breakers,
            single_probe: policy.breaker.half_open_probes == 1,
            schemes,
        })
    }

    /// Sends `req` through every layer. Its body is anything that makes a [`RequestBody`]: bytes
    /// in memory ([`Full`](http_body_util::Full), [`Bytes`]) or a stream
    /// ([`RequestBody::stream`]).
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
        // call itself instead of a state machine wrapped around it.
        self.send_body(Outgoing::Request(req.map(Into::into)))
    }

    /// Every call's path (`send`, `get` and the other methods, the `Service` impl, the gateway's
    /// forwarding): a [`Call`], which makes the request when first polled.
    #[inline]
    fn send_body<'a>(&'a self, req: Outgoing<'a>) -> Call<'a> {
        Call {
            client: self,
            outgoing: Some(req),
            sent: None,
        }
    }

    /// Records what happened in the call's response (or error): its [`CallInfo`].
    #[inline]
    fn record(
        &self,
        result: &mut Result<Response<ResponseBody>, Error>,
        destination: Option<Destination<'_>>,
        time_to_headers: Duration,
    ) {
        match result {
            Ok(res) => {
                let retry = RetryInfo::of(res);
                let breaker = match (&self.breakers, destination) {
                    (Some(breakers), Some(destination)) => {
                        self.breaker_state(breakers, res, retry.attempts(), destination)
                    }
                    _ => None,
                };
                // Fills the record the connection put there (no second allocation).
                OpenedConnection::record(res.extensions_mut(), |info, connect| {
                    info.fill(&retry, breaker, time_to_headers, connect);
                });
            }
            Err(err) => self.failed(err, destination, time_to_headers),
        }
    }

    /// Records what happened in a failed call's error.
    #[cold]
    fn failed(&self, err: &mut Error, destination: Option<Destination<'_>>, elapsed: Duration) {
        let connect = OpenedConnection::of_error(err);
        let retry = RetryInfo::of_error(err).unwrap_or_default();
        let breaker = match (&self.breakers, destination) {
            (Some(breakers), Some(destination)) => destination.breaker_state(breakers),
            _ => None,
        };
        let info = CallInfo::new(retry, breaker, elapsed, connect);
        err.extensions_mut().insert(info);
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
        destination: Destination<'_>,
    ) -> Option<State> {
        let succeeded = backstop_classify::Outcome::of(res.extensions())
            .is_some_and(backstop_classify::Outcome::is_success);
        if succeeded && attempts == 1 && self.single_probe {
            return Some(State::Closed);
        }
        destination.breaker_state(breakers)
    }

    // The shorthands below are not `async fn`s: the caller awaits the `Call` itself rather than
    // a state machine that awaits it and copies its response out once more. The request is made
    // when it is first polled, as an `async fn` would (an invalid URL is the call's error): the
    // future handed back holds the URL, not a whole request to be copied with it.

    /// `GET url`.
    pub fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'a {
        self.send_url(Method::GET, url, Bytes::new())
    }

    /// `POST url` with `body`.
    pub fn post<'a>(
        &'a self,
        url: &'a str,
        body: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'a {
        self.send_url(Method::POST, url, body.into())
    }

    /// `PUT url` with `body`.
    pub fn put<'a>(
        &'a self,
        url: &'a str,
        body: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'a {
        self.send_url(Method::PUT, url, body.into())
    }

    /// `DELETE url`, with no body.
    pub fn delete<'a>(
        &'a self,
        url: &'a str,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'a {
        self.send_url(Method::DELETE, url, Bytes::new())
    }

    /// What the shorthands send: `method url` with `body`, made into a request when polled.
    #[inline]
    fn send_url<'a>(
        &'a self,
        method: Method,
        url: &'a str,
        body: Bytes,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Error>> + Send + 'a {
        self.send_body(Outgoing::Url { method, url, body })
    }

    /// The circuit breakers, one per host, for dashboards and manual control (`None` when off).
    pub fn breakers(&self) -> Option<&Breakers<PerAuthority>> {
        self.breakers.as_ref()
    }

    /// The retry budget shared by every call of this client, for dashboards (`None` when off):
    /// [`RetryBudget::available`] is its balance.
    pub fn retry_budget(&self) -> Option<&RetryBudget> {
        self.shared.retry_budget.as_ref()
    }
}

/// Where a call went, as much as its breaker's key needs: the scheme (the default port) and the
/// authority. Not the whole `Uri`: its path would be one more reference count to take and drop
/// per call.
enum Destination<'u> {
    /// The URL a shorthand (`get`, ...) was given: borrowed, and parsed again only in the rare
    /// case its breaker's state is looked up, so that the common call clones and drops nothing
    /// for it (each line of code a call runs costs it when cold).
    Url(&'u str),
    /// A request's, which the stack takes.
    Parts {
        scheme: Option<http::uri::Scheme>,
        authority: Option<http::uri::Authority>,
    },
}

impl Destination<'_> {
    #[inline]
    fn of(uri: &http::Uri) -> Destination<'static> {
        Destination::Parts {
            scheme: uri.scheme().cloned(),
            authority: uri.authority().cloned(),
        }
    }

    /// The state of this destination's breaker, as the per-host breaker finds it.
    #[cold]
    fn breaker_state(self, breakers: &Breakers<PerAuthority>) -> Option<State> {
        // The key reads only the scheme and the authority, so the URL serves as it is.
        let uri = match self {
            // It parsed when the call was made.
            Destination::Url(url) => http::Uri::try_from(url).ok()?,
            Destination::Parts { scheme, authority } => {
                let mut parts = http::uri::Parts::default();
                // `http` wants a path beside a scheme, and none beside an authority alone.
                if scheme.is_some() {
                    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                }
                parts.scheme = scheme;
                parts.authority = authority;
                http::Uri::from_parts(parts).ok()?
            }
        };
        let head = Request::get(uri).body(()).ok()?;
        let key = backstop_breaker::BreakerKey::key(
            &PerAuthority,
            &backstop_breaker::RequestHead::of(&head),
        );
        breakers.state(&key)
    }
}

/// The future of one call (every path: `send`, `get` and the other shorthands, the `Service`
/// impl, the gateway's forwarding): the call span around the whole stack, entered whenever the
/// stack is called or polled (so the retry layer's attempt spans are its children), the call's
/// metrics, and its [`CallInfo`] recorded in the result. A request that could not be made
/// (`get`'s URL did not parse) is its error at once, with no span and no metrics.
///
/// Written by hand rather than as an `async fn`: the state it keeps across the stack's await is
/// a few words (the stack's future is boxed), where an `async fn` kept slots for the request and
/// the response in its state and moved each of them through several temporaries (a response is
/// 256 bytes). The future is polled on the caller's thread on every call, so every byte it
/// touches is a cache line the caller waits for.
#[must_use = "futures do nothing unless polled"]
pub(crate) struct Call<'a> {
    client: &'a Client,
    /// What to send, until the first poll makes it a request and calls the stack.
    outgoing: Option<Outgoing<'a>>,
    /// The call in flight; `None` before the first poll and after the result.
    sent: Option<Sent<'a>>,
}

/// A call the stack is working on, and what recording it needs afterwards.
struct Sent<'a> {
    stack: pool::StackFuture<'a, Response<body::AttemptBody>>,
    /// The call's deadline, made ambient around the stack's call and polls, and the bound of
    /// its response body (`None` for a call refused because a caller's deadline had passed:
    /// a client always has a deadline of its own).
    deadline: Option<CallDeadline>,
    span: tracing::Span,
    #[cfg(feature = "metrics")]
    active: telemetry::Active,
    started: Instant,
    /// Kept to find the destination's breaker afterwards, should the outcome not tell (see
    /// `breaker_state`): the scheme and authority, not the path.
    destination: Option<Destination<'a>>,
}

impl<'a> Call<'a> {
    /// Makes the request and calls the stack; a call that ends here (a URL that did not
    /// parse, a scheme this client refuses) fails with the error returned.
    ///
    /// Out of line, as is [`Sent::finish`]: what they hold on the stack would otherwise widen
    /// the frame of `poll`, under which every layer's call and poll runs.
    #[inline(never)]
    fn start(&mut self) -> Result<(), Error> {
        let client = self.client;
        let (mut req, url) = match self.outgoing.take() {
            Some(Outgoing::Request(req)) => (req, None),
            Some(Outgoing::Url { method, url, body }) => (request(method, url, body)?, Some(url)),
            None => return Ok(()),
        };
        let span = telemetry::call_span(&req);
        #[cfg(feature = "metrics")]
        let active = telemetry::Active::start(&req);
        let started = Instant::now();
        if let Some(refused) = client.schemes.refuse(req.uri()) {
            return client.refused(
                refused,
                &span,
                #[cfg(feature = "metrics")]
                active,
                started,
            );
        }
        let destination = client.breakers.as_ref().map(|_| match url {
            Some(url) => Destination::Url(url),
            None => Destination::of(req.uri()),
        });
        let (stack, deadline) = match client.shared.deadline.start(&mut req, started) {
            // With no subscriber the span is disabled: the stack is called and polled as it
            // is, with no span entered and left around it.
            Ok(deadline) => {
                let _entered = (!span.is_disabled()).then(|| span.enter());
                let _ambient = deadline
                    .as_ref()
                    .map(|deadline| client.shared.deadline.enter_call(deadline));
                (client.shared.stack.call(req), deadline)
            }
            // Out of time before it was sent (a caller's deadline has passed): the call's
            // error, recorded as any other.
            Err(failure) => (expired(failure), None),
        };
        self.sent = Some(Sent {
            stack,
            deadline,
            span,
            #[cfg(feature = "metrics")]
            active,
            started,
            destination,
        });
        Ok(())
    }
}

impl Client {
    /// Records a call this client refused before sending it (a scheme it does not call): its
    /// error, as [`Call::start`]'s.
    #[cold]
    #[inline(never)]
    fn refused(
        &self,
        mut refused: Error,
        span: &tracing::Span,
        #[cfg(feature = "metrics")] active: telemetry::Active,
        started: Instant,
    ) -> Result<(), Error> {
        self.failed(&mut refused, None, started.elapsed());
        let result = Err(refused);
        telemetry::finish(span, &result);
        #[cfg(feature = "metrics")]
        active.finish(&result);
        result.map(drop)
    }
}

impl Future for Call<'_> {
    type Output = Result<Response<ResponseBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the stack's future is boxed).
        let this = self.get_mut();
        if this.outgoing.is_some()
            && let Err(err) = this.start()
        {
            return Poll::Ready(Err(err));
        }
        let Some(sent) = this.sent.as_mut() else {
            // Polled again after its result: a caller's mistake, answered without a panic.
            return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
        };
        let entered = (!sent.span.is_disabled()).then(|| sent.span.enter());
        // The deadline ambient for the layers inside: a retry decides whether it has time for
        // another attempt, and bounds that attempt by it, within this poll.
        let ambient = sent.deadline.as_ref().map(CallDeadline::enter);
        let polled = sent.stack.as_mut().poll(cx);
        drop(ambient);
        drop(entered);
        let result = std::task::ready!(polled);
        let Some(sent) = this.sent.take() else {
            return Poll::Ready(Err(Error::new(Kind::Other, Phase::Local)));
        };
        Poll::Ready(sent.finish(this.client, result))
    }
}

impl Sent<'_> {
    /// Records the call in its result.
    #[inline(never)]
    fn finish(
        self,
        client: &Client,
        result: Result<Response<body::AttemptBody>, Error>,
    ) -> Result<Response<ResponseBody>, Error> {
        let mut result = result.map(|res| {
            let body_deadline = self.deadline.and_then(|d| d.body_deadline());
            ResponseBody::of_stack(res, body_deadline)
        });
        client.record(&mut result, self.destination, self.started.elapsed());
        telemetry::finish(&self.span, &result);
        #[cfg(feature = "metrics")]
        self.active.finish(&result);
        result
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        // A call dropped in flight (cancelled) drops its stack inside the call span, as a
        // future instrumented with the span would: whatever the layers emit while they unwind
        // stays the call's.
        // Looked at in place: a finished call (the common case) has nothing to move out.
        if let Some(sent) = &mut self.sent
            && !sent.span.is_disabled()
        {
            let _entered = sent.span.enter();
            // The stack's future is dropped here, replaced by one that allocates nothing.
            sent.stack = Box::pin(std::future::pending());
        }
    }
}

/// What [`Client::send_body`] sends: a request, or the parts of one a shorthand (`get`, ...)
/// was given, made into one when the call starts.
enum Outgoing<'u> {
    Request(Request<RequestBody>),
    Url {
        method: Method,
        url: &'u str,
        body: Bytes,
    },
}

/// The stack's future for a call out of time before it was sent: its error at once.
#[cold]
#[inline(never)]
fn expired<'a>(
    failure: backstop_classify::Failure,
) -> pool::StackFuture<'a, Response<body::AttemptBody>> {
    Box::pin(std::future::ready(Err(Error::from_failure(failure))))
}

/// Out of line: building a request takes a few copies of its head on the stack, which would
/// otherwise widen the frame of [`Call::start`], under which every layer is called.
#[inline(never)]
fn request(method: Method, url: &str, body: Bytes) -> Result<Request<RequestBody>, Error> {
    // Not `Request::builder()`: its `Result` of a whole head is moved through each step.
    let uri = http::Uri::try_from(url)
        .map_err(|err| Error::new(Kind::Other, Phase::Local).with_source(err))?;
    let mut req = Request::new(RequestBody::full(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    Ok(req)
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

/// What building the client's layers from `policy` rejects, without validating it first: the
/// layers' own checks, which `policy/bounds.rs` is tested against.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn layers_reject(policy: &Policy) -> Option<ConfigError> {
    let transport = Transport {
        #[cfg(feature = "tls")]
        // The TLS configuration plays no part in the bounds.
        tls: crate::tls::test_config(),
        seed: None,
        judge: None,
        http1_max_buf_size: None,
        http2_prior_knowledge: false,
        tcp: builder::TcpSettings::default(),
    };
    let resolver = hyper_util::client::legacy::connect::dns::GaiResolver::new();
    let schemes = Schemes::new(false).expect("plain schemes need no TLS");
    Client::assemble(policy, resolver, transport, schemes).err()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A call's future is what the caller's task carries and polls on every call: the request
    /// to send, then the stack's boxed future and the record's few words, not a state machine
    /// with slots for a request and a response (the `async fn` it replaced was 1 008 bytes).
    #[test]
    fn a_calls_future_holds_its_request_and_a_few_words() {
        let client = Client::builder().build().unwrap();
        let get = client.get("http://127.0.0.1:1/");
        // 408 bytes on x86_64 (432 with `metrics`): the request, 256, and 152 more (the
        // call's deadline among them).
        let size = std::mem::size_of_val(&get);
        assert!(
            size <= std::mem::size_of::<Request<RequestBody>>() + 192,
            "{size} bytes"
        );
    }

    #[tokio::test]
    async fn a_url_that_does_not_parse_is_the_calls_local_error_whichever_shorthand() {
        let client = Client::builder().build().unwrap();
        let url = String::from("http://exa mple/");
        let errors = [
            client.get(&url).await.unwrap_err(),
            client.post(&url, "x").await.unwrap_err(),
            client
                .put(&url, Bytes::from_static(b"x"))
                .await
                .unwrap_err(),
            client.delete(&url).await.unwrap_err(),
        ];
        for err in errors {
            assert_eq!((err.kind(), err.phase()), (Kind::Other, Phase::Local));
            assert!(
                std::error::Error::source(&err).is_some_and(|e| e.is::<http::uri::InvalidUri>()),
                "{err:?}"
            );
            // Refused before the call started: no call, so no record of one.
            assert!(CallInfo::of_error(&err).is_none(), "{err:?}");
        }
    }
}
