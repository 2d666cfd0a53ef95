//! The SSM layer: a sequence map, the skip `D`, GELU, dropout and the output projection (GLU).
//!
//! ```text
//! u [B,H,L] → c = map(u) + D·u → a = GELU(c) → dropout → linear H→2H → GLU → y [B,H,L]
//! ```
//! The map is any [`SequenceMap`]: a kernel (S4D, S4, S4-PTD, SGConv, HOPE) by FFT convolution
//! ([`Convolution`]) or S5's MIMO scan; the layer has no per-kind code beyond building it.

use super::config::{LayerKind, ModelConfig};
use crate::engine::float::Float;
use crate::engine::layers::PackedWeights;
use crate::engine::layers::{self, Dropout, Gelu, Glu, Linear};
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::engine::simd::Half;
use crate::error::Error;
use crate::kernels::hope::{HopeConfig, HopeKernel};
use crate::kernels::s4::{S4Config, S4Kernel};
use crate::kernels::s4d::{S4dConfig, S4dKernel};
use crate::kernels::s5::{S5Config, S5Layer};
use crate::kernels::sgconv::{SgConvConfig, SgConvKernel};
use crate::kernels::{Convolution, SequenceKernel, SequenceMap, Stepper};
use rand::Rng;
use rayon::prelude::*;
use statespace_math::s4d::DiagInit;

/// A perturbation added to the input of every SSM layer (the PTD paper's robustness test:
/// amplitude 0.1, frequency 325.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNoise {
    /// Peak amplitude (times U[0,1) per sample and channel).
    pub amplitude: f64,
    /// Angular frequency in units of the channel's time t = k·Δ.
    pub freq: f64,
    /// Seed of the amplitudes.
    pub seed: u64,
}

/// One SSM layer: the sequence map (a kernel by FFT convolution, or S5's scan), the skip `D`, GELU,
/// dropout and the output projection (with GLU).
///
/// ```text
/// u [B,H,L] → c = map(u) + D·u → a = GELU(c) → dropout → o = W a + b [B,2H,L] → y = GLU(o) [B,H,L]
/// ```
#[derive(Debug)]
pub struct SsmLayer<T: Float> {
    /// The sequence map: a [`Convolution`] of a kernel, or S5's MIMO scan.
    pub map: Box<dyn SequenceMap<T>>,
    noise: Option<InputNoise>,
    /// Skip gain `D [H]`.
    pub d: ParamId,
    h: usize,
    gelu: Gelu<T>,
    dropout: Dropout<T>,
    out: Linear<T>,
    glu: Option<Glu<T>>,
    /// `u [B, H, L]`: the layer input (with noise, zero past each valid length).
    u: Vec<T>,
    /// `c [B, H, L]`: `map(u) + D·u`, the GELU's input.
    c: Vec<T>,
    /// `a [B, H, L]`: `GELU(c)`.
    a: Vec<T>,
    /// `a_dropped [B, H, L]`: `dropout(a)` (training with p > 0 only).
    a_dropped: Vec<T>,
    /// `o [B, 2H, L]`: the output projection before GLU (GLU layers only).
    o: Vec<T>,
    /// `grad_a`, `grad_b [B, ≤2H, L]`: gradient scratch of the backward, reused in turn.
    grad_a: Vec<T>,
    grad_b: Vec<T>,
    /// `du [B, H, L]`: the map's input gradient.
    du: Vec<T>,
    /// `(batch, len)` of the last forward.
    dims: (usize, usize),
    /// Valid length of each batch element (empty: all): the input is zeroed beyond it, so neither
    /// direction of the sequence map sees the padding.
    lengths: Vec<usize>,
}

/// Scratch vectors of one recurrent step for `B` streams, shared by the layers of a model (they
/// run one after another). Sized once: a step allocates nothing.
#[derive(Debug, Clone)]
pub struct StepScratch<T> {
    /// `inner [B, H]`: a block's normed input or residual sum.
    pub(crate) inner: Vec<T>,
    /// `out [B, H]`: a layer's output.
    pub(crate) out: Vec<T>,
    /// `c [B, H]`: the sequence map's output plus `D·u`, then its GELU.
    c: Vec<T>,
    /// `o [B, 2H]`: the output projection (before GLU).
    o: Vec<T>,
}

impl<T: Float> StepScratch<T> {
    /// Scratch for `batch` streams of width `h`.
    pub fn new(batch: usize, h: usize) -> Self {
        let z = || vec![T::zero(); batch * h];
        Self {
            inner: z(),
            out: z(),
            c: z(),
            o: vec![T::zero(); 2 * batch * h],
        }
    }
}

impl<T: Float> SsmLayer<T> {
    /// Builds the layer `prefix` (e.g. `blocks.0.ssm`) of `cfg`'s kind: its sequence map under
    /// `PREFIX.kernel.*` (S5: `PREFIX.s5.*`), `PREFIX.d` and the output projection `PREFIX.out.*`.
    pub fn new(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: &ModelConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let map = sequence_map(store, prefix, cfg, rng)?;
        Self::with_map(store, prefix, cfg, rng, map)
    }

    /// The layer around a sequence map of your own (any [`SequenceMap`] over `cfg.d_model`
    /// channels): `PREFIX.d` and the output projection `PREFIX.out.*` are registered here.
    pub fn with_map(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: &ModelConfig,
        rng: &mut impl Rng,
        map: Box<dyn SequenceMap<T>>,
    ) -> Result<Self, Error> {
        let h = cfg.d_model;
        if map.channels() != h {
            return Err(Error::Invalid(format!(
                "{prefix}: the sequence map has {} channels, the layer d_model = {h}",
                map.channels()
            )));
        }
        let dvals = (0..h).map(|_| T::of(normal(rng))).collect();
        let d = store.add(format!("{prefix}.d"), &[h], dvals, ParamKind::Weight);
        let out_dim = if cfg.glu { 2 * h } else { h };
        let out = Linear::new(store, &format!("{prefix}.out"), h, out_dim, true, rng);
        Ok(Self {
            map,
            noise: None,
            d,
            h,
            gelu: Gelu::new(),
            dropout: Dropout::new(cfg.dropout, cfg.tied_dropout),
            out,
            glu: cfg.glu.then(Glu::new),
            u: Vec::new(),
            c: Vec::new(),
            a: Vec::new(),
            a_dropped: Vec::new(),
            o: Vec::new(),
            grad_a: Vec::new(),
            grad_b: Vec::new(),
            du: Vec::new(),
            dims: (0, 0),
            lengths: Vec::new(),
        })
    }

    /// Adds `amplitude·U[0,1)·cos(freq·t)` to the layer input, t = k·Δ_c on each channel's step grid
    /// (S5: the mean of its per-state steps; SGConv has no step: t = k/L).
    fn add_noise(&mut self, store: &ParamStore<T>, nz: InputNoise, batch: usize, len: usize) {
        let h = self.h;
        let steps = self
            .map
            .channel_steps(store)
            .unwrap_or_else(|| vec![1.0 / len as f64; h]);
        self.u
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(row, ur)| {
                let ch = row % h;
                let r = crate::engine::layers::splitmix64(
                    nz.seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let amp = nz.amplitude * ((r >> 11) as f64 / (1u64 << 53) as f64);
                for (k, v) in ur.iter_mut().enumerate() {
                    *v += T::of(amp * (nz.freq * k as f64 * steps[ch]).cos());
                }
            });
        let _ = batch;
    }

    /// Valid length of each batch element for later forwards (empty: all); the input is zeroed
    /// beyond it.
    pub fn set_lengths(&mut self, lengths: &[usize]) {
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
    }

    /// Adds `noise` to the layer's input in later forwards (`None` removes it).
    pub fn set_input_noise(&mut self, noise: Option<InputNoise>) {
        self.noise = noise;
    }

    /// `u [B, H, L] → y [B, H, L]`; `seed` drives dropout (`train` only).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        u: &[T],
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
        y: &mut Vec<T>,
    ) {
        layers::keep_copy(&mut self.u, u);
        self.forward_kept(store, batch, len, train, seed, y);
    }

    /// [`SsmLayer::forward`] on an input the caller hands over: `u` and the layer's kept input
    /// buffer are swapped (no copy; `u` comes back holding a spent buffer for the caller to reuse).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_owned(
        &mut self,
        store: &ParamStore<T>,
        u: &mut Vec<T>,
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
        y: &mut Vec<T>,
    ) {
        assert_eq!(u.len(), batch * self.h * len, "SsmLayer: u [B, H, L]");
        std::mem::swap(&mut self.u, u);
        self.forward_kept(store, batch, len, train, seed, y);
    }

    /// The forward on the kept input `self.u`.
    fn forward_kept(
        &mut self,
        store: &ParamStore<T>,
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
        y: &mut Vec<T>,
    ) {
        let h = self.h;
        self.dims = (batch, len);
        if let Some(nz) = self.noise {
            self.add_noise(store, nz, batch, len);
        }
        if !self.lengths.is_empty() {
            let lens = &self.lengths;
            self.u
                .par_chunks_mut(len)
                .enumerate()
                .for_each(|(row, ur)| {
                    let n = layers::valid_len(lens, row / h, len);
                    ur[n..].iter_mut().for_each(|v| *v = T::zero());
                });
        }
        self.map.forward(store, &self.u, batch, len, &mut self.c);
        // the D skip fused into GELU: one pass over the rows
        let d = store.value(self.d);
        self.gelu
            .forward_skip(&mut self.c, &self.u, d, h, len, &mut self.a);
        let dropped = self
            .dropout
            .forward(&self.a, len, train, seed, &mut self.a_dropped);
        let a = if dropped { &self.a_dropped } else { &self.a };
        // the layer keeps `a` (or its dropped copy) until the backward: the projection borrows it
        if let Some(glu) = &mut self.glu {
            self.out.forward_borrowed(store, a, batch, len, &mut self.o);
            glu.forward(&self.o, batch, h, len, y);
        } else {
            self.out.forward_borrowed(store, a, batch, len, y);
        }
    }

    /// `dy [B, H, L] → dx [B, H, L]` for the last forward; accumulates the parameter gradients.
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        let h = self.h;
        let (batch, len) = self.dims;
        // the projection's input, as the forward handed it over
        let a = if self.dropout.active {
            &self.a_dropped
        } else {
            &self.a
        };
        if let Some(glu) = &self.glu {
            glu.backward(&self.o, dy, &mut self.grad_a);
            self.out
                .backward_from(store, a, &self.grad_a, &mut self.grad_b);
        } else {
            self.out.backward_from(store, a, dy, &mut self.grad_b);
        }
        if self.dropout.active {
            self.dropout.backward(&self.grad_b, &mut self.grad_a);
            std::mem::swap(&mut self.grad_a, &mut self.grad_b);
        }
        self.gelu.backward(&self.c, &self.grad_b, &mut self.grad_a);
        std::mem::swap(&mut self.grad_a, &mut self.grad_b);
        // grad_b = dℒ/dc: the skip D·u and the sequence map
        {
            let (g, u) = (&self.grad_b, &self.u);
            let sums: Vec<T> = (0..h)
                .into_par_iter()
                .map(|ch| {
                    (0..batch)
                        .map(|b| {
                            let r = (b * h + ch) * len..(b * h + ch + 1) * len;
                            T::dot(&g[r.clone()], &u[r])
                        })
                        .sum::<T>()
                })
                .collect();
            store
                .grad_mut(self.d)
                .iter_mut()
                .zip(&sums)
                .for_each(|(a, b)| *a += *b);
        }
        self.map.backward(store, &self.grad_b, &mut self.du);
        let d = store.value(self.d);
        dx.resize(self.du.len(), T::zero());
        dx.par_chunks_mut(len)
            .zip(self.du.par_chunks(len))
            .zip(self.grad_b.par_chunks(len))
            .enumerate()
            .for_each(|(row, ((dxr, dur), gr))| {
                let dv = d[row % h];
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for ((x, u), g) in dxr.iter_mut().zip(dur).zip(gr) {
                            *x = *u + dv * *g;
                        }
                    },
                )
            });
        if !self.lengths.is_empty() {
            let lens = &self.lengths;
            dx.par_chunks_mut(len).enumerate().for_each(|(row, r)| {
                let n = layers::valid_len(lens, row / h, len);
                r[n..].iter_mut().for_each(|v| *v = T::zero());
            });
        }
        let _ = batch;
    }

    /// The output projection packed for [`SsmLayer::step`] of `batch` streams ([`Linear::pack`]),
    /// in the model's type or rounded to `half` (an error names a weight beyond the format's range).
    pub fn pack_step(
        &self,
        store: &ParamStore<T>,
        half: Option<Half>,
        batch: usize,
    ) -> Result<PackedWeights<T>, String> {
        match half {
            None => Ok(self.out.pack(store, batch)),
            Some(k) => self.out.pack_half(store, k, batch),
        }
    }

    /// One step of every stream: `u [B, H] → y [B, H]` through the map's recurrent form
    /// `stepper` (its states `[B, stepper.state_len()]` advanced), `D·u`, GELU and the output
    /// projection, packed by [`SsmLayer::pack_step`] (evaluation mode: no dropout, no input noise).
    /// Allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        store: &ParamStore<T>,
        stepper: &dyn Stepper<T>,
        packed: &PackedWeights<T>,
        states: &mut [T],
        u: &[T],
        scratch: &mut StepScratch<T>,
        y: &mut [T],
    ) {
        let h = self.h;
        let batch = u.len() / h;
        let sl = stepper.state_len();
        let d = store.value(self.d);
        let c = &mut scratch.c[..batch * h];
        stepper.step_batch(&mut states[..batch * sl], u, c);
        for (cb, ub) in c.chunks_exact_mut(h).zip(u.chunks_exact(h)) {
            for ((cv, dv), uv) in cb.iter_mut().zip(d).zip(ub) {
                *cv += *dv * *uv;
            }
        }
        self.gelu.step(c);
        match &self.glu {
            Some(glu) => {
                let o = &mut scratch.o[..2 * batch * h];
                self.out.step_packed(store, packed, c, o);
                glu.step(o, h, y);
            }
            None => self.out.step_packed(store, packed, c, y),
        }
    }

    /// Sets the recurrent states `[B, stepper.state_len()]` to those after the last forward's `L`
    /// inputs (run by `stepper` over the kept input `u [B, H, L]`): the convolution mode's prompt
    /// hands over to stepping.
    pub fn prefill_states(&self, stepper: &dyn Stepper<T>, states: &mut [T]) {
        let (h, (_, len)) = (self.h, self.dims);
        let sl = stepper.state_len();
        let u = &self.u;
        states
            .par_chunks_mut(sl)
            .enumerate()
            .for_each(|(b, state)| {
                let (mut ut, mut yt) = (vec![T::zero(); h], vec![T::zero(); h]);
                for t in 0..len {
                    for j in 0..h {
                        ut[j] = u[(b * h + j) * len + t];
                    }
                    stepper.step(state, &ut, &mut yt);
                }
            });
    }
}

fn normal(rng: &mut impl Rng) -> f64 {
    use rand_distr::{Distribution, StandardNormal};
    StandardNormal.sample(rng)
}

/// The sequence map of `cfg.kind` for the layer `prefix`: a kernel (S4D, S4-PTD, S4, SGConv, HOPE)
/// wrapped in a [`Convolution`], or S5 (S5-PTD) itself. The only place that names the kinds.
pub fn sequence_map<T: Float>(
    store: &mut ParamStore<T>,
    prefix: &str,
    cfg: &ModelConfig,
    rng: &mut impl Rng,
) -> Result<Box<dyn SequenceMap<T>>, Error> {
    let h = cfg.d_model;
    let kernel: Box<dyn SequenceKernel<T>> = match cfg.kind {
        LayerKind::S5 | LayerKind::S5Ptd => {
            let init = if cfg.kind == LayerKind::S5Ptd {
                Some(crate::kernels::ptd::s5_init(cfg.d_state, cfg.s5.blocks)?)
            } else {
                None
            };
            let s5 = S5Layer::new(
                store,
                &format!("{prefix}.s5"),
                S5Config {
                    channels: h,
                    state_size: cfg.d_state,
                    disc: cfg.disc,
                    dt_min: cfg.dt_min,
                    dt_max: cfg.dt_max,
                    bidirectional: cfg.bidirectional,
                    opts: cfg.s5.clone(),
                    init,
                },
                rng,
            )?;
            return Ok(Box::new(s5));
        }
        LayerKind::S4d | LayerKind::S4Ptd => {
            let custom = if cfg.kind == LayerKind::S4Ptd {
                Some(crate::kernels::ptd::s4_modes(cfg.d_state)?)
            } else {
                None
            };
            Box::new(S4dKernel::new(
                store,
                &format!("{prefix}.kernel"),
                S4dConfig {
                    channels: h,
                    state_size: custom.as_ref().map_or(cfg.d_state, |c| 2 * c.len()),
                    init: cfg.init.diag().unwrap_or(DiagInit::LegS),
                    disc: cfg.disc,
                    dt_min: cfg.dt_min,
                    dt_max: cfg.dt_max,
                    bidirectional: cfg.bidirectional,
                    custom,
                },
                rng,
            )?)
        }
        LayerKind::S4 => Box::new(S4Kernel::new(
            store,
            &format!("{prefix}.kernel"),
            S4Config {
                channels: h,
                state_size: cfg.d_state,
                n_ssm: cfg.n_ssm,
                init: cfg
                    .init
                    .dplr()
                    .ok_or_else(|| Error::config("model.init", "not a HiPPO operator for S4"))?,
                dt_min: cfg.dt_min,
                dt_max: cfg.dt_max,
                bidirectional: cfg.bidirectional,
                step_mode: cfg.step_mode,
            },
            rng,
        )?),
        LayerKind::Sgconv => Box::new(SgConvKernel::new(
            store,
            &format!("{prefix}.kernel"),
            SgConvConfig {
                channels: h,
                max_len: cfg.l_max,
                bidirectional: cfg.bidirectional,
                opts: cfg.sgconv.clone(),
            },
            rng,
        )?),
        LayerKind::Hope => Box::new(HopeKernel::new(
            store,
            &format!("{prefix}.kernel"),
            HopeConfig {
                channels: h,
                state_size: cfg.d_state,
                dt_min: cfg.dt_min,
                dt_max: cfg.dt_max,
                bidirectional: cfg.bidirectional,
                opts: cfg.hope.clone(),
            },
            rng,
        )?),
    };
    Ok(Box::new(Convolution::new(kernel)))
}
