//! The one table of bounds a [`Policy`](super::Policy) is checked against.
//!
//! Every setting of a policy ends up in a layer, and every layer checks its own settings when it
//! is built. Each entry below quotes the check of the layer its setting configures — the crate,
//! the constructor and the number — so that [`Policy::validate`](super::Policy::validate)
//! rejects exactly what building the client would reject, with the policy's own field name: a
//! one-day `connect_timeout` fails validation naming `connect_timeout` and the 600 s limit,
//! instead of passing it and failing later inside the client's build.
//!
//! The numbers are quoted, not imported: the layers keep most of them private. When a layer's
//! limit changes, change it here; the tests (`bounds/tests.rs`) build the client's layers on
//! both sides of every bound (through `Client::assemble`, with validation skipped) and fail when
//! the table and the layers disagree.
//!
//! | setting | accepted | quoted from |
//! |---|---|---|
//! | `deadline` | above zero (longer than 30 years is clamped, never rejected) | `backstop_deadline::DeadlineLayerBuilder::build` |
//! | `attempt_timeout` | above zero ..= 1 day | `backstop_deadline::AttemptTimeoutLayerBuilder::build` |
//! | attempt timeout, set or following `deadline`, with propagation on | ≥ 11 ms (the 10 ms margin + 1 ms left for the callee) | `Propagation::validate_against`, called by the same build |
//! | `connect_timeout` | 1 ms ..= 600 s | `backstop_timeout::ConnectTimeoutLayer::new` (`MAX_CONNECT_TIMEOUT`) |
//! | `idle_timeout` | 1 ms ..= 24 h | `backstop_timeout::ConnectionIdleTimeoutLayer::try_new` (`MAX_IDLE_TIMEOUT`) |
//! | `retry.max_attempts` | 1 ..= 10 | `backstop_retry::RetryLayerBuilder::build` (`MAX_ATTEMPTS_LIMIT`) |
//! | `retry.max_delay` | 0 ..= 1 h | `backstop_retry::Backoff::new` (`MAX_BACKOFF_CAP`) |
//! | `retry.base_delay` | 0 ..= `retry.max_delay` | `backstop_retry::Backoff::new` |
//! | `retry.retry_after_max` | 0 ..= 1 h | `backstop_retry::RetryLayerBuilder::build` |
//! | `retry.replay_limit` | 0 ..= 16 MiB | `backstop_retry::RetryLayerBuilder::build` (`MAX_REPLAY_LIMIT`) |
//! | `retry.budget.ratio` | finite, 0 ..= 10 | `backstop_retry::RetryBudgetBuilder::build` |
//! | `retry.budget.min_per_second` | 0 ..= 100 000 | `backstop_retry::RetryBudgetBuilder::build` |
//! | `retry.budget.window` | 100 ms ..= 1 h | `backstop_retry::RetryBudgetBuilder::build` |
//! | `breaker.consecutive_failures` | ≥ 1 | `backstop_breaker::Builder::build` |
//! | `breaker.failure_rate` | finite, above 0 ..= 1 | `backstop_breaker::Builder::build` |
//! | `breaker.window_calls` | 1 ..= 1 000 000 | `backstop_breaker::Builder::build` (a count window) |
//! | `breaker.minimum_calls` | 1 ..= `breaker.window_calls` | `backstop_breaker::Builder::build` |
//! | `breaker.half_open_probes` | 1 ..= 1 000 | `backstop_breaker::Builder::build` |
//! | `breaker.open_for` | above zero ..= 30 years | `backstop_breaker::Builder::build` |
//! | `breaker.max_open_for` | `breaker.open_for` ..= 30 years | `backstop_breaker::Builder::build` |
//!
//! The retry budget's and the breaker's bounds are checked even when the section is disabled
//! (the layer is then never built): a policy that is valid stays valid when a section is turned
//! on.

use std::fmt;
use std::time::Duration;

use super::ConfigError;

/// An inclusive range one setting must lie in, and the layer check it quotes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound<T> {
    /// The setting's dotted path in a [`Policy`](super::Policy).
    pub(crate) field: &'static str,
    /// The least value accepted.
    pub(crate) min: T,
    /// The greatest value accepted; `None` when the layer has no upper limit.
    pub(crate) max: Option<T>,
    /// Where the numbers come from, for the error message.
    pub(crate) layer: &'static str,
}

impl<T: PartialOrd + fmt::Debug + Copy> Bound<T> {
    /// Accepts `value` within the range, else names the field, the range and the layer.
    pub(crate) fn check(&self, value: T) -> Result<(), ConfigError> {
        let above_max = self.max.is_some_and(|max| value > max);
        // `!(value >= min)` rather than `value < min`, so that NaN is rejected too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let below_min = !(value >= self.min);
        if !below_min && !above_max {
            return Ok(());
        }
        let range = match self.max {
            Some(max) => format!("between {:?} and {max:?}", self.min),
            None => format!("at least {:?}", self.min),
        };
        Err(ConfigError::new(
            self.field,
            format!("must be {range}, got {value:?} ({})", self.layer),
        ))
    }
}

/// The breaker's far-future limit on cool-downs (`FAR_FUTURE` in backstop-breaker's config).
const THIRTY_YEARS: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The smallest duration above zero: what "must be greater than zero" accepts.
const ABOVE_ZERO: Duration = Duration::from_nanos(1);

/// `backstop_deadline::DeadlineLayerBuilder::build`: "timeout must be greater than zero"; longer
/// than 30 years is clamped, not rejected.
pub(crate) const DEADLINE: Bound<Duration> = Bound {
    field: "deadline",
    min: ABOVE_ZERO,
    max: None,
    layer: "the limit of backstop_deadline::DeadlineLayer",
};

/// `backstop_deadline::AttemptTimeoutLayerBuilder::build`: above zero, at most one day.
pub(crate) const ATTEMPT_TIMEOUT: Bound<Duration> = Bound {
    field: "attempt_timeout",
    min: ABOVE_ZERO,
    max: Some(Duration::from_secs(86_400)),
    layer: "the limit of backstop_deadline::AttemptTimeoutLayer",
};

/// The shortest attempt timeout while the deadline is propagated: the propagation margin
/// (`backstop_deadline::propagate::DEFAULT_MARGIN`, 10 ms; a policy cannot change it) plus the
/// least time a callee is sent (`MIN_PROPAGATED`, 1 ms). `AttemptTimeoutLayerBuilder::build`
/// rejects less, through `Propagation::validate_against`.
pub(crate) const PROPAGATED_ATTEMPT_MIN: Duration = Duration::from_millis(11);

/// `backstop_timeout::ConnectTimeoutLayer::new`: 1 ms ..= `MAX_CONNECT_TIMEOUT` (600 s).
pub(crate) const CONNECT_TIMEOUT: Bound<Duration> = Bound {
    field: "connect_timeout",
    min: Duration::from_millis(1),
    max: Some(Duration::from_secs(600)),
    layer: "the limit of backstop_timeout::ConnectTimeoutLayer",
};

/// `backstop_timeout::ConnectionIdleTimeoutLayer::try_new`: 1 ms ..= `MAX_IDLE_TIMEOUT` (24 h).
pub(crate) const IDLE_TIMEOUT: Bound<Duration> = Bound {
    field: "idle_timeout",
    min: Duration::from_millis(1),
    max: Some(Duration::from_secs(24 * 3600)),
    layer: "the limit of backstop_timeout::ConnectionIdleTimeoutLayer",
};

/// `backstop_retry::RetryLayerBuilder::build`: 1 ..= `MAX_ATTEMPTS_LIMIT` (10).
pub(crate) const MAX_ATTEMPTS: Bound<u32> = Bound {
    field: "retry.max_attempts",
    min: 1,
    max: Some(10),
    layer: "the limit of backstop_retry::RetryLayer",
};

/// `backstop_retry::Backoff::new`: the cap at most `MAX_BACKOFF_CAP` (one hour). The base must
/// not exceed the cap (a cross-field rule, in `validate.rs`).
pub(crate) const MAX_DELAY: Bound<Duration> = Bound {
    field: "retry.max_delay",
    min: Duration::ZERO,
    max: Some(Duration::from_secs(3600)),
    layer: "the limit of backstop_retry::Backoff",
};

/// `backstop_retry::RetryLayerBuilder::build`: at most one hour.
pub(crate) const RETRY_AFTER_MAX: Bound<Duration> = Bound {
    field: "retry.retry_after_max",
    min: Duration::ZERO,
    max: Some(Duration::from_secs(3600)),
    layer: "the limit of backstop_retry::RetryLayer",
};

/// `backstop_retry::RetryLayerBuilder::build`: at most `MAX_REPLAY_LIMIT` (16 MiB).
pub(crate) const REPLAY_LIMIT: Bound<usize> = Bound {
    field: "retry.replay_limit",
    min: 0,
    max: Some(16 * 1024 * 1024),
    layer: "the limit of backstop_retry::RetryLayer",
};

/// `backstop_retry::RetryBudgetBuilder::build`: a finite ratio, 0 ..= 10.
pub(crate) const BUDGET_RATIO: Bound<f64> = Bound {
    field: "retry.budget.ratio",
    min: 0.0,
    max: Some(10.0),
    layer: "the limit of backstop_retry::RetryBudget",
};

/// `backstop_retry::RetryBudgetBuilder::build`: at most 100 000.
pub(crate) const BUDGET_MIN_PER_SECOND: Bound<u32> = Bound {
    field: "retry.budget.min_per_second",
    min: 0,
    max: Some(100_000),
    layer: "the limit of backstop_retry::RetryBudget",
};

/// `backstop_retry::RetryBudgetBuilder::build`: 100 ms ..= one hour.
pub(crate) const BUDGET_WINDOW: Bound<Duration> = Bound {
    field: "retry.budget.window",
    min: Duration::from_millis(100),
    max: Some(Duration::from_secs(3600)),
    layer: "the limit of backstop_retry::RetryBudget",
};

/// `backstop_breaker::Builder::build`: at least 1 (the facade always turns the rule on).
pub(crate) const CONSECUTIVE_FAILURES: Bound<u32> = Bound {
    field: "breaker.consecutive_failures",
    min: 1,
    max: None,
    layer: "the limit of backstop_breaker::CircuitBreakerLayer",
};

/// `backstop_breaker::Builder::build`: a finite rate in (0, 1]. The lower end is open: the
/// smallest accepted value is the least positive `f64`.
pub(crate) const FAILURE_RATE: Bound<f64> = Bound {
    field: "breaker.failure_rate",
    min: f64::from_bits(1),
    max: Some(1.0),
    layer: "the limit of backstop_breaker::CircuitBreakerLayer, a rate in (0, 1]",
};

/// `backstop_breaker::Builder::build`: a count window of 1 ..= 1 000 000 calls.
pub(crate) const WINDOW_CALLS: Bound<u32> = Bound {
    field: "breaker.window_calls",
    min: 1,
    max: Some(1_000_000),
    layer: "the limit of backstop_breaker::CircuitBreakerLayer",
};

/// `backstop_breaker::Builder::build`: at least 1; at most `window_calls` (cross-field, in
/// `validate.rs`).
pub(crate) const MINIMUM_CALLS: Bound<u32> = Bound {
    field: "breaker.minimum_calls",
    min: 1,
    max: None,
    layer: "the limit of backstop_breaker::CircuitBreakerLayer",
};

/// `backstop_breaker::Builder::build`: 1 ..= 1 000 probes.
pub(crate) const HALF_OPEN_PROBES: Bound<u32> = Bound {
    field: "breaker.half_open_probes",
    min: 1,
    max: Some(1000),
    layer: "the limit of backstop_breaker::CircuitBreakerLayer",
};

/// `backstop_breaker::Builder::build`: above zero, at most 30 years.
pub(crate) const OPEN_FOR: Bound<Duration> = Bound {
    field: "breaker.open_for",
    min: ABOVE_ZERO,
    max: Some(THIRTY_YEARS),
    layer: "the limit of backstop_breaker::CircuitBreakerLayer",
};

/// `backstop_breaker::Builder::build`: at most 30 years; at least `open_for` (cross-field, in
/// `validate.rs`).
pub(crate) const MAX_OPEN_FOR: Bound<Duration> = Bound {
    field: "breaker.max_open_for",
    min: Duration::ZERO,
    max: Some(THIRTY_YEARS),
    layer: "the limit of backstop_breaker::CircuitBreakerLayer",
};

/// A duration range checked outside the policy (the server stack's own settings).
#[cfg(feature = "server")]
pub(crate) fn within(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    ConfigError::check_between(field, value, min, max).map(drop)
}

// The layers' side of each bound is probed by building a client's layers.
#[cfg(all(test, feature = "client"))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
