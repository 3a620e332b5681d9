//! The names of the metrics the circuit breaker records with the `metrics` feature, and of their
//! labels.
//!
//! The names are always compiled (they are only strings, for dashboards and tests); the metrics
//! are recorded only with the crate's `metrics` feature, through the
//! [`metrics`](https://docs.rs/metrics) facade: into whichever recorder the application installs,
//! and into metrics' no-op recorder otherwise.
//!
//! | name | type | labels | when |
//! |---|---|---|---|
//! | [`STATE`] `backstop.breaker.state` | gauge | [`KEY`] | set when a breaker is created (0) and on every transition: 0 closed, 1 half-open, 2 open ([`state_value`]) |
//! | [`TRANSITIONS`] `backstop.breaker.transitions` | counter | [`KEY`], [`FROM`], [`TO`] | every state change |
//! | [`REJECTIONS`] `backstop.breaker.rejections` | counter | [`KEY`] | a call rejected while open |
//!
//! [`KEY`] is the breaker's key as [`BreakerKey::label`](crate::BreakerKey::label) renders it
//! (the authority, e.g. `http://api.internal:80`, by default), bounded by
//! [`host_label`](backstop_classify::telemetry::host_label): the first 1024 keys keep their name,
//! later ones share `"_other"`. [`FROM`] and [`TO`] are [`State::label`](crate::State::label)s.

use crate::state::State;

/// Gauge: the state of each breaker, per [`KEY`] — see [`state_value`].
pub const STATE: &str = "backstop.breaker.state";

/// Counter: state changes, per [`KEY`], [`FROM`] and [`TO`].
pub const TRANSITIONS: &str = "backstop.breaker.transitions";

/// Counter: calls rejected because the breaker was open (or half-open with no probe free, or
/// forced open), per [`KEY`].
pub const REJECTIONS: &str = "backstop.breaker.rejections";

/// Label: the breaker's key, bounded.
pub const KEY: &str = "key";

/// Label: the state a transition left ([`State::label`]).
pub const FROM: &str = "from";

/// Label: the state a transition entered ([`State::label`]).
pub const TO: &str = "to";

/// The value of the [`STATE`] gauge for `state`: 0 closed (or forced closed), 1 half-open,
/// 2 open (or forced open).
pub const fn state_value(state: State) -> f64 {
    match state {
        State::Closed | State::ForcedClosed => 0.0,
        State::HalfOpen => 1.0,
        State::Open | State::ForcedOpen => 2.0,
    }
}

/// Registers the description of every metric above with the installed recorder (the help text a
/// Prometheus exporter shows). Optional: the metrics are recorded without it.
#[cfg(feature = "metrics")]
pub fn describe() {
    metrics::describe_gauge!(
        STATE,
        "Circuit breaker state per key: 0 closed, 1 half-open, 2 open"
    );
    metrics::describe_counter!(TRANSITIONS, "Circuit breaker state changes");
    metrics::describe_counter!(REJECTIONS, "Calls rejected by an open circuit breaker");
}
