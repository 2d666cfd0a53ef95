//! The portable loops for any element type (`f64` in gradient checks; the fallback shape of the
//! vector kernels): sums with 8 partial sums, dot, matrix–vector, the diagonal recurrence.

use num_traits::{Float, NumAssign};

/// `Σ x_i` with 8 partial sums (vectorizes; a plain `.sum()` is one dependent chain).
#[inline(always)]
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

/// Portable path of `Float::diag_steps`: `B` streams of `H` channels of `M` diagonal complex modes
/// with `B̄` folded into the readout, in the interleaved layout of [`super::diag_steps`]:
/// `c = [Re Ā, Im Ā, Re C̃, Im C̃]` (each `[G, M, 16]`, `G = ⌈H/16⌉`), states `[B, G, M, 2, 16]`,
/// `u, y [B, H]`: `z ← Ā z + u`, `y = Re Σ C̃ z`.
pub fn diag_steps_generic<T: Float + NumAssign>(
    c: [&[T]; 4],
    h: usize,
    m: usize,
    states: &mut [T],
    u: &[T],
    y: &mut [T],
) {
    use super::recurrence::{DIAG_BLOCK as W, check_diag, diag_blocks};
    check_diag(c.map(|v| v.len()), h, m, states.len(), u.len(), y.len());
    let [ar, ai, cr, ci] = c;
    let (blocks, gsz) = (diag_blocks(h), m * W);
    for (b, st) in states.chunks_exact_mut(blocks * 2 * gsz).enumerate() {
        for g in 0..blocks {
            let (ch0, w) = (g * W, (h - g * W).min(W));
            let z = &mut st[g * 2 * gsz..(g + 1) * 2 * gsz];
            let mut acc = [T::zero(); W];
            let mut uv = [T::zero(); W];
            uv[..w].copy_from_slice(&u[b * h + ch0..b * h + ch0 + w]);
            for j in 0..m {
                for l in 0..W {
                    let (i, k) = (2 * j * W + l, g * gsz + j * W + l);
                    let (zr, zi) = (z[i], z[i + W]);
                    let (nr, ni) = (ar[k] * zr - ai[k] * zi + uv[l], ar[k] * zi + ai[k] * zr);
                    (z[i], z[i + W]) = (nr, ni);
                    acc[l] += cr[k] * nr - ci[k] * ni;
                }
            }
            y[b * h + ch0..b * h + ch0 + w].copy_from_slice(&acc[..w]);
        }
    }
}

/// Portable path of `Float::gemv_batch`: `y [B, Cout] = x [B, Cin] Wᵀ + bias`, `W [Cout, Cin]`
/// row-major, one row block of 16 (in L1) for all streams.
pub fn gemv_batch_generic<T: Float + NumAssign>(
    w: &[T],
    bias: Option<&[T]>,
    x: &[T],
    cin: usize,
    y: &mut [T],
    dot: impl Fn(&[T], &[T]) -> T,
) {
    let batch = x.len() / cin.max(1);
    let cout = y.len() / batch.max(1);
    for o0 in (0..cout).step_by(16) {
        let o1 = (o0 + 16).min(cout);
        for b in 0..batch {
            let xb = &x[b * cin..(b + 1) * cin];
            for o in o0..o1 {
                y[b * cout + o] =
                    bias.map_or(T::zero(), |v| v[o]) + dot(&w[o * cin..(o + 1) * cin], xb);
            }
        }
    }
}
