//! `Σ a_i b_i` on the chosen instruction set: four vector accumulators (four independent FMA
//! chains), the tail by a partial (masked) load.

use super::{Isa, dispatch_on, fma, isa};
use pulp::{Simd, WithSimd};

struct Dot<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> f32 {
        let n = self.a.len().min(self.b.len());
        let (ah, at) = S::as_simd_f32s(&self.a[..n]);
        let (bh, bt) = S::as_simd_f32s(&self.b[..n]);
        let mut acc = [s.splat_f32s(0.0); 4];
        let (a4, b4) = (ah.chunks_exact(4), bh.chunks_exact(4));
        let (ar, br) = (a4.remainder(), b4.remainder());
        for (x, y) in a4.zip(b4) {
            for k in 0..4 {
                acc[k] = fma(s, x[k], y[k], acc[k]);
            }
        }
        for (k, (x, y)) in ar.iter().zip(br).enumerate() {
            acc[k] = fma(s, *x, *y, acc[k]);
        }
        let (x, y) = (s.partial_load_f32s(at), s.partial_load_f32s(bt));
        acc[3] = fma(s, x, y, acc[3]);
        let t = s.add_f32s(s.add_f32s(acc[0], acc[1]), s.add_f32s(acc[2], acc[3]));
        s.reduce_sum_f32s(t)
    }
}

/// `Σ a_i b_i` over the common length, on [`isa`].
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_on(isa(), a, b)
}

/// [`dot`] on a given instruction set.
#[inline]
pub fn dot_on(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    dispatch_on(isa, Dot { a, b })
}
