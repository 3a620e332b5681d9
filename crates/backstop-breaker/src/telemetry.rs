//! What a breaker tells `tracing` and (with the `metrics` feature) `metrics`: the transition
//! event, and the gauge and counters named in [`crate::metrics`].

use crate::state::{Reason, State};

/// The target of the breaker's events: the crate's name.
pub(crate) const TARGET: &str = "backstop_breaker";

/// The "circuit breaker transition" event: warn when the breaker opens, info otherwise.
#[cold]
pub(crate) fn transition_event(
    key: &dyn std::fmt::Debug,
    from: State,
    to: State,
    reason: Reason,
    open_for: Option<std::time::Duration>,
    metrics_only: bool,
) {
    let open_for_ms = open_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if matches!(to, State::Open | State::ForcedOpen) {
        tracing::warn!(
            target: TARGET,
            key = ?key,
            from = from.label(),
            to = to.label(),
            reason = reason.describe(),
            open_for_ms,
            metrics_only,
            "circuit breaker transition"
        );
    } else {
        tracing::info!(
            target: TARGET,
            key = ?key,
            from = from.label(),
            to = to.label(),
            reason = reason.describe(),
            open_for_ms,
            metrics_only,
            "circuit breaker transition"
        );
    }
}

/// One breaker's `key` label, rendered and bounded once when the breaker is made; nothing
/// without the `metrics` feature.
pub(crate) struct KeyMetrics {
    #[cfg(feature = "metrics")]
    key: std::sync::Arc<str>,
    /// The rejection counter's key, built once: a rejection allocates nothing.
    #[cfg(feature = "metrics")]
    rejections: metrics::Key,
}

#[cfg(not(feature = "metrics"))]
impl KeyMetrics {
    #[inline(always)]
    pub(crate) fn new<K: crate::BreakerKey>(_key_fn: &K, _key: &K::Key) -> KeyMetrics {
        KeyMetrics {}
    }
    #[inline(always)]
    pub(crate) fn state(&self, _state: State) {}
    #[inline(always)]
    pub(crate) fn transition(&self, _from: State, _to: State) {}
    #[inline(always)]
    pub(crate) fn rejection(&self) {}
}

#[cfg(feature = "metrics")]
impl KeyMetrics {
    pub(crate) fn new<K: crate::BreakerKey>(key_fn: &K, key: &K::Key) -> KeyMetrics {
        let key = backstop_classify::telemetry::host_label(&key_fn.label(key));
        KeyMetrics {
            rejections: metrics::Key::from_parts(
                crate::metrics::REJECTIONS,
                vec![metrics::Label::new(crate::metrics::KEY, key.clone())],
            ),
            key,
        }
    }

    /// Sets the state gauge.
    pub(crate) fn state(&self, state: State) {
        use crate::metrics::{KEY, STATE, state_value};
        metrics::gauge!(target: TARGET, STATE, KEY => self.key.clone()).set(state_value(state));
    }

    /// Counts a transition and sets the state gauge to its new state.
    pub(crate) fn transition(&self, from: State, to: State) {
        use crate::metrics::{FROM, KEY, TO, TRANSITIONS};
        metrics::counter!(
            target: TARGET,
            TRANSITIONS,
            KEY => self.key.clone(),
            FROM => from.label(),
            TO => to.label()
        )
        .increment(1);
        self.state(to);
    }

    /// Counts a call rejected while open.
    pub(crate) fn rejection(&self) {
        static METADATA: metrics::Metadata<'static> =
            metrics::Metadata::new(TARGET, metrics::Level::INFO, Some(module_path!()));
        metrics::with_recorder(|recorder| recorder.register_counter(&self.rejections, &METADATA))
            .increment(1);
    }
}
