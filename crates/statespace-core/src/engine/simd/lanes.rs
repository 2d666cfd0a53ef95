//! A weight matrix packed in row tiles for the recurrent step of many streams, the streams in the
//! vector lanes: `Y = X Wᵀ` as a register-blocked matrix–matrix product that reads the weights once
//! per step, whatever the batch.
//!
//! ```text
//! W [rows, cols] row-major  →  tiles [rows⁶ / 6][cols][6]   (rows⁶: rounded up, zero rows)
//! tile t, column k:  W[6t … 6t + 5, k] side by side
//! xᵀ [cols][S]:      the inputs of a chunk of S streams, transposed (zero past the last stream)
//! y[b, 6t + r] = bias[6t + r] + Σ_k tile[t][k][r] · xᵀ[k][b]
//! ```
//! [`super::Panels`] tiles `NB` streams × 16 outputs and broadcasts `x`; its stream tiles end in a
//! remainder (16 streams on AVX2: 5 + 5 + 5 + 1), and each stream tile reads the whole panel again.
//! Here a chunk of `VS` vectors of streams (16 on AVX2, 32 on AVX-512) takes per column `VS` loads of
//! `xᵀ` (in L1: [`LANE_KC`] columns) and 6 broadcasts of the tile for `6 · VS` FMAs (12 accumulators),
//! and every weight is read once for the chunk. The accumulators hold outputs transposed; they are
//! written back stream by stream.

use super::half::LanePanelsHalf;
use super::tiles::RowTiles;
use super::{Isa, dispatch_on, fma, isa};
use pulp::{Simd, WithSimd};

/// Outputs per tile.
pub const LANE_ROWS: usize = 6;
/// Columns per chunk of `xᵀ` (`LANE_KC · S · 4` bytes: 16 KiB for 16 streams).
pub const LANE_KC: usize = 256;
/// The widest chunk of streams (2 vectors of 16 lanes).
const MAX_CHUNK: usize = 32;

/// `W [rows, cols]` in row tiles of [`LANE_ROWS`] (see the module doc), for any element type.
pub type LanePanels<T> = RowTiles<T, LANE_ROWS>;

/// `y [B, rows] = x [B, cols] Wᵀ + bias` on the row tiles of `W`, any element type (the portable
/// loops).
pub fn lane_gemm_generic<T: num_traits::Float + Default>(
    p: &LanePanels<T>,
    bias: Option<&[T]>,
    x: &[T],
    y: &mut [T],
) {
    p.gemm_generic("lane_gemm", bias, x, y)
}

/// Where a chunk reads a tile's columns `k0 .. k0 + kc` from (`kc · LANE_ROWS` values from `at`):
/// f32 tiles in place, or 16-bit tiles decoded into an L1 buffer (once per tile and chunk of
/// streams, ≈ 1 vector conversion per 16 FMAs).
trait TileSource {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    fn columns<'a>(&'a self, at: usize, n: usize, buf: &'a mut [f32]) -> &'a [f32];
}

impl TileSource for LanePanels<f32> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    #[inline(always)]
    fn columns<'a>(&'a self, at: usize, n: usize, _: &'a mut [f32]) -> &'a [f32] {
        &self.raw[at..at + n]
    }
}

impl TileSource for LanePanelsHalf {
    fn rows(&self) -> usize {
        self.bits.rows
    }
    fn cols(&self) -> usize {
        self.bits.cols
    }
    #[inline(always)]
    fn columns<'a>(&'a self, at: usize, n: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.kind
            .decode_into(&self.bits.raw[at..at + n], &mut buf[..n]);
        &buf[..n]
    }
}

struct LaneGemm<'a, W: ?Sized> {
    p: &'a W,
    bias: Option<&'a [f32]>,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl<W: TileSource + ?Sized> WithSimd for LaneGemm<'_, W> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let LaneGemm { p, bias, x, y } = self;
        let lanes = S::F32_LANES;
        // vectors of streams per chunk: 6 · VS accumulators (12 on AVX2 and AVX-512, 24 of NEON's
        // 32 registers)
        let vs_max = if lanes == 4 { 4 } else { 2 };
        let batch = x.len() / p.cols();
        let mut s0 = 0;
        while s0 < batch {
            let nb = (batch - s0).min(vs_max * lanes);
            match nb.div_ceil(lanes) {
                1 => chunk::<S, W, 1>(s, p, bias, x, y, s0, nb),
                2 => chunk::<S, W, 2>(s, p, bias, x, y, s0, nb),
                3 => chunk::<S, W, 3>(s, p, bias, x, y, s0, nb),
                _ => chunk::<S, W, 4>(s, p, bias, x, y, s0, nb),
            }
            s0 += nb;
        }
    }
}

/// Streams `s0 .. s0 + nb` (at most `VS` vectors of them) × every output.
#[inline(always)]
fn chunk<S: Simd, W: TileSource + ?Sized, const VS: usize>(
    s: S,
    p: &W,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    s0: usize,
    nb: usize,
) {
    let (rows, cols) = (p.rows(), p.cols());
    let sw = VS * S::F32_LANES;
    assert!(nb <= sw && sw <= MAX_CHUNK);
    let zero = s.splat_f32s(0.0);
    let mut xt = [0f32; LANE_KC * MAX_CHUNK];
    let mut wbuf = [0f32; LANE_KC * LANE_ROWS];
    for k0 in (0..cols).step_by(LANE_KC) {
        let kc = (cols - k0).min(LANE_KC);
        // xᵀ [kc][sw]; the lanes past the last stream stay zero
        for b in 0..nb {
            let xb = &x[(s0 + b) * cols + k0..(s0 + b) * cols + k0 + kc];
            for (k, v) in xb.iter().enumerate() {
                xt[k * sw + b] = *v;
            }
        }
        let xv = S::as_simd_f32s(&xt[..kc * sw]).0;
        assert!(xv.len() == kc * VS);
        let first = k0 == 0;
        for t in 0..rows.div_ceil(LANE_ROWS) {
            let at = (t * cols + k0) * LANE_ROWS;
            let wt = p.columns(at, kc * LANE_ROWS, &mut wbuf);
            let mut acc = [[zero; VS]; LANE_ROWS];
            for (w6, a) in wt.chunks_exact(LANE_ROWS).zip(xv.chunks_exact(VS)) {
                for r in 0..LANE_ROWS {
                    let wb = s.splat_f32s(w6[r]);
                    for v in 0..VS {
                        acc[r][v] = fma(s, wb, a[v], acc[r][v]);
                    }
                }
            }
            // back to [B, rows], stream by stream
            let mut buf = [0f32; LANE_ROWS * MAX_CHUNK];
            {
                let out = S::as_mut_simd_f32s(&mut buf[..LANE_ROWS * sw]).0;
                for r in 0..LANE_ROWS {
                    out[r * VS..r * VS + VS].copy_from_slice(&acc[r]);
                }
            }
            let r0 = t * LANE_ROWS;
            let w = (rows - r0).min(LANE_ROWS);
            for b in 0..nb {
                let yr = &mut y[(s0 + b) * rows + r0..(s0 + b) * rows + r0 + w];
                for (r, yv) in yr.iter_mut().enumerate() {
                    let a = buf[r * sw + b];
                    *yv = if first {
                        a + bias.map_or(0.0, |bv| bv[r0 + r])
                    } else {
                        *yv + a
                    };
                }
            }
        }
    }
}

/// `y [B, rows] = x [B, cols] Wᵀ + bias` on the row tiles of `W` (f32), on [`isa`].
#[inline]
pub fn lane_gemm(p: &LanePanels<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    lane_gemm_on(isa(), p, bias, x, y)
}

/// [`lane_gemm`] on a given instruction set.
pub fn lane_gemm_on(isa: Isa, p: &LanePanels<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    p.check("lane_gemm", bias, x, y);
    dispatch_on(isa, LaneGemm { p, bias, x, y })
}

/// `y [B, rows] = x [B, cols] Ŵᵀ + bias` on half-precision row tiles `Ŵ` ([`LanePanelsHalf`]),
/// f32 arithmetic, on [`isa`]: [`lane_gemm`] with each tile's columns decoded to f32 in L1 — half
/// the weight bytes, the same products as f32 weights equal to the rounded ones.
#[inline]
pub fn lane_gemm_half(p: &LanePanelsHalf, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    lane_gemm_half_on(isa(), p, bias, x, y)
}

/// [`lane_gemm_half`] on a given instruction set.
pub fn lane_gemm_half_on(
    isa: Isa,
    p: &LanePanelsHalf,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) {
    check_shapes(p.rows(), p.cols(), bias, x, y);
    dispatch_on(isa, LaneGemm { p, bias, x, y })
}

fn check_shapes(rows: usize, cols: usize, bias: Option<&[f32]>, x: &[f32], y: &[f32]) {
    let batch = x.len().checked_div(cols).unwrap_or(0);
    assert!(
        cols > 0 && x.len() == batch * cols && y.len() == batch * rows,
        "lane_gemm_half: x [B, {cols}] and y [B, {rows}], got {} and {} values",
        x.len(),
        y.len()
    );
    assert!(
        bias.is_none_or(|b| b.len() >= rows),
        "lane_gemm_half: bias shorter than {rows}"
    );
}
