//! A weight matrix packed in column panels for the recurrent step of several streams: `Y = X Wᵀ`
//! as a register-blocked matrix–matrix product.
//!
//! ```text
//! W [rows, cols] row-major  →  panels [rows³² / 32][cols][32]   (rows³²: rounded up, zero rows)
//! panel p, column k:  W[32p … 32p + 31, k] side by side
//! y[b, 32p + i] = bias[32p + i] + Σ_k x[b, k] · panel[p][k][i]
//! ```
//! With B streams the step's products are `[B, cols]·[cols, rows]`, 2·B·rows·cols FLOPs on weights
//! read once: compute-bound from a few streams on. The row-block products ([`super::packed_gemv`],
//! [`super::gemv_batch`]) keep one accumulator per row and stream and end every row in a horizontal
//! sum; here a tile of `NB` streams × `VH` vectors of a panel (5 × 2 accumulators on AVX2, 6 × 2 on
//! AVX-512 and NEON) takes per column `VH` loads of the panel and `NB` broadcasts of `x` for `NB · VH`
//! FMAs — FMA-bound, no reductions. The columns go in chunks of
//! [`KC`] (a panel chunk of 16 KiB stays in L1 for every stream tile).

use super::tiles::RowTiles;
use super::{Isa, dispatch_on, fma, isa};
use pulp::{Simd, WithSimd};

/// Outputs per panel.
pub const PANEL: usize = 32;
/// Columns per chunk of a panel (`KC · 32 · 4` bytes = 16 KiB in f32).
pub const KC: usize = 128;

/// `W [rows, cols]` in column panels of [`PANEL`] rows (see the module doc), for any element type.
pub type Panels<T> = RowTiles<T, PANEL>;

/// `y [B, rows] = x [B, cols] Wᵀ + bias` on the panels of `W`, any element type (the portable loops).
pub fn panel_gemm_generic<T: num_traits::Float + Default>(
    p: &Panels<T>,
    bias: Option<&[T]>,
    x: &[T],
    y: &mut [T],
) {
    p.gemm_generic("panel_gemm", bias, x, y)
}

struct PanelGemm<'a> {
    p: &'a Panels<f32>,
    bias: Option<&'a [f32]>,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for PanelGemm<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // a tile is NB streams × VH vectors of outputs: NB·VH accumulators, VH panel vectors and
        // the broadcasts live at once. On AVX2 (16 registers) 3 × 4 (a whole 32-output panel)
        // and 6 × 2 both spilled an accumulator to the stack (the compiler keeps two broadcasts
        // in flight), which put a store-to-load round trip on an FMA chain; 5 × 2 + 2 + 2 fits
        match PANEL / S::F32_LANES {
            1 => run::<S, 1, 1, 6>(s, self),
            2 => run::<S, 2, 2, 6>(s, self),
            4 => run::<S, 4, 2, 5>(s, self),
            8 => run::<S, 8, 2, 6>(s, self),
            _ => run::<S, 32, 4, 2>(s, self),
        }
    }
}

#[inline(always)]
fn run<S: Simd, const V: usize, const VH: usize, const NB: usize>(s: S, op: PanelGemm<'_>) {
    let PanelGemm { p, bias, x, y } = op;
    let (rows, cols) = (p.rows, p.cols);
    let batch = x.len() / cols;
    let lanes = PANEL / V;
    for pp in 0..rows.div_ceil(PANEL) {
        let r0 = pp * PANEL;
        let panel = &p.raw[pp * cols * PANEL..(pp + 1) * cols * PANEL];
        for k0 in (0..cols).step_by(KC) {
            let k1 = (k0 + KC).min(cols);
            let chunk = S::as_simd_f32s(&panel[k0 * PANEL..k1 * PANEL]).0;
            let first = k0 == 0;
            for voff in (0..V).step_by(VH) {
                // the outputs r0 + voff·lanes … of this sub-panel that exist
                let o0 = r0 + voff * lanes;
                if o0 >= rows {
                    break;
                }
                let w = (rows - o0).min(VH * lanes);
                let t = Tile {
                    chunk,
                    x,
                    cols,
                    ks: k0..k1,
                    bias,
                    first,
                    o0,
                    w,
                    rows,
                    voff,
                };
                // whole tiles of NB streams, then one tile of the rest, whose narrow FMA
                // chains are split over alternate columns (U sets of accumulators): 16 streams on
                // AVX2 as 5 + 5 + 5 + 1 ran faster than 4 × 4 (8 accumulators did not cover
                // the FMA latency), and a plain 1-stream tile took as long as a full one
                let mut b = 0;
                while b + NB <= batch {
                    tile::<S, V, VH, NB, 1>(s, &t, b, y);
                    b += NB;
                }
                match batch - b {
                    0 => {}
                    1 => tile::<S, V, VH, 1, 4>(s, &t, b, y),
                    2 => tile::<S, V, VH, 2, 2>(s, &t, b, y),
                    3 => tile::<S, V, VH, 3, 1>(s, &t, b, y),
                    4 => tile::<S, V, VH, 4, 1>(s, &t, b, y),
                    _ => tile::<S, V, VH, 5, 1>(s, &t, b, y),
                }
            }
        }
    }
}

/// What a tile of the product reads: the chunk of columns `ks` of a panel, the outputs
/// `o0 .. o0 + w` (the panel's vectors `voff .. voff + VH`).
struct Tile<'a, F> {
    chunk: &'a [F],
    x: &'a [f32],
    cols: usize,
    ks: core::ops::Range<usize>,
    bias: Option<&'a [f32]>,
    first: bool,
    o0: usize,
    w: usize,
    rows: usize,
    voff: usize,
}

/// Streams `b .. b + NB` × the tile's outputs over its columns: starts from the bias (the first
/// chunk) or from `y` (the later ones) and writes `y` back. `U` sets of accumulators take
/// alternate columns, so a narrow tile still has enough independent FMAs in flight.
#[inline(always)]
fn tile<S: Simd, const V: usize, const VH: usize, const NB: usize, const U: usize>(
    s: S,
    t: &Tile<'_, S::f32s>,
    b: usize,
    y: &mut [f32],
) {
    let zero = s.splat_f32s(0.0);
    let mut acc = [[[zero; VH]; NB]; U];
    let n = t.ks.len();
    let mut xs: [&[f32]; NB] = [&[]; NB];
    for k in 0..NB {
        let at = (b + k) * t.cols + t.ks.start;
        xs[k] = &t.x[at..at + n];
    }
    assert!(t.chunk.len() == n * V && t.voff + VH <= V);
    let whole = n / U * U;
    for (ku, wu) in t.chunk[..whole * V].chunks_exact(U * V).enumerate() {
        for u in 0..U {
            let wv = &wu[u * V + t.voff..u * V + t.voff + VH];
            for k in 0..NB {
                let xv = s.splat_f32s(xs[k][ku * U + u]);
                for v in 0..VH {
                    acc[u][k][v] = fma(s, wv[v], xv, acc[u][k][v]);
                }
            }
        }
    }
    for (kk, wv) in t.chunk[whole * V..].chunks_exact(V).enumerate() {
        let wv = &wv[t.voff..t.voff + VH];
        for k in 0..NB {
            let xv = s.splat_f32s(xs[k][whole + kk]);
            for v in 0..VH {
                acc[0][k][v] = fma(s, wv[v], xv, acc[0][k][v]);
            }
        }
    }
    for u in 1..U {
        for k in 0..NB {
            for v in 0..VH {
                acc[0][k][v] = s.add_f32s(acc[0][k][v], acc[u][k][v]);
            }
        }
    }
    let acc = acc[0];
    let (o0, w) = (t.o0, t.w);
    for k in 0..NB {
        let mut buf = [0f32; PANEL];
        {
            let out = S::as_mut_simd_f32s(&mut buf).0;
            out[..VH].copy_from_slice(&acc[k]);
        }
        let yr = &mut y[(b + k) * t.rows + o0..(b + k) * t.rows + o0 + w];
        if t.first {
            match t.bias {
                Some(bv) => {
                    for ((yv, a), bb) in yr.iter_mut().zip(&buf).zip(&bv[o0..o0 + w]) {
                        *yv = *a + *bb;
                    }
                }
                None => yr.copy_from_slice(&buf[..w]),
            }
        } else {
            for (yv, a) in yr.iter_mut().zip(&buf) {
                *yv += *a;
            }
        }
    }
}

/// `y [B, rows] = x [B, cols] Wᵀ + bias` on the panels of `W` (f32), on [`isa`].
#[inline]
pub fn panel_gemm(p: &Panels<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    panel_gemm_on(isa(), p, bias, x, y)
}

/// [`panel_gemm`] on a given instruction set.
pub fn panel_gemm_on(isa: Isa, p: &Panels<f32>, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    p.check("panel_gemm", bias, x, y);
    dispatch_on(isa, PanelGemm { p, bias, x, y })
}
