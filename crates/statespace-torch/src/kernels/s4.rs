//! S4: the DPLR kernel by Cauchy sums and the Woodbury identity at the roots of unity, with the C̃
//! trick (`statespace-core`'s `kernels/s4.rs`).
//!
//! ```text
//!   log_dt [H], log_lambda_real/lambda_imag [S, M], p_re/p_im [S, r, M], b_re/b_im [S, M],
//!   c_re/c_im [D, H, M] (C̃), buffer kernel_len [1]; channel h uses copy h mod S
//!   full set (N = 2M): Λ = [Λ; Λ̄], rows ℓ = (C̃, P̄₁ … P̄ᵣ), columns ρ = (B, P₁ … Pᵣ), each [x; x̄]
//!   ω_k = e^{−2πik/L}, k = 0 … L/2;  g = (Δ/2)(1 + ω),  Dₙ = 1/((1 − ω) − g Λₙ)
//!   S_ab = Σₙ ℓ_a,ₙ Dₙ ρ_b,ₙ
//!   K̂ = Δ·[S_cb − g·S_cp (I + g·S_pp)⁻¹ S_pb],   K = irfft(K̂, L)[:len]   (L = kernel_len ≥ len)
//! ```
//! The rank is 1 (LegS, LagT, FouT) or 2 (LegT); the r×r solve is written out.

use super::{KernelCtx, Named, clamped_real};
use crate::tensor::{complex, hermitian_ends, rfft_omegas};
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// `K [D, H, len]` of the S4 kernel `prefix`, built at `kernel_len` frequencies; beyond the
/// `kernel_len` that `C̃` refers to (evaluation at longer sequences, as the CPU engine allows), `C̃`
/// is re-expressed for `len` (see [`c_tilde_at`]) and the kernel built at `len` frequencies
/// (differentiable, but the CPU engine trains only up to `kernel_len`).
pub fn kernel(
    p: &Named,
    prefix: &str,
    ctx: KernelCtx,
    kernel_len: usize,
    len: usize,
) -> Result<Tensor> {
    let (lk, ct) = if len > kernel_len {
        (len, Some(c_tilde_at(p, prefix, ctx, kernel_len, len)?))
    } else {
        (kernel_len, None)
    };
    let khat = spectrum_with(p, prefix, ctx, lk, 0, lk / 2 + 1, ct.as_ref())?;
    from_spectrum(&khat, lk, len)
}

/// `C̃′ [D, H, M]` for kernel length `len` from the stored `C̃` (relative to `kernel_len`), through
/// the dense bilinear system of the full DPLR matrix (`N × N` per channel):
///
/// ```text
///   A = diag(Λ, Λ̄) − [P̃; P̃̄][P̃; P̃̄]*,   Ā = (I − Δ/2·A)⁻¹ (I + Δ/2·A)
///   C = C̃ (I − Ā^{kernel_len})⁻¹,   C̃′ = C (I − Ā^{len})      (row vectors, the kept half returned)
/// ```
pub fn c_tilde_at(
    p: &Named,
    prefix: &str,
    ctx: KernelCtx,
    kernel_len: usize,
    len: usize,
) -> Result<Tensor> {
    let sys = System::of(p, prefix, ctx)?;
    let n = sys.lam_f.size()[1];
    let ck = crate::tensor::complex_of(ctx.kind);
    let a = sys.lam_f.diag_embed(0, -2, -1)
        - Tensor::einsum(
            "hjn,hjm->hnm",
            &[&sys.rho_p, &sys.rho_p.conj()],
            None::<i64>,
        );
    let eye = Tensor::eye(n, (ck, ctx.device));
    let half = (&sys.dt / 2.0).unsqueeze(-1); // [H, 1, 1]
    let abar = Tensor::linalg_solve(&(&eye - &a * &half), &(&eye + &a * &half), true);
    let ct = sys.ell_c.unsqueeze(2); // [D, H, 1, N]
    let x = &eye - abar.linalg_matrix_power(kernel_len as i64);
    let c = Tensor::linalg_solve(&x.unsqueeze(0), &ct, false); // C·X = C̃
    let ct_new = &c - c.matmul(&abar.linalg_matrix_power(len as i64).unsqueeze(0));
    Ok(ct_new.squeeze_dim(2).narrow(-1, 0, n / 2))
}

/// The full (both halves) system of an S4 kernel, per channel.
struct System {
    /// `Δ [H, 1]`.
    dt: Tensor,
    /// `[Λ; Λ̄] [H, N]`.
    lam_f: Tensor,
    /// `[B; B̄] [H, N]`.
    rho_b: Tensor,
    /// `[P̃; P̃̄] [H, r, N]`.
    rho_p: Tensor,
    /// `[P̃̄; P̃] [H, r, N]` (the left factors of the low-rank term).
    ell_p: Tensor,
    /// `[C̃; C̃̄] [D, H, N]`.
    ell_c: Tensor,
}

impl System {
    fn of(p: &Named, prefix: &str, ctx: KernelCtx) -> Result<Self> {
        Self::with(p, prefix, ctx, None)
    }

    fn with(p: &Named, prefix: &str, ctx: KernelCtx, ct: Option<&Tensor>) -> Result<Self> {
        let g = |s: &str| -> Result<Tensor> { Ok(ctx.real(p.get(&format!("{prefix}.{s}"))?)) };
        let log_dt = g("log_dt")?;
        let h = log_dt.size()[0];
        let s = g("log_lambda_real")?.size()[0];
        let copy = Tensor::arange(h, (Kind::Int64, ctx.device)).remainder(s);
        let per = |t: Tensor| t.index_select(0, &copy);
        let lam = per(complex(
            &clamped_real(&g("log_lambda_real")?),
            &g("lambda_imag")?,
        )); // [H, M]
        let pp = per(complex(&g("p_re")?, &g("p_im")?)); // [H, r, M]
        let b = per(complex(&g("b_re")?, &g("b_im")?)); // [H, M]
        let ct = match ct {
            Some(c) => c.shallow_clone(),
            None => complex(&g("c_re")?, &g("c_im")?), // [D, H, M]
        };
        let full = |x: &Tensor| Tensor::cat(&[x.shallow_clone(), x.conj()], -1);
        Ok(Self {
            dt: log_dt.exp().unsqueeze(-1),
            lam_f: full(&lam),
            rho_b: full(&b),
            rho_p: full(&pp),
            ell_p: full(&pp.conj()),
            ell_c: full(&ct),
        })
    }
}

/// `K [D, H, len]` from the spectrum `K̂ [D, H, kernel_len/2 + 1]`: the imaginary parts at DC and
/// Nyquist dropped, inverse real FFT, the first `len` lags.
pub fn from_spectrum(khat: &Tensor, kernel_len: usize, len: usize) -> Result<Tensor> {
    if len > kernel_len {
        return Err(Error::Invalid(format!(
            "S4 trains at lengths up to its kernel_len ({kernel_len}, the first forward's length), got \
             {len} (as the CPU engine; evaluation at longer lengths works)"
        )));
    }
    Ok(hermitian_ends(khat, kernel_len)
        .fft_irfft(kernel_len as i64, -1, "backward")
        .narrow(-1, 0, len as i64))
}

/// The spectrum `K̂ [D, H, count]` of the S4 kernel `prefix` at the frequencies `ω_k`,
/// `k = first … first + count − 1`, of length `kernel_len` (a caller bounds the `[H, N, count]`
/// Cauchy matrix by asking for chunks of frequencies).
pub fn spectrum(
    p: &Named,
    prefix: &str,
    ctx: KernelCtx,
    kernel_len: usize,
    first: usize,
    count: usize,
) -> Result<Tensor> {
    spectrum_with(p, prefix, ctx, kernel_len, first, count, None)
}

/// [`spectrum`] with `C̃ [D, H, M]` given (`None`: the stored one).
pub fn spectrum_with(
    p: &Named,
    prefix: &str,
    ctx: KernelCtx,
    kernel_len: usize,
    first: usize,
    count: usize,
    ct: Option<&Tensor>,
) -> Result<Tensor> {
    let System {
        dt,
        lam_f,
        rho_b,
        rho_p,
        ell_p,
        ell_c,
    } = System::with(p, prefix, ctx, ct)?;
    let r = rho_p.size()[1];
    let omega = rfft_omegas(kernel_len, ctx.device)
        .narrow(0, first as i64, count as i64)
        .to_kind(crate::tensor::complex_of(ctx.kind));
    let e = -&omega + 1.0; // [W]
    let gw = &dt / 2.0 * (&omega + 1.0); // [H, W]
    let den = e - gw.unsqueeze(1) * lam_f.unsqueeze(-1); // [H, N, W]
    let dn = den.reciprocal();
    let es = |eq: &str, ts: &[&Tensor]| Tensor::einsum(eq, ts, None::<i64>);
    let s_cb = es("dhn,hn,hnw->dhw", &[&ell_c, &rho_b, &dn]); // [D, H, W]
    let s_cp = es("dhn,hjn,hnw->dhjw", &[&ell_c, &rho_p, &dn]); // [D, H, r, W]
    let s_pb = es("hin,hn,hnw->hiw", &[&ell_p, &rho_b, &dn]); // [H, r, W]
    let s_pp = es("hin,hjn,hnw->hijw", &[&ell_p, &rho_p, &dn]); // [H, r, r, W]
    let gpp = gw.unsqueeze(1).unsqueeze(1) * s_pp; // g·S_pp
    // x = (I + g S_pp)⁻¹ S_pb
    let x = match r {
        1 => &s_pb / (gpp.select(1, 0).select(1, 0) + 1.0).unsqueeze(1),
        2 => {
            let c00 = gpp.select(1, 0).select(1, 0) + 1.0;
            let c01 = gpp.select(1, 0).select(1, 1);
            let c10 = gpp.select(1, 1).select(1, 0);
            let c11 = gpp.select(1, 1).select(1, 1) + 1.0;
            let (y0, y1) = (s_pb.select(1, 0), s_pb.select(1, 1));
            let det = &c00 * &c11 - &c01 * &c10;
            let x0 = (&c11 * &y0 - &c01 * &y1) / &det;
            let x1 = (&c00 * &y1 - &c10 * &y0) / &det;
            Tensor::stack(&[x0, x1], 1)
        }
        _ => {
            return Err(Error::Invalid(format!(
                "{prefix}: S4 supports rank 1 or 2, the parameters have rank {r}"
            )));
        }
    }; // [H, r, W]
    let corr = (s_cp * x.unsqueeze(0)).sum_dim_intlist(2, false, None::<Kind>); // [D, H, W]
    Ok((s_cb - gw.unsqueeze(0) * corr) * dt.unsqueeze(0))
}
