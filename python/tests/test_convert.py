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
