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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::config::{OnChange, Settings};
use crate::state::{Mode, Reason, Snapshot, State, StateChange};
use crate::verdict::Verdict;
use crate::window::SlidingWindow;

/// Nanoseconds on tokio's clock since the layer was built.
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What every breaker of one layer shares.
pub(crate) struct Shared<Key> {
    pub(crate) settings: Settings,
    /// Whether the policy calls every status below 400 a success, whatever the headers: then
    /// such a response needs no classifying.
    pub(crate) success_below_400: bool,
    pub(crate) clock: Clock,
    pub(crate) on_change: Option<OnChange<Key>>,
    pub(crate) slow_nanos: Option<u64>,
}

// The state word: | generation: 32 | successes: 12 | unused: 3 | timed: 1 | permits: 12 | flags: 1 | state: 3 |
const STATE_MASK: u64 = 0b111;
const METRICS_ONLY: u64 = 0b1000;
/// Set while a cool-down timer watches this open period and has not fired: the period has
/// certainly not ended, so a rejection needs no clock.
const TIMED: u64 = 1 << 16;
const PERMIT_SHIFT: u32 = 4;
const SUCCESS_SHIFT: u32 = 20;
const COUNT_MASK: u64 = 0xFFF;
const GEN_SHIFT: u32 = 32;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;

fn state_bits(word: u64) -> u64 {
    word & STATE_MASK
}

fn generation(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

fn permits(word: u64) -> u32 {
    ((word >> PERMIT_SHIFT) & COUNT_MASK) as u32
}

fn successes(word: u64) -> u32 {
    ((word >> SUCCESS_SHIFT) & COUNT_MASK) as u32
}

fn pack(generation: u32, state: u64, metrics_only: bool, permits: u32, successes: u32) -> u64 {
    (u64::from(generation) << GEN_SHIFT)
        | ((u64::from(successes) & COUNT_MASK) << SUCCESS_SHIFT)
        | ((u64::from(permits) & COUNT_MASK) << PERMIT_SHIFT)
        | if metrics_only { METRICS_ONLY } else { 0 }
        | state
}

fn public_state(word: u64) -> State {
    match state_bits(word) {
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        FORCED_CLOSED => State::ForcedClosed,
        _ => State::Closed,
    }
}

const CLOSED_METRICS_ONLY: u64 = CLOSED | METRICS_ONLY;
const OPEN_TIMED: u64 = OPEN | TIMED;
/// How early the cool-down timer fires: tokio rounds a deadline up to its next millisecond, so
/// a timer set a millisecond early fires no later than the cool-down's end (on a paused clock
/// too), and the exact clock comparison takes over from there.
const TIMER_LEAD: u64 = 1_000_000;
const FORCED_CLOSED_METRICS_ONLY: u64 = FORCED_CLOSED | METRICS_ONLY;

/// One open period as a caller saw it: its generation, and when it ends on tokio's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenSeen {
    generation: u32,
    until: Instant,
}

/// The breaker's answer to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Let it through and record its result against generation `generation`.
    Call { generation: u32, probe: bool },
    /// Let it through without recording (metrics-only mode, where the breaker would reject).
    Unrecorded,
    /// Fail it at once.
    Reject,
}

struct Transitions {
    rng: SmallRng,
    trips: u32,
    closed_since: u64,
    /// The timer of the current open period, if one was armed; dropping it cancels it.
    timer: Option<Pin<Box<Sleep>>>,
}

/// The waker of a cool-down timer. The timer driver calls it when the timer fires (or when the
/// runtime shuts down), synchronously, so the flag is down before any task runs again.
struct CoolDownEnd<Key> {
    breaker: Weak<Breaker<Key>>,
    generation: u32,
    fired: AtomicBool,
}

impl<Key: Send + Sync + 'static> Wake for CoolDownEnd<Key> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set first: a transition that stores the flag after this checks it and clears the flag.
        self.fired.store(true, Ordering::SeqCst);
        if let Some(breaker) = self.breaker.upgrade() {
            breaker.untime(self.generation);
        }
    }
}

/// One circuit breaker, with its key and the bookkeeping of the keyed registry.
pub(crate) struct Breaker<Key> {
    pub(crate) key: Key,
    pub(crate) hash: u64,
    shared: Arc<Shared<Key>>,
    word: AtomicU64,
    open_until: AtomicU64,
    consecutive: AtomicU32,
    /// Probes in flight, whatever half-open period admitted them. A new half-open period waits
    /// for this to reach zero, so the dependency never sees more than the configured number of
    /// probes at once, even when one probe's failure re-opened the breaker while another was
    /// still out.
    probes_out: AtomicU32,
    window: SlidingWindow,
    transitions: Mutex<Transitions>,
    /// Created by the first subscriber: most breakers are never watched, and a channel costs
    /// a few hundred bytes.
    state_tx: OnceLock<watch::Sender<State>>,
    /// Set by every call, cleared by the registry's idle sweep.
    pub(crate) touched: AtomicBool,
    /// When a sweep last saw the breaker used.
    pub(crate) last_seen: AtomicU64,
    /// Set when the registry forgets the breaker, so cached handles look it up again.
    pub(crate) evicted: AtomicBool,
    /// Set while a mode chosen by hand is in force.
    pinned: AtomicBool,
    /// This breaker, for the waker of its cool-down timer.
    this: Weak<Breaker<Key>>,
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

/// A state change to report once the transition lock is released (a callback may call back
/// into the breaker, e.g. to force it open).
struct Change {
    from: u64,
    to: u64,
    reason: Reason,
    open_for: Option<Duration>,
    metrics_only: bool,
}

impl<Key> Breaker<Key> {
    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    pub(crate) fn success_below_400(&self) -> bool {
        self.shared.success_below_400
    }

    pub(crate) fn slow_nanos(&self) -> Option<u64> {
        self.shared.slow_nanos
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

    /// Clears [`TIMED`] from open period `generation_timed`: its timer fired, or will never fire.
    fn untime(&self, generation_timed: u32) {
        let mut word = self.word.load(Ordering::Acquire);
        while generation(word) == generation_timed && word & TIMED != 0 {
            match self.word.compare_exchange_weak(
                word,
                word & !TIMED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// A probe's future was dropped before it ended: it is no longer out, and its permit goes
    /// back without a result.
    pub(crate) fn abandon_probe(&self, generation_admitted: u32) {
        self.probes_out.fetch_sub(1, Ordering::AcqRel);
        self.return_permit(generation_admitted);
    }

    /// Gives back the permit of a probe that ended without a result.
    fn return_permit(&self, generation_admitted: u32) {
        let mut word = self.word.load(Ordering::Acquire);
        while generation(word) == generation_admitted && state_bits(word) == HALF_OPEN {
            match self.word.compare_exchange_weak(
                word,
                word + (1 << PERMIT_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Waiters in `Readiness::NotReady` mode may take the permit now.
                    if let Some(tx) = self.state_tx.get() {
                        tx.send_modify(|_| {});
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
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
        let rng = match settings.seed {
            Some(_) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Breaker {
            key,
            hash,
            word: AtomicU64::new(pack(0, state, metrics_only, 0, 0)),
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
            shared,
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

    /// Decides whether one call may go, as [`admit`](Breaker::admit) does, cheaply while open:
    /// while the cool-down timer has not fired, a rejection is one atomic load; otherwise (no
    /// timer, or its last millisecond) it is that load, one clock read and a comparison against
    /// the open period this caller saw last. `seen` belongs to one caller (a service), so it
    /// needs no synchronisation; it is filled on the first such rejection of each open period.
    #[inline]
    pub(crate) fn admit_seen(&self, seen: &mut Option<OpenSeen>) -> Admission {
        let word = self.word.load(Ordering::Acquire);
        match word & (STATE_MASK | METRICS_ONLY | TIMED) {
            CLOSED | FORCED_CLOSED | CLOSED_METRICS_ONLY | FORCED_CLOSED_METRICS_ONLY => {
                return Admission::Call {
                    generation: generation(word),
                    probe: false,
                };
            }
            OPEN_TIMED | FORCED_OPEN => return Admission::Reject,
            OPEN => {
                // The generation changes with every transition, and an open period's end is
                // stored before the word that starts it: a match means the same open period.
                if let Some(open) = seen
                    && open.generation == generation(word)
                    && Instant::now() < open.until
                {
                    return Admission::Reject;
                }
            }
            _ => {}
        }
        self.admit_and_remember(seen)
    }

    #[cold]
    fn admit_and_remember(&self, seen: &mut Option<OpenSeen>) -> Admission {
        let admission = self.admit();
        if admission == Admission::Reject {
            // Read in this order, the end is that of this open period or of a later one; a later
            // one's end is only ever compared under the later generation, never this one.
            let word = self.word.load(Ordering::Acquire);
            if word & (STATE_MASK | METRICS_ONLY) == OPEN {
                *seen = Some(OpenSeen {
                    generation: generation(word),
                    until: self
                        .clock()
                        .instant(self.open_until.load(Ordering::Acquire)),
                });
            }
        }
        admission
    }

    /// Decides whether one call may go.
    pub(crate) fn admit(&self) -> Admission {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let generation = generation(word);
            let refuse = if word & METRICS_ONLY != 0 {
                Admission::Unrecorded
            } else {
                Admission::Reject
            };
            match state_bits(word) {
                CLOSED | FORCED_CLOSED => {
                    return Admission::Call {
                        generation,
                        probe: false,
                    };
                }
                OPEN => {
                    if self.clock().now() < self.open_until.load(Ordering::Acquire)
                        || self.probes_out.load(Ordering::Acquire) != 0
                    {
                        return refuse;
                    }
                    self.transition(generation, OPEN, HALF_OPEN, Reason::CoolDownElapsed);
                    word = self.word.load(Ordering::Acquire);
                }
                HALF_OPEN => {
                    if permits(word) == 0 {
                        return refuse;
                    }
                    let taken = word - (1 << PERMIT_SHIFT);
                    // Counted before the permit is taken, so a transition that sees no probe
                    // out cannot miss one about to leave.
                    self.probes_out.fetch_add(1, Ordering::AcqRel);
                    match self.word.compare_exchange_weak(
                        word,
                        taken,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            return Admission::Call {
                                generation,
                                probe: true,
                            };
                        }
                        Err(actual) => {
                            self.probes_out.fetch_sub(1, Ordering::AcqRel);
                            word = actual;
                        }
                    }
                }
                _ => return Admission::Reject,
            }
        }
    }

    /// Records the result of a call admitted in `generation_admitted`.
    #[inline]
    pub(crate) fn record(
        &self,
        generation_admitted: u32,
        probe: bool,
        verdict: Verdict,
        slow: bool,
    ) {
        // The common case, a success in the closed state: one load of the state, the window's
        // update, and a load of the failure run (a store only when a run ends).
        if !probe && !slow && verdict == Verdict::Success && !self.window.needs_clock() {
            let word = self.word.load(Ordering::Acquire);
            if generation(word) == generation_admitted
                && matches!(state_bits(word), CLOSED | FORCED_CLOSED)
            {
                self.window.record(false, false, 0);
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
            }
            return;
        }
        self.record_any(generation_admitted, probe, verdict, slow);
    }

    #[inline(never)]
    fn record_any(&self, generation_admitted: u32, probe: bool, verdict: Verdict, slow: bool) {
        let settings = self.settings();
        if probe {
            self.probes_out.fetch_sub(1, Ordering::AcqRel);
            let failed = match verdict {
                Verdict::Ignored => return self.return_permit(generation_admitted),
                Verdict::Failure | Verdict::Throttled => true,
                Verdict::Success => slow,
            };
            if failed {
                self.transition(generation_admitted, HALF_OPEN, OPEN, Reason::ProbeFailed);
            } else {
                self.probe_succeeded(generation_admitted);
            }
            return;
        }
        let word = self.word.load(Ordering::Acquire);
        if generation(word) != generation_admitted
            || !matches!(state_bits(word), CLOSED | FORCED_CLOSED)
        {
            return;
        }
        let (failed, consecutive) = match verdict {
            Verdict::Ignored => return,
            Verdict::Success => (false, false),
            Verdict::Failure => (true, true),
            Verdict::Throttled => (true, settings.throttled_counts_consecutive),
        };
        let now = if self.window.needs_clock() {
            self.clock().now()
        } else {
            0
        };
        self.window.record(failed, slow, now);
        let run = if consecutive {
            self.consecutive
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        } else {
            if !failed && self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            0
        };
        if state_bits(word) != CLOSED || !(failed || slow) {
            return;
        }
        if let Some(reason) = self.trip_reason(run, now) {
            self.transition(generation_admitted, CLOSED, OPEN, reason);
        }
    }

    fn trip_reason(&self, run: u32, now: u64) -> Option<Reason> {
        let settings = self.settings();
        if settings.consecutive_failures.is_some_and(|n| run >= n) {
            return Some(Reason::ConsecutiveFailures);
        }
        if !settings.uses_window() {
            return None;
        }
        let counts = self.window.counts(now);
        if counts.calls < settings.minimum_calls {
            return None;
        }
        let calls = f64::from(counts.calls);
        if settings
            .failure_rate
            .is_some_and(|rate| f64::from(counts.failures) >= rate * calls)
        {
            return Some(Reason::FailureRate);
        }
        if settings
            .slow_call
            .is_some_and(|(_, rate)| f64::from(counts.slow) >= rate * calls)
        {
            return Some(Reason::SlowCallRate);
        }
        None
    }

    fn probe_succeeded(&self, generation_admitted: u32) {
        let needed = self.settings().probes;
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if generation(word) != generation_admitted || state_bits(word) != HALF_OPEN {
                return;
            }
            if successes(word) + 1 >= needed {
                self.transition(
                    generation_admitted,
                    HALF_OPEN,
                    CLOSED,
                    Reason::ProbesSucceeded,
                );
                return;
            }
            match self.word.compare_exchange_weak(
                word,
                word + (1 << SUCCESS_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Moves from `from` (in `generation_expected`) to `to`, unless someone else moved first.
    fn transition(&self, generation_expected: u32, from: u64, to: u64, reason: Reason) {
        let change = {
            let mut guard = lock(&self.transitions);
            let mut word = self.word.load(Ordering::Acquire);
            if generation(word) != generation_expected || state_bits(word) != from {
                return;
            }
            let now = self.clock().now();
            let metrics_only = word & METRICS_ONLY != 0;
            let settings = self.settings();
            let mut open_for = None;
            let mut permits = 0;
            let mut timer = None;
            match to {
                OPEN => {
                    let stable =
                        now.saturating_sub(guard.closed_since) >= nanos(settings.stable_after);
                    if from == CLOSED && stable {
                        guard.trips = 0;
                    }
                    guard.trips = guard.trips.saturating_add(1);
                    let duration = open_duration(settings, guard.trips, &mut guard.rng);
                    let until = now.saturating_add(nanos(duration));
                    self.open_until.store(until, Ordering::Release);
                    open_for = Some(duration);
                    timer = self.arm_timer(&mut guard, generation_expected.wrapping_add(1), until);
                }
                HALF_OPEN => {
                    if self.probes_out.load(Ordering::Acquire) != 0 {
                        return;
                    }
                    permits = settings.probes;
                }
                _ => {
                    self.window.reset();
                    self.consecutive.store(0, Ordering::Relaxed);
                    guard.closed_since = now;
                }
            }
            let timed = if timer.is_some() { TIMED } else { 0 };
            let next = pack(
                generation_expected.wrapping_add(1),
                to,
                metrics_only,
                permits,
                0,
            ) | timed;
            // Probes may take or return permits concurrently: retry while only those bits moved.
            loop {
                match self
                    .word
                    .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break,
                    Err(actual)
                        if generation(actual) == generation_expected
                            && state_bits(actual) == from =>
                    {
                        word = actual;
                    }
                    Err(_) => return,
                }
            }
            // The timer may have fired before the word above was stored.
            if let Some(end) = timer
                && end.fired.load(Ordering::SeqCst)
            {
                self.untime(generation_expected.wrapping_add(1));
            }
            self.publish(public_state(next));
            Change {
                from,
                to,
                reason,
                open_for,
                metrics_only,
            }
        };
        self.report(change);
    }

    /// Arms the timer that ends open period `generation_timed` at `until`, when a tokio runtime
    /// is current; `None` if none was armed (rejections then read the clock).
    #[cold]
    fn arm_timer(
        &self,
        guard: &mut Transitions,
        generation_timed: u32,
        until: u64,
    ) -> Option<Arc<CoolDownEnd<Key>>> {
        // A timer of an earlier period is of no use now (and may belong to a runtime since shut
        // down, which would fail to reset it): a fresh one every trip.
        guard.timer = None;
        if !self.settings().cool_down_timer || tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        let end = Arc::new(CoolDownEnd {
            breaker: self.this.clone(),
            generation: generation_timed,
            fired: AtomicBool::new(false),
        });
        let waker = Waker::from(end.clone());
        let deadline = self.clock().instant(until.saturating_sub(TIMER_LEAD));
        let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
        if sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return None;
        }
        guard.timer = Some(sleep);
        Some(end)
    }

    /// Puts the breaker in `mode` by hand; a fresh closed state for the automatic modes.
    pub(crate) fn set_mode(&self, mode: Mode) {
        let change = {
            let mut guard = lock(&self.transitions);
            let word = self.word.load(Ordering::Acquire);
            let (state, metrics_only) = match mode {
                Mode::Automatic => (CLOSED, false),
                Mode::MetricsOnly => (CLOSED, true),
                Mode::ForcedOpen => (FORCED_OPEN, false),
                Mode::ForcedClosed => (FORCED_CLOSED, false),
            };
            if matches!(mode, Mode::Automatic | Mode::MetricsOnly) {
                self.window.reset();
                self.consecutive.store(0, Ordering::Relaxed);
                guard.closed_since = self.clock().now();
            }
            let next = pack(generation(word).wrapping_add(1), state, metrics_only, 0, 0);
            // Under the lock nobody else transitions; permit CASes fail against the new
            // generation, so a plain swap is enough.
            let before = self.word.swap(next, Ordering::AcqRel);
            self.pinned
                .store(mode != Mode::Automatic, Ordering::Relaxed);
            self.publish(public_state(next));
            Change {
                from: state_bits(before),
                to: state,
                reason: Reason::Manual,
                open_for: None,
                metrics_only,
            }
        };
        self.report(change);
    }

    fn report(&self, change: Change) {
        let metrics_only = change.metrics_only;
        let from = public_state(change.from);
        let to = public_state(change.to);
        tracing::warn!(
            key = ?self.key,
            from = from.name(),
            to = to.name(),
            reason = change.reason.describe(),
            open_for = ?change.open_for,
            metrics_only,
            "circuit breaker state change"
        );
        if let Some(callback) = &self.shared.on_change {
            callback(&StateChange {
                key: self.key.clone(),
                from,
                to,
                reason: change.reason,
                at: Instant::now(),
                open_for: change.open_for,
                metrics_only,
            });
        }
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

/// `min(max, base · multiplier^(trips-1) · random(1 - jitter, 1 + jitter))`: the jitter is
/// applied before the cap, so a jittered duration never exceeds the cap.
pub(crate) fn open_duration(settings: &Settings, trips: u32, rng: &mut SmallRng) -> Duration {
    let exponent = i32::try_from(trips.saturating_sub(1))
        .unwrap_or(i32::MAX)
        .min(1024);
    let max = settings.open_max.as_secs_f64();
    let grown =
        (settings.open_base.as_secs_f64() * settings.open_multiplier.powi(exponent)).min(max);
    let jitter = settings.open_jitter;
    let factor = if jitter > 0.0 {
        rng.random_range((1.0 - jitter)..=(1.0 + jitter))
    } else {
        1.0
    };
    Duration::try_from_secs_f64((grown * factor).min(max)).unwrap_or(settings.open_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_packing_round_trips() {
        let word = pack(u32::MAX, HALF_OPEN, true, 1000, 999);
        assert_eq!(generation(word), u32::MAX);
        assert_eq!(state_bits(word), HALF_OPEN);
        assert_eq!(permits(word), 1000);
        assert_eq!(successes(word), 999);
        assert_ne!(word & METRICS_ONLY, 0);
    }

    #[test]
    fn open_duration_grows_is_capped_and_jitter_never_exceeds_the_cap() {
        let settings = Settings {
            open_base: Duration::from_secs(1),
            open_max: Duration::from_secs(10),
            open_jitter: 0.5,
            ..Settings::default()
        };
        let mut rng = SmallRng::seed_from_u64(7);
        for trips in 1..200 {
            let d = open_duration(&settings, trips, &mut rng);
            assert!(d <= Duration::from_secs(10), "{trips}: {d:?}");
            let nominal = (1u64 << (trips - 1).min(40)).min(10);
            let nominal = Duration::from_secs(nominal);
            assert!(d >= nominal.mul_f64(0.5), "{trips}: {d:?}");
        }
        let exact = Settings {
            open_jitter: 0.0,
            ..settings
        };
        assert_eq!(open_duration(&exact, 3, &mut rng), Duration::from_secs(4));
        assert_eq!(
            open_duration(&exact, u32::MAX, &mut rng),
            Duration::from_secs(10)
        );
    }
}
