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

impl LayerKind {
    /// Every kind.
    pub const ALL: [LayerKind; 7] = [
        LayerKind::S4d,
        LayerKind::S4,
        LayerKind::Sgconv,
        LayerKind::Hope,
        LayerKind::S5,
        LayerKind::S4Ptd,
        LayerKind::S5Ptd,
    ];

    /// The name in configs (`s4d`, `s4-ptd`, …).
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::S4d => "s4d",
            LayerKind::S4 => "s4",
            LayerKind::Sgconv => "sgconv",
            LayerKind::Hope => "hope",
            LayerKind::S5 => "s5",
            LayerKind::S4Ptd => "s4-ptd",
            LayerKind::S5Ptd => "s5-ptd",
        }
    }
}

/// The name of a config value as configs spell it (`zoh`, `legs`, `bilinear`): its serde name.
pub fn config_name<T: Serialize>(v: &T) -> String {
    match toml::Value::try_from(v) {
        Ok(toml::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Which fields of `[model]` (and its subsections) each kind reads; any other field must keep its
/// default (so a value set for another kind is reported, not silently ignored).
fn kinds_using(field: &str) -> &'static [LayerKind] {
    use LayerKind::*;
    match field {
        "init" => &[S4d, S4],
        "n_ssm" | "step_mode" => &[S4],
        "l_max" | "sgconv" => &[Sgconv],
        "hope" => &[Hope],
        "s5" => &[S5, S5Ptd],
        "disc" => &[S4d, S4Ptd, S5, S5Ptd],
        "d_state" | "dt_min" | "dt_max" => &[S4d, S4, Hope, S5, S4Ptd, S5Ptd],
        _ => &LayerKind::ALL,
    }
}

/// The first dotted key at which two TOML values differ (`""` when the values themselves differ).
fn first_difference(a: &toml::Value, b: &toml::Value) -> Option<String> {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v).map(|d| {
                    if d.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}.{d}")
                    }
                }),
                _ => Some(k.clone()),
            })
        }
        _ => (a != b).then(String::new),
    }
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
    /// This config with `l_max = 0` ("the task's length") resolved to `len` (for the kinds that
    /// read it).
    pub fn resolved(&self, len: usize) -> ModelConfig {
        let mut c = self.clone();
        if c.l_max == 0 && kinds_using("l_max").contains(&c.kind) {
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
        // sizes beyond these overflow index arithmetic long before memory runs out
        for (f, v, max) in [
            ("d_model", self.d_model, 1 << 16),
            ("n_layers", self.n_layers, 1 << 12),
            ("d_state", self.d_state, 1 << 14),
            ("l_max", self.l_max, 1 << 26),
            ("n_ssm", self.n_ssm, 1 << 16),
        ] {
            if v > max {
                return bad(f, format!("must be at most {max}, got {v}"));
            }
        }
        let s5 = &self.s5;
        if s5.blocks == 0 || s5.blocks > self.d_state {
            return bad(
                "s5.blocks",
                format!(
                    "must lie in 1 ..= d_state = {}, got {}",
                    self.d_state, s5.blocks
                ),
            );
        }
        if !(s5.step_rescale > 0.0 && s5.step_rescale.is_finite()) {
            return bad(
                "s5.step_rescale",
                format!("must be positive and finite, got {}", s5.step_rescale),
            );
        }
        let sg = &self.sgconv;
        if sg.kernel_dim == 0 || sg.kernel_dim > 1 << 20 {
            return bad(
                "sgconv.kernel_dim",
                format!("must lie in 1 ..= 2^20, got {}", sg.kernel_dim),
            );
        }
        for (f, v) in [
            ("sgconv.decay_min", sg.decay_min),
            ("sgconv.decay_max", sg.decay_max),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(f, format!("must be positive and finite, got {v}"));
            }
        }
        Ok(())
    }

    /// This config with every field the kind does not read set to its default (it had no effect):
    /// how a checkpoint written before such fields were refused is read.
    pub fn without_unused_fields(&self) -> ModelConfig {
        let d = toml::Value::try_from(ModelConfig::default()).expect("a config is TOML");
        let me = toml::Value::try_from(self).expect("a config is TOML");
        let (toml::Value::Table(d), toml::Value::Table(mut me)) = (d, me) else {
            return self.clone();
        };
        for (field, value) in me.iter_mut() {
            if !kinds_using(field).contains(&self.kind)
                && let Some(dv) = d.get(field)
            {
                *value = dv.clone();
            }
        }
        toml::Value::Table(me)
            .try_into()
            .unwrap_or_else(|_| self.clone())
    }

    /// A field the chosen kind does not read, set to a non-default value, is an error naming the
    /// field and the kinds that read it (`config.toml` writes every field, so defaults pass).
    /// Run configs are checked so ([`validate`](Self::validate) checks values only, so code may
    /// build one config and change its kind).
    pub fn check_fields_of_other_kinds(&self) -> Result<(), Error> {
        let d = toml::Value::try_from(ModelConfig::default()).expect("a config is TOML");
        let me = toml::Value::try_from(self).expect("a config is TOML");
        let (toml::Value::Table(d), toml::Value::Table(me)) = (d, me) else {
            return Ok(());
        };
        for (field, value) in &me {
            let users = kinds_using(field);
            if users.contains(&self.kind) {
                continue;
            }
            if let Some(diff) = d.get(field).and_then(|dv| first_difference(dv, value)) {
                let name = if diff.is_empty() {
                    field.clone()
                } else {
                    format!("{field}.{diff}")
                };
                let users: Vec<&str> = users.iter().map(|k| k.name()).collect();
                return Err(Error::config(
                    &format!("model.{name}"),
                    format!(
                        "is not used by kind = \"{}\" (only by {}); remove it or keep its default",
                        self.kind.name(),
                        users.join(", ")
                    ),
                ));
            }
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
