//! The retry section of a [`Policy`](super::Policy): [`RetryPolicy`], its [`BudgetPolicy`] and
//! [`JitterMode`].

use std::time::Duration;

/// How retries are spread out; see `backstop_retry::Jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum JitterMode {
    /// `random(0, min(cap, base·2ⁿ))`: the fewest calls under contention (the default).
    #[default]
    Full,
    /// Half fixed, half random.
    Equal,
    /// `min(cap, random(base, 3·previous))`.
    Decorrelated,
    /// No jitter (not recommended: synchronised clients retry in waves).
    None,
}

impl From<JitterMode> for backstop_retry::Jitter {
    fn from(mode: JitterMode) -> Self {
        match mode {
            JitterMode::Full => backstop_retry::Jitter::Full,
            JitterMode::Equal => backstop_retry::Jitter::Equal,
            JitterMode::Decorrelated => backstop_retry::Jitter::Decorrelated,
            JitterMode::None => backstop_retry::Jitter::None,
        }
    }
}

/// The retry budget: retries allowed as a fraction of recent requests, plus a floor per second.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct BudgetPolicy {
    /// Whether retries are budgeted at all. Default `true`.
    pub enabled: bool,
    /// Retries as a fraction of requests, 0.0 ..= 10.0. Default `0.2`.
    pub ratio: f64,
    /// Retries always allowed per second, whatever the ratio. Default `10`.
    pub min_per_second: u32,
    /// The window the ratio is measured over. Default `10s`.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub window: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            enabled: true,
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Retry settings.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct RetryPolicy {
    /// Attempts per request, the first included: 1 means "never retry". 1 ..= 10, default `3`.
    pub max_attempts: u32,
    /// The first backoff. Default `50ms`; at most `max_delay`.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub base_delay: Duration,
    /// The longest backoff, jitter included. Default `5s`.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub max_delay: Duration,
    /// How delays are randomised. Default `full`.
    pub jitter: JitterMode,
    /// The longest server `Retry-After` honoured. Default `30s`.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub retry_after_max: Duration,
    /// The largest request body kept for replay, in bytes. Default 65 536.
    pub replay_limit: usize,
    /// Attach a fresh `Idempotency-Key` to non-idempotent requests so they may be retried.
    /// Default `false`.
    pub attach_idempotency_key: bool,
    /// Retry 409 Conflict (for requests that may be retried at all: idempotent or keyed).
    /// Default `false`: a 409 usually means a lost race that a replay would lose again; turn it
    /// on for servers that answer 409 for "this `Idempotency-Key` is still in progress".
    pub retry_conflict: bool,
    /// The retry budget.
    pub budget: BudgetPolicy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            jitter: JitterMode::Full,
            retry_after_max: Duration::from_secs(30),
            replay_limit: 64 * 1024,
            attach_idempotency_key: false,
            retry_conflict: false,
            budget: BudgetPolicy::default(),
        }
    }
}
