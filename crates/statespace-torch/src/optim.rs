//! AdamW on the device, with the CPU engine's parameter groups and update (`statespace-core`'s
//! `engine/optim.rs`), so its moments and step count are ours to checkpoint:
//!
//! ```text
//! m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,   m̂ = m/(1−β₁ᵗ),   v̂ = v/(1−β₂ᵗ)
//! θ ← θ·(1 − ηλ) − η·m̂/(√v̂ + ε)          η, λ per group (weights, no-decay, SSM A, B, Δ)
//! ```
//! Global-norm clipping sums the squares in f64, as the CPU engine.

use crate::model::TorchModel;
use crate::tensor::{from_f64, to_f64};
use crate::{Error, Result};
use statespace_core::engine::optim::{AdamW, OptimConfig};
use tch::{Kind, Tensor};

/// AdamW moments (`m`, `v`, one per parameter in the model's order) and the update count.
#[derive(Debug)]
pub struct TorchAdamW {
    /// First moments.
    pub m: Vec<Tensor>,
    /// Second moments.
    pub v: Vec<Tensor>,
    /// Updates done (the bias corrections use it).
    pub t: u64,
}

impl TorchAdamW {
    /// Zero moments for `model`'s parameters.
    pub fn new(model: &TorchModel) -> Self {
        let z = || -> Vec<Tensor> {
            model
                .params
                .names
                .iter()
                .map(|n| model.params.map[n].zeros_like().detach())
                .collect()
        };
        Self {
            m: z(),
            v: z(),
            t: 0,
        }
    }

    /// The moments of a CPU optimizer (same parameter order as `model`).
    pub fn from_cpu(model: &TorchModel, opt: &AdamW<f32>) -> Result<Self> {
        let mut me = Self::new(model);
        if opt.m.len() != me.m.len() {
            return Err(Error::Invalid(format!(
                "the optimizer holds {} moments, the model has {} parameters",
                opt.m.len(),
                me.m.len()
            )));
        }
        for (i, n) in model.params.names.iter().enumerate() {
            let p = &model.params.map[n];
            let shape: Vec<usize> = p.size().iter().map(|&d| d as usize).collect();
            let up = |v: &[f32]| -> Tensor {
                let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                from_f64(&v, &shape, p.kind(), p.device())
            };
            me.m[i] = up(&opt.m[i]);
            me.v[i] = up(&opt.v[i]);
        }
        me.t = opt.t;
        Ok(me)
    }

    /// Writes the moments and step count into a CPU optimizer.
    pub fn to_cpu(&self, opt: &mut AdamW<f32>) {
        for (slot, t) in opt.m.iter_mut().zip(&self.m) {
            *slot = to_f64(t).into_iter().map(|x| x as f32).collect();
        }
        for (slot, t) in opt.v.iter_mut().zip(&self.v) {
            *slot = to_f64(t).into_iter().map(|x| x as f32).collect();
        }
        opt.t = self.t;
    }

    /// One update of every parameter at learning-rate scale `scale` (a parameter without a
    /// gradient counts as gradient zero, as on the CPU engine).
    pub fn step(&mut self, model: &mut TorchModel, cfg: &OptimConfig, scale: f64) {
        self.t += 1;
        let (b1, b2) = (cfg.beta1, cfg.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        tch::no_grad(|| {
            for (i, name) in model.params.names.iter().enumerate() {
                let (lr, wd) = cfg.group(model.groups[name]);
                let lr = lr * scale;
                let mut p = model.params.map[name].shallow_clone();
                let g = p.grad();
                let g = if g.defined() { g } else { p.zeros_like() };
                let (m, v) = (&mut self.m[i], &mut self.v[i]);
                let _ = m.g_mul_scalar_(b1);
                let _ = m.g_add_(&(&g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2);
                let _ = v.g_add_(&(&g * (1.0 - b2) * &g));
                let denom = (&*v * (1.0 / bc2)).sqrt() + cfg.eps;
                let _ = p.g_mul_scalar_(1.0 - lr * wd);
                let _ = p.g_sub_(&(&*m * (lr / bc1) / denom));
            }
        });
    }
}

/// The global gradient norm (squares summed in f64); scales the gradients to `max_norm` when they
/// exceed it (`max_norm` 0: never). Returns the norm before clipping.
pub fn clip_grad_norm(model: &mut TorchModel, max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = model
            .params
            .names
            .iter()
            .map(|n| model.params.map[n].grad())
            .filter(|g| g.defined())
            .collect();
        let norm = grads
            .iter()
            .map(|g| {
                g.to_kind(Kind::Double)
                    .square()
                    .sum(None::<Kind>)
                    .double_value(&[])
            })
            .sum::<f64>()
            .sqrt();
        if max_norm > 0.0 && norm > max_norm {
            let s = max_norm / (norm + 1e-12);
            for mut g in grads {
                let _ = g.g_mul_scalar_(s);
            }
        }
        norm
    })
}
