//! The diagonal recurrence step of S4D (and every kernel stepped by its diagonal modes) on the chosen
//! instruction set, for B streams at once, with `B̄` folded into the readout:
//!
//! ```text
//! x_k = Ā x_{k−1} + B̄ u_k,  y_k = Re Σ 2C x_k      (per channel, M complex modes)
//! z = x / B̄ (mode by mode):  z_k = Ā z_{k−1} + u_k,  y_k = Re Σ C̃ z_k,  C̃ = 2C B̄
//! ```
//! The rescaled state `z_k = Σ_j Ā^j u_{k−j}` does not involve `B̄` at all (so a small `B̄` cannot
//! blow it up), and a step reads four coefficient arrays `[Re Ā, Im Ā, Re C̃, Im C̃]` instead of six.
//!
//! **Layout: channels interleaved in blocks of [`DIAG_BLOCK`] = 16.** The H channels are padded to
//! `G = ⌈H/16⌉` blocks; each coefficient array is `[G, M, 16]` (mode j of the block's 16 channels side
//! by side, padding channels zero), the state of a stream `[G, M, 2, 16]` (per mode the 16 real
//! parts, then the 16 imaginary parts: one sequential pass over the state). A vector then holds one mode of 16 / lanes channels, and a block's 16 outputs
//! are 16 / lanes accumulators summed over the modes — no horizontal reduction, no tail of modes for
//! any M, the same code for every lane width (AVX-512: 1 vector per mode, AVX2: 2, NEON: 4, the scalar
//! fallback: 16). Measured on the AVX2 machine, the channel-major layout `[H, 2, M]` spent a third of
//! the recurrence in the per-channel reductions at M = 32 (4 vectors per channel). Padding channels
//! have `Ā = C̃ = 0` and input 0, so their state stays 0 and their output is never stored.
//! Stream by stream, so each stream's state is one sequential pass (the coefficients come from L2
//! for the streams after the first; block-major order, which keeps a block's 8 KiB of
//! coefficients in L1 for all streams, measured the same on the AVX2 machine).

use super::{Isa, dispatch_on, fma, isa};
use num_traits::Zero;
use pulp::{Simd, WithSimd};

/// Channels per interleaved block of the diagonal recurrence (see the module doc).
pub const DIAG_BLOCK: usize = 16;

/// The number of interleaved blocks `G = ⌈H/16⌉` of `h` channels.
pub fn diag_blocks(h: usize) -> usize {
    h.div_ceil(DIAG_BLOCK)
}

/// Values per stream of the interleaved state of `h` channels of `m` modes: `G · 2 · M · 16`.
pub fn diag_state_len(h: usize, m: usize) -> usize {
    diag_blocks(h) * 2 * m * DIAG_BLOCK
}

/// A per-mode array `[H, M]` (channel-major) in the interleaved layout `[G, M, 16]` of
/// [`diag_steps`], padding channels zero.
pub fn interleave_modes<T: Copy + Zero>(v: &[T], h: usize, m: usize) -> Vec<T> {
    assert_eq!(
        v.len(),
        h * m,
        "interleave_modes: [{h}, {m}], got {} values",
        v.len()
    );
    let mut out = vec![T::zero(); diag_blocks(h) * m * DIAG_BLOCK];
    for ch in 0..h {
        let (g, lane) = (ch / DIAG_BLOCK, ch % DIAG_BLOCK);
        for j in 0..m {
            out[(g * m + j) * DIAG_BLOCK + lane] = v[ch * m + j];
        }
    }
    out
}

struct DiagSteps<'a> {
    c: [&'a [f32]; 4],
    h: usize,
    m: usize,
    states: &'a mut [f32],
    u: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for DiagSteps<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        match DIAG_BLOCK / (core::mem::size_of::<S::f32s>() / 4) {
            1 => run::<S, 1>(s, self),
            2 => run::<S, 2>(s, self),
            4 => run::<S, 4>(s, self),
            8 => run::<S, 8>(s, self),
            _ => run::<S, 16>(s, self),
        }
    }
}

#[inline(always)]
fn run<S: Simd, const V: usize>(s: S, op: DiagSteps<'_>) {
    let DiagSteps {
        c,
        h,
        m,
        states,
        u,
        y,
    } = op;
    let (blocks, gsz) = (diag_blocks(h), m * DIAG_BLOCK);
    let batch = u.len() / h;
    let nv = m * V;
    let zero = s.splat_f32s(0.0);
    for b in 0..batch {
        for g in 0..blocks {
            let (ch0, w) = (g * DIAG_BLOCK, (h - g * DIAG_BLOCK).min(DIAG_BLOCK));
            let at = b * h + ch0;
            let mut buf = [0f32; DIAG_BLOCK];
            buf[..w].copy_from_slice(&u[at..at + w]);
            let mut uv = [zero; V];
            uv.copy_from_slice(&S::as_simd_f32s(&buf).0[..V]);
            let o = g * gsz..(g + 1) * gsz;
            let cs = [
                S::as_simd_f32s(&c[0][o.clone()]).0,
                S::as_simd_f32s(&c[1][o.clone()]).0,
                S::as_simd_f32s(&c[2][o.clone()]).0,
                S::as_simd_f32s(&c[3][o]).0,
            ];
            let s0 = (b * blocks + g) * 2 * gsz;
            let z = S::as_mut_simd_f32s(&mut states[s0..s0 + 2 * gsz]).0;
            assert!(cs.iter().all(|v| v.len() == nv) && z.len() == 2 * nv);
            let (mut acc_r, mut acc_i) = ([zero; V], [zero; V]);
            for j in 0..m {
                let (ar, ai) = (&cs[0][j * V..j * V + V], &cs[1][j * V..j * V + V]);
                let (cr, ci) = (&cs[2][j * V..j * V + V], &cs[3][j * V..j * V + V]);
                let (zr, zi) = z[2 * j * V..2 * j * V + 2 * V].split_at_mut(V);
                for v in 0..V {
                    let (x, yv) = (zr[v], zi[v]);
                    let nr = fma(s, ar[v], x, s.sub_f32s(uv[v], s.mul_f32s(ai[v], yv)));
                    let ni = fma(s, ar[v], yv, s.mul_f32s(ai[v], x));
                    (zr[v], zi[v]) = (nr, ni);
                    acc_r[v] = fma(s, cr[v], nr, acc_r[v]);
                    acc_i[v] = fma(s, ci[v], ni, acc_i[v]);
                }
            }
            {
                let out = S::as_mut_simd_f32s(&mut buf).0;
                for v in 0..V {
                    out[v] = s.sub_f32s(acc_r[v], acc_i[v]);
                }
            }
            y[at..at + w].copy_from_slice(&buf[..w]);
        }
    }
}

/// One step of B streams of H channels of M diagonal modes in the interleaved layout (module doc):
/// `c = [Re Ā, Im Ā, Re C̃, Im C̃]` (each `[G, M, 16]`, from [`interleave_modes`]), states
/// `[B, G, M, 2, 16]`, `u, y [B, H]`; `z ← Ā z + u`, `y = Re Σ C̃ z`; on [`isa`].
#[inline]
pub fn diag_steps(
    c: [&[f32]; 4],
    h: usize,
    m: usize,
    states: &mut [f32],
    u: &[f32],
    y: &mut [f32],
) {
    diag_steps_on(isa(), c, h, m, states, u, y)
}

/// The shape checks of [`diag_steps`] (shared with the portable path).
pub(crate) fn check_diag(cl: [usize; 4], h: usize, m: usize, sl: usize, ul: usize, yl: usize) {
    let want = diag_blocks(h) * m * DIAG_BLOCK;
    assert!(
        h > 0 && m > 0 && cl.iter().all(|l| *l == want),
        "diag_steps: coefficients [⌈{h}/16⌉, {m}, 16] = {want} values each, got {cl:?}"
    );
    assert!(
        ul.is_multiple_of(h) && yl == ul && sl == ul / h * diag_state_len(h, m),
        "diag_steps: u, y [B, {h}] and states [B, {}], got {ul}, {yl} and {sl}",
        diag_state_len(h, m)
    );
}

/// [`diag_steps`] on a given instruction set.
pub fn diag_steps_on(
    isa: Isa,
    c: [&[f32]; 4],
    h: usize,
    m: usize,
    states: &mut [f32],
    u: &[f32],
    y: &mut [f32],
) {
    check_diag(c.map(|v| v.len()), h, m, states.len(), u.len(), y.len());
    dispatch_on(
        isa,
        DiagSteps {
            c,
            h,
            m,
            states,
            u,
            y,
        },
    )
}
