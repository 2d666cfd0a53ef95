//! Half-precision storage of the recurrent step's weights — bf16 or f16 — read with f32 arithmetic:
//! half the bytes per token for the output projections, which are most of what a step reads.
//!
//! ```text
//! bf16: the top 16 bits of an f32 (8 exponent bits, 7 stored mantissa bits)
//!       f32 → bf16: round to nearest, ties to even;  relative error ≤ u = 2⁻⁸
//!       bf16 → f32: bits << 16                                              (exact)
//! f16:  IEEE binary16 (5 exponent bits, 10 stored mantissa bits, |x| ≤ 65504)
//!       f32 → f16: round to nearest, ties to even;  relative error ≤ u = 2⁻¹¹ for |x| ≥ 2⁻¹⁴,
//!                  absolute ≤ 2⁻²⁵ below (subnormals)
//!       f16 → f32: sign | from_bits((bits & 0x7fff) << 13) · 2¹¹²             (exact for every
//!                  finite f16, subnormals included: the product rescales the exponent field)
//! product: y = x Ŵᵀ + bias with Ŵ the rounded weights, every product and sum in f32
//! ```
//! So a half-precision step computes exactly what an f32 step on the rounded weights computes (the
//! tests check this), and each output moves by at most `u · Σ_i |W_oi x_i|` from the f32 one, per
//! layer. The recurrence coefficients stay f32: `Ā` multiplies the state at every step, so a rounded
//! `|Ā|` changes a mode's time constant (at `|Ā| = 1 − 10⁻³`, bf16's spacing near 1 is 2⁻⁸ ≈ 4·10⁻³:
//! the mode's memory of 1000 steps would become 200 or none), and `C̃` is a few per cent of the bytes.
//!
//! Layout: [`Packed`]'s, with 16-bit values. On x86-64 the product converts each weight vector as
//! it loads it (F16C `vcvtph2ps`; zero-extend and shift for bf16), 4 rows × 2 streams per pass; the
//! portable (and NEON) loops convert a row block's columns to f32 in L1, 512 at a time, and run
//! [`super::packed`]'s f32 register blocks on them. For whole vectors of streams (16, 24, 32, … on
//! AVX2) the weights are [`LanePanelsHalf`], [`super::LanePanels`]' row tiles with 16-bit values:
//! [`super::lane_gemm_half`] decodes a tile's 256-column chunk to f32 in L1 (F16C for f16) and runs
//! the f32 lanes product on it. Measured on the AVX2 machine (6×H256, 16 streams, whole step, best
//! of 0.7 s, six alternations): bf16 679–743 µs, f16 677–741 µs on the row tiles, 708–810 µs on the
//! row blocks, f32 625–680 µs — at 16 streams the step is bound by the products' FMAs and the
//! states, not the weights' bytes, so half storage pays at batch 1 (76–92 µs vs 106 µs), not here.

use super::lanes::LANE_ROWS;
use super::packed::{Packed, row_block};
use super::tiles::RowTiles;
use super::{Isa, dispatch_on, isa};
use pulp::{Simd, WithSimd};

/// A 16-bit storage format of the step's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Half {
    /// bfloat16: f32's range, 8 significant bits.
    Bf16,
    /// IEEE binary16: |x| ≤ 65504, 11 significant bits.
    F16,
}

impl Half {
    /// `bf16` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Half::Bf16 => "bf16",
            Half::F16 => "f16",
        }
    }

    /// The unit roundoff `u`: the largest relative error of rounding a value in the normal range.
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Half::Bf16 => 2f64.powi(-8),
            Half::F16 => 2f64.powi(-11),
        }
    }

    /// `x` rounded to this format (to nearest, ties to even), as its bits; an error if `x` is not
    /// finite or rounds beyond the format's largest finite value.
    pub fn round(self, x: f32) -> Result<u16, String> {
        if !x.is_finite() {
            return Err(format!("{x} is not finite"));
        }
        let bits = x.to_bits();
        let h = match self {
            Half::Bf16 => {
                let r = bits + 0x7fff + ((bits >> 16) & 1);
                let h = (r >> 16) as u16;
                if h & 0x7f80 == 0x7f80 {
                    return Err(format!("{x} is beyond bf16's range"));
                }
                h
            }
            Half::F16 => {
                let sign = ((bits >> 16) & 0x8000) as u16;
                let a = x.abs();
                // 65520 = halfway between 65504 (the largest f16) and 65536: it rounds to infinity
                if a >= 65520.0 {
                    return Err(format!("{x} is beyond f16's range (|x| ≤ 65504)"));
                }
                let mag = if a < 2f32.powi(-14) {
                    // subnormal: a multiple of 2⁻²⁴ (the product is exact in f32); 0x400, the
                    // smallest normal, is also the right encoding when it rounds up to 2⁻¹⁴
                    (a * 2f32.powi(24)).round_ties_even() as u16
                } else {
                    let ab = a.to_bits();
                    let exp = (ab >> 23) as i32 - 127 + 15; // 1 ..= 30 here
                    let m = ab & 0x7f_ffff;
                    let (keep, rest) = (m >> 13, m & 0x1fff);
                    let up = rest > 0x1000 || (rest == 0x1000 && keep & 1 == 1);
                    // a carry out of the mantissa moves into the exponent, as it should
                    ((exp as u32) << 10) as u16 + keep as u16 + up as u16
                };
                sign | mag
            }
        };
        Ok(h)
    }

    /// The row-major `w [rows, cols]` rounded value by value; an error names the first weight that
    /// is not finite or beyond the format's range (row, column).
    pub fn round_matrix(self, w: &[f32], rows: usize, cols: usize) -> Result<Vec<u16>, String> {
        w[..rows * cols]
            .iter()
            .enumerate()
            .map(|(i, v)| {
                self.round(*v)
                    .map_err(|e| format!("weight [{}, {}]: {e}", i / cols.max(1), i % cols.max(1)))
            })
            .collect()
    }

    /// `out[i]` = the f32 value of `bits[i]` (a loop the caller's instruction set vectorizes).
    #[inline(always)]
    pub(crate) fn decode_into(self, bits: &[u16], out: &mut [f32]) {
        match self {
            Half::Bf16 => {
                for (o, h) in out.iter_mut().zip(bits) {
                    *o = bf16_to_f32(*h);
                }
            }
            Half::F16 => {
                // F16C's conversion (exact, like the formula) where the CPU has it: one instruction
                // per 8 values instead of seven
                #[cfg(target_arch = "x86_64")]
                if x86::f16_decode(bits, out) {
                    return;
                }
                for (o, h) in out.iter_mut().zip(bits) {
                    *o = f16_to_f32(*h);
                }
            }
        }
    }

    /// The f32 value of this format's bits (exact; `bits` from [`Half::round`]).
    #[inline(always)]
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            Half::Bf16 => bf16_to_f32(bits),
            Half::F16 => f16_to_f32(bits),
        }
    }
}

impl std::fmt::Display for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Half {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bf16" => Ok(Half::Bf16),
            "f16" => Ok(Half::F16),
            _ => Err(format!("unknown half format `{s}` (bf16 or f16)")),
        }
    }
}

#[inline(always)]
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    // 2¹¹² = 2^(127 − 15): f32's exponent bias minus f16's
    let mag = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(mag.to_bits() | ((h & 0x8000) << 16))
}

/// `W [rows, cols]` rounded to a [`Half`] format, in [`Packed`]'s layout.
#[derive(Debug, Clone)]
pub struct PackedHalf {
    bits: Packed<u16>,
    kind: Half,
}

impl PackedHalf {
    /// Rounds and packs the row-major `w [rows, cols]`; an error names the first weight that is not
    /// finite or beyond the format's range (row, column).
    pub fn new(w: &[f32], rows: usize, cols: usize, kind: Half) -> Result<Self, String> {
        assert!(
            w.len() >= rows * cols,
            "PackedHalf: W [{rows}, {cols}] has {} values",
            w.len()
        );
        let bits = kind.round_matrix(w, rows, cols)?;
        Ok(PackedHalf {
            bits: Packed::new(&bits, rows, cols),
            kind,
        })
    }

    /// Rows of `W` (outputs).
    pub fn rows(&self) -> usize {
        self.bits.rows()
    }

    /// Columns of `W` (inputs).
    pub fn cols(&self) -> usize {
        self.bits.cols()
    }

    /// The storage format.
    pub fn kind(&self) -> Half {
        self.kind
    }

    /// The rounded weight `Ŵ[r, j]` as f32 (what the product multiplies by).
    #[inline]
    pub fn get(&self, r: usize, j: usize) -> f32 {
        let cc = self.cols().div_ceil(16);
        let v = self.bits.data()[(((r / 4) * cc + j / 16) * 4 + r % 4) * 16 + j % 16];
        self.kind.to_f32(v)
    }

    /// The rounded weights as f32, row-major `[rows, cols]`.
    pub fn to_f32(&self) -> Vec<f32> {
        let (rows, cols) = (self.rows(), self.cols());
        (0..rows * cols)
            .map(|i| self.get(i / cols, i % cols))
            .collect()
    }
}

/// `W [rows, cols]` rounded to a [`Half`] format in [`super::LanePanels`]' row tiles of
/// [`super::LANE_ROWS`] (16-bit values): the weights of [`super::lane_gemm_half`], the batched
/// step's product with whole vectors of streams.
#[derive(Debug, Clone)]
pub struct LanePanelsHalf {
    pub(crate) bits: RowTiles<u16, LANE_ROWS>,
    pub(crate) kind: Half,
}

impl LanePanelsHalf {
    /// Rounds and packs the row-major `w [rows, cols]`; an error names the first weight that is not
    /// finite or beyond the format's range (row, column).
    pub fn new(w: &[f32], rows: usize, cols: usize, kind: Half) -> Result<Self, String> {
        assert!(
            w.len() >= rows * cols,
            "LanePanelsHalf: W [{rows}, {cols}] has {} values",
            w.len()
        );
        let bits = kind.round_matrix(w, rows, cols)?;
        Ok(LanePanelsHalf {
            bits: RowTiles::new(&bits, rows, cols),
            kind,
        })
    }

    /// Rows of `W` (outputs).
    pub fn rows(&self) -> usize {
        self.bits.rows()
    }

    /// Columns of `W` (inputs).
    pub fn cols(&self) -> usize {
        self.bits.cols()
    }

    /// The storage format.
    pub fn kind(&self) -> Half {
        self.kind
    }

    /// Bytes the packed weights take.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.bits.data())
    }

    /// The rounded weight `Ŵ[r, j]` as f32 (what the product multiplies by).
    #[inline]
    pub fn get(&self, r: usize, j: usize) -> f32 {
        let at = ((r / LANE_ROWS) * self.cols() + j) * LANE_ROWS + r % LANE_ROWS;
        self.kind.to_f32(self.bits.data()[at])
    }
}

/// The portable product (and NEON's): the weights of one row block converted to f32 a segment of
/// 512 columns at a time, then [`row_block`]'s f32 register blocks for all streams.
struct HalfGemv<'a> {
    p: &'a PackedHalf,
    bias: Option<&'a [f32]>,
    x: &'a [f32],
    y: &'a mut [f32],
}

/// Columns converted at a time by [`HalfGemv`]: 32 chunks of 16 (4 rows × 512 columns).
const SEG: usize = 32;

impl WithSimd for HalfGemv<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let HalfGemv { p, bias, x, y } = self;
        let (rows, cols, kind) = (p.rows(), p.cols(), p.kind);
        let (rb, cc) = (rows.div_ceil(4), cols.div_ceil(16));
        let d = p.bits.data();
        assert!(d.len() == rb * cc * 64);
        let batch = x.len() / cols;
        init_bias(y, rows, bias);
        let mut buf = [0f32; SEG * 64];
        for blk in 0..rb {
            for c0 in (0..cc).step_by(SEG) {
                let c1 = (c0 + SEG).min(cc);
                let (lo, hi) = (16 * c0, (16 * c1).min(cols));
                let n = (c1 - c0) * 64;
                let src = &d[(blk * cc + c0) * 64..(blk * cc + c0) * 64 + n];
                for (o, h) in buf[..n].iter_mut().zip(src) {
                    *o = kind.to_f32(*h);
                }
                let (wb, _) = S::as_simd_f32s(&buf[..n]);
                let (segc, full) = (c1 - c0, (hi - lo) / 16);
                let mut bb = 0;
                while bb < batch {
                    let two = bb + 2 <= batch;
                    let xs = |j: usize| &x[(bb + j) * cols + lo..(bb + j) * cols + hi];
                    let mut sums = [[0f32; 4]; 2];
                    if two {
                        let acc = row_block(s, wb, [xs(0), xs(1)], full, segc);
                        for j in 0..2 {
                            for k in 0..4 {
                                sums[j][k] = s.reduce_sum_f32s(acc[j][k]);
                            }
                        }
                    } else {
                        let acc = row_block(s, wb, [xs(0)], full, segc);
                        for k in 0..4 {
                            sums[0][k] = s.reduce_sum_f32s(acc[0][k]);
                        }
                    }
                    add_sums(y, rows, blk, bb, &sums[..if two { 2 } else { 1 }]);
                    bb += if two { 2 } else { 1 };
                }
            }
        }
    }
}

/// `y [B, rows] = bias` (or 0).
#[inline(always)]
fn init_bias(y: &mut [f32], rows: usize, bias: Option<&[f32]>) {
    for yb in y.chunks_exact_mut(rows) {
        for (r, v) in yb.iter_mut().enumerate() {
            *v = bias.map_or(0.0, |bv| bv[r]);
        }
    }
}

/// Adds the sums of row block `blk` for streams `b0 ..` to `y [B, rows]`.
#[inline(always)]
fn add_sums(y: &mut [f32], rows: usize, blk: usize, b0: usize, sums: &[[f32; 4]]) {
    for (j, sj) in sums.iter().enumerate() {
        for (k, sk) in sj.iter().enumerate() {
            let r = 4 * blk + k;
            if r < rows {
                y[(b0 + j) * rows + r] += *sk;
            }
        }
    }
}

/// x86-64: the conversion in the product's loads, by the instructions made for it — F16C's
/// `vcvtph2ps` for f16 (the arithmetic conversion of the module doc multiplies subnormals, which
/// x86 runs as slow microcode: measured 249 µs vs 137 µs for the f32 step), a zero-extend and shift
/// for bf16 — 8 lanes (AVX2 + FMA + F16C, which every x86-64-v3 and v4 CPU has; on AVX-512 the
/// product is bound by the weights' bytes, not by the width of its FMAs, so it runs this kernel too).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Half, PackedHalf, add_sums};
    use std::arch::x86_64::*;

    /// The 8 weights at element `i` of `p` as f32: `W` = 0 for f32, 1 for bf16, 2 for f16 storage.
    #[inline(always)]
    unsafe fn load8<const W: u8>(p: *const u8, i: usize) -> __m256 {
        unsafe {
            match W {
                0 => _mm256_loadu_ps((p as *const f32).add(i)),
                1 => {
                    let h = _mm_loadu_si128((p as *const u16).add(i) as *const __m128i);
                    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                }
                _ => _mm256_cvtph_ps(_mm_loadu_si128((p as *const u16).add(i) as *const __m128i)),
            }
        }
    }

    /// `out[i]` = the f16 `bits[i]` as f32 with F16C, if this CPU has it (false: nothing done).
    #[inline]
    pub(super) fn f16_decode(bits: &[u16], out: &mut [f32]) -> bool {
        if !(is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c")) {
            return false;
        }
        #[target_feature(enable = "avx,f16c")]
        fn run(bits: &[u16], out: &mut [f32]) {
            let n = bits.len().min(out.len());
            let mut i = 0;
            while i + 8 <= n {
                // SAFETY: i + 8 ≤ n ≤ both lengths
                unsafe {
                    let h = _mm_loadu_si128(bits.as_ptr().add(i) as *const __m128i);
                    _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
                }
                i += 8;
            }
            for j in i..n {
                out[j] = super::f16_to_f32(bits[j]);
            }
        }
        // SAFETY: the features `run` is compiled for were just detected
        unsafe { run(bits, out) };
        true
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }
    }

    /// One chunk `c` of 16 columns of a row block into the accumulators, x at `xp[j]` (16 values
    /// each). (A function, not a closure: a closure is not compiled with the caller's target
    /// features, and its intrinsics become calls — measured 50× slower.)
    #[inline(always)]
    unsafe fn chunk<const W: u8, const V: usize>(
        acc: &mut [[[__m256; 2]; 4]; V],
        wb: *const u8,
        c: usize,
        xp: [*const f32; V],
    ) {
        unsafe {
            for q in 0..2 {
                let par = if V == 1 { q } else { 0 };
                let mut xv = [_mm256_setzero_ps(); V];
                for j in 0..V {
                    xv[j] = _mm256_loadu_ps(xp[j].add(8 * q));
                }
                for k in 0..4 {
                    let w = load8::<W>(wb, (c * 4 + k) * 16 + 8 * q);
                    for j in 0..V {
                        acc[j][k][par] = _mm256_fmadd_ps(w, xv[j], acc[j][k][par]);
                    }
                }
            }
        }
    }

    /// The 4 rows of a row block `wb` (`cc` chunks of `[4][16]` values of storage `W`) against
    /// `V` streams `xs` (each `cols` long; a last partial chunk zero-filled). One stream keeps two
    /// accumulators per row (the two halves of a chunk): 8 FMA chains, as many as the FMA units'
    /// latency × throughput needs (4 chains measured 5 weights per cycle, L2-resident).
    #[inline(always)]
    unsafe fn block<const W: u8, const V: usize>(
        wb: *const u8,
        xs: [&[f32]; V],
        cc: usize,
    ) -> [[f32; 4]; V] {
        unsafe {
            let cols = xs[0].len();
            let full = cols / 16;
            let mut acc = [[[_mm256_setzero_ps(); 2]; 4]; V];
            for c in 0..full {
                let mut xp = [std::ptr::null::<f32>(); V];
                for j in 0..V {
                    xp[j] = xs[j].as_ptr().add(16 * c);
                }
                chunk::<W, V>(&mut acc, wb, c, xp);
            }
            if cc > full {
                let mut pad = [[0f32; 16]; V];
                let mut xp = [std::ptr::null::<f32>(); V];
                for j in 0..V {
                    pad[j][..cols - 16 * full].copy_from_slice(&xs[j][16 * full..]);
                    xp[j] = pad[j].as_ptr();
                }
                chunk::<W, V>(&mut acc, wb, full, xp);
            }
            let mut out = [[0f32; 4]; V];
            for j in 0..V {
                for k in 0..4 {
                    let a = if V == 1 {
                        _mm256_add_ps(acc[j][k][0], acc[j][k][1])
                    } else {
                        acc[j][k][0]
                    };
                    out[j][k] = hsum(a);
                }
            }
            out
        }
    }

    /// Row block `blk`'s chunks `c0 .. c0 + n` (storage `W`, at `wb`) against every stream's
    /// columns `16·c0 ..`, added to `y`, in passes of two streams.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn streams<const W: u8>(
        wb: *const u8,
        n: usize,
        x: &[f32],
        cols: usize,
        (lo, hi): (usize, usize),
        y: &mut [f32],
        rows: usize,
        blk: usize,
    ) {
        let batch = x.len() / cols;
        let mut b = 0;
        while b + 2 <= batch {
            let xs = [
                &x[b * cols + lo..b * cols + hi],
                &x[(b + 1) * cols + lo..(b + 1) * cols + hi],
            ];
            let sums = unsafe { block::<W, 2>(wb, xs, n) };
            add_sums(y, rows, blk, b, &sums);
            b += 2;
        }
        if b < batch {
            let sums = unsafe { block::<W, 1>(wb, [&x[b * cols + lo..b * cols + hi]], n) };
            add_sums(y, rows, blk, b, &sums);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const W: u8>(p: &PackedHalf, x: &[f32], y: &mut [f32]) {
        let (rows, cols) = (p.rows(), p.cols());
        let (rb, cc) = (rows.div_ceil(4), cols.div_ceil(16));
        let d = p.bits.data();
        assert!(d.len() == rb * cc * 64);
        let batch = x.len() / cols;
        let mut buf = [0f32; super::SEG * 64];
        for blk in 0..rb {
            // SAFETY (every read below): chunks 0..cc of row block blk lie inside d (asserted)
            let wb = unsafe { d.as_ptr().add(blk * cc * 64) };
            if batch <= 2 {
                // convert in the loads: each weight is read once
                unsafe { streams::<W>(wb as *const u8, cc, x, cols, (0, cols), y, rows, blk) };
                continue;
            }
            // several passes over the streams: convert the block to f32 in L1 once, a segment of
            // 512 columns at a time
            for c0 in (0..cc).step_by(super::SEG) {
                let n = (c0 + super::SEG).min(cc) - c0;
                for i in (0..n * 64).step_by(8) {
                    unsafe {
                        let v = load8::<W>(wb.add(c0 * 64) as *const u8, i);
                        _mm256_storeu_ps(buf.as_mut_ptr().add(i), v);
                    }
                }
                let span = (16 * c0, (16 * (c0 + n)).min(cols));
                let bp = buf.as_ptr() as *const u8;
                unsafe { streams::<0>(bp, n, x, cols, span, y, rows, blk) };
            }
        }
    }

    /// The product (y already holds the bias), if this CPU has AVX2, FMA and F16C.
    pub(super) fn gemv(p: &PackedHalf, x: &[f32], y: &mut [f32]) -> bool {
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return false;
        }
        // SAFETY: the features `run` is compiled for were just detected
        unsafe {
            match p.kind {
                Half::Bf16 => run::<1>(p, x, y),
                Half::F16 => run::<2>(p, x, y),
            }
        }
        true
    }
}

/// `y [B, rows] = x [B, cols] Ŵᵀ + bias` on half-precision packed weights `Ŵ`, f32 arithmetic, on
/// [`isa`]: one sequential read of the 16-bit weights for all B streams.
#[inline]
pub fn packed_gemv_half(p: &PackedHalf, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    packed_gemv_half_on(isa(), p, bias, x, y)
}

/// [`packed_gemv_half`] on a given instruction set (AVX-512 and AVX2: the x86 kernel with the
/// conversion instructions; others: the portable or NEON loops).
pub fn packed_gemv_half_on(
    isa: Isa,
    p: &PackedHalf,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) {
    let (rows, cols) = (p.rows(), p.cols());
    let batch = x.len().checked_div(cols).unwrap_or(0);
    assert!(
        cols > 0 && x.len() == batch * cols && y.len() == batch * rows,
        "packed_gemv_half: x [B, {cols}] and y [B, {rows}], got {} and {} values",
        x.len(),
        y.len()
    );
    assert!(
        bias.is_none_or(|b| b.len() >= rows),
        "packed_gemv_half: bias shorter than {rows}"
    );
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx2) {
        init_bias(y, rows, bias);
        if x86::gemv(p, x, y) {
            return;
        }
    }
    dispatch_on(isa, HalfGemv { p, bias, x, y })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every finite f16 bit pattern: decoded exactly (against the format's definition in f64) and
    /// encoded back to the same bits.
    #[test]
    fn f16_round_trips_every_finite_value() {
        for h in 0u16..=u16::MAX {
            let (e, m) = ((h >> 10) & 0x1f, (h & 0x3ff) as f64);
            if e == 31 {
                continue; // inf, NaN
            }
            let mag = if e == 0 {
                m * 2f64.powi(-24)
            } else {
                (1.0 + m / 1024.0) * 2f64.powi(e as i32 - 15)
            };
            let want = if h & 0x8000 != 0 { -mag } else { mag };
            let got = f16_to_f32(h);
            assert_eq!(got as f64, want, "f16 {h:#06x}");
            if got != 0.0 || h == 0 {
                assert_eq!(Half::F16.round(got), Ok(h), "f16 {h:#06x} back");
            }
        }
    }

    /// Rounding to nearest with ties to even, against the neighbouring representable values (f64),
    /// and the range errors.
    #[test]
    fn rounding_is_to_nearest_even_within_the_unit_roundoff() {
        for kind in [Half::Bf16, Half::F16] {
            let mut st = 0x1234_5678u64;
            for i in 0..200_000 {
                st = st
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                // magnitudes 2⁻¹⁶ … 2¹⁵ (f16's subnormals and normals), both signs, plus the
                // exact midpoints between neighbours every 7th value
                let e = ((st >> 40) % 31) as i32 - 16;
                let frac = 1.0 + ((st >> 8) & 0xffff_ffff) as f64 / 2f64.powi(32);
                let mut x = (frac * 2f64.powi(e)) as f32;
                if st & 1 == 1 {
                    x = -x;
                }
                let h = kind.round(x).unwrap();
                let v = kind.to_f32(h) as f64;
                if i % 7 == 0 {
                    // the midpoint between v and its upper neighbour rounds to the even one
                    let up = kind.to_f32(h + 1) as f64;
                    let mid = ((v + up) / 2.0) as f32;
                    if mid as f64 == (v + up) / 2.0 {
                        let r = kind.round(mid).unwrap();
                        assert_eq!(r & 1, 0, "{kind} midpoint {mid:e}: {r:#06x}");
                        assert!(r == h || r == h + 1);
                    }
                }
                let err = (v - x as f64).abs();
                // no representable value is closer
                for nb in [h.wrapping_sub(1), h + 1] {
                    let w = kind.to_f32(nb) as f64;
                    if w.is_finite() && (w.signum() == v.signum() || w == 0.0) {
                        assert!(err <= (w - x as f64).abs(), "{kind} {x:e}: {v:e} vs {w:e}");
                    }
                }
                let bound = if kind == Half::F16 && (x.abs() as f64) < 2f64.powi(-14) {
                    2f64.powi(-25)
                } else {
                    kind.unit_roundoff() * (x.abs() as f64)
                };
                assert!(err <= bound, "{kind} {x:e}: error {err:e} > {bound:e}");
            }
            assert!(kind.round(f32::NAN).is_err());
            assert!(kind.round(f32::INFINITY).is_err());
        }
        assert_eq!(Half::F16.round(65504.0), Ok(0x7bff));
        assert_eq!(Half::F16.round(65519.0), Ok(0x7bff));
        assert!(Half::F16.round(65520.0).unwrap_err().contains("range"));
        assert!(Half::Bf16.round(f32::MAX).unwrap_err().contains("range"));
        assert_eq!(Half::Bf16.round(1.0), Ok(0x3f80));
        assert_eq!("f16".parse::<Half>(), Ok(Half::F16));
        assert!("fp8".parse::<Half>().is_err());
    }

    /// The product on every instruction set equals the f64 product with the rounded weights
    /// (shapes around the 16-column chunks, the 4-row blocks and the 512-column segments).
    #[test]
    fn half_gemv_on_every_isa_is_the_product_with_the_rounded_weights() {
        let val = |i: usize, seed: usize| crate::engine::simd::test_value(i, seed) as f32;
        for kind in [Half::Bf16, Half::F16] {
            for (rows, cols) in [
                (1, 1),
                (3, 7),
                (4, 16),
                (5, 17),
                (9, 33),
                (8, 512),
                (6, 530),
            ] {
                let w: Vec<f32> = (0..rows * cols).map(|i| val(i, 1) * 3.0).collect();
                let bias: Vec<f32> = (0..rows).map(|i| val(i, 2)).collect();
                let p = PackedHalf::new(&w, rows, cols, kind).unwrap();
                let wr = p.to_f32();
                for (a, b) in w.iter().zip(&wr) {
                    assert_eq!(*b, kind.to_f32(kind.round(*a).unwrap()));
                }
                for batch in [1usize, 2, 3, 5] {
                    let x: Vec<f32> = (0..batch * cols).map(|i| val(i, 3)).collect();
                    for isa in Isa::available() {
                        let mut y = vec![f32::NAN; batch * rows];
                        packed_gemv_half_on(isa, &p, Some(&bias), &x, &mut y);
                        for b in 0..batch {
                            for o in 0..rows {
                                let want = bias[o] as f64
                                    + (0..cols)
                                        .map(|i| wr[o * cols + i] as f64 * x[b * cols + i] as f64)
                                        .sum::<f64>();
                                let e = (y[b * rows + o] as f64 - want).abs();
                                assert!(
                                    e < 2e-6 * cols as f64,
                                    "{kind} {isa} [{rows}, {cols}] B={batch}: {e:e}"
                                );
                            }
                        }
                    }
                }
            }
        }
        let bad = PackedHalf::new(&[0.0, 1.0, 7e4, 0.0], 2, 2, Half::F16).unwrap_err();
        assert!(
            bad.contains("weight [1, 0]") && bad.contains("range"),
            "{bad}"
        );
    }

    /// The lanes product on half row tiles, on every instruction set, equals the f64 product with
    /// the rounded weights: rows around the 6-row tile, columns around the 256-column chunk of
    /// `xᵀ`, batches around the chunk widths (8, 16, 32 streams) and their remainders.
    #[test]
    fn half_lane_gemm_on_every_isa_is_the_product_with_the_rounded_weights() {
        let val = |i: usize, seed: usize| crate::engine::simd::test_value(i, seed) as f32;
        for kind in [Half::Bf16, Half::F16] {
            for (rows, cols) in [(1, 1), (5, 7), (6, 256), (7, 257), (13, 300), (512, 256)] {
                let w: Vec<f32> = (0..rows * cols).map(|i| val(i, 1) * 3.0).collect();
                let bias: Vec<f32> = (0..rows).map(|i| val(i, 2)).collect();
                let p = LanePanelsHalf::new(&w, rows, cols, kind).unwrap();
                assert_eq!(p.bytes(), rows.div_ceil(LANE_ROWS) * LANE_ROWS * cols * 2);
                let wr: Vec<f64> = (0..rows * cols)
                    .map(|i| p.get(i / cols, i % cols) as f64)
                    .collect();
                for (a, b) in w.iter().zip(&wr) {
                    assert_eq!(*b, kind.to_f32(kind.round(*a).unwrap()) as f64);
                }
                let batches: &[usize] = if rows == 512 {
                    &[16, 32]
                } else {
                    &[1, 3, 8, 9, 16, 17, 24, 33]
                };
                for &batch in batches {
                    let x: Vec<f32> = (0..batch * cols).map(|i| val(i, 3)).collect();
                    for isa in Isa::available() {
                        let mut y = vec![f32::NAN; batch * rows];
                        super::super::lane_gemm_half_on(isa, &p, Some(&bias), &x, &mut y);
                        for b in 0..batch {
                            for o in 0..rows {
                                let want = bias[o] as f64
                                    + (0..cols)
                                        .map(|i| wr[o * cols + i] * x[b * cols + i] as f64)
                                        .sum::<f64>();
                                let e = (y[b * rows + o] as f64 - want).abs();
                                assert!(
                                    e < 2e-6 * cols as f64,
                                    "{kind} {isa} [{rows}, {cols}] B={batch}: {e:e}"
                                );
                            }
                        }
                    }
                }
            }
        }
        let bad = LanePanelsHalf::new(&[0.0, 1.0, f32::NAN, 0.0], 2, 2, Half::Bf16).unwrap_err();
        assert!(
            bad.contains("weight [1, 0]") && bad.contains("not finite"),
            "{bad}"
        );
    }
}
