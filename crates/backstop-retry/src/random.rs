//! The layer's reproducible randomness: per-request streams drawn from one seed.

/// Marks a request that has not drawn its stream of randomness yet.
pub(crate) const NO_STREAM: u64 = u64::MAX;

/// SplitMix64: decorrelates neighbouring seeds.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
