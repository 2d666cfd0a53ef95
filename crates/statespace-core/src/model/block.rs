//! The residual block around an SSM layer, and the norms it uses.
//!
//! ```text
//! pre-norm:  y = x + ssm(norm(x))          post-norm:  y = norm(x + ssm(x))
//! ```

use super::config::{ModelConfig, NormKind};
use super::ssm_layer::{SsmLayer, StepScratch};
use crate::engine::float::Float;
use crate::engine::layers::PackedWeights;
use crate::engine::layers::{BatchNorm, LayerNorm};
use crate::engine::params::ParamStore;
use crate::error::Error;
use crate::kernels::Stepper;
use rand::Rng;
use rayon::prelude::*;

/// The normalization of a block: LayerNorm over channels or BatchNorm over batch and length.
#[derive(Debug)]
pub enum Norm<T> {
    /// LayerNorm over channels.
    Layer(LayerNorm<T>),
    /// BatchNorm over (batch, length) per channel, running statistics for evaluation.
    Batch(BatchNorm<T>),
}

impl<T: Float> Norm<T> {
    /// Registers `name.weight`, `name.bias` (and, for BatchNorm, its running statistics as buffers).
    pub fn new(store: &mut ParamStore<T>, name: &str, kind: NormKind, c: usize) -> Self {
        match kind {
            NormKind::Layer => Norm::Layer(LayerNorm::new(store, name, c)),
            NormKind::Batch => Norm::Batch(BatchNorm::new(store, name, c)),
        }
    }

    /// `x [B, C, L] → y [B, C, L]` (`train`: BatchNorm uses and updates the batch statistics).
    pub fn forward(
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

    /// `dy → dx` for the last forward; accumulates γ, β gradients.
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        match self {
            Norm::Layer(n) => n.backward(store, dy, dx),
            Norm::Batch(n) => n.backward(store, dy, dx),
        }
    }

    /// Valid lengths of the batch elements (BatchNorm's statistics skip the padding).
    pub fn set_lengths(&mut self, lengths: &[usize]) {
        if let Norm::Batch(n) = self {
            n.set_lengths(lengths);
        }
    }

    /// One step of every stream: `x [B, C] → y [B, C]` (evaluation mode).
    pub fn step(&self, store: &ParamStore<T>, x: &[T], y: &mut [T]) {
        match self {
            Norm::Layer(n) => n.step(store, x, y),
            Norm::Batch(n) => n.step(store, x, y),
        }
    }

    /// The BatchNorm running statistics `(running_mean, running_var)`, if this is a BatchNorm.
    pub fn running_stats(&self) -> Option<(&Vec<T>, &Vec<T>)> {
        match self {
            Norm::Batch(b) => Some((&b.running_mean, &b.running_var)),
            Norm::Layer(_) => None,
        }
    }

    /// Mutable [`Norm::running_stats`] (for loading checkpoints).
    pub fn running_stats_mut(&mut self) -> Option<(&mut Vec<T>, &mut Vec<T>)> {
        match self {
            Norm::Batch(b) => Some((&mut b.running_mean, &mut b.running_var)),
            Norm::Layer(_) => None,
        }
    }
}

/// `out = a + b` elementwise (parallel; `out` keeps its capacity).
pub(crate) fn add_into<T: Float>(out: &mut Vec<T>, a: &[T], b: &[T]) {
    out.resize(a.len(), T::zero());
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096))
        .zip(b.par_chunks(4096))
        .for_each(|((o, a), b)| {
            crate::engine::simd::with_isa(
                #[inline(always)]
                || {
                    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                        *o = *a + *b;
                    }
                },
            )
        });
}

/// `a += b` elementwise (parallel).
fn add_assign<T: Float>(a: &mut [T], b: &[T]) {
    a.par_chunks_mut(4096)
        .zip(b.par_chunks(4096))
        .for_each(|(a, b)| {
            crate::engine::simd::with_isa(
                #[inline(always)]
                || a.iter_mut().zip(b).for_each(|(a, b)| *a += *b),
            )
        });
}

/// A residual block: norm and SSM layer, pre-norm `x + ssm(norm(x))` or post-norm
/// `norm(x + ssm(x))`. Parameters `PREFIX.norm.*` and `PREFIX.ssm.*`.
#[derive(Debug)]
pub struct SsmBlock<T: Float> {
    /// The block's norm.
    pub norm: Norm<T>,
    /// The SSM layer.
    pub ssm: SsmLayer<T>,
    /// Pre-norm (true) or post-norm (false).
    pub prenorm: bool,
    /// `inner [B, H, L]`: pre-norm `norm(x)` (the layer's input), post-norm `x + ssm(x)` (the norm's).
    inner: Vec<T>,
    /// `ssm_out [B, H, L]`: the SSM layer's output.
    ssm_out: Vec<T>,
    /// `grad_a`, `grad_b [B, H, L]`: gradient scratch of the backward.
    grad_a: Vec<T>,
    grad_b: Vec<T>,
}

impl<T: Float> SsmBlock<T> {
    /// Builds the block `prefix` (e.g. `blocks.0`) of `cfg`'s kind and width, drawing its
    /// parameters from `rng`.
    pub fn new(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: &ModelConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let norm = Norm::new(store, &format!("{prefix}.norm"), cfg.norm, cfg.d_model);
        let ssm = SsmLayer::new(store, &format!("{prefix}.ssm"), cfg, rng)?;
        Ok(Self {
            norm,
            ssm,
            prenorm: cfg.prenorm,
            inner: Vec::new(),
            ssm_out: Vec::new(),
            grad_a: Vec::new(),
            grad_b: Vec::new(),
        })
    }

    /// Valid length of each batch element for later forwards (empty: all).
    pub fn set_lengths(&mut self, lengths: &[usize]) {
        self.ssm.set_lengths(lengths);
        self.norm.set_lengths(lengths);
    }

    /// `x [B, H, L] → y [B, H, L]`; `seed` drives the layer's dropout.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
        y: &mut Vec<T>,
    ) {
        if self.prenorm {
            self.norm
                .forward(store, x, batch, len, train, &mut self.inner);
            // the norm's output is the layer's input, handed over (not copied)
            self.ssm.forward_owned(
                store,
                &mut self.inner,
                batch,
                len,
                train,
                seed,
                &mut self.ssm_out,
            );
            add_into(y, x, &self.ssm_out);
        } else {
            self.ssm
                .forward(store, x, batch, len, train, seed, &mut self.ssm_out);
            add_into(&mut self.inner, x, &self.ssm_out);
            self.norm.forward(store, &self.inner, batch, len, train, y);
        }
    }

    /// `dy [B, H, L] → dx [B, H, L]` for the last forward; accumulates the parameter gradients.
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        if self.prenorm {
            // y = x + ssm(norm(x))
            self.ssm.backward(store, dy, &mut self.grad_a);
            self.norm.backward(store, &self.grad_a, &mut self.grad_b);
            dx.clear();
            dx.extend_from_slice(dy);
            add_assign(dx, &self.grad_b);
        } else {
            // y = norm(x + ssm(x))
            self.norm.backward(store, dy, &mut self.grad_a);
            self.ssm.backward(store, &self.grad_a, &mut self.grad_b);
            add_into(dx, &self.grad_a, &self.grad_b);
        }
    }

    /// The backward in place: `grad ← ∂ℒ/∂x` from `grad = ∂ℒ/∂y` (no copy for pre-norm blocks).
    pub fn backward_in_place(&mut self, store: &mut ParamStore<T>, grad: &mut Vec<T>) {
        if self.prenorm {
            self.ssm.backward(store, grad, &mut self.grad_a);
            self.norm.backward(store, &self.grad_a, &mut self.grad_b);
            add_assign(grad, &self.grad_b);
        } else {
            self.norm.backward(store, grad, &mut self.grad_a);
            self.ssm.backward(store, &self.grad_a, &mut self.grad_b);
            add_into(grad, &self.grad_a, &self.grad_b);
        }
    }

    /// One step of every stream: `x [B, H]` updated in place, the layer's recurrent states
    /// (`[B, stepper.state_len()]`) advanced, `packed` the layer's [`SsmLayer::pack_step`];
    /// allocates nothing.
    pub fn step(
        &self,
        store: &ParamStore<T>,
        stepper: &dyn Stepper<T>,
        packed: &PackedWeights<T>,
        states: &mut [T],
        x: &mut [T],
        scratch: &mut StepScratch<T>,
    ) {
        let mut inner = std::mem::take(&mut scratch.inner);
        let mut out = std::mem::take(&mut scratch.out);
        let n = x.len();
        if self.prenorm {
            self.norm.step(store, x, &mut inner[..n]);
            self.ssm.step(
                store,
                stepper,
                packed,
                states,
                &inner[..n],
                scratch,
                &mut out[..n],
            );
            x.iter_mut().zip(&out[..n]).for_each(|(a, b)| *a += *b);
        } else {
            self.ssm
                .step(store, stepper, packed, states, x, scratch, &mut out[..n]);
            for ((z, a), b) in inner[..n].iter_mut().zip(x.iter()).zip(&out[..n]) {
                *z = *a + *b;
            }
            self.norm.step(store, &inner[..n], x);
        }
        scratch.inner = inner;
        scratch.out = out;
    }
}
