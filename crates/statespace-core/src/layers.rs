//! The engine's layers, llm.c style: each `forward` keeps what its `backward` needs in the layer's own
//! buffers (reused from step to step, so the step loop does not allocate once shapes are fixed), and
//! each `backward` is written by hand next to it. Activations are `[batch, channels, length]`
//! (`[B, C, L]`), row-major: channel rows of `L` contiguous values.

use crate::float::{Float, matmul};
use crate::params::{ParamId, ParamKind, ParamStore};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Threads used by GEMM calls (the rayon pool's size).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Sets the length to `n` without clearing: every caller overwrites all `n` entries (buffers keep
/// their capacity from step to step, so this neither allocates nor touches memory twice).
fn resize<T: Float>(v: &mut Vec<T>, n: usize) {
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
fn zeroed<T: Float>(v: &mut Vec<T>, n: usize) {
    v.clear();
    v.resize(n, T::zero());
}

// =================================================================================================
// Linear over channels: y[b] = W x[b] + bias            x [B, Cin, L] → y [B, Cout, L]
// =================================================================================================

/// A linear map over the channel dimension (a 1×1 convolution), one GEMM per batch element.
#[derive(Debug, Clone)]
pub struct Linear<T> {
    /// Weight `[Cout, Cin]`.
    pub w: ParamId,
    /// Bias `[Cout]`.
    pub b: Option<ParamId>,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    x: Vec<T>,
    dims: (usize, usize),
}

impl<T: Float> Linear<T> {
    /// Registers `name.weight` (uniform ±1/√Cin, PyTorch's default) and `name.bias`.
    pub fn new(
        store: &mut ParamStore<T>,
        name: &str,
        cin: usize,
        cout: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let bound = 1.0 / (cin as f64).sqrt();
        let w = (0..cin * cout)
            .map(|_| T::of(rng.random_range(-bound..bound)))
            .collect();
        let w = store.add(format!("{name}.weight"), &[cout, cin], w, ParamKind::Weight);
        let b = bias.then(|| {
            let v = (0..cout)
                .map(|_| T::of(rng.random_range(-bound..bound)))
                .collect();
            store.add(format!("{name}.bias"), &[cout], v, ParamKind::NoDecay)
        });
        Self {
            w,
            b,
            cin,
            cout,
            x: Vec::new(),
            dims: (0, 0),
        }
    }

    /// `x [B, Cin, L] → y [B, Cout, L]`.
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        keep_copy(&mut self.x, x);
        self.dims = (batch, len);
        self.apply(store, x, batch, len, y);
    }

    /// The same map without keeping anything for backward (inference, recurrent steps).
    pub fn apply(&self, store: &ParamStore<T>, x: &[T], batch: usize, len: usize, y: &mut Vec<T>) {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(x.len(), batch * cin * len);
        resize(y, batch * cout * len);
        let w = store.value(self.w);
        // one GEMM per batch element, the batch spread over the threads
        y.par_chunks_mut(cout * len)
            .zip(x.par_chunks(cin * len))
            .for_each(|(yb, xb)| {
                matmul(yb, w, xb, cout, len, cin, false, false, false, 1);
            });
        if let Some(bid) = self.b {
            let bias = store.value(bid);
            y.par_chunks_mut(len).enumerate().for_each(|(row, yr)| {
                let bv = bias[row % cout];
                yr.iter_mut().for_each(|v| *v += bv);
            });
        }
    }

    /// `dy [B, Cout, L] → dx [B, Cin, L]`; accumulates `dW += Σ_b dy[b] x[b]ᵀ`, `db += Σ dy`.
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        let (batch, len) = self.dims;
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(dy.len(), batch * cout * len);
        {
            // dW = Σ_b dy[b] x[b]ᵀ: one partial sum per contiguous chunk of the batch (as many chunks
            // as threads), added in order — deterministic for a fixed thread count.
            let chunks = threads().clamp(1, batch.max(1));
            let per = batch.div_ceil(chunks);
            let partial: Vec<Vec<T>> = (0..chunks)
                .into_par_iter()
                .map(|c| {
                    let mut acc = vec![T::zero(); cout * cin];
                    for b in c * per..((c + 1) * per).min(batch) {
                        let dyb = &dy[b * cout * len..(b + 1) * cout * len];
                        let xb = &self.x[b * cin * len..(b + 1) * cin * len];
                        matmul(&mut acc, dyb, xb, cout, cin, len, false, true, true, 1);
                    }
                    acc
                })
                .collect();
            let dw = store.grad_mut(self.w);
            for p in partial {
                dw.iter_mut().zip(&p).for_each(|(a, b)| *a += *b);
            }
        }
        if let Some(bid) = self.b {
            let sums: Vec<T> = (0..cout)
                .into_par_iter()
                .map(|o| {
                    (0..batch)
                        .map(|b| {
                            crate::float::sum(&dy[(b * cout + o) * len..(b * cout + o + 1) * len])
                        })
                        .sum::<T>()
                })
                .collect();
            store
                .grad_mut(bid)
                .iter_mut()
                .zip(&sums)
                .for_each(|(g, s)| *g += *s);
        }
        resize(dx, batch * cin * len);
        let w = store.value(self.w);
        dx.par_chunks_mut(cin * len)
            .zip(dy.par_chunks(cout * len))
            .for_each(|(dxb, dyb)| {
                matmul(dxb, w, dyb, cin, len, cout, true, false, false, 1);
            });
    }
}

// =================================================================================================
// Embedding: y[b, :, l] = W[tok[b, l], :]                tok [B, L] → y [B, D, L]
// =================================================================================================

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
}

/// The per-channel affine of a norm: `name.weight` (ones) and `name.bias` (zeros), no weight decay.
fn affine<T: Float>(store: &mut ParamStore<T>, name: &str, c: usize) -> (ParamId, ParamId) {
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

// =================================================================================================
// LayerNorm over channels at each (b, l):  y = γ (x − μ)/σ + β
// =================================================================================================

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
                let mut mean = vec![T::zero(); len];
                for ch in 0..c {
                    for (m, v) in mean.iter_mut().zip(&xb[ch * len..(ch + 1) * len]) {
                        *m += *v;
                    }
                }
                mean.iter_mut().for_each(|m| *m *= inv_c);
                let mut var = vec![T::zero(); len];
                for ch in 0..c {
                    for ((s, v), m) in var.iter_mut().zip(&xb[ch * len..(ch + 1) * len]).zip(&mean)
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
                    dbt[ch] = crate::float::sum(dr);
                    for ((a, b), (d, h)) in m1.iter_mut().zip(m2.iter_mut()).zip(dr.iter().zip(hr))
                    {
                        *a += g * *d;
                        *b += g * *d * *h;
                    }
                }
                for ch in 0..c {
                    let g = gamma[ch];
                    for l in 0..len {
                        let i = ch * len + l;
                        dxb[i] = rb[l] * (g * dyb[i] - m1[l] * inv_c - hb[i] * m2[l] * inv_c);
                    }
                }
                (dg, dbt)
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
}

// =================================================================================================
// BatchNorm over (batch, length) per channel, with running statistics for evaluation
// =================================================================================================

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
}

// =================================================================================================
// GELU (exact):  y = x Φ(x),  y' = Φ(x) + x φ(x)
// =================================================================================================

/// The exact (erf) GELU.
#[derive(Debug, Clone, Default)]
pub struct Gelu<T> {
    _t: std::marker::PhantomData<T>,
}

impl<T: Float> Gelu<T> {
    /// An empty GELU.
    pub fn new() -> Self {
        Self {
            _t: std::marker::PhantomData,
        }
    }

    /// `y = x Φ(x)` elementwise (the caller keeps `x` for the backward).
    pub fn forward(&mut self, x: &[T], y: &mut Vec<T>) {
        resize(y, x.len());
        let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        y.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(yc, xc)| {
                crate::float::with_avx2(|| {
                    for (yv, &xv) in yc.iter_mut().zip(xc) {
                        *yv = half * xv * (T::one() + (xv * r2).erf());
                    }
                })
            });
    }

    /// `dx = dy (Φ(x) + x φ(x))`, `x` the input of the forward.
    pub fn backward(&self, x: &[T], dy: &[T], dx: &mut Vec<T>) {
        resize(dx, dy.len());
        let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        let inv_sqrt_2pi = T::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
        dx.par_chunks_mut(4096)
            .zip(dy.par_chunks(4096))
            .zip(x.par_chunks(4096))
            .for_each(|((dxc, dyc), xc)| {
                crate::float::with_avx2(|| {
                    for ((d, &g), &x) in dxc.iter_mut().zip(dyc).zip(xc) {
                        let cdf = half * (T::one() + (x * r2).erf());
                        let pdf = inv_sqrt_2pi * (-half * x * x).fast_exp();
                        *d = g * (cdf + x * pdf);
                    }
                })
            });
    }
}

// =================================================================================================
// GLU over channels:  x [B, 2C, L] → y = a σ(g),  a = x[:, :C], g = x[:, C:]
// =================================================================================================

/// Gated linear unit over the channel dimension (first half gated by the sigmoid of the second).
#[derive(Debug, Clone, Default)]
pub struct Glu<T> {
    dims: (usize, usize, usize),
    _t: std::marker::PhantomData<T>,
}

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

impl<T: Float> Glu<T> {
    /// An empty GLU.
    pub fn new() -> Self {
        Self {
            dims: (0, 0, 0),
            _t: std::marker::PhantomData,
        }
    }

    /// `x [B, 2C, L] → y [B, C, L]` (the caller keeps `x` for the backward).
    pub fn forward(&mut self, x: &[T], batch: usize, c: usize, len: usize, y: &mut Vec<T>) {
        self.dims = (batch, c, len);
        resize(y, batch * c * len);
        y.par_chunks_mut(c * len)
            .zip(x.par_chunks(2 * c * len))
            .for_each(|(yb, xb)| {
                let (a, g) = xb.split_at(c * len);
                crate::float::with_avx2(|| {
                    for ((yv, &av), &gv) in yb.iter_mut().zip(a).zip(g) {
                        *yv = av * sigmoid(gv);
                    }
                })
            });
    }

    /// `da = dy σ(g)`, `dg = dy a σ(g)(1 − σ(g))`, `x = [a, g]` the input of the forward.
    pub fn backward(&self, x: &[T], dy: &[T], dx: &mut Vec<T>) {
        let (batch, c, len) = self.dims;
        resize(dx, batch * 2 * c * len);
        dx.par_chunks_mut(2 * c * len)
            .zip(dy.par_chunks(c * len))
            .zip(x.par_chunks(2 * c * len))
            .for_each(|((dxb, dyb), xb)| {
                let (a, g) = xb.split_at(c * len);
                let (da, dg) = dxb.split_at_mut(c * len);
                crate::float::with_avx2(|| {
                    for i in 0..c * len {
                        let s = sigmoid(g[i]);
                        da[i] = dyb[i] * s;
                        dg[i] = dyb[i] * a[i] * s * (T::one() - s);
                    }
                })
            });
    }
}

// =================================================================================================
// Dropout (optionally tied: one mask value per (b, c), shared along L)
// =================================================================================================

/// SplitMix64: a counter-based generator, so masks depend only on (seed, row), not on threads.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn uniform01(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (splitmix64(*state) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Inverted dropout with probability `p`; `tied` shares one mask value along the length.
#[derive(Debug, Clone)]
pub struct Dropout<T> {
    /// Drop probability.
    pub p: f64,
    /// One mask per (batch, channel) instead of per element.
    pub tied: bool,
    mask: Vec<T>,
    pub(crate) active: bool,
}

impl<T: Float> Dropout<T> {
    /// A dropout of probability `p`.
    pub fn new(p: f64, tied: bool) -> Self {
        Self {
            p,
            tied,
            mask: Vec::new(),
            active: false,
        }
    }

    /// `y = x·mask/(1−p)` in training (mask from `seed`). Inactive (evaluation, or p = 0) it
    /// leaves `y` alone and returns `false`: the output is `x` itself, and the caller uses it
    /// without a copy. `x` is `[rows, L]`.
    pub fn forward(&mut self, x: &[T], len: usize, train: bool, seed: u64, y: &mut Vec<T>) -> bool {
        self.active = train && self.p > 0.0;
        if !self.active {
            return false;
        }
        resize(y, x.len());
        resize(&mut self.mask, x.len());
        let keep = T::of(1.0 / (1.0 - self.p));
        let (p, tied) = (self.p, self.tied);
        self.mask
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(row, mr)| {
                let mut st = splitmix64(seed ^ splitmix64(row as u64));
                if tied {
                    let v = if uniform01(&mut st) < p {
                        T::zero()
                    } else {
                        keep
                    };
                    mr.iter_mut().for_each(|m| *m = v);
                } else {
                    for m in mr.iter_mut() {
                        *m = if uniform01(&mut st) < p {
                            T::zero()
                        } else {
                            keep
                        };
                    }
                }
            });
        y.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .zip(self.mask.par_chunks(4096))
            .for_each(|((yc, xc), mc)| {
                for ((yv, xv), mv) in yc.iter_mut().zip(xc).zip(mc) {
                    *yv = *xv * *mv;
                }
            });
        true
    }

    /// `dx = dy·mask/(1−p)` (or `dy` when the forward was inactive).
    pub fn backward(&self, dy: &[T], dx: &mut Vec<T>) {
        resize(dx, dy.len());
        if !self.active {
            keep_copy(dx, dy);
            return;
        }
        for ((d, g), m) in dx.iter_mut().zip(dy).zip(&self.mask) {
            *d = *g * *m;
        }
    }
}

// =================================================================================================
// Pooling over L:  mean  y[b,c] = (1/L) Σ_l x[b,c,l];  last  y[b,c] = x[b,c,L−1]
// =================================================================================================

/// Pooling of `[B, C, L]` to `[B, C]` (as `[B, C, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Mean over the length.
    Mean,
    /// The last position.
    Last,
    /// No pooling: the decoder runs at every position.
    None,
}

/// `x [B, C, L] → y [B, C]`.
pub fn pool_forward<T: Float>(pool: Pool, x: &[T], rows: usize, len: usize, y: &mut Vec<T>) {
    pool_forward_masked(pool, x, rows, 1, len, &[], y);
}

/// `dy [B, C] → dx [B, C, L]`.
pub fn pool_backward<T: Float>(pool: Pool, dy: &[T], len: usize, dx: &mut Vec<T>) {
    pool_backward_masked(pool, dy, 1, len, &[], dx);
}

/// Valid length of batch element `b` (`lengths` empty: every element has the full `len`).
#[inline]
pub fn valid_len(lengths: &[usize], b: usize, len: usize) -> usize {
    lengths.get(b).map_or(len, |&n| n.min(len))
}

/// Pooling over the valid part of each sequence: `x [B, C, L] → y [B, C]`, row `r` belonging to
/// batch element `r / c`, whose first `lengths[r / c]` positions are valid (`lengths` empty: all).
///
/// ```text
/// mean  y[b,c] = (1/n_b) Σ_{l<n_b} x[b,c,l]        last  y[b,c] = x[b,c,n_b−1]
/// ```
pub fn pool_forward_masked<T: Float>(
    pool: Pool,
    x: &[T],
    rows: usize,
    c: usize,
    len: usize,
    lengths: &[usize],
    y: &mut Vec<T>,
) {
    resize(y, rows);
    for (r, yv) in y.iter_mut().enumerate() {
        let n = valid_len(lengths, r / c, len).max(1);
        let xr = &x[r * len..r * len + n];
        *yv = match pool {
            Pool::Mean => xr.iter().copied().sum::<T>() * T::of(1.0 / n as f64),
            Pool::Last => xr[n - 1],
            Pool::None => panic!("pool_forward with Pool::None"),
        };
    }
}

/// Backward of [`pool_forward_masked`]: `dy [B, C] → dx [B, C, L]` (zero at padded positions).
pub fn pool_backward_masked<T: Float>(
    pool: Pool,
    dy: &[T],
    c: usize,
    len: usize,
    lengths: &[usize],
    dx: &mut Vec<T>,
) {
    zeroed(dx, dy.len() * len);
    for (r, &g) in dy.iter().enumerate() {
        let n = valid_len(lengths, r / c, len).max(1);
        let dr = &mut dx[r * len..r * len + n];
        match pool {
            Pool::Mean => {
                let inv = T::of(1.0 / n as f64);
                dr.iter_mut().for_each(|d| *d = g * inv)
            }
            Pool::Last => dr[n - 1] = g,
            Pool::None => panic!("pool_backward with Pool::None"),
        }
    }
}

// =================================================================================================
// Losses
// =================================================================================================

/// Mean cross-entropy of `logits [B, K, L]` against `targets [B, L]` at the positions where
/// `targets != IGNORE`; writes `dlogits` (the gradient of the mean) and returns (loss, correct, counted).
pub fn cross_entropy<T: Float>(
    logits: &[T],
    targets: &[u32],
    batch: usize,
    k: usize,
    len: usize,
    dlogits: &mut Vec<T>,
) -> (f64, usize, usize) {
    zeroed(dlogits, logits.len());
    let counted = targets.iter().filter(|&&t| t != IGNORE).count();
    if counted == 0 {
        return (0.0, 0, 0);
    }
    let inv = 1.0 / counted as f64;
    let mut loss = 0.0;
    let mut correct = 0;
    for b in 0..batch {
        for l in 0..len {
            let t = targets[b * len + l];
            if t == IGNORE {
                continue;
            }
            let at = |j: usize| (b * k + j) * len + l;
            let mx = (0..k).map(|j| logits[at(j)].f64()).fold(f64::MIN, f64::max);
            let z: f64 = (0..k).map(|j| (logits[at(j)].f64() - mx).exp()).sum();
            let lse = mx + z.ln();
            loss += lse - logits[at(t as usize)].f64();
            let argmax = (0..k)
                .max_by(|&i, &j| logits[at(i)].f64().total_cmp(&logits[at(j)].f64()))
                .unwrap_or(0);
            correct += usize::from(argmax == t as usize);
            for j in 0..k {
                let p = (logits[at(j)].f64() - lse).exp();
                let onehot = if j == t as usize { 1.0 } else { 0.0 };
                dlogits[at(j)] = T::of((p - onehot) * inv);
            }
        }
    }
    (loss * inv, correct, counted)
}

/// Targets equal to this are ignored by [`cross_entropy`].
pub const IGNORE: u32 = statespace_data::IGNORE;

/// Mean squared error of `pred` against `target` (same length); writes `dpred`, returns the loss.
pub fn mse<T: Float>(pred: &[T], target: &[T], dpred: &mut Vec<T>) -> f64 {
    resize(dpred, pred.len());
    let n = pred.len() as f64;
    let mut loss = 0.0;
    for ((d, p), t) in dpred.iter_mut().zip(pred).zip(target) {
        let e = p.f64() - t.f64();
        loss += e * e;
        *d = T::of(2.0 * e / n);
    }
    loss / n
}
