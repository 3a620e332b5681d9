//! [`CircuitBreakerLayer`], and the [`Readiness`] of the services it makes.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::authority::PerAuthority;
use crate::breakers::Breakers;
use crate::builder::Builder;
use crate::gate::Gate;
use crate::key::{BreakerKey, Single};
use crate::registry::Registry;
use crate::service::CircuitBreaker;
use crate::settings::Settings;

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

    /// Admission to this layer's breakers without wrapping a service: see [`Gate`].
    pub fn gate(&self) -> Gate<K> {
        Gate::new(self.registry.clone())
    }

    /// The breakers of this layer: snapshots, subscriptions, manual control.
    pub fn breakers(&self) -> Breakers<K> {
        Breakers::new(self.registry.clone())
    }
}

impl<S, K: BreakerKey> Layer<S> for CircuitBreakerLayer<K> {
    type Service = CircuitBreaker<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.registry.clone(), self.readiness)
    }
}

/// What the service does while its circuit is open.
///
/// Only a layer with a [single breaker](CircuitBreakerLayer::single) can report not-ready: a
/// keyed breaker does not know which key the next request will have until `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readiness {
    /// `poll_ready` follows the inner service; calls made while the circuit is open fail at once
    /// with [`Kind::BreakerOpen`](backstop_classify::Kind::BreakerOpen). The right choice in
    /// front of one client shared by many callers.
    #[default]
    FailCalls,
    /// `poll_ready` returns `Pending` while the circuit is open (and while every half-open probe
    /// permit is taken), and becomes ready when a probe may go — the permit is reserved by
    /// `poll_ready` and used by the next `call`. The right choice for one endpoint inside a
    /// tower balancer, which then routes around the sick endpoint instead of failing calls.
    /// A caller using the service directly waits for the cool-down instead of failing.
    NotReady,
}
