//! The sequence maps of the SSM layers, in two families behind one trait, [`SequenceMap`]
//! (`u [B, H, L] → y [B, H, L]`, its backward, its recurrent [`Stepper`]):
//!
//! - per-channel convolution kernels, the [`SequenceKernel`] trait: S4D ([`s4d`], also S4-PTD's
//!   modes), S4 ([`s4`]), SGConv ([`sgconv`]), HOPE ([`hope`]). A kernel turns its parameters into
//!   `dirs` kernels per channel, `K [dirs, H, L]`, and takes `dK` back into its parameters;
//!   [`Convolution`] applies any of them by FFT (the padding to `2L`, the folding of the reverse
//!   direction and the slicing of the gradient live there, once);
//! - S5's MIMO system over all channels ([`s5`], also S5-PTD), a [`SequenceMap`] of its own.
//!
//! [`discretize`] holds the per-mode discretization S4D, S5 and PTD share, [`ptd`] the PTD inits.

use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamStore};
use crate::error::Error;

mod convolution;
pub mod discretize;
pub mod hope;
pub mod ptd;
pub mod s4;
pub mod s4d;
pub mod s5;
pub mod sgconv;

pub use convolution::Convolution;

/// A recurrent form of a kernel for one batch element: state in, one input vector `u [H]` in,
/// `y [H]` out (without the layer's `D·u` skip).
pub trait Stepper<T: Float>: Send + Sync {
    /// Length of the state (per batch element) in `T` values.
    fn state_len(&self) -> usize;
    /// `x ← Ā x + B̄ u`, `y = C x` (for each channel).
    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]);
    /// [`Stepper::step`] for B streams at once: `states [B, state_len]`, `u, y [B, H]`. Kernels
    /// that can read their coefficients once for all streams override it.
    fn step_batch(&self, states: &mut [T], u: &[T], y: &mut [T]) {
        let sl = self.state_len().max(1);
        let batch = (states.len() / sl).max(1);
        let h = (u.len() / batch).max(1);
        for ((st, ub), yb) in states
            .chunks_exact_mut(sl)
            .zip(u.chunks_exact(h))
            .zip(y.chunks_exact_mut(h))
        {
            self.step(st, ub, yb);
        }
    }
}

/// A trainable sequence kernel over `H` channels.
pub trait SequenceKernel<T: Float>: Send + Sync + std::fmt::Debug {
    /// Channels `H`.
    fn channels(&self) -> usize;
    /// 1 (causal) or 2 (bidirectional: forward and reverse kernels).
    fn directions(&self) -> usize;
    /// Computes `K [dirs, H, len]` into `k`, keeping what [`SequenceKernel::backward`] needs.
    fn forward(&mut self, store: &ParamStore<T>, len: usize, k: &mut Vec<T>);
    /// Accumulates the parameter gradients for `dk [dirs, H, len]` of the last `forward`.
    fn backward(&mut self, store: &mut ParamStore<T>, dk: &[T]);
    /// The recurrent form (causal kernels only; a bidirectional kernel returns an error).
    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error>;
    /// Non-trainable state saved in checkpoints (`blocks.i.ssm.kernel.NAME`), e.g. the length S4's
    /// C̃ refers to or SGConv's frozen normalization.
    fn buffers(&self) -> Vec<(&'static str, &Vec<T>)> {
        Vec::new()
    }
    /// Mutable access to [`SequenceKernel::buffers`] (for loading checkpoints).
    fn buffers_mut(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        Vec::new()
    }
    /// The per-channel `log_dt [H]` parameter, if the kernel has a time step (S4D, S4, HOPE).
    fn log_dt(&self) -> Option<ParamId> {
        None
    }
}

/// The sequence map of an SSM layer, in convolution (training) mode: `u [B, H, L] → y [B, H, L]`
/// without the layer's `D·u` skip, its hand-written backward, and its recurrent form. Implemented by
/// [`Convolution`] (any [`SequenceKernel`] by FFT) and by S5 ([`s5::S5Layer`]).
pub trait SequenceMap<T: Float>: Send + Sync + std::fmt::Debug {
    /// Channels `H`.
    fn channels(&self) -> usize;
    /// 1 (causal) or 2 (bidirectional).
    fn directions(&self) -> usize;
    /// `u [B, H, L] → y [B, H, L]`, keeping what [`SequenceMap::backward`] needs.
    fn forward(&mut self, store: &ParamStore<T>, u: &[T], batch: usize, len: usize, y: &mut Vec<T>);
    /// `dy [B, H, L] → du [B, H, L]` for the last forward; accumulates the parameter gradients.
    fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], du: &mut Vec<T>);
    /// The recurrent form (causal maps only; a bidirectional one returns an error).
    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error>;
    /// The impulse responses `(dirs, [dirs, H, len])`: each channel's response to an impulse on
    /// itself (for a convolution, its kernels).
    fn impulse_responses(&mut self, store: &ParamStore<T>, len: usize) -> (usize, Vec<T>);
    /// Each channel's time step Δ (the time axis of the input-noise test), if the map has one.
    fn channel_steps(&self, store: &ParamStore<T>) -> Option<Vec<f64>>;
    /// Non-trainable state saved in checkpoints, named relative to the layer (`kernel.kernel_len`:
    /// `blocks.i.ssm.kernel.kernel_len` in the file).
    fn buffers(&self) -> Vec<(String, &Vec<T>)> {
        Vec::new()
    }
    /// Mutable access to [`SequenceMap::buffers`] (for loading checkpoints).
    fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<T>)> {
        Vec::new()
    }
}
