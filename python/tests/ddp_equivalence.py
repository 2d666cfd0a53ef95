"""20 AdamW steps of a statespace model, either under torchrun + DistributedDataParallel (each rank
takes its half of every global batch) or in one process on the whole batch; writes the final
parameters to OUT (rank 0). Used by test_ddp.py.

    torchrun --nproc_per_node 2 ddp_equivalence.py OUT        (gloo, CPU)
    python ddp_equivalence.py OUT --single
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

import statespace

STEPS, BATCH, LEN, CLASSES = 20, 8, 48, 5  # BATCH: the global batch


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(BATCH, 1, LEN, generator=g)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    return x, y


def main():
    out, single = sys.argv[1], "--single" in sys.argv
    cfg = {"kind": "s4d", "d_model": 16, "n_layers": 2, "d_state": 16, "norm": "layer",
           "dropout": 0.0}
    model = statespace.Model(cfg, d_input=1, d_output=CLASSES, seed=11)
    rank, world = 0, 1
    net = model
    if not single:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    per = BATCH // world
    for step in range(STEPS):
        x, y = batch(step)
        x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()  # per-sample mean; DDP averages over ranks
        opt.step()
    if rank == 0:
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, out)
    if not single:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
