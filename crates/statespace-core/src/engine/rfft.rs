//! The real FFT of even length `n` as a complex FFT of length `m = n/2` (rustfft, which picks its
//! AVX kernels at run time) between two O(n) passes of the SIMD layer ([`simd::rfft_split`],
//! [`simd::rfft_merge`]: their equations are in that module's doc).
//!
//! ```text
//! forward   X[k] = Σ_{t<n} x[t] e^{−2πi kt/n},   k = 0 … m     (x zero-padded past its length)
//! inverse   x[t] = Σ_{k<n} X[k] e^{+2πi kt/n}                  (unnormalized: n × the inverse DFT;
//!                                                               X[n−k] = conj X[k]; Im X[0], Im X[m]
//!                                                               ignored)
//! ```
//! Why not the `realfft` crate: its split and merge passes are compiled for the baseline
//! instruction set (SSE2, scalar-complex code) — measured on the AVX2 machine, those two passes
//! were 10.6 % of the samples of `statespace bench --cases train`, more than the complex FFTs'
//! butterflies they surround. Here they run 4 bins per AVX2 vector, and the zero padding and the
//! truncation of the convolution are folded into the packing of the samples (no copy of the row).

use crate::engine::float::Float;
use num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Plans and twiddles of a real FFT of length `n` (even, ≥ 2).
pub struct RealFft<T: Float> {
    n: usize,
    fwd: Arc<dyn Fft<T>>,
    inv: Arc<dyn Fft<T>>,
    /// `w^k = e^{−2πik/n}`, `k = 0 … m/2`.
    tw: Vec<Complex<T>>,
}

impl<T: Float> std::fmt::Debug for RealFft<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RealFft {{ n: {} }}", self.n)
    }
}

impl<T: Float> RealFft<T> {
    /// Plans for length `n` (even, at least 2).
    pub fn new(n: usize) -> Self {
        assert!(
            n >= 2 && n.is_multiple_of(2),
            "RealFft: the length must be even and at least 2, got {n}"
        );
        let m = n / 2;
        let mut planner = FftPlanner::<T>::new();
        let tw = (0..=m / 2)
            .map(|k| {
                let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                Complex::new(T::of(a.cos()), T::of(a.sin()))
            })
            .collect();
        RealFft {
            n,
            fwd: planner.plan_fft_forward(m),
            inv: planner.plan_fft_inverse(m),
            tw,
        }
    }

    /// The length `n`.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false (`n ≥ 2`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The number of bins `m + 1 = n/2 + 1` of a spectrum.
    pub fn bins(&self) -> usize {
        self.n / 2 + 1
    }

    /// A scratch buffer for [`RealFft::forward`] and [`RealFft::inverse`].
    pub fn make_scratch(&self) -> Vec<Complex<T>> {
        let len = self
            .fwd
            .get_inplace_scratch_len()
            .max(self.inv.get_inplace_scratch_len());
        vec![Complex::default(); len]
    }

    /// `spec [m + 1] = rfft(x)` of `x` zero-padded to `n` (`x.len() ≤ n`).
    pub fn forward(&self, x: &[T], spec: &mut [Complex<T>], scratch: &mut [Complex<T>]) {
        let m = self.n / 2;
        assert!(
            x.len() <= self.n && spec.len() == m + 1,
            "RealFft::forward: x of at most {} values and {} bins, got {} and {}",
            self.n,
            m + 1,
            x.len(),
            spec.len()
        );
        let z = &mut spec[..m];
        // z[j] = x[2j] + i·x[2j+1]: the samples copied as they are, zeros after them
        let flat = as_reals(z);
        flat[..x.len()].copy_from_slice(x);
        flat[x.len()..].fill(T::zero());
        self.fwd.process_with_scratch(z, scratch);
        T::rfft_split(spec, &self.tw);
    }

    /// `out = scale · irfft(spec)[..out.len()]` (`out.len() ≤ n`; `irfft` unnormalized, see the
    /// module doc); `spec [m + 1]` is overwritten.
    pub fn inverse(
        &self,
        spec: &mut [Complex<T>],
        out: &mut [T],
        scale: T,
        scratch: &mut [Complex<T>],
    ) {
        let m = self.n / 2;
        assert!(
            out.len() <= self.n && spec.len() == m + 1,
            "RealFft::inverse: {} bins and at most {} outputs, got {} and {}",
            m + 1,
            self.n,
            spec.len(),
            out.len()
        );
        T::rfft_merge(spec, &self.tw);
        let z = &mut spec[..m];
        self.inv.process_with_scratch(z, scratch);
        // x[2j] = Re z[j], x[2j+1] = Im z[j]
        let flat = as_reals(z);
        crate::engine::simd::with_isa(
            #[inline(always)]
            || {
                for (o, v) in out.iter_mut().zip(flat.iter()) {
                    *o = *v * scale;
                }
            },
        );
    }
}

/// The real and imaginary parts of `z`, interleaved, as one slice.
fn as_reals<T: Float>(z: &mut [Complex<T>]) -> &mut [T] {
    // SAFETY: `Complex<T>` is `#[repr(C)] { re: T, im: T }`: `z` is `2·len` contiguous `T`s, and
    // the new slice borrows `z` mutably for its lifetime
    unsafe { std::slice::from_raw_parts_mut(z.as_mut_ptr().cast::<T>(), 2 * z.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::simd::test_value as val;

    /// The DFT by its definition, in f64.
    fn dft(x: &[f64], n: usize) -> Vec<Complex<f64>> {
        (0..=n / 2)
            .map(|k| {
                x.iter()
                    .enumerate()
                    .map(|(t, v)| {
                        let a = -2.0 * std::f64::consts::PI * (k * t % n) as f64 / n as f64;
                        Complex::new(a.cos(), a.sin()) * *v
                    })
                    .sum()
            })
            .collect()
    }

    /// The unnormalized inverse DFT by its definition (Hermitian extension of `X[0 … n/2]`, the
    /// imaginary parts of `X[0]` and `X[n/2]` dropped).
    fn idft(spec: &[Complex<f64>], n: usize) -> Vec<f64> {
        let full = |k: usize| {
            let m = n / 2;
            if k == 0 || k == m {
                Complex::new(spec[k].re, 0.0)
            } else if k < m {
                spec[k]
            } else {
                spec[n - k].conj()
            }
        };
        (0..n)
            .map(|t| {
                (0..n)
                    .map(|k| {
                        let a = 2.0 * std::f64::consts::PI * (k * t % n) as f64 / n as f64;
                        (full(k) * Complex::new(a.cos(), a.sin())).re
                    })
                    .sum()
            })
            .collect()
    }

    /// Forward and inverse against the definitions, in f64 (1e-12) and f32 (1e-5 of the scale),
    /// at lengths around the 4-bin vector blocks and their remainders, odd `m` included, with
    /// zero padding (odd and even input lengths) and truncated outputs.
    #[test]
    fn real_fft_matches_the_dft_definition() {
        for n in [
            2usize, 4, 6, 8, 10, 14, 18, 32, 34, 38, 66, 128, 200, 1568, 2048,
        ] {
            for xl in [n, n / 2, n / 2 + 1, 1] {
                let x: Vec<f64> = (0..xl).map(|i| val(i, n)).collect();
                let want = dft(&x, n);
                let scale = want.iter().fold(1.0f64, |s, v| s.max(v.norm()));
                let f = RealFft::<f64>::new(n);
                let mut s = f.make_scratch();
                let mut spec = vec![Complex::default(); f.bins()];
                f.forward(&x, &mut spec, &mut s);
                for (k, (a, b)) in spec.iter().zip(&want).enumerate() {
                    assert!((a - b).norm() < 1e-12 * scale, "f64 n={n} xl={xl} bin {k}");
                }
                let f32f = RealFft::<f32>::new(n);
                let mut s32 = f32f.make_scratch();
                let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
                let mut spec32 = vec![Complex::default(); f32f.bins()];
                f32f.forward(&x32, &mut spec32, &mut s32);
                for (k, (a, b)) in spec32.iter().zip(&want).enumerate() {
                    let d = Complex::new(a.re as f64, a.im as f64) - b;
                    assert!(d.norm() < 1e-5 * scale, "f32 n={n} xl={xl} bin {k}");
                }
            }
            // the inverse of an arbitrary spectrum (non-zero Im X[0], Im X[m]: ignored)
            let spec: Vec<Complex<f64>> = (0..=n / 2)
                .map(|k| Complex::new(val(k, 7), val(k, 8)))
                .collect();
            let want = idft(&spec, n);
            let scale = want.iter().fold(1.0f64, |s, v| s.max(v.abs()));
            for ol in [n, n / 2, n / 2 + 1] {
                let f = RealFft::<f64>::new(n);
                let mut s = f.make_scratch();
                let mut sp = spec.clone();
                let mut out = vec![0.0; ol];
                f.inverse(&mut sp, &mut out, 0.5, &mut s);
                for (t, v) in out.iter().enumerate() {
                    assert!(
                        (v - 0.5 * want[t]).abs() < 1e-12 * scale,
                        "f64 inverse n={n} t={t}"
                    );
                }
                let f32f = RealFft::<f32>::new(n);
                let mut s32 = f32f.make_scratch();
                let mut sp32: Vec<Complex<f32>> = spec
                    .iter()
                    .map(|c| Complex::new(c.re as f32, c.im as f32))
                    .collect();
                let mut out32 = vec![0f32; ol];
                f32f.inverse(&mut sp32, &mut out32, 0.5, &mut s32);
                for (t, v) in out32.iter().enumerate() {
                    assert!(
                        (*v as f64 - 0.5 * want[t]).abs() < 1e-5 * scale,
                        "f32 inverse n={n} t={t}"
                    );
                }
            }
        }
    }
}
