//! `Σ a_i b_i` on the chosen instruction set: four vector accumulators (four independent FMA
//! chains), the tail by a partial (masked) load; [`dot4`], the four real dot products of a complex
//! dot product's parts in one pass.

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

struct Dot4<'a> {
    x: [&'a [f32]; 2],
    y: [&'a [f32]; 2],
}

impl WithSimd for Dot4<'_> {
    type Output = [f32; 4];
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> [f32; 4] {
        let n = self.x[0]
            .len()
            .min(self.x[1].len())
            .min(self.y[0].len())
            .min(self.y[1].len());
        let (xr, xrt) = S::as_simd_f32s(&self.x[0][..n]);
        let (xi, xit) = S::as_simd_f32s(&self.x[1][..n]);
        let (yr, yrt) = S::as_simd_f32s(&self.y[0][..n]);
        let (yi, yit) = S::as_simd_f32s(&self.y[1][..n]);
        let mut acc = [s.splat_f32s(0.0); 4];
        for (((a, b), c), d) in xr.iter().zip(xi).zip(yr).zip(yi) {
            acc[0] = fma(s, *a, *c, acc[0]);
            acc[1] = fma(s, *b, *d, acc[1]);
            acc[2] = fma(s, *a, *d, acc[2]);
            acc[3] = fma(s, *b, *c, acc[3]);
        }
        let (a, b) = (s.partial_load_f32s(xrt), s.partial_load_f32s(xit));
        let (c, d) = (s.partial_load_f32s(yrt), s.partial_load_f32s(yit));
        acc[0] = fma(s, a, c, acc[0]);
        acc[1] = fma(s, b, d, acc[1]);
        acc[2] = fma(s, a, d, acc[2]);
        acc[3] = fma(s, b, c, acc[3]);
        acc.map(|v| s.reduce_sum_f32s(v))
    }
}

/// `[x₀·y₀, x₁·y₁, x₀·y₁, x₁·y₀]` (real and imaginary parts x₀, x₁ and y₀, y₁ of two complex
/// vectors) in one pass over the common length, on [`isa`]: `Σ conj(x) y = ([0] + [1]) + i([2] − [3])`,
/// `Σ x y = ([0] − [1]) + i([2] + [3])`.
#[inline]
pub fn dot4(x: [&[f32]; 2], y: [&[f32]; 2]) -> [f32; 4] {
    dot4_on(isa(), x, y)
}

/// [`dot4`] on a given instruction set.
#[inline]
pub fn dot4_on(isa: Isa, x: [&[f32]; 2], y: [&[f32]; 2]) -> [f32; 4] {
    dispatch_on(isa, Dot4 { x, y })
}
