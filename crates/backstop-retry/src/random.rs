//! The layer's reproducible randomness: per-request streams drawn from one seed.

use std::sync::atomic::{AtomicU64, Ordering};

/// Marks a request that has not drawn its stream of randomness yet.
pub(crate) const NO_STREAM: u64 = u64::MAX;

/// Numbers the next request's stream, in order from 0 (wrapping after 2⁶³).
pub(crate) fn next_stream(sequence: &AtomicU64) -> u64 {
    // The top bit stays clear so that no number is ever taken for the `NO_STREAM` sentinel.
    sequence.fetch_add(1, Ordering::Relaxed) & (NO_STREAM >> 1)
}

/// SplitMix64: decorrelates neighbouring seeds.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
