"""Interop with the reference S4D: a state_dict written by a PyTorch S4D model with the reference names
(tests/reference_s4d.py, from the paper's formulas) converts to a statespace model with the same outputs
(≤ 1e-5 relative), and the export loads back into that PyTorch model with the same outputs."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_s4d as ref  # noqa: E402
import statespace  # noqa: E402
from statespace import convert  # noqa: E402


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_reference_example_model_converts_and_exports(tmp_path):
    torch.manual_seed(0)
    net = ref.Example(d_input=3, d_output=5, h=16, n_layers=2, n=32).eval()
    path = tmp_path / "ref.pt"
    torch.save(net.state_dict(), path)
    model = convert.example_model_to_ours(torch.load(path)).eval()
    x = torch.randn(4, 60, 3)
    with torch.no_grad():
        want = net(x)
        got = model(x.transpose(1, 2).contiguous())  # ours: [B, d_in, L]
    err = rel(got, want)
    print(f"reference → statespace: max rel {err:.2e}")
    assert err <= 1e-5
    # export: a fresh PyTorch model loads our weights and gives our outputs
    back = ref.Example(d_input=3, d_output=5, h=16, n_layers=2, n=32).eval()
    back.load_state_dict(convert.model_to_example(model))
    with torch.no_grad():
        err2 = rel(back(x), got)
    print(f"statespace → reference: max rel {err2:.2e}")
    assert err2 <= 1e-5


def test_export_folds_our_b_into_c():
    torch.manual_seed(1)
    cfg = {"kind": "s4d", "d_model": 8, "n_layers": 1, "d_state": 16, "norm": "layer",
           "prenorm": False, "pool": "mean"}
    model = statespace.Model(cfg, d_input=2, d_output=3, seed=4).eval()
    with torch.no_grad():  # a B that is not 1, as training leaves it
        model.get_parameter("blocks.0.ssm.kernel.b_re").mul_(1.7)
        model.get_parameter("blocks.0.ssm.kernel.b_im").add_(0.3)
    net = ref.Example(d_input=2, d_output=3, h=8, n_layers=1, n=16).eval()
    net.load_state_dict(convert.model_to_example(model))
    x = torch.randn(2, 40, 2)
    with torch.no_grad():
        assert rel(net(x), model(x.transpose(1, 2).contiguous())) <= 1e-5


def test_prenorm_and_missing_keys_are_clear_errors():
    net = ref.Example(d_input=1, d_output=2, h=4, n_layers=1, n=8)
    with pytest.raises(ValueError, match="pre-norm"):
        convert.example_model_to_ours(net.state_dict(), prenorm=True)
    sd = net.state_dict()
    del sd["s4_layers.0.kernel.C"]
    with pytest.raises(KeyError, match="kernel.C"):
        convert.example_model_to_ours(sd)


import reference_s4 as ref4  # noqa: E402


@pytest.mark.parametrize("rank, n_ssm", [(1, 4), (2, 8)])
def test_reference_s4_example_model_converts_and_exports(tmp_path, rank, n_ssm):
    torch.manual_seed(2)
    net = ref4.Example(d_input=3, d_output=5, h=8, n_layers=2, n=16, n_ssm=n_ssm, rank=rank).eval()
    x = torch.randn(3, 48, 3)
    with torch.no_grad():
        want = net(x)  # the first forward sets C̃ and l_kernel = 48, as the reference does
    assert int(net.s4_layers[0].layer.kernel.l_kernel) == 48
    path = tmp_path / "ref4.pt"
    torch.save(net.state_dict(), path)
    model = convert.example_model_to_ours(torch.load(path)).eval()
    assert model.config["kind"] == "s4" and model.config["n_ssm"] == n_ssm
    for length in (48, 30):
        with torch.no_grad():
            w = want if length == 48 else net(x[:, :length])
            got = model(x[:, :length].transpose(1, 2).contiguous())
        err = rel(got, w)
        print(f"reference S4 (rank {rank}, n_ssm {n_ssm}) → statespace at L {length}: max rel {err:.2e}")
        assert err <= 1e-5
    back = ref4.Example(d_input=3, d_output=5, h=8, n_layers=2, n=16, n_ssm=n_ssm, rank=rank).eval()
    back.load_state_dict(convert.model_to_example(model))
    with torch.no_grad():
        err2 = rel(back(x), model(x.transpose(1, 2).contiguous()))
    print(f"statespace → reference S4: max rel {err2:.2e}")
    assert err2 <= 1e-5


def test_a_reference_s4_block_that_never_ran_converts_for_a_given_length():
    torch.manual_seed(3)
    blk = ref4.S4Block(8, 16, n_ssm=2, rank=2, bidirectional=True, seed=5).eval()
    sd = {k: v.clone() for k, v in blk.state_dict().items()}  # l_kernel = 0: C is the raw C
    with pytest.raises(ValueError, match="never ran"):
        convert.s4_block_to_ours(sd)
    ours, shape = convert.s4_block_to_ours(sd, length=40)
    assert shape == dict(d_model=8, d_state=16, n_ssm=2, rank=2, bidirectional=True, kernel_len=40)
    layer = statespace.S4(8, 16, bidirectional=True, n_ssm=2, init="legt", seq_len=40).eval()
    layer.load_state_dict({k: v for k, v in ours.items() if not k.startswith("out.")})
    u = torch.randn(2, 8, 40)
    with torch.no_grad():
        want = blk.layer(u)  # FFTConv: GELU(K ∗ u + D·u); its first forward makes C̃ for 40
        got = torch.nn.functional.gelu(layer(u))
    err = rel(got, want)
    print(f"never-run reference S4 block (bidirectional, rank 2) → statespace layer: max rel {err:.2e}")
    assert err <= 1e-5


def test_s4_shapes_without_a_counterpart_are_clear_errors():
    blk = ref4.S4Block(8, 16, n_ssm=8, rank=1)
    sd = dict(blk.state_dict())
    sd["layer.kernel.inv_dt"] = torch.zeros(8, 8)
    with pytest.raises(ValueError, match="dt_tie"):
        convert.s4_block_to_ours(sd, length=16)
    sd = dict(blk.state_dict())
    sd["layer.D"] = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="layer.D"):
        convert.s4_block_to_ours(sd, length=16)
