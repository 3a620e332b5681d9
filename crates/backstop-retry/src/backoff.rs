//! [`Backoff`]: how long to wait before the next attempt.

use std::time::Duration;

use rand::Rng;

use crate::ConfigError;

/// The longest cap a backoff accepts, and so the bound of
/// [`RetryLayerBuilder::max_delay`](crate::RetryLayerBuilder::max_delay) and
/// [`RetryLayerBuilder::retry_after_max`](crate::RetryLayerBuilder::retry_after_max): waiting
/// longer than this between attempts is a configuration mistake, not a policy.
pub const MAX_BACKOFF_CAP: Duration = Duration::from_secs(60 * 60);

/// How randomness spreads the delays of clients that failed together.
///
/// With base `b`, cap `c` and retry number `n` (0 for the first retry), let
/// `e = min(c, b·2ⁿ)`. Every mode stays within the cap: jitter is applied inside it, never added
/// on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Jitter {
    /// `random(0, e)`: the default; fewest total calls under contention.
    #[default]
    Full,
    /// `e/2 + random(0, e/2)`: never waits less than half the exponential delay.
    Equal,
    /// `min(c, random(b, 3·previous))`: grows from the previous delay rather than the attempt
    /// number.
    Decorrelated,
    /// Exactly `e`: no randomness. Clients that failed together retry together.
    None,
}

impl Jitter {
    /// A short name for tables, e.g. `"full"`.
    pub const fn name(self) -> &'static str {
        match self {
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
            Jitter::None => "none",
        }
    }
}

/// Capped exponential backoff with a [`Jitter`] mode.
///
/// ```
/// use std::time::Duration;
/// use backstop_retry::{Backoff, Jitter};
/// use rand::{SeedableRng, rngs::SmallRng};
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), Jitter::Full)?;
/// let mut rng = SmallRng::seed_from_u64(7);
/// let mut previous = Duration::ZERO;
/// for retry in 0..8 {
///     let delay = backoff.delay(retry, previous, &mut rng);
///     assert!(delay <= Duration::from_secs(1)); // never above the cap
///     previous = delay;
/// }
/// # Ok::<(), backstop_retry::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// Base 50 ms, cap 5 s, full jitter.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// A backoff growing from `base`, never above `cap`.
    ///
    /// Rejects a `base` above the `cap` and a `cap` above [`MAX_BACKOFF_CAP`].
    pub fn new(base: Duration, cap: Duration, jitter: Jitter) -> Result<Backoff, ConfigError> {
        if cap > MAX_BACKOFF_CAP {
            return Err(ConfigError::new("max_delay", "must be at most one hour"));
        }
        if base > cap {
            return Err(ConfigError::new(
                "base_delay",
                "must not be greater than max_delay",
            ));
        }
        Ok(Backoff { base, cap, jitter })
    }

    /// The first delay before jitter.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// `min(cap, base·2ⁿ)`, without overflowing for any `n`.
    pub fn exponential(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay before retry number `retry` (0 for the first retry); `previous` is the delay
    /// slept before the previous retry (zero for the first), used by decorrelated jitter.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, previous: Duration, rng: &mut R) -> Duration {
        match self.jitter {
            Jitter::None => self.exponential(retry),
            Jitter::Full => uniform(rng, Duration::ZERO, self.exponential(retry)),
            Jitter::Equal => {
                let exp = self.exponential(retry);
                let half = exp / 2;
                half + uniform(rng, Duration::ZERO, exp - half)
            }
            Jitter::Decorrelated => {
                let previous = previous.max(self.base);
                let upper = previous.saturating_mul(3).min(self.cap);
                uniform(rng, self.base.min(upper), upper)
            }
        }
    }
}

/// A uniformly random duration in `[low, high]`, at nanosecond resolution.
fn uniform<R: Rng + ?Sized>(rng: &mut R, low: Duration, high: Duration) -> Duration {
    let low_ns = nanos(low);
    let high_ns = nanos(high);
    if high_ns <= low_ns {
        return low;
    }
    Duration::from_nanos(rng.random_range(low_ns..=high_ns))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_doubles_until_the_cap_without_overflow() {
        let b = Backoff::new(10 * MS, 1000 * MS, Jitter::None).unwrap();
        let seq: Vec<_> = (0..8).map(|n| b.exponential(n).as_millis()).collect();
        assert_eq!(seq, [10, 20, 40, 80, 160, 320, 640, 1000]);
        assert_eq!(b.exponential(31), 1000 * MS);
        assert_eq!(b.exponential(u32::MAX), 1000 * MS);
    }

    #[test]
    fn every_mode_stays_within_its_bounds_and_the_cap() {
        let mut rng = SmallRng::seed_from_u64(1);
        for jitter in [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::None,
        ] {
            let b = Backoff::new(5 * MS, 200 * MS, jitter).unwrap();
            let mut previous = Duration::ZERO;
            for n in 0..40 {
                let d = b.delay(n, previous, &mut rng);
                let exp = b.exponential(n);
                assert!(d <= b.cap(), "{jitter:?} {d:?}");
                match jitter {
                    Jitter::Full => assert!(d <= exp),
                    Jitter::Equal => assert!(d >= exp / 2 && d <= exp),
                    Jitter::Decorrelated => {
                        assert!(d >= b.base() && d <= previous.max(b.base()) * 3)
                    }
                    Jitter::None => assert_eq!(d, exp),
                }
                previous = d;
            }
        }
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let mut rng = SmallRng::seed_from_u64(2);
        let b = Backoff::new(100 * MS, 100 * MS, Jitter::Full).unwrap();
        let delays: Vec<_> = (0..1000)
            .map(|_| b.delay(0, Duration::ZERO, &mut rng))
            .collect();
        assert!(delays.iter().any(|d| *d < 10 * MS));
        assert!(delays.iter().any(|d| *d > 90 * MS));
    }

    #[test]
    fn same_seed_same_delays() {
        let b = Backoff::default();
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..5)
                .map(|n| b.delay(n, Duration::ZERO, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn invalid_backoffs_are_rejected_naming_the_field() {
        let err = Backoff::new(2 * MS, MS, Jitter::Full).unwrap_err();
        assert_eq!(err.field(), "base_delay");
        let err = Backoff::new(MS, MAX_BACKOFF_CAP * 2, Jitter::Full).unwrap_err();
        assert_eq!(err.field(), "max_delay");
    }
}
