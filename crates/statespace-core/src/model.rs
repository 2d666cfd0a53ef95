//! The deep backbone: encoder → residual SSM blocks (pre- or post-norm) → pooling → decoder.
//!
//! ```text
//! SSM layer   u [B,H,L] → K = kernel(L) → c = K ∗ u + D·u → GELU → dropout → linear H→2H → GLU → [B,H,L]
//! block       pre-norm:  x + ssm(norm(x))          post-norm:  norm(x + ssm(x))
//! model       encoder (linear d_in→H, or embedding) → blocks → [final norm if pre-norm]
//!             → pool (mean | last | none) → decoder (linear H→d_out)
//! ```
//!
//! Recurrent mode (`Model::stream_state` / `Model::step`) runs the same layers one time step at a
//! time through each kernel's stepper; it equals the convolution mode for causal models and is an
//! error for bidirectional ones.

use crate::fftconv::FftConv;
use crate::float::Float;
use crate::hope::{HopeConfig, HopeKernel, HopeOptions};
use crate::kernel::{SequenceKernel, Stepper};
use crate::layers::{self, BatchNorm, Dropout, Embedding, Gelu, Glu, LayerNorm, Linear, Pool};
use crate::params::{ParamId, ParamKind, ParamStore};
use crate::s4::{DplrInit, S4Config, S4Kernel, StepMode};
use crate::s4d::{Disc, S4dConfig, S4dKernel};
use crate::s5::{S5Config, S5Layer, S5Options};
use crate::sgconv::{SgConvConfig, SgConvKernel, SgConvOptions};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statespace_math::s4d::DiagInit;

/// The sequence-kernel kind of the SSM layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Diagonal SSM (S4D).
    S4d,
    /// Diagonal plus low rank (S4), Cauchy kernel + Woodbury, C̃ trick.
    S4,
    /// Structured global convolution (SGConv).
    Sgconv,
    /// Markov parameters of the Hankel operator (HOPE).
    Hope,
    /// MIMO diagonal SSM over all channels by scan (S5).
    S5,
    /// S4D with the perturb-then-diagonalize LegS init.
    #[serde(rename = "s4-ptd")]
    S4Ptd,
    /// S5 with the perturb-then-diagonalize LegS init.
    #[serde(rename = "s5-ptd")]
    S5Ptd,
}

/// Initialization of the state matrix: a HiPPO operator (S4: legs, legt, lagt, fout) or a
/// diagonal init (S4D: legs, inv, lin, quad, real, rand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Scaled Legendre (S4: the NPLR form; S4D: its diagonal part).
    Legs,
    /// Translated Legendre (S4 only).
    Legt,
    /// Translated Laguerre (S4 only).
    Lagt,
    /// Translated Fourier (S4 only).
    Fout,
    /// S4D-Inv.
    Inv,
    /// S4D-Lin.
    Lin,
    /// S4D-Quad.
    Quad,
    /// S4D-Real.
    Real,
    /// S4D-Rand.
    Rand,
}

impl Init {
    /// The diagonal (S4D) init, if this is one.
    pub fn diag(self) -> Option<DiagInit> {
        Some(match self {
            Init::Legs => DiagInit::LegS,
            Init::Inv => DiagInit::Inv,
            Init::Lin => DiagInit::Lin,
            Init::Quad => DiagInit::Quad,
            Init::Real => DiagInit::Real,
            Init::Rand => DiagInit::Rand,
            _ => return None,
        })
    }

    /// The HiPPO operator (S4), if this is one.
    pub fn dplr(self) -> Option<DplrInit> {
        Some(match self {
            Init::Legs => DplrInit::Legs,
            Init::Legt => DplrInit::Legt,
            Init::Lagt => DplrInit::Lagt,
            Init::Fout => DplrInit::Fout,
            _ => return None,
        })
    }
}

/// Normalization of the residual blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm over channels.
    Layer,
    /// BatchNorm over batch and length.
    Batch,
}

fn d_model() -> usize {
    128
}
fn n_layers() -> usize {
    4
}
fn d_state() -> usize {
    64
}
fn dt_min() -> f64 {
    1e-3
}
fn dt_max() -> f64 {
    1e-1
}
fn yes() -> bool {
    true
}
fn init_legs() -> Init {
    Init::Legs
}
fn one() -> usize {
    1
}
fn zoh() -> Disc {
    Disc::Zoh
}
fn kind_s4d() -> LayerKind {
    LayerKind::S4d
}
fn norm_layer() -> NormKind {
    NormKind::Layer
}
fn pool_mean() -> Pool {
    Pool::Mean
}

/// The `[model]` section of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Kernel kind of the SSM layers (`layer.kind`): "s4d".
    #[serde(default = "kind_s4d")]
    pub kind: LayerKind,
    /// Model width H (channels).
    #[serde(default = "d_model")]
    pub d_model: usize,
    /// Number of residual blocks.
    #[serde(default = "n_layers")]
    pub n_layers: usize,
    /// State size N per channel (N/2 complex modes).
    #[serde(default = "d_state")]
    pub d_state: usize,
    /// Initialization of A: legs, inv, lin, quad, real, rand (s4d); legs, legt, lagt, fout (s4).
    #[serde(default = "init_legs")]
    pub init: Init,
    /// S4: independent copies of (Λ, P, B) shared round robin by the channels (divides d_model).
    #[serde(default = "one")]
    pub n_ssm: usize,
    /// S4: recurrent form, linear (Woodbury, O(N)) or dense (O(N²)).
    #[serde(default)]
    pub step_mode: StepMode,
    /// Longest sequence the kernels are built for (SGConv's span); 0 = the task's length.
    #[serde(default)]
    pub l_max: usize,
    /// SGConv options.
    #[serde(default)]
    pub sgconv: SgConvOptions,
    /// HOPE options.
    #[serde(default)]
    pub hope: HopeOptions,
    /// S5 options.
    #[serde(default)]
    pub s5: S5Options,
    /// Discretization: zoh or bilinear.
    #[serde(default = "zoh")]
    pub disc: Disc,
    /// Smallest initial step Δ.
    #[serde(default = "dt_min")]
    pub dt_min: f64,
    /// Largest initial step Δ.
    #[serde(default = "dt_max")]
    pub dt_max: f64,
    /// Bidirectional SSM layers (no recurrent mode).
    #[serde(default)]
    pub bidirectional: bool,
    /// Block normalization: layer or batch.
    #[serde(default = "norm_layer")]
    pub norm: NormKind,
    /// Pre-norm (true) or post-norm (false) blocks.
    #[serde(default = "yes")]
    pub prenorm: bool,
    /// Dropout probability inside the SSM layers.
    #[serde(default)]
    pub dropout: f64,
    /// One dropout mask per (sample, channel), shared along the sequence.
    #[serde(default)]
    pub tied_dropout: bool,
    /// Pooling before the decoder: mean, last or none (decoder at every position).
    #[serde(default = "pool_mean")]
    pub pool: Pool,
    /// Output linear H→2H followed by GLU (true) or a plain linear H→H.
    #[serde(default = "yes")]
    pub glu: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

impl ModelConfig {
    /// This config with `l_max = 0` ("the task's length") resolved to `len`.
    pub fn resolved(&self, len: usize) -> ModelConfig {
        let mut c = self.clone();
        if c.l_max == 0 {
            c.l_max = len;
        }
        c
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |f: &str, why: String| Err(format!("model.{f}: {why}"));
        if self.d_model == 0 {
            return bad("d_model", "must be at least 1".into());
        }
        if self.n_layers == 0 {
            return bad("n_layers", "must be at least 1".into());
        }
        if self.d_state < 2 || !self.d_state.is_multiple_of(2) {
            return bad(
                "d_state",
                format!(
                    "must be even and ≥ 2 (N/2 complex modes), got {}",
                    self.d_state
                ),
            );
        }
        if !(self.dt_min > 0.0 && self.dt_max >= self.dt_min && self.dt_max.is_finite()) {
            return bad(
                "dt_min",
                format!(
                    "need 0 < dt_min ≤ dt_max, got {} and {}",
                    self.dt_min, self.dt_max
                ),
            );
        }
        match self.kind {
            LayerKind::S4d if self.init.diag().is_none() => {
                return bad(
                    "init",
                    format!(
                        "{:?} is not an S4D init (legs, inv, lin, quad, real, rand)",
                        self.init
                    ),
                );
            }
            LayerKind::S4 if self.init.dplr().is_none() => {
                return bad(
                    "init",
                    format!(
                        "{:?} is not a HiPPO operator S4 starts from (legs, legt, lagt, fout)",
                        self.init
                    ),
                );
            }
            _ => {}
        }
        if self.n_ssm == 0 || !self.d_model.is_multiple_of(self.n_ssm) {
            return bad(
                "n_ssm",
                format!("must divide d_model = {}, got {}", self.d_model, self.n_ssm),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                format!("must lie in [0, 1), got {}", self.dropout),
            );
        }
        Ok(())
    }
}

/// How inputs enter and outputs leave the model (set by the task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoShape {
    /// Real input channels (0 for token inputs).
    pub d_input: usize,
    /// Vocabulary size for token inputs (0 for real inputs).
    pub vocab: usize,
    /// Output dimension (classes, or regression targets).
    pub d_output: usize,
    /// Two-tower pair classification (LRA Retrieval): each example is two sequences encoded by the
    /// same backbone, pooled to `u`, `v`, and classified from `[u, v, u∗v, u−v]` by an MLP.
    #[serde(default)]
    pub pair: bool,
}

/// A batch of inputs.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a, T> {
    /// Real values `[B, d_input, L]`.
    Real(&'a [T]),
    /// Token ids `[B, L]`.
    Tokens(&'a [u32]),
}

#[derive(Debug)]
pub(crate) enum Norm<T> {
    Layer(LayerNorm<T>),
    Batch(BatchNorm<T>),
}

impl<T: Float> Norm<T> {
    fn new(store: &mut ParamStore<T>, name: &str, kind: NormKind, c: usize) -> Self {
        match kind {
            NormKind::Layer => Norm::Layer(LayerNorm::new(store, name, c)),
            NormKind::Batch => Norm::Batch(BatchNorm::new(store, name, c)),
        }
    }
    fn forward(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        train: bool,
        y: &mut Vec<T>,
    ) {
        match self {
            Norm::Layer(n) => n.forward(store, x, batch, len, y),
            Norm::Batch(n) => n.forward(store, x, batch, len, train, y),
        }
    }
    fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        match self {
            Norm::Layer(n) => n.backward(store, dy, dx),
            Norm::Batch(n) => n.backward(store, dy, dx),
        }
    }
    fn set_lengths(&mut self, lengths: &[usize]) {
        if let Norm::Batch(n) = self {
            n.set_lengths(lengths);
        }
    }
}

/// The sequence map of an SSM layer.
#[derive(Debug)]
pub enum Mixer<T: Float> {
    /// A per-channel convolution kernel (S4, S4D, SGConv, HOPE, S4-PTD) applied by FFT.
    Conv(Box<dyn SequenceKernel<T>>),
    /// S5: one MIMO diagonal system over all channels.
    S5(Box<S5Layer<T>>),
}

impl<T: Float> Mixer<T> {
    /// The recurrent form (an error for non-causal layers).
    pub fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, String> {
        match self {
            Mixer::Conv(k) => k.stepper(store),
            Mixer::S5(s) => s.stepper(store),
        }
    }

    /// The convolution kernel, if this is one.
    pub fn kernel(&self) -> Option<&dyn SequenceKernel<T>> {
        match self {
            Mixer::Conv(k) => Some(k.as_ref()),
            Mixer::S5(_) => None,
        }
    }
}

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

/// One SSM layer (kernel, FFT convolution, skip, GELU, dropout, output projection).
#[derive(Debug)]
pub struct SsmLayer<T: Float> {
    /// The sequence map: a convolution kernel, or S5's MIMO scan.
    pub mixer: Mixer<T>,
    pub(crate) noise: Option<InputNoise>,
    /// `log_dt` of the mixer: per channel (`true`) or per state (S5, `false`).
    pub(crate) dt_param: Option<(ParamId, bool)>,
    /// Skip gain `D [H]`.
    pub d: ParamId,
    pub(crate) h: usize,
    pub(crate) conv: Option<FftConv<T>>,
    pub(crate) gelu: Gelu<T>,
    pub(crate) dropout: Dropout<T>,
    pub(crate) out: Linear<T>,
    pub(crate) glu: Option<Glu<T>>,
    pub(crate) u: Vec<T>,
    pub(crate) k: Vec<T>,
    pub(crate) kfull: Vec<T>,
    pub(crate) c: Vec<T>,
    pub(crate) a: Vec<T>,
    pub(crate) dr: Vec<T>,
    pub(crate) o: Vec<T>,
    pub(crate) g1: Vec<T>,
    pub(crate) g2: Vec<T>,
    pub(crate) du: Vec<T>,
    pub(crate) dkfull: Vec<T>,
    pub(crate) dk: Vec<T>,
    pub(crate) dims: (usize, usize),
    /// Valid length of each batch element (empty: all): the input is zeroed beyond it, so neither
    /// direction of the sequence map sees the padding.
    pub(crate) lengths: Vec<usize>,
}

impl<T: Float> SsmLayer<T> {
    fn new(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: &ModelConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, String> {
        let h = cfg.d_model;
        let kernel: Box<dyn SequenceKernel<T>> = match cfg.kind {
            LayerKind::S5 | LayerKind::S5Ptd => {
                let init = if cfg.kind == LayerKind::S5Ptd {
                    Some(crate::ptd::s5_init(cfg.d_state, cfg.s5.blocks)?)
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
                return Self::with_mixer(store, prefix, cfg, rng, Mixer::S5(Box::new(s5)));
            }
            LayerKind::S4d | LayerKind::S4Ptd => {
                let custom = if cfg.kind == LayerKind::S4Ptd {
                    Some(crate::ptd::s4_modes(cfg.d_state)?)
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
                        .ok_or("model.init: not a HiPPO operator for S4")?,
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
        Self::with_mixer(store, prefix, cfg, rng, Mixer::Conv(kernel))
    }

    fn with_mixer(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: &ModelConfig,
        rng: &mut impl Rng,
        mixer: Mixer<T>,
    ) -> Result<Self, String> {
        let h = cfg.d_model;
        let dvals = (0..h).map(|_| T::of(normal(rng))).collect();
        let d = store.add(format!("{prefix}.d"), &[h], dvals, ParamKind::Weight);
        let out_dim = if cfg.glu { 2 * h } else { h };
        let out = Linear::new(store, &format!("{prefix}.out"), h, out_dim, true, rng);
        let dt_param = store
            .find(&format!("{prefix}.kernel.log_dt"))
            .map(|id| (id, true))
            .or_else(|| {
                store
                    .find(&format!("{prefix}.s5.log_dt"))
                    .map(|id| (id, false))
            });
        Ok(Self {
            mixer,
            noise: None,
            dt_param,
            d,
            h,
            conv: None,
            gelu: Gelu::new(),
            dropout: Dropout::new(cfg.dropout, cfg.tied_dropout),
            out,
            glu: cfg.glu.then(Glu::new),
            u: Vec::new(),
            k: Vec::new(),
            kfull: Vec::new(),
            c: Vec::new(),
            a: Vec::new(),
            dr: Vec::new(),
            o: Vec::new(),
            g1: Vec::new(),
            g2: Vec::new(),
            du: Vec::new(),
            dkfull: Vec::new(),
            dk: Vec::new(),
            dims: (0, 0),
            lengths: Vec::new(),
        })
    }

    /// Adds `amplitude·U[0,1)·cos(freq·t)` to the layer input, t = k·Δ_c on each channel's step grid
    /// (S5: the mean of its per-state steps; SGConv has no step: t = k/L).
    fn add_noise(&mut self, store: &ParamStore<T>, nz: InputNoise, batch: usize, len: usize) {
        let h = self.h;
        let steps: Vec<f64> = match self.dt_param {
            Some((id, true)) => store.value(id).iter().map(|v| v.f64().exp()).collect(),
            Some((id, false)) => {
                let v = store.value(id);
                let mean = v.iter().map(|x| x.f64().exp()).sum::<f64>() / v.len().max(1) as f64;
                vec![mean; h]
            }
            None => vec![1.0 / len as f64; h],
        };
        self.u
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(row, ur)| {
                let ch = row % h;
                let r = crate::layers::splitmix64(
                    nz.seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let amp = nz.amplitude * ((r >> 11) as f64 / (1u64 << 53) as f64);
                for (k, v) in ur.iter_mut().enumerate() {
                    *v += T::of(amp * (nz.freq * k as f64 * steps[ch]).cos());
                }
            });
        let _ = batch;
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        store: &ParamStore<T>,
        u: &[T],
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
        y: &mut Vec<T>,
    ) {
        let h = self.h;
        self.dims = (batch, len);
        layers::keep_copy(&mut self.u, u);
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
        match &mut self.mixer {
            Mixer::S5(s5) => s5.forward(store, &self.u, batch, len, &mut self.c),
            Mixer::Conv(kernel) => {
                if self.conv.as_ref().is_none_or(|c| c.len() != len) {
                    self.conv = Some(FftConv::new(len));
                }
                kernel.forward(store, len, &mut self.k);
                let dirs = kernel.directions();
                let n = 2 * len;
                self.kfull.clear();
                self.kfull.resize(h * n, T::zero());
                for ch in 0..h {
                    let row = &mut self.kfull[ch * n..(ch + 1) * n];
                    row[..len].copy_from_slice(&self.k[ch * len..(ch + 1) * len]);
                    if dirs == 2 {
                        let rev = &self.k[(h + ch) * len..(h + ch + 1) * len];
                        for (j, v) in rev.iter().enumerate() {
                            row[n - 1 - j] += *v;
                        }
                    }
                }
                let conv = self.conv.as_mut().expect("planned above");
                conv.forward(&self.u, &self.kfull, batch, h, &mut self.c);
            }
        }
        let d = store.value(self.d);
        self.c
            .par_chunks_mut(len)
            .zip(self.u.par_chunks(len))
            .enumerate()
            .for_each(|(row, (cr, ur))| {
                let dv = d[row % h];
                cr.iter_mut().zip(ur).for_each(|(c, u)| *c += dv * *u);
            });
        self.gelu.forward(&self.c, &mut self.a);
        let dropped = self
            .dropout
            .forward(&self.a, len, train, seed, &mut self.dr);
        let a = if dropped { &self.dr } else { &self.a };
        if let Some(glu) = &mut self.glu {
            self.out.forward(store, a, batch, len, &mut self.o);
            glu.forward(&self.o, batch, h, len, y);
        } else {
            self.out.forward(store, a, batch, len, y);
        }
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        let h = self.h;
        let (batch, len) = self.dims;
        if let Some(glu) = &self.glu {
            glu.backward(&self.o, dy, &mut self.g1);
            self.out.backward(store, &self.g1, &mut self.g2);
        } else {
            self.out.backward(store, dy, &mut self.g2);
        }
        if self.dropout.active {
            self.dropout.backward(&self.g2, &mut self.g1);
            std::mem::swap(&mut self.g1, &mut self.g2);
        }
        self.gelu.backward(&self.c, &self.g2, &mut self.g1);
        std::mem::swap(&mut self.g1, &mut self.g2);
        // g2 = dℒ/dc: the skip D·u and the convolution
        {
            let (g2, u) = (&self.g2, &self.u);
            let sums: Vec<T> = (0..h)
                .into_par_iter()
                .map(|ch| {
                    (0..batch)
                        .map(|b| {
                            let r = (b * h + ch) * len..(b * h + ch + 1) * len;
                            T::dot(&g2[r.clone()], &u[r])
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
        match &mut self.mixer {
            Mixer::S5(s5) => s5.backward(store, &self.g2, &mut self.du),
            Mixer::Conv(kernel) => {
                let conv = self.conv.as_mut().expect("forward ran");
                conv.backward(&self.g2, &mut self.du, &mut self.dkfull);
                let dirs = kernel.directions();
                let n = 2 * len;
                self.dk.clear();
                self.dk.resize(dirs * h * len, T::zero());
                for ch in 0..h {
                    let row = &self.dkfull[ch * n..(ch + 1) * n];
                    self.dk[ch * len..(ch + 1) * len].copy_from_slice(&row[..len]);
                    if dirs == 2 {
                        for j in 0..len {
                            self.dk[(h + ch) * len + j] = row[n - 1 - j];
                        }
                    }
                }
                kernel.backward(store, &self.dk);
            }
        }
        let d = store.value(self.d);
        dx.resize(self.du.len(), T::zero());
        dx.par_chunks_mut(len)
            .zip(self.du.par_chunks(len))
            .zip(self.g2.par_chunks(len))
            .enumerate()
            .for_each(|(row, ((dxr, dur), gr))| {
                let dv = d[row % h];
                for ((x, u), g) in dxr.iter_mut().zip(dur).zip(gr) {
                    *x = *u + dv * *g;
                }
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
}

/// `out = a + b` elementwise (parallel; `out` keeps its capacity).
fn add_into<T: Float>(out: &mut Vec<T>, a: &[T], b: &[T]) {
    out.resize(a.len(), T::zero());
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096))
        .zip(b.par_chunks(4096))
        .for_each(|((o, a), b)| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = *a + *b;
            }
        });
}

fn normal(rng: &mut impl Rng) -> f64 {
    use rand_distr::{Distribution, StandardNormal};
    StandardNormal.sample(rng)
}

#[derive(Debug)]
pub(crate) struct Block<T: Float> {
    pub(crate) norm: Norm<T>,
    pub(crate) ssm: SsmLayer<T>,
    pub(crate) prenorm: bool,
    pub(crate) z: Vec<T>,
    pub(crate) s: Vec<T>,
    pub(crate) g: Vec<T>,
    pub(crate) g2: Vec<T>,
}

#[derive(Debug)]
pub(crate) enum Encoder<T: Float> {
    Linear(Linear<T>),
    Embedding(Embedding),
}

/// A model: parameters, layers and the activations of the last forward.
#[derive(Debug)]
pub struct Model<T: Float> {
    /// The model configuration.
    pub cfg: ModelConfig,
    /// Input and output shape.
    pub io: IoShape,
    /// All parameters.
    pub store: ParamStore<T>,
    pub(crate) encoder: Encoder<T>,
    pub(crate) blocks: Vec<Block<T>>,
    pub(crate) final_norm: Option<Norm<T>>,
    pub(crate) decoder: Linear<T>,
    /// Two-tower head (`io.pair`): `decoder.hidden` (4H → H), GELU, then `decoder` (H → out).
    pub(crate) pair_head: Option<(Linear<T>, Gelu<T>)>,
    pub(crate) acts: Vec<Vec<T>>,
    pub(crate) fnorm_out: Vec<T>,
    pub(crate) pooled: Vec<T>,
    pub(crate) feats4: Vec<T>,
    pub(crate) hid: Vec<T>,
    pub(crate) hid_act: Vec<T>,
    pub(crate) out: Vec<T>,
    pub(crate) grad_a: Vec<T>,
    pub(crate) grad_b: Vec<T>,
    pub(crate) dims: (usize, usize),
    pub(crate) lengths: Vec<usize>,
}

impl<T: Float> Model<T> {
    /// Builds and initializes a model (parameters drawn from `rng`).
    pub fn new(cfg: &ModelConfig, io: IoShape, rng: &mut impl Rng) -> Result<Self, String> {
        cfg.validate()?;
        if (io.d_input == 0) == (io.vocab == 0) {
            return Err(
                "exactly one of d_input (real inputs) and vocab (tokens) must be non-zero".into(),
            );
        }
        if io.d_output == 0 {
            return Err("the task has no outputs (d_output = 0)".into());
        }
        let h = cfg.d_model;
        let mut store = ParamStore::new();
        let encoder = if io.vocab > 0 {
            Encoder::Embedding(Embedding::new(&mut store, "encoder", io.vocab, h, rng))
        } else {
            Encoder::Linear(Linear::new(&mut store, "encoder", io.d_input, h, true, rng))
        };
        let mut blocks = Vec::new();
        for i in 0..cfg.n_layers {
            let norm = Norm::new(&mut store, &format!("blocks.{i}.norm"), cfg.norm, h);
            let ssm = SsmLayer::new(&mut store, &format!("blocks.{i}.ssm"), cfg, rng)?;
            blocks.push(Block {
                norm,
                ssm,
                prenorm: cfg.prenorm,
                z: Vec::new(),
                s: Vec::new(),
                g: Vec::new(),
                g2: Vec::new(),
            });
        }
        let final_norm = cfg
            .prenorm
            .then(|| Norm::new(&mut store, "final_norm", cfg.norm, h));
        if io.pair && cfg.pool == Pool::None {
            return Err("a two-tower (pair) task needs model.pool = \"mean\" or \"last\"".into());
        }
        let pair_head = io.pair.then(|| {
            (
                Linear::new(&mut store, "decoder.hidden", 4 * h, h, true, rng),
                Gelu::new(),
            )
        });
        let decoder = Linear::new(&mut store, "decoder", h, io.d_output, true, rng);
        Ok(Self {
            cfg: cfg.clone(),
            io,
            store,
            encoder,
            blocks,
            final_norm,
            decoder,
            pair_head,
            acts: Vec::new(),
            fnorm_out: Vec::new(),
            pooled: Vec::new(),
            feats4: Vec::new(),
            hid: Vec::new(),
            hid_act: Vec::new(),
            out: Vec::new(),
            grad_a: Vec::new(),
            grad_b: Vec::new(),
            dims: (0, 0),
            lengths: Vec::new(),
        })
    }

    /// Sets the valid length of each input sequence for later forwards (empty: every sequence has
    /// the full length). Padded positions (`l ≥ lengths[b]`) are zeroed at the input of every
    /// sequence map, left out of BatchNorm statistics and of pooling, so a padded batch gives, on
    /// the valid part, what each sequence gives alone. For pair tasks: one length per sequence
    /// (`2B`, the first towers then the second).
    pub fn set_lengths(&mut self, lengths: &[usize]) {
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
        for blk in &mut self.blocks {
            blk.ssm.lengths.clear();
            blk.ssm.lengths.extend_from_slice(lengths);
            blk.norm.set_lengths(lengths);
        }
        if let Some(f) = &mut self.final_norm {
            f.set_lengths(lengths);
        }
    }

    /// Forward pass; returns the output `[B, d_out]` (pooled) or `[B, d_out, L]` (pool = none).
    /// `batch` counts examples: for a pair task the input holds `2·batch` sequences (all first
    /// documents, then all second documents).
    /// `seed` drives dropout (a function of the training step, so runs are reproducible).
    pub fn forward(
        &mut self,
        input: Input<'_, T>,
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
    ) -> &[T] {
        let h = self.cfg.d_model;
        let examples = batch;
        let batch = if self.io.pair { 2 * batch } else { batch };
        self.dims = (batch, len);
        let nb = self.blocks.len();
        self.acts.resize_with(nb + 1, Vec::new);
        match (&mut self.encoder, input) {
            (Encoder::Linear(lin), Input::Real(x)) => {
                lin.forward(&self.store, x, batch, len, &mut self.acts[0])
            }
            (Encoder::Embedding(e), Input::Tokens(t)) => {
                e.forward(&self.store, t, batch, len, &mut self.acts[0])
            }
            _ => panic!("input kind does not match the model's encoder"),
        }
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            let x = &before[i];
            let y = &mut after[0];
            let lseed = layers::splitmix64(seed ^ layers::splitmix64(i as u64 + 1));
            if blk.prenorm {
                blk.norm
                    .forward(&self.store, x, batch, len, train, &mut blk.z);
                blk.ssm
                    .forward(&self.store, &blk.z, batch, len, train, lseed, &mut blk.s);
                add_into(y, x, &blk.s);
            } else {
                blk.ssm
                    .forward(&self.store, x, batch, len, train, lseed, &mut blk.s);
                add_into(&mut blk.z, x, &blk.s);
                blk.norm.forward(&self.store, &blk.z, batch, len, train, y);
            }
        }
        let last = &self.acts[nb];
        let feats: &[T] = if let Some(fnorm) = &mut self.final_norm {
            fnorm.forward(&self.store, last, batch, len, train, &mut self.fnorm_out);
            &self.fnorm_out
        } else {
            last
        };
        if self.cfg.pool == Pool::None {
            self.decoder
                .forward(&self.store, feats, batch, len, &mut self.out);
        } else {
            layers::pool_forward_masked(
                self.cfg.pool,
                feats,
                batch * h,
                h,
                len,
                &self.lengths,
                &mut self.pooled,
            );
            if let Some((hidden, gelu)) = &mut self.pair_head {
                // [u, v, u∗v, u−v] per example: [B, 4H]
                let (u, v) = self.pooled.split_at(examples * h);
                self.feats4.clear();
                for b in 0..examples {
                    let (ub, vb) = (&u[b * h..(b + 1) * h], &v[b * h..(b + 1) * h]);
                    self.feats4.extend_from_slice(ub);
                    self.feats4.extend_from_slice(vb);
                    self.feats4.extend(ub.iter().zip(vb).map(|(a, b)| *a * *b));
                    self.feats4.extend(ub.iter().zip(vb).map(|(a, b)| *a - *b));
                }
                hidden.forward(&self.store, &self.feats4, examples, 1, &mut self.hid);
                gelu.forward(&self.hid, &mut self.hid_act);
                self.decoder
                    .forward(&self.store, &self.hid_act, examples, 1, &mut self.out);
            } else {
                self.decoder
                    .forward(&self.store, &self.pooled, batch, 1, &mut self.out);
            }
        }
        &self.out
    }

    /// Backward pass from `dout` (same shape as the output); accumulates every parameter gradient.
    pub fn backward(&mut self, dout: &[T]) {
        let (batch, len) = self.dims;
        let h = self.cfg.d_model;
        let mut g = std::mem::take(&mut self.grad_a);
        let mut g2 = std::mem::take(&mut self.grad_b);
        if self.cfg.pool == Pool::None {
            self.decoder.backward(&mut self.store, dout, &mut g);
        } else {
            self.decoder.backward(&mut self.store, dout, &mut g2);
            if let Some((hidden, gelu)) = &mut self.pair_head {
                let examples = batch / 2;
                gelu.backward(&self.hid, &g2, &mut g);
                hidden.backward(&mut self.store, &g, &mut g2);
                // g2 = dℒ/d[u, v, u∗v, u−v]  →  dℒ/du, dℒ/dv stacked as [2B, H]
                let mut dp = vec![T::zero(); batch * h];
                let (u, v) = self.pooled.split_at(examples * h);
                for b in 0..examples {
                    let f = &g2[b * 4 * h..(b + 1) * 4 * h];
                    for j in 0..h {
                        let (gu, gv, gm, gd) = (f[j], f[h + j], f[2 * h + j], f[3 * h + j]);
                        dp[b * h + j] = gu + gm * v[b * h + j] + gd;
                        dp[(examples + b) * h + j] = gv + gm * u[b * h + j] - gd;
                    }
                }
                g2 = dp;
            }
            layers::pool_backward_masked(self.cfg.pool, &g2, h, len, &self.lengths, &mut g);
        }
        if let Some(fnorm) = &mut self.final_norm {
            fnorm.backward(&mut self.store, &g, &mut g2);
            std::mem::swap(&mut g, &mut g2);
        }
        for blk in self.blocks.iter_mut().rev() {
            if blk.prenorm {
                // out = x + ssm(norm(x))
                blk.ssm.backward(&mut self.store, &g, &mut blk.g);
                blk.norm.backward(&mut self.store, &blk.g, &mut blk.g2);
                g.par_chunks_mut(4096)
                    .zip(blk.g2.par_chunks(4096))
                    .for_each(|(a, b)| {
                        a.iter_mut().zip(b).for_each(|(a, b)| *a += *b);
                    });
            } else {
                // out = norm(x + ssm(x))
                blk.norm.backward(&mut self.store, &g, &mut blk.g);
                blk.ssm.backward(&mut self.store, &blk.g, &mut blk.g2);
                add_into(&mut g, &blk.g, &blk.g2);
            }
        }
        match &mut self.encoder {
            Encoder::Linear(lin) => lin.backward(&mut self.store, &g, &mut g2),
            Encoder::Embedding(e) => e.backward(&mut self.store, &g),
        }
        self.grad_a = g;
        self.grad_b = g2;
    }

    /// Adds `noise` to the input of every SSM layer in later forwards (`None` removes it).
    pub fn set_input_noise(&mut self, noise: Option<InputNoise>) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.ssm.noise = noise.map(|n| InputNoise {
                seed: crate::layers::splitmix64(n.seed ^ (i as u64 + 1)),
                ..n
            });
        }
    }

    /// Number of residual blocks.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The impulse responses of block `layer`'s sequence map (without the `D·u` skip), as
    /// `(directions, [dirs, H, len])`: the convolution kernels, or for S5 the responses of each
    /// channel to an impulse on itself.
    pub fn layer_kernels(&mut self, layer: usize, len: usize) -> Result<(usize, Vec<T>), String> {
        let nb = self.blocks.len();
        let blk = self
            .blocks
            .get_mut(layer)
            .ok_or_else(|| format!("layer {layer} does not exist (the model has {nb})"))?;
        let h = self.cfg.d_model;
        match &mut blk.ssm.mixer {
            Mixer::Conv(k) => {
                let mut out = Vec::new();
                k.forward(&self.store, len, &mut out);
                Ok((k.directions(), out))
            }
            Mixer::S5(s5) => {
                let mut u = vec![T::zero(); h * h * len];
                for c in 0..h {
                    u[(c * h + c) * len] = T::one();
                }
                let mut y = Vec::new();
                s5.forward(&self.store, &u, h, len, &mut y);
                let mut out = Vec::with_capacity(h * len);
                for c in 0..h {
                    out.extend_from_slice(&y[(c * h + c) * len..(c * h + c + 1) * len]);
                }
                Ok((1, out))
            }
        }
    }

    /// Gradient of the loss with respect to a real input of the last forward/backward (`[B, d_in, L]`).
    pub fn input_grad(&self) -> &[T] {
        &self.grad_b
    }

    /// The BatchNorm running statistics, by name (`blocks.0.norm.running_mean`, …).
    pub fn buffers(&self) -> Vec<(String, &Vec<T>)> {
        fn push<'a, T: Float>(name: String, n: &'a Norm<T>, out: &mut Vec<(String, &'a Vec<T>)>) {
            if let Norm::Batch(b) = n {
                out.push((format!("{name}.running_mean"), &b.running_mean));
                out.push((format!("{name}.running_var"), &b.running_var));
            }
        }
        let mut out = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            push(format!("blocks.{i}.norm"), &blk.norm, &mut out);
            if let Mixer::Conv(k) = &blk.ssm.mixer {
                for (n, b) in k.buffers() {
                    out.push((format!("blocks.{i}.ssm.kernel.{n}"), b));
                }
            }
        }
        if let Some(f) = &self.final_norm {
            push("final_norm".into(), f, &mut out);
        }
        out
    }

    /// Mutable access to the BatchNorm running statistics, by name.
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<T>)> {
        fn push<'a, T: Float>(
            name: String,
            n: &'a mut Norm<T>,
            out: &mut Vec<(String, &'a mut Vec<T>)>,
        ) {
            if let Norm::Batch(b) = n {
                out.push((format!("{name}.running_mean"), &mut b.running_mean));
                out.push((format!("{name}.running_var"), &mut b.running_var));
            }
        }
        let mut out = Vec::new();
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            push(format!("blocks.{i}.norm"), &mut blk.norm, &mut out);
            if let Mixer::Conv(k) = &mut blk.ssm.mixer {
                for (n, b) in k.buffers_mut() {
                    out.push((format!("blocks.{i}.ssm.kernel.{n}"), b));
                }
            }
        }
        if let Some(f) = &mut self.final_norm {
            push("final_norm".into(), f, &mut out);
        }
        out
    }

    /// A fresh recurrent state for `batch` streams (an error for bidirectional models); the same
    /// as [`Model::stream`].
    pub fn stream_state(&self, batch: usize) -> Result<StreamState<T>, String> {
        self.stream(batch)
    }

    /// One time step for every stream: `x [B, d_in]` (or tokens `[B]`) → output `[B, d_out]`, the
    /// decoder's output as if the sequence ended here (with mean pooling: over the steps so far).
    /// A copy of [`Model::stream_step`]'s output.
    pub fn step(&mut self, st: &mut StreamState<T>, input: Input<'_, T>) -> Vec<T> {
        self.stream_step(st, input).to_vec()
    }
}

/// The recurrent state of a model for `batch` streams (see [`crate::stream`]).
pub type StreamState<T> = crate::stream::Stream<T>;
