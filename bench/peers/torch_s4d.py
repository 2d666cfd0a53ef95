"""PyTorch references for `statespace bench` (written from the S4D paper's formulas).

    python torch_s4d.py kernel --h 256 --m 64 --l 4096
    python torch_s4d.py train --layers 4 --h 128 --n 64 --b 16 --l 1024
    python torch_s4d.py step --layers 6 --h 256 --n 64
    (kernel and train also take --device cuda[:N])

Prints one JSON object per case (median seconds, tokens/s, peak RSS). Threads: --threads (default 2).
"""
import argparse, json, math

from common import peak_rss_mib, timeit
import torch
import torch.nn as nn
import torch.nn.functional as F


class S4DKernel(nn.Module):
    """S4D-Lin, ZOH: K = 2 Re Σ_m C̃_m exp(ΔA_m l), C̃ = C (exp(ΔA) − 1)/A (the paper's two lines)."""

    def __init__(self, h, m, dt_min=1e-3, dt_max=1e-1):
        super().__init__()
        self.log_dt = nn.Parameter(torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_a_real = nn.Parameter(torch.log(0.5 * torch.ones(h, m)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(m).float().repeat(h, 1))
        self.c = nn.Parameter(torch.view_as_real(torch.randn(h, m, dtype=torch.cfloat) * 0.5**0.5))

    def forward(self, l):
        dt = torch.exp(self.log_dt)
        a = -torch.exp(self.log_a_real) + 1j * self.a_imag
        dta = a * dt.unsqueeze(-1)
        c = torch.view_as_complex(self.c) * (torch.exp(dta) - 1.0) / a
        vand = dta.unsqueeze(-1) * torch.arange(l, device=a.device)  # [H, M, L]
        return 2 * torch.einsum("hm,hml->hl", c, torch.exp(vand)).real


class S4DLayer(nn.Module):
    """LayerNorm pre-norm, S4D FFT convolution + D skip, GELU, Linear H→2H, GLU; residual."""

    def __init__(self, h, n):
        super().__init__()
        self.norm = nn.LayerNorm(h)
        self.kernel = S4DKernel(h, n // 2)
        self.d = nn.Parameter(torch.randn(h))
        self.out = nn.Conv1d(h, 2 * h, 1)

    def forward(self, x):  # [B, H, L]
        l = x.shape[-1]
        z = self.norm(x.transpose(-1, -2)).transpose(-1, -2)
        k = self.kernel(l)
        y = torch.fft.irfft(torch.fft.rfft(z, n=2 * l) * torch.fft.rfft(k, n=2 * l), n=2 * l)[..., :l]
        y = F.gelu(y + z * self.d.unsqueeze(-1))
        return x + F.glu(self.out(y), dim=1)


class Model(nn.Module):
    def __init__(self, layers, h, n, classes=10):
        super().__init__()
        self.enc = nn.Conv1d(1, h, 1)
        self.blocks = nn.ModuleList([S4DLayer(h, n) for _ in range(layers)])
        self.norm = nn.LayerNorm(h)
        self.dec = nn.Linear(h, classes)

    def forward(self, x):
        x = self.enc(x)
        for b in self.blocks:
            x = b(x)
        x = self.norm(x.transpose(-1, -2)).mean(1)
        return self.dec(x)


def sync(a):
    if a.device.startswith("cuda"):
        torch.cuda.synchronize(a.device)


def suffix(a):
    """Shapes on a GPU carry the device (the CPU rows keep `statespace bench`'s labels)."""
    return "" if a.device == "cpu" else f", {a.device}"


def case_kernel(a):
    k = S4DKernel(a.h, a.m).to(a.device)

    def fw():
        with torch.no_grad():
            k(a.l)
        sync(a)

    fwd = timeit(fw, min_secs=a.secs)

    def fb():
        k.zero_grad()
        k(a.l).sum().backward()
        sync(a)

    both = timeit(fb, min_secs=a.secs)
    shape = f"H={a.h} M={a.m} (N={2 * a.m}) L={a.l}" + suffix(a)
    return [
        dict(name="s4d_kernel_fwd", shape=shape, median_s=fwd[0], min_s=fwd[1], reps=fwd[2]),
        dict(name="s4d_kernel_fwd_bwd", shape=shape, median_s=both[0], min_s=both[1], reps=both[2],
             peak_rss_mib=peak_rss_mib()),
    ]


def case_train(a):
    model = Model(a.layers, a.h, a.n).to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = (torch.rand(a.b, 1, a.l) - 0.5).to(a.device)
    y = (torch.arange(a.b) % 10).to(a.device)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync(a)

    t = timeit(step, min_reps=3, min_secs=a.secs)
    return [dict(name="train_step", shape=f"S4D {a.layers}×H{a.h} N{a.n} B={a.b} L={a.l}" + suffix(a), median_s=t[0],
                 min_s=t[1], reps=t[2], tokens_per_s=a.b * a.l / t[0], peak_rss_mib=peak_rss_mib())]


@torch.no_grad()
def case_step(a):
    """Recurrent step of the same layer stack: x ← Ā x + B̄ u, y = 2 Re C x, per layer."""
    torch.set_num_threads(1)
    model = Model(a.layers, a.h, a.n)
    layers = []
    for blk in model.blocks:
        kk = blk.kernel
        dt = torch.exp(kk.log_dt)
        aa = -torch.exp(kk.log_a_real) + 1j * kk.a_imag
        dta = aa * dt.unsqueeze(-1)
        layers.append((torch.exp(dta), (torch.exp(dta) - 1.0) / aa, 2 * torch.view_as_complex(kk.c), blk))
    states = [torch.zeros(a.h, a.n // 2, dtype=torch.cfloat) for _ in layers]
    u = torch.zeros(1, 1)

    def step():
        x = model.enc.weight[:, :, 0] @ u[0] + model.enc.bias  # [H]
        for i, (ab, bb, c, blk) in enumerate(layers):
            z = blk.norm(x)
            states[i] = ab * states[i] + bb * z.unsqueeze(-1)
            y = (c * states[i]).sum(-1).real + blk.d * z
            y = F.gelu(y)
            x = x + F.glu(blk.out.weight[:, :, 0] @ y + blk.out.bias, dim=0)
        return model.dec(model.norm(x))

    t = timeit(step, min_reps=2000, min_secs=a.secs)
    return [dict(name="recurrent_step", shape=f"S4D {a.layers}×H{a.h} N{a.n} GLU batch=1", median_s=t[0],
                 min_s=t[1], reps=t[2], tokens_per_s=1.0 / t[0])]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=["kernel", "train", "step"])
    p.add_argument("--h", type=int, default=256)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--l", type=int, default=4096)
    p.add_argument("--b", type=int, default=16)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--secs", type=float, default=3.0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (kernel and train cases)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for r in {"kernel": case_kernel, "train": case_train, "step": case_step}[a.case](a):
        r.update(peer="torch " + torch.__version__, threads=torch.get_num_threads())
        print(json.dumps(r))


if __name__ == "__main__":
    main()
