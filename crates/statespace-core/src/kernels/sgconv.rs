//! SGConv: a structured global convolution kernel (Li, Cai, Zhang, Chen, Dey 2023) — a sum of
//! sub-kernels of growing span and decaying weight, instead of an SSM.
//!
//! ```text
//! parameters (H channels, D = 1 or 2 directions, S sub-kernels of kernel_dim = d taps)
//!   weight  [D, H, S, d]      sub-kernels wᵢ (randn at init)
//! buffer  kernel_norm [D, H]  ‖k_raw‖ frozen at the first forward (0 until then)
//! S = 1 + ⌈log₂(L_max/d)⌉ − init_scale
//! kᵢ = upsample(wᵢ, 2^{max(0, i−1) + init_scale}) · m_h^{S−1−i},  m = linspace(decay_min, decay_max, H)
//! k_raw = concat(k₀, k₁, …, k_{S−1}) cut (or zero-padded) to L_max;   K = k_raw / kernel_norm
//! upsample: linear (align_corners = false: source x = (j + ½)/s − ½, clamped at 0) or nearest
//!           (source ⌊j/s⌋)
//! backward: dk_raw = dK / kernel_norm; each segment's gradient is scaled by m^{S−1−i} and passed
//!           through the transpose of its (linear) upsampling
//! recurrent form: y_t = Σ_{j<L_max} K_j u_{t−j} from a ring buffer of the last L_max inputs —
//!           exact, O(L_max) per step and channel
//! ```

use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::error::Error;
use crate::kernels::{SequenceKernel, Stepper};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How sub-kernels are stretched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// Linear interpolation (PyTorch `interpolate(mode="linear")`, align_corners = false).
    #[default]
    Linear,
    /// Nearest neighbour (each tap repeated).
    Nearest,
}

/// SGConv options (`[model.sgconv]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgConvOptions {
    /// Taps per sub-kernel.
    pub kernel_dim: usize,
    /// The first sub-kernels' upsampling exponent (and fewer sub-kernels).
    pub init_scale: usize,
    /// Decay base of the first channel.
    pub decay_min: f64,
    /// Decay base of the last channel.
    pub decay_max: f64,
    /// Upsampling mode.
    pub upsample: Upsample,
}

impl Default for SgConvOptions {
    fn default() -> Self {
        Self {
            kernel_dim: 64,
            init_scale: 0,
            decay_min: 2.0,
            decay_max: 2.0,
            upsample: Upsample::Linear,
        }
    }
}

/// Configuration of an SGConv kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct SgConvConfig {
    /// Channels H.
    pub channels: usize,
    /// The longest sequence (the kernel's length L_max).
    pub max_len: usize,
    /// Two directions.
    pub bidirectional: bool,
    /// Shape options.
    pub opts: SgConvOptions,
}

/// The SGConv kernel.
#[derive(Debug)]
pub struct SgConvKernel<T> {
    cfg: SgConvConfig,
    scales: usize,
    /// `weight [D, H, S, d]`.
    pub weight: ParamId,
    kernel_norm: Vec<T>,
    len: usize,
}

/// `x` (n taps) upsampled by `s` into `out` (n·s entries).
fn upsample(x: &[f64], s: usize, mode: Upsample, out: &mut [f64]) {
    let n = x.len();
    for (j, o) in out.iter_mut().enumerate() {
        *o = match mode {
            Upsample::Nearest => x[j / s],
            Upsample::Linear => {
                let (i0, i1, lam) = lin_src(j, s, n);
                (1.0 - lam) * x[i0] + lam * x[i1]
            }
        };
    }
}

/// Source taps and weight of output `j` for linear upsampling by `s` of `n` taps.
#[inline]
fn lin_src(j: usize, s: usize, n: usize) -> (usize, usize, f64) {
    let src = ((j as f64 + 0.5) / s as f64 - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, src - i0 as f64)
}

/// Transpose of [`upsample`]: accumulates `g` (n·s entries) into `dx` (n taps).
fn upsample_t(g: &[f64], s: usize, mode: Upsample, dx: &mut [f64]) {
    let n = dx.len();
    for (j, gj) in g.iter().enumerate() {
        match mode {
            Upsample::Nearest => dx[j / s] += gj,
            Upsample::Linear => {
                let (i0, i1, lam) = lin_src(j, s, n);
                dx[i0] += (1.0 - lam) * gj;
                dx[i1] += lam * gj;
            }
        }
    }
}

impl<T: Float> SgConvKernel<T> {
    /// Registers `weight` under `prefix` (standard normal).
    pub fn new(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: SgConvConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let d = cfg.opts.kernel_dim;
        if d == 0 {
            return Err(Error::config(
                "model.sgconv.kernel_dim",
                "must be at least 1",
            ));
        }
        if cfg.max_len == 0 {
            return Err(Error::config(
                "model.l_max",
                "SGConv needs the sequence length (got 0)",
            ));
        }
        if !(cfg.opts.decay_min > 0.0 && cfg.opts.decay_max > 0.0) {
            return Err(Error::config(
                "model.sgconv.decay_min/decay_max",
                format!(
                    "must be positive, got {} and {}",
                    cfg.opts.decay_min, cfg.opts.decay_max
                ),
            ));
        }
        let levels = (cfg.max_len as f64 / d as f64).log2().ceil().max(0.0) as usize;
        let scales = (1 + levels).saturating_sub(cfg.opts.init_scale).max(1);
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let n = dirs * cfg.channels * scales * d;
        let w: Vec<T> = (0..n)
            .map(|_| {
                let v: f64 = StandardNormal.sample(rng);
                T::of(v)
            })
            .collect();
        let weight = store.add(
            format!("{prefix}.weight"),
            &[dirs, cfg.channels, scales, d],
            w,
            ParamKind::Weight,
        );
        Ok(Self {
            kernel_norm: vec![T::zero(); dirs * cfg.channels],
            cfg,
            scales,
            weight,
            len: 0,
        })
    }

    /// Number of sub-kernels S.
    pub fn scales(&self) -> usize {
        self.scales
    }

    fn dirs(&self) -> usize {
        if self.cfg.bidirectional { 2 } else { 1 }
    }

    fn decay(&self, h: usize) -> f64 {
        let (a, b) = (self.cfg.opts.decay_min, self.cfg.opts.decay_max);
        let hn = self.cfg.channels;
        if hn == 1 {
            a
        } else {
            a + (b - a) * h as f64 / (hn - 1) as f64
        }
    }

    /// (start, upsampling factor, weight) of each sub-kernel within k_raw.
    fn segments(&self, h: usize) -> Vec<(usize, usize, f64)> {
        let (d, s0) = (self.cfg.opts.kernel_dim, self.cfg.opts.init_scale);
        let m = self.decay(h);
        let mut start = 0;
        (0..self.scales)
            .map(|i| {
                let up = 1usize << (i.saturating_sub(1) + s0);
                let w = m.powi((self.scales - 1 - i) as i32);
                let seg = (start, up, w);
                start += d * up;
                seg
            })
            .collect()
    }

    /// The unnormalized kernel k_raw of (direction, channel) `row`, length L_max, in f64.
    fn raw(&self, store: &ParamStore<T>, row: usize) -> Vec<f64> {
        let (d, lmax) = (self.cfg.opts.kernel_dim, self.cfg.max_len);
        let h = row % self.cfg.channels;
        let w = store.value(self.weight);
        let mut k = vec![0.0; lmax];
        let mut buf = Vec::new();
        for (i, (start, up, wt)) in self.segments(h).into_iter().enumerate() {
            if start >= lmax {
                break;
            }
            let taps: Vec<f64> = w[(row * self.scales + i) * d..(row * self.scales + i + 1) * d]
                .iter()
                .map(|v| v.f64() * wt)
                .collect();
            buf.resize(d * up, 0.0);
            upsample(&taps, up, self.cfg.opts.upsample, &mut buf);
            let end = (start + d * up).min(lmax);
            k[start..end].copy_from_slice(&buf[..end - start]);
        }
        k
    }

    /// The normalized kernel of (direction, channel) `row` at L_max (the norm must be set).
    fn kernel_row(&self, store: &ParamStore<T>, row: usize) -> Vec<f64> {
        let norm = self.kernel_norm[row].f64();
        self.raw(store, row).into_iter().map(|v| v / norm).collect()
    }

    /// Freezes the kernel norms if this is the first forward.
    fn ensure_norm(&mut self, store: &ParamStore<T>) {
        if self.kernel_norm.iter().all(|v| *v > T::zero()) {
            return;
        }
        for row in 0..self.kernel_norm.len() {
            let n = self
                .raw(store, row)
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            self.kernel_norm[row] = T::of(if n > 0.0 { n } else { 1.0 });
        }
    }
}

impl<T: Float> SequenceKernel<T> for SgConvKernel<T> {
    fn channels(&self) -> usize {
        self.cfg.channels
    }

    fn directions(&self) -> usize {
        self.dirs()
    }

    fn forward(&mut self, store: &ParamStore<T>, len: usize, k: &mut Vec<T>) {
        self.ensure_norm(store);
        self.len = len;
        let rows = self.dirs() * self.cfg.channels;
        let me = &*self;
        k.clear();
        k.resize(rows * len, T::zero());
        // one row at a time per thread: an L_max-long f64 row lives only while it is copied
        k.par_chunks_mut(len.max(1))
            .enumerate()
            .for_each(|(row, out)| {
                let kr = me.kernel_row(store, row);
                for (o, v) in out.iter_mut().zip(&kr) {
                    *o = T::of(*v);
                }
            });
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dk: &[T]) {
        let (len, lmax, d) = (self.len, self.cfg.max_len, self.cfg.opts.kernel_dim);
        let rows = self.dirs() * self.cfg.channels;
        assert_eq!(dk.len(), rows * len);
        let me = &*self;
        let grads: Vec<Vec<f64>> = (0..rows)
            .into_par_iter()
            .map(|row| {
                let h = row % me.cfg.channels;
                let norm = me.kernel_norm[row].f64();
                let mut g = vec![0.0; lmax];
                let n = len.min(lmax);
                for (o, v) in g[..n].iter_mut().zip(&dk[row * len..row * len + n]) {
                    *o = v.f64() / norm;
                }
                let mut out = vec![0.0; me.scales * d];
                let mut seg = Vec::new();
                for (i, (start, up, wt)) in me.segments(h).into_iter().enumerate() {
                    if start >= lmax {
                        break;
                    }
                    seg.clear();
                    seg.resize(d * up, 0.0);
                    let end = (start + d * up).min(lmax);
                    seg[..end - start].copy_from_slice(&g[start..end]);
                    let mut dx = vec![0.0; d];
                    upsample_t(&seg, up, me.cfg.opts.upsample, &mut dx);
                    for (o, v) in out[i * d..(i + 1) * d].iter_mut().zip(dx) {
                        *o = v * wt;
                    }
                }
                out
            })
            .collect();
        let gw = store.grad_mut(self.weight);
        for (row, g) in grads.iter().enumerate() {
            let base = row * self.scales * d;
            for (o, v) in gw[base..base + g.len()].iter_mut().zip(g) {
                *o += T::of(*v);
            }
        }
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        if self.cfg.bidirectional {
            return Err(Error::Unsupported(
                "a bidirectional SGConv layer sees the future: it has no recurrent (step) mode"
                    .into(),
            ));
        }
        let mut me = SgConvKernel {
            cfg: self.cfg.clone(),
            scales: self.scales,
            weight: self.weight,
            kernel_norm: self.kernel_norm.clone(),
            len: 0,
        };
        me.ensure_norm(store);
        let k = (0..self.cfg.channels)
            .flat_map(|h| me.kernel_row(store, h))
            .map(T::of)
            .collect();
        Ok(Box::new(RingStepper {
            h: self.cfg.channels,
            len: self.cfg.max_len,
            k,
        }))
    }

    fn buffers(&self) -> Vec<(&'static str, &Vec<T>)> {
        vec![("kernel_norm", &self.kernel_norm)]
    }

    fn buffers_mut(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("kernel_norm", &mut self.kernel_norm)]
    }
}

/// Exact recurrent form of a finite kernel: a ring buffer of the last `len` inputs per channel
/// (state: `[H, len]` inputs, then the write position).
#[derive(Debug)]
pub struct RingStepper<T> {
    h: usize,
    len: usize,
    k: Vec<T>,
}

impl<T: Float> Stepper<T> for RingStepper<T> {
    fn state_len(&self) -> usize {
        self.h * self.len + 1
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        let l = self.len;
        let pos = state[self.h * l].f64() as usize % l;
        for hh in 0..self.h {
            let buf = &mut state[hh * l..(hh + 1) * l];
            buf[pos] = u[hh];
            let k = &self.k[hh * l..(hh + 1) * l];
            // y = Σ_j k_j u_{t−j}: lags 0..=pos sit at pos, pos−1, …; older ones wrap around
            let mut acc = T::zero();
            for j in 0..=pos {
                acc += k[j] * buf[pos - j];
            }
            for j in pos + 1..l {
                acc += k[j] * buf[l + pos - j];
            }
            y[hh] = acc;
        }
        state[self.h * l] = T::of(((pos + 1) % l) as f64);
    }
}
