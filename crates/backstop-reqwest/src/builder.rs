//! [`Builder`]: the middleware's settings, named and defaulted as in backstop's `Policy`, and
//! their validation.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use backstop_breaker::{CircuitBreakerLayer, Window};
use backstop_classify::{ConfigError, HttpPolicy};
use backstop_retry::{
    Backoff, Jitter, MAX_ATTEMPTS_RANGE, MAX_BACKOFF_CAP, RetryBudget, RetryBudgetBuilder,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore};

use crate::middleware::{BackstopMiddleware, Config};

/// The longest `attempt_timeout` accepted: one day (backstop's attempt timeout layer's bound).
pub const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The attempt timeout when none is set: 10 s, or the deadline when that is shorter (as in
/// backstop's `Policy`).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`BackstopMiddleware`]. Every setting has the name and the default of the field of
/// backstop's `Policy` it mirrors; [`build`](Builder::build) checks them with the bounds of the
/// layer each configures and names the field (`retry.max_delay`, `breaker.open_for`…) of the
/// first one that is wrong.
///
/// | setter | `Policy` field | default |
/// |---|---|---|
/// | [`deadline`](Builder::deadline) | `deadline` | 30 s |
/// | [`deadline_covers_body`](Builder::deadline_covers_body) | `deadline_covers_body` | true |
/// | [`attempt_timeout`](Builder::attempt_timeout) | `attempt_timeout` | 10 s, or the deadline when shorter |
/// | [`max_attempts`](Builder::max_attempts) | `retry.max_attempts` | 3 |
/// | [`base_delay`](Builder::base_delay) | `retry.base_delay` | 50 ms |
/// | [`max_delay`](Builder::max_delay) | `retry.max_delay` | 5 s |
/// | [`jitter`](Builder::jitter) | `retry.jitter` | full |
/// | [`retry_after_max`](Builder::retry_after_max) | `retry.retry_after_max` | 30 s |
/// | [`retry_conflict`](Builder::retry_conflict) | `retry.retry_conflict` | false |
/// | [`budget`](Builder::budget), [`no_budget`](Builder::no_budget) | `retry.budget.*` | 20 %, 10/s, 10 s |
/// | [`consecutive_failures`](Builder::consecutive_failures) | `breaker.consecutive_failures` | 5 |
/// | [`failure_rate`](Builder::failure_rate) | `breaker.failure_rate` | 0.5 |
/// | [`window_calls`](Builder::window_calls) | `breaker.window_calls` | 100 |
/// | [`minimum_calls`](Builder::minimum_calls) | `breaker.minimum_calls` | 20 |
/// | [`open_for`](Builder::open_for) | `breaker.open_for` | 5 s |
/// | [`max_open_for`](Builder::max_open_for) | `breaker.max_open_for` | 300 s |
/// | [`half_open_probes`](Builder::half_open_probes) | `breaker.half_open_probes` | 1 |
/// | [`single_call_may_trip`](Builder::single_call_may_trip) | `breaker.single_call_may_trip` | false |
/// | [`no_breaker`](Builder::no_breaker) | `breaker.enabled = false` | a breaker per host |
///
/// `connect_timeout` and `idle_timeout` are the client's: set them on reqwest's
/// `ClientBuilder` (`connect_timeout`, `read_timeout`, `pool_idle_timeout`). `replay_limit` has
/// no counterpart: reqwest keeps a buffered body whole, and a streaming body cannot be sent
/// twice. `attach_idempotency_key` is not offered (see the crate's README).
///
/// ```
/// use std::time::Duration;
/// use backstop_reqwest::BackstopMiddleware;
///
/// let err = BackstopMiddleware::builder()
///     .base_delay(Duration::from_secs(10))
///     .max_delay(Duration::from_secs(1))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "retry.base_delay");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    deadline: Duration,
    deadline_covers_body: bool,
    attempt_timeout: Option<Duration>,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    jitter: Jitter,
    retry_after_max: Duration,
    retry_conflict: bool,
    budget: RetryBudgetBuilder,
    budget_enabled: bool,
    breaker_enabled: bool,
    consecutive_failures: u32,
    failure_rate: f64,
    window_calls: u32,
    minimum_calls: u32,
    open_for: Duration,
    max_open_for: Duration,
    half_open_probes: u32,
    single_call_may_trip: bool,
    seed: Option<u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            deadline: Duration::from_secs(30),
            deadline_covers_body: true,
            attempt_timeout: None,
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            jitter: Jitter::Full,
            retry_after_max: Duration::from_secs(30),
            retry_conflict: false,
            budget: RetryBudget::builder(),
            budget_enabled: true,
            breaker_enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_calls: 100,
            minimum_calls: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 1,
            single_call_may_trip: false,
            seed: None,
        }
    }
}

impl Builder {
    /// The ceiling over the whole call, retries and backoff included; above zero. Default 30 s.
    ///
    /// A deadline already in force — a `backstop_deadline::Deadline` in the request's
    /// extensions or the ambient one of the server handler making the call — wins when it is
    /// earlier.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether the deadline also bounds reading the response body (through reqwest's
    /// per-request timeout, which then ends the body with a timeout error). Default `true`.
    ///
    /// reqwest lets a request's timeout replace the client's (`ClientBuilder::timeout`), so
    /// with this on that one no longer applies: bound the call with
    /// [`deadline`](Builder::deadline) and each attempt with
    /// [`attempt_timeout`](Builder::attempt_timeout) instead. A shorter timeout set on the
    /// request itself is kept.
    pub fn deadline_covers_body(mut self, covers: bool) -> Self {
        self.deadline_covers_body = covers;
        self
    }

    /// The bound on one attempt, until the response head; above zero, at most one day and at
    /// most the deadline. Default: 10 s, or the deadline when that is shorter.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Attempts per call, the first included: 1 means "never retry"; 1 ..= 10. Default 3.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The first backoff; at most `max_delay`. Default 50 ms.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// The longest backoff, jitter included; at most one hour. Default 5 s.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How delays are randomised. Default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest `Retry-After` (on 429 and 503) honoured; at most one hour. Default 30 s. A
    /// server asking for longer gets no early retry: its response comes back as it is.
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// Retry 409 Conflict for requests that may be retried at all (idempotent or keyed), for
    /// servers that answer 409 for "this `Idempotency-Key` is still in progress". Default
    /// `false`.
    pub fn retry_conflict(mut self, retry: bool) -> Self {
        self.retry_conflict = retry;
        self
    }

    /// The retry budget's settings (ratio, floor per second, window); it is shared by every
    /// request through this middleware and its clones. Default 20 %, 10/s over 10 s.
    pub fn budget(mut self, budget: RetryBudgetBuilder) -> Self {
        self.budget = budget;
        self.budget_enabled = true;
        self
    }

    /// No retry budget (its settings are still checked by [`build`](Builder::build)).
    pub fn no_budget(mut self) -> Self {
        self.budget_enabled = false;
        self
    }

    /// Consecutive failed attempts that open a host's circuit; at least 1. Default 5.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The failure rate over the last `window_calls` attempts that opens it, in (0, 1].
    /// Default 0.5.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// The breaker's sliding window, in attempts; 1 ..= 1 000 000. Default 100.
    pub fn window_calls(mut self, n: u32) -> Self {
        self.window_calls = n;
        self
    }

    /// Attempts the window must hold before the rate counts; 1 ..= `window_calls`. Default 20.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// The first cool-down before a probe; above zero, at most `max_open_for`. Default 5 s.
    pub fn open_for(mut self, period: Duration) -> Self {
        self.open_for = period;
        self
    }

    /// The longest cool-down after repeated trips; at most 30 years. Default 300 s.
    pub fn max_open_for(mut self, period: Duration) -> Self {
        self.max_open_for = period;
        self
    }

    /// Probes let through when half-open; 1 ..= 1000. Default 1.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n;
        self
    }

    /// Allow settings in which one call's own attempts can open the breaker
    /// (`max_attempts` ≥ `consecutive_failures` or ≥ `minimum_calls`). Default `false`: the
    /// breaker counts attempts, so such a setting lets one unlucky call open the circuit for
    /// every caller, and [`build`](Builder::build) rejects it.
    pub fn single_call_may_trip(mut self, allowed: bool) -> Self {
        self.single_call_may_trip = allowed;
        self
    }

    /// No circuit breaker (its settings are still checked by [`build`](Builder::build)).
    pub fn no_breaker(mut self) -> Self {
        self.breaker_enabled = false;
        self
    }

    /// Seeds the jitter of the backoff and the breaker's cool-downs, making them reproducible.
    /// Default: seeded from the OS.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The middleware, or the first setting that breaks its rule, named as in backstop's
    /// `Policy`.
    pub fn build(self) -> Result<BackstopMiddleware, ConfigError> {
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be above zero"));
        }
        if let Some(attempt) = self.attempt_timeout {
            ConfigError::check_between(
                "attempt_timeout",
                attempt,
                Duration::from_nanos(1),
                MAX_ATTEMPT_TIMEOUT,
            )?;
            if attempt > self.deadline {
                return Err(ConfigError::new(
                    "attempt_timeout",
                    format!(
                        "must not exceed deadline ({:?}), got {attempt:?}",
                        self.deadline
                    ),
                ));
            }
        }
        if !MAX_ATTEMPTS_RANGE.contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "retry.max_attempts",
                format!(
                    "must be between 1 and 10 (backstop_retry::MAX_ATTEMPTS_LIMIT), got {}",
                    self.max_attempts
                ),
            ));
        }
        let backoff = Backoff::new(self.base_delay, self.max_delay, self.jitter)
            .map_err(|err| err.within("retry"))?;
        if self.retry_after_max > MAX_BACKOFF_CAP {
            return Err(ConfigError::new(
                "retry.retry_after_max",
                format!("must be at most one hour, got {:?}", self.retry_after_max),
            ));
        }
        let budget = self.budget.build().map_err(|err| err.within("retry"))?;
        let seed = self
            .seed
            .unwrap_or_else(|| SmallRng::from_os_rng().next_u64());
        let breaker = CircuitBreakerLayer::builder()
            .consecutive_failures(self.consecutive_failures)
            .failure_rate(self.failure_rate)
            .window(Window::count(self.window_calls))
            .minimum_calls(self.minimum_calls)
            .half_open_probes(self.half_open_probes)
            .open_for(self.open_for)
            .max_open_for(self.max_open_for)
            .seed(SmallRng::seed_from_u64(seed).random())
            .build()
            .map_err(|err| match err.field() {
                // The breaker calls its count window `window`; here it is a number of calls.
                "window" => ConfigError::new("breaker.window_calls", err.rule().to_owned()),
                _ => err.within("breaker"),
            })?;
        if self.breaker_enabled && !self.single_call_may_trip {
            let rules = [
                ("breaker.consecutive_failures", self.consecutive_failures),
                ("breaker.minimum_calls", self.minimum_calls),
            ];
            for (field, threshold) in rules {
                if self.max_attempts >= threshold {
                    return Err(ConfigError::new(
                        "retry.max_attempts",
                        format!(
                            "must be below {field} ({threshold}), got {}: the breaker counts \
                             attempts, so one call's own retries would open it for every caller; \
                             lower one of them, or allow it with single_call_may_trip(true)",
                            self.max_attempts
                        ),
                    ));
                }
            }
        }
        let attempt_timeout = self
            .attempt_timeout
            .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT.min(self.deadline));
        Ok(BackstopMiddleware::from_config(Config {
            deadline: self.deadline,
            deadline_covers_body: self.deadline_covers_body,
            attempt_timeout,
            max_attempts: self.max_attempts,
            backoff,
            retry_after_max: self.retry_after_max,
            retry_conflict: self.retry_conflict,
            budget: self.budget_enabled.then_some(budget),
            policy: HttpPolicy::new(),
            breaker: self.breaker_enabled.then_some(breaker),
            seed,
            sequence: AtomicU64::new(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn field(builder: Builder) -> String {
        builder.build().unwrap_err().field().to_owned()
    }

    #[test]
    fn defaults_build() {
        assert!(Builder::default().build().is_ok());
    }

    #[test]
    fn every_rule_names_the_policy_field() {
        let b = Builder::default;
        let cases = [
            (b().deadline(Duration::ZERO), "deadline"),
            (b().attempt_timeout(Duration::ZERO), "attempt_timeout"),
            (
                b().deadline(Duration::from_secs(1))
                    .attempt_timeout(Duration::from_secs(2)),
                "attempt_timeout",
            ),
            (b().max_attempts(0), "retry.max_attempts"),
            (b().max_attempts(11), "retry.max_attempts"),
            (
                b().base_delay(Duration::from_secs(2))
                    .max_delay(Duration::from_secs(1)),
                "retry.base_delay",
            ),
            (b().max_delay(MAX_BACKOFF_CAP * 2), "retry.max_delay"),
            (
                b().retry_after_max(MAX_BACKOFF_CAP * 2),
                "retry.retry_after_max",
            ),
            (
                b().budget(RetryBudget::builder().ratio(-1.0)),
                "retry.budget.ratio",
            ),
            (
                b().no_budget()
                    .budget(RetryBudget::builder().window(Duration::ZERO))
                    .no_budget(),
                "retry.budget.window",
            ),
            (b().consecutive_failures(0), "breaker.consecutive_failures"),
            (b().failure_rate(1.5), "breaker.failure_rate"),
            (b().window_calls(0), "breaker.window_calls"),
            (b().minimum_calls(200), "breaker.minimum_calls"),
            (b().half_open_probes(0), "breaker.half_open_probes"),
            (b().open_for(Duration::ZERO), "breaker.open_for"),
            (
                b().open_for(Duration::from_secs(10))
                    .max_open_for(Duration::from_secs(1)),
                "breaker.max_open_for",
            ),
            // One call's three attempts would open a breaker that trips at three failures.
            (b().consecutive_failures(3), "retry.max_attempts"),
            // Checked even when the section is off, as `Policy::validate` does.
            (b().no_breaker().failure_rate(0.0), "breaker.failure_rate"),
        ];
        for (builder, expected) in cases {
            assert_eq!(field(builder.clone()), expected, "{builder:?}");
        }
    }

    #[test]
    fn cross_field_rules_give_way_when_asked() {
        assert!(
            Builder::default()
                .consecutive_failures(3)
                .single_call_may_trip(true)
                .build()
                .is_ok()
        );
        assert!(
            Builder::default()
                .consecutive_failures(3)
                .no_breaker()
                .build()
                .is_ok()
        );
    }
}
