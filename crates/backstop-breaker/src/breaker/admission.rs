//! Admission: whether one call may go, and a probe's permit given back.

use std::fmt;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Breaker;
use super::word::{
    CLOSED, CLOSED_METRICS_ONLY, FORCED_CLOSED, FORCED_CLOSED_METRICS_ONLY, FORCED_OPEN, HALF_OPEN,
    METRICS_ONLY, OPEN, OPEN_TIMED, PERMIT_SHIFT, STATE_MASK, TIMED, generation, permits,
    state_bits,
};
use crate::state::Reason;

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

impl<Key> Breaker<Key> {
    /// back without a result.
    pub(crate) fn abandon_probe(&self, generation_admitted: u32) {
        self.probes_out.fetch_sub(1, Ordering::AcqRel);
        self.return_permit(generation_admitted);
    }

    /// Gives back the permit of a probe that ended without a result.
    pub(super) fn return_permit(&self, generation_admitted: u32) {
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
}
