//! BatchNorm over (batch, length) per channel, with running statistics for evaluation

use super::{affine, resize, valid_len};
use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamStore};
use rayon::prelude::*;

/// Batch normalization per channel (statistics over batch and length).
#[derive(Debug, Clone)]
pub struct BatchNorm<T> {
    /// Scale γ `[C]`.
    pub gamma: ParamId,
    /// Shift β `[C]`.
    pub beta: ParamId,
    /// Channels.
    pub c: usize,
    /// Running mean `[C]` (saved in checkpoints as `name.running_mean`).
    pub running_mean: Vec<T>,
    /// Running (unbiased) variance `[C]`.
    pub running_var: Vec<T>,
    /// Momentum of the running statistics (PyTorch's 0.1).
    pub momentum: f64,
    eps: f64,
    xhat: Vec<T>,
    rstd: Vec<T>,
    dims: (usize, usize),
    train: bool,
    /// Valid length of each batch element (empty: all positions are valid). Statistics are taken
    /// over the valid positions only; set with [`BatchNorm::set_lengths`].
    lengths: Vec<usize>,
}

impl<T: Float> BatchNorm<T> {
    /// The ε added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Restricts the next forwards' statistics to the first `lengths[b]` positions of element `b`
    /// (empty: every position).
    pub fn set_lengths(&mut self, lengths: &[usize]) {
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
    }

    /// Registers `name.weight` (ones) and `name.bias` (zeros).
    pub fn new(store: &mut ParamStore<T>, name: &str, c: usize) -> Self {
        let (gamma, beta) = affine(store, name, c);
        Self {
            gamma,
            beta,
            c,
            running_mean: vec![T::zero(); c],
            running_var: vec![T::one(); c],
            momentum: 0.1,
            eps: 1e-5,
            xhat: Vec::new(),
            rstd: Vec::new(),
            dims: (0, 0),
            train: true,
            lengths: Vec::new(),
        }
    }

    /// `x [B, C, L] → y`; in training mode uses the batch statistics and updates the running ones.
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        train: bool,
        y: &mut Vec<T>,
    ) {
        let c = self.c;
        self.dims = (batch, len);
        self.train = train;
        resize(y, batch * c * len);
        resize(&mut self.xhat, batch * c * len);
        resize(&mut self.rstd, c);
        let lens = &self.lengths;
        let m = (0..batch).map(|b| valid_len(lens, b, len)).sum::<usize>() as f64;
        let (gamma, beta) = (store.value(self.gamma), store.value(self.beta));
        let stats: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                if !train {
                    return (self.running_mean[ch].f64(), self.running_var[ch].f64());
                }
                let row = |b: usize| {
                    let s = (b * c + ch) * len;
                    &x[s..s + valid_len(lens, b, len)]
                };
                let s: f64 = (0..batch)
                    .map(|b| row(b).iter().map(|v| v.f64()).sum::<f64>())
                    .sum();
                let mean = s / m.max(1.0);
                let v: f64 = (0..batch)
                    .map(|b| row(b).iter().map(|x| (x.f64() - mean).powi(2)).sum::<f64>())
                    .sum();
                (mean, v / m.max(1.0))
            })
            .collect();
        for (ch, &(mean, var)) in stats.iter().enumerate() {
            self.rstd[ch] = T::of(1.0 / (var + self.eps).sqrt());
            if train {
                let mo = self.momentum;
                let unbiased = if m > 1.0 { var * m / (m - 1.0) } else { var };
                self.running_mean[ch] = T::of((1.0 - mo) * self.running_mean[ch].f64() + mo * mean);
                self.running_var[ch] =
                    T::of((1.0 - mo) * self.running_var[ch].f64() + mo * unbiased);
            }
        }
        let rstd = &self.rstd;
        y.par_chunks_mut(len)
            .zip(self.xhat.par_chunks_mut(len))
            .zip(x.par_chunks(len))
            .enumerate()
            .for_each(|(row, ((yr, hr), xr))| {
                let ch = row % c;
                let mean = T::of(stats[ch].0);
                for ((yv, hv), xv) in yr.iter_mut().zip(hr.iter_mut()).zip(xr) {
                    let h = (*xv - mean) * rstd[ch];
                    *hv = h;
                    *yv = gamma[ch] * h + beta[ch];
                }
            });
    }

    /// Backward through the batch statistics (training mode) or the frozen ones (evaluation mode).
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        let c = self.c;
        let (batch, len) = self.dims;
        resize(dx, batch * c * len);
        let lens = &self.lengths;
        let m = (0..batch).map(|b| valid_len(lens, b, len)).sum::<usize>() as f64;
        let gamma = store.value(self.gamma).to_vec();
        // (Σ dy, Σ dy·x̂) over the valid positions (statistics) and over all (γ, β gradients)
        let sums: Vec<(f64, f64, f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sd, mut sdh, mut ad, mut adh) = (0.0, 0.0, 0.0, 0.0);
                for b in 0..batch {
                    let s = (b * c + ch) * len;
                    let n = valid_len(lens, b, len);
                    for (l, (d, h)) in dy[s..s + len]
                        .iter()
                        .zip(&self.xhat[s..s + len])
                        .enumerate()
                    {
                        let (d, dh) = (d.f64(), d.f64() * h.f64());
                        ad += d;
                        adh += dh;
                        if l < n {
                            sd += d;
                            sdh += dh;
                        }
                    }
                }
                (sd, sdh, ad, adh)
            })
            .collect();
        let train = self.train;
        let rstd = &self.rstd;
        dx.par_chunks_mut(len)
            .zip(dy.par_chunks(len))
            .zip(self.xhat.par_chunks(len))
            .enumerate()
            .for_each(|(row, ((dxr, dyr), hr))| {
                let ch = row % c;
                let n = valid_len(lens, row / c, len);
                let g = gamma[ch] * rstd[ch];
                if train {
                    // padded positions do not enter the statistics: only the direct path
                    let (sd, sdh) = (
                        T::of(sums[ch].0 / m.max(1.0)),
                        T::of(sums[ch].1 / m.max(1.0)),
                    );
                    for (l, ((dxv, dyv), hv)) in dxr.iter_mut().zip(dyr).zip(hr).enumerate() {
                        *dxv = if l < n {
                            g * (*dyv - sd - *hv * sdh)
                        } else {
                            g * *dyv
                        };
                    }
                } else {
                    for (dxv, dyv) in dxr.iter_mut().zip(dyr) {
                        *dxv = g * *dyv;
                    }
                }
            });
        for (ch, &(_, _, ad, adh)) in sums.iter().enumerate() {
            store.grad_mut(self.gamma)[ch] += T::of(adh);
            store.grad_mut(self.beta)[ch] += T::of(ad);
        }
    }

    /// The evaluation-mode map on single vectors, for recurrent steps: `x [B, C] → y [B, C]` with
    /// the running statistics.
    pub fn step(&self, store: &ParamStore<T>, x: &[T], y: &mut [T]) {
        let c = self.c;
        let (gamma, beta) = (store.value(self.gamma), store.value(self.beta));
        for (xr, yr) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
            for i in 0..c {
                let r = T::one() / (self.running_var[i] + T::of(self.eps)).sqrt();
                yr[i] = gamma[i] * (xr[i] - self.running_mean[i]) * r + beta[i];
            }
        }
    }
}
