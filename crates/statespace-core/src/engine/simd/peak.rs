//! The FMA throughput microbenchmark behind `statespace bench`'s "% of peak": twelve independent
//! chains of `x ← x·a + b` per lane (twelve hide a 4-cycle FMA latency on two FMA ports), on the
//! chosen instruction set.

use super::{Isa, dispatch_on, fma, isa};
use pulp::{Simd, WithSimd};
use std::time::Instant;

const CHAINS: usize = 12;

struct Peak {
    iters: u64,
}

impl WithSimd for Peak {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> f32 {
        let (a, b) = (s.splat_f32s(0.999_999), s.splat_f32s(1e-7));
        let mut acc = [s.splat_f32s(1.0); CHAINS];
        for _ in 0..self.iters {
            for x in acc.iter_mut() {
                *x = fma(s, *x, a, b);
            }
        }
        let t = acc.iter().fold(s.splat_f32s(0.0), |t, x| s.add_f32s(t, *x));
        s.reduce_sum_f32s(t)
    }
}

/// GFLOP/s of `iters × 12 × lanes` FMAs (two FLOPs each) on one core, on [`isa`].
pub fn fma_peak(iters: u64) -> f64 {
    fma_peak_on(isa(), iters)
}

/// [`fma_peak`] on a given instruction set.
pub fn fma_peak_on(isa: Isa, iters: u64) -> f64 {
    let t = Instant::now();
    let v = dispatch_on(isa, Peak { iters });
    std::hint::black_box(v);
    let lanes = if isa.supported() { isa.lanes() } else { 1 };
    iters as f64 * (CHAINS * lanes * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
}
