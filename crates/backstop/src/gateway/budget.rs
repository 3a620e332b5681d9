//! The gateway-wide budget of request-body bytes held in memory for replay.
//!
//! A request that its route may retry keeps up to the route's `replay_limit` of its body in
//! memory (so a retry can send it again). Without a bound over all requests, many concurrent
//! uploads would each keep that much: the budget is that bound. Before forwarding such a
//! request the gateway reserves the most its replay buffer can hold; when the budget cannot
//! grant it, the request is answered `503` with `Retry-After` at once rather than queued, so
//! a burst costs neither memory nor waiting connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes that may be held for replay across the whole gateway, and how many are reserved.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    total: u64,
    available: AtomicU64,
}

/// Bytes reserved from a [`BufferBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: u64,
}

impl BufferBudget {
    pub(crate) fn new(total: u64) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            total,
            available: AtomicU64::new(total),
        })
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved right now.
    pub(crate) fn reserved(&self) -> u64 {
        self.total
            .saturating_sub(self.available.load(Ordering::Acquire))
    }

    /// Reserves `bytes` now, or gives `None` when fewer are available: the caller refuses the
    /// request instead of waiting.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(bytes)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_refused_beyond_the_total_and_given_back_when_dropped() {
        let budget = BufferBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert_eq!(budget.reserved(), 60);
        assert!(budget.try_reserve(41).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.reserved(), 100);
        drop(a);
        assert_eq!(budget.reserved(), 40);
        assert!(budget.try_reserve(60).is_some());
        drop(b);
        assert_eq!(budget.reserved(), 0);
        assert_eq!(budget.total(), 100);
    }
}
