//! The engine's layers, llm.c style: each `forward` keeps what its `backward` needs in the layer's own
//! buffers (reused from step to step, so the step loop does not allocate once shapes are fixed), and
//! each `backward` is written by hand next to it. Activations are `[batch, channels, length]`
//! (`[B, C, L]`), row-major: channel rows of `L` contiguous values.

use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use rayon::prelude::*;

mod batch_norm;
mod dropout;
mod embedding;
mod gelu;
mod glu;
mod layer_norm;
mod linear;
mod loss;
mod pool;

pub use crate::engine::rng::splitmix64;
pub use batch_norm::BatchNorm;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use gelu::Gelu;
pub use glu::Glu;
pub use layer_norm::LayerNorm;
pub use linear::{Linear, PackedWeights};
pub use loss::{IGNORE, cross_entropy, mse};
pub use pool::{
    Pool, pool_backward, pool_backward_masked, pool_forward, pool_forward_masked, valid_len,
};

/// Threads used by GEMM calls (the rayon pool's size).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Sets the length to `n` without clearing: every caller overwrites all `n` entries (buffers keep
/// their capacity from step to step, so this neither allocates nor touches memory twice).
pub(crate) fn resize<T: Float>(v: &mut Vec<T>, n: usize) {
    v.truncate(n);
    v.resize(n, T::zero());
}

/// `dst ← src` (a copy a layer keeps for its backward), on the rayon pool: a single-threaded
/// `memcpy` of the 8–16 MB activations of a training step was 10 % of its time.
pub(crate) fn keep_copy<T: Float>(dst: &mut Vec<T>, src: &[T]) {
    resize(dst, src.len());
    dst.par_chunks_mut(1 << 15)
        .zip(src.par_chunks(1 << 15))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Sets the length to `n` and zeroes every entry (for buffers written only in part).
pub(crate) fn zeroed<T: Float>(v: &mut Vec<T>, n: usize) {
    v.clear();
    v.resize(n, T::zero());
}

/// The per-channel affine of a norm: `name.weight` (ones) and `name.bias` (zeros), no weight decay.
pub(crate) fn affine<T: Float>(
    store: &mut ParamStore<T>,
    name: &str,
    c: usize,
) -> (ParamId, ParamId) {
    let gamma = store.add(
        format!("{name}.weight"),
        &[c],
        vec![T::one(); c],
        ParamKind::NoDecay,
    );
    let beta = store.add(
        format!("{name}.bias"),
        &[c],
        vec![T::zero(); c],
        ParamKind::NoDecay,
    );
    (gamma, beta)
}
