//! Transitions between states — automatic, or set by hand — and their reports (a `tracing`
//! warning, the `on_state_change` callback, the `watch` channel).

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use tokio::time::{Instant, Sleep};

use super::word::{
    CLOSED, FORCED_CLOSED, FORCED_OPEN, HALF_OPEN, METRICS_ONLY, OPEN, TIMED, generation, pack,
    public_state, state_bits,
};
use super::{Breaker, lock};
use crate::clock::nanos;
use crate::settings::Settings;
use crate::state::{Mode, Reason, StateChange};

/// What only a transition touches, under its lock.
pub(super) struct Transitions {
    pub(super) rng: SmallRng,
    pub(super) trips: u32,
    pub(super) closed_since: u64,
    /// The timer of the current open period, if one was armed; dropping it cancels it.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
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

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Breaker<Key> {
    /// Moves from `from` (in `generation_expected`) to `to`, unless someone else moved first.
    pub(super) fn transition(&self, generation_expected: u32, from: u64, to: u64, reason: Reason) {
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
        crate::telemetry::transition_event(
            &self.key,
            from,
            to,
            change.reason,
            change.open_for,
            metrics_only,
        );
        self.metrics.transition(from, to);
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
    use rand::SeedableRng;

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
