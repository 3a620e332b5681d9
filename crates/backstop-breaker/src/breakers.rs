//! [`Breakers`]: the public handle on a layer's breakers — snapshots, subscriptions, manual
//! control.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::key::BreakerKey;
use crate::registry::Registry;
use crate::state::{Mode, Snapshot, State};

/// A handle on every breaker of one layer: snapshots, subscriptions and manual control.
///
/// Get one with [`CircuitBreakerLayer::breakers`](crate::CircuitBreakerLayer::breakers); it is
/// cheap to clone and shares the layer's breakers.
pub struct Breakers<K: BreakerKey> {
    registry: Arc<Registry<K>>,
}

impl<K: BreakerKey> Clone for Breakers<K> {
    fn clone(&self) -> Self {
        Breakers {
            registry: self.registry.clone(),
        }
    }
}

impl<K: BreakerKey> fmt::Debug for Breakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K: BreakerKey> Breakers<K> {
    pub(crate) fn new(registry: Arc<Registry<K>>) -> Breakers<K> {
        Breakers { registry }
    }

    /// How many breakers are kept.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether no breaker is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state of the breaker of `key`, if it exists.
    pub fn state(&self, key: &K::Key) -> Option<State> {
        self.registry.get(key).map(|b| b.state())
    }

    /// A snapshot of the breaker of `key`, if it exists.
    pub fn snapshot(&self, key: &K::Key) -> Option<Snapshot> {
        self.registry.get(key).map(|b| b.snapshot())
    }

    /// Snapshots of every breaker.
    pub fn snapshots(&self) -> Vec<(K::Key, Snapshot)> {
        self.registry
            .all()
            .into_iter()
            .map(|b| (b.key.clone(), b.snapshot()))
            .collect()
    }

    /// A receiver of the state of the breaker of `key` (created if new), changing on every
    /// state change.
    pub fn subscribe(&self, key: &K::Key) -> watch::Receiver<State> {
        self.registry.for_key(key).subscribe()
    }

    /// Isolates `key`: every call fails at once until [`automatic`](Breakers::automatic).
    /// Creates the breaker if new; a breaker set by hand is never evicted.
    pub fn force_open(&self, key: &K::Key) {
        self.registry.for_key(key).set_mode(Mode::ForcedOpen);
    }

    /// Holds `key` closed: every call flows, nothing trips, until
    /// [`automatic`](Breakers::automatic).
    pub fn force_closed(&self, key: &K::Key) {
        self.registry.for_key(key).set_mode(Mode::ForcedClosed);
    }

    /// Runs `key`'s breaker without ever rejecting a call.
    pub fn metrics_only(&self, key: &K::Key) {
        self.registry.for_key(key).set_mode(Mode::MetricsOnly);
    }

    /// Returns `key`'s breaker to automatic operation, freshly closed.
    pub fn automatic(&self, key: &K::Key) {
        self.registry.for_key(key).set_mode(Mode::Automatic);
    }

    /// Forgets every breaker idle for `idle_after` now, rather than at the next new key.
    pub fn evict_idle(&self) {
        self.registry.evict_idle();
    }
}
