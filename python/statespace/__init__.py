"""statespace: structured state space sequence models (S4, S4D, S5, S4-PTD, S5-PTD, SGConv, HOPE) as
``torch.nn.Module``s.

The models are statespace's torch engine (written in Rust on libtorch through tch): the parameters are
ordinary Python-owned ``nn.Parameter``s, named as in statespace's checkpoints
(``blocks.0.ssm.kernel.log_dt``, …), handed to the Rust-built forward on every call — so autograd,
``.to(device)``, ``state_dict()``, optimizers and DistributedDataParallel treat a model like any other.
Inits are statespace-math's (the same HiPPO / DPLR / PTD numbers as the CLI's runs), and a model reads
and writes the CLI's run directories.

    import torch, statespace
    model = statespace.Model({"kind": "s4d", "d_model": 64, "n_layers": 4, "d_state": 64},
                             d_input=1, d_output=10)
    out = model(torch.randn(8, 1, 784))          # [batch, d_input, length] → [batch, classes]
"""

import torch  # libtorch is loaded before the extension that links it
from torch import nn

from . import _native

__all__ = ["Model", "Layer", "S4D", "S4", "S5", "SGConv", "HOPE", "S4PTD", "S5PTD"]


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"model config: {type(v).__name__} values are not supported ({v!r})")


def _model_toml(config):
    """A ``[model]`` table as TOML text: from TOML text itself, or a dict (sub-tables as dicts)."""
    if isinstance(config, str):
        return config
    if not isinstance(config, dict):
        raise TypeError("config: a dict or the TOML text of a [model] table")
    lines, tables = [], []
    for k, v in config.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, t in tables:
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in t.items())
    return "\n".join(lines) + "\n"


class _Node(nn.Module):
    """A container in the dotted name tree (``blocks`` → ``0`` → ``ssm`` → ``kernel``)."""


def _child(root, path):
    node = root
    for part in path:
        if part not in node._modules:
            node.add_module(part, _Node())
        node = node._modules[part]
    return node


class _Bound(nn.Module):
    """Holds a native model and registers its parameters and buffers under their dotted names."""

    def _attach(self, native, rename=lambda name: name):
        """Registers each parameter and buffer as ``rename(name)`` (None: kept as a fixed tensor,
        not trained — the parts of the native model a lone layer does not use)."""
        self._native = native
        self._pnames = native.param_names()
        self._bnames = native.buffer_names()
        self._local, self._fixed = {}, {}
        for names, values, register in (
            (self._pnames, native.param_values(),
             lambda node, leaf, v: node.register_parameter(leaf, nn.Parameter(v))),
            (self._bnames, native.buffer_values_now(),
             lambda node, leaf, v: node.register_buffer(leaf, v)),
        ):
            for name, value in zip(names, values):
                local = rename(name)
                if local is None:
                    self._fixed[name] = value
                    continue
                *path, leaf = local.split(".")
                register(_child(self, path), leaf, value)
                self._local[name] = local
        self._step = 0

    def _tensor(self, name, device, dtype, buffer):
        local = self._local.get(name)
        if local is not None:
            return self.get_buffer(local) if buffer else self.get_parameter(local)
        t = self._fixed[name]
        if t.device != device or t.dtype != dtype:
            t = self._fixed[name] = t.to(device=device, dtype=dtype)
        return t

    def _tensors(self, device, dtype):
        return ([self._tensor(n, device, dtype, False) for n in self._pnames],
                [self._tensor(n, device, dtype, True) for n in self._bnames])

    def _store_buffers(self, new):
        with torch.no_grad():
            for n, b in zip(self._bnames, new):
                local = self._local.get(n)
                if local is None:
                    self._fixed[n] = b
                else:
                    old = self.get_buffer(local)
                    if b.data_ptr() != old.data_ptr():
                        old.copy_(b)

    def _seed(self):
        """Dropout's seed: a counter of training calls (a resumed run sets ``dropout_step``)."""
        s = self._step
        if self.training:
            self._step += 1
        return s

    @property
    def dropout_step(self):
        return self._step

    @dropout_step.setter
    def dropout_step(self, value):
        self._step = int(value)

    def param_groups(self):
        """``{group: [names]}`` of statespace's optimizer groups (weight, no_decay, ssm_a, ssm_b,
        ssm_dt): the SSM parameters take their own learning rate and no weight decay."""
        out = {}
        for n, g in zip(self._pnames, self._native.param_groups()):
            if n in self._local:
                out.setdefault(g, []).append(self._local[n])
        return out


class _Kernel(torch.autograd.Function):
    """One layer's kernel ``K [dirs, H, L]`` in two phases: made without autograd in chunks, and in
    the backward its parameters' gradients recomputed chunk by chunk from ``dK`` — so no kernel's
    ``[H, N, L]`` intermediates are kept between forward and backward (the torch engine's two-phase
    backward, inside Python's autograd; DDP's hooks see the gradients as usual)."""

    @staticmethod
    def forward(ctx, model, prefix, length, *kparams):
        params, buffers = model._tensors(kparams[0].device, kparams[0].dtype)
        k, new = model._native.make_kernel(params, buffers, prefix, length)
        model._store_buffers(new)
        ctx.model, ctx.prefix, ctx.length = model, prefix, length
        return k

    @staticmethod
    def backward(ctx, dk):
        m = ctx.model
        ref = next(m.parameters())
        params, buffers = m._tensors(ref.device, ref.dtype)
        params = [p.detach() for p in params]
        grads = m._native.kernel_grads(params, buffers, ctx.prefix, ctx.length, dk.contiguous())
        return (None, None, None, *grads)


class Model(_Bound):
    """A statespace model (encoder → residual SSM blocks → pooling → decoder).

    ``config`` is the ``[model]`` table of a run config, as a dict or as TOML text (every field of
    ``statespace train --help``; unknown fields are errors). ``d_input`` real input channels (or
    ``vocab`` > 0 for token ids), ``d_output`` classes or targets, ``pair`` the two-tower head of
    LRA Retrieval. ``seq_len`` fixes the length the layers are built for where a kind needs it
    (SGConv, S4's kernel length). The init is statespace's, from ``seed``.

    ``forward(x, lengths=None)``: ``x`` ``[batch, d_input, length]`` (float) or ``[batch, length]``
    (token ids); ``lengths`` the valid length of each example (padding masked, BatchNorm statistics
    over valid positions). Returns ``[batch, d_output]`` (or ``[batch, d_output, length]`` without
    pooling).
    """

    def __init__(self, config=None, *, d_input=1, vocab=0, d_output=10, pair=False, seed=0,
                 seq_len=0, _native_model=None):
        super().__init__()
        if _native_model is None:
            if config is None:
                raise TypeError("Model(config, …): a [model] table (dict or TOML text)")
            _native_model = _native.Native.from_config(
                _model_toml(config), d_input, vocab, d_output, pair, seed, seq_len)
        self._attach(_native_model)

    @classmethod
    def from_run(cls, path):
        """The model of a ``statespace train`` run directory (its best.safetensors) or checkpoint."""
        return cls(_native_model=_native.Native.from_checkpoint(str(path)))

    @property
    def run_config(self):
        """The run config (a dict) of a model read from a run, else None."""
        import json

        text = self._native.run_config()
        return None if text is None else json.loads(text)

    @property
    def config(self):
        """The model config (a dict)."""
        import json

        return json.loads(self._native.model_config())

    #: Training forwards make each kernel in two phases (``_Kernel``): memory O(H·L) per kernel
    #: instead of the O(H·N·L) of one autograd graph through it (the Path-X sizes need this).
    two_phase = True

    def forward(self, x, lengths=None, seed=None):
        """``seed`` (training mode): dropout's seed for this call instead of the call counter's."""
        ref = next(self.parameters())
        kernels = None
        if self.training and self.two_phase and torch.is_grad_enabled():
            length = x.shape[-1]
            kernels = {kp: _Kernel.apply(self, kp, length,
                                         *[self._tensor(n, ref.device, ref.dtype, False) for n in names])
                       for kp, names in self._native.kernel_params()}
        params, buffers = self._tensors(ref.device, ref.dtype)
        step = self._seed()
        out, new = self._native.forward(params, buffers, x, list(lengths or []), self.training,
                                        step if seed is None else int(seed), kernels)
        self._store_buffers(new)
        return out

    def save(self, path, run_config=None):
        """Writes the weights (and buffers) as a statespace checkpoint at ``path`` (a file, or a
        directory: its best.safetensors), readable by ``statespace eval`` and ``Model.from_run``.
        ``run_config`` (a dict as ``run_config`` returns, or the TOML text of a run config) defaults
        to the run config the model was read with; its ``[model]`` table must be this model's."""
        import json, os

        path = str(path)
        if os.path.isdir(path) or not path.endswith(".safetensors"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, "best.safetensors")
        cpu = torch.device("cpu")
        params, buffers = self._tensors(cpu, torch.float32)
        params = [p.detach().to(cpu, torch.float32) for p in params]
        buffers = [b.detach().to(cpu, torch.float32) for b in buffers]
        if run_config is None:
            rc = None
        elif isinstance(run_config, str):
            rc = _native.run_config_json(run_config)
        else:
            rc = json.dumps(run_config)
        self._native.save(params, buffers, path, rc)

    def stream(self, batch=1):
        """A streaming runner on the CPU engine's recurrent runtime (causal models): ``step(x)`` takes
        ``[batch, d_input]`` reals or ``[batch]`` token ids and returns ``[batch, d_output]``, the
        output as if each sequence ended at that step. It copies the weights as they are now."""
        cpu = torch.device("cpu")
        params, buffers = self._tensors(cpu, torch.float32)
        params = [p.detach().to(cpu, torch.float32) for p in params]
        buffers = [b.detach().to(cpu, torch.float32) for b in buffers]
        return self._native.stream(params, buffers, batch)

    def cpu_reference(self, x, dout, lengths=None, train=True, seed=0):
        """The CPU engine's output and parameter gradients (float64 lists) for ``x`` and the output
        gradient ``dout``, from this model's parameters: the reference of the parity tests."""
        cpu = torch.device("cpu")
        params, buffers = self._tensors(cpu, torch.float32)
        params = [p.detach().to(cpu) for p in params]
        buffers = [b.detach().to(cpu) for b in buffers]
        return self._native.cpu_reference(params, buffers, x.detach().cpu(), list(lengths or []),
                                          dout.detach().cpu(), train, seed)


class Layer(_Bound):
    """One SSM layer on its own, for users' own models: ``u [batch, H, length] → y = K ∗ u + D·u``
    (bidirectional: both directions' kernels), as the S4 papers' standalone layers (without their
    activation and output projection). Parameters: ``kernel.*`` and ``d`` with statespace's names
    and parameterizations; extra fields of the ``[model]`` table go in ``**config``."""

    kind = None

    def __init__(self, d_model, d_state=64, *, bidirectional=False, seq_len=0, seed=0, **config):
        super().__init__()
        cfg = dict(kind=self.kind, d_model=d_model, n_layers=1, d_state=d_state,
                   bidirectional=bidirectional, **config)
        native = _native.Native.from_config(_model_toml(cfg), 1, 0, 1, False, seed, seq_len)
        prefix = "blocks.0.ssm."
        # the kernel and D; the block's output projection (``out.*``) is not part of the layer
        self._attach(native, lambda n: n[len(prefix):]
                     if n.startswith(prefix) and not n.startswith(prefix + "out.") else None)

    #: As ``Model.two_phase``: training forwards make the kernel in two phases (memory O(H·L)).
    two_phase = True

    def forward(self, u):
        kernels = None
        if self.training and self.two_phase and torch.is_grad_enabled():
            kernels = {kp: _Kernel.apply(self, kp, u.shape[-1],
                                         *[self._tensor(n, u.device, u.dtype, False) for n in names])
                       for kp, names in self._native.kernel_params()}
        params, buffers = self._tensors(u.device, u.dtype)
        y, new = self._native.sequence_map(params, buffers, "blocks.0.ssm", u, kernels)
        self._store_buffers(new)
        return y + u * self.d.reshape(1, -1, 1)


class S4D(Layer):
    """S4D (diagonal; ZOH by default, ``disc="bilinear"``; inits ``init="legs"|"inv"|"lin"|"real"``)."""

    kind = "s4d"


class S4(Layer):
    """S4 (DPLR: Cauchy kernel + Woodbury at the roots of unity, C̃)."""

    kind = "s4"


class S5(Layer):
    """S5 (MIMO diagonal state space, the scan as an FFT convolution per state)."""

    kind = "s5"


class S4PTD(Layer):
    """S4-PTD (perturb-then-diagonalize init of HiPPO-LegS)."""

    kind = "s4-ptd"


class S5PTD(Layer):
    """S5-PTD."""

    kind = "s5-ptd"


class SGConv(Layer):
    """SGConv (upsampled, decaying sub-kernels; needs ``seq_len``)."""

    kind = "sgconv"


class HOPE(Layer):
    """HOPE (Markov parameters of the Hankel operator)."""

    kind = "hope"
