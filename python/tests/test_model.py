"""The Python modules against statespace's CPU engine (its hand-written backward, itself checked against
finite differences), from the same parameters: outputs and every parameter gradient, per tensor
max|Δ| / max|reference| ≤ 1e-4 in float32 (1e-9 in float64)."""

import math

import pytest
import torch

import statespace

KINDS = ["s4d", "s4", "s5", "s4-ptd", "s5-ptd", "sgconv", "hope"]


def rel(a, b, floor=0.0):
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    scale = max(b.abs().max().item(), floor)
    d = (a - b).abs().max().item()
    return d if scale == 0 else d / scale


def check_against_cpu(model, x, lengths=None, tol=1e-4):
    model.train()
    out = model(x, lengths)
    dout = torch.randn_like(out)
    model.zero_grad()
    out.backward(dout)
    ref_out, ref_grads = model.cpu_reference(x, dout, lengths, train=True, seed=0)
    worst = rel(out.detach(), ref_out)
    assert worst <= tol, f"output: {worst:.2e}"
    named = dict(model.named_parameters())
    big = max(max(abs(v) for v in g) for g in ref_grads.values() if g)
    for name, g in ref_grads.items():
        p = named[name]
        assert p.grad is not None, f"{name}: no gradient reached the Python parameter"
        r = rel(p.grad, g, floor=1e-3 * big)
        assert r <= tol, f"{name}: gradient {r:.2e}"
        worst = max(worst, r)
    return worst


@pytest.mark.parametrize("two_phase", [True, False], ids=["two-phase", "one-graph"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_matches_the_cpu_engine(kind, two_phase):
    torch.manual_seed(0)
    cfg = {"kind": kind, "d_model": 8, "n_layers": 2, "d_state": 8, "dt_min": 0.001}
    model = statespace.Model(cfg, d_input=2, d_output=3, seq_len=32, seed=1)
    model.two_phase = two_phase
    names = [n for n, _ in model.named_parameters()]
    assert names[0].startswith("encoder.") and any(".ssm." in n for n in names)
    x = torch.randn(3, 2, 32)
    print(kind, f"{check_against_cpu(model, x):.2e}")


def test_bidirectional_batchnorm_postnorm_padded_tokens():
    torch.manual_seed(1)
    cfg = {"kind": "s4d", "d_model": 8, "n_layers": 2, "d_state": 8, "bidirectional": True,
           "norm": "batch", "prenorm": False}
    model = statespace.Model(cfg, d_input=0, vocab=11, d_output=4, seed=2)
    x = torch.randint(0, 11, (4, 24))
    check_against_cpu(model, x, lengths=[24, 17, 9, 20])
    # BatchNorm's running statistics reached the Python buffers
    rm = dict(model.named_buffers())["blocks.0.norm.running_mean"]
    assert rm.abs().max().item() > 0


def test_float64_agrees_to_1e9():
    torch.manual_seed(2)
    model = statespace.Model({"kind": "s4", "d_model": 6, "n_layers": 1, "d_state": 8},
                             d_input=1, d_output=2, seed=3).double()
    x = torch.randn(2, 1, 40, dtype=torch.float64)
    assert check_against_cpu(model, x, tol=1e-9) <= 1e-9


def test_layers_alone_are_modules_with_the_papers_names():
    torch.manual_seed(3)
    layer = statespace.S4D(16, 32)
    names = sorted(n for n, _ in layer.named_parameters())
    assert names == ["d", "kernel.a_imag", "kernel.b_im", "kernel.b_re", "kernel.c_im", "kernel.c_re",
                     "kernel.log_a_real", "kernel.log_dt"], names
    u = torch.randn(2, 16, 50, requires_grad=True)
    y = layer(u)
    assert y.shape == u.shape
    y.square().sum().backward()
    assert u.grad is not None and layer.kernel.log_dt.grad is not None
    # the layer is causal: the output at t does not depend on inputs after t
    u2 = u.detach().clone()
    u2[..., 30:] += 1.0
    with torch.no_grad():
        assert torch.allclose(layer(u2)[..., :30], y.detach()[..., :30], atol=1e-5)
    # y = K ∗ u + D·u against a direct convolution with the layer's impulse response
    with torch.no_grad():
        imp = torch.zeros(1, 16, 50)
        imp[..., 0] = 1.0
        k = layer(imp)[0] - layer.d[:, None] * imp[0]  # K [H, L]
        ref = torch.stack([sum(k[:, j] * u.detach()[:, :, t - j] for j in range(t + 1))
                           for t in range(50)], -1) + layer.d[None, :, None] * u.detach()
        assert rel(layer(u.detach()), ref) < 1e-4


def test_save_and_from_run_give_the_same_model(tmp_path):
    torch.manual_seed(4)
    run = """
[task]
name = "copying"
[model]
kind = "s4d"
d_model = 8
n_layers = 2
d_state = 8
pool = "none"
"""
    cfg = {"kind": "s4d", "d_model": 8, "n_layers": 2, "d_state": 8, "pool": "none"}
    # the copying task's defaults: 10 symbols + blank + marker tokens in, the symbols out
    model = statespace.Model(cfg, d_input=0, vocab=12, d_output=10, seed=5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save(tmp_path, run_config=run)
    again = statespace.Model.from_run(tmp_path)
    assert again.run_config["model"]["d_model"] == 8
    sd, sd2 = model.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    x = torch.randint(0, 12, (2, 30))
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_load_state_dict_and_device_moves():
    a = statespace.Model({"kind": "s5", "d_model": 8, "n_layers": 1, "d_state": 8}, seed=6)
    b = statespace.Model({"kind": "s5", "d_model": 8, "n_layers": 1, "d_state": 8}, seed=7)
    x = torch.randn(2, 1, 16)
    a.eval(), b.eval()
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        b.load_state_dict(a.state_dict())
        assert torch.equal(a(x), b(x))
    # the optimizer groups: SSM parameters in their own groups
    groups = a.param_groups()
    assert set(groups) >= {"weight", "no_decay", "ssm_a", "ssm_b", "ssm_dt"}, groups


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="d_modle|unknown field"):
        statespace.Model({"kind": "s4d", "d_modle": 8})
    m = statespace.Model({"kind": "s4d", "d_model": 8, "n_layers": 1, "d_state": 8})
    with pytest.raises(ValueError, match=r"\[batch, 1, length\] expected"):
        m(torch.randn(2, 3, 16))  # 3 input channels, the model takes 1


def test_stream_steps_equal_the_convolution_mode():
    torch.manual_seed(5)
    cfg = {"kind": "s4d", "d_model": 8, "n_layers": 2, "d_state": 8, "pool": "none"}
    model = statespace.Model(cfg, d_input=2, d_output=3, seed=8).eval()
    x = torch.randn(2, 2, 20)
    with torch.no_grad():
        full = model(x)  # [B, d_out, L]
    s = model.stream(batch=2)
    steps = torch.stack([s.step(x[:, :, t]) for t in range(20)], -1)
    assert s.steps() == 20
    assert rel(steps, full) < 1e-4


def test_tasks_are_datasets_that_train_a_model():
    import torch.nn.functional as F
    from statespace.data import TaskDataset

    run = ('[task]\nname = "copying"\ncopy_tokens = 4\nblanks = 6\nalphabet = 4\ntrain_size = 64\n'
           'val_size = 16\ntest_size = 16\n')
    ds = TaskDataset(run, "train")
    assert len(ds) == 64 and len(TaskDataset(run, "test")) == 16
    io = ds.io
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=ds.collate,
                                         generator=torch.Generator().manual_seed(0))
    x, y, lengths = next(iter(loader))
    assert x.dtype == torch.int64 and x.shape[0] == 16 and y.shape[0] == 16
    assert int(x.max()) < io["vocab"]
    # the same examples come back for the same indices
    x2, y2, _ = ds.collate([0, 1])
    x3, y3, _ = ds.collate([0, 1])
    assert torch.equal(x2, x3) and torch.equal(y2, y3)
    with pytest.raises(ValueError, match="split has 64 examples"):
        ds.collate([64])
    model = statespace.Model({"kind": "s4d", "d_model": 16, "n_layers": 1, "d_state": 16,
                              "pool": "none"}, **io)
    out = model(x)  # [B, classes, L]
    loss = F.cross_entropy(out, y)
    loss.backward()
    assert math.isfinite(loss.item())
