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
    /// Little-endian bytes of a slice (for checkpoints).
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8>;
    /// Reads little-endian values; `None` if the length is not a multiple of the size.
    fn from_le_bytes_slice(b: &[u8]) -> Option<Vec<Self>>;
}

impl Float for f32 {
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
        let y = 1.0 - poly * (-x * x).exp();
        y.copysign(self)
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
/// `C` is `[m, n]`. Runs on gemm with its own threading (`threads` > 1).
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
    // element (i, p) of A: row-major [m, k] → rs = k, cs = 1; transposed storage [k, m] → rs = 1, cs = m
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let par = if threads > 1 && m * n * k >= 32 * 32 * 32 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the slices hold at least m·k, k·n and m·n elements (asserted above) and the strides
    // describe exactly those row-major layouts; T is f32 or f64, both supported by gemm.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}
