//! The `[model]` section of a config ([`ModelConfig`]), the task's input/output shape ([`IoShape`])
//! and a batch of inputs ([`Input`]).

use crate::engine::layers::Pool;
use crate::error::Error;
use crate::kernels::discretize::Disc;
use crate::kernels::hope::HopeOptions;
use crate::kernels::s4::{DplrInit, StepMode};
use crate::kernels::s5::S5Options;
use crate::kernels::sgconv::SgConvOptions;
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
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |f: &str, why: String| Err(Error::config(&format!("model.{f}"), why));
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
