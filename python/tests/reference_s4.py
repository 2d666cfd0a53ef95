"""A PyTorch S4 (DPLR) block and example model with the reference repository's parameter names (v4
``S4Block``: ``layer.kernel.{inv_dt, A_real, A_imag, P, B, C, l_kernel}``, ``layer.D``,
``output_linear.0``), written here from the S4 paper's definitions (not from the reference code) for the
interop tests. The kernel is the SSM's own definition, computed densely in complex128 — no Cauchy
kernel, no Woodbury identity — so it checks statespace's fast path independently:

    kept half (the reference's convention, Im A ≤ 0):  A_m = −exp(A_real) − i·A_imag,  m < M = N/2
    completed: Λ = [A; Ā], P_f = [P; P̄] (rank r columns), B_f = [B; B̄], C̃_f = [C̃; C̃̄]
    A_full = diag(Λ) − P_f P_fᴴ            (channel h uses SSM copy h mod S)
    bilinear, Δ = exp(inv_dt):  Ā = (I − Δ/2·A_full)⁻¹(I + Δ/2·A_full),  B̄ = Δ(I − Δ/2·A_full)⁻¹B_f
    C̃ = C(I − Ā^{L′})  (stored once l_kernel = L′ > 0, set at the first forward: the C′ trick)
    K_l = C_fᵀ Ā^l B̄ (real),  C_f = (I − Ā^{L′})⁻ᵀ C̃_f
    FFTConv: y = GELU(K ∗ u + D·u) (bidirectional: the second kernel row at lags −(j+1));
    S4Block: GLU(Linear_{H→2H}(y)) over channels (first half × σ(second half)).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DPLRKernel(nn.Module):
    def __init__(self, h, n, n_ssm, rank=1, channels=1, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        m = n // 2
        self.inv_dt = nn.Parameter(torch.rand(h, 1, generator=g) * (math.log(0.1) - math.log(1e-3))
                                   + math.log(1e-3))
        self.A_real = nn.Parameter(math.log(0.5) + 0.3 * torch.randn(n_ssm, m, generator=g))
        self.A_imag = nn.Parameter(math.pi * torch.arange(m).float().repeat(n_ssm, 1)
                                   + 0.2 * torch.rand(n_ssm, m, generator=g))
        self.P = nn.Parameter(0.4 * torch.randn(rank, n_ssm, m, 2, generator=g))
        self.B = nn.Parameter(torch.randn(1, n_ssm, m, 2, generator=g))
        self.C = nn.Parameter(torch.randn(channels, h, m, 2, generator=g) / math.sqrt(2))
        self.register_buffer("l_kernel", torch.tensor(0))

    def _system(self):
        """Ā [H, N, N], B̄ [H, N] of the completed system (complex128)."""
        h = self.inv_dt.shape[0]
        s = self.A_real.shape[0]
        copy = torch.arange(h) % s
        a = -torch.exp(self.A_real.double()) - 1j * self.A_imag.double()           # [S, M]
        p = torch.view_as_complex(self.P.double().contiguous())                      # [r, S, M]
        b = torch.view_as_complex(self.B.double().contiguous())[0]                   # [S, M]
        lam = torch.cat([a, a.conj()], -1)[copy]                                     # [H, N]
        pf = torch.cat([p, p.conj()], -1)[:, copy]                                   # [r, H, N]
        bf = torch.cat([b, b.conj()], -1)[copy]                                      # [H, N]
        afull = torch.diag_embed(lam) - torch.einsum("rhn,rhk->hnk", pf, pf.conj())
        dt = torch.exp(self.inv_dt.double())[:, 0, None, None]
        eye = torch.eye(lam.shape[-1], dtype=torch.cdouble)
        inv = torch.linalg.inv(eye - dt / 2 * afull)
        return inv @ (eye + dt / 2 * afull), (dt[..., 0] * torch.einsum("hnk,hk->hn", inv, bf))

    def _complete(self, c):
        return torch.cat([c, c.conj()], -1)

    @torch.no_grad()
    def setup(self, length):
        """The C′ trick at the first forward: C ← C̃ = C(I − Ā^L) (kept half), l_kernel ← L."""
        abar, _ = self._system()
        eye = torch.eye(abar.shape[-1], dtype=torch.cdouble)
        c = self._complete(torch.view_as_complex(self.C.double().contiguous()))      # [c, H, N]
        ct = torch.einsum("chn,hnk->chk", c, eye - torch.linalg.matrix_power(abar, length))
        m = ct.shape[-1] // 2
        self.C.copy_(torch.view_as_real(ct[..., :m].contiguous()).float())
        self.l_kernel.fill_(length)

    def forward(self, length):
        if int(self.l_kernel) == 0:
            self.setup(length)
        lk = int(self.l_kernel)
        if length > lk:
            raise ValueError("inputs longer than l_kernel are not part of this test module")
        abar, bbar = self._system()
        eye = torch.eye(abar.shape[-1], dtype=torch.cdouble)
        ct = self._complete(torch.view_as_complex(self.C.double().contiguous()))     # [c, H, N]
        m_inv = torch.linalg.inv(eye - torch.linalg.matrix_power(abar, lk))           # [H, N, N]
        c = torch.einsum("chn,hnk->chk", ct, m_inv)                                  # C = C̃(I−Ā^L)⁻¹
        ks, x = [], bbar
        for _ in range(length):
            ks.append(torch.einsum("chn,hn->ch", c, x).real)
            x = torch.einsum("hnk,hk->hn", abar, x)
        return torch.stack(ks, -1).float()                                          # [c, H, L]


class FFTConv(nn.Module):
    def __init__(self, h, n, n_ssm, rank=1, bidirectional=False, seed=0):
        super().__init__()
        self.bidirectional = bidirectional
        self.kernel = DPLRKernel(h, n, n_ssm, rank, 2 if bidirectional else 1, seed)
        self.D = nn.Parameter(torch.randn(1, h, generator=torch.Generator().manual_seed(seed + 1)))

    def forward(self, u):  # [B, H, L]
        length = u.shape[-1]
        k = self.kernel(length)
        if self.bidirectional:
            k = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
            n = 2 * length
        else:
            k, n = k[0], 2 * length
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
        return F.gelu(y + u * self.D[0, :, None])


class S4Block(nn.Module):
    def __init__(self, h, n, n_ssm=None, rank=1, bidirectional=False, seed=0):
        super().__init__()
        self.layer = FFTConv(h, n, n_ssm or h, rank, bidirectional, seed)
        self.output_linear = nn.Sequential(nn.Linear(h, 2 * h), nn.GLU(dim=-1))

    def forward(self, u):  # [B, H, L] → [B, H, L]
        return self.output_linear(self.layer(u).transpose(-1, -2)).transpose(-1, -2)


class Example(nn.Module):
    """example.py's model with S4Block layers: encoder, post-norm residual blocks, mean, decoder."""

    def __init__(self, d_input, d_output, h, n_layers, n, n_ssm=None, rank=1):
        super().__init__()
        self.encoder = nn.Linear(d_input, h)
        self.s4_layers = nn.ModuleList([S4Block(h, n, n_ssm, rank, seed=10 * i)
                                        for i in range(n_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(h) for _ in range(n_layers)])
        self.decoder = nn.Linear(h, d_output)

    def forward(self, x):  # [B, L, d_in]
        x = self.encoder(x).transpose(-1, -2)
        for layer, norm in zip(self.s4_layers, self.norms):
            x = norm((x + layer(x)).transpose(-1, -2)).transpose(-1, -2)
        return self.decoder(x.mean(dim=-1))
