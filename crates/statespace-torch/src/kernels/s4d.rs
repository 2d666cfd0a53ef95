//! S4D and S4-PTD: the diagonal kernel by its Vandermonde form (`statespace-core`'s
//! `kernels/s4d.rs`; S4-PTD is the same kernel with the perturbed LegS modes as its init).
//!
//! ```text
//!   log_dt [H], log_a_real [H, M], a_imag [H, M], b_re/b_im [H, M], c_re/c_im [D, H, M]
//!   Δ = exp(log_dt),  A = −max(exp(log_a_real), 1e-4) + i·a_imag,  (z, w) = disc(A, Δ)
//!   K[d,h,l] = 2·Re Σ_m C[d,h,m]·B[h,m]·w[h,m]·e^{l·z[h,m]}        l ∈ [l0, l0 + n)
//! ```
//! The Vandermonde `[H, M, n]` is formed for the range asked, so a caller bounds memory by asking
//! for chunks of `l`.

use super::discretize::discretize;
use super::{KernelCtx, Named, clamped_real};
use crate::Result;
use crate::tensor::complex;
use statespace_core::kernels::discretize::Disc;
use tch::Tensor;

/// `K [D, H, n]` of the kernel `prefix` (e.g. `blocks.0.ssm.kernel`) at lags `l0 .. l0 + n`.
pub fn kernel(
    p: &Named,
    prefix: &str,
    disc: Disc,
    ctx: KernelCtx,
    l0: usize,
    n: usize,
) -> Result<Tensor> {
    let g = |s: &str| -> Result<Tensor> { Ok(ctx.real(p.get(&format!("{prefix}.{s}"))?)) };
    let dt = g("log_dt")?.exp().unsqueeze(-1);
    let a = complex(&clamped_real(&g("log_a_real")?), &g("a_imag")?);
    let b = complex(&g("b_re")?, &g("b_im")?);
    let c = complex(&g("c_re")?, &g("c_im")?);
    let (z, w) = discretize(&a, &dt, disc);
    let ct = c * (b * w).unsqueeze(0); // [D, H, M]
    let lags = ctx.arange(n) + l0 as f64;
    let v = (z.unsqueeze(-1) * lags).exp(); // [H, M, n]
    let k = Tensor::einsum("dhm,hml->dhl", &[ct, v], None::<i64>);
    Ok(k.real() * 2.0)
}
