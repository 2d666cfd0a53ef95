//! The backbone on libtorch, the same model as `statespace-core`'s `model/backbone.rs`:
//!
//! ```text
//! SSM layer   u [B,H,L] → c = map(u) + D·u → GELU → dropout → linear H→2H → GLU → [B,H,L]
//! block       pre-norm:  x + ssm(norm(x))          post-norm:  norm(x + ssm(x))
//! model       encoder (linear d_in→H, or embedding) → blocks → [final norm if pre-norm]
//!             → pool (mean | last | none) → decoder (linear H→d_out)   (pair: [u, v, u∗v, u−v] → MLP)
//! ```
//! Padded positions (`l ≥ lengths[b]`) are zeroed at every sequence map's input, left out of
//! BatchNorm's statistics (masked reductions) and of pooling, as on the CPU engine. Parameters are
//! leaf tensors with `requires_grad`, named and shaped as `docs/checkpoint-format.md`; a model is
//! built from a CPU [`Model`] (so the inits are `statespace-math`'s) and written back into one (so
//! checkpoints are the CPU engine's format, written by its writer).

use crate::kernels::{self, KernelCtx, Named};
use crate::tensor::{from_f64, to_f64};
use crate::{Error, Result, dropout};
use statespace_core::Float;
use statespace_core::engine::layers::{Pool, splitmix64};
use statespace_core::engine::params::ParamKind;
use statespace_core::model::{IoShape, LayerKind, Model, ModelConfig, NormKind};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Options of the torch engine.
#[derive(Debug, Clone, Copy)]
pub struct TorchOptions {
    /// Kernel generation (and S5's scan) in f64, the result rounded to the model's dtype once (the
    /// CPU engine's choice; default true). False: in the model's dtype, as the reference PyTorch code.
    pub kernel_f64: bool,
    /// The two-phase backward of the kernels in training (default true): each kernel `K` is made
    /// without autograd and enters the graph as a leaf; [`TorchModel::backward`] then recomputes it
    /// chunk by chunk with autograd and back-propagates each chunk's `dK`, so the kernel's
    /// intermediates (`[H, M, L]` Vandermonde, `[H, N, L/2]` Cauchy matrix) never live whole. False:
    /// one autograd graph through the whole kernel (memory `O(H·N·L)` per layer).
    pub two_phase: bool,
    /// The largest intermediate a kernel chunk of the two-phase backward may make (bytes).
    pub chunk_bytes: usize,
    /// Mixed precision (`--precision bf16`): the linear layers (encoder, each block's output
    /// projection, decoder) multiply in bfloat16 — inputs and weights rounded to bf16, products
    /// accumulated by the backend in f32 — while the parameters, optimizer state, kernels, FFT
    /// convolutions, norms, GELU/GLU and the loss stay in the model's dtype: the op lists of
    /// PyTorch's autocast for these operations, written as explicit casts (libtorch's C API in tch
    /// enables autocast only with its float16 default, not bf16). Default false.
    pub bf16_matmul: bool,
}

impl Default for TorchOptions {
    fn default() -> Self {
        Self {
            kernel_f64: true,
            two_phase: true,
            chunk_bytes: 64 << 20,
            bf16_matmul: false,
        }
    }
}

/// A kernel that entered the graph as a leaf in the last training forward.
#[derive(Debug)]
struct Pending {
    /// The kernel's parameter prefix (`blocks.i.ssm.kernel`).
    prefix: String,
    /// `K [dirs, H, L]` (leaf; its gradient is `dK` after the graph's backward).
    leaf: Tensor,
    len: usize,
}

/// A batch of inputs on the model's device.
#[derive(Debug)]
pub enum TorchInput {
    /// Real values `[B, d_input, L]`.
    Real(Tensor),
    /// Token ids `[B, L]` (int64).
    Tokens(Tensor),
}

impl TorchInput {
    /// `(batch, len)` of the input (sequences: a pair task counts both towers).
    pub fn dims(&self) -> (usize, usize) {
        let s = match self {
            TorchInput::Real(t) | TorchInput::Tokens(t) => t.size(),
        };
        (s[0] as usize, *s.last().unwrap_or(&0) as usize)
    }
}

/// A model on libtorch: configuration, parameters (leaves), buffers.
#[derive(Debug)]
pub struct TorchModel {
    /// The model configuration.
    pub cfg: ModelConfig,
    /// Input and output shape.
    pub io: IoShape,
    /// Real dtype of parameters and activations (`Kind::Float` or `Kind::Double`).
    pub kind: Kind,
    /// The device.
    pub device: Device,
    /// Options.
    pub opts: TorchOptions,
    /// Trainable parameters by name (leaves with `requires_grad`).
    pub params: Named,
    /// Each parameter's optimizer group.
    pub groups: HashMap<String, ParamKind>,
    /// Non-trainable state by name (BatchNorm running statistics, S4's `kernel_len`, SGConv's
    /// `kernel_norm`).
    pub buffers: Named,
    /// Kernels of the last training forward awaiting the second phase of the backward.
    pending: Vec<Pending>,
    /// The current forward makes its kernels as leaves (training with `two_phase`).
    leaves: bool,
    /// Valid positions of the current batch (Σ_b lengths[b]): BatchNorm's count, known on the host.
    valid_count: usize,
    /// Kernels `K [dirs, H, L]` supplied by the caller for the next forward, by kernel prefix
    /// (`blocks.i.ssm.kernel`): the Python package makes them in a custom autograd function whose
    /// backward is [`TorchModel::kernel_grads`], so its two-phase backward runs inside Python's
    /// autograd (and DDP's hooks).
    pub kernel_inputs: HashMap<String, Tensor>,
}

/// The buffers of a CPU model as tensors (SGConv's `kernel_norm` as `[D, H]`, the rest flat).
fn buffers_of<T: Float>(cpu: &Model<T>, kind: Kind, device: Device) -> Named {
    let h = cpu.cfg.d_model;
    let mut buffers = Named::default();
    for (name, b) in cpu.buffers() {
        let v: Vec<f64> = b.iter().map(|x| x.f64()).collect();
        let shape = if name.ends_with("kernel_norm") {
            vec![v.len() / h, h]
        } else {
            vec![v.len()]
        };
        buffers.insert(name, from_f64(&v, &shape, kind, device));
    }
    buffers
}

impl TorchModel {
    /// A model with the parameters and buffers of `cpu` (any element type), in `kind` on `device`.
    pub fn from_cpu<T: Float>(
        cpu: &Model<T>,
        kind: Kind,
        device: Device,
        opts: TorchOptions,
    ) -> Result<Self> {
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(Error::Invalid(format!(
                "the torch engine runs in f32 or f64, not {kind:?}"
            )));
        }
        let mut params = Named::default();
        let mut groups = HashMap::new();
        for p in &cpu.store.params {
            let v: Vec<f64> = p.value.iter().map(|x| x.f64()).collect();
            let t = from_f64(&v, &p.shape, kind, device).set_requires_grad(true);
            params.insert(p.name.clone(), t);
            groups.insert(p.name.clone(), p.kind);
        }
        let buffers = buffers_of(cpu, kind, device);
        Ok(Self {
            cfg: cpu.cfg.clone(),
            io: cpu.io,
            kind,
            device,
            opts,
            params,
            groups,
            buffers,
            pending: Vec::new(),
            leaves: false,
            valid_count: 0,
            kernel_inputs: HashMap::new(),
        })
    }

    /// A freshly initialized model: the CPU engine's init from `rng` (identical numbers), moved here.
    pub fn new(
        cfg: &ModelConfig,
        io: IoShape,
        rng: &mut impl rand::Rng,
        kind: Kind,
        device: Device,
        opts: TorchOptions,
    ) -> Result<Self> {
        let cpu = Model::<f64>::new(cfg, io, rng)?;
        Self::from_cpu(&cpu, kind, device, opts)
    }

    /// Writes the parameters and buffers into `cpu` (same config): checkpoints then go through the
    /// CPU engine's writer, and either engine resumes from them.
    pub fn to_cpu<T: Float>(&self, cpu: &mut Model<T>) -> Result<()> {
        for p in &mut cpu.store.params {
            let v = to_f64(self.params.get(&p.name)?);
            if v.len() != p.value.len() {
                return Err(Error::Invalid(format!(
                    "{}: {} values, the CPU model has {}",
                    p.name,
                    v.len(),
                    p.value.len()
                )));
            }
            p.value.iter_mut().zip(&v).for_each(|(o, x)| *o = T::of(*x));
        }
        for (name, b) in cpu.buffers_mut() {
            let v = to_f64(self.buffers.get(&name)?);
            b.clear();
            b.extend(v.iter().map(|x| T::of(*x)));
        }
        Ok(())
    }

    /// Replaces the parameter values and buffers by `cpu`'s (same config), keeping the tensors (and
    /// so an optimizer's references to them, and a Python module's parameters and buffers that the
    /// tensors are): copied in place.
    pub fn load_from_cpu<T: Float>(&mut self, cpu: &Model<T>) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for p in &cpu.store.params {
                let t = self.params.get(&p.name)?;
                let v: Vec<f64> = p.value.iter().map(|x| x.f64()).collect();
                let src = from_f64(&v, &p.shape, self.kind, self.device);
                let mut t = t.shallow_clone();
                t.copy_(&src);
            }
            let new = buffers_of(cpu, self.kind, self.device);
            for name in &new.names {
                let src = &new.map[name];
                let t = self.buffers.get(name)?;
                if t.size() != src.size() {
                    return Err(Error::Invalid(format!(
                        "buffer {name}: shape {:?}, the model has {:?}",
                        src.size(),
                        t.size()
                    )));
                }
                t.shallow_clone().copy_(src);
            }
            Ok(())
        })
    }

    /// Every parameter's gradient as f64 (zeros where none was accumulated), in the store's order.
    pub fn grads(&self) -> Vec<(String, Vec<f64>)> {
        self.params
            .names
            .iter()
            .map(|n| {
                let t = &self.params.map[n];
                let g = t.grad();
                let v = if g.defined() {
                    to_f64(&g)
                } else {
                    vec![0.0; t.numel()]
                };
                (n.clone(), v)
            })
            .collect()
    }

    /// Sets every parameter's gradient to zero.
    pub fn zero_grad(&mut self) {
        for t in self.params.map.values_mut() {
            t.zero_grad();
        }
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        self.params.get(name)
    }

    /// Where and in which dtype the kernels are computed (f64 with [`TorchOptions::kernel_f64`]).
    pub fn ctx(&self) -> KernelCtx {
        KernelCtx {
            device: self.device,
            kind: if self.opts.kernel_f64 {
                Kind::Double
            } else {
                self.kind
            },
        }
    }

    /// `mask [B, 1, L]`: 1 at valid positions (None: every position valid).
    fn valid_mask(&self, lengths: &[usize], batch: usize, len: usize) -> Option<Tensor> {
        if lengths.is_empty() {
            return None;
        }
        let v: Vec<f64> = (0..batch)
            .flat_map(|b| {
                let n = lengths.get(b).map_or(len, |&n| n.min(len));
                (0..len).map(move |l| if l < n { 1.0 } else { 0.0 })
            })
            .collect();
        Some(from_f64(&v, &[batch, 1, len], self.kind, self.device))
    }

    /// The operands of a linear layer in the multiply's dtype (bf16 with
    /// [`TorchOptions::bf16_matmul`] in an f32 model); the callers return the product in the model's.
    fn mm_operands(&self, w: &Tensor, x: &Tensor) -> (Tensor, Tensor) {
        if self.opts.bf16_matmul && self.kind == Kind::Float {
            (w.to_kind(Kind::BFloat16), x.to_kind(Kind::BFloat16))
        } else {
            (w.shallow_clone(), x.shallow_clone())
        }
    }

    /// Linear over channels: `x [B, Cin, L] → [B, Cout, L]`.
    fn linear_bcl(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let (w, x) = self.mm_operands(self.p(&format!("{name}.weight"))?, x);
        let y = Tensor::einsum("oi,bil->bol", &[w, x], None::<i64>).to_kind(self.kind);
        Ok(match self.params.map.get(&format!("{name}.bias")) {
            Some(b) => y + b.reshape([1, -1, 1]),
            None => y,
        })
    }

    /// Linear on vectors: `x [B, Cin] → [B, Cout]`.
    fn linear_bc(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let (w, x) = self.mm_operands(self.p(&format!("{name}.weight"))?, x);
        let y = x.matmul(&w.tr()).to_kind(self.kind);
        Ok(match self.params.map.get(&format!("{name}.bias")) {
            Some(b) => y + b,
            None => y,
        })
    }

    /// LayerNorm over channels or BatchNorm over (batch, valid length) of `x [B, H, L]`.
    fn norm(
        &mut self,
        name: &str,
        x: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let w = self.p(&format!("{name}.weight"))?.shallow_clone();
        let b = self.p(&format!("{name}.bias"))?.shallow_clone();
        let h = x.size()[1];
        match self.cfg.norm {
            NormKind::Layer => Ok(x
                .permute([0, 2, 1])
                .layer_norm([h], Some(&w), Some(&b), 1e-5, false)
                .permute([0, 2, 1])),
            NormKind::Batch => {
                let (rm, rv) = (
                    format!("{name}.running_mean"),
                    format!("{name}.running_var"),
                );
                let (mean, var) = if train {
                    let dims: &[i64] = &[0, 2];
                    let (s, m) = match mask {
                        Some(mk) => (
                            (x * mk).sum_dim_intlist(dims, true, None::<Kind>),
                            self.valid_count as f64,
                        ),
                        None => (
                            x.sum_dim_intlist(dims, true, None::<Kind>),
                            (x.size()[0] * x.size()[2]) as f64,
                        ),
                    };
                    let mean = s / m.max(1.0);
                    let dev = (x - &mean).square();
                    let dev = match mask {
                        Some(mk) => dev * mk,
                        None => dev,
                    };
                    let var = dev.sum_dim_intlist(dims, true, None::<Kind>) / m.max(1.0);
                    tch::no_grad(|| -> Result<()> {
                        let unbiased = if m > 1.0 {
                            &var * (m / (m - 1.0))
                        } else {
                            var.shallow_clone()
                        };
                        let old_m = self.buffers.get(&rm)?;
                        let old_v = self.buffers.get(&rv)?;
                        let nm = old_m * 0.9 + mean.detach().reshape([-1]) * 0.1;
                        let nv = old_v * 0.9 + unbiased.detach().reshape([-1]) * 0.1;
                        self.buffers.insert(rm.clone(), nm);
                        self.buffers.insert(rv.clone(), nv);
                        Ok(())
                    })?;
                    (mean, var)
                } else {
                    (
                        self.buffers.get(&rm)?.reshape([1, -1, 1]),
                        self.buffers.get(&rv)?.reshape([1, -1, 1]),
                    )
                };
                Ok((x - mean) * (var + 1e-5).rsqrt() * w.reshape([1, -1, 1])
                    + b.reshape([1, -1, 1]))
            }
        }
    }

    /// `K [dirs, H, len]` of the kernel `kp` (`blocks.i.ssm.kernel`) in the kernel dtype, with
    /// autograd unless called under `no_grad`; sets the buffers a first forward sets (S4's
    /// `kernel_len`, SGConv's `kernel_norm`).
    fn kernel(&mut self, kp: &str, len: usize) -> Result<Tensor> {
        let ctx = self.ctx();
        match self.cfg.kind {
            LayerKind::S4d | LayerKind::S4Ptd => {
                kernels::s4d::kernel(&self.params, kp, self.cfg.disc, ctx, 0, len)
            }
            LayerKind::S4 => {
                let kl = self.s4_kernel_len(kp, len)?;
                kernels::s4::kernel(&self.params, kp, ctx, kl, len)
            }
            LayerKind::Sgconv => {
                let name = format!("{kp}.kernel_norm");
                let mut norm = self.buffers.get(&name)?.shallow_clone();
                if self.cfg.l_max == 0 {
                    return Err(Error::Invalid(
                        "model.l_max: SGConv needs the sequence length (got 0)".into(),
                    ));
                }
                let k = kernels::sgconv::kernel(
                    &self.params,
                    kp,
                    &self.cfg.sgconv,
                    self.cfg.l_max,
                    &mut norm,
                    ctx,
                    len,
                )?;
                self.buffers.insert(name, norm);
                Ok(k)
            }
            LayerKind::Hope => {
                kernels::hope::kernel(&self.params, kp, self.cfg.hope.mode, ctx, len)
            }
            LayerKind::S5 | LayerKind::S5Ptd => {
                Err(Error::Invalid("S5 has no convolution kernel".into()))
            }
        }
    }

    /// S4's `kernel_len` buffer (set to `len` by the first forward).
    fn s4_kernel_len(&mut self, kp: &str, len: usize) -> Result<usize> {
        let name = format!("{kp}.kernel_len");
        let kl = self.buffers.get(&name)?.double_value(&[0]).round().max(0.0) as usize;
        Ok(if kl == 0 {
            self.buffers
                .insert(name, from_f64(&[len as f64], &[1], self.kind, self.device));
            len
        } else {
            kl
        })
    }

    /// The sequence map of block `prefix`'s SSM layer: `u [B, H, L] → [B, H, L]` (without `D·u`).
    pub fn sequence_map(&mut self, prefix: &str, u: &Tensor) -> Result<Tensor> {
        let len = u.size()[2] as usize;
        if matches!(self.cfg.kind, LayerKind::S5 | LayerKind::S5Ptd) {
            return kernels::s5::forward(
                &self.params,
                &format!("{prefix}.s5"),
                self.cfg.disc,
                self.cfg.s5.step_rescale,
                self.ctx(),
                u,
            );
        }
        let kp = format!("{prefix}.kernel");
        let k = if let Some(k) = self.kernel_inputs.get(&kp) {
            k.to_kind(self.kind)
        } else if self.leaves {
            let k = tch::no_grad(|| self.kernel_in_chunks(&kp, len))?;
            let leaf = k.to_kind(self.kind).detach().set_requires_grad(true);
            self.pending.push(Pending {
                prefix: kp,
                leaf: leaf.shallow_clone(),
                len,
            });
            leaf
        } else {
            self.kernel(&kp, len)?.to_kind(self.kind)
        };
        Ok(kernels::fftconv::fft_conv(u, &k))
    }

    /// The backward of the last forward from `dout` (the gradient of the loss with respect to its
    /// output, same shape): autograd through the graph, then the second phase of the kernels that
    /// entered it as leaves — each recomputed in chunks with autograd, each chunk back-propagated
    /// with its part of `dK`. Gradients accumulate in the parameters' `grad`.
    pub fn backward(&mut self, out: &Tensor, dout: &Tensor) -> Result<()> {
        (out * dout).sum(None::<Kind>).backward();
        for p in std::mem::take(&mut self.pending) {
            let dk = p.leaf.grad();
            if dk.defined() {
                self.kernel_backward(&p.prefix, p.len, &dk)?;
            }
        }
        Ok(())
    }

    /// `K` as [`TorchModel::kernel`], made in the chunks of the two-phase backward (phase one runs
    /// without autograd: only a chunk's intermediates are alive at once).
    fn kernel_in_chunks(&mut self, kp: &str, len: usize) -> Result<Tensor> {
        let ctx = self.ctx();
        let budget = self.opts.chunk_bytes.max(1);
        let h = self.cfg.d_model;
        match self.cfg.kind {
            LayerKind::S4d | LayerKind::S4Ptd => {
                let m = self.p(&format!("{kp}.a_imag"))?.size()[1] as usize;
                let n = (budget / (h * m * 16 * 4).max(1)).clamp(1, len);
                let parts = (0..len)
                    .step_by(n)
                    .map(|l0| {
                        kernels::s4d::kernel(
                            &self.params,
                            kp,
                            self.cfg.disc,
                            ctx,
                            l0,
                            n.min(len - l0),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&parts, -1))
            }
            LayerKind::S4 => {
                let kl = self.s4_kernel_len(kp, len)?;
                kernels::s4::from_spectrum(&self.s4_spectrum_in_chunks(kp, kl)?, kl, len)
            }
            _ => self.kernel(kp, len),
        }
    }

    /// S4's frequencies per chunk: the `[H, N, w]` Cauchy terms (complex, a few alive at once)
    /// within the chunk budget.
    fn s4_chunk(&self, kp: &str, bins: usize) -> Result<usize> {
        let n_modes = 2 * self.p(&format!("{kp}.b_re"))?.size()[1] as usize;
        let per = (self.cfg.d_model * n_modes * 16 * 6).max(1);
        Ok((self.opts.chunk_bytes.max(1) / per).clamp(1, bins))
    }

    /// S4's spectrum `K̂ [D, H, kernel_len/2 + 1]` made in chunks of frequencies (no autograd
    /// wanted: the caller runs it under `no_grad`).
    fn s4_spectrum_in_chunks(&self, kp: &str, kl: usize) -> Result<Tensor> {
        let bins = kl / 2 + 1;
        let w = self.s4_chunk(kp, bins)?;
        let parts = (0..bins)
            .step_by(w)
            .map(|w0| kernels::s4::spectrum(&self.params, kp, self.ctx(), kl, w0, w.min(bins - w0)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, -1))
    }

    /// The prefixes of the model's convolution kernels (`blocks.i.ssm.kernel`; none for S5).
    pub fn kernel_prefixes(&self) -> Vec<String> {
        if matches!(self.cfg.kind, LayerKind::S5 | LayerKind::S5Ptd) {
            return Vec::new();
        }
        (0..self.cfg.n_layers)
            .map(|i| format!("blocks.{i}.ssm.kernel"))
            .collect()
    }

    /// `K [dirs, H, len]` of kernel `kp` made without autograd in the two-phase backward's chunks,
    /// in the model's dtype (sets the buffers a first forward sets).
    pub fn kernel_no_grad(&mut self, kp: &str, len: usize) -> Result<Tensor> {
        let k = tch::no_grad(|| self.kernel_in_chunks(kp, len))?;
        Ok(k.to_kind(self.kind))
    }

    /// The gradients of `Σ K·dK` with respect to kernel `kp`'s parameters (`names`, each under
    /// `kp.`), computed chunk by chunk as the two-phase backward does, on detached copies: the
    /// model's own parameters' gradients are left as they are.
    pub fn kernel_grads(
        &mut self,
        kp: &str,
        names: &[String],
        len: usize,
        dk: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let mut saved = Vec::with_capacity(names.len());
        for n in names {
            let p = self.params.get(n)?;
            let copy = p.detach().set_requires_grad(true);
            saved.push((n.clone(), p.shallow_clone(), copy.shallow_clone()));
            self.params.map.insert(n.clone(), copy);
        }
        // with autograd on: a caller's backward (a custom autograd function) runs with it off
        let r = tch::with_grad(|| self.kernel_backward(kp, len, dk));
        let grads = saved
            .iter()
            .map(|(_, p, c)| {
                let g = c.grad();
                if g.defined() { g } else { p.zeros_like() }
            })
            .collect();
        for (n, p, _) in saved {
            self.params.map.insert(n, p);
        }
        r.map(|_| grads)
    }

    /// Phase two for one kernel: `Σ K·dK` back-propagated chunk by chunk.
    fn kernel_backward(&mut self, kp: &str, len: usize, dk: &Tensor) -> Result<()> {
        let ctx = self.ctx();
        let budget = self.opts.chunk_bytes.max(1);
        let h = self.cfg.d_model;
        let dk = dk.to_kind(ctx.kind);
        let push = |k: &Tensor, d: &Tensor| (k * d).sum(None::<Kind>).backward();
        match self.cfg.kind {
            LayerKind::S4d | LayerKind::S4Ptd => {
                // the Vandermonde [H, M, n] (complex, a few alive at once) within the budget
                let m = self.p(&format!("{kp}.a_imag"))?.size()[1] as usize;
                let n = (budget / (h * m * 16 * 4).max(1)).clamp(1, len);
                for l0 in (0..len).step_by(n) {
                    let c = n.min(len - l0);
                    let k = kernels::s4d::kernel(&self.params, kp, self.cfg.disc, ctx, l0, c)?;
                    push(&k, &dk.narrow(-1, l0 as i64, c as i64));
                }
            }
            LayerKind::S4 => {
                let kl = self.s4_kernel_len(kp, len)?;
                let bins = kl / 2 + 1;
                // dK → dK̂ through the (linear) inverse FFT, then the spectrum in chunks of frequencies
                // (the inverse FFT is linear: its backward needs no values of K̂, only its shape)
                let leaf = Tensor::zeros(
                    [
                        self.p(&format!("{kp}.c_re"))?.size()[0],
                        h as i64,
                        bins as i64,
                    ],
                    (crate::tensor::complex_of(ctx.kind), ctx.device),
                )
                .set_requires_grad(true);
                push(&kernels::s4::from_spectrum(&leaf, kl, len)?, &dk);
                let g = leaf.grad();
                let w = self.s4_chunk(kp, bins)?;
                for w0 in (0..bins).step_by(w) {
                    let c = w.min(bins - w0);
                    let x = kernels::s4::spectrum(&self.params, kp, ctx, kl, w0, c)?;
                    let gc = g.narrow(-1, w0 as i64, c as i64);
                    (x.real() * gc.real() + x.imag() * gc.imag())
                        .sum(None::<Kind>)
                        .backward();
                }
            }
            LayerKind::Hope => {
                // per group of channels (views of the leaves, so the gradients reach them)
                let hp = self.p(&format!("{kp}.h"))?.shallow_clone();
                let ldt = self.p(&format!("{kp}.log_dt"))?.shallow_clone();
                let n = hp.size()[2] as usize;
                let per = (n * (len + n) * 8 * 8).max(1);
                let step = (budget / per).clamp(1, h);
                for h0 in (0..h).step_by(step) {
                    let c = step.min(h - h0);
                    let mut sub = Named::default();
                    sub.insert(format!("{kp}.h"), hp.narrow(1, h0 as i64, c as i64));
                    sub.insert(format!("{kp}.log_dt"), ldt.narrow(0, h0 as i64, c as i64));
                    let k = kernels::hope::kernel(&sub, kp, self.cfg.hope.mode, ctx, len)?;
                    push(&k, &dk.narrow(1, h0 as i64, c as i64));
                }
            }
            // SGConv's kernel is a gather of its taps (intermediates O(H·L), as K itself)
            LayerKind::Sgconv => {
                let k = self.kernel(kp, len)?;
                push(&k, &dk);
            }
            LayerKind::S5 | LayerKind::S5Ptd => {}
        }
        Ok(())
    }

    /// The SSM layer `prefix` (e.g. `blocks.0.ssm`): `u [B, H, L] → y [B, H, L]`.
    fn ssm_layer(
        &mut self,
        prefix: &str,
        u: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
        seed: u64,
    ) -> Result<Tensor> {
        let u = match mask {
            Some(m) => u * m,
            None => u.shallow_clone(),
        };
        let y = self.sequence_map(prefix, &u)?;
        let d = self.p(&format!("{prefix}.d"))?;
        let c = y + &u * d.reshape([1, -1, 1]);
        let mut a = c.gelu("none");
        if train && self.cfg.dropout > 0.0 {
            let s = a.size();
            let m = dropout::mask(
                seed,
                s[0] as usize,
                s[1] as usize,
                s[2] as usize,
                self.cfg.dropout,
                self.cfg.tied_dropout,
                (self.kind, self.device),
            );
            a *= m;
        }
        let o = self.linear_bcl(&format!("{prefix}.out"), &a)?;
        Ok(if self.cfg.glu { o.glu(1) } else { o })
    }

    /// The backbone without its head: encoder, blocks, final norm → `[B, H, L]`.
    pub fn forward_features(
        &mut self,
        input: &TorchInput,
        lengths: &[usize],
        train: bool,
        seed: u64,
    ) -> Result<Tensor> {
        let (batch, len) = input.dims();
        let mut x = match input {
            TorchInput::Real(v) => {
                if self.io.d_input == 0 {
                    return Err(Error::Invalid(
                        "the model takes tokens, the input is real".into(),
                    ));
                }
                self.linear_bcl("encoder", &v.to_kind(self.kind))?
            }
            TorchInput::Tokens(t) => {
                if self.io.vocab == 0 {
                    return Err(Error::Invalid(
                        "the model takes real inputs, the input is tokens".into(),
                    ));
                }
                let e = self.p("encoder.weight")?;
                let h = e.size()[1];
                e.index_select(0, &t.reshape([-1]))
                    .reshape([batch as i64, len as i64, h])
                    .permute([0, 2, 1])
            }
        };
        let mask = self.valid_mask(lengths, batch, len);
        self.valid_count = (0..batch)
            .map(|b| lengths.get(b).map_or(len, |&n| n.min(len)))
            .sum();
        for i in 0..self.cfg.n_layers {
            let lseed = splitmix64(seed ^ splitmix64(i as u64 + 1));
            let pre = format!("blocks.{i}");
            x = if self.cfg.prenorm {
                let inner = self.norm(&format!("{pre}.norm"), &x, mask.as_ref(), train)?;
                &x + self.ssm_layer(&format!("{pre}.ssm"), &inner, mask.as_ref(), train, lseed)?
            } else {
                let inner =
                    &x + self.ssm_layer(&format!("{pre}.ssm"), &x, mask.as_ref(), train, lseed)?;
                self.norm(&format!("{pre}.norm"), &inner, mask.as_ref(), train)?
            };
        }
        if self.cfg.prenorm {
            x = self.norm("final_norm", &x, mask.as_ref(), train)?;
        }
        Ok(x)
    }

    /// The model's output: `[B, d_out]` (pooled) or `[B, d_out, L]` (pool = none). For a pair task
    /// the input holds `2B` sequences (all first documents, then all second ones) and `lengths`
    /// one length per sequence. `seed` drives dropout (`train` only), as on the CPU engine.
    pub fn forward(
        &mut self,
        input: &TorchInput,
        lengths: &[usize],
        train: bool,
        seed: u64,
    ) -> Result<Tensor> {
        self.pending.clear();
        self.leaves = train && self.opts.two_phase;
        let (batch, len) = input.dims();
        let feats = self.forward_features(input, lengths, train, seed)?;
        if self.cfg.pool == Pool::None {
            return self.linear_bcl("decoder", &feats);
        }
        let pooled = match (self.cfg.pool, self.valid_mask(lengths, batch, len)) {
            (Pool::Mean, None) => feats.mean_dim(2, false, None::<Kind>),
            (Pool::Mean, Some(m)) => {
                let n = m.sum_dim_intlist(2, false, None::<Kind>).clamp_min(1.0);
                (&feats * &m).sum_dim_intlist(2, false, None::<Kind>) / n
            }
            (Pool::Last, _) => {
                let idx: Vec<i64> = (0..batch)
                    .map(|b| lengths.get(b).map_or(len, |&n| n.min(len)).max(1) as i64 - 1)
                    .collect();
                let h = feats.size()[1];
                let idx = Tensor::from_slice(&idx)
                    .to_device(self.device)
                    .reshape([-1, 1, 1])
                    .expand([batch as i64, h, 1], false);
                feats.gather(2, &idx, false).squeeze_dim(2)
            }
            (Pool::None, _) => unreachable!(),
        };
        if self.io.pair {
            let ex = (batch / 2) as i64;
            let (u, v) = (pooled.narrow(0, 0, ex), pooled.narrow(0, ex, ex));
            let f = Tensor::cat(&[&u, &v, &(&u * &v), &(&u - &v)], 1);
            let hid = self.linear_bc("decoder.hidden", &f)?.gelu("none");
            return self.linear_bc("decoder", &hid);
        }
        self.linear_bc("decoder", &pooled)
    }
}
