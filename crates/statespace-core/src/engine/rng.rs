//! Counter-based random numbers: dropout masks and noise depend only on (seed, row), not on
//! threads or call order.

/// SplitMix64: a counter-based generator, so masks depend only on (seed, row), not on threads.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) advancing `state`.
#[inline]
pub fn uniform01(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (splitmix64(*state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
