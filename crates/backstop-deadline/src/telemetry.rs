//! What the deadline layers tell `tracing` and (with the `metrics` feature) `metrics` when a
//! deadline fires: the "deadline expired" event and the counter [`crate::metrics::EXPIRED`].

use std::time::Duration;

/// The target of the layers' events: the crate's name.
pub(crate) const TARGET: &str = "backstop_deadline";

/// A call failed by its deadline on `side` (`"client"` or `"server"`); `budget` is the deadline's
/// total when the layer knows it (the timeout it applied itself).
#[cold]
#[inline(never)]
pub(crate) fn expired(side: &'static str, budget: Option<Duration>) {
    tracing::info!(
        target: TARGET,
        side,
        budget_ms = budget.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
        "deadline expired"
    );
    #[cfg(feature = "metrics")]
    ::metrics::counter!(crate::metrics::EXPIRED, crate::metrics::SIDE => side).increment(1);
}
