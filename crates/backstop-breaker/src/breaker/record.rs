//! Recording a call's result, and the trip rules it is checked against.

use std::fmt;
use std::sync::atomic::Ordering;

use super::Breaker;
use super::word::{
    CLOSED, FORCED_CLOSED, HALF_OPEN, OPEN, SUCCESS_SHIFT, generation, state_bits, successes,
};
use crate::state::Reason;
use crate::verdict::Verdict;

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Breaker<Key> {
    /// Records the result of a call admitted in `generation_admitted`.
    // Always inlined into the response future: the common case is a dozen instructions, less
    // than a call's own cost.
    #[inline(always)]
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
}
