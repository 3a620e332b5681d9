//! [`Policy`]: every client layer's settings in one value, validated with messages that name the
//! field and the rule, and (with the `config` feature) deserializable from TOML or JSON.
//!
//! One concept per file: the sections ([`RetryPolicy`] and its [`BudgetPolicy`] in `retry.rs`,
//! [`BreakerPolicy`] in `breaker.rs`, [`PropagationPolicy`] in `propagation.rs`), loading from
//! TOML and JSON (`load.rs`), [`Policy::validate`] (`validate.rs`) and the one table of bounds it
//! checks, quoted from the layers each setting configures (`bounds.rs`), and how a policy
//! composes with a builder's setters (`overlay.rs`).

mod bounds;
mod breaker;
#[cfg(feature = "config")]
mod load;
// How a policy composes with a client builder's setters: the builder's alone.
#[cfg(feature = "client")]
mod overlay;
mod propagation;
mod retry;
mod validate;

use std::time::Duration;

#[cfg(feature = "server")]
pub(crate) use self::bounds::within;
pub use self::breaker::BreakerPolicy;
#[cfg(all(feature = "config", feature = "gateway"))]
pub(crate) use self::load::path_error;
pub use self::propagation::PropagationPolicy;
pub use self::retry::{BudgetPolicy, JitterMode, RetryPolicy};

/// An invalid setting (its field a dotted path such as `retry.max_attempts`, prefixed with the
/// route when it comes from a route table) and the rule it broke.
pub use backstop_classify::ConfigError;

/// The attempt timeout when none is set: 10 s, or the deadline when that is shorter.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every client layer's settings. `Default` gives the documented production defaults; with the
/// `config` feature every field may be omitted in TOML or JSON, durations written like `"250ms"`
/// or `"5s"` (`Policy::from_toml`, `Policy::from_json`, or serde).
///
/// ```
/// # #[cfg(feature = "config")] {
/// let policy = backstop::Policy::from_toml(r#"
///     deadline = "2s"
///     attempt_timeout = "500ms"
///     [retry]
///     max_attempts = 1
/// "#)?;
/// assert_eq!(policy.retry.max_attempts, 1);
/// assert_eq!(policy.connect_timeout, std::time::Duration::from_secs(5)); // the default
/// # }
/// # Ok::<(), backstop::ConfigError>(())
/// ```
///
/// Without `config`, the same policy is written in Rust:
///
/// ```
/// use std::time::Duration;
///
/// let mut policy = backstop::Policy {
///     deadline: Duration::from_secs(2),
///     attempt_timeout: Some(Duration::from_millis(500)),
///     ..backstop::Policy::default()
/// };
/// policy.retry.max_attempts = 1;
/// policy.validate()?;
/// # Ok::<(), backstop::ConfigError>(())
/// ```
///
/// | field | default | rule |
/// |---|---|---|
/// | `deadline` | 30 s | the whole call, retries and backoff included; above zero |
/// | `deadline_covers_body` | true | whether the deadline also bounds reading the response body |
/// | `attempt_timeout` | unset: 10 s, or `deadline` when shorter | one attempt; when set, above zero ..= 1 day and ≤ `deadline`; at least 11 ms (set or following the deadline) while the deadline is propagated |
/// | `connect_timeout` | 5 s | DNS + TCP + TLS; 1 ms ..= 600 s (an attempt timeout shorter than it cuts a connect short too) |
/// | `idle_timeout` | 30 s | no byte while one is awaited; 1 ms ..= 24 h |
/// | `retry.*` | see [`RetryPolicy`] | 1 ≤ `max_attempts` ≤ 10; `base_delay` ≤ `max_delay` ≤ 1 h; `retry_after_max` ≤ 1 h; `replay_limit` ≤ 16 MiB; `budget.ratio` in 0..=10, `budget.min_per_second` ≤ 100 000, `budget.window` 100 ms ..= 1 h |
/// | `breaker.*` | see [`BreakerPolicy`] | `consecutive_failures` ≥ 1; `failure_rate` in (0, 1]; 1 ≤ `minimum_calls` ≤ `window_calls` ≤ 1 000 000; 1 ≤ `half_open_probes` ≤ 1 000; 0 < `open_for` ≤ `max_open_for` ≤ 30 years; one call's attempts cannot trip it unless `single_call_may_trip` |
/// | `propagation.*` | see [`PropagationPolicy`] | `header` a valid header name; `only_to` valid host patterns |
///
/// The bounds are those of the layers each setting configures, quoted in one table (see
/// [`Policy::validate`]): a policy that validates builds a client. The retry budget's and the
/// breaker's settings are checked even when they are disabled.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct Policy {
    /// The ceiling over the whole call.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub deadline: Duration,
    /// Whether the deadline also bounds the response body (until its end).
    pub deadline_covers_body: bool,
    /// The bound on one attempt; `None` (the default) follows the deadline: 10 s, or the
    /// deadline when that is shorter.
    #[cfg_attr(
        feature = "config",
        serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")
    )]
    pub attempt_timeout: Option<Duration>,
    /// The bound on establishing a connection (DNS + TCP + TLS).
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub connect_timeout: Duration,
    /// The idle bound on connections and response bodies.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub idle_timeout: Duration,
    /// Retry settings.
    pub retry: RetryPolicy,
    /// Circuit breaker settings.
    pub breaker: BreakerPolicy,
    /// Where the deadline is propagated.
    pub propagation: PropagationPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deadline: Duration::from_secs(30),
            deadline_covers_body: true,
            attempt_timeout: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            propagation: PropagationPolicy::default(),
        }
    }
}

impl Policy {
    /// The bound on one attempt: the one set, or 10 s, or the deadline when that is shorter.
    pub fn effective_attempt_timeout(&self) -> Duration {
        self.attempt_timeout
            .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT.min(self.deadline))
    }
}
