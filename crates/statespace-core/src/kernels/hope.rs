//! HOPE: an SSM parameterized by the Markov parameters of its Hankel operator (Yu, Mahoney, Erichson
//! 2024), its kernel from the transfer function sampled at bilinearly warped frequencies.
//!
//! ```text
//! parameters (H channels, n = N/2 Markov parameters, D = 1 or 2 directions)
//!   h       [D, H, n]   Markov parameters hⱼ (real: see below), init N(0, 1)/(2√N)
//!   log_dt  [H]         Δ = exp(log_dt)
//! prototype (discrete, unit step):  Ĝ(z) = Σⱼ hⱼ z^{−(j+1)}        (a FIR filter: hⱼ at lag j + 1)
//! warped to step Δ (paper, Algorithm 1):  ω′ = ((1+Δ)ω + Δ − 1)/((Δ − 1)ω + Δ + 1),  |ω′| = 1
//!   K̂(ω) = Σⱼ hⱼ ω′^{−(j+1)}.  With q = ω⁻¹ (one delay) this is
//!   G_Δ(q) = Σⱼ hⱼ A(q)^{j+1},  A(q) = (q − a)/(1 − a q),  a = (1 − Δ)/(1 + Δ)
//!   a cascade of identical first-order all-pass sections: causal and stable for every Δ > 0;
//!   at Δ = 1 (a = 0) it is the FIR filter itself.
//! two variants (model.hope.mode):
//!   causal (default)  K_l = impulse response of G_Δ, l < L, computed exactly by running the cascade
//!                     (gⱼ = A^{j+1}δ; K = Σ hⱼ gⱼ); recurrent form = the cascade itself, O(n) per step
//!                     per channel.  dK/da by forward-mode differentiation of the same recursion:
//!                     y_t = a y_{t−1} + x_{t−1} − a x_t,  ẏ_t = y_{t−1} + a ẏ_{t−1} + ẋ_{t−1} − x_t − a ẋ_t
//!   circular          Algorithm 1 as written: K̂ at the L roots of unity, y = Re iFFT(FFT(u)·K̂) — a
//!                     circular convolution with the time-aliased kernel Σ_m K_{l+mL}; no step mode
//! choices, documented:
//!   * h is real. With y = Re(iFFT(·)) the imaginary parts of complex h have exactly no effect (half of
//!     the paper's parameters are dead); real h makes K̂ Hermitian, so Re(·) drops nothing.
//!   * The released code samples L/2 points and joins a forward and a flipped backward response; that
//!     is our bidirectional option (a second h for the reverse direction) on the causal kernel.
//!   * h trains with the global lr / wd ("weights"), log Δ in the SSM Δ group — never frozen.
//! ```

use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::error::Error;
use crate::kernels::{SequenceKernel, Stepper};
use num_complex::Complex64 as C64;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};
use statespace_math::s4d as inits;

/// Which HOPE kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HopeMode {
    /// The exact, truncated impulse response of the warped system (steppable).
    #[default]
    Causal,
    /// The paper's Algorithm 1: circular convolution with the sampled transfer function.
    Circular,
}

/// HOPE options (`[model.hope]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HopeOptions {
    /// Kernel variant.
    pub mode: HopeMode,
}

/// Configuration of a HOPE kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct HopeConfig {
    /// Channels H.
    pub channels: usize,
    /// State size N (n = N/2 Markov parameters).
    pub state_size: usize,
    /// Smallest initial step.
    pub dt_min: f64,
    /// Largest initial step.
    pub dt_max: f64,
    /// Two directions (causal mode only).
    pub bidirectional: bool,
    /// Options.
    pub opts: HopeOptions,
}

/// The HOPE kernel.
#[derive(Debug)]
pub struct HopeKernel {
    cfg: HopeConfig,
    /// `h [D, H, n]`.
    pub h: ParamId,
    /// `log_dt [H]`.
    pub log_dt: ParamId,
    len: usize,
}

/// All-pass coefficient a = (1 − Δ)/(1 + Δ) and da/dΔ.
fn allpass(dt: f64) -> (f64, f64) {
    ((1.0 - dt) / (1.0 + dt), -2.0 / ((1.0 + dt) * (1.0 + dt)))
}

/// Runs the all-pass cascade on an impulse: calls `f(j, g_j, ġ_j)` for each stage j (with the
/// tangent ġ = ∂g/∂a when `tangent`).
fn cascade(a: f64, n: usize, len: usize, tangent: bool, mut f: impl FnMut(usize, &[f64], &[f64])) {
    let mut x = vec![0.0; len];
    if len > 0 {
        x[0] = 1.0;
    }
    let mut xd = vec![0.0; len];
    let mut y = vec![0.0; len];
    let mut yd = vec![0.0; len];
    for j in 0..n {
        let (mut yp, mut ydp, mut xp, mut xdp) = (0.0, 0.0, 0.0, 0.0);
        for t in 0..len {
            let v = a * yp + xp - a * x[t];
            y[t] = v;
            if tangent {
                let vd = yp + a * ydp + xdp - x[t] - a * xd[t];
                yd[t] = vd;
                ydp = vd;
                xdp = xd[t];
            }
            yp = v;
            xp = x[t];
        }
        f(j, &y, &yd);
        std::mem::swap(&mut x, &mut y);
        std::mem::swap(&mut xd, &mut yd);
    }
}

impl HopeKernel {
    /// Registers `h` (N(0,1)/(2√N)) and `log_dt` (log-uniform) under `prefix`.
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: HopeConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let (hn, n) = (cfg.channels, cfg.state_size);
        if n < 2 || n % 2 != 0 {
            return Err(Error::config(
                "model.d_state",
                format!("HOPE needs an even state size ≥ 2, got {n}"),
            ));
        }
        if cfg.bidirectional && cfg.opts.mode == HopeMode::Circular {
            return Err(Error::config(
                "model.bidirectional",
                "the circular HOPE kernel is already non-causal; use mode = \"causal\" for two directions",
            ));
        }
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let m = n / 2;
        let scale = 1.0 / (2.0 * (n as f64).sqrt());
        let h: Vec<T> = (0..dirs * hn * m)
            .map(|_| {
                let v: f64 = StandardNormal.sample(rng);
                T::of(v * scale)
            })
            .collect();
        let dts = inits::log_uniform_dt(hn, cfg.dt_min, cfg.dt_max, rng)
            .map_err(Error::math("initial steps"))?;
        let hp = store.add(format!("{prefix}.h"), &[dirs, hn, m], h, ParamKind::Weight);
        let log_dt = store.add(
            format!("{prefix}.log_dt"),
            &[hn],
            dts.iter().map(|d| T::of(d.ln())).collect(),
            ParamKind::SsmDt,
        );
        Ok(Self {
            cfg,
            h: hp,
            log_dt,
            len: 0,
        })
    }

    fn dirs(&self) -> usize {
        if self.cfg.bidirectional { 2 } else { 1 }
    }

    fn m(&self) -> usize {
        self.cfg.state_size / 2
    }

    /// Causal kernel of length `len` for Markov parameters `h` at step `dt` (f64).
    pub fn causal_kernel(h: &[f64], dt: f64, len: usize) -> Vec<f64> {
        let (a, _) = allpass(dt);
        let mut k = vec![0.0; len];
        cascade(a, h.len(), len, false, |j, g, _| {
            for (o, v) in k.iter_mut().zip(g) {
                *o += h[j] * v;
            }
        });
        k
    }

    /// The sampled transfer function `K̂_k = Σⱼ hⱼ A(q_k)^{j+1}`, `q_k = e^{−2πik/L}`, k = 0…L/2, and
    /// `∂K̂_k/∂a`.
    fn circular_spectrum(h: &[f64], a: f64, len: usize) -> (Vec<C64>, Vec<Vec<C64>>, Vec<C64>) {
        let one = C64::new(1.0, 0.0);
        let bins = len / 2 + 1;
        let mut khat = vec![C64::default(); bins];
        let mut dkhat = vec![C64::default(); bins];
        // powers A^{j+1} per bin (kept for the h gradient)
        let mut pows = vec![vec![C64::default(); h.len()]; bins];
        for k in 0..bins {
            let q = C64::from_polar(1.0, -2.0 * std::f64::consts::PI * k as f64 / len as f64);
            let den = one - q * a;
            let av = (q - a) / den;
            let dav = (q * q - 1.0) / (den * den);
            let mut p = one; // A^j
            for (j, hj) in h.iter().enumerate() {
                let next = p * av;
                pows[k][j] = next;
                khat[k] += next * *hj;
                dkhat[k] += p * dav * ((j + 1) as f64 * hj);
                p = next;
            }
        }
        (khat, pows, dkhat)
    }

    /// The circular (Algorithm 1) kernel of length `len`: the time-aliased impulse response.
    pub fn circular_kernel(h: &[f64], dt: f64, len: usize) -> Vec<f64> {
        let (a, _) = allpass(dt);
        let (mut khat, _, _) = Self::circular_spectrum(h, a, len);
        irfft(&mut khat, len)
    }

    fn params(&self, store: &ParamStore<impl Float>, row: usize) -> (Vec<f64>, f64) {
        let m = self.m();
        let hv = store.value(self.h)[row * m..(row + 1) * m]
            .iter()
            .map(|v| v.f64())
            .collect();
        let dt = store.value(self.log_dt)[row % self.cfg.channels]
            .f64()
            .exp();
        (hv, dt)
    }
}

fn irfft(spec: &mut [C64], len: usize) -> Vec<f64> {
    spec[0].im = 0.0;
    if len.is_multiple_of(2) {
        spec[len / 2].im = 0.0;
    }
    let plan = RealFftPlanner::<f64>::new().plan_fft_inverse(len);
    let mut out = vec![0.0; len];
    plan.process(spec, &mut out).expect("irfft");
    out.iter_mut().for_each(|v| *v /= len as f64);
    out
}

impl<T: Float> SequenceKernel<T> for HopeKernel {
    fn log_dt(&self) -> Option<crate::engine::params::ParamId> {
        Some(self.log_dt)
    }

    fn channels(&self) -> usize {
        self.cfg.channels
    }

    fn directions(&self) -> usize {
        match self.cfg.opts.mode {
            HopeMode::Circular => 2,
            HopeMode::Causal => self.dirs(),
        }
    }

    fn forward(&mut self, store: &ParamStore<T>, len: usize, k: &mut Vec<T>) {
        self.len = len;
        let hn = self.cfg.channels;
        let rows: Vec<Vec<f64>> = (0..self.dirs() * hn)
            .into_par_iter()
            .map(|row| {
                let (h, dt) = self.params(store, row);
                match self.cfg.opts.mode {
                    HopeMode::Causal => Self::causal_kernel(&h, dt, len),
                    HopeMode::Circular => Self::circular_kernel(&h, dt, len),
                }
            })
            .collect();
        k.clear();
        match self.cfg.opts.mode {
            HopeMode::Causal => {
                for r in &rows {
                    k.extend(r.iter().map(|v| T::of(*v)));
                }
            }
            HopeMode::Circular => {
                // causal lags 0..L−1 = K_circ; lag −(j+1) = K_circ[L−1−j] (lag −L never occurs)
                for r in &rows {
                    k.extend(r.iter().map(|v| T::of(*v)));
                }
                for r in &rows {
                    k.extend((0..len).map(|j| {
                        if j + 1 < len {
                            T::of(r[len - 1 - j])
                        } else {
                            T::zero()
                        }
                    }));
                }
            }
        }
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dk: &[T]) {
        let (len, hn, m) = (self.len, self.cfg.channels, self.m());
        let rows = self.dirs() * hn;
        let mode = self.cfg.opts.mode;
        let grads: Vec<(Vec<f64>, f64)> = (0..rows)
            .into_par_iter()
            .map(|row| {
                let (h, dt) = self.params(store, row);
                let (a, da_ddt) = allpass(dt);
                let mut gh = vec![0.0; m];
                let mut ga = 0.0;
                match mode {
                    HopeMode::Causal => {
                        let g = &dk[row * len..(row + 1) * len];
                        cascade(a, m, len, true, |j, y, yd| {
                            let (mut s, mut sd) = (0.0, 0.0);
                            for t in 0..len {
                                let gt = g[t].f64();
                                s += gt * y[t];
                                sd += gt * yd[t];
                            }
                            gh[j] = s;
                            ga += h[j] * sd;
                        });
                    }
                    HopeMode::Circular => {
                        // fold the two halves back onto K_circ, then the irfft adjoint
                        let mut g: Vec<f64> = dk[row * len..(row + 1) * len]
                            .iter()
                            .map(|v| v.f64())
                            .collect();
                        let off = rows * len + row * len;
                        for j in 0..len.saturating_sub(1) {
                            g[len - 1 - j] += dk[off + j].f64();
                        }
                        let plan = RealFftPlanner::<f64>::new().plan_fft_forward(len);
                        let mut spec = plan.make_output_vec();
                        plan.process(&mut g, &mut spec).expect("rfft");
                        let (_, pows, dkhat) = Self::circular_spectrum(&h, a, len);
                        let last = spec.len() - 1;
                        for (k, s) in spec.iter().enumerate() {
                            let edge = k == 0 || (len.is_multiple_of(2) && k == last);
                            let c = if edge { 1.0 } else { 2.0 } / len as f64;
                            let mut gk = *s * c;
                            if edge {
                                gk.im = 0.0;
                            }
                            for (j, p) in pows[k].iter().enumerate() {
                                gh[j] += (gk.conj() * p).re;
                            }
                            ga += (gk.conj() * dkhat[k]).re;
                        }
                    }
                }
                (gh, ga * da_ddt * dt)
            })
            .collect();
        for (row, (gh, gdt)) in grads.into_iter().enumerate() {
            let g = store.grad_mut(self.h);
            for (o, v) in g[row * m..(row + 1) * m].iter_mut().zip(gh) {
                *o += T::of(v);
            }
            store.grad_mut(self.log_dt)[row % hn] += T::of(gdt);
        }
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        if self.cfg.opts.mode == HopeMode::Circular {
            return Err(Error::Unsupported("the circular HOPE kernel (Algorithm 1) wraps around the sequence: it has no recurrent (step) mode; use model.hope.mode = \"causal\"".into()));
        }
        if self.cfg.bidirectional {
            return Err(Error::Unsupported(
                "a bidirectional HOPE layer sees the future: it has no recurrent (step) mode"
                    .into(),
            ));
        }
        let hn = self.cfg.channels;
        let mut h = Vec::with_capacity(hn * self.m());
        let mut a = Vec::with_capacity(hn);
        for row in 0..hn {
            let (hv, dt) = self.params(store, row);
            h.extend(hv.into_iter().map(T::of));
            a.push(T::of(allpass(dt).0));
        }
        Ok(Box::new(CascadeStepper {
            hn,
            m: self.m(),
            h,
            a,
        }))
    }
}

/// The recurrent form of the causal HOPE kernel: per channel, n all-pass sections in series
/// (state `[H, n + 1]`: each section's last output, and the last input).
#[derive(Debug)]
pub struct CascadeStepper<T> {
    hn: usize,
    m: usize,
    h: Vec<T>,
    a: Vec<T>,
}

impl<T: Float> Stepper<T> for CascadeStepper<T> {
    fn state_len(&self) -> usize {
        self.hn * (self.m + 1)
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        let m = self.m;
        for c in 0..self.hn {
            let st = &mut state[c * (m + 1)..(c + 1) * (m + 1)];
            let a = self.a[c];
            // st[0] = previous input; st[j + 1] = previous output of section j
            let mut x = u[c];
            let mut acc = T::zero();
            for j in 0..m {
                let v = a * st[j + 1] + st[j] - a * x;
                st[j] = x; // section j's input becomes "previous" for the next step
                x = v;
                acc += self.h[c * m + j] * v;
            }
            st[m] = x;
            y[c] = acc;
        }
    }
}
