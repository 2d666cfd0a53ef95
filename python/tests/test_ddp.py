"""torchrun + DistributedDataParallel (gloo, CPU) trains a statespace model as one process does on the
doubled batch: every parameter within 1e-5 in per-tensor norm after 20 steps — on one node with two
processes, and as two single-process nodes on the loopback."""
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "ddp_equivalence.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun():
    exe = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(exe):
        pytest.skip("torchrun not found next to this Python")
    return exe


def compare(a, b):
    pa, pb = torch.load(a), torch.load(b)
    assert pa.keys() == pb.keys()
    worst = 0.0
    for k in pa:
        r = ((pa[k] - pb[k]).norm() / pb[k].norm().clamp_min(1e-12)).item()
        assert r <= 1e-5, f"{k}: ‖Δ‖/‖p‖ = {r:.2e}"
        worst = max(worst, r)
    return worst


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.pop("STATESPACE_TORCH_TEST_DEVICE", None)
    return e


def test_two_processes_equal_one_with_the_doubled_batch(tmp_path):
    one, ddp = tmp_path / "one.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, SCRIPT, str(one), "--single"], check=True, env=env())
    subprocess.run([torchrun(), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                    "--master_port", str(free_port()), SCRIPT, str(ddp)], check=True, env=env())
    print(f"1 node × 2 processes vs 1 process: worst ‖Δ‖/‖p‖ {compare(ddp, one):.2e}")


def test_two_nodes_on_the_loopback(tmp_path):
    one, ddp = tmp_path / "one.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, SCRIPT, str(one), "--single"], check=True, env=env())
    port = str(free_port())
    procs = [
        subprocess.Popen([torchrun(), "--nnodes", "2", "--node_rank", str(r), "--nproc_per_node", "1",
                          "--master_addr", "127.0.0.1", "--master_port", port, SCRIPT, str(ddp)],
                         env=env())
        for r in (0, 1)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    print(f"2 nodes × 1 process vs 1 process: worst ‖Δ‖/‖p‖ {compare(ddp, one):.2e}")
