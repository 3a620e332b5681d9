//! [`Ticket`]: one admitted call, recorded when it ends — its outcome judged by the layer's
//! [`Judge`](crate::Judge) — or, if its future is dropped first, forgotten.

use std::fmt;
use std::sync::Arc;

use backstop_classify::{Classify, Outcome};
use http::Response;

use crate::breaker::Breaker;
use crate::verdict::Verdict;

/// One admitted call.
pub(crate) struct Ticket<Key> {
    breaker: Arc<Breaker<Key>>,
    generation: u32,
    /// A half-open probe, whose permit goes back if the call ends without a result.
    probe: bool,
    started: u64,
}

impl<Key: Clone + fmt::Debug + Send + Sync + 'static> Ticket<Key> {
    #[inline]
    pub(crate) fn new(breaker: Arc<Breaker<Key>>, generation: u32, probe: bool) -> Ticket<Key> {
        let started = if breaker.slow_nanos().is_some() {
            breaker.clock().now()
        } else {
            0
        };
        Ticket {
            breaker,
            generation,
            probe,
            started,
        }
    }

    /// Records a response: the [`Outcome`] a `ClassifyLayer` inside stored, else the policy's
    /// judgement of the status (skipped for a status the policy always calls a success).
    #[inline(always)]
    pub(crate) fn finish_response<B>(&mut self, res: &Response<B>) {
        let breaker = &self.breaker;
        let verdict = match Outcome::of(res.extensions()) {
            Some(outcome) => self.verdict(outcome),
            None if res.status().as_u16() < 400 && breaker.success_below_400() => {
                breaker.success_verdict()
            }
            None => self.verdict(
                &breaker
                    .settings()
                    .policy
                    .classify_response(res.status(), res.headers()),
            ),
        };
        self.finish_with(verdict);
    }

    #[inline(always)]
    pub(crate) fn finish(&mut self, outcome: &Outcome) {
        let verdict = self.verdict(outcome);
        self.finish_with(verdict);
    }

    /// The judge's verdict on `outcome`; a success's, the most common, asked once per layer.
    #[inline(always)]
    fn verdict(&self, outcome: &Outcome) -> Verdict {
        match outcome {
            Outcome::Success => self.breaker.success_verdict(),
            outcome => (self.breaker.settings().judge)(outcome),
        }
    }

    /// Records `verdict`. The ticket is spent: whoever holds it drops it next, and that drop
    /// gives no permit back.
    #[inline(always)]
    fn finish_with(&mut self, verdict: Verdict) {
        // A result is recorded: the ticket's drop must not give the permit back.
        let probe = std::mem::replace(&mut self.probe, false);
        let breaker = &self.breaker;
        let slow = breaker.slow_nanos().is_some_and(|threshold| {
            breaker.clock().now().saturating_sub(self.started) >= threshold
        });
        breaker.record(self.generation, probe, verdict, slow);
    }
}

impl<Key> Drop for Ticket<Key> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.abandon_probe(self.generation);
        }
    }
}
