//! One breaker's state machine.
//!
//! The whole machine lives in one `AtomicU64` — generation, state, metrics-only flag, free probe
//! permits and probe successes — so admission is one load in the closed state and one
//! compare-and-swap for a half-open probe. Every transition bumps the generation; a call
//! remembers the generation it was admitted in and its result is dropped if the breaker has
//! moved on since, so a slow call admitted while closed can never close (or re-open) a breaker
//! that is half-open now, and a probe permit can only be returned to the half-open period that
//! issued it. Transitions themselves (rare) are serialised by a mutex that also holds the jitter
//! RNG and the trip count; the closed path never touches it.
//!
//! The files of this module: `word` (the state word's layout), `admission` (may a call go?),
//! `record` (a call's result, and the trip rules), `transition` (moving between states, and
//! reporting it), `cool_down` (the timer that ends an open period).

mod admission;
mod cool_down;
mod record;
mod transition;
mod word;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::settings::{OnChange, Settings};
use crate::state::{Mode, Snapshot, State};
use crate::telemetry::KeyMetrics;
use crate::verdict::Verdict;
use crate::window::SlidingWindow;

pub(crate) use admission::{Admission, OpenSeen};
use transition::Transitions;
use word::{
    CLOSED, FORCED_CLOSED, FORCED_OPEN, METRICS_ONLY, OPEN, pack, public_state, state_bits,
};

/// What every breaker of one layer shares.
///
/// `success_below_400`, `success_verdict` and `slow_nanos` are worked out once per layer here
/// and copied into each [`Breaker`] when it is made: calls read the breaker's copies, which lie
/// on its own per-call cache lines.
pub(crate) struct Shared<Key> {
    pub(crate) settings: Settings,
    /// Whether the policy calls every status below 400 a success, whatever the headers: then
    /// such a response needs no classifying.
    pub(crate) success_below_400: bool,
    /// The judge's verdict on [`Outcome::Success`](backstop_classify::Outcome::Success), asked
    /// once: most calls succeed, and this spares each of them an indirect call.
    pub(crate) success_verdict: Verdict,
    pub(crate) clock: Clock,
    pub(crate) on_change: Option<OnChange<Key>>,
    pub(crate) slow_nanos: Option<u64>,
}

/// One circuit breaker, with its key and the bookkeeping of the keyed registry.
///
/// Laid out by hand (`repr(C)`): what every call reads or writes comes first, so that with the
/// `Arc`'s counts it fills the fewest cache lines (three rather than five), and what only a
/// transition, a sweep or a subscriber touches comes after.
#[repr(C)]
pub(crate) struct Breaker<Key> {
    // === read or written by every call ===
    window: SlidingWindow,
    pub(crate) key: Key,
    word: AtomicU64,
    shared: Arc<Shared<Key>>,
    /// The shared settings every call reads, copied here so that a call does not touch the line
    /// of [`Shared`].
    slow_nanos: Option<u64>,
    consecutive: AtomicU32,
    /// Set by every call, cleared by the registry's idle sweep.
    pub(crate) touched: AtomicBool,
    /// Set when the registry forgets the breaker, so cached handles look it up again.
    pub(crate) evicted: AtomicBool,
    success_below_400: bool,
    success_verdict: Verdict,
    // === touched by transitions, probes, sweeps and subscribers ===
    pub(crate) hash: u64,
    open_until: AtomicU64,
    /// Probes in flight, whatever half-open period admitted them. A new half-open period waits
    /// for this to reach zero, so the dependency never sees more than the configured number of
    /// probes at once, even when one probe's failure re-opened the breaker while another was
    /// still out.
    probes_out: AtomicU32,
    /// Set while a mode chosen by hand is in force.
    pinned: AtomicBool,
    transitions: Mutex<Transitions>,
    /// Created by the first subscriber: most breakers are never watched, and a channel costs
    /// a few hundred bytes.
    state_tx: OnceLock<watch::Sender<State>>,
    /// When a sweep last saw the breaker used.
    pub(crate) last_seen: AtomicU64,
    /// This breaker, for the waker of its cool-down timer.
    this: Weak<Breaker<Key>>,
    /// The breaker's metric label (nothing without the `metrics` feature).
    pub(crate) metrics: KeyMetrics,
}

impl<Key: fmt::Debug> fmt::Debug for Breaker<Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("key", &self.key)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<Key> Breaker<Key> {
    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    #[inline]
    pub(crate) fn success_below_400(&self) -> bool {
        self.success_below_400
    }

    #[inline]
    pub(crate) fn success_verdict(&self) -> Verdict {
        self.success_verdict
    }

    #[inline]
    pub(crate) fn slow_nanos(&self) -> Option<u64> {
        self.slow_nanos
    }

    #[inline]
    pub(crate) fn touch(&self) {
        // Reading first keeps the cache line shared on the hot path.
        if !self.touched.load(Ordering::Relaxed) {
            self.touched.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn state(&self) -> State {
        public_state(self.word.load(Ordering::Acquire))
    }

    /// Whether the breaker was put in a mode by hand (such breakers are never evicted).
    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<State> {
        // Under the transition lock, so no change slips between reading the state and
        // publishing the channel.
        let _guard = lock(&self.transitions);
        self.state_tx
            .get_or_init(|| watch::channel(self.state()).0)
            .subscribe()
    }

    fn publish(&self, state: State) {
        if let Some(tx) = self.state_tx.get() {
            tx.send_replace(state);
        }
    }
}

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Breaker<Key> {
    pub(crate) fn new(
        key: Key,
        hash: u64,
        shared: Arc<Shared<Key>>,
        seed: u64,
        this: Weak<Breaker<Key>>,
        metrics: KeyMetrics,
    ) -> Breaker<Key> {
        let settings = &shared.settings;
        let window = SlidingWindow::new(settings.window, settings.uses_window());
        let now = shared.clock.now();
        let (state, metrics_only) = match settings.initial_mode {
            Mode::Automatic => (CLOSED, false),
            Mode::MetricsOnly => (CLOSED, true),
            Mode::ForcedOpen => (FORCED_OPEN, false),
            Mode::ForcedClosed => (FORCED_CLOSED, false),
        };
        let word = pack(0, state, metrics_only, 0, 0);
        // A new breaker's state gauge starts at its initial state (closed, unless forced).
        metrics.state(public_state(word));
        let rng = match settings.seed {
            Some(_) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Breaker {
            key,
            hash,
            word: AtomicU64::new(word),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            probes_out: AtomicU32::new(0),
            window,
            transitions: Mutex::new(Transitions {
                rng,
                trips: 0,
                closed_since: now,
                timer: None,
            }),
            state_tx: OnceLock::new(),
            touched: AtomicBool::new(true),
            last_seen: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            this,
            slow_nanos: shared.slow_nanos,
            success_below_400: shared.success_below_400,
            success_verdict: shared.success_verdict,
            shared,
            metrics,
        }
    }

    /// When an open breaker lets its next probe go; `None` unless open.
    pub(crate) fn reopens_at(&self) -> Option<Instant> {
        let word = self.word.load(Ordering::Acquire);
        (state_bits(word) == OPEN).then(|| {
            self.clock()
                .instant(self.open_until.load(Ordering::Acquire))
        })
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let word = self.word.load(Ordering::Acquire);
        let now = self.clock().now();
        let counts = self.window.counts(now);
        let rate = |n: u32| (counts.calls > 0).then(|| f64::from(n) / f64::from(counts.calls));
        let state = state_bits(word);
        let next_probe_in = (state == OPEN).then(|| {
            Duration::from_nanos(self.open_until.load(Ordering::Acquire).saturating_sub(now))
        });
        let probes_in_flight = self.probes_out.load(Ordering::Acquire);
        Snapshot {
            state: public_state(word),
            metrics_only: word & METRICS_ONLY != 0,
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            failure_rate: rate(counts.failures),
            slow_call_rate: rate(counts.slow),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            trips: lock(&self.transitions).trips,
            next_probe_in,
            probes_in_flight,
        }
    }
}
