//! The engine's vector loops: dot products, matrix–vector products and the diagonal recurrence
//! step, written for AVX-512 and AVX2 + FMA (chosen at run time) with portable fallbacks, and
//! [`with_avx2`] to run a whole loop compiled for AVX2.

use num_traits::{Float, NumAssign};

/// Runs `f` compiled for AVX2 + FMA when the CPU has them (chosen at run time; the portable build
/// targets SSE2). `f` is inlined into the AVX2 copy, and with it whatever it inlines: mark the hot
/// helpers it calls `#[inline(always)]`. Wrap whole loops (a row, a channel), not single elements.
#[inline(always)]
pub fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA are present (checked at run time).
            return unsafe { run(f) };
        }
    }
    f()
}

/// `Σ x_i` with 8 partial sums (vectorizes; a plain `.sum()` is one dependent chain).
#[inline]
pub fn sum<T: Float + NumAssign>(xs: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let ch = xs.chunks_exact(8);
    let rest = ch.remainder();
    for c in ch {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in rest {
        s += *v;
    }
    s
}

/// `Σ a_i b_i` with 8 partial sums (the portable path of `Float::dot`).
#[inline]
pub fn dot_generic<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] = acc[k] + x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s = s + *x * *y;
    }
    s
}

/// Portable path of `Float::gemv`: one `dot` (the element type's, vectorized where it can be) per
/// row of `W`.
#[inline]
pub fn gemv_generic<T: Float + NumAssign>(
    w: &[T],
    bias: Option<&[T]>,
    x: &[T],
    y: &mut [T],
    dot: impl Fn(&[T], &[T]) -> T,
) {
    let cin = x.len();
    for (o, yv) in y.iter_mut().enumerate() {
        *yv = bias.map_or(T::zero(), |b| b[o]) + dot(&w[o * cin..(o + 1) * cin], x);
    }
}

/// Portable path of `Float::diag_step`.
#[inline]
pub fn diag_step_generic<T: Float + NumAssign>(
    c: [&[T]; 6],
    xr: &mut [T],
    xi: &mut [T],
    u: T,
) -> T {
    let [ar, ai, br, bi, cr, ci] = c;
    let mut acc = T::zero();
    for i in 0..xr.len() {
        let (nr, ni) = (
            ar[i] * xr[i] - ai[i] * xi[i] + br[i] * u,
            ar[i] * xi[i] + ai[i] * xr[i] + bi[i] * u,
        );
        (xr[i], xi[i]) = (nr, ni);
        acc += cr[i] * nr - ci[i] * ni;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// `Float::diag_step` on 16 modes per instruction (masked tail).
    ///
    /// # Safety
    /// AVX-512F must be available; every slice holds `xr.len()` values.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn diag_step512(
        c: [&[f32]; 6],
        xr: &mut [f32],
        xi: &mut [f32],
        u: f32,
    ) -> f32 {
        let m = xr.len();
        let uv = _mm512_set1_ps(u);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < m {
            let k: __mmask16 = if m - i >= 16 {
                0xffff
            } else {
                ((1u32 << (m - i)) - 1) as __mmask16
            };
            // SAFETY: masked loads and stores touch indices i..min(i + 16, m) only.
            unsafe {
                let ld = |v: &[f32]| _mm512_maskz_loadu_ps(k, v.as_ptr().add(i));
                let (ar, ai, br, bi, cr, ci) =
                    (ld(c[0]), ld(c[1]), ld(c[2]), ld(c[3]), ld(c[4]), ld(c[5]));
                let (x, y) = (ld(xr), ld(xi));
                // nr = ar·x − ai·y + br·u,  ni = ar·y + ai·x + bi·u
                let nr = _mm512_fmadd_ps(ar, x, _mm512_fnmadd_ps(ai, y, _mm512_mul_ps(br, uv)));
                let ni = _mm512_fmadd_ps(ar, y, _mm512_fmadd_ps(ai, x, _mm512_mul_ps(bi, uv)));
                _mm512_mask_storeu_ps(xr.as_mut_ptr().add(i), k, nr);
                _mm512_mask_storeu_ps(xi.as_mut_ptr().add(i), k, ni);
                acc = _mm512_fnmadd_ps(ci, ni, _mm512_fmadd_ps(cr, nr, acc));
            }
            i += 16;
        }
        _mm512_reduce_add_ps(acc)
    }

    /// `y = W x` with `W [y.len(), x.len()]` row-major: four rows per pass (four independent load
    /// streams, one load of x per 16 columns), remainder columns masked.
    ///
    /// # Safety
    /// AVX-512F must be available and `w.len() ≥ y.len()·x.len()`.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn gemv512(w: &[f32], x: &[f32], y: &mut [f32]) {
        let (cin, rows) = (x.len(), y.len());
        let full = cin / 16 * 16;
        let tail: __mmask16 = ((1u32 << (cin - full)) - 1) as __mmask16;
        let px = x.as_ptr();
        let mut o = 0;
        // SAFETY (all loads): row r reads w[r·cin + i], i < cin (full chunks, then the masked tail),
        // and x[i], i < cin; r < rows and w.len() ≥ rows·cin (caller).
        unsafe {
            while o + 4 <= rows {
                let p = [0, 1, 2, 3].map(|k| w.as_ptr().add((o + k) * cin));
                let mut acc = [_mm512_setzero_ps(); 4];
                let mut i = 0;
                while i < full {
                    let xv = _mm512_loadu_ps(px.add(i));
                    for k in 0..4 {
                        acc[k] = _mm512_fmadd_ps(_mm512_loadu_ps(p[k].add(i)), xv, acc[k]);
                    }
                    i += 16;
                }
                if tail != 0 {
                    let xv = _mm512_maskz_loadu_ps(tail, px.add(full));
                    for k in 0..4 {
                        acc[k] = _mm512_fmadd_ps(
                            _mm512_maskz_loadu_ps(tail, p[k].add(full)),
                            xv,
                            acc[k],
                        );
                    }
                }
                for k in 0..4 {
                    y[o + k] = _mm512_reduce_add_ps(acc[k]);
                }
                o += 4;
            }
            while o < rows {
                let p = w.as_ptr().add(o * cin);
                let mut acc = _mm512_setzero_ps();
                let mut i = 0;
                while i < full {
                    acc =
                        _mm512_fmadd_ps(_mm512_loadu_ps(p.add(i)), _mm512_loadu_ps(px.add(i)), acc);
                    i += 16;
                }
                if tail != 0 {
                    let a = _mm512_maskz_loadu_ps(tail, p.add(full));
                    acc = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(tail, px.add(full)), acc);
                }
                y[o] = _mm512_reduce_add_ps(acc);
                o += 1;
            }
        }
    }

    /// Dot product of equal-length slices, 4 × 16 lanes of FMA.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 16 floats at i + 16k < n (loop bounds), inside both slices.
        unsafe {
            while i + 64 <= n {
                for (k, s) in acc.iter_mut().enumerate() {
                    let x = _mm512_loadu_ps(pa.add(i + 16 * k));
                    let y = _mm512_loadu_ps(pb.add(i + 16 * k));
                    *s = _mm512_fmadd_ps(x, y, *s);
                }
                i += 64;
            }
            while i + 16 <= n {
                acc[0] = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i)),
                    _mm512_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 16;
            }
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut t = _mm512_reduce_add_ps(s);
        for j in i..n {
            t += a[j] * b[j];
        }
        t
    }

    /// Dot product of equal-length slices, 4 × 8 lanes of FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn dot256(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i + 8k < n (loop bounds), inside both slices.
        unsafe {
            while i + 32 <= n {
                for (k, s) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(pa.add(i + 8 * k));
                    let y = _mm256_loadu_ps(pb.add(i + 8 * k));
                    *s = _mm256_fmadd_ps(x, y, *s);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        let mut t = lanes.iter().sum::<f32>();
        for j in i..n {
            t += a[j] * b[j];
        }
        t
    }
}
