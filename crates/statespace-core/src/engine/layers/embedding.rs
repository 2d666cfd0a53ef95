//! Embedding: y[b, :, l] = W[tok[b, l], :]                tok [B, L] → y [B, D, L]

use super::resize;
use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Token embedding into `[B, D, L]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// Table `[V, D]`.
    pub w: ParamId,
    /// Vocabulary size.
    pub vocab: usize,
    /// Embedding dimension.
    pub dim: usize,
    tokens: Vec<u32>,
    dims: (usize, usize),
}

impl Embedding {
    /// Registers `name.weight` with N(0, 1) entries (PyTorch's default).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        name: &str,
        vocab: usize,
        dim: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let normal = Normal::new(0.0, 1.0).expect("valid normal");
        let w = (0..vocab * dim)
            .map(|_| T::of(normal.sample(rng)))
            .collect();
        let w = store.add(
            format!("{name}.weight"),
            &[vocab, dim],
            w,
            ParamKind::Weight,
        );
        Self {
            w,
            vocab,
            dim,
            tokens: Vec::new(),
            dims: (0, 0),
        }
    }

    /// `tok [B, L] → y [B, D, L]`. Tokens must be `< vocab` (checked by the data layer).
    pub fn forward<T: Float>(
        &mut self,
        store: &ParamStore<T>,
        tok: &[u32],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        let d = self.dim;
        self.tokens.clear();
        self.tokens.extend_from_slice(tok);
        self.dims = (batch, len);
        resize(y, batch * d * len);
        let w = store.value(self.w);
        y.par_chunks_mut(d * len).enumerate().for_each(|(b, yb)| {
            for l in 0..len {
                let t = tok[b * len + l] as usize;
                for j in 0..d {
                    yb[j * len + l] = w[t * d + j];
                }
            }
        });
    }

    /// Accumulates `dW[tok] += dy` (no input gradient).
    pub fn backward<T: Float>(&mut self, store: &mut ParamStore<T>, dy: &[T]) {
        let (batch, len) = self.dims;
        let d = self.dim;
        let dw = store.grad_mut(self.w);
        for b in 0..batch {
            for l in 0..len {
                let t = self.tokens[b * len + l] as usize;
                for j in 0..d {
                    dw[t * d + j] += dy[(b * d + j) * len + l];
                }
            }
        }
    }

    /// One token per stream, for recurrent steps: `tok [B] → y [B, D]`. Tokens must be `< vocab`.
    pub fn step<T: Float>(&self, store: &ParamStore<T>, tok: &[u32], y: &mut [T]) {
        let (d, w) = (self.dim, store.value(self.w));
        assert_eq!(
            y.len(),
            tok.len() * d,
            "Embedding::step: y [B, {d}] for B tokens"
        );
        for (yr, &t) in y.chunks_exact_mut(d).zip(tok) {
            let t = t as usize;
            yr.copy_from_slice(&w[t * d..(t + 1) * d]);
        }
    }
}
