//! The element type of the engine: `f32` for training, `f64` for gradient checks. Its vector loops
//! live in [`crate::engine::simd`], its matrix product in [`crate::engine::gemm`].

use crate::engine::simd::{
    self, diag_steps_generic, dot_generic, gemv_batch_generic, gemv_generic,
};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// `y [B, rows] = x [B, cols] Ŵᵀ + bias` with `Ŵ[r, j] = get(r, j)` (half-precision weights read
/// as f32), the portable loops of the half products for any element type.
fn half_product<T: Float>(
    get: impl Fn(usize, usize) -> f32,
    rows: usize,
    cols: usize,
    bias: Option<&[T]>,
    x: &[T],
    y: &mut [T],
) {
    for (xb, yb) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
        for (r, yv) in yb.iter_mut().enumerate() {
            let mut acc = bias.map_or(T::zero(), |b| b[r]);
            for (j, xv) in xb.iter().enumerate() {
                acc += T::of(get(r, j) as f64) * *xv;
            }
            *yv = acc;
        }
    }
}

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
    /// `Σ a_i b_i` over the common length (8 partial sums; f32 runs the SIMD layer's kernel on the
    /// instruction set chosen at run time, [`simd::isa`]).
    #[inline]
    fn dot(a: &[Self], b: &[Self]) -> Self {
        dot_generic(a, b)
    }
    /// The split pass of a real FFT after its half-length complex FFT ([`simd::rfft_split`]).
    #[inline]
    fn rfft_split(z: &mut [num_complex::Complex<Self>], tw: &[num_complex::Complex<Self>]) {
        simd::rfft_split_generic(z, tw)
    }
    /// The merge pass of a real inverse FFT before its half-length complex FFT
    /// ([`simd::rfft_merge`]).
    #[inline]
    fn rfft_merge(x: &mut [num_complex::Complex<Self>], tw: &[num_complex::Complex<Self>]) {
        simd::rfft_merge_generic(x, tw)
    }
    /// `[x₀·y₀, x₁·y₁, x₀·y₁, x₁·y₀]`: the real dot products of two complex vectors' parts (f32: the
    /// SIMD layer's one-pass kernel).
    #[inline]
    fn dot4(x: [&[Self]; 2], y: [&[Self]; 2]) -> [Self; 4] {
        [
            Self::dot(x[0], y[0]),
            Self::dot(x[1], y[1]),
            Self::dot(x[0], y[1]),
            Self::dot(x[1], y[0]),
        ]
    }
    /// `y[o] = bias[o] + Σ_i W[o, i] x[i]`, `W` row-major `[y.len(), x.len()]` (f32: the SIMD layer,
    /// four rows per pass).
    #[inline]
    fn gemv(w: &[Self], bias: Option<&[Self]>, x: &[Self], y: &mut [Self]) {
        gemv_generic(w, bias, x, y, Self::dot)
    }
    /// `y [B, Cout] = x [B, Cin] Wᵀ + bias` for B streams, `W [Cout, Cin]` row-major (f32: the SIMD
    /// layer's register blocks, the weights read once for all streams).
    #[inline]
    fn gemv_batch(w: &[Self], bias: Option<&[Self]>, x: &[Self], cin: usize, y: &mut [Self]) {
        gemv_batch_generic(w, bias, x, cin, y, Self::dot)
    }
    /// `y [B, rows] = x [B, cols] Wᵀ + bias` on a weight matrix packed for the recurrent step
    /// ([`simd::Packed`]: one sequential read of the weights for all B streams).
    #[inline]
    fn packed_gemv(p: &simd::Packed<Self>, bias: Option<&[Self]>, x: &[Self], y: &mut [Self]) {
        simd::packed_gemv_generic(p, bias, x, y)
    }
    /// `y [B, rows] = x [B, cols] Wᵀ + bias` on weights in column panels ([`simd::Panels`]: the
    /// products of several streams as one register-blocked matrix–matrix product).
    #[inline]
    fn panel_gemm(p: &simd::Panels<Self>, bias: Option<&[Self]>, x: &[Self], y: &mut [Self]) {
        simd::panel_gemm_generic(p, bias, x, y)
    }
    /// `y [B, rows] = x [B, cols] Wᵀ + bias` on weights in row tiles ([`simd::LanePanels`]: the
    /// streams in the vector lanes, the weights read once for every chunk of streams).
    #[inline]
    fn lane_gemm(p: &simd::LanePanels<Self>, bias: Option<&[Self]>, x: &[Self], y: &mut [Self]) {
        simd::lane_gemm_generic(p, bias, x, y)
    }
    /// [`Float::packed_gemv`] on weights stored as bf16/f16 ([`simd::PackedHalf`]): the product
    /// with the rounded weights (f32: the SIMD layer, f32 arithmetic; others: portable loops).
    #[inline]
    fn packed_gemv_half(p: &simd::PackedHalf, bias: Option<&[Self]>, x: &[Self], y: &mut [Self]) {
        half_product(|r, j| p.get(r, j), p.rows(), p.cols(), bias, x, y)
    }
    /// [`Float::lane_gemm`] on weights stored as bf16/f16 ([`simd::LanePanelsHalf`]): the product
    /// with the rounded weights (f32: the SIMD layer; others: portable loops).
    #[inline]
    fn lane_gemm_half(p: &simd::LanePanelsHalf, bias: Option<&[Self]>, x: &[Self], y: &mut [Self]) {
        half_product(|r, j| p.get(r, j), p.rows(), p.cols(), bias, x, y)
    }
    /// One step of B streams of H channels of M diagonal complex modes with `B̄` folded into the
    /// readout ([`simd::diag_steps`]), channels interleaved in blocks of 16: `c = [Re Ā, Im Ā,
    /// Re C̃, Im C̃]` (each `[⌈H/16⌉, M, 16]`, [`simd::interleave_modes`]), states
    /// `[B, ⌈H/16⌉, M, 2, 16]`, `u, y [B, H]`: `z ← Ā z + u`, `y = Re Σ C̃ z`.
    #[inline]
    fn diag_steps(
        c: [&[Self]; 4],
        h: usize,
        m: usize,
        states: &mut [Self],
        u: &[Self],
        y: &mut [Self],
    ) {
        diag_steps_generic(c, h, m, states, u, y)
    }
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
    /// `C (+)= op(A)·op(B)` on faer's kernels (see [`crate::engine::gemm::Gemm`]; arguments
    /// already checked there).
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
    pub(crate) data: &'a mut [T],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

/// A row-major input matrix `[rows, cols]`, used transposed if `t`.
#[doc(hidden)]
pub struct MatIn<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) t: bool,
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
    #[inline]
    fn diag_steps(
        c: [&[f32]; 4],
        h: usize,
        m: usize,
        states: &mut [f32],
        u: &[f32],
        y: &mut [f32],
    ) {
        simd::diag_steps(c, h, m, states, u, y)
    }
    #[inline]
    fn gemv(w: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        simd::gemv(w, bias, x, y)
    }
    #[inline]
    fn gemv_batch(w: &[f32], bias: Option<&[f32]>, x: &[f32], cin: usize, y: &mut [f32]) {
        simd::gemv_batch(w, bias, x, cin, y)
    }
    #[inline]
    fn packed_gemv(p: &simd::Packed<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        simd::packed_gemv(p, bias, x, y)
    }
    #[inline]
    fn panel_gemm(p: &simd::Panels<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        simd::panel_gemm(p, bias, x, y)
    }
    #[inline]
    fn lane_gemm(p: &simd::LanePanels<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        simd::lane_gemm(p, bias, x, y)
    }
    #[inline]
    fn rfft_split(z: &mut [num_complex::Complex<f32>], tw: &[num_complex::Complex<f32>]) {
        simd::rfft_split(z, tw)
    }
    #[inline]
    fn rfft_merge(x: &mut [num_complex::Complex<f32>], tw: &[num_complex::Complex<f32>]) {
        simd::rfft_merge(x, tw)
    }
    #[inline]
    fn packed_gemv_half(p: &simd::PackedHalf, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        simd::packed_gemv_half(p, bias, x, y)
    }
    #[inline]
    fn lane_gemm_half(p: &simd::LanePanelsHalf, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
        simd::lane_gemm_half(p, bias, x, y)
    }
    #[inline]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        simd::dot(a, b)
    }
    #[inline]
    fn dot4(x: [&[f32]; 2], y: [&[f32]; 2]) -> [f32; 4] {
        simd::dot4(x, y)
    }
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

    type TiledOn<const R: usize> = fn(
        crate::engine::simd::Isa,
        &crate::engine::simd::RowTiles<f32, R>,
        Option<&[f32]>,
        &[f32],
        &mut [f32],
    );
    type TiledGeneric<const R: usize> =
        fn(&crate::engine::simd::RowTiles<f64, R>, Option<&[f64]>, &[f64], &mut [f64]);

    /// A product on row tiles (`on`, f32 on `isa`, and its portable f64 loops `generic`) against f64
    /// sums of the unpacked `W`, with and without bias, for each of `rows` × `batches`.
    #[allow(clippy::too_many_arguments)]
    fn tiled_products<const R: usize>(
        name: &str,
        isa: crate::engine::simd::Isa,
        n: usize,
        rows: &[usize],
        batches: &[usize],
        seed: u32,
        on: TiledOn<R>,
        generic: TiledGeneric<R>,
    ) {
        for &rows in rows {
            let w = vals(rows * n, seed);
            let bias = vals(rows, seed + 1);
            let tiles = crate::engine::simd::RowTiles::<f32, R>::new(&w, rows, n);
            let w64: Vec<f64> = w.iter().map(|v| *v as f64).collect();
            let tiles64 = crate::engine::simd::RowTiles::<f64, R>::new(&w64, rows, n);
            for &batch in batches {
                let x = vals(batch * n, seed + 2);
                let x64: Vec<f64> = x.iter().map(|v| *v as f64).collect();
                for with_bias in [true, false] {
                    let bv = with_bias.then_some(&bias[..]);
                    let b64: Vec<f64> = bias.iter().map(|v| *v as f64).collect();
                    let mut y = vec![f32::NAN; batch * rows];
                    on(isa, &tiles, bv, &x, &mut y);
                    let mut yg = vec![f64::NAN; batch * rows];
                    generic(&tiles64, with_bias.then_some(&b64[..]), &x64, &mut yg);
                    for bb in 0..batch {
                        for o in 0..rows {
                            let want = if with_bias { bias[o] as f64 } else { 0.0 }
                                + (0..n)
                                    .map(|i| w[o * n + i] as f64 * x[bb * n + i] as f64)
                                    .sum::<f64>();
                            let e = (y[bb * rows + o] as f64 - want).abs();
                            assert!(
                                e < 1e-5 * n as f64,
                                "{isa} {name} n={n} rows={rows} B={batch}: {e:e}"
                            );
                            let e = (yg[bb * rows + o] - want).abs();
                            assert!(e < 1e-12 * n as f64, "{name} generic n={n}");
                        }
                    }
                }
            }
        }
    }

    fn vals(n: usize, seed: u32) -> Vec<f32> {
        // deterministic values in (−1, 1)
        (0..n)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                (v % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn f32_simd_kernels_on_every_isa_against_f64_sums() {
        use crate::engine::simd::{self, Isa};
        for isa in Isa::available() {
            // lengths around the 4-, 8- and 16-lane vectors and the register blocks, tails included
            for n in [1usize, 7, 15, 16, 17, 31, 32, 33, 64, 100, 256, 300] {
                let (a, b) = (vals(n, 1), vals(n, 2));
                let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
                let got = simd::dot_on(isa, &a, &b) as f64;
                assert!(
                    (got - want).abs() < 1e-5 * n as f64,
                    "{isa} dot n={n}: {got} vs {want}"
                );
                let (c, d) = (vals(n, 5), vals(n, 6));
                let sum = |u: &[f32], v: &[f32]| -> f64 {
                    u.iter().zip(v).map(|(x, y)| *x as f64 * *y as f64).sum()
                };
                let want4 = [sum(&a, &c), sum(&b, &d), sum(&a, &d), sum(&b, &c)];
                let got4 = simd::dot4_on(isa, [&a, &b], [&c, &d]);
                for (g, w) in got4.iter().zip(want4) {
                    assert!(
                        (*g as f64 - w).abs() < 1e-5 * n as f64,
                        "{isa} dot4 n={n}: {g} vs {w}"
                    );
                }
                // the column-panel product: rows around the 32-row panels, columns around the
                // 128-column chunks (n up to 300), stream counts around the 3- and 6-stream tiles
                tiled_products(
                    "panel_gemm",
                    isa,
                    n,
                    &[1, 31, 32, 33, 70],
                    &[1, 2, 3, 4, 6, 7, 13],
                    7,
                    simd::panel_gemm_on,
                    simd::panel_gemm_generic,
                );
                // the stream-lane product: rows around the 6-row tiles, columns around the
                // 256-column chunks (n up to 300), stream counts around whole and partial vectors
                // and chunks (1 … 2 vectors on AVX2 and AVX-512, 4 on NEON, 2 streams portable)
                tiled_products(
                    "lane_gemm",
                    isa,
                    n,
                    &[1, 5, 6, 7, 13],
                    &[1, 3, 8, 16, 17, 33, 40],
                    10,
                    simd::lane_gemm_on,
                    simd::lane_gemm_generic,
                );
                for rows in [1usize, 3, 4, 5, 9] {
                    let w = vals(rows * n, 3);
                    let bias = vals(rows, 4);
                    let want_row = |o: usize, x: &[f32]| {
                        bias[o] as f64
                            + (0..n)
                                .map(|i| w[o * n + i] as f64 * x[i] as f64)
                                .sum::<f64>()
                    };
                    let mut y = vec![0f32; rows];
                    simd::gemv_on(isa, &w, Some(&bias), &a, &mut y);
                    for (o, yv) in y.iter().enumerate() {
                        let e = (*yv as f64 - want_row(o, &a)).abs();
                        assert!(e < 1e-5 * n as f64, "{isa} gemv n={n} row {o}");
                    }
                    let packed = simd::Packed::new(&w, rows, n);
                    for batch in [1usize, 2, 3, 5] {
                        let x = vals(batch * n, 5);
                        let mut y = vec![0f32; batch * rows];
                        let mut yp = vec![0f32; batch * rows];
                        simd::gemv_batch_on(isa, &w, Some(&bias), &x, n, &mut y);
                        simd::packed_gemv_on(isa, &packed, Some(&bias), &x, &mut yp);
                        let mut yg = vec![0f64; batch * rows];
                        let (w64, b64, x64): (Vec<f64>, Vec<f64>, Vec<f64>) = (
                            w.iter().map(|v| *v as f64).collect(),
                            bias.iter().map(|v| *v as f64).collect(),
                            x.iter().map(|v| *v as f64).collect(),
                        );
                        simd::packed_gemv_generic(
                            &simd::Packed::new(&w64, rows, n),
                            Some(&b64),
                            &x64,
                            &mut yg,
                        );
                        for bb in 0..batch {
                            for o in 0..rows {
                                let want = want_row(o, &x[bb * n..(bb + 1) * n]);
                                let e = (y[bb * rows + o] as f64 - want).abs();
                                assert!(e < 1e-5 * n as f64, "{isa} gemv_batch n={n} B={batch}");
                                let e = (yp[bb * rows + o] as f64 - want).abs();
                                assert!(e < 1e-5 * n as f64, "{isa} packed_gemv n={n} B={batch}");
                                let e = (yg[bb * rows + o] - want).abs();
                                assert!(
                                    e < 1e-12 * n as f64,
                                    "packed_gemv_generic n={n} B={batch}"
                                );
                            }
                        }
                    }
                }
            }
            // the folded diagonal recurrence, channels interleaved in blocks of 16: H channels
            // (within one block, exactly one, a partial second and third), M modes, B = 2 streams,
            // 3 steps, against f64 sums on a channel-major reference state; the state's index
            // written out from the layout's definition, not from the code's own mapping
            for (h, m) in [
                (3usize, 1usize),
                (3, 7),
                (16, 32),
                (17, 16),
                (33, 33),
                (5, 17),
            ] {
                let batch = 2usize;
                let blocks = h.div_ceil(16);
                let sl = blocks * 2 * m * 16;
                let at = |bb: usize, ch: usize, part: usize, j: usize| {
                    bb * sl + (((ch / 16) * m + j) * 2 + part) * 16 + ch % 16
                };
                let c: Vec<Vec<f32>> = (0..4).map(|k| vals(h * m, 10 + k)).collect();
                // |Ā| < 1 as in a trained model
                let ar: Vec<f32> = c[0].iter().map(|v| 0.6 * v).collect();
                let ai: Vec<f32> = c[1].iter().map(|v| 0.6 * v).collect();
                let il: Vec<Vec<f32>> = [&ar, &ai, &c[2], &c[3]]
                    .iter()
                    .map(|v| simd::interleave_modes(v, h, m))
                    .collect();
                for (k, v) in il.iter().enumerate() {
                    assert_eq!(v.len(), blocks * m * 16);
                    for ch in 0..blocks * 16 {
                        for j in 0..m {
                            let want = if ch < h {
                                [&ar, &ai, &c[2], &c[3]][k][ch * m + j]
                            } else {
                                0.0
                            };
                            assert_eq!(v[((ch / 16) * m + j) * 16 + ch % 16], want);
                        }
                    }
                }
                let il64: Vec<Vec<f64>> = il
                    .iter()
                    .map(|v| v.iter().map(|x| *x as f64).collect())
                    .collect();
                let mut st = vec![0f32; batch * sl];
                let mut want_st = vec![[0f64; 2]; batch * h * m];
                let init = vals(batch * h * 2 * m, 20);
                for bb in 0..batch {
                    for ch in 0..h {
                        for j in 0..m {
                            for part in 0..2 {
                                let v = init[((bb * h + ch) * m + j) * 2 + part];
                                st[at(bb, ch, part, j)] = v;
                                want_st[(bb * h + ch) * m + j][part] = v as f64;
                            }
                        }
                    }
                }
                for t in 0..3 {
                    let u = vals(batch * h, 30 + t);
                    let mut y = vec![0f32; batch * h];
                    let cs = [&il[0][..], &il[1][..], &il[2][..], &il[3][..]];
                    // the portable path for any element type, in f64, from the same state
                    let mut st64: Vec<f64> = st.iter().map(|v| *v as f64).collect();
                    let u64: Vec<f64> = u.iter().map(|v| *v as f64).collect();
                    let mut y64 = vec![0f64; batch * h];
                    let cs64 = [&il64[0][..], &il64[1][..], &il64[2][..], &il64[3][..]];
                    simd::diag_steps_generic(cs64, h, m, &mut st64, &u64, &mut y64);
                    simd::diag_steps_on(isa, cs, h, m, &mut st, &u, &mut y);
                    for bb in 0..batch {
                        for ch in 0..h {
                            let mut want_y = 0.0f64;
                            for j in 0..m {
                                let k = ch * m + j;
                                let [zr, zi] = want_st[(bb * h + ch) * m + j];
                                let nr =
                                    ar[k] as f64 * zr - ai[k] as f64 * zi + u[bb * h + ch] as f64;
                                let ni = ar[k] as f64 * zi + ai[k] as f64 * zr;
                                want_st[(bb * h + ch) * m + j] = [nr, ni];
                                want_y += c[2][k] as f64 * nr - c[3][k] as f64 * ni;
                                for (part, w) in [nr, ni].into_iter().enumerate() {
                                    let g = st[at(bb, ch, part, j)] as f64;
                                    assert!(
                                        (g - w).abs() < 1e-5,
                                        "{isa} diag_steps h={h} m={m} state"
                                    );
                                    // the f64 path from the f32 path's previous state: within
                                    // the f32 state's own rounding of the reference
                                    let g64 = st64[at(bb, ch, part, j)];
                                    assert!((g64 - w).abs() < 1e-5, "diag_steps_generic state");
                                }
                            }
                            let e = (y[bb * h + ch] as f64 - want_y).abs();
                            assert!(e < 1e-5 * m as f64, "{isa} diag_steps h={h} m={m} y: {e:e}");
                            let e = (y64[bb * h + ch] - want_y).abs();
                            assert!(e < 1e-5 * m as f64, "diag_steps_generic h={h} m={m} y");
                        }
                        // the padding channels' state stays exactly 0
                        for ch in h..blocks * 16 {
                            for j in 0..m {
                                assert_eq!(st[at(bb, ch, 0, j)], 0.0);
                                assert_eq!(st[at(bb, ch, 1, j)], 0.0);
                            }
                        }
                    }
                }
            }
        }
    }
}
