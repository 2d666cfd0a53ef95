//! The engine: the element type and its SIMD loops, matrix products, the parameter store, the
//! layers with their hand-written backward, the FFT convolution, AdamW and checkpoints.
//!
//! - [`float`]: the [`Float`](float::Float) element type (`f32` training, `f64` gradient checks);
//! - [`simd`]: its vector loops (dot, gemv, the diagonal recurrence step) for AVX-512 and AVX2;
//! - [`gemm`]: matrix products by name ([`Gemm`](gemm::Gemm)) on faer's kernels;
//! - [`params`]: the named parameter store with its gradients and optimizer groups;
//! - [`layers`]: linear, embedding, LayerNorm, BatchNorm, GELU, GLU, dropout, pooling, losses;
//! - [`fftconv`]: per-channel long convolutions by FFT (causal and bidirectional);
//! - [`rfft`]: the real FFT they run on (a half-length complex FFT between two SIMD passes);
//! - [`optim`]: AdamW with parameter groups, schedules, clipping;
//! - [`checkpoint`]: safetensors files with metadata, written atomically;
//! - [`rng`]: counter-based random numbers (dropout masks, input noise).

pub mod checkpoint;
pub mod fftconv;
pub mod float;
pub mod gemm;
pub mod layers;
pub mod optim;
pub mod params;
pub mod rfft;
pub mod rng;
pub mod simd;
