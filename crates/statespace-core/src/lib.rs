//! # statespace-core
//!
//! The training engine, written like llm.c: every layer has an explicit `forward` that keeps what its
//! hand-written `backward` needs; activations are `[batch, channels, length]` end to end; FFTs run along
//! the contiguous length, linear layers are GEMMs over channels; rayon threads over batch × channels.
//! Generic over `f32` (training) and `f64` (gradient checks against finite differences).
//!
//! - [`engine`]: the element type and SIMD loops, products, parameters, layers, FFT convolution,
//!   AdamW, checkpoints;
//! - [`kernels`]: the sequence kernels (S4D, S4, S5, SGConv, HOPE, PTD) and their recurrent forms;
//! - [`model`]: SSM layers, residual blocks, the backbone and its streaming runtime.
//!
//! Runs (configs, tasks, the training loop) live in `statespace-train`; benchmarks in
//! `statespace-bench`.

pub mod engine;
pub mod error;
pub mod kernels;
pub mod model;

pub use engine::float::Float;
pub use error::{Error, Result};
