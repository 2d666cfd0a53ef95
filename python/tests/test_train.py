"""``python -m statespace.train``: the same run as statespace's CPU engine (the CLI's loop, hand-written
backward) within f32 rounding; under torchrun (gloo, CPU) two processes — and two nodes on the loopback —
equal one process on the same global batch; a rank killed mid-run, then ``--resume``, ends where the
uninterrupted run ends; a run started here resumes on the CPU engine; bad input is exit 2 naming the file."""
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

import pytest
import torch

import statespace
from statespace import _native

from test_ddp import env, free_port, torchrun

CONFIG = """
[task]
name = "copying"
copy_tokens = 4
blanks = 20
alphabet = 6
train_size = 160
val_size = 32
test_size = 32

[model]
kind = "s4d"
d_model = 16
n_layers = 2
d_state = 16
pool = "none"
norm = "layer"
dropout = 0.0

[train]
epochs = 2
batch_size = 16
lr = 0.004
weight_decay = 0.01
warmup_steps = 3
threads = 1
log_every = 5
checkpoint_every = 5
grad_clip = 1.0
"""


def config(tmp_path, text=CONFIG):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def train(args, extra_env=None, check=True):
    e = env()
    e.update(extra_env or {})
    r = subprocess.run([sys.executable, "-m", "statespace.train", "--quiet", *args], env=e,
                       capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def launch(nproc, args, extra_env=None, nnodes=1):
    """``torchrun`` with ``nproc`` processes per node on ``nnodes`` loopback nodes; exit codes."""
    e = env()
    e.update(extra_env or {})
    port = str(free_port())
    procs = [subprocess.Popen([torchrun(), "--nnodes", str(nnodes), "--node_rank", str(r),
                               "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
                               "--master_port", port, "-m", "statespace.train", "--quiet", *args],
                              env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(nnodes)]
    return [p.wait(timeout=600) for p in procs], [p.stdout.read() for p in procs]


def weights(path):
    return dict(statespace.Model.from_run(str(path)).named_parameters())


def meta(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))["__metadata__"]


def worst(a, b, bound):
    pa, pb = weights(a), weights(b)
    assert pa.keys() == pb.keys()
    w = 0.0
    for k in pa:
        r = ((pa[k] - pb[k]).norm() / pb[k].norm().clamp_min(1e-12)).item()
        assert r <= bound, f"{k}: ‖Δ‖/‖p‖ = {r:.2e} > {bound:g}"
        w = max(w, r)
    return w


def lines(run):
    return [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]


def same_metrics(a, b, rel):
    la, lb = lines(a), lines(b)
    assert [sorted(x) for x in la] == [sorted(x) for x in lb]
    for x, y in zip(la, lb):
        for k in x:
            if k in ("tokens_per_s",):
                continue
            if isinstance(x[k], float):
                assert abs(x[k] - y[k]) <= rel * abs(y[k]), f"step {x['step']} {k}: {x[k]} vs {y[k]}"
            else:
                assert x[k] == y[k], f"step {x['step']} {k}: {x[k]} vs {y[k]}"


def one_vs_torchrun(tmp_path, cfg, nproc, nnodes, what):
    """One process and ``torchrun`` (nproc × nnodes) on the same config: equal metrics lines, weights
    within 1e-5 in per-tensor norm."""
    one, many = tmp_path / "one", tmp_path / "many"
    train(["--config", cfg, "--out", str(one)])
    codes, out = launch(nproc, ["--config", cfg, "--out", str(many)], nnodes=nnodes)
    assert codes == [0] * nnodes, out
    same_metrics(many, one, 1e-5)
    w = worst(many / "last.safetensors", one / "last.safetensors", 1e-5)
    print(f"{what} vs 1 process: worst ‖Δ‖/‖p‖ {w:.2e}")


def test_one_process_equals_the_cpu_engine_run(tmp_path):
    cfg = config(tmp_path)
    py, cpu = tmp_path / "py", tmp_path / "cpu"
    train(["--config", cfg, "--out", str(py)])
    _native.run_cpu(open(cfg).read(), str(cpu))
    for f in ("config.toml", "metrics.jsonl", "metrics.csv", "best.safetensors", "last.safetensors",
              "curves.png"):
        assert (py / f).exists(), f
    assert meta(py / "last.safetensors")["step"] == "20"
    same_metrics(py, cpu, 1e-5)
    w = worst(py / "last.safetensors", cpu / "last.safetensors", 1e-4)
    print(f"python -m statespace.train vs the CPU engine, 20 steps: worst ‖Δ‖/‖p‖ {w:.2e}")


def test_torchrun_two_processes_equal_one(tmp_path):
    scratch = lambda: {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("statespace-rank")}
    before = scratch()
    one_vs_torchrun(tmp_path, config(tmp_path), 2, 1, "torchrun 2 processes")
    assert scratch() <= before, "rank 1's private run directory was left behind"


PAIR = """
[task]
name = "retrieval"
data_dir = "{data}"
seq_len = 64

[model]
kind = "s4d"
d_model = 8
n_layers = 1
d_state = 8
norm = "layer"
pool = "mean"
dropout = 0.0

[train]
epochs = 2
batch_size = 8
log_every = 1
threads = 1
lr = 0.004
weight_decay = 0.0
"""


def aan_files(root, seed=0):
    """Tiny AAN retrieval files in the LRA format: label, two ids, two documents, tab-separated."""
    import random

    rnd = random.Random(seed)
    root.mkdir()
    for split, n in (("train", 32), ("eval", 8), ("test", 8)):
        doc = lambda: "".join(rnd.choice("abcdefgh ") for _ in range(rnd.randint(8, 60)))
        lines = [f"{rnd.randint(0, 1)}\tid{i}a\tid{i}b\t{doc()}\t{doc()}" for i in range(n)]
        (root / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_torchrun_two_processes_equal_one_on_a_pair_task(tmp_path):
    # two towers per example (LRA Retrieval): each rank takes both documents of its examples
    cfg = config(tmp_path, PAIR.format(data=aan_files(tmp_path / "aan")))
    one_vs_torchrun(tmp_path, cfg, 2, 1, "retrieval (pairs), torchrun 2 processes")


def test_a_global_batch_smaller_than_the_ranks_is_exit_2_on_every_rank(tmp_path):
    cfg = config(tmp_path)
    codes, out = launch(2, ["--config", cfg, "--out", str(tmp_path / "r"), "--set", "train.batch_size=1"])
    assert codes != [0] and "smaller than the 2 ranks" in out[0], out
    # torchrun's report: the ranks exited 2 (or were ended by torchrun, -15, once one had), none
    # failed in a collective, no traceback of ours
    import re

    codes_seen = set(re.findall(r"exitcode\s*:\s*(-?\d+)", out[0]))
    assert "2" in codes_seen and codes_seen <= {"2", "-15"}, out
    assert "statespace/train.py" not in out[0], out


def test_torchrun_two_nodes_on_the_loopback(tmp_path):
    one_vs_torchrun(tmp_path, config(tmp_path), 1, 2, "torchrun 2 nodes × 1 process")


def test_a_killed_rank_then_resume_ends_as_the_uninterrupted_run(tmp_path):
    cfg = config(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    codes, out = launch(2, ["--config", cfg, "--out", str(whole)])
    assert codes == [0], out
    # rank 1 dies (SIGKILL) at its 13th step: the job fails, last.safetensors holds step 10
    codes, out = launch(2, ["--config", cfg, "--out", str(killed)],
                        {"STATESPACE_FAULT_KILL_AFTER": "1:13"})
    assert codes != [0], out
    assert meta(killed / "last.safetensors")["step"] == "10"
    assert not (killed / "best.safetensors").exists() or meta(killed / "best.safetensors")["step"] == "10"
    codes, out = launch(2, ["--resume", str(killed)])
    assert codes == [0], out
    same_metrics(killed, whole, 1e-6)
    w = worst(killed / "last.safetensors", whole / "last.safetensors", 1e-6)
    w2 = worst(killed / "best.safetensors", whole / "best.safetensors", 1e-6)
    print(f"killed at step 13, resumed from 10, vs uninterrupted: worst ‖Δ‖/‖p‖ last {w:.2e}, best {w2:.2e}")


def test_a_python_run_resumes_on_the_cpu_engine(tmp_path):
    cfg = config(tmp_path)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(["--config", cfg, "--out", str(whole)])
    r = train(["--config", cfg, "--out", str(cut)], {"STATESPACE_FAULT_KILL_AFTER": "0:8"}, check=False)
    assert r.returncode == -signal.SIGKILL
    assert meta(cut / "last.safetensors")["step"] == "5"
    _native.run_cpu(open(cut / "config.toml").read(), str(cut), resume=True)
    same_metrics(cut, whole, 1e-5)
    w = worst(cut / "last.safetensors", whole / "last.safetensors", 1e-4)
    print(f"python steps 1–5, CPU engine 6–20 vs python 1–20: worst ‖Δ‖/‖p‖ {w:.2e}")


def test_a_stop_request_saves_the_step_and_exits_130(tmp_path):
    cfg = config(tmp_path, CONFIG.replace("epochs = 2", "epochs = 400"))
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "statespace.train", "--config", cfg, "--out", str(run)],
                         env=env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "resume with: python -m statespace.train --resume" in err
    step = int(meta(run / "last.safetensors")["step"])
    assert 0 < step < 4000
    assert all(l["step"] <= step for l in lines(run))


@pytest.mark.parametrize("args, needle", [
    (["--config", "/nonexistent/run.toml"], "/nonexistent/run.toml: cannot read"),
    (["--config", "x.toml", "--device", "bogus"], "--device bogus"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run/config.toml: cannot read"),
    ([], "give --config FILE.toml"),
])
def test_bad_arguments_are_exit_2(args, needle):
    r = train(args, check=False)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_a_bad_field_names_the_file_and_the_field(tmp_path):
    cfg = config(tmp_path, CONFIG.replace("lr = 0.004", "lr = 0.004\nlearning_rate = 1"))
    r = train(["--config", cfg, "--out", str(tmp_path / "r")], check=False)
    assert r.returncode == 2 and cfg in r.stderr and "learning_rate" in r.stderr, r.stderr
    r = train(["--config", config(tmp_path), "--out", str(tmp_path / "r"), "--set", "train.nope=1"],
              check=False)
    assert r.returncode == 2 and "nope" in r.stderr, r.stderr


def test_an_existing_run_is_not_overwritten(tmp_path):
    cfg = config(tmp_path, CONFIG.replace("epochs = 2", "epochs = 1"))
    run = tmp_path / "run"
    train(["--config", cfg, "--out", str(run)])
    before = (run / "last.safetensors").read_bytes()
    r = train(["--config", cfg, "--out", str(run)], check=False)
    assert r.returncode == 2 and "already holds a run" in r.stderr, r.stderr
    assert (run / "last.safetensors").read_bytes() == before
