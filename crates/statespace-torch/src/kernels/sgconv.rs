//! SGConv: the structured global convolution kernel (`statespace-core`'s `kernels/sgconv.rs`).
//!
//! ```text
//!   weight [D, H, S, d], buffer kernel_norm [D, H] (‖k_raw‖ frozen at the first forward)
//!   kᵢ = upsample(wᵢ, 2^{max(0, i−1) + init_scale}) · m_h^{S−1−i},  m = linspace(decay_min, decay_max, H)
//!   k_raw = concat(k₀ … k_{S−1}) cut to L_max;   K = k_raw / kernel_norm, cut or zero-padded to L
//! ```
//! Upsampling is linear in the taps, so `k_raw[row, j] = s_h(j)·((1 − λ_j)·w[row, i0_j] + λ_j·w[row, i1_j])`
//! with the source taps `i0, i1`, weight `λ` and segment scale `s_h(j)` tabulated once in f64.

use super::{KernelCtx, Named};
use crate::Result;
use crate::tensor::from_f64;
use statespace_core::kernels::sgconv::{SgConvOptions, Upsample};
use tch::{Kind, Tensor};

/// Source taps, weights and scales of every position of `k_raw`.
struct Table {
    i0: Vec<i64>,
    i1: Vec<i64>,
    lam: Vec<f64>,
    /// `[H, L_max]`: the segment's decay weight (0 where no segment reaches).
    scale: Vec<f64>,
}

fn table(opts: &SgConvOptions, h: usize, scales: usize, lmax: usize) -> Table {
    let d = opts.kernel_dim;
    let decay = |ch: usize| {
        let (a, b) = (opts.decay_min, opts.decay_max);
        if h == 1 {
            a
        } else {
            a + (b - a) * ch as f64 / (h - 1) as f64
        }
    };
    let (mut i0, mut i1, mut lam) = (vec![0i64; lmax], vec![0i64; lmax], vec![0.0; lmax]);
    let mut seg_of = vec![usize::MAX; lmax];
    let mut start = 0;
    for i in 0..scales {
        let up = 1usize << (i.saturating_sub(1) + opts.init_scale);
        for j in 0..d * up {
            let pos = start + j;
            if pos >= lmax {
                break;
            }
            let (a, b, l) = match opts.upsample {
                Upsample::Nearest => (j / up, j / up, 0.0),
                Upsample::Linear => {
                    let src = ((j as f64 + 0.5) / up as f64 - 0.5).max(0.0);
                    let a = (src.floor() as usize).min(d - 1);
                    (a, (a + 1).min(d - 1), src - a as f64)
                }
            };
            i0[pos] = (i * d + a) as i64;
            i1[pos] = (i * d + b) as i64;
            lam[pos] = l;
            seg_of[pos] = i;
        }
        start += d * up;
    }
    let mut scale = vec![0.0; h * lmax];
    for ch in 0..h {
        let m = decay(ch);
        for (pos, &seg) in seg_of.iter().enumerate() {
            if seg != usize::MAX {
                scale[ch * lmax + pos] = m.powi((scales - 1 - seg) as i32);
            }
        }
    }
    Table { i0, i1, lam, scale }
}

/// `k_raw [D·H, L_max]` of the kernel `prefix` (in the kernel dtype).
pub fn raw(
    p: &Named,
    prefix: &str,
    opts: &SgConvOptions,
    lmax: usize,
    ctx: KernelCtx,
) -> Result<Tensor> {
    let w = ctx.real(p.get(&format!("{prefix}.weight"))?);
    let sz = w.size();
    let (dirs, h, scales, d) = (sz[0], sz[1] as usize, sz[2] as usize, sz[3]);
    let t = table(opts, h, scales, lmax);
    let flat = w.reshape([dirs * h as i64, scales as i64 * d]);
    let idx = |v: &[i64]| Tensor::from_slice(v).to_device(ctx.device);
    let a = flat.index_select(1, &idx(&t.i0));
    let b = flat.index_select(1, &idx(&t.i1));
    let lam = from_f64(&t.lam, &[lmax], ctx.kind, ctx.device);
    let scale = from_f64(&t.scale, &[h, lmax], ctx.kind, ctx.device).repeat([dirs, 1]);
    Ok((a * (-&lam + 1.0) + b * lam) * scale)
}

/// `K [D, H, len]`: `k_raw / kernel_norm`, cut or zero-padded to `len`. `norm` is the buffer
/// `kernel_norm [D, H]`; if it is still zero (no forward yet) it is set here from `k_raw`.
pub fn kernel(
    p: &Named,
    prefix: &str,
    opts: &SgConvOptions,
    lmax: usize,
    norm: &mut Tensor,
    ctx: KernelCtx,
    len: usize,
) -> Result<Tensor> {
    let k = raw(p, prefix, opts, lmax, ctx)?;
    let rows = k.size()[0];
    let unset = tch::no_grad(|| norm.le(0.0).any().int64_value(&[]) != 0);
    if unset {
        tch::no_grad(|| {
            let n = k.square().sum_dim_intlist(1, false, None::<Kind>).sqrt();
            let n = n.where_scalarother(&n.gt(0.0), 1.0);
            *norm = n.reshape(norm.size()).to_kind(norm.kind());
        });
    }
    let k = k / ctx.real(norm).reshape([rows, 1]);
    let k = if len <= lmax {
        k.narrow(1, 0, len as i64)
    } else {
        k.constant_pad_nd([0, (len - lmax) as i64])
    };
    let dirs = norm.size()[0];
    Ok(k.reshape([dirs, rows / dirs, len as i64]))
}
