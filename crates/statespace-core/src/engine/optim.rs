//! AdamW with parameter groups, linear warmup + cosine decay, and global-norm gradient clipping.
//!
//! ```text
//! m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,   m̂ = m/(1−β₁ᵗ),   v̂ = v/(1−β₂ᵗ)
//! θ ← θ − η·(m̂/(√v̂ + ε) + λθ)                      (decoupled weight decay, as PyTorch's AdamW)
//! η(step) = lr_group · s(step),  s = (step+1)/warmup during warmup, then
//!           min_ratio + (1 − min_ratio)·½(1 + cos(π·progress))
//! ```
//!
//! Groups: the SSM parameters `A`, `B` and `log Δ` each have their own lr and weight decay (default
//! lr 1e-3, wd 0, or "global"); weights use the global lr and wd; biases, norms and skips the
//! global lr and no weight decay.

use crate::engine::float::Float;
use crate::engine::params::{ParamKind, ParamStore};
use serde::{Deserialize, Serialize};

/// The word "global" in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Global {
    /// Use the global value.
    Global,
}

/// A group hyperparameter: a number, or "global".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    /// This value.
    Value(f64),
    /// The global value.
    Global(Global),
}

impl Setting {
    /// The value, or `global` when set to "global".
    pub fn or(self, global: f64) -> f64 {
        match self {
            Setting::Value(v) => v,
            Setting::Global(_) => global,
        }
    }
}

fn ssm_lr() -> Setting {
    Setting::Value(1e-3)
}
fn ssm_wd() -> Setting {
    Setting::Value(0.0)
}

/// Learning rate and weight decay of one SSM parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Learning rate (a number or "global").
    #[serde(default = "ssm_lr")]
    pub lr: Setting,
    /// Weight decay (a number or "global").
    #[serde(default = "ssm_wd")]
    pub weight_decay: Setting,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            lr: ssm_lr(),
            weight_decay: ssm_wd(),
        }
    }
}

/// Optimizer hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimConfig {
    /// Global learning rate.
    pub lr: f64,
    /// Global weight decay.
    pub weight_decay: f64,
    /// Group of `A`.
    pub ssm_a: GroupConfig,
    /// Group of `B`.
    pub ssm_b: GroupConfig,
    /// Group of `log Δ`.
    pub ssm_dt: GroupConfig,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
}

impl Default for OptimConfig {
    /// The defaults of a run's `[train]` section: lr 0.01, weight decay 0.05, the SSM groups at lr
    /// 1e-3 without decay, β = (0.9, 0.999), ε = 1e-8.
    fn default() -> Self {
        Self {
            lr: 0.01,
            weight_decay: 0.05,
            ssm_a: GroupConfig::default(),
            ssm_b: GroupConfig::default(),
            ssm_dt: GroupConfig::default(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl OptimConfig {
    /// (lr, weight decay) of a parameter kind, before the schedule.
    pub fn group(&self, kind: ParamKind) -> (f64, f64) {
        match kind {
            ParamKind::Weight => (self.lr, self.weight_decay),
            ParamKind::NoDecay => (self.lr, 0.0),
            ParamKind::SsmA => (
                self.ssm_a.lr.or(self.lr),
                self.ssm_a.weight_decay.or(self.weight_decay),
            ),
            ParamKind::SsmB => (
                self.ssm_b.lr.or(self.lr),
                self.ssm_b.weight_decay.or(self.weight_decay),
            ),
            ParamKind::SsmDt => (
                self.ssm_dt.lr.or(self.lr),
                self.ssm_dt.weight_decay.or(self.weight_decay),
            ),
        }
    }
}

/// AdamW state: first and second moments per parameter, and the step count.
#[derive(Debug, Clone)]
pub struct AdamW<T> {
    /// First moments, one vector per parameter.
    pub m: Vec<Vec<T>>,
    /// Second moments.
    pub v: Vec<Vec<T>>,
    /// Number of updates done.
    pub t: u64,
}

impl<T: Float> AdamW<T> {
    /// Zero moments shaped like `store`.
    pub fn new(store: &ParamStore<T>) -> Self {
        Self {
            m: store
                .params
                .iter()
                .map(|p| vec![T::zero(); p.value.len()])
                .collect(),
            v: store
                .params
                .iter()
                .map(|p| vec![T::zero(); p.value.len()])
                .collect(),
            t: 0,
        }
    }

    /// One update of every parameter with its group's hyperparameters times `scale` (the schedule).
    pub fn step(&mut self, store: &mut ParamStore<T>, cfg: &OptimConfig, scale: f64) {
        self.t += 1;
        let (b1, b2) = (cfg.beta1, cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for (i, p) in store.params.iter_mut().enumerate() {
            let (lr, wd) = cfg.group(p.kind);
            let lr = lr * scale;
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            let (tb1, tb2) = (T::of(b1), T::of(b2));
            let (ob1, ob2) = (T::of(1.0 - b1), T::of(1.0 - b2));
            let decay = T::of(1.0 - lr * wd);
            let step = T::of(lr / bc1);
            let inv_bc2 = T::of(1.0 / bc2);
            let eps = T::of(cfg.eps);
            for j in 0..p.value.len() {
                let g = p.grad[j];
                m[j] = tb1 * m[j] + ob1 * g;
                v[j] = tb2 * v[j] + ob2 * g * g;
                let denom = (v[j] * inv_bc2).sqrt() + eps;
                p.value[j] = p.value[j] * decay - step * m[j] / denom;
            }
        }
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm` (> 0); returns the norm
/// before clipping.
pub fn clip_grad_norm<T: Float>(store: &mut ParamStore<T>, max_norm: f64) -> f64 {
    let norm = store.grad_norm();
    if max_norm > 0.0 && norm > max_norm {
        let s = T::of(max_norm / (norm + 1e-12));
        for p in &mut store.params {
            p.grad.iter_mut().for_each(|g| *g *= s);
        }
    }
    norm
}

/// The schedule factor at `step` (0-based): linear warmup over `warmup` steps, then cosine decay to
/// `min_ratio` at `total` steps.
pub fn schedule(step: usize, warmup: usize, total: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}
