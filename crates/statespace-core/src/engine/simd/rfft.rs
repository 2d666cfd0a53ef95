//! The two O(n) passes that turn a complex FFT of length `m = n/2` into a real FFT of length `n`
//! ([`crate::engine::rfft`]): *split* after the forward transform, *merge* before the inverse one.
//!
//! ```text
//! z[j] = x[2j] + i·x[2j+1],  Z = FFT_m(z),  w = e^{−2πi/n},  Z[m] ≡ Z[0]
//! split (forward), k = 0 … m:
//!   E[k] = (Z[k] + conj Z[m−k]) / 2         (the FFT of the even samples)
//!   O[k] = −i (Z[k] − conj Z[m−k]) / 2      (the FFT of the odd samples)
//!   X[k] = E[k] + w^k O[k],   X[m−k] = conj(E[k] − w^k O[k])
//!   X[0] = Re Z[0] + Im Z[0],  X[m] = Re Z[0] − Im Z[0],  X[m/2] = conj Z[m/2]
//! merge (inverse, unnormalized: IFFT_m of the result gives n·x), k = 0 … m − 1:
//!   E'[k] = X[k] + conj X[m−k],  O'[k] = (X[k] − conj X[m−k]) · conj(w^k)
//!   Z[k] = E'[k] + i O'[k],      Z[m−k] = conj(E'[k] − i O'[k])
//!   Z[0] = (Re X[0] + Re X[m]) + i (Re X[0] − Re X[m]),  Z[m/2] = 2 conj X[m/2]
//! ```
//! Each pass pairs bin `k` with bin `m − k`, so both are computed in place from one read of the
//! pair. On x86-64, dispatched to AVX2 or AVX-512 ([`super::isa`]), the f32 passes run 4 bins per
//! vector (the mirrored block
//! reversed with one permute, the complex products with `fmaddsub`); elsewhere the scalar loops.
//! The twiddles `w^k` are `tw[k]`, `k = 0 … ⌊m/2⌋`.

use super::{Isa, isa};
use num_complex::Complex;
use num_traits::Float;

/// The split pass (module doc) on `z [m + 1]`: `z[..m]` holds `FFT_m(z)` on entry, `z` the
/// spectrum `X[0 … m]` on return; any element type.
pub fn rfft_split_generic<T: Float>(z: &mut [Complex<T>], tw: &[Complex<T>]) {
    split_from(z, tw, 1);
    split_ends(z);
}

/// The merge pass (module doc) on `x [m + 1]` (the spectrum `X[0 … m]`): `x[..m]` holds the `Z`
/// whose `IFFT_m` is `n ×` the signal's sample pairs; any element type.
pub fn rfft_merge_generic<T: Float>(x: &mut [Complex<T>], tw: &[Complex<T>]) {
    merge_from(x, tw, 1);
    merge_ends(x);
}

/// [`rfft_split_generic`] for f32 on [`isa`]: 4 bins per vector on AVX2 and AVX-512.
#[inline]
pub fn rfft_split(z: &mut [Complex<f32>], tw: &[Complex<f32>]) {
    rfft_split_on(isa(), z, tw)
}

/// [`rfft_split`] on a given instruction set.
pub fn rfft_split_on(isa: Isa, z: &mut [Complex<f32>], tw: &[Complex<f32>]) {
    check(z.len(), tw.len());
    #[cfg(target_arch = "x86_64")]
    let k = x86::split(isa, z, tw);
    #[cfg(not(target_arch = "x86_64"))]
    let k = {
        let _ = isa;
        1
    };
    split_from(z, tw, k);
    split_ends(z);
}

/// [`rfft_merge_generic`] for f32 on [`isa`]: 4 bins per vector on AVX2 and AVX-512.
#[inline]
pub fn rfft_merge(x: &mut [Complex<f32>], tw: &[Complex<f32>]) {
    rfft_merge_on(isa(), x, tw)
}

/// [`rfft_merge`] on a given instruction set.
pub fn rfft_merge_on(isa: Isa, x: &mut [Complex<f32>], tw: &[Complex<f32>]) {
    check(x.len(), tw.len());
    #[cfg(target_arch = "x86_64")]
    let k = x86::merge(isa, x, tw);
    #[cfg(not(target_arch = "x86_64"))]
    let k = {
        let _ = isa;
        1
    };
    merge_from(x, tw, k);
    merge_ends(x);
}

fn check(len: usize, tw: usize) {
    assert!(
        len >= 2 && tw > (len - 1) / 2,
        "rfft split/merge: {len} bins need {} twiddles, got {tw}",
        (len - 1) / 2 + 1
    );
}

/// The pairs `(k, m − k)` for `k0 ≤ k < m − k` (the scalar loop, and the vector loop's remainder).
fn split_from<T: Float>(z: &mut [Complex<T>], tw: &[Complex<T>], k0: usize) {
    let m = z.len() - 1;
    let half = T::from(0.5).unwrap();
    for k in k0..m.div_ceil(2) {
        let (a, b) = (z[k], z[m - k].conj());
        let e = (a + b) * half;
        let d = (a - b) * half;
        let o = Complex::new(d.im, -d.re); // −i·d
        let wo = tw[k] * o;
        z[k] = e + wo;
        z[m - k] = (e - wo).conj();
    }
}

fn split_ends<T: Float>(z: &mut [Complex<T>]) {
    let m = z.len() - 1;
    if m.is_multiple_of(2) && m >= 2 {
        z[m / 2] = z[m / 2].conj();
    }
    let z0 = z[0];
    z[0] = Complex::new(z0.re + z0.im, T::zero());
    z[m] = Complex::new(z0.re - z0.im, T::zero());
}

fn merge_from<T: Float>(x: &mut [Complex<T>], tw: &[Complex<T>], k0: usize) {
    let m = x.len() - 1;
    for k in k0..m.div_ceil(2) {
        let (a, b) = (x[k], x[m - k].conj());
        let e = a + b;
        let o = (a - b) * tw[k].conj();
        let io = Complex::new(-o.im, o.re); // i·o
        x[k] = e + io;
        x[m - k] = (e - io).conj();
    }
}

fn merge_ends<T: Float>(x: &mut [Complex<T>]) {
    let m = x.len() - 1;
    let two = T::from(2.0).unwrap();
    if m.is_multiple_of(2) && m >= 2 {
        x[m / 2] = x[m / 2].conj() * two;
    }
    let (x0, xm) = (x[0].re, x[m].re);
    x[0] = Complex::new(x0 + xm, x0 - xm);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Isa;
    use num_complex::Complex;
    use std::arch::x86_64::*;

    /// The vector loop of the split pass over the blocks `k … k + 3` with `k + 4 ≤ ⌈m/2⌉`
    /// (their mirrors `m − k − 3 … m − k` do not overlap them); the first `k` left for the scalar
    /// loop (1 without AVX2 + FMA).
    pub(super) fn split(isa: Isa, z: &mut [Complex<f32>], tw: &[Complex<f32>]) -> usize {
        if !vector(isa) {
            return 1;
        }
        // SAFETY: the dispatched instruction set runs only where its features were detected
        unsafe { run::<false>(z, tw) }
    }

    /// The vector loop of the merge pass (see [`split`]).
    pub(super) fn merge(isa: Isa, x: &mut [Complex<f32>], tw: &[Complex<f32>]) -> usize {
        if !vector(isa) {
            return 1;
        }
        // SAFETY: as in `split`
        unsafe { run::<true>(x, tw) }
    }

    /// Whether `isa` has AVX2 and FMA (an [`Isa`] other than the portable one is only ever chosen
    /// where the CPU runs it).
    fn vector(isa: Isa) -> bool {
        matches!(isa, Isa::Avx2 | Isa::Avx512) && isa.supported()
    }

    /// 4 interleaved complex values in reverse order.
    #[inline(always)]
    unsafe fn reverse(v: __m256) -> __m256 {
        unsafe { _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0x1B)) }
    }

    /// `a · b`, interleaved complex.
    #[inline(always)]
    unsafe fn cmul(a: __m256, b: __m256) -> __m256 {
        unsafe {
            let (br, bi) = (_mm256_moveldup_ps(b), _mm256_movehdup_ps(b));
            let sw = _mm256_permute_ps(a, 0xB1);
            _mm256_fmaddsub_ps(a, br, _mm256_mul_ps(sw, bi))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const MERGE: bool>(z: &mut [Complex<f32>], tw: &[Complex<f32>]) -> usize {
        let m = z.len() - 1;
        let end = m.div_ceil(2);
        assert!(tw.len() >= end);
        // the sign of the imaginary lanes
        let neg_im = _mm256_castsi256_ps(_mm256_set_epi32(
            i32::MIN,
            0,
            i32::MIN,
            0,
            i32::MIN,
            0,
            i32::MIN,
            0,
        ));
        let neg_re = _mm256_castsi256_ps(_mm256_set_epi32(
            0,
            i32::MIN,
            0,
            i32::MIN,
            0,
            i32::MIN,
            0,
            i32::MIN,
        ));
        let half = _mm256_set1_ps(0.5);
        let p = z.as_mut_ptr() as *mut f32;
        let t = tw.as_ptr() as *const f32;
        let mut k = 1;
        while k + 4 <= end {
            // SAFETY: k + 3 < end ≤ m and m − k − 3 > k + 3 (so the two blocks are inside z and
            // disjoint); k + 3 < tw.len()
            unsafe {
                let a = _mm256_loadu_ps(p.add(2 * k));
                let mirror = p.add(2 * (m - k - 3));
                let b = _mm256_xor_ps(reverse(_mm256_loadu_ps(mirror)), neg_im);
                let w = _mm256_loadu_ps(t.add(2 * k));
                let (lo, hi) = if MERGE {
                    // E' = a + b, O' = (a − b)·conj(w), i·O' = [−Im O', Re O']
                    let e = _mm256_add_ps(a, b);
                    let o = cmul(_mm256_sub_ps(a, b), _mm256_xor_ps(w, neg_im));
                    let io = _mm256_xor_ps(_mm256_permute_ps(o, 0xB1), neg_re);
                    (_mm256_add_ps(e, io), _mm256_sub_ps(e, io))
                } else {
                    // E = (a + b)/2, O = −i(a − b)/2 = [Im d, −Re d]
                    let e = _mm256_mul_ps(_mm256_add_ps(a, b), half);
                    let d = _mm256_mul_ps(_mm256_sub_ps(a, b), half);
                    let o = _mm256_xor_ps(_mm256_permute_ps(d, 0xB1), neg_im);
                    let wo = cmul(w, o);
                    (_mm256_add_ps(e, wo), _mm256_sub_ps(e, wo))
                };
                _mm256_storeu_ps(p.add(2 * k), lo);
                _mm256_storeu_ps(mirror, reverse(_mm256_xor_ps(hi, neg_im)));
            }
            k += 4;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 passes on every instruction set this CPU runs equal the f64 scalar passes (which
    /// `engine::rfft`'s test holds to the DFT's definition) on the same input: every m from 1 to 40
    /// (the vector loop's remainders 0–3, odd and even m) and 512, 784.
    #[test]
    fn split_and_merge_on_every_isa_equal_the_f64_passes() {
        let val = crate::engine::simd::test_value;
        for m in (1..=40).chain([512, 784]) {
            let n = 2 * m;
            let tw64: Vec<Complex<f64>> = (0..=m / 2)
                .map(|k| {
                    let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                    Complex::new(a.cos(), a.sin())
                })
                .collect();
            let tw32: Vec<Complex<f32>> = tw64
                .iter()
                .map(|c| Complex::new(c.re as f32, c.im as f32))
                .collect();
            let z64: Vec<Complex<f64>> = (0..=m)
                .map(|k| Complex::new(val(k, m), val(k, m + 1)))
                .collect();
            let z32: Vec<Complex<f32>> = z64
                .iter()
                .map(|c| Complex::new(c.re as f32, c.im as f32))
                .collect();
            for merge in [false, true] {
                let mut want = z64.clone();
                if merge {
                    rfft_merge_generic(&mut want, &tw64);
                } else {
                    rfft_split_generic(&mut want, &tw64);
                }
                for isa in Isa::available() {
                    let mut got = z32.clone();
                    if merge {
                        rfft_merge_on(isa, &mut got, &tw32);
                    } else {
                        rfft_split_on(isa, &mut got, &tw32);
                    }
                    // the merge leaves bin m as it was (its Im is not part of the result)
                    let bins = if merge { m } else { m + 1 };
                    for k in 0..bins {
                        let d = Complex::new(got[k].re as f64, got[k].im as f64) - want[k];
                        assert!(d.norm() < 1e-5, "{isa} m={m} merge={merge} bin {k}: {d}");
                    }
                }
            }
        }
    }
}
