//! [`CircuitBreaker`]: a [`Gate`] around a service — finds a request's breaker (remembering the
//! last one) and asks it whether the call may go; in [`Readiness::NotReady`] mode, asks already
//! in `poll_ready`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use backstop_classify::{BoxError, Error, Phase};
use http::{Request, Response};
use tokio_util::sync::ReusableBoxFuture;
use tower_service::Service;

use crate::authority::PerAuthority;
use crate::breaker::{Admission, Breaker};
use crate::breakers::Breakers;
use crate::future::ResponseFuture;
use crate::gate::Gate;
use crate::key::{BreakerKey, RequestHead};
use crate::layer::Readiness;
use crate::registry::Registry;
use crate::ticket::Ticket;

/// The service made by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// Its error is always a [`backstop_classify::Error`]; a rejection is
/// [`Kind::BreakerOpen`](backstop_classify::Kind::BreakerOpen) in [`Phase::Local`], safe to retry elsewhere, with no source.
pub struct CircuitBreaker<S, K: BreakerKey = PerAuthority> {
    inner: S,
    gate: Gate<K>,
    /// Present in [`Readiness::NotReady`] mode.
    ready: Option<ReadyState<K::Key>>,
}

struct ReadyState<Key> {
    reserved: Option<Reserved<Key>>,
    wait: Option<ReusableBoxFuture<'static, ()>>,
}

// === impl ReadyState ===

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

// === impl CircuitBreaker ===

impl<S: Clone, K: BreakerKey> Clone for CircuitBreaker<S, K> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
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
    pub(crate) fn new(inner: S, registry: Arc<Registry<K>>, readiness: Readiness) -> Self {
        let ready = match readiness {
            Readiness::NotReady if registry.key_fn.only_key().is_some() => {
                Some(ReadyState::default())
            }
            _ => None,
        };
        CircuitBreaker {
            inner,
            gate: Gate::new(registry),
            ready,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The breakers this service shares with its layer.
    pub fn breakers(&self) -> Breakers<K> {
        Breakers::new(self.gate.registry.clone())
    }

    /// A call admitted by `poll_ready` ([`Readiness::NotReady`]): its reservation is its
    /// admission. Out of line, as `call_uncached`.
    #[inline(never)]
    fn call_reserved<ReqBody>(&mut self, req: Request<ReqBody>) -> ResponseFuture<S::Future, K::Key>
    where
        S: Service<Request<ReqBody>>,
    {
        let ticket = match self.ready.as_mut().and_then(|ready| ready.reserved.take()) {
            Some(Reserved::Ticket(ticket)) => Some(ticket),
            Some(Reserved::Unrecorded) | None => None,
        };
        ResponseFuture::new(self.inner.call(req), ticket)
    }

    /// A call whose breaker is not the cached one: looked up, cached, then admitted.
    ///
    /// Its admission is written out here and in `call` rather than shared: one helper for
    /// both, even always inlined, cost the per-host call 54 instructions more (the request
    /// copied once more) and a rejection 54 too.
    #[cold]
    #[inline(never)]
    fn call_uncached<ReqBody>(&mut self, req: Request<ReqBody>) -> ResponseFuture<S::Future, K::Key>
    where
        S: Service<Request<ReqBody>>,
    {
        self.gate.refresh_cache(&RequestHead::of(&req));
        match self.gate.admit_cached() {
            Ok(permit) => ResponseFuture::new(self.inner.call(req), permit.into_ticket()),
            Err(_) => ResponseFuture::rejected(),
        }
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
        let Some(breaker) = self.gate.only_breaker() else {
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
                        // Whichever comes first (by hand, not `tokio::select!`: that macro would
                        // pull tokio's proc-macros, and syn, into every client's build).
                        let mut reopened = std::pin::pin!(tokio::time::sleep_until(at));
                        let mut changed = std::pin::pin!(changes.changed());
                        std::future::poll_fn(|cx| {
                            if reopened.as_mut().poll(cx).is_ready()
                                || changed.as_mut().poll(cx).is_ready()
                            {
                                Poll::Ready(())
                            } else {
                                Poll::Pending
                            }
                        })
                        .await;
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
        // The request is read (its breaker checked) before any branch that takes it: taking it
        // first, even into an out-of-line function, made every call copy its 224 bytes once
        // more (28 instructions, and a call of `memcpy`).
        let hit = self.gate.cache_hit(&RequestHead::of(&req));
        if self
            .ready
            .as_ref()
            .is_some_and(|ready| ready.reserved.is_some())
        {
            return self.call_reserved(req);
        }
        // Finding another breaker is out of line: the common call, whose breaker is the cached
        // one, stays short (9 instructions fewer per call, admitted or rejected).
        if !hit {
            return self.call_uncached(req);
        }
        match self.gate.admit_cached() {
            Ok(permit) => ResponseFuture::new(self.inner.call(req), permit.into_ticket()),
            Err(_) => ResponseFuture::rejected(),
        }
    }
}
