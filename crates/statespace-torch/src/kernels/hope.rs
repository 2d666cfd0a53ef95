//! HOPE: the kernel from the Markov parameters of the Hankel operator, warped to step Δ
//! (`statespace-core`'s `kernels/hope.rs`).
//!
//! ```text
//!   h [D, H, n], log_dt [H];  a = (1 − Δ)/(1 + Δ)
//!   G_Δ(q) = Σⱼ hⱼ A(q)^{j+1},  A(q) = (q − a)/(1 − a q)   (a cascade of n all-pass sections)
//! causal: the exact impulse response, from a state space realization of the cascade
//!   (stage j: s_{t+1} = a s_t + (1 − a²) x_t,  y_t = s_t − a x_t,  x^{(j+1)} = y^{(j)}):
//!   A_ss[j,j] = a,  A_ss[j,i] = (1 − a²)(−a)^{j−1−i} (i < j),   B[j] = (1 − a²)(−a)^j,
//!   C[d,i] = Σ_{j≥i} h_{d,j} (−a)^{j−i},   D_d = Σ_j h_{d,j} (−a)^{j+1}
//!   K_0 = D,  K_t = C A_ss^{t−1} B: the columns A_ss^t B by doubling ([B] → [V, A^{2^k} V]),
//!   ⌈log₂ L⌉ batched matrix products, exact, with autograd through them
//! circular (Algorithm 1): K̂_k = Σⱼ hⱼ A(q_k)^{j+1} at q_k = e^{−2πik/L}, r = irfft(K̂, L);
//!   causal lags r[0 … L−1], reverse lag −(j+1) = r[L−1−j]
//! ```

use super::{KernelCtx, Named};
use crate::Result;
use crate::tensor::{complex_of, from_f64, hermitian_ends, rfft_omegas};
use statespace_core::kernels::hope::HopeMode;
use tch::{Kind, Tensor};

/// `(−a)^k`, k = 0 … n−1, for `a [H]`: `[H, n]` (by cumulative products: a negative base is fine).
fn neg_powers(a: &Tensor, n: usize) -> Tensor {
    let h = a.size()[0];
    let ones = a.ones_like().unsqueeze(-1);
    if n == 1 {
        return ones;
    }
    let rest = (-a).unsqueeze(-1).expand([h, n as i64 - 1], false);
    Tensor::cat(&[ones, rest.cumprod(1, None::<Kind>)], 1)
}

/// `K [D, H, len]` of the HOPE kernel `prefix`.
pub fn kernel(
    p: &Named,
    prefix: &str,
    mode: HopeMode,
    ctx: KernelCtx,
    len: usize,
) -> Result<Tensor> {
    let hm = ctx.real(p.get(&format!("{prefix}.h"))?); // [D, H, n]
    let dt = ctx.real(p.get(&format!("{prefix}.log_dt"))?).exp();
    let a = (-&dt + 1.0) / (&dt + 1.0); // [H]
    let n = hm.size()[2] as usize;
    let hn = a.size()[0];
    match mode {
        HopeMode::Causal => {
            let pw = neg_powers(&a, n + 1); // [H, n+1]: (−a)^0 … (−a)^n
            let one_m = -a.square() + 1.0; // [H]
            // index tables: lower[j, i] = j − 1 − i (i < j), upper[i, j] = j − i (j ≥ i)
            let (mut lo, mut lo_m, mut up, mut up_m) = (
                vec![0i64; n * n],
                vec![0.0; n * n],
                vec![0i64; n * n],
                vec![0.0; n * n],
            );
            for j in 0..n {
                for i in 0..n {
                    if i < j {
                        lo[j * n + i] = (j - 1 - i) as i64;
                        lo_m[j * n + i] = 1.0;
                    }
                    if j >= i {
                        up[i * n + j] = (j - i) as i64;
                        up_m[i * n + j] = 1.0;
                    }
                }
            }
            let idx = |v: &[i64]| Tensor::from_slice(v).to_device(ctx.device);
            let mask = |v: &[f64]| from_f64(v, &[n, n], ctx.kind, ctx.device);
            let gather = |ix: &[i64]| {
                pw.index_select(1, &idx(ix))
                    .reshape([hn, n as i64, n as i64])
            };
            let eye = Tensor::eye(n as i64, (ctx.kind, ctx.device));
            let a_ss =
                a.reshape([hn, 1, 1]) * eye + one_m.reshape([hn, 1, 1]) * gather(&lo) * mask(&lo_m); // [H, n, n]
            let b = one_m.unsqueeze(-1) * pw.narrow(1, 0, n as i64); // [H, n]
            let t_up = gather(&up) * mask(&up_m); // [H, i, j] = (−a)^{j−i}, j ≥ i
            let c = Tensor::einsum("dhj,hij->dhi", &[&hm, &t_up], None::<i64>); // [D, H, n]
            let d0 = (&hm * pw.narrow(1, 1, n as i64).unsqueeze(0)).sum_dim_intlist(
                -1,
                true,
                None::<Kind>,
            ); // [D, H, 1]
            if len <= 1 {
                return Ok(d0.narrow(-1, 0, len as i64));
            }
            let mut v = b.unsqueeze(-1); // [H, n, 1]: A^0 B
            let mut pk = a_ss;
            while (v.size()[2] as usize) < len - 1 {
                let next = pk.matmul(&v);
                v = Tensor::cat(&[v, next], 2);
                if (v.size()[2] as usize) < len - 1 {
                    pk = pk.matmul(&pk);
                }
            }
            let v = v.narrow(2, 0, len as i64 - 1);
            let rest = Tensor::einsum("dhn,hnt->dht", &[&c, &v], None::<i64>);
            Ok(Tensor::cat(&[d0, rest], -1))
        }
        HopeMode::Circular => {
            let q = rfft_omegas(len, ctx.device).to_kind(complex_of(ctx.kind)); // [W]
            let ac = a.to_kind(complex_of(ctx.kind)).unsqueeze(-1); // [H, 1]
            let av = (&q - &ac) / (-(&q * &ac) + 1.0); // [H, W]
            let w = av.size()[1];
            let pows = av
                .unsqueeze(1)
                .expand([hn, n as i64, w], false)
                .cumprod(1, None::<Kind>); // A^{j+1}
            let khat = Tensor::einsum(
                "dhj,hjw->dhw",
                &[&hm.to_kind(complex_of(ctx.kind)), &pows],
                None::<i64>,
            );
            let r = hermitian_ends(&khat, len)
                .fft_irfft(len as i64, -1, "backward")
                .get(0); // [H, L]
            let rev = Tensor::cat(
                &[
                    r.flip([-1]).narrow(1, 0, len as i64 - 1),
                    r.zeros_like().narrow(1, 0, 1),
                ],
                1,
            );
            Ok(Tensor::stack(&[r, rev], 0))
        }
    }
}
