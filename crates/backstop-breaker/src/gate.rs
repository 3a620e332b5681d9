//! [`Gate`]: a layer's breakers for code that makes its calls itself — admit a call, then record
//! its result with the [`Permit`] — rather than through a service the layer wraps.
//! [`CircuitBreaker`](crate::CircuitBreaker) is a `Gate` around a service.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use backstop_classify::{Error, Failure, Kind, Outcome, Phase};
use http::Response;

use crate::authority::PerAuthority;
use crate::breaker::{Admission, Breaker, OpenSeen};
use crate::key::{BreakerKey, RequestHead};
use crate::registry::Registry;
use crate::ticket::Ticket;

/// Admission to one layer's breakers, for a caller that drives its calls itself: a client whose
/// own future already awaits the call and judges its result, where wrapping the call in one
/// more service and future would only move the request and the response through it.
///
/// [`admit`](Gate::admit) finds the request's breaker (remembering the last one, as
/// [`CircuitBreaker`](crate::CircuitBreaker) does) and asks it whether the call may go; the
/// [`Permit`] it gives records the call's result. The rules, the keys and the breakers are the
/// layer's: a gate and the services of the same layer share them.
///
/// ```
/// use backstop_breaker::{CircuitBreakerLayer, RequestHead, State};
/// use backstop_classify::{Failure, Kind, Outcome, Phase};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = CircuitBreakerLayer::builder().consecutive_failures(2).build()?;
/// let mut gate = layer.gate();
/// let req = http::Request::get("http://api.internal/users").body(())?;
/// let refused = Outcome::Failure(Failure::new(Kind::Refused, Phase::Connect));
/// for _ in 0..2 {
///     let permit = gate.admit(&RequestHead::of(&req)).expect("closed");
///     // ... make the call; it failed:
///     permit.record(&refused);
/// }
/// let rejected = gate.admit(&RequestHead::of(&req)).unwrap_err();
/// assert_eq!(backstop_classify::Error::from(rejected).kind(), Kind::BreakerOpen);
/// assert_eq!(layer.breakers().snapshots()[0].1.state, State::Open);
/// # Ok(())
/// # }
/// ```
pub struct Gate<K: BreakerKey = PerAuthority> {
    pub(crate) registry: Arc<Registry<K>>,
    /// The breaker of the last call: most callers talk to one host, and this skips the map.
    cached: Option<Cached<K::Key>>,
}

/// A gate's own view of its last breaker.
struct Cached<Key> {
    breaker: Arc<Breaker<Key>>,
    /// The open period this gate last saw on it, so rejections skip the shared state.
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

// === impl Gate ===

impl<K: BreakerKey> Clone for Gate<K> {
    fn clone(&self) -> Self {
        Gate {
            registry: self.registry.clone(),
            cached: self.cached.clone(),
        }
    }
}

impl<K: BreakerKey> fmt::Debug for Gate<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl<K: BreakerKey> Gate<K> {
    pub(crate) fn new(registry: Arc<Registry<K>>) -> Gate<K> {
        Gate {
            registry,
            cached: None,
        }
    }

    /// Whether the call of `head` may go: its [`Permit`], or [`Rejected`] while its breaker is
    /// open (or half-open with every probe out).
    ///
    /// A permit must live until the call's result is known, and then
    /// [record](Permit::record) it; one dropped unrecorded is a call abandoned (a cancelled
    /// probe gives its permit back).
    #[inline]
    pub fn admit(&mut self, head: &RequestHead<'_>) -> Result<Permit<K::Key>, Rejected> {
        // Finding another breaker is out of line: the common call, whose breaker is the cached
        // one, stays short.
        if !self.cache_hit(head) {
            self.refresh_cache_cold(head);
        }
        self.admit_cached()
    }

    #[cold]
    #[inline(never)]
    fn refresh_cache_cold(&mut self, head: &RequestHead<'_>) {
        self.refresh_cache(head);
    }

    /// Whether the request belongs to the cached breaker by the key's quick check.
    #[inline]
    pub(crate) fn cache_hit(&self, head: &RequestHead<'_>) -> bool {
        self.cached.as_ref().is_some_and(|c| {
            !c.breaker.evicted.load(Ordering::Relaxed)
                && self.registry.key_fn.matches_quickly(head, &c.breaker.key)
        })
    }

    /// Finds the request's breaker the slow way (the quick check did not claim it) and caches
    /// it.
    #[inline]
    pub(crate) fn refresh_cache(&mut self, head: &RequestHead<'_>) {
        let keep = self.cached.as_ref().is_some_and(|c| {
            !c.breaker.evicted.load(Ordering::Relaxed)
                && self.registry.key_fn.matches(head, &c.breaker.key)
        });
        if !keep {
            self.cached = Some(Cached::new(self.registry.for_head(head)));
        }
    }

    /// Admission through the cached breaker.
    #[inline]
    pub(crate) fn admit_cached(&mut self) -> Result<Permit<K::Key>, Rejected> {
        let Some(cached) = self.cached.as_mut() else {
            // Not reached: this runs after a cache hit or `refresh_cache`, which always leaves
            // a breaker cached.
            return Ok(Permit { ticket: None });
        };
        let breaker = &cached.breaker;
        breaker.touch();
        match breaker.admit_seen(&mut cached.open) {
            Admission::Call { generation, probe } => Ok(Permit {
                ticket: Some(Ticket::new(breaker.clone(), generation, probe)),
            }),
            Admission::Reject => {
                breaker.metrics.rejection();
                Err(Rejected(()))
            }
            Admission::Unrecorded => Ok(Permit { ticket: None }),
        }
    }

    /// The breaker of a single-breaker layer (`None` for a keyed one), cached.
    pub(crate) fn only_breaker(&mut self) -> Option<Arc<Breaker<K::Key>>> {
        let fresh = self
            .cached
            .as_ref()
            .is_some_and(|c| !c.breaker.evicted.load(Ordering::Relaxed));
        if !fresh {
            self.cached = self.registry.only().map(Cached::new);
        }
        self.cached.as_ref().map(|c| c.breaker.clone())
    }
}

// === impl Permit ===

/// One call let through by a [`Gate`]: record its result with it.
///
/// Dropped without a result (the call was cancelled), it records nothing, and a half-open
/// probe's permit goes back to the breaker.
pub struct Permit<Key> {
    /// `None` for a call let through unrecorded (metrics-only mode, where the breaker would have
    /// refused it).
    ticket: Option<Ticket<Key>>,
}

impl<Key> fmt::Debug for Permit<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("recorded", &self.ticket.is_some())
            .finish_non_exhaustive()
    }
}

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Permit<Key> {
    /// The ticket inside, for the service's response future.
    pub(crate) fn into_ticket(self) -> Option<Ticket<Key>> {
        self.ticket
    }

    /// Records the call's [`Outcome`], as the layer's [`Judge`](crate::Judge) sees it.
    #[inline]
    pub fn record(self, outcome: &Outcome) {
        if let Some(mut ticket) = self.ticket {
            ticket.finish(outcome);
        }
    }

    /// Records a response: the [`Outcome`] a [`ClassifyLayer`](backstop_classify::ClassifyLayer)
    /// stored in its extensions, else the layer's judgement of its status.
    #[inline]
    pub fn record_response<B>(self, res: &Response<B>) {
        if let Some(mut ticket) = self.ticket {
            ticket.finish_response(res);
        }
    }

    /// Records a failed call.
    #[inline]
    pub fn record_error(self, err: &Error) {
        self.record(&Outcome::Failure(err.failure()));
    }
}

// === impl Rejected ===

/// A call refused by its open breaker. As an [`Error`] (`From`), it is
/// [`Kind::BreakerOpen`](backstop_classify::Kind::BreakerOpen) in [`Phase::Local`]: the request
/// never left, so it is safe to retry elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(());

impl Rejected {
    /// The failure of every rejection, judged once.
    pub fn failure(self) -> Failure {
        static REJECTION: LazyLock<Failure> =
            LazyLock::new(|| Failure::new(Kind::BreakerOpen, Phase::Local));
        *REJECTION
    }
}

impl From<Rejected> for Error {
    fn from(rejected: Rejected) -> Error {
        Error::from_failure(rejected.failure())
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("circuit breaker open")
    }
}

impl std::error::Error for Rejected {}

pub(crate) fn rejection() -> Error {
    Error::from(Rejected(()))
}
