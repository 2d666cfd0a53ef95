//! The element type of the engine: `f32` for training, `f64` for gradient checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point element type the engine runs in (`f32` or `f64`).
pub trait Float:
    num_traits::Float
    + num_traits::NumAssign
    + realfft::FftNum
    + Default
    + Debug
    + Display
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Send
    + Sync
    + 'static
{
    /// "f32" or "f64" (the safetensors dtype name is derived from it).
    const NAME: &'static str;
    /// Converts from f64 (rounding for f32).
    fn of(x: f64) -> Self;
    /// Converts to f64.
    fn f64(self) -> f64;
    /// The error function.
    fn erf(self) -> Self;
    /// `exp` for the elementwise layers (GELU, GLU): exact `exp` in f64 (gradient checks); in f32 a
    /// branch-free polynomial (relative error ≤ 2e-7 on [−87, 88], clamped outside) that the
    /// compiler vectorizes, where libm's `expf` is one scalar call per element.
    #[inline]
    fn fast_exp(self) -> Self {
        self.exp()
    }
    /// Little-endian bytes of a slice (for checkpoints).
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8>;
    /// Reads little-endian values; `None` if the length is not a multiple of the size.
    fn from_le_bytes_slice(b: &[u8]) -> Option<Vec<Self>>;
    /// `C (+)= op(A)·op(B)` on faer's kernels (see [`matmul`]; arguments already checked there).
    #[allow(clippy::too_many_arguments)]
    #[doc(hidden)]
    fn faer_matmul(
        c: MatOut<'_, Self>,
        a: MatIn<'_, Self>,
        b: MatIn<'_, Self>,
        accumulate: bool,
        threads: usize,
    );
}

/// A row-major output matrix `[rows, cols]` for [`Float::faer_matmul`].
#[doc(hidden)]
pub struct MatOut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
}

/// A row-major input matrix `[rows, cols]`, used transposed if `t`.
#[doc(hidden)]
pub struct MatIn<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    t: bool,
}

/// Clears the upper halves of the vector registers after faer's AVX-512 kernels: the rest of the
/// engine (and libm) is SSE-encoded, and SSE code after dirty upper state runs several times slower
/// (measured: the S4D kernel's f64 loops and `exp`/`sincos` 2.5× slower without this).
#[inline]
fn zero_upper() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn vzeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present (checked at run time).
            unsafe { vzeroupper() }
        }
    }
}

macro_rules! faer_matmul_impl {
    ($t:ty) => {
        fn faer_matmul(
            c: MatOut<'_, $t>,
            a: MatIn<'_, $t>,
            b: MatIn<'_, $t>,
            accumulate: bool,
            threads: usize,
        ) {
            use faer::MatRef;
            fn view<'a>(x: MatIn<'a, $t>) -> MatRef<'a, $t> {
                let v = MatRef::from_row_major_slice(&x.data[..x.rows * x.cols], x.rows, x.cols);
                if x.t { v.transpose() } else { v }
            }
            let dst = faer::MatMut::from_row_major_slice_mut(
                &mut c.data[..c.rows * c.cols],
                c.rows,
                c.cols,
            );
            let par = if threads > 1 {
                faer::Par::rayon(threads)
            } else {
                faer::Par::Seq
            };
            let acc = if accumulate {
                faer::Accum::Add
            } else {
                faer::Accum::Replace
            };
            faer::linalg::matmul::matmul(dst, acc, view(a), view(b), 1.0, par);
            zero_upper();
        }
    };
}

impl Float for f32 {
    faer_matmul_impl!(f32);
    const NAME: &'static str = "f32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
    /// Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, below f32 resolution near 1): a few
    /// multiplications and one `exp`, several times faster than a correctly rounded `erff`.
    #[inline]
    fn erf(self) -> Self {
        let x = self.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * x);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
        let y = 1.0 - poly * (-x * x).fast_exp();
        y.copysign(self)
    }
    #[inline]
    fn fast_exp(self) -> Self {
        // n = round(x / ln 2) by the 1.5·2²³ trick, r = x − n ln 2 (Cody–Waite), Cephes' degree-6
        // polynomial for e^r on |r| ≤ ln2/2, then 2ⁿ from the exponent bits.
        const MAGIC: f32 = 12_582_912.0;
        let x = self.clamp(-87.0, 88.0); // NaN stays NaN
        let kf = x * std::f32::consts::LOG2_E + MAGIC;
        let n = kf - MAGIC;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 0.166_666_65)
            * r
            + 0.5;
        let e = p * r * r + r + 1.0;
        let scale =
            f32::from_bits((kf.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127)) << 23);
        e * scale
    }
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn from_le_bytes_slice(b: &[u8]) -> Option<Vec<Self>> {
        b.len().is_multiple_of(4).then(|| {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

impl Float for f64 {
    faer_matmul_impl!(f64);
    const NAME: &'static str = "f64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn from_le_bytes_slice(b: &[u8]) -> Option<Vec<Self>> {
        b.len().is_multiple_of(8).then(|| {
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
    }
}

/// `C = A·B` (or `C += A·B` with `accumulate`) for row-major matrices, with optional transposes:
/// `A` is `[m, k]` (or stored `[k, m]` if `ta`), `B` is `[k, n]` (or stored `[n, k]` if `tb`),
/// `C` is `[m, n]`. Runs on faer's kernels (AVX-512/AVX2 chosen at run time), threaded with
/// rayon when `threads` > 1 and the product is large.
///
/// Measured here (one core, f32): faer 137–155 GFLOP/s on 64×64×128 … 256³ where `gemm` 0.19
/// gives 29–47 — so the engine's products go through faer.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Float>(
    c: &mut [T],
    a: &[T],
    b: &[T],
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    accumulate: bool,
    threads: usize,
) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|x| *x = T::zero());
        }
        return;
    }
    let par = if m * n * k >= 64 * 64 * 64 {
        threads
    } else {
        1
    };
    // A is [m, k] (stored [k, m] if ta), B is [k, n] (stored [n, k] if tb)
    let (ar, ac) = if ta { (k, m) } else { (m, k) };
    let (br, bc) = if tb { (n, k) } else { (k, n) };
    T::faer_matmul(
        MatOut {
            data: c,
            rows: m,
            cols: n,
        },
        MatIn {
            data: a,
            rows: ar,
            cols: ac,
            t: ta,
        },
        MatIn {
            data: b,
            rows: br,
            cols: bc,
            t: tb,
        },
        accumulate,
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::Float;

    #[test]
    fn f32_fast_exp_and_erf_against_f64() {
        // every 1e-3 on [−87, 88] for exp (relative), [−6, 6] for erf (absolute)
        let mut worst_exp = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f64 * 1e-3;
            let got = (x as f32).fast_exp() as f64;
            let want = (x as f32 as f64).exp();
            worst_exp = worst_exp.max((got - want).abs() / want);
        }
        assert!(worst_exp < 3e-7, "fast_exp: {worst_exp:e}");
        assert_eq!((-200.0f32).fast_exp(), (-87.0f32).fast_exp()); // clamped, finite
        assert!((200.0f32).fast_exp().is_finite());
        assert!(f32::NAN.fast_exp().is_nan()); // a diverged value is not hidden
        let mut worst_erf = 0.0f64;
        for i in -6000..=6000 {
            let x = i as f64 * 1e-3;
            let got = Float::erf(x as f32) as f64;
            let want = libm::erf(x as f32 as f64);
            worst_erf = worst_erf.max((got - want).abs());
        }
        // A&S 7.1.26 is within 1.5e-7 in exact arithmetic; f32 rounding adds a few ulp of 1
        assert!(worst_erf < 1e-6, "erf: {worst_erf:e}");
    }
}
