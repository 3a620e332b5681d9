//! The circuit breaker section of a [`Policy`](super::Policy): [`BreakerPolicy`].

use std::time::Duration;

/// Circuit breaker settings (one breaker per host).
///
/// The breaker sits inside the retry, so it counts **attempts**, not calls: a call that tries
/// three times and fails three times is three failures. A policy in which one call's own
/// attempts could open the breaker for every caller (`retry.max_attempts` ≥
/// `consecutive_failures`, or ≥ `minimum_calls` of the failure-rate rule) is rejected unless
/// `single_call_may_trip` says that is intended.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct BreakerPolicy {
    /// Whether calls go through a breaker. Default `true`.
    pub enabled: bool,
    /// Consecutive failures that open the circuit. Default `5`.
    pub consecutive_failures: u32,
    /// Failure rate over the last `window_calls` that opens it, 0.0 < rate ≤ 1.0. Default `0.5`.
    pub failure_rate: f64,
    /// The sliding window, in calls. Default `100`.
    pub window_calls: u32,
    /// Calls the window must hold before the rate counts. Default `20`.
    pub minimum_calls: u32,
    /// The first cool-down before a probe. Default `5s`.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub open_for: Duration,
    /// The longest cool-down after repeated trips. Default `300s`.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub max_open_for: Duration,
    /// Probes let through when half-open. Default `1`.
    pub half_open_probes: u32,
    /// Allow a policy in which one call's own retries can open the breaker (see above).
    /// Default `false`.
    pub single_call_may_trip: bool,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_calls: 100,
            minimum_calls: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 1,
            single_call_may_trip: false,
        }
    }
}
