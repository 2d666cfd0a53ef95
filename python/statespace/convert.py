"""Weights to and from the reference PyTorch implementation of S4D (the state-spaces/s4 repository's
standalone ``S4D`` layer and the model of its ``example.py``). The names and parameterizations of both
sides are in ``docs/reference-interop.md``; in short, per layer (H channels, N/2 = M modes):

    reference                         statespace (a block's ``ssm.``)
    kernel.log_dt        [H]          kernel.log_dt            Δ = exp(log_dt)
    kernel.log_A_real    [H, M]       kernel.log_a_real        Re A = −exp(·)   (ours also ≤ −1e-4)
    kernel.A_imag        [H, M]       kernel.a_imag
    (no B: fused into C)              kernel.b_re = 1, kernel.b_im = 0
    kernel.C             [H, M, 2]    kernel.c_re, c_im [1, H, M]   (view_as_real of complex C)
    D                    [H]          d
    output_linear.0.weight [2H, H, 1] out.weight [2H, H]      Conv1d(H, 2H, 1), then GLU over channels
    output_linear.0.bias   [2H]       out.bias

Both compute K_l = 2·Re Σ_m C_m B_m (e^{ΔA_m} − 1)/A_m · e^{lΔA_m} (ZOH), y = GLU(W·GELU(K ∗ u + D·u) + b).
Exporting a trained statespace S4D folds our B into the reference's C (C ← C·B), which leaves K as it is.

The example model (``encoder`` Linear(d_input, H) on ``[B, L, d_input]``, ``s4_layers.i``, ``norms.i``
LayerNorm, residual, mean over length, ``decoder`` Linear(H, d_output)) with ``prenorm=False`` (its
default) is our post-norm model, ``y = norm(x + ssm(x))``, mean pooling; its pre-norm variant has no
final norm while ours does, so only the post-norm one converts exactly.
"""

import torch

from . import Model

_LAYER = ("kernel.log_dt", "kernel.log_A_real", "kernel.A_imag", "kernel.C", "D",
          "output_linear.0.weight", "output_linear.0.bias")


def _need(sd, prefix, keys):
    missing = [prefix + k for k in keys if prefix + k not in sd]
    if missing:
        raise KeyError(f"reference state_dict: missing {', '.join(missing)}")


def s4d_layer_to_ours(sd, prefix=""):
    """Our names (relative to a block's ``ssm.``) → tensors, from a reference S4D layer's state_dict
    (keys under ``prefix``)."""
    _need(sd, prefix, _LAYER)
    g = lambda k: sd[prefix + k].detach().to(torch.float32)
    c = g("kernel.C")
    if c.dim() != 3 or c.shape[-1] != 2:
        raise ValueError(f"{prefix}kernel.C: shape {tuple(c.shape)}, expected [H, N/2, 2]")
    h, m = c.shape[:2]
    w = g("output_linear.0.weight")
    if w.dim() == 3:
        w = w[..., 0]
    return {
        "kernel.log_dt": g("kernel.log_dt").reshape(h),
        "kernel.log_a_real": g("kernel.log_A_real").reshape(h, m),
        "kernel.a_imag": g("kernel.A_imag").reshape(h, m),
        "kernel.b_re": torch.ones(h, m),
        "kernel.b_im": torch.zeros(h, m),
        "kernel.c_re": c[..., 0].reshape(1, h, m).clone(),
        "kernel.c_im": c[..., 1].reshape(1, h, m).clone(),
        "d": g("D").reshape(h),
        "out.weight": w.reshape(2 * h, h).clone(),
        "out.bias": g("output_linear.0.bias").reshape(2 * h),
    }


def s4d_layer_from_ours(ours, prefix=""):
    """The reference S4D layer's state_dict from our tensors (names relative to a block's ``ssm.``,
    under ``prefix``); B is folded into C."""
    g = lambda k: ours[prefix + k].detach().to(torch.float32)
    c = torch.complex(g("kernel.c_re"), g("kernel.c_im"))
    if c.shape[0] != 1:
        raise ValueError("a bidirectional statespace layer has no reference S4D counterpart")
    c = c[0] * torch.complex(g("kernel.b_re"), g("kernel.b_im"))
    h = c.shape[0]
    return {
        "D": g("d").clone(),
        "kernel.log_dt": g("kernel.log_dt").clone(),
        "kernel.log_A_real": g("kernel.log_a_real").clone(),
        "kernel.A_imag": g("kernel.a_imag").clone(),
        "kernel.C": torch.view_as_real(c).clone(),
        "output_linear.0.weight": g("out.weight").reshape(2 * h, h, 1).clone(),
        "output_linear.0.bias": g("out.bias").clone(),
    }


def _layers(sd):
    idx = sorted({int(k.split(".")[1]) for k in sd if k.startswith("s4_layers.")})
    if idx != list(range(len(idx))) or not idx:
        raise KeyError("reference state_dict: no s4_layers.0 … (the example model's names)")
    return len(idx)


def example_model_to_ours(sd, *, prenorm=False, dropout=0.0, seed=0):
    """Our ``Model`` with the weights of the reference example model's state_dict (S4D layers,
    LayerNorm, mean pooling). ``prenorm`` must be what the example model was built with."""
    if prenorm:
        raise ValueError(
            "the example model's pre-norm variant has no final norm; statespace's pre-norm models "
            "have one, so only prenorm=False converts exactly")
    _need(sd, "", ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"))
    n_layers = _layers(sd)
    h, d_input = sd["encoder.weight"].shape
    d_output = sd["decoder.weight"].shape[0]
    m = sd["s4_layers.0.kernel.C"].shape[1]
    cfg = {"kind": "s4d", "d_model": int(h), "n_layers": n_layers, "d_state": int(2 * m),
           "norm": "layer", "prenorm": False, "pool": "mean", "glu": True, "disc": "zoh",
           "dropout": float(dropout)}
    model = Model(cfg, d_input=int(d_input), d_output=int(d_output), seed=seed)
    ours = {"encoder.weight": sd["encoder.weight"], "encoder.bias": sd["encoder.bias"],
            "decoder.weight": sd["decoder.weight"], "decoder.bias": sd["decoder.bias"]}
    for i in range(n_layers):
        for k, v in s4d_layer_to_ours(sd, f"s4_layers.{i}.").items():
            ours[f"blocks.{i}.ssm.{k}"] = v
        ours[f"blocks.{i}.norm.weight"] = sd[f"norms.{i}.weight"]
        ours[f"blocks.{i}.norm.bias"] = sd[f"norms.{i}.bias"]
    own = model.state_dict()
    extra = sorted(set(ours) - set(own))
    if extra:
        raise KeyError(f"no statespace tensor for {extra}")
    for k in own:
        if k not in ours:
            raise KeyError(f"the reference state_dict gives no value for {k}")
        if tuple(ours[k].shape) != tuple(own[k].shape):
            raise ValueError(f"{k}: shape {tuple(ours[k].shape)}, the model has {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in ours.items()})
    return model


def model_to_example(model):
    """The reference example model's state_dict from one of our post-norm S4D models."""
    cfg = model.config
    if cfg.get("kind") != "s4d" or cfg.get("prenorm", True) or cfg.get("norm") != "layer" \
            or cfg.get("pool") != "mean" or not cfg.get("glu", True) or cfg.get("bidirectional"):
        raise ValueError("only unidirectional post-norm LayerNorm S4D models with GLU and mean "
                         "pooling have a reference example-model counterpart")
    if cfg.get("disc", "zoh") != "zoh":
        raise ValueError("the reference S4D layer discretizes by ZOH")
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {k: sd[k].clone() for k in ("encoder.weight", "encoder.bias", "decoder.weight",
                                      "decoder.bias")}
    for i in range(cfg["n_layers"]):
        for k, v in s4d_layer_from_ours(sd, f"blocks.{i}.ssm.").items():
            out[f"s4_layers.{i}.{k}"] = v
        out[f"norms.{i}.weight"] = sd[f"blocks.{i}.norm.weight"].clone()
        out[f"norms.{i}.bias"] = sd[f"blocks.{i}.norm.bias"].clone()
    return out
