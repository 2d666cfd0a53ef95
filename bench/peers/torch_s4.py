"""PyTorch reference of the S4 (DPLR) kernel for `statespace bench` (written from the S4 paper's
formulas, not from its code): HiPPO-LegS in normal-plus-low-rank form, conjugate pairs kept, the
kernel's spectrum at the roots of unity by Cauchy sums and the Woodbury identity, then an inverse
real FFT — the "naive" Cauchy form (every term of the [H, N, L/2 + 1] Cauchy matrix materialized).

    python torch_s4.py --h 256 --n 64 --l 4096 [--device cuda]

    LegS: A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k);  P_n = √(n + 1/2);  B_n = √(2n+1)
    A + P Pᵀ = −½ I + S (S skew)  ⇒  Λ = −½ + i·eig(−iS), V its eigenvectors; P̃ = V*P, B̃ = V*B
    ω_k = e^{−2πik/L}, z_k = (2/Δ)(1 − ω_k)/(1 + ω_k),  k_ab(z) = Σ_n a_n b_n / (z − Λ_n)   (both halves)
    K̂(ω) = 2/(1 + ω) · [k_C̃B − k_C̃P (1 + k_PP)⁻¹ k_PB],   K = irfft(K̂, L)

Prints one JSON object per case, shaped as `statespace bench`'s S4 rows.
"""
import argparse, json, math

from common import peak_rss_mib, timeit
import torch
import torch.nn as nn


def legs_nplr(n):
    """Λ (the N/2 modes with Im > 0), P̃, B̃ of HiPPO-LegS's normal part, in float64."""
    q = torch.arange(n, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    a = -torch.tril(r[:, None] * r[None, :], -1) - torch.diag(q + 1)
    p = torch.sqrt(q + 0.5)
    normal = a + p[:, None] * p[None, :]
    skew = (normal - normal.T) / 2  # normal = −½ I + skew
    w, v = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    keep = w > 0
    lam = -0.5 + 1j * w[keep]
    v = v[:, keep]
    return lam, v.conj().T @ p.to(torch.complex128), v.conj().T @ r.to(torch.complex128)


class S4Kernel(nn.Module):
    def __init__(self, h, n, dt_min=1e-3, dt_max=1e-1):
        super().__init__()
        lam, p, b = legs_nplr(n)
        m = lam.shape[0]
        self.log_dt = nn.Parameter(torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_lam_re = nn.Parameter(torch.log(-lam.real).float().repeat(h, 1))
        self.lam_im = nn.Parameter(lam.imag.float().repeat(h, 1))
        self.p = nn.Parameter(torch.view_as_real(p.to(torch.cfloat)).repeat(h, 1, 1))
        self.b = nn.Parameter(torch.view_as_real(b.to(torch.cfloat)).repeat(h, 1, 1))
        self.c = nn.Parameter(torch.view_as_real(torch.randn(h, m, dtype=torch.cfloat) * 0.5**0.5))

    def forward(self, l):
        dev = self.log_dt.device
        dt = torch.exp(self.log_dt)[:, None]  # [H, 1]
        lam = -torch.exp(self.log_lam_re) + 1j * self.lam_im  # [H, M]
        p, b, c = (torch.view_as_complex(t) for t in (self.p, self.b, self.c))
        both = lambda x: torch.cat([x, x.conj()], -1)  # the conjugate halves: [.., N]
        lam, p, b, c = both(lam), both(p), both(b), both(c)
        omega = torch.exp(-2j * math.pi * torch.arange(l // 2 + 1, device=dev) / l)  # [W]
        z = 2 / dt * (1 - omega) / (1 + omega)  # [H, W]
        r = 1 / (z[:, None, :] - lam[:, :, None])  # [H, N, W]
        k = lambda x, y: torch.einsum("hn,hn,hnw->hw", x, y, r)
        k_cb, k_cp, k_pb, k_pp = k(c.conj(), b), k(c.conj(), p), k(p.conj(), b), k(p.conj(), p)
        khat = 2 / (1 + omega) * (k_cb - k_cp * k_pb / (1 + k_pp))
        return torch.fft.irfft(khat, n=l)


def check(n=8, l=32):
    """The kernel against the dense recurrence it stands for: Ā, B̄ bilinear from the full
    A = Λ − P̃P̃* (both halves), C* = C̃*(I − Ā^L)⁻¹, K_l = C* Ā^l B̄. Returns max rel |Δ|."""
    torch.manual_seed(0)
    k = S4Kernel(1, n).double()
    with torch.no_grad():
        kern = k(l)[0].double()
        dt = torch.exp(k.log_dt)[0].double()
        lam = (-torch.exp(k.log_lam_re) + 1j * k.lam_im)[0].to(torch.complex128)
        p, b, c = (torch.view_as_complex(t.double().contiguous())[0] for t in (k.p, k.b, k.c))
        both = lambda x: torch.cat([x, x.conj()])
        lam, p, b, c = both(lam), both(p), both(b), both(c)
        a = torch.diag(lam) - p[:, None] @ p.conj()[None, :]
        eye = torch.eye(lam.shape[0], dtype=torch.complex128)
        inv = torch.linalg.inv(eye - dt / 2 * a)
        da, db = inv @ (eye + dt / 2 * a), inv @ (dt * b)
        cs = c.conj() @ torch.linalg.inv(eye - torch.linalg.matrix_power(da, l))
        ref = torch.stack([cs @ torch.linalg.matrix_power(da, j) @ db for j in range(l)]).real
        return ((kern - ref).abs().max() / ref.abs().max()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h", type=int, default=256)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--l", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--check", action="store_true", help="only compare with the dense recurrence")
    a = ap.parse_args()
    if a.check:
        err = check()
        print(f"S4 kernel vs dense recurrence (N 8, L 32, float32 parameters): max rel |Δ| {err:.2e}")
        raise SystemExit(0 if err < 1e-5 else 1)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    k = S4Kernel(a.h, a.n).to(dev)

    def fwd():
        with torch.no_grad():
            k(a.l)
        sync()

    def fb():
        k.zero_grad()
        k(a.l).sum().backward()
        sync()

    f, b = timeit(fwd, min_reps=3, min_secs=a.secs), timeit(fb, min_reps=3, min_secs=a.secs)
    shape = f"H={a.h} N={a.n} L={a.l}" + ("" if dev.type == "cpu" else f", {a.device}")
    mem = peak_rss_mib() if dev.type == "cpu" else torch.cuda.max_memory_allocated(dev) / 2**20
    for name, t in (("s4_kernel_fwd", f), ("s4_kernel_fwd_bwd", b)):
        print(json.dumps(dict(name=name, shape=shape, median_s=t[0], min_s=t[1], reps=t[2],
                              peak_rss_mib=mem, peer="torch " + torch.__version__,
                              threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()
