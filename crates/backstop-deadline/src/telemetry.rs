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
    count(side);
}

/// Counts an expiry, with keys built at compile time (no allocation).
#[cfg(feature = "metrics")]
fn count(side: &'static str) {
    use ::metrics::{Key, Label, Level, Metadata};

    use crate::metrics::{EXPIRED, SIDE, SIDE_CLIENT, SIDE_SERVER};

    static CLIENT: [Label; 1] = [Label::from_static_parts(SIDE, SIDE_CLIENT)];
    static SERVER: [Label; 1] = [Label::from_static_parts(SIDE, SIDE_SERVER)];
    static CLIENT_KEY: Key = Key::from_static_parts(EXPIRED, &CLIENT);
    static SERVER_KEY: Key = Key::from_static_parts(EXPIRED, &SERVER);
    static METADATA: Metadata<'static> = Metadata::new(TARGET, Level::INFO, Some(module_path!()));
    let key = if side == SIDE_SERVER {
        &SERVER_KEY
    } else {
        &CLIENT_KEY
    };
    ::metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
}
