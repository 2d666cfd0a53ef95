"""A PyTorch S4D layer and example model with the reference repository's parameter names, written here
from the S4D paper's formulas (not from the reference code) for the interop tests:

    K_l = 2·Re Σ_m C'_m e^{l·ΔA_m},  C' = C (e^{ΔA} − 1)/A,  A = −exp(log_A_real) + i·A_imag   (ZOH)
    y = GLU(Conv1d_{H→2H}(GELU(K ∗ u + D·u)))   over channels, u [B, H, L]
    model: x = encoder(x [B, L, d_in]) → [B, H, L]; per layer: x = norm(x + layer(x)) (post-norm);
           mean over L; decoder
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class S4DKernel(nn.Module):
    def __init__(self, h, n, dt_min=1e-3, dt_max=1e-1):
        super().__init__()
        m = n // 2
        self.log_dt = nn.Parameter(torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(h, m, dtype=torch.cfloat)))
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(h, m)) + 0.1 * torch.randn(h, m))
        self.A_imag = nn.Parameter(math.pi * torch.arange(m).float().repeat(h, 1) + 0.1 * torch.randn(h, m))

    def forward(self, length):
        dt = torch.exp(self.log_dt)
        a = -torch.exp(self.log_A_real) + 1j * self.A_imag
        dta = a * dt[:, None]
        c = torch.view_as_complex(self.C) * (torch.exp(dta) - 1.0) / a
        return 2 * torch.einsum("hm,hml->hl", c, torch.exp(dta[..., None] * torch.arange(length))).real


class S4D(nn.Module):
    def __init__(self, h, n):
        super().__init__()
        self.D = nn.Parameter(torch.randn(h))
        self.kernel = S4DKernel(h, n)
        self.output_linear = nn.Sequential(nn.Conv1d(h, 2 * h, 1), nn.GLU(dim=-2))

    def forward(self, u):  # [B, H, L]
        length = u.shape[-1]
        k = self.kernel(length)
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(k, n=2 * length),
                            n=2 * length)[..., :length]
        y = F.gelu(y + u * self.D[:, None])
        return self.output_linear(y)


class Example(nn.Module):
    def __init__(self, d_input, d_output, h, n_layers, n):
        super().__init__()
        self.encoder = nn.Linear(d_input, h)
        self.s4_layers = nn.ModuleList([S4D(h, n) for _ in range(n_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(h) for _ in range(n_layers)])
        self.decoder = nn.Linear(h, d_output)

    def forward(self, x):  # [B, L, d_in]
        x = self.encoder(x).transpose(-1, -2)
        for layer, norm in zip(self.s4_layers, self.norms):
            x = norm((x + layer(x)).transpose(-1, -2)).transpose(-1, -2)
        return self.decoder(x.mean(dim=-1))
