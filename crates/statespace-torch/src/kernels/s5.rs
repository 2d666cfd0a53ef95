//! S5 and S5-PTD: one MIMO diagonal system over all channels (`statespace-core`'s `kernels/s5.rs`).
//!
//! ```text
//!   log_lambda_real/lambda_imag [M], b_re/b_im [M, H], c_re/c_im [D, H, M], log_dt [M]
//!   Δ = exp(log_dt)·step_rescale,  (z, w) = disc(Λ, Δ),  B̄ = w·B̃
//!   BU = B̄ u                                    [B, M, L]
//!   x_k = Σ_{j≤k} e^{(k−j)z} BU_j               (forward scan)
//!   x′_k = Σ_{j≥k} e^{(j−k)z} BU_j              (reverse scan, bidirectional)
//!   y = 2·Re(C̃₁ x) (+ 2·Re(C̃₂ x′))             [B, H, L]
//! ```
//! The scans are evaluated as complex FFT convolutions (length 2L) of BU with the powers e^{lz}: the
//! same linear recurrence, O(L log L) per state, with autograd through every operation.

use super::discretize::discretize;
use super::{KernelCtx, Named, clamped_real};
use crate::Result;
use crate::tensor::{complex, complex_of};
use statespace_core::kernels::discretize::Disc;
use tch::Tensor;

/// `x_k = Σ_{j≤k} e^{(k−j)z} bu_j` for `bu [B, M, L]`, `z [M]`.
fn causal_scan(bu: &Tensor, z: &Tensor, ctx: KernelCtx) -> Tensor {
    let len = bu.size()[2];
    let powers = (z.unsqueeze(-1) * ctx.arange(len as usize)).exp(); // [M, L]
    let n = 2 * len;
    let x = bu.fft_fft(n, -1, "backward") * powers.fft_fft(n, -1, "backward");
    x.fft_ifft(n, -1, "backward").narrow(-1, 0, len)
}

/// `u [B, H, L] → y [B, H, L]` of the S5 layer `prefix` (e.g. `blocks.0.ssm.s5`), without `D·u`.
pub fn forward(
    p: &Named,
    prefix: &str,
    disc: Disc,
    step_rescale: f64,
    ctx: KernelCtx,
    u: &Tensor,
) -> Result<Tensor> {
    let g = |s: &str| -> Result<Tensor> { Ok(ctx.real(p.get(&format!("{prefix}.{s}"))?)) };
    let lam = complex(&clamped_real(&g("log_lambda_real")?), &g("lambda_imag")?);
    let dt = g("log_dt")?.exp() * step_rescale;
    let (z, w) = discretize(&lam, &dt, disc);
    let bbar = w.unsqueeze(-1) * complex(&g("b_re")?, &g("b_im")?); // [M, H]
    let c = complex(&g("c_re")?, &g("c_im")?); // [D, H, M]
    let uc = ctx.real(u).to_kind(complex_of(ctx.kind));
    let bu = Tensor::einsum("mh,bhl->bml", &[&bbar, &uc], None::<i64>);
    let x = causal_scan(&bu, &z, ctx);
    let mut y = Tensor::einsum("hm,bml->bhl", &[&c.get(0), &x], None::<i64>).real();
    if c.size()[0] == 2 {
        let xr = causal_scan(&bu.flip([-1]), &z, ctx).flip([-1]);
        y += Tensor::einsum("hm,bml->bhl", &[&c.get(1), &xr], None::<i64>).real();
    }
    Ok((y * 2.0).to_kind(u.kind()))
}
