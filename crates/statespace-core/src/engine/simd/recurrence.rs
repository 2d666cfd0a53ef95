//! The diagonal recurrence step of S4D (and every kernel stepped by its diagonal modes) on the chosen
//! instruction set, for B streams at once, with `B̄` folded into the readout:
//!
//! ```text
//! x_k = Ā x_{k−1} + B̄ u_k,  y_k = Re Σ 2C x_k      (per channel, M complex modes)
//! z = x / B̄ (mode by mode):  z_k = Ā z_{k−1} + u_k,  y_k = Re Σ C̃ z_k,  C̃ = 2C B̄
//! ```
//! The rescaled state `z_k = Σ_j Ā^j u_{k−j}` does not involve `B̄` at all (so a small `B̄` cannot
//! blow it up), and a step reads four coefficient arrays `[Re Ā, Im Ā, Re C̃, Im C̃]` instead of six.
//! State layout `[B, H, 2, M]`: per channel the M real parts, then the M imaginary parts, so a step is
//! plain vector loops over the modes; stream by stream, so each stream's state is one sequential
//! read (the coefficients come from L2 for the streams after the first).

use super::{Isa, dispatch_on, fma, isa};
use pulp::{Simd, WithSimd};

/// One mode's update `z ← Ā z + u`: `(Re, Im) = (ar·x − ai·y + u, ar·y + ai·x)`.
#[inline(always)]
fn mode<S: Simd>(
    s: S,
    ar: S::f32s,
    ai: S::f32s,
    u: S::f32s,
    x: S::f32s,
    y: S::f32s,
) -> (S::f32s, S::f32s) {
    (
        fma(s, ar, x, s.sub_f32s(u, s.mul_f32s(ai, y))),
        fma(s, ar, y, s.mul_f32s(ai, x)),
    )
}

struct DiagSteps<'a> {
    c: [&'a [f32]; 4],
    m: usize,
    states: &'a mut [f32],
    u: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for DiagSteps<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let DiagSteps { c, m, states, u, y } = self;
        let h = c[0].len() / m;
        let batch = u.len() / h;
        // stream by stream, each stream's state [H, 2, M] read once front to back (channel-major
        // over the streams read B states 2HM·4 bytes apart, 2B streams at once, which the
        // prefetchers lose track of: the 6×H256 stack at batch 16 measured 2.7–3.5 ms before, 2.2 ms
        // after, in the same hour on the AVX2 machine); the coefficients
        // [4, H, M] are re-read from L2 for the streams after the first
        for b in 0..batch {
            for hh in 0..h {
                let o = hh * m..(hh + 1) * m;
                let (ar, ar_t) = S::as_simd_f32s(&c[0][o.clone()]);
                let (ai, ai_t) = S::as_simd_f32s(&c[1][o.clone()]);
                let (cr, cr_t) = S::as_simd_f32s(&c[2][o.clone()]);
                let (ci, ci_t) = S::as_simd_f32s(&c[3][o]);
                let nv = ar.len();
                assert!(ai.len() == nv && cr.len() == nv && ci.len() == nv);
                let st = &mut states[(b * h + hh) * 2 * m..(b * h + hh + 1) * 2 * m];
                let (zr, zi) = st.split_at_mut(m);
                let (zr, zr_t) = S::as_mut_simd_f32s(zr);
                let (zi, zi_t) = S::as_mut_simd_f32s(zi);
                assert!(zr.len() == nv && zi.len() == nv);
                let uv = s.splat_f32s(u[b * h + hh]);
                let (mut acc0, mut acc1) = (s.splat_f32s(0.0), s.splat_f32s(0.0));
                let mut i = 0;
                while i + 2 <= nv {
                    let (nr, ni) = mode(s, ar[i], ai[i], uv, zr[i], zi[i]);
                    (zr[i], zi[i]) = (nr, ni);
                    acc0 = s.sub_f32s(fma(s, cr[i], nr, acc0), s.mul_f32s(ci[i], ni));
                    let (nr, ni) = mode(s, ar[i + 1], ai[i + 1], uv, zr[i + 1], zi[i + 1]);
                    (zr[i + 1], zi[i + 1]) = (nr, ni);
                    acc1 = s.sub_f32s(fma(s, cr[i + 1], nr, acc1), s.mul_f32s(ci[i + 1], ni));
                    i += 2;
                }
                if i < nv {
                    let (nr, ni) = mode(s, ar[i], ai[i], uv, zr[i], zi[i]);
                    (zr[i], zi[i]) = (nr, ni);
                    acc0 = s.sub_f32s(fma(s, cr[i], nr, acc0), s.mul_f32s(ci[i], ni));
                }
                if !zr_t.is_empty() {
                    let ld = |v: &[f32]| s.partial_load_f32s(v);
                    let (nr, ni) = mode(s, ld(ar_t), ld(ai_t), uv, ld(zr_t), ld(zi_t));
                    s.partial_store_f32s(zr_t, nr);
                    s.partial_store_f32s(zi_t, ni);
                    acc1 = s.sub_f32s(fma(s, ld(cr_t), nr, acc1), s.mul_f32s(ld(ci_t), ni));
                }
                y[b * h + hh] = s.reduce_sum_f32s(s.add_f32s(acc0, acc1));
            }
        }
    }
}

/// One step of B streams of H channels of M diagonal modes: `c = [Re Ā, Im Ā, Re C̃, Im C̃]` (each
/// `[H, M]`), states `[B, H, 2, M]`, `u, y [B, H]`; `z ← Ā z + u`, `y = Re Σ C̃ z`; on [`isa`].
#[inline]
pub fn diag_steps(c: [&[f32]; 4], m: usize, states: &mut [f32], u: &[f32], y: &mut [f32]) {
    diag_steps_on(isa(), c, m, states, u, y)
}

/// [`diag_steps`] on a given instruction set.
pub fn diag_steps_on(
    isa: Isa,
    c: [&[f32]; 4],
    m: usize,
    states: &mut [f32],
    u: &[f32],
    y: &mut [f32],
) {
    let hm = c[0].len();
    assert!(
        m > 0 && hm.is_multiple_of(m) && c.iter().all(|v| v.len() == hm),
        "diag_steps: coefficients [H, {m}], got {hm} values"
    );
    let h = hm / m;
    assert!(
        h > 0 && u.len().is_multiple_of(h) && y.len() == u.len() && states.len() == u.len() * 2 * m,
        "diag_steps: u, y [B, {h}] and states [B, {h}, 2, {m}], got {}, {} and {}",
        u.len(),
        y.len(),
        states.len()
    );
    dispatch_on(isa, DiagSteps { c, m, states, u, y })
}
