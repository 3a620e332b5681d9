//! The state word: the whole state machine of one breaker in one `AtomicU64`.

use crate::state::State;

// The state word: | generation: 32 | successes: 12 | unused: 3 | timed: 1 | permits: 12 | flags: 1 | state: 3 |
pub(super) const STATE_MASK: u64 = 0b111;
pub(super) const METRICS_ONLY: u64 = 0b1000;
/// Set while a cool-down timer watches this open period and has not fired: the period has
/// certainly not ended, so a rejection needs no clock.
pub(super) const TIMED: u64 = 1 << 16;
pub(super) const PERMIT_SHIFT: u32 = 4;
pub(super) const SUCCESS_SHIFT: u32 = 20;
pub(super) const COUNT_MASK: u64 = 0xFFF;
pub(super) const GEN_SHIFT: u32 = 32;

pub(super) const CLOSED: u64 = 0;
pub(super) const OPEN: u64 = 1;
pub(super) const HALF_OPEN: u64 = 2;
pub(super) const FORCED_OPEN: u64 = 3;
pub(super) const FORCED_CLOSED: u64 = 4;

pub(super) fn state_bits(word: u64) -> u64 {
    word & STATE_MASK
}

pub(super) fn generation(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

pub(super) fn permits(word: u64) -> u32 {
    ((word >> PERMIT_SHIFT) & COUNT_MASK) as u32
}

pub(super) fn successes(word: u64) -> u32 {
    ((word >> SUCCESS_SHIFT) & COUNT_MASK) as u32
}

pub(super) fn pack(
    generation: u32,
    state: u64,
    metrics_only: bool,
    permits: u32,
    successes: u32,
) -> u64 {
    (u64::from(generation) << GEN_SHIFT)
        | ((u64::from(successes) & COUNT_MASK) << SUCCESS_SHIFT)
        | ((u64::from(permits) & COUNT_MASK) << PERMIT_SHIFT)
        | if metrics_only { METRICS_ONLY } else { 0 }
        | state
}

pub(super) fn public_state(word: u64) -> State {
    match state_bits(word) {
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        FORCED_CLOSED => State::ForcedClosed,
        _ => State::Closed,
    }
}

pub(super) const CLOSED_METRICS_ONLY: u64 = CLOSED | METRICS_ONLY;
pub(super) const OPEN_TIMED: u64 = OPEN | TIMED;
pub(super) const FORCED_CLOSED_METRICS_ONLY: u64 = FORCED_CLOSED | METRICS_ONLY;

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
}
