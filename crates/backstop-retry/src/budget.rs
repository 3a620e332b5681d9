//! [`RetryBudget`]: retries limited to a fraction of recent requests plus a small floor.

use std::cell::Cell;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;

/// The ratios [`RetryBudgetBuilder::ratio`] accepts.
pub const BUDGET_RATIO_RANGE: RangeInclusive<f64> = 0.0..=10.0;

/// The largest [`RetryBudgetBuilder::min_per_second`].
pub const MAX_BUDGET_MIN_PER_SECOND: u32 = 100_000;

/// The windows [`RetryBudgetBuilder::window`] accepts.
pub const BUDGET_WINDOW_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// One retry costs this many units; a request deposits `ratio × UNIT` units, so ratios are
/// honoured to four decimal places with integer arithmetic (no truncation of `1 / ratio`).
const UNIT: i64 = 10_000;
/// The window is split into this many slots; a slot's balance expires as a whole.
const SLOTS: u64 = 10;
/// A slot packs its epoch (24 bits) and its signed balance (40 bits, stored offset by
/// `VALUE_BIAS` so that adding to it never carries into the epoch) into one atomic word, so a
/// deposit is one `fetch_add` and a withdrawal one compare-and-swap, with no lock.
const VALUE_BITS: u32 = 40;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - VALUE_BITS)) - 1;
const VALUE_MAX: i64 = (1 << (VALUE_BITS - 1)) - 1;
const VALUE_MIN: i64 = -(1 << (VALUE_BITS - 1));
const VALUE_BIAS: i64 = 1 << (VALUE_BITS - 1);
/// A deposit may take the one-instruction path while the balance is below this: far enough from
/// `VALUE_MAX` that no number of racing deposits (each at most `10 × UNIT`) could overflow it.
const FAST_DEPOSIT_MAX: i64 = VALUE_MAX / 2;
/// The shortest interval between two warnings that a budget is exhausted.
const WARNING_INTERVAL_NANOS: u64 = 1_000_000_000;

/// Numbers budgets, so that an epoch a thread cached for one is never taken for another's.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The epoch of this thread's last deposit, and when it ends. Every request deposits, and
    /// working out the epoch (the time since the budget was made, divided into slots) costs
    /// more than the rest of a deposit: within the epoch a clock read and a comparison do.
    static LAST_EPOCH: Cell<Option<CachedEpoch>> = const { Cell::new(None) };
}

#[derive(Clone, Copy)]
struct CachedEpoch {
    budget: u64,
    epoch: u64,
    ends: Instant,
}

/// Retries limited to a fraction of recent requests plus a small floor per second, over a
/// sliding window (Finagle's and linkerd's budget; defaults 20 %, 10 retries/s, 10 s).
///
/// Every request deposits `ratio` of a retry; every retry withdraws one whole retry. A retry is
/// allowed when the deposits of the last `window`, plus a reserve of `min_per_second × window`,
/// cover it. Under a total outage at a steady rate `r`, retries are therefore held to about
/// `ratio × r + min_per_second`.
///
/// Clones share one budget: give each client (or each host) its own.
///
/// ```
/// use std::time::Duration;
/// use backstop_retry::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), backstop_retry::ConfigError> {
/// let budget = RetryBudget::builder()
///     .ratio(0.5)
///     .min_per_second(0)
///     .window(Duration::from_secs(10))
///     .build()?;
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 4 requests × 50 % = 2 retries
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// This budget's number, from `NEXT_ID`.
    id: u64,
    start: Instant,
    slot_nanos: u64,
    deposit: i64,
    reserve: i64,
    slots: [AtomicU64; SLOTS as usize],
    /// When the next exhaustion may be logged as a warning, in nanoseconds since `start`.
    next_warning: AtomicU64,
    /// Exhaustions not logged as warnings since the last one.
    suppressed: AtomicU64,
    ratio: f64,
    min_per_second: u32,
    window: Duration,
}

// === impl RetryBudget ===

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.inner.ratio)
            .field("min_per_second", &self.inner.min_per_second)
            .field("window", &self.inner.window)
            .field("available", &self.available())
            .finish()
    }
}

impl Default for RetryBudget {
    /// 20 % of requests, 10 retries per second, over 10 s.
    fn default() -> Self {
        RetryBudget::from_parts(0.2, 10, Duration::from_secs(10))
    }
}

impl RetryBudget {
    /// A builder starting from the defaults (20 %, 10/s, 10 s).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }

    fn from_parts(ratio: f64, min_per_second: u32, window: Duration) -> RetryBudget {
        let slot_nanos = u64::try_from((window / SLOTS as u32).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        // Validated by the builder: ratio in [0, 10], so this fits easily.
        let deposit = (ratio * UNIT as f64).round() as i64;
        let reserve = (i64::from(min_per_second) * UNIT)
            .saturating_mul(window.as_millis().min(i64::MAX as u128) as i64)
            / 1000;
        RetryBudget {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                start: Instant::now(),
                slot_nanos,
                deposit,
                reserve,
                // Epoch 0 with a zero balance, as the biased encoding spells it.
                slots: std::array::from_fn(|_| AtomicU64::new(pack(0, 0))),
                next_warning: AtomicU64::new(0),
                suppressed: AtomicU64::new(0),
                ratio,
                min_per_second,
                window,
            }),
        }
    }

    /// Records one request (an original attempt, not a retry).
    #[inline]
    pub fn deposit(&self) {
        let epoch = self.inner.deposit_epoch();
        self.inner.deposit(epoch);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let epoch = self.inner.epoch();
        // Concurrent withdrawals may each see the last retry before either takes it; the
        // overdraft is bounded by the number of racing callers, which keeps this lock-free.
        if self.inner.balance(epoch) < UNIT {
            return false;
        }
        self.inner.add(epoch, -UNIT);
        true
    }

    /// How many whole retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let balance = self.inner.balance(self.inner.epoch());
        u64::try_from(balance / UNIT).unwrap_or(0)
    }

    /// Whether an exhaustion of this budget should be logged as a warning now: at most once a
    /// second. `Some` carries how many exhaustions went unwarned since the last warning.
    pub(crate) fn warning_due(&self) -> Option<u64> {
        let now = self.inner.nanos(Instant::now());
        let due = self.inner.next_warning.load(Ordering::Relaxed);
        if now >= due
            && self
                .inner
                .next_warning
                .compare_exchange(
                    due,
                    now.saturating_add(WARNING_INTERVAL_NANOS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.inner.suppressed.swap(0, Ordering::Relaxed));
        }
        self.inner.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The fraction of requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// The retries per second allowed whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.inner.min_per_second
    }

    /// How long a deposit counts.
    pub fn window(&self) -> Duration {
        self.inner.window
    }
}

impl Inner {
    #[inline]
    fn epoch(&self) -> u64 {
        self.epoch_at(Instant::now())
    }

    #[inline]
    fn epoch_at(&self, now: Instant) -> u64 {
        self.nanos(now) / self.slot_nanos
    }

    /// The epoch of a deposit made now: the one this thread cached while it lasts (instants
    /// only move forward), else worked out and cached.
    #[inline]
    fn deposit_epoch(&self) -> u64 {
        let now = Instant::now();
        LAST_EPOCH
            .try_with(|last| match last.get() {
                Some(cached) if cached.budget == self.id && now < cached.ends => cached.epoch,
                _ => self.cache_epoch(now, last),
            })
            // The thread is going away: no cache, the same answer.
            .unwrap_or_else(|_| self.epoch_at(now))
    }

    /// Works out the epoch of `now` and caches it, with its end, for this thread's next
    /// deposits.
    #[inline(never)]
    fn cache_epoch(&self, now: Instant, last: &Cell<Option<CachedEpoch>>) -> u64 {
        let epoch = self.epoch_at(now);
        // An end beyond what an instant can hold is not cached: no deposit comes that late.
        let ends = epoch
            .checked_add(1)
            .and_then(|next| next.checked_mul(self.slot_nanos))
            .and_then(|nanos| self.start.checked_add(Duration::from_nanos(nanos)));
        last.set(ends.map(|ends| CachedEpoch {
            budget: self.id,
            epoch,
            ends,
        }));
        epoch
    }

    /// Nanoseconds from when the budget was made to `now`, on tokio's clock.
    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        // Saturates after 584 years, which no process lives to see.
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }

    /// Adds one request's deposit to the slot of `epoch`.
    #[inline]
    fn deposit(&self, epoch: u64) {
        let slot = &self.slots[(epoch % SLOTS) as usize];
        let (tag, value) = unpack(slot.load(Ordering::Relaxed));
        if tag == epoch & EPOCH_MASK && value < FAST_DEPOSIT_MAX {
            // The slot is current and far from full: the biased encoding lets the balance grow
            // by a plain add. Should the slot be recycled for a newer epoch in between (a whole
            // window later), the deposit merely counts in that epoch.
            slot.fetch_add(self.deposit as u64, Ordering::AcqRel);
            return;
        }
        self.add(epoch, self.deposit);
    }

    fn add(&self, epoch: u64, delta: i64) {
        let slot = &self.slots[(epoch % SLOTS) as usize];
        let tag = epoch & EPOCH_MASK;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_tag, value) = unpack(current);
            let base = if slot_tag == tag { value } else { 0 };
            let next = pack(tag, base.saturating_add(delta).clamp(VALUE_MIN, VALUE_MAX));
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn balance(&self, epoch: u64) -> i64 {
        let mut sum = self.reserve;
        for slot in &self.slots {
            let (tag, value) = unpack(slot.load(Ordering::Acquire));
            // A slot counts while its epoch is one of the last SLOTS epochs (modulo the tag
            // width: a slot untouched for exactly 2²⁴ slot widths would be mistaken for live).
            if (epoch & EPOCH_MASK).wrapping_sub(tag) & EPOCH_MASK < SLOTS {
                sum = sum.saturating_add(value);
            }
        }
        sum
    }
}

#[inline]
fn pack(tag: u64, value: i64) -> u64 {
    (tag << VALUE_BITS) | ((value + VALUE_BIAS) as u64 & VALUE_MASK)
}

#[inline]
fn unpack(word: u64) -> (u64, i64) {
    let tag = word >> VALUE_BITS;
    let value = (word & VALUE_MASK) as i64 - VALUE_BIAS;
    (tag, value)
}

// === impl RetryBudgetBuilder ===

/// Builds a [`RetryBudget`]; invalid values are rejected by [`build`](RetryBudgetBuilder::build).
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
}

impl RetryBudgetBuilder {
    /// The fraction of requests that may be retried, from 0 to 10 (default 0.2). Honoured to
    /// four decimal places.
    #[must_use]
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed whatever the traffic, so a quiet client can still retry
    /// (default 10, at most 100 000).
    #[must_use]
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.min_per_second = min_per_second;
        self
    }

    /// How long a request's deposit counts, from 100 ms to one hour (default 10 s).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The budget, or the first rule broken.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !self.ratio.is_finite() || !BUDGET_RATIO_RANGE.contains(&self.ratio) {
            return Err(ConfigError::new(
                "budget.ratio",
                "must be a finite number between 0 and 10",
            ));
        }
        if self.min_per_second > MAX_BUDGET_MIN_PER_SECOND {
            return Err(ConfigError::new(
                "budget.min_per_second",
                "must be at most 100000",
            ));
        }
        if !BUDGET_WINDOW_RANGE.contains(&self.window) {
            return Err(ConfigError::new(
                "budget.window",
                "must be between 100 ms and one hour",
            ));
        }
        Ok(RetryBudget::from_parts(
            self.ratio,
            self.min_per_second,
            self.window,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_second(min_per_second)
            .build()
            .unwrap()
    }

    fn drain(budget: &RetryBudget) -> u32 {
        let mut n = 0;
        while budget.try_withdraw() {
            n += 1;
            assert!(n < 1_000_000);
        }
        n
    }

    #[test]
    fn pack_round_trips_negative_and_extreme_values() {
        for value in [0, 1, -1, VALUE_MAX, VALUE_MIN, -123_456_789] {
            assert_eq!(unpack(pack(EPOCH_MASK, value)), (EPOCH_MASK, value));
            assert_eq!(unpack(pack(0, value)), (0, value));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fraction_is_honoured_exactly_not_truncated() {
        // tower's TpsBudget turns 0.6 into a cost of (1/0.6) as isize = 1: 100 % retries.
        let b = budget(0.6, 0);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(drain(&b), 60);
        let b = budget(0.2, 0);
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(drain(&b), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_min_per_second_times_window_without_traffic() {
        let b = budget(0.2, 10);
        assert_eq!(b.available(), 100);
        assert_eq!(drain(&b), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_threads_cached_epoch_serves_only_its_budget_and_only_until_the_epoch_ends() {
        // A 1 s window (100 ms epochs) and a 10 s one (1 s epochs), deposits alternating
        // between them on this thread every 50 ms, across many epoch boundaries of both: the
        // epoch a thread caches for one budget is never used for the other, nor past its end.
        let window = |secs| {
            RetryBudget::builder()
                .ratio(1.0)
                .min_per_second(0)
                .window(Duration::from_secs(secs))
                .build()
                .unwrap()
        };
        let (short, long) = (window(1), window(10));
        for _ in 0..30 {
            short.deposit();
            long.deposit();
            long.deposit();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // At 1.5 s the short budget counts epochs 6 to 15: its deposits at 0.60 s .. 1.45 s.
        assert_eq!(short.available(), 18);
        assert_eq!(long.available(), 60);
        // 1.5 s is the first instant of epoch 15, and the last deposit's epoch (14) has ended:
        // this one counts in epoch 15, so it lasts until 2.5 s, the others only until 2.4 s.
        short.deposit();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(short.available(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(short.available(), 0);
        // One budget alone across a boundary: the deposit at 2.6 s is not taken for epoch 25's.
        short.deposit();
        tokio::time::sleep(Duration::from_millis(100)).await;
        short.deposit();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(short.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_expire_after_the_window() {
        let b = budget(1.0, 0);
        for _ in 0..5 {
            b.deposit();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(b.available(), 5);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(b.available(), 0);

        // A spent floor comes back once the withdrawals age out.
        let b = budget(0.0, 1);
        assert_eq!(drain(&b), 10);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(b.available(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn exhaustion_warnings_are_limited_to_one_a_second_and_count_the_rest() {
        let b = budget(0.2, 0);
        assert_eq!(b.warning_due(), Some(0));
        for _ in 0..5 {
            assert_eq!(b.warning_due(), None);
        }
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(b.warning_due(), None);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(b.warning_due(), Some(6));
        assert_eq!(b.warning_due(), None);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(b.warning_due(), Some(1));
        // Budgets are limited separately.
        assert_eq!(budget(0.2, 0).warning_due(), Some(0));
    }

    #[test]
    fn invalid_budgets_are_rejected_naming_the_field() {
        let err = RetryBudget::builder().ratio(f64::NAN).build().unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
        let err = RetryBudget::builder().ratio(-0.1).build().unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
        let err = RetryBudget::builder()
            .window(Duration::from_millis(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "budget.window");
        let err = RetryBudget::builder()
            .min_per_second(1_000_000)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "budget.min_per_second");
    }
}
