"""`s5-pytorch`'s S5 layer (forward + backward of sum(y·w)) on the shape of `statespace bench`'s
`s5_layer_fwd_bwd` case: input [B, L, H], state size P.

    python s5_torch.py --b 16 --h 128 --p 64 --l 1024
"""
import argparse, json, warnings

warnings.filterwarnings("ignore")
from common import peak_rss_mib, timeit
import torch
from s5 import S5


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--b", type=int, default=16)
    p.add_argument("--h", type=int, default=128)
    p.add_argument("--p", type=int, default=64)
    p.add_argument("--l", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--secs", type=float, default=3.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    layer = S5(a.h, a.p)
    x = torch.randn(a.b, a.l, a.h, requires_grad=True)
    w = torch.randn(a.b, a.l, a.h)

    def step():
        layer.zero_grad()
        x.grad = None
        (layer(x) * w).sum().backward()

    t = timeit(step, min_secs=a.secs)
    print(json.dumps(dict(name="s5_layer_fwd_bwd", shape=f"B={a.b} H={a.h} P={a.p} L={a.l}", median_s=t[0],
                          min_s=t[1], reps=t[2], peer="s5-pytorch (torch " + torch.__version__ + ")",
                          peak_rss_mib=peak_rss_mib())))


if __name__ == "__main__":
    main()
