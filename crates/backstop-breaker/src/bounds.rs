//! The bounds of every setting, exported so that code validating a configuration of its own (the
//! facade's `Policy`) applies the very same ones, and [`validate`], the one place they are
//! checked.

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use crate::settings::Settings;
use crate::window::Window;

/// The error of an invalid setting: which one, and the rule it broke (shared by every backstop
/// crate).
pub use backstop_classify::ConfigError;

/// The values [`Builder::half_open_probes`](crate::Builder::half_open_probes) accepts (the state
/// word has 12 bits for the permits).
pub const HALF_OPEN_PROBES_RANGE: RangeInclusive<u32> = 1..=1000;

/// The sizes a [`Window::Count`] accepts.
pub const COUNT_WINDOW_RANGE: RangeInclusive<u32> = 1..=1_000_000;

/// The bucket counts a [`Window::Time`] accepts.
pub const TIME_WINDOW_BUCKETS_RANGE: RangeInclusive<u32> = 1..=600;

/// The narrowest bucket of a [`Window::Time`] (its span divided by its buckets).
pub const MIN_BUCKET_WIDTH: Duration = Duration::from_millis(1);

/// The longest duration any setting accepts, about 30 years: longer ones are refused rather than
/// risk overflowing the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The values [`Builder::open_jitter`](crate::Builder::open_jitter) accepts.
pub const OPEN_JITTER_RANGE: Range<f64> = 0.0..1.0;

/// The smallest [`Builder::open_multiplier`](crate::Builder::open_multiplier).
pub const MIN_OPEN_MULTIPLIER: f64 = 1.0;

/// Whether `rate` is a valid failure or slow-call rate: in (0, 1].
pub fn is_valid_rate(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0 && rate <= 1.0
}

/// Checks every setting against the bounds above, naming the first field that breaks one.
pub(crate) fn validate(s: &Settings) -> Result<(), ConfigError> {
    if s.consecutive_failures == Some(0) {
        return Err(ConfigError::new(
            "consecutive_failures",
            "must be at least 1 (use no_consecutive_failures to turn the rule off)",
        ));
    }
    if s.failure_rate.is_some_and(|rate| !is_valid_rate(rate)) {
        return Err(ConfigError::new("failure_rate", "must be in (0, 1]"));
    }
    if let Some((threshold, rate)) = s.slow_call {
        if !is_valid_rate(rate) {
            return Err(ConfigError::new("slow_calls", "rate must be in (0, 1]"));
        }
        if threshold.is_zero() || threshold > MAX_DURATION {
            return Err(ConfigError::new(
                "slow_calls",
                "threshold must be above zero and below 30 years",
            ));
        }
    }
    if s.consecutive_failures.is_none() && !s.uses_window() {
        return Err(ConfigError::new(
            "consecutive_failures",
            "at least one trip rule (consecutive failures, failure rate, slow calls) must be on",
        ));
    }
    match s.window {
        Window::Count(n) => {
            if !COUNT_WINDOW_RANGE.contains(&n) {
                return Err(ConfigError::new(
                    "window",
                    "a count window must hold 1 to 1,000,000 calls",
                ));
            }
            if s.uses_window() && s.minimum_calls > n {
                return Err(ConfigError::new(
                    "minimum_calls",
                    "must not exceed the size of the count window, or the rate rules never fire",
                ));
            }
        }
        Window::Time { span, buckets } => {
            if !TIME_WINDOW_BUCKETS_RANGE.contains(&buckets) {
                return Err(ConfigError::new(
                    "window",
                    "a time window needs 1 to 600 buckets",
                ));
            }
            if span > MAX_DURATION || span / buckets < MIN_BUCKET_WIDTH {
                return Err(ConfigError::new(
                    "window",
                    "a time window's buckets must be at least 1 ms wide and its span below 30 years",
                ));
            }
        }
    }
    if s.minimum_calls == 0 {
        return Err(ConfigError::new("minimum_calls", "must be at least 1"));
    }
    if !HALF_OPEN_PROBES_RANGE.contains(&s.probes) {
        return Err(ConfigError::new("half_open_probes", "must be 1 to 1000"));
    }
    if s.open_base.is_zero() || s.open_base > MAX_DURATION {
        return Err(ConfigError::new(
            "open_for",
            "must be above zero and below 30 years",
        ));
    }
    if s.open_max < s.open_base || s.open_max > MAX_DURATION {
        return Err(ConfigError::new(
            "max_open_for",
            "must be at least open_for and below 30 years",
        ));
    }
    if !(s.open_multiplier.is_finite() && s.open_multiplier >= MIN_OPEN_MULTIPLIER) {
        return Err(ConfigError::new(
            "open_multiplier",
            "must be finite and at least 1.0",
        ));
    }
    if !(s.open_jitter.is_finite() && OPEN_JITTER_RANGE.contains(&s.open_jitter)) {
        return Err(ConfigError::new("open_jitter", "must be in [0, 1)"));
    }
    if s.stable_after > MAX_DURATION {
        return Err(ConfigError::new("stable_after", "must be below 30 years"));
    }
    if s.max_keys == 0 {
        return Err(ConfigError::new("max_keys", "must be at least 1"));
    }
    if s.idle_after.is_zero() || s.idle_after > MAX_DURATION {
        return Err(ConfigError::new(
            "idle_after",
            "must be above zero and below 30 years",
        ));
    }
    Ok(())
}
