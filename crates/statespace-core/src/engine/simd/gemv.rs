//! Matrix–vector products on the chosen instruction set, for the recurrent step:
//!
//! ```text
//! gemv:        y [Cout]    = W [Cout, Cin] · x [Cin] (+ bias)       batch 1: bound by reading W
//! gemv_batch:  y [B, Cout] = x [B, Cin] · Wᵀ (+ bias)               B streams: each W row block read
//!                                                                  once from memory for all streams
//! ```
//! Both run register blocks of R weight rows × S streams (R·S vector accumulators, R + S loads per R·S
//! FMAs): 4 × 1 for one stream, 4 × 2 for several (8 chains hide the FMA latency, 6 loads per 8 FMAs
//! stay under two loads a cycle). Leftover rows and streams run as 1-row and 1-stream blocks; the
//! columns' tail is a partial (masked) load.

use super::{Isa, dispatch_on, fma, isa};
use pulp::{Simd, WithSimd};

/// `out[r][j] = Σ_i rows[r][i] · xs[j][i]` for R rows and V vectors of equal length. Plain loops
/// over the fixed-size arrays only: `array::map`/`from_fn` are not always inlined, and an
/// out-of-line call runs without the kernel's target features (measured: 3× slower on AVX-512).
#[inline(always)]
fn block<S: Simd, const R: usize, const V: usize>(
    s: S,
    rows: [&[f32]; R],
    xs: [&[f32]; V],
) -> [[f32; V]; R] {
    let len = xs[0].len();
    let n = len / S::F32_LANES;
    let head = n * S::F32_LANES;
    let mut rv: [&[S::f32s]; R] = [&[]; R];
    let mut xv: [&[S::f32s]; V] = [&[]; V];
    for r in 0..R {
        assert!(rows[r].len() == len);
        rv[r] = S::as_simd_f32s(rows[r]).0;
        assert!(rv[r].len() == n);
    }
    for j in 0..V {
        assert!(xs[j].len() == len);
        xv[j] = S::as_simd_f32s(xs[j]).0;
        assert!(xv[j].len() == n);
    }
    let mut acc = [[s.splat_f32s(0.0); V]; R];
    for i in 0..n {
        let mut x = [s.splat_f32s(0.0); V];
        for j in 0..V {
            x[j] = xv[j][i];
        }
        for r in 0..R {
            let w = rv[r][i];
            for j in 0..V {
                acc[r][j] = fma(s, w, x[j], acc[r][j]);
            }
        }
    }
    if head < len {
        let mut x = [s.splat_f32s(0.0); V];
        for j in 0..V {
            x[j] = s.partial_load_f32s(&xs[j][head..]);
        }
        for r in 0..R {
            let w = s.partial_load_f32s(&rows[r][head..]);
            for j in 0..V {
                acc[r][j] = fma(s, w, x[j], acc[r][j]);
            }
        }
    }
    let mut out = [[0f32; V]; R];
    for r in 0..R {
        for j in 0..V {
            out[r][j] = s.reduce_sum_f32s(acc[r][j]);
        }
    }
    out
}

struct Gemv<'a> {
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    x: &'a [f32],
    cin: usize,
    y: &'a mut [f32],
}

impl WithSimd for Gemv<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Gemv { w, bias, x, cin, y } = self;
        let batch = x.len() / cin;
        let cout = y.len() / batch;
        let row = |o: usize| &w[o * cin..(o + 1) * cin];
        let xb = |b: usize| &x[b * cin..(b + 1) * cin];
        let bias = |o: usize| bias.map_or(0.0, |v| v[o]);
        let mut o = 0;
        while o + 4 <= cout {
            let rows = [row(o), row(o + 1), row(o + 2), row(o + 3)];
            let mut b = 0;
            while b + 2 <= batch {
                let r = block(s, rows, [xb(b), xb(b + 1)]);
                for k in 0..4 {
                    y[b * cout + o + k] = r[k][0] + bias(o + k);
                    y[(b + 1) * cout + o + k] = r[k][1] + bias(o + k);
                }
                b += 2;
            }
            if b < batch {
                let r = block(s, rows, [xb(b)]);
                for k in 0..4 {
                    y[b * cout + o + k] = r[k][0] + bias(o + k);
                }
            }
            o += 4;
        }
        for o in o..cout {
            for b in 0..batch {
                y[b * cout + o] = block(s, [row(o)], [xb(b)])[0][0] + bias(o);
            }
        }
    }
}

fn check(w: &[f32], bias: Option<&[f32]>, x: &[f32], cin: usize, y: &[f32]) {
    let batch = x.len().checked_div(cin).unwrap_or(0);
    assert!(
        cin > 0 && batch > 0 && x.len() == batch * cin && y.len().is_multiple_of(batch),
        "gemv: x [B, {cin}] and y [B, Cout], got {} and {} values",
        x.len(),
        y.len()
    );
    let cout = y.len() / batch;
    assert!(
        w.len() >= cout * cin,
        "gemv: W [{cout}, {cin}] has {} values",
        w.len()
    );
    assert!(
        bias.is_none_or(|b| b.len() >= cout),
        "gemv: bias shorter than {cout}"
    );
}

/// `y[o] = bias[o] + Σ_i W[o, i] x[i]`, `W` row-major `[y.len(), x.len()]`, on [`isa`].
#[inline]
pub fn gemv(w: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    gemv_on(isa(), w, bias, x, y)
}

/// [`gemv`] on a given instruction set.
pub fn gemv_on(isa: Isa, w: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    if x.is_empty() {
        y.iter_mut()
            .enumerate()
            .for_each(|(o, v)| *v = bias.map_or(0.0, |b| b[o]));
        return;
    }
    check(w, bias, x, x.len(), y);
    let cin = x.len();
    dispatch_on(isa, Gemv { w, bias, x, cin, y })
}

/// `y [B, Cout] = x [B, Cin] Wᵀ + bias`, `W [Cout, Cin]` row-major, on [`isa`]: the weights are read
/// once for all B streams.
#[inline]
pub fn gemv_batch(w: &[f32], bias: Option<&[f32]>, x: &[f32], cin: usize, y: &mut [f32]) {
    gemv_batch_on(isa(), w, bias, x, cin, y)
}

/// [`gemv_batch`] on a given instruction set.
pub fn gemv_batch_on(
    isa: Isa,
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    cin: usize,
    y: &mut [f32],
) {
    check(w, bias, x, cin, y);
    dispatch_on(isa, Gemv { w, bias, x, cin, y })
}
