//! Dropout masks on the device, bit for bit those of the CPU engine (`engine/layers/dropout.rs`):
//! counter-based SplitMix64, so a mask depends only on (seed, row, position) and a resumed run
//! repeats it, on either engine.
//!
//! ```text
//! row r of [B, H, L] (r = b·H + h):   s_r = splitmix64(seed ⊕ splitmix64(r))
//! draw k of row r:                    u = (splitmix64(s_r + (k+1)·G) >> 11) / 2⁵³,  G = 0x9E3779B97F4A7C15
//! keep = u ≥ p, scaled by 1/(1 − p);  tied: one draw (k = 0) per row, shared along L
//! ```
//! Integer arithmetic is int64 with wrapping multiplication (two's complement: the same bits as
//! u64); logical right shifts are arithmetic shifts masked to the low bits.

use tch::{Device, Kind, Tensor};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn lsr(x: &Tensor, s: i64) -> Tensor {
    let keep = ((1u64 << (64 - s)) - 1) as i64;
    x.bitwise_right_shift_tensor_scalar(s).bitwise_and(keep)
}

/// SplitMix64 of every element of an int64 tensor (the CPU engine's `splitmix64`).
pub fn splitmix64(z: &Tensor) -> Tensor {
    let z = z + GOLDEN as i64;
    let z = z.bitwise_xor_tensor(&lsr(&z, 30)) * (0xBF58_476D_1CE4_E5B9u64 as i64);
    let z = z.bitwise_xor_tensor(&lsr(&z, 27)) * (0x94D0_49BB_1331_11EBu64 as i64);
    z.bitwise_xor_tensor(&lsr(&z, 31))
}

/// The keep-mask of dropout `p` for activations `[batch, h, len]`, scaled by `1/(1 − p)`, in `kind`
/// on `device` (`tied`: `[batch, h, 1]`, broadcast along the length).
pub fn mask(
    seed: u64,
    batch: usize,
    h: usize,
    len: usize,
    p: f64,
    tied: bool,
    (kind, device): (Kind, Device),
) -> Tensor {
    let rows = Tensor::arange((batch * h) as i64, (Kind::Int64, device));
    let s = splitmix64(&splitmix64(&rows).bitwise_xor(seed as i64));
    let draws = if tied { 1 } else { len as i64 };
    let k = (Tensor::arange(draws, (Kind::Int64, device)) + 1) * (GOLDEN as i64);
    let st = s.unsqueeze(-1) + k.unsqueeze(0);
    let u = lsr(&splitmix64(&st), 11).to_kind(Kind::Double) * (1.0 / (1u64 << 53) as f64);
    let keep = u.ge(p).to_kind(kind) * (1.0 / (1.0 - p));
    keep.reshape([batch as i64, h as i64, draws])
}
