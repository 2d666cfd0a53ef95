//! The trait every sequence kernel implements (S4D now; S4, S5, PTD, SGConv, HOPE plug in here).
//!
//! A kernel turns its parameters into `dirs` convolution kernels per channel, `K [dirs, H, L]`
//! (convolution mode, trained through the FFT convolution), takes `dK` back into its parameters, and —
//! for causal kernels — gives a recurrent stepper whose impulse response is the same kernel.

use crate::float::Float;
use crate::params::ParamStore;

/// A recurrent form of a kernel for one batch element: state in, one input vector `u [H]` in,
/// `y [H]` out (without the layer's `D·u` skip).
pub trait Stepper<T: Float>: Send + Sync {
    /// Length of the state (per batch element) in `T` values.
    fn state_len(&self) -> usize;
    /// `x ← Ā x + B̄ u`, `y = C x` (for each channel).
    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]);
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
    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, String>;
    /// Non-trainable state saved in checkpoints (`blocks.i.ssm.kernel.NAME`), e.g. the length S4's
    /// C̃ refers to or SGConv's frozen normalization.
    fn buffers(&self) -> Vec<(&'static str, &Vec<T>)> {
        Vec::new()
    }
    /// Mutable access to [`SequenceKernel::buffers`] (for loading checkpoints).
    fn buffers_mut(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        Vec::new()
    }
}
