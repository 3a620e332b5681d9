//! [`CircuitBreakerLayer`], its service [`CircuitBreaker`] and [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Classify, Error, Kind, Outcome, Phase};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio_util::sync::ReusableBoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{Admission, Breaker};
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
    cached: Option<Arc<Breaker<K::Key>>>,
    /// Present in [`Readiness::NotReady`] mode.
    ready: Option<ReadyState<K::Key>>,
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

    fn breaker_for(&mut self, head: &RequestHead<'_>) -> &Arc<Breaker<K::Key>> {
        let registry = &self.registry;
        let hit = self.cached.as_ref().is_some_and(|b| {
            !b.evicted.load(Ordering::Relaxed) && registry.key_fn.matches(head, &b.key)
        });
        if !hit {
            self.cached = None;
        }
        self.cached.get_or_insert_with(|| registry.for_head(head))
    }

    fn only_breaker(&mut self) -> Option<Arc<Breaker<K::Key>>> {
        let fresh = self
            .cached
            .as_ref()
            .is_some_and(|b| !b.evicted.load(Ordering::Relaxed));
        if !fresh {
            self.cached = self.registry.only();
        }
        self.cached.clone()
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

fn reserve<Key: Clone + fmt::Debug>(breaker: &Arc<Breaker<Key>>) -> Option<Reserved<Key>> {
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.poll_breaker_ready(cx));
        self.inner
            .poll_ready(cx)
            .map_err(|err| Error::classify(err, Phase::Local))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let reserved = self.ready.as_mut().and_then(|ready| ready.reserved.take());
        let admitted = match reserved {
            Some(reserved) => reserved,
            None => {
                let head = RequestHead::of(&req);
                let breaker = self.breaker_for(&head);
                breaker.touch();
                match breaker.admit() {
                    Admission::Reject => return ResponseFuture::rejected(),
                    Admission::Unrecorded => Reserved::Unrecorded,
                    Admission::Call { generation, probe } => {
                        Reserved::Ticket(Ticket::new(breaker.clone(), generation, probe))
                    }
                }
            }
        };
        let future = self.inner.call(req);
        match admitted {
            Reserved::Ticket(ticket) => ResponseFuture {
                inner: Inner::Admitted {
                    future,
                    ticket: Some(ticket),
                },
            },
            Reserved::Unrecorded => ResponseFuture {
                inner: Inner::Passed { future },
            },
        }
    }
}

/// One admitted call: recorded when it ends, or — if its future is dropped first — forgotten,
/// giving its probe permit back.
struct Ticket<Key> {
    breaker: Arc<Breaker<Key>>,
    generation: u32,
    probe: bool,
    started: u64,
    finished: bool,
}

impl<Key: Clone + fmt::Debug> Ticket<Key> {
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
            finished: false,
        }
    }

    fn finish(mut self, outcome: &Outcome) {
        self.finished = true;
        let breaker = &self.breaker;
        let verdict = (breaker.settings().judge)(outcome);
        let slow = breaker.slow_nanos().is_some_and(|threshold| {
            breaker.clock().now().saturating_sub(self.started) >= threshold
        });
        breaker.record(self.generation, self.probe, verdict, slow);
    }
}

impl<Key> Drop for Ticket<Key> {
    fn drop(&mut self) {
        if !self.finished && self.probe {
            self.breaker.abandon_probe(self.generation);
        }
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F, Key> {
        Admitted { #[pin] future: F, ticket: Option<Ticket<Key>> },
        Passed { #[pin] future: F },
        Rejected,
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`]: the inner call, or an immediate rejection.
    pub struct ResponseFuture<F, Key> {
        #[pin]
        inner: Inner<F, Key>,
    }
}

impl<F, Key> ResponseFuture<F, Key> {
    fn rejected() -> Self {
        ResponseFuture {
            inner: Inner::Rejected,
        }
    }
}

impl<F, Key> fmt::Debug for ResponseFuture<F, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.inner {
            Inner::Admitted { .. } => "admitted",
            Inner::Passed { .. } => "passed",
            Inner::Rejected => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, E, ResBody, Key> Future for ResponseFuture<F, Key>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    Key: Clone + fmt::Debug,
{
    type Output = Result<Response<ResBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::Rejected => Poll::Ready(Err(Error::new(Kind::BreakerOpen, Phase::Local))),
            InnerProj::Passed { future } => Poll::Ready(
                ready!(future.poll(cx)).map_err(|err| Error::classify(err, Phase::AwaitHeaders)),
            ),
            InnerProj::Admitted { future, ticket } => {
                let result = ready!(future.poll(cx));
                match result {
                    Ok(res) => {
                        if let Some(ticket) = ticket.take() {
                            let outcome = match res.extensions().get::<Outcome>() {
                                Some(outcome) => *outcome,
                                None => ticket
                                    .breaker
                                    .settings()
                                    .policy
                                    .classify_response(res.status(), res.headers()),
                            };
                            ticket.finish(&outcome);
                        }
                        Poll::Ready(Ok(res))
                    }
                    Err(err) => {
                        let err = Error::classify(err, Phase::AwaitHeaders);
                        if let Some(ticket) = ticket.take() {
                            ticket.finish(&Outcome::Failure(err.failure()));
                        }
                        Poll::Ready(Err(err))
                    }
                }
            }
        }
    }
}
