//! The sliding [`Window`] the rate rules use — the last N calls, or the calls of the last T — and
//! its lock-free implementation.
//!
//! Both are exact and O(1) per call. The count window is a ring of one byte per call: recording
//! a call overwrites the oldest slot and adjusts the totals by the difference, so old results
//! are evicted as new ones arrive. The time window is a ring of buckets whose counters carry
//! their bucket's epoch in their upper half: the first increment of a new epoch replaces the
//! stale count in the same compare-and-swap, so no update is lost when a bucket is reused.

use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The sliding window the rate rules (failure rate, slow-call rate) are computed over.
///
/// Both windows really slide: every call costs O(1) (the time window touches one bucket), and
/// results older than the window stop counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls, exactly.
    Count(u32),
    /// The calls of the last `span`, in `buckets` buckets of `span / buckets` each: a result
    /// leaves the window when its bucket does, so the window is exact to one bucket width.
    Time {
        /// How far back the window reaches.
        span: Duration,
        /// How many buckets the span is cut into (1 to 600).
        buckets: u32,
    },
}

// === impl Window ===

impl Window {
    /// The last `n` calls.
    pub const fn count(n: u32) -> Window {
        Window::Count(n)
    }

    /// The calls of the last `span`, in ten buckets.
    pub const fn time(span: Duration) -> Window {
        Window::Time { span, buckets: 10 }
    }
}

// === impl SlidingWindow ===

/// What a window holds: calls, failures among them, slow calls among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

pub(crate) enum SlidingWindow {
    None,
    Count(CountWindow),
    Time(TimeWindow),
}

impl SlidingWindow {
    pub(crate) fn new(window: Window, needed: bool) -> SlidingWindow {
        if !needed {
            return SlidingWindow::None;
        }
        match window {
            Window::Count(n) => SlidingWindow::Count(CountWindow::new(n)),
            Window::Time { span, buckets } => {
                let width = span / buckets;
                let width_nanos = u64::try_from(width.as_nanos()).unwrap_or(u64::MAX).max(1);
                SlidingWindow::Time(TimeWindow::new(buckets, width_nanos))
            }
        }
    }

    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, SlidingWindow::Time(_))
    }

    /// Records one call; `now` is only read by the time window.
    #[inline(always)]
    pub(crate) fn record(&self, failed: bool, slow: bool, now: u64) {
        match self {
            SlidingWindow::None => {}
            SlidingWindow::Count(w) => w.record(failed, slow),
            SlidingWindow::Time(w) => w.record(failed, slow, now),
        }
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        match self {
            SlidingWindow::None => Counts::default(),
            SlidingWindow::Count(w) => w.counts(),
            SlidingWindow::Time(w) => w.counts(now),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            SlidingWindow::None => {}
            SlidingWindow::Count(w) => w.reset(),
            SlidingWindow::Time(w) => w.reset(),
        }
    }
}

const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

// === impl CountWindow ===

pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU32,
    /// Lemire's fast-modulo constant for `slots.len()`: a division per call is measurable.
    modulo: u64,
    // Signed so that a decrement racing ahead of its matching increment reads as a transient
    // negative (clamped to zero) rather than a huge count.
    calls: AtomicI32,
    failures: AtomicI32,
    slow: AtomicI32,
}

impl CountWindow {
    fn new(n: u32) -> CountWindow {
        let len = usize::try_from(n).unwrap_or(1).max(1);
        CountWindow {
            slots: (0..len).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            // Wraps to 0 for a window of one, which then always yields index 0, as it should.
            modulo: (u64::MAX / len as u64).wrapping_add(1),
            calls: AtomicI32::new(0),
            failures: AtomicI32::new(0),
            slow: AtomicI32::new(0),
        }
    }

    // Always inlined: in a steady state recording is an increment, a load and a compare.
    #[inline(always)]
    fn record(&self, failed: bool, slow: bool) {
        let mut value = PRESENT;
        if failed {
            value |= FAILED;
        }
        if slow {
            value |= SLOW;
        }
        // The counter wraps at 2^32 calls; for a window size that does not divide 2^32 one
        // slot is then overwritten early, once every four billion calls.
        let index = self.index(self.next.fetch_add(1, Ordering::Relaxed));
        // In a steady state the slot already holds the same result: a load spares the swap.
        if let Some(slot) = self.slots.get(index)
            && slot.load(Ordering::Relaxed) != value
        {
            self.replace(slot, value);
        }
    }

    #[inline(never)]
    fn replace(&self, slot: &AtomicU8, value: u8) {
        let old = slot.swap(value, Ordering::Relaxed);
        if old != value {
            self.adjust(old, -1);
            self.adjust(value, 1);
        }
    }

    #[inline]
    fn index(&self, n: u32) -> usize {
        let low = self.modulo.wrapping_mul(u64::from(n));
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    fn adjust(&self, slot: u8, delta: i32) {
        if slot & PRESENT != 0 {
            self.calls.fetch_add(delta, Ordering::Relaxed);
        }
        if slot & FAILED != 0 {
            self.failures.fetch_add(delta, Ordering::Relaxed);
        }
        if slot & SLOW != 0 {
            self.slow.fetch_add(delta, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> Counts {
        let read = |c: &AtomicI32| u32::try_from(c.load(Ordering::Relaxed)).unwrap_or(0);
        Counts {
            calls: read(&self.calls),
            failures: read(&self.failures),
            slow: read(&self.slow),
        }
    }

    fn reset(&self) {
        for slot in &*self.slots {
            let old = slot.swap(0, Ordering::Relaxed);
            self.adjust(old, -1);
        }
    }
}

// === impl TimeWindow ===

/// One time bucket; each counter is `epoch << 32 | count`.
#[derive(Default)]
struct Bucket {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
}

impl TimeWindow {
    fn new(buckets: u32, width_nanos: u64) -> TimeWindow {
        TimeWindow {
            buckets: (0..buckets.max(1)).map(|_| Bucket::default()).collect(),
            width_nanos,
        }
    }

    fn epoch(&self, now: u64) -> u32 {
        // Truncation is the point: epochs wrap, and ages are computed with wrapping arithmetic.
        (now / self.width_nanos) as u32
    }

    fn record(&self, failed: bool, slow: bool, now: u64) {
        let epoch = self.epoch(now);
        let bucket = &self.buckets[epoch as usize % self.buckets.len()];
        increment(&bucket.calls, epoch);
        if failed {
            increment(&bucket.failures, epoch);
        }
        if slow {
            increment(&bucket.slow, epoch);
        }
        // A bucket whose failures or slow counters were last bumped in an older epoch still
        // holds stale counts there; they are ignored by `counts`, which checks each counter's
        // own epoch.
    }

    fn counts(&self, now: u64) -> Counts {
        let epoch = self.epoch(now);
        let span = self.buckets.len() as u32;
        let live = |packed: u64| {
            let (counter_epoch, count) = unpack(packed);
            if epoch.wrapping_sub(counter_epoch) < span {
                count
            } else {
                0
            }
        };
        let mut counts = Counts::default();
        for bucket in &*self.buckets {
            counts.calls = counts
                .calls
                .saturating_add(live(bucket.calls.load(Ordering::Relaxed)));
            counts.failures = counts
                .failures
                .saturating_add(live(bucket.failures.load(Ordering::Relaxed)));
            counts.slow = counts
                .slow
                .saturating_add(live(bucket.slow.load(Ordering::Relaxed)));
        }
        counts
    }

    fn reset(&self) {
        for bucket in &*self.buckets {
            // Epoch 0 with count 0: reads as empty whatever the current epoch.
            bucket.calls.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
            bucket.slow.store(0, Ordering::Relaxed);
        }
    }
}

fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

fn pack(epoch: u32, count: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(count)
}

fn increment(counter: &AtomicU64, epoch: u32) {
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        let (counter_epoch, count) = unpack(current);
        let next = if counter_epoch == epoch {
            pack(epoch, count.saturating_add(1))
        } else if (epoch.wrapping_sub(counter_epoch) as i32) > 0 {
            pack(epoch, 1)
        } else {
            // Our clock reading is older than the last writer's: the bucket already belongs to
            // a newer epoch, and our call is as recent as any in it.
            pack(counter_epoch, count.saturating_add(1))
        };
        match counter.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fast_modulo_matches_the_remainder() {
        for len in [1u32, 2, 3, 7, 100, 1000, 999_983, 1_000_000] {
            let w = CountWindow::new(len);
            for n in [
                0u32,
                1,
                2,
                len - 1,
                len,
                len + 1,
                12_345_678,
                u32::MAX - 1,
                u32::MAX,
            ] {
                assert_eq!(w.index(n), (n % len) as usize, "{n} % {len}");
            }
        }
    }

    #[test]
    fn count_window_slides() {
        let w = SlidingWindow::new(Window::Count(4), true);
        for _ in 0..4 {
            w.record(true, false, 0);
        }
        assert_eq!(
            w.counts(0),
            Counts {
                calls: 4,
                failures: 4,
                slow: 0
            }
        );
        w.record(false, true, 0);
        w.record(false, false, 0);
        assert_eq!(
            w.counts(0),
            Counts {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.counts(0), Counts::default());
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = SlidingWindow::new(
            Window::Time {
                span: Duration::from_secs(10),
                buckets: 10,
            },
            true,
        );
        let sec = 1_000_000_000;
        w.record(true, false, 0);
        w.record(false, false, 5 * sec);
        assert_eq!(w.counts(9 * sec).calls, 2);
        assert_eq!(w.counts(9 * sec).failures, 1);
        // At t = 10 s the bucket of t = 0 has left the window.
        assert_eq!(w.counts(10 * sec).calls, 1);
        assert_eq!(w.counts(10 * sec).failures, 0);
        // Reusing a bucket replaces its stale counts.
        w.record(false, false, 10 * sec);
        assert_eq!(w.counts(10 * sec).calls, 2);
        assert_eq!(w.counts(16 * sec).calls, 1);
        assert_eq!(w.counts(20 * sec).calls, 0);
    }
}
