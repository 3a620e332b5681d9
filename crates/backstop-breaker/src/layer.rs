//! [`CircuitBreakerLayer`], its service [`CircuitBreaker`] and [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Classify, Error, Failure, Kind, Outcome, Phase};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio_util::sync::ReusableBoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{Admission, Breaker, OpenSeen};
use crate::config::{Builder, Readiness, Settings};
use crate::key::{BreakerKey, PerAuthority, RequestHead, Single};
use crate::registry::{Breakers, Registry};

/// Wraps a service in circuit breakers, one per key (per authority by default).
///
/// Every service made by one layer (and every clone of them) shares the same breakers: build
/// the layer once per dependency, not once per call site.
pub struct CircuitBreakerLayer<K: BreakerKey = PerAuthority> {
    registry: Arc<Registry<K>>,
    readiness: Readiness,
}

impl<K: BreakerKey> Clone for CircuitBreakerLayer<K> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            registry: self.registry.clone(),
            readiness: self.readiness,
        }
    }
}

impl<K: BreakerKey> fmt::Debug for CircuitBreakerLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("readiness", &self.readiness)
            .field("breakers", &self.breakers())
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreakerLayer<PerAuthority> {
    fn default() -> Self {
        CircuitBreakerLayer::new()
    }
}

impl CircuitBreakerLayer<PerAuthority> {
    /// One breaker per authority, with the default settings (see [`Builder`]).
    pub fn new() -> Self {
        CircuitBreakerLayer::from_parts(
            Arc::new(Registry::new(PerAuthority, Settings::default(), None)),
            Readiness::FailCalls,
        )
    }

    /// A builder of breakers per authority; [`Builder::key`] and [`Builder::key_fn`] choose
    /// another key.
    pub fn builder() -> Builder<PerAuthority> {
        Builder::new(PerAuthority)
    }
}

impl CircuitBreakerLayer<Single> {
    /// A builder of one breaker for every request (e.g. one endpoint in a balancer); the only
    /// kind that can report not-ready ([`Builder::readiness`]).
    pub fn single() -> Builder<Single> {
        Builder::new(Single)
    }
}

impl<K: BreakerKey> CircuitBreakerLayer<K> {
    pub(crate) fn from_parts(registry: Arc<Registry<K>>, readiness: Readiness) -> Self {
        CircuitBreakerLayer {
            registry,
            readiness,
        }
    }

    /// The breakers of this layer: snapshots, subscriptions, manual control.
    pub fn breakers(&self) -> Breakers<K> {
        Breakers::new(self.registry.clone())
    }
}

impl<S, K: BreakerKey> Layer<S> for CircuitBreakerLayer<K> {
    type Service = CircuitBreaker<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            registry: self.registry.clone(),
            cached: None,
            ready: match self.readiness {
                Readiness::NotReady if self.registry.key_fn.only_key().is_some() => {
                    Some(ReadyState::default())
                }
                _ => None,
            },
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
///
/// Its error is always a [`backstop_classify::Error`]; a rejection is
/// [`Kind::BreakerOpen`] in [`Phase::Local`], safe to retry elsewhere, with no source.
pub struct CircuitBreaker<S, K: BreakerKey = PerAuthority> {
    inner: S,
    registry: Arc<Registry<K>>,
    /// The breaker of the last call: most services talk to one host, and this skips the map.
    cached: Option<Cached<K::Key>>,
    /// Present in [`Readiness::NotReady`] mode.
    ready: Option<ReadyState<K::Key>>,
}

/// A service's own view of its last breaker.
struct Cached<Key> {
    breaker: Arc<Breaker<Key>>,
    /// The open period this service last saw on it, so rejections skip the shared state.
    open: Option<OpenSeen>,
}

impl<Key> Clone for Cached<Key> {
    fn clone(&self) -> Self {
        Cached {
            breaker: self.breaker.clone(),
            open: self.open,
        }
    }
}

impl<Key> Cached<Key> {
    fn new(breaker: Arc<Breaker<Key>>) -> Cached<Key> {
        Cached {
            breaker,
            open: None,
        }
    }
}

struct ReadyState<Key> {
    reserved: Option<Reserved<Key>>,
    wait: Option<ReusableBoxFuture<'static, ()>>,
}

impl<Key> Default for ReadyState<Key> {
    fn default() -> Self {
        ReadyState {
            reserved: None,
            wait: None,
        }
    }
}

enum Reserved<Key> {
    Ticket(Ticket<Key>),
    Unrecorded,
}

impl<S: Clone, K: BreakerKey> Clone for CircuitBreaker<S, K> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            cached: self.cached.clone(),
            // A reservation belongs to the service that made it.
            ready: self.ready.as_ref().map(|_| ReadyState::default()),
        }
    }
}

impl<S: fmt::Debug, K: BreakerKey> fmt::Debug for CircuitBreaker<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("not_ready_when_open", &self.ready.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, K: BreakerKey> CircuitBreaker<S, K> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The breakers this service shares with its layer.
    pub fn breakers(&self) -> Breakers<K> {
        Breakers::new(self.registry.clone())
    }

    /// Whether the request belongs to the cached breaker by the key's quick check.
    #[inline]
    fn cache_hit(&self, head: &RequestHead<'_>) -> bool {
        self.cached.as_ref().is_some_and(|c| {
            !c.breaker.evicted.load(Ordering::Relaxed)
                && self.registry.key_fn.matches_quickly(head, &c.breaker.key)
        })
    }

    /// Finds the request's breaker the slow way (the quick check did not claim it) and caches
    /// it.
    #[cold]
    #[inline(never)]
    fn refresh_cache(&mut self, head: &RequestHead<'_>) {
        let keep = self.cached.as_ref().is_some_and(|c| {
            !c.breaker.evicted.load(Ordering::Relaxed)
                && self.registry.key_fn.matches(head, &c.breaker.key)
        });
        if !keep {
            self.cached = Some(Cached::new(self.registry.for_head(head)));
        }
    }

    fn only_breaker(&mut self) -> Option<Arc<Breaker<K::Key>>> {
        let fresh = self
            .cached
            .as_ref()
            .is_some_and(|c| !c.breaker.evicted.load(Ordering::Relaxed));
        if !fresh {
            self.cached = self.registry.only().map(Cached::new);
        }
        self.cached.as_ref().map(|c| c.breaker.clone())
    }

    /// [`Readiness::NotReady`]: ready once a call may go, with its admission reserved.
    fn poll_breaker_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self
            .ready
            .as_ref()
            .is_none_or(|ready| ready.reserved.is_some())
        {
            return Poll::Ready(());
        }
        let Some(breaker) = self.only_breaker() else {
            return Poll::Ready(());
        };
        let Some(ready) = self.ready.as_mut() else {
            return Poll::Ready(());
        };
        loop {
            if let Some(reserved) = reserve(&breaker) {
                ready.reserved = Some(reserved);
                return Poll::Ready(());
            }
            // Subscribe before checking again, so a change in between is not missed.
            let mut changes = breaker.subscribe();
            if let Some(reserved) = reserve(&breaker) {
                ready.reserved = Some(reserved);
                return Poll::Ready(());
            }
            let reopens_at = breaker.reopens_at();
            let wait = async move {
                match reopens_at {
                    Some(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            _ = changes.changed() => {}
                        }
                    }
                    None => {
                        let _ = changes.changed().await;
                    }
                }
            };
            match &mut ready.wait {
                Some(slot) => slot.set(wait),
                None => ready.wait = Some(ReusableBoxFuture::new(wait)),
            }
            if let Some(slot) = &mut ready.wait {
                ready!(slot.poll(cx));
            }
        }
    }
}

fn reserve<Key: Clone + fmt::Debug + Send + Sync + 'static>(
    breaker: &Arc<Breaker<Key>>,
) -> Option<Reserved<Key>> {
    match breaker.admit() {
        Admission::Reject => None,
        Admission::Unrecorded => Some(Reserved::Unrecorded),
        Admission::Call { generation, probe } => Some(Reserved::Ticket(Ticket::new(
            breaker.clone(),
            generation,
            probe,
        ))),
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: BreakerKey,
{
    type Response = Response<ResBody>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, K::Key>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_some() {
            ready!(self.poll_breaker_ready(cx));
        }
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Local))
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(reserved) = self.ready.as_mut().and_then(|ready| ready.reserved.take()) {
            return match reserved {
                Reserved::Ticket(ticket) => ResponseFuture::admitted(self.inner.call(req), ticket),
                Reserved::Unrecorded => ResponseFuture::passed(self.inner.call(req)),
            };
        }
        let head = RequestHead::of(&req);
        if !self.cache_hit(&head) {
            self.refresh_cache(&head);
        }
        let Some(cached) = self.cached.as_mut() else {
            // `refresh_cache` always leaves a breaker cached.
            return ResponseFuture::passed(self.inner.call(req));
        };
        let breaker = &cached.breaker;
        breaker.touch();
        match breaker.admit_seen(&mut cached.open) {
            Admission::Call { generation, probe } => {
                let ticket = Ticket::new(breaker.clone(), generation, probe);
                ResponseFuture::admitted(self.inner.call(req), ticket)
            }
            Admission::Reject => ResponseFuture::rejected(),
            Admission::Unrecorded => ResponseFuture::passed(self.inner.call(req)),
        }
    }
}

/// One admitted call: recorded when it ends, or — if its future is dropped first — forgotten,
/// giving its probe permit back.
struct Ticket<Key> {
    breaker: Arc<Breaker<Key>>,
    generation: u32,
    /// A half-open probe, whose permit goes back if the call ends without a result.
    probe: bool,
    started: u64,
}

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Ticket<Key> {
    #[inline]
    fn new(breaker: Arc<Breaker<Key>>, generation: u32, probe: bool) -> Ticket<Key> {
        let started = if breaker.slow_nanos().is_some() {
            breaker.clock().now()
        } else {
            0
        };
        Ticket {
            breaker,
            generation,
            probe,
            started,
        }
    }

    /// Records a response: the [`Outcome`] a `ClassifyLayer` inside stored, else the policy's
    /// judgement of the status (skipped for a status the policy always calls a success).
    #[inline(always)]
    fn finish_response<B>(self, res: &Response<B>) {
        let outcome = match res.extensions().get::<Outcome>() {
            Some(outcome) => *outcome,
            None if res.status().as_u16() < 400 && self.breaker.success_below_400() => {
                Outcome::Success
            }
            None => self
                .breaker
                .settings()
                .policy
                .classify_response(res.status(), res.headers()),
        };
        self.finish(&outcome);
    }

    #[inline(always)]
    fn finish(mut self, outcome: &Outcome) {
        // A result is coming: the drop below must not give the permit back.
        let probe = std::mem::replace(&mut self.probe, false);
        let breaker = &self.breaker;
        let verdict = (breaker.settings().judge)(outcome);
        let slow = breaker.slow_nanos().is_some_and(|threshold| {
            breaker.clock().now().saturating_sub(self.started) >= threshold
        });
        breaker.record(self.generation, probe, verdict, slow);
    }
}

impl<Key> Drop for Ticket<Key> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.abandon_probe(self.generation);
        }
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`]: the inner call, or an immediate rejection.
    pub struct ResponseFuture<F, Key> {
        // `None`: rejected. A flat struct rather than an enum of states, so the inner future is
        // written where it stays and a rejection is two stores.
        #[pin]
        future: Option<F>,
        // `None` for a call let through unrecorded (metrics-only), and once the result is in.
        ticket: Option<Ticket<Key>>,
    }
}

impl<F, Key> ResponseFuture<F, Key> {
    #[inline]
    fn rejected() -> Self {
        ResponseFuture {
            future: None,
            ticket: None,
        }
    }

    #[inline]
    fn admitted(future: F, ticket: Ticket<Key>) -> Self {
        ResponseFuture {
            future: Some(future),
            ticket: Some(ticket),
        }
    }

    #[inline]
    fn passed(future: F) -> Self {
        ResponseFuture {
            future: Some(future),
            ticket: None,
        }
    }
}

impl<F, Key> fmt::Debug for ResponseFuture<F, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.future, &self.ticket) {
            (None, _) => "rejected",
            (Some(_), Some(_)) => "admitted",
            (Some(_), None) => "passed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The error of every rejection, judged once.
fn rejection() -> Error {
    static REJECTION: LazyLock<Failure> =
        LazyLock::new(|| Failure::new(Kind::BreakerOpen, Phase::Local));
    Error::from_failure(*REJECTION)
}

impl<F, E, ResBody, Key> Future for ResponseFuture<F, Key>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    Key: Clone + fmt::Debug + Send + Sync + 'static,
{
    type Output = Result<Response<ResBody>, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err(rejection()));
        };
        let result =
            ready!(future.poll(cx)).map_err(|err| Error::classify(err, Phase::AwaitHeaders));
        if let Some(ticket) = this.ticket.take() {
            match &result {
                Ok(res) => ticket.finish_response(res),
                Err(err) => ticket.finish(&Outcome::Failure(err.failure())),
            }
        }
        Poll::Ready(result)
    }
}
