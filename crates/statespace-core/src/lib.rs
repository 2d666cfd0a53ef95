//! # statespace-core
//!
//! The training engine, written like llm.c: every layer has an explicit `forward` that keeps what its
//! hand-written `backward` needs; activations are `[batch, channels, length]` end to end; FFTs run along
//! the contiguous length, linear layers are GEMMs over channels; rayon threads over batch × channels.
//! Generic over `f32` (training) and `f64` (gradient checks against finite differences).
//!
//! - [`layers`]: linear, embedding, LayerNorm, BatchNorm, GELU, GLU, dropout, pooling, losses;
//! - [`fftconv`]: per-channel long convolutions by FFT (causal and bidirectional);
//! - [`kernel`]: the [`kernel::SequenceKernel`] trait every SSM kernel implements;
//! - [`s4d`]: the S4D kernel;
//! - [`model`]: the residual backbone;
//! - [`params`]: the named parameter store;
//! - [`optim`]: AdamW with parameter groups, schedules, clipping;
//! - [`checkpoint`]: safetensors checkpoints, written atomically;
//! - [`train`]: run configs, the training loop, evaluation, resume;
//! - [`stream`]: lean streaming inference (no allocation per step, prompt prefill).

pub mod bench;
pub mod checkpoint;
pub mod fftconv;
pub mod float;
pub mod hope;
pub mod kernel;
pub mod layers;
pub mod model;
pub mod optim;
pub mod params;
pub mod ptd;
pub mod s4;
pub mod s4d;
pub mod s5;
pub mod sgconv;
pub mod stream;
pub mod train;

pub use float::Float;
