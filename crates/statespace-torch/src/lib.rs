//! statespace on PyTorch's engine: the models of `statespace-core` (every kind and the whole
//! backbone) written as libtorch operations through `tch`, so they train with autograd on GPUs and
//! under PyTorch's distributed engine.
//!
//! The CPU engine stays the reference: a [`TorchModel`] is built from a CPU [`Model`]'s parameters
//! (the same inits from `statespace-math`, the same names, shapes and parameterizations as
//! `docs/checkpoint-format.md`), and its outputs and gradients are tested against the CPU engine's
//! hand-written backward (`tests/parity.rs`).
//!
//! ```text
//! kernels/    one file per kernel family, K [dirs, H, L] from the parameters (autograd through it)
//!   s4d.rs    S4D and S4-PTD (Vandermonde)          s4.rs   S4 (Cauchy + Woodbury, C̃)
//!   s5.rs     S5 and S5-PTD (the scan as a complex FFT convolution per state)
//!   sgconv.rs SGConv (upsampled sub-kernels)        hope.rs HOPE (all-pass cascade by doubling)
//!   fftconv.rs the causal / bidirectional FFT convolution shared by the kernels
//! model.rs    encoder, residual blocks (LayerNorm / masked BatchNorm, GELU, dropout, GLU), pooling,
//!             decoder, two-tower head
//! optim.rs    AdamW in tch ops (the CPU engine's groups and update order), global-norm clipping
//! train.rs    the torch engine under statespace-train's run loop (`--engine torch`)
//! bench.rs    the cases of `statespace bench --engine torch`
//! ```
//!
//! Kernel generation runs in f64 by default ([`TorchOptions::kernel_f64`]), as the CPU engine's
//! does: the phases `l·Im(ΔA)` reach 10⁴–10⁵ rad at long L, beyond what f32 resolves; the kernel is
//! rounded to the model's dtype once.
//!
//! [`Model`]: statespace_core::model::Model

pub mod bench;
pub mod dropout;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod tensor;
pub mod train;

pub use model::{TorchInput, TorchModel, TorchOptions};
pub use optim::TorchAdamW;
pub use tch;
pub use train::TorchEngine;

/// Errors of the torch engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the CPU engine's model layer (config, init).
    #[error(transparent)]
    Core(#[from] statespace_core::Error),
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

/// Result of the torch engine.
pub type Result<T> = std::result::Result<T, Error>;
