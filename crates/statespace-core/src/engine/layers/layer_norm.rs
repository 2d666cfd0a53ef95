//! LayerNorm over channels at each (b, l):  y = γ (x − μ)/σ + β

use super::{affine, resize};
use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamStore};
use rayon::prelude::*;

/// Layer normalization over the channel dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm<T> {
    /// Scale γ `[C]`.
    pub gamma: ParamId,
    /// Shift β `[C]`.
    pub beta: ParamId,
    /// Channels.
    pub c: usize,
    eps: f64,
    xhat: Vec<T>,
    rstd: Vec<T>,
    dims: (usize, usize),
}

impl<T: Float> LayerNorm<T> {
    /// The ε added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Registers `name.weight` (ones) and `name.bias` (zeros).
    pub fn new(store: &mut ParamStore<T>, name: &str, c: usize) -> Self {
        let (gamma, beta) = affine(store, name, c);
        Self {
            gamma,
            beta,
            c,
            eps: 1e-5,
            xhat: Vec::new(),
            rstd: Vec::new(),
            dims: (0, 0),
        }
    }

    /// `x [B, C, L] → y [B, C, L]`.
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        let c = self.c;
        self.dims = (batch, len);
        resize(y, batch * c * len);
        resize(&mut self.xhat, batch * c * len);
        resize(&mut self.rstd, batch * len);
        let (gamma, beta) = (store.value(self.gamma), store.value(self.beta));
        let inv_c = T::of(1.0 / c as f64);
        let eps = T::of(self.eps);
        y.par_chunks_mut(c * len)
            .zip(self.xhat.par_chunks_mut(c * len))
            .zip(self.rstd.par_chunks_mut(len))
            .zip(x.par_chunks(c * len))
            .for_each(|(((yb, hb), rb), xb)| {
                // compiled for the dispatched instruction set (without it: SSE code, measured)
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        let mut mean = vec![T::zero(); len];
                        for ch in 0..c {
                            for (m, v) in mean.iter_mut().zip(&xb[ch * len..(ch + 1) * len]) {
                                *m += *v;
                            }
                        }
                        mean.iter_mut().for_each(|m| *m *= inv_c);
                        let mut var = vec![T::zero(); len];
                        for ch in 0..c {
                            for ((s, v), m) in
                                var.iter_mut().zip(&xb[ch * len..(ch + 1) * len]).zip(&mean)
                            {
                                let d = *v - *m;
                                *s += d * d;
                            }
                        }
                        for (r, s) in rb.iter_mut().zip(&var) {
                            *r = T::one() / (*s * inv_c + eps).sqrt();
                        }
                        for ch in 0..c {
                            let (g, bt) = (gamma[ch], beta[ch]);
                            for l in 0..len {
                                let h = (xb[ch * len + l] - mean[l]) * rb[l];
                                hb[ch * len + l] = h;
                                yb[ch * len + l] = g * h + bt;
                            }
                        }
                    },
                )
            });
    }

    /// `dy → dx = σ⁻¹(ĝ − mean(ĝ) − x̂·mean(ĝ x̂))` with `ĝ = γ dy`; accumulates `dγ`, `dβ`.
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        let c = self.c;
        let (batch, len) = self.dims;
        resize(dx, batch * c * len);
        let gamma = store.value(self.gamma).to_vec();
        let inv_c = T::of(1.0 / c as f64);
        // per-batch partial sums of dγ and dβ, reduced in order afterwards (deterministic)
        let partial: Vec<(Vec<T>, Vec<T>)> = dx
            .par_chunks_mut(c * len)
            .zip(dy.par_chunks(c * len))
            .zip(self.xhat.par_chunks(c * len))
            .zip(self.rstd.par_chunks(len))
            .map(|(((dxb, dyb), hb), rb)| {
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        let mut m1 = vec![T::zero(); len];
                        let mut m2 = vec![T::zero(); len];
                        let mut dg = vec![T::zero(); c];
                        let mut dbt = vec![T::zero(); c];
                        for ch in 0..c {
                            let g = gamma[ch];
                            let (dr, hr) = (
                                &dyb[ch * len..(ch + 1) * len],
                                &hb[ch * len..(ch + 1) * len],
                            );
                            // reductions over l (SIMD dot products), then elementwise sums over channels
                            dg[ch] = T::dot(dr, hr);
                            dbt[ch] = crate::engine::simd::sum(dr);
                            for ((a, b), (d, h)) in
                                m1.iter_mut().zip(m2.iter_mut()).zip(dr.iter().zip(hr))
                            {
                                *a += g * *d;
                                *b += g * *d * *h;
                            }
                        }
                        for ch in 0..c {
                            let g = gamma[ch];
                            for l in 0..len {
                                let i = ch * len + l;
                                dxb[i] =
                                    rb[l] * (g * dyb[i] - m1[l] * inv_c - hb[i] * m2[l] * inv_c);
                            }
                        }
                        (dg, dbt)
                    },
                )
            })
            .collect();
        for (dg, dbt) in partial {
            store
                .grad_mut(self.gamma)
                .iter_mut()
                .zip(&dg)
                .for_each(|(a, b)| *a += *b);
            store
                .grad_mut(self.beta)
                .iter_mut()
                .zip(&dbt)
                .for_each(|(a, b)| *a += *b);
        }
    }

    /// The same map on single vectors, for recurrent steps: `x [B, C] → y [B, C]` (each row
    /// normalized over its C channels; nothing kept, nothing allocated).
    pub fn step(&self, store: &ParamStore<T>, x: &[T], y: &mut [T]) {
        let c = self.c;
        let (gamma, beta) = (store.value(self.gamma), store.value(self.beta));
        let (inv, eps) = (T::of(1.0 / c as f64), T::of(self.eps));
        // the two sums with 8 partial sums each, compiled for the dispatched width (a plain
        // `iter().sum()` is one serial chain of C dependent adds: this norm took 7 % of the batch-16
        // step of the 6×H256 stack on the AVX2 machine, perf-measured, before)
        crate::engine::simd::with_isa(
            #[inline(always)]
            || {
                for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
                    let mean = crate::engine::simd::sum(xr) * inv;
                    let var = centered_squares(xr, mean) * inv;
                    let r = T::one() / (var + eps).sqrt();
                    for i in 0..c {
                        yr[i] = gamma[i] * (xr[i] - mean) * r + beta[i];
                    }
                }
            },
        )
    }
}

/// `Σ (x_i − μ)²` with 8 partial sums.
#[inline(always)]
fn centered_squares<T: Float>(xs: &[T], mean: T) -> T {
    let mut acc = [T::zero(); 8];
    let ch = xs.chunks_exact(8);
    let rest = ch.remainder();
    for c in ch {
        for k in 0..8 {
            let d = c[k] - mean;
            acc[k] += d * d;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in rest {
        let d = *v - mean;
        s += d * d;
    }
    s
}
