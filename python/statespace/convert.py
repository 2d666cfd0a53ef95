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

The reference S4 (DPLR) block, v4 ``S4Block`` (``layer`` = FFTConv with ``kernel`` = SSMKernelDPLR, then
``output_linear``), S copies of the SSM (``n_ssm``; channel h uses copy h mod S), rank r:

    layer.kernel.inv_dt   [H, 1]        kernel.log_dt            Δ = exp(·) (dt_transform "exp")
    layer.kernel.A_real   [S, M]        kernel.log_lambda_real   Re Λ = −exp(·)
    layer.kernel.A_imag   [S, M]        kernel.lambda_imag       reference Im A = −A_imag; ours Im Λ = +·
    layer.kernel.P        [r, S, M, 2]  kernel.p_re, p_im [S, r, M]   conjugated
    layer.kernel.B        [1, S, M, 2]  kernel.b_re, b_im [S, M]      conjugated
    layer.kernel.C        [c, H, M, 2]  kernel.c_re, c_im [c, H, M]   C̃ = C(I − Ā^L), conjugated
    layer.kernel.l_kernel []            kernel.kernel_len [1]         the L of C̃
    layer.D               [1, H]        d
    output_linear.0.*     Linear(H, 2H) out.*

The reference keeps the half Im A ≤ 0 and statespace the half Im Λ ≥ 0: conjugating Λ, P, B and C̃
together gives the same completed system (its modes permuted), so the kernel is the same. A reference
block that never ran (``l_kernel = 0``) holds the raw C; converting it needs the length its C̃ is for
(``length``), computed here in complex128. Rank 1 converts as ``init = "legs"``, rank 2 as ``"legt"``
(our rank follows the init's measure; the weights replace the init).

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


_S4 = ("layer.kernel.inv_dt", "layer.kernel.A_real", "layer.kernel.A_imag", "layer.kernel.P",
       "layer.kernel.B", "layer.kernel.C", "layer.D", "output_linear.0.weight", "output_linear.0.bias")


def _cplx(t):
    return torch.view_as_complex(t.detach().to(torch.float64).contiguous())


def _c_tilde(a, p, c, dt, length):
    """C̃ = C(I − Ā^L) of the completed bilinear system, kept half, complex128. ``a`` [H, M] (any
    kept half), ``p`` [r, H, M], ``c`` [ch, H, M], ``dt`` [H]; Ā = (I − Δ/2·A)⁻¹(I + Δ/2·A) with
    A = diag([a; ā]) − [p; p̄][p; p̄]ᴴ."""
    lam = torch.cat([a, a.conj()], -1)
    pf = torch.cat([p, p.conj()], -1)
    full = torch.diag_embed(lam) - torch.einsum("rhn,rhk->hnk", pf, pf.conj())
    eye = torch.eye(lam.shape[-1], dtype=torch.complex128)
    half = dt.to(torch.float64)[:, None, None] / 2
    abar = torch.linalg.solve(eye - half * full, eye + half * full)
    cf = torch.cat([c, c.conj()], -1)
    ct = torch.einsum("chn,hnk->chk", cf, eye - torch.linalg.matrix_power(abar, length))
    return ct[..., : a.shape[-1]]


def s4_block_to_ours(sd, prefix="", length=None):
    """``(tensors, shape)`` from a reference S4 block's state_dict (keys under ``prefix``): our names
    relative to a block's ``ssm.`` → tensors (``kernel.kernel_len`` included), and ``shape`` =
    dict(d_model, d_state, n_ssm, rank, bidirectional, kernel_len). ``length``: the length C̃ is to be
    for when the block never ran (``l_kernel`` 0); ignored otherwise."""
    _need(sd, prefix, _S4)
    g = lambda k: sd[prefix + k].detach()
    inv_dt, a_real, a_imag = g("layer.kernel.inv_dt"), g("layer.kernel.A_real"), g("layer.kernel.A_imag")
    p, b, c, d = g("layer.kernel.P"), g("layer.kernel.B"), g("layer.kernel.C"), g("layer.D")
    h = inv_dt.shape[0]
    s, m = a_real.shape
    if inv_dt.dim() != 2 or inv_dt.shape[1] != 1:
        raise ValueError(f"{prefix}layer.kernel.inv_dt: shape {tuple(inv_dt.shape)}; only dt_tie=True "
                         "([H, 1]) has a statespace counterpart")
    if p.dim() != 4 or p.shape[1:] != (s, m, 2):
        raise ValueError(f"{prefix}layer.kernel.P: shape {tuple(p.shape)}, expected [rank, {s}, {m}, 2]")
    if b.shape != (1, s, m, 2):
        raise ValueError(f"{prefix}layer.kernel.B: shape {tuple(b.shape)}, expected [1, {s}, {m}, 2]")
    if c.dim() != 4 or c.shape[0] not in (1, 2) or c.shape[1:] != (h, m, 2):
        raise ValueError(f"{prefix}layer.kernel.C: shape {tuple(c.shape)}, expected [1 or 2, {h}, {m}, 2] "
                         "(channels = 1)")
    if d.shape != (1, h):
        raise ValueError(f"{prefix}layer.D: shape {tuple(d.shape)}; only [1, H] (channels = 1, no GLU "
                         "activation in FFTConv) has a statespace counterpart")
    if h % s:
        raise ValueError(f"{prefix}: n_ssm = {s} does not divide d_model = {h}")
    rank = p.shape[0]
    if rank not in (1, 2):
        raise ValueError(f"{prefix}layer.kernel.P: rank {rank}; statespace's S4 has rank 1 or 2")
    lk = int(sd[prefix + "layer.kernel.l_kernel"]) if prefix + "layer.kernel.l_kernel" in sd else 0
    cc = _cplx(c)
    if lk == 0:
        if not length:
            raise ValueError(f"{prefix}layer.kernel.l_kernel is 0 (the block never ran: C is the raw C); "
                             "give length= the sequence length to convert it for")
        copy = torch.arange(h) % s
        a = -torch.exp(a_real.double()) - 1j * a_imag.double()
        cc = _c_tilde(a[copy], _cplx(p)[:, copy], cc, torch.exp(inv_dt[:, 0].double()), int(length))
        lk = int(length)
    pc, bc, cc = _cplx(p).conj(), _cplx(b)[0].conj(), cc.conj()
    f = lambda t: t.to(torch.float32).contiguous().clone()
    ours = {
        "kernel.log_dt": f(inv_dt[:, 0]),
        "kernel.log_lambda_real": f(a_real),
        "kernel.lambda_imag": f(a_imag),
        "kernel.p_re": f(pc.real.permute(1, 0, 2)),
        "kernel.p_im": f(pc.imag.permute(1, 0, 2)),
        "kernel.b_re": f(bc.real),
        "kernel.b_im": f(bc.imag),
        "kernel.c_re": f(cc.real),
        "kernel.c_im": f(cc.imag),
        "kernel.kernel_len": torch.tensor([float(lk)]),
        "d": f(d[0]),
        "out.weight": f(g("output_linear.0.weight").reshape(2 * h, h)),
        "out.bias": f(g("output_linear.0.bias")),
    }
    shape = dict(d_model=h, d_state=2 * m, n_ssm=s, rank=rank, bidirectional=c.shape[0] == 2,
                 kernel_len=lk)
    return ours, shape


def s4_block_from_ours(ours, prefix="", length=None):
    """A reference S4 block's state_dict from our tensors (names relative to a block's ``ssm.``, under
    ``prefix``). A layer that never ran (``kernel_len`` 0) takes its C̃ as being for ``length``."""
    g = lambda k: ours[prefix + k].detach().to(torch.float64)
    lk = int(round(float(g("kernel.kernel_len").reshape(-1)[0]))) if prefix + "kernel.kernel_len" in ours else 0
    if lk == 0:
        if not length:
            raise ValueError(f"{prefix}kernel.kernel_len is 0 (the layer never ran); give length= the "
                             "sequence length its C̃ is for")
        lk = int(length)
    p = torch.complex(g("kernel.p_re"), g("kernel.p_im")).conj().permute(1, 0, 2)   # [r, S, M]
    b = torch.complex(g("kernel.b_re"), g("kernel.b_im")).conj()[None]              # [1, S, M]
    c = torch.complex(g("kernel.c_re"), g("kernel.c_im")).conj()                    # [c, H, M]
    r = lambda z: torch.view_as_real(z.resolve_conj().contiguous()).to(torch.float32).clone()
    h = c.shape[1]
    return {
        "layer.kernel.inv_dt": g("kernel.log_dt").to(torch.float32)[:, None].clone(),
        "layer.kernel.A_real": g("kernel.log_lambda_real").to(torch.float32).clone(),
        "layer.kernel.A_imag": g("kernel.lambda_imag").to(torch.float32).clone(),
        "layer.kernel.P": r(p),
        "layer.kernel.B": r(b),
        "layer.kernel.C": r(c),
        "layer.kernel.l_kernel": torch.tensor(lk),
        "layer.D": g("d").to(torch.float32)[None].clone(),
        "output_linear.0.weight": g("out.weight").to(torch.float32).reshape(2 * h, h).clone(),
        "output_linear.0.bias": g("out.bias").to(torch.float32).clone(),
    }


def _layers(sd):
    idx = sorted({int(k.split(".")[1]) for k in sd if k.startswith("s4_layers.")})
    if idx != list(range(len(idx))) or not idx:
        raise KeyError("reference state_dict: no s4_layers.0 … (the example model's names)")
    return len(idx)


def example_model_to_ours(sd, *, prenorm=False, dropout=0.0, seed=0, length=None):
    """Our ``Model`` with the weights of the reference example model's state_dict (its S4D layers,
    or S4Block (DPLR) layers swapped in; LayerNorm, mean pooling). ``prenorm`` must be what the
    example model was built with; ``length`` as in ``s4_block_to_ours`` (S4 blocks that never ran)."""
    if prenorm:
        raise ValueError(
            "the example model's pre-norm variant has no final norm; statespace's pre-norm models "
            "have one, so only prenorm=False converts exactly")
    _need(sd, "", ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"))
    n_layers = _layers(sd)
    h, d_input = sd["encoder.weight"].shape
    d_output = sd["decoder.weight"].shape[0]
    common = {"d_model": int(h), "n_layers": n_layers, "norm": "layer", "prenorm": False,
              "pool": "mean", "glu": True, "dropout": float(dropout)}
    blocks = []
    if "s4_layers.0.layer.kernel.P" in sd:
        for i in range(n_layers):
            blocks.append(s4_block_to_ours(sd, f"s4_layers.{i}.", length))
        shapes = {k: v for k, v in blocks[0][1].items() if k != "kernel_len"}
        for i, (_, sh) in enumerate(blocks):
            if {k: v for k, v in sh.items() if k != "kernel_len"} != shapes:
                raise ValueError(f"s4_layers.{i}: its S4 shape {sh} differs from s4_layers.0's {shapes}")
        if shapes["bidirectional"]:
            raise ValueError("the example model's layers are unidirectional")
        cfg = dict(common, kind="s4", d_state=shapes["d_state"], n_ssm=shapes["n_ssm"],
                   init="legs" if shapes["rank"] == 1 else "legt")
        seq_len = max(sh["kernel_len"] for _, sh in blocks)
        blocks = [t for t, _ in blocks]
    else:
        m = sd["s4_layers.0.kernel.C"].shape[1] if "s4_layers.0.kernel.C" in sd else 0
        cfg = dict(common, kind="s4d", d_state=int(2 * m), disc="zoh")
        seq_len = 0
        blocks = [s4d_layer_to_ours(sd, f"s4_layers.{i}.") for i in range(n_layers)]
    model = Model(cfg, d_input=int(d_input), d_output=int(d_output), seed=seed, seq_len=seq_len)
    ours = {"encoder.weight": sd["encoder.weight"], "encoder.bias": sd["encoder.bias"],
            "decoder.weight": sd["decoder.weight"], "decoder.bias": sd["decoder.bias"]}
    for i in range(n_layers):
        for k, v in blocks[i].items():
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


def model_to_example(model, length=None):
    """The reference example model's state_dict from one of our post-norm S4D or S4 models (S4 layers
    as S4Blocks; ``length`` as in ``s4_block_from_ours``)."""
    cfg = model.config
    kind = cfg.get("kind")
    if kind not in ("s4d", "s4") or cfg.get("prenorm", True) or cfg.get("norm") != "layer" \
            or cfg.get("pool") != "mean" or not cfg.get("glu", True) or cfg.get("bidirectional"):
        raise ValueError("only unidirectional post-norm LayerNorm S4D or S4 models with GLU and mean "
                         "pooling have a reference example-model counterpart")
    if kind == "s4d" and cfg.get("disc", "zoh") != "zoh":
        raise ValueError("the reference S4D layer discretizes by ZOH")
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {k: sd[k].clone() for k in ("encoder.weight", "encoder.bias", "decoder.weight",
                                      "decoder.bias")}
    for i in range(cfg["n_layers"]):
        layer = (s4d_layer_from_ours(sd, f"blocks.{i}.ssm.") if kind == "s4d"
                 else s4_block_from_ours(sd, f"blocks.{i}.ssm.", length))
        for k, v in layer.items():
            out[f"s4_layers.{i}.{k}"] = v
        out[f"norms.{i}.weight"] = sd[f"blocks.{i}.norm.weight"].clone()
        out[f"norms.{i}.bias"] = sd[f"blocks.{i}.norm.bias"].clone()
    return out
