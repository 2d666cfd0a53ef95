//! S4D: the diagonal state space kernel (Gu, Gupta, Goel, Ré 2022), `M = N/2` complex modes per
//! channel, conjugate symmetry implied.
//!
//! ```text
//! parameters (per layer; H channels, M modes, D = 1 or 2 directions)
//!   log_dt      [H]         Δ = exp(log_dt)
//!   log_a_real  [H, M]      Re A = −max(exp(log_a_real), 1e-4)      (always ≤ −1e-4)
//!   a_imag      [H, M]      Im A (positive for the standard inits)
//!   b_re, b_im  [H, M]      B
//!   c_re, c_im  [D, H, M]   C (one per direction)
//! discretization, per mode:  z = log Ā,  w = B̄/B
//!   ZOH       z = ΔA,                           w = (e^{ΔA} − 1)/A
//!   bilinear  z = log((1 + ΔA/2)/(1 − ΔA/2)),   w = Δ/(1 − ΔA/2)
//! kernel (Vandermonde)     K[d,h,l] = 2·Re Σ_m c̃[d,h,m] e^{l z[h,m]},   c̃ = C·B·w
//! backward (g_x = ∂ℒ/∂Re x + i ∂ℒ/∂Im x; for holomorphic y = f(x): g_x += g_y·conj(f'(x)))
//!   S0 = Σ_l dK_l conj(e^{lz}),  S1 = Σ_l dK_l · l · conj(e^{lz})
//!   g_c̃ = 2 S0,   g_z = Σ_d 2 conj(c̃_d) S1_d
//!   g_C = g_c̃ conj(B w),  g_B = Σ_d g_c̃_d conj(C_d w),  g_w = Σ_d g_c̃_d conj(C_d B)
//!   g_A = g_z conj(∂z/∂A) + g_w conj(∂w/∂A),   ∂ℒ/∂Δ = Re(conj(g_z) ∂z/∂Δ + conj(g_w) ∂w/∂Δ)
//! recurrence   x_t = e^{z} x_{t−1} + B w u_t,   y_t = 2·Re Σ_m C x_t      (impulse response = K)
//! ```
//!
//! The kernel is generated in f64 whatever `T` is (the phases `l·Im z` reach 1e4–1e5 rad at long L):
//! powers by a recurrence re-anchored with an exact `exp(l z)` every 32 steps.

use crate::float::Float;
use crate::kernel::{SequenceKernel, Stepper};
use crate::params::{ParamId, ParamKind, ParamStore};
use num_complex::Complex64 as C64;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statespace_math::s4d::{self as inits, DiagInit};

/// Discretization of the diagonal system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disc {
    /// Zero-order hold.
    Zoh,
    /// Bilinear.
    Bilinear,
}

/// Smallest magnitude of `Re A` (the clamp of the parameterization).
pub const MIN_NEG_REAL: f64 = 1e-4;
const ANCHOR: usize = 32;

/// Per-mode discretization and its derivatives.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mode {
    pub(crate) a: C64,
    pub(crate) dt: f64,
    /// log Ā
    pub(crate) z: C64,
    /// B̄/B
    pub(crate) w: C64,
    pub(crate) dz_da: C64,
    pub(crate) dz_ddt: C64,
    pub(crate) dw_da: C64,
    pub(crate) dw_ddt: C64,
    pub(crate) clamped: bool,
}

/// One mode `a` discretized at step `dt`, with the derivatives of log Ā and B̄/B.
pub(crate) fn discretize(a: C64, dt: f64, disc: Disc, clamped: bool) -> Mode {
    let one = C64::new(1.0, 0.0);
    match disc {
        Disc::Zoh => {
            let z = a * dt;
            let e = z.exp();
            // (e^z − 1)/A = Δ·(e^z − 1)/z, accurate near z = 0
            let phi = if z.norm() < 1e-5 {
                one + z / 2.0 + z * z / 6.0
            } else {
                (e - 1.0) / z
            };
            let w = phi * dt;
            // ∂w/∂A = Δe^z/A − (e^z − 1)/A² = (Δ e^z − w)/A
            let dw_da = (e * dt - w) / a;
            Mode {
                a,
                dt,
                z,
                w,
                dz_da: C64::new(dt, 0.0),
                dz_ddt: a,
                dw_da,
                dw_ddt: e,
                clamped,
            }
        }
        Disc::Bilinear => {
            let h = a * (dt / 2.0);
            let (p, m) = (one + h, one - h);
            let z = (p / m).ln();
            let w = dt / m;
            let den = p * m;
            Mode {
                a,
                dt,
                z,
                w,
                dz_da: dt / den,
                dz_ddt: a / den,
                dw_da: dt * dt / 2.0 / (m * m),
                dw_ddt: one / (m * m),
                clamped,
            }
        }
    }
}

/// Configuration of an S4D kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S4dConfig {
    /// Channels H.
    pub channels: usize,
    /// State size N (N/2 complex modes).
    pub state_size: usize,
    /// Initialization of A.
    pub init: DiagInit,
    /// Discretization.
    pub disc: Disc,
    /// Smallest initial step.
    pub dt_min: f64,
    /// Largest initial step.
    pub dt_max: f64,
    /// Two directions (forward and reverse kernels).
    pub bidirectional: bool,
    /// Explicit modes `(λ, B)` replacing `init` (S4-PTD); `state_size` must be twice their number.
    #[serde(skip)]
    pub custom: Option<Vec<(C64, C64)>>,
}

/// The S4D kernel: parameter ids and the cache of the last forward.
#[derive(Debug)]
pub struct S4dKernel {
    cfg: S4dConfig,
    /// `log_dt [H]`.
    pub log_dt: ParamId,
    /// `log_a_real [H, M]`.
    pub log_a_real: ParamId,
    /// `a_imag [H, M]`.
    pub a_imag: ParamId,
    /// `b_re [H, M]`.
    pub b_re: ParamId,
    /// `b_im [H, M]`.
    pub b_im: ParamId,
    /// `c_re [D, H, M]`.
    pub c_re: ParamId,
    /// `c_im [D, H, M]`.
    pub c_im: ParamId,
    modes: Vec<Mode>,
    ctilde: Vec<C64>,
    b: Vec<C64>,
    c: Vec<C64>,
    len: usize,
}

impl S4dKernel {
    /// Registers the parameters under `prefix` and initializes them (A from `cfg.init`, B = 1,
    /// C complex normal with E|C|² = 1, log Δ uniform in [log dt_min, log dt_max]).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: S4dConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, String> {
        let (h, n) = (cfg.channels, cfg.state_size);
        let m = n / 2;
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let (a, b0): (Vec<C64>, Vec<C64>) = match &cfg.custom {
            Some(modes) => {
                if modes.len() != m {
                    return Err(format!(
                        "S4D: {} explicit modes for state size {n} (need N/2)",
                        modes.len()
                    ));
                }
                modes.iter().copied().unzip()
            }
            None => (
                inits::init_a(cfg.init, n, rng).map_err(|e| e.to_string())?,
                vec![C64::new(1.0, 0.0); m],
            ),
        };
        let dts =
            inits::log_uniform_dt(h, cfg.dt_min, cfg.dt_max, rng).map_err(|e| e.to_string())?;
        let c = inits::complex_normal(dirs * h * m, rng);
        let t = |v: Vec<f64>| v.into_iter().map(T::of).collect::<Vec<T>>();
        let log_dt = store.add(
            format!("{prefix}.log_dt"),
            &[h],
            t(dts.iter().map(|d| d.ln()).collect()),
            ParamKind::SsmDt,
        );
        let rep = |f: &dyn Fn(C64) -> f64| {
            t((0..h)
                .flat_map(|_| a.iter().map(|z| f(*z)))
                .collect::<Vec<f64>>())
        };
        let log_a_real = store.add(
            format!("{prefix}.log_a_real"),
            &[h, m],
            rep(&|z| (-z.re).max(MIN_NEG_REAL).ln()),
            ParamKind::SsmA,
        );
        let a_imag = store.add(
            format!("{prefix}.a_imag"),
            &[h, m],
            rep(&|z| z.im),
            ParamKind::SsmA,
        );
        let (b_re, b_im) = store.add_complex(
            &format!("{prefix}.b"),
            &[h, m],
            &(0..h).flat_map(|_| b0.iter().copied()).collect::<Vec<_>>(),
            ParamKind::SsmB,
        );
        let (c_re, c_im) =
            store.add_complex(&format!("{prefix}.c"), &[dirs, h, m], &c, ParamKind::Weight);
        Ok(Self {
            cfg,
            log_dt,
            log_a_real,
            a_imag,
            b_re,
            b_im,
            c_re,
            c_im,
            modes: Vec::new(),
            ctilde: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
            len: 0,
        })
    }

    fn modes_per_channel(&self) -> usize {
        self.cfg.state_size / 2
    }

    /// Discretized modes and C̃ from the current parameter values.
    fn prepare<T: Float>(&mut self, store: &ParamStore<T>) {
        let (h, m) = (self.cfg.channels, self.modes_per_channel());
        let dirs = self.directions_count();
        let (ldt, lar, ai) = (
            store.value(self.log_dt),
            store.value(self.log_a_real),
            store.value(self.a_imag),
        );
        let (br, bi) = (store.value(self.b_re), store.value(self.b_im));
        let (cr, ci) = (store.value(self.c_re), store.value(self.c_im));
        self.modes.clear();
        self.b.clear();
        for hh in 0..h {
            let dt = ldt[hh].f64().exp();
            for mm in 0..m {
                let i = hh * m + mm;
                let e = lar[i].f64().exp();
                let clamped = e < MIN_NEG_REAL;
                let a = C64::new(-e.max(MIN_NEG_REAL), ai[i].f64());
                self.modes.push(discretize(a, dt, self.cfg.disc, clamped));
                self.b.push(C64::new(br[i].f64(), bi[i].f64()));
            }
        }
        self.c = (0..dirs * h * m)
            .map(|i| C64::new(cr[i].f64(), ci[i].f64()))
            .collect();
        self.ctilde = (0..dirs * h * m)
            .map(|i| {
                let j = i % (h * m);
                self.c[i] * self.b[j] * self.modes[j].w
            })
            .collect();
    }

    fn directions_count(&self) -> usize {
        if self.cfg.bidirectional { 2 } else { 1 }
    }
}

/// Calls `f(l, e^{l z})` for l = 0..len, with the powers re-anchored every `ANCHOR` steps.
#[inline]
fn for_powers(z: C64, len: usize, mut f: impl FnMut(usize, C64)) {
    let step = z.exp();
    let mut v = C64::new(1.0, 0.0);
    for l in 0..len {
        if l % ANCHOR == 0 {
            v = (z * l as f64).exp();
        }
        f(l, v);
        v *= step;
    }
}

impl<T: Float> SequenceKernel<T> for S4dKernel {
    fn channels(&self) -> usize {
        self.cfg.channels
    }

    fn directions(&self) -> usize {
        self.directions_count()
    }

    fn forward(&mut self, store: &ParamStore<T>, len: usize, k: &mut Vec<T>) {
        self.prepare(store);
        self.len = len;
        let (h, m) = (self.cfg.channels, self.modes_per_channel());
        let dirs = self.directions_count();
        let rows: Vec<Vec<f64>> = (0..h)
            .into_par_iter()
            .map(|hh| {
                let mut acc = vec![0.0; dirs * len];
                for mm in 0..m {
                    let z = self.modes[hh * m + mm].z;
                    let ct: Vec<C64> = (0..dirs)
                        .map(|d| self.ctilde[(d * h + hh) * m + mm] * 2.0)
                        .collect();
                    for_powers(z, len, |l, v| {
                        for d in 0..dirs {
                            acc[d * len + l] += ct[d].re * v.re - ct[d].im * v.im;
                        }
                    });
                }
                acc
            })
            .collect();
        k.clear();
        k.resize(dirs * h * len, T::zero());
        for (hh, row) in rows.iter().enumerate() {
            for d in 0..dirs {
                let dst = &mut k[(d * h + hh) * len..(d * h + hh + 1) * len];
                for (o, v) in dst.iter_mut().zip(&row[d * len..(d + 1) * len]) {
                    *o = T::of(*v);
                }
            }
        }
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dk: &[T]) {
        let (h, m, len) = (self.cfg.channels, self.modes_per_channel(), self.len);
        let dirs = self.directions_count();
        assert_eq!(dk.len(), dirs * h * len);
        struct G {
            dlog_dt: f64,
            dlar: Vec<f64>,
            dai: Vec<f64>,
            db: Vec<C64>,
            dc: Vec<Vec<C64>>,
        }
        let grads: Vec<G> = (0..h)
            .into_par_iter()
            .map(|hh| {
                let mut g = G {
                    dlog_dt: 0.0,
                    dlar: vec![0.0; m],
                    dai: vec![0.0; m],
                    db: vec![C64::default(); m],
                    dc: vec![vec![C64::default(); m]; dirs],
                };
                let mut ddt = 0.0;
                for mm in 0..m {
                    let j = hh * m + mm;
                    let md = self.modes[j];
                    let mut s0 = vec![C64::default(); dirs];
                    let mut s1 = vec![C64::default(); dirs];
                    for_powers(md.z, len, |l, v| {
                        let vc = v.conj();
                        for d in 0..dirs {
                            let g = dk[(d * h + hh) * len + l].f64();
                            s0[d] += vc * g;
                            s1[d] += vc * (g * l as f64);
                        }
                    });
                    let mut g_z = C64::default();
                    let mut g_w = C64::default();
                    let mut g_b = C64::default();
                    for d in 0..dirs {
                        let i = (d * h + hh) * m + mm;
                        let g_ct = s0[d] * 2.0;
                        g_z += self.ctilde[i].conj() * s1[d] * 2.0;
                        let c = self.c[i];
                        g.dc[d][mm] = g_ct * (self.b[j] * md.w).conj();
                        g_b += g_ct * (c * md.w).conj();
                        g_w += g_ct * (c * self.b[j]).conj();
                    }
                    g.db[mm] = g_b;
                    let g_a = g_z * md.dz_da.conj() + g_w * md.dw_da.conj();
                    ddt += (g_z.conj() * md.dz_ddt + g_w.conj() * md.dw_ddt).re;
                    // Re A = −exp(α) (unclamped): ∂ℒ/∂α = Re(g_A)·(−exp α) = Re(g_A)·Re A
                    g.dlar[mm] = if md.clamped { 0.0 } else { g_a.re * md.a.re };
                    g.dai[mm] = g_a.im;
                }
                g.dlog_dt = ddt * self.modes[hh * m].dt;
                g
            })
            .collect();
        for (hh, g) in grads.into_iter().enumerate() {
            store.grad_mut(self.log_dt)[hh] += T::of(g.dlog_dt);
            for mm in 0..m {
                let j = hh * m + mm;
                store.grad_mut(self.log_a_real)[j] += T::of(g.dlar[mm]);
                store.grad_mut(self.a_imag)[j] += T::of(g.dai[mm]);
                store.grad_mut(self.b_re)[j] += T::of(g.db[mm].re);
                store.grad_mut(self.b_im)[j] += T::of(g.db[mm].im);
                for d in 0..dirs {
                    let i = (d * h + hh) * m + mm;
                    store.grad_mut(self.c_re)[i] += T::of(g.dc[d][mm].re);
                    store.grad_mut(self.c_im)[i] += T::of(g.dc[d][mm].im);
                }
            }
        }
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, String> {
        if self.cfg.bidirectional {
            return Err(
                "a bidirectional S4D layer sees the future: it has no recurrent (step) mode".into(),
            );
        }
        let mut me = S4dKernel {
            cfg: self.cfg.clone(),
            modes: Vec::new(),
            ctilde: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
            len: 0,
            ..*self
        };
        me.prepare(store);
        let n = me.modes.len();
        let abar: Vec<(T, T)> = me
            .modes
            .iter()
            .map(|md| {
                let e = md.z.exp();
                (T::of(e.re), T::of(e.im))
            })
            .collect();
        let bbar: Vec<(T, T)> = (0..n)
            .map(|j| {
                let v = me.b[j] * me.modes[j].w;
                (T::of(v.re), T::of(v.im))
            })
            .collect();
        let c: Vec<(T, T)> =
            me.c.iter()
                .map(|v| (T::of(2.0 * v.re), T::of(2.0 * v.im)))
                .collect();
        Ok(Box::new(DiagStepper {
            h: me.cfg.channels,
            m: me.modes_per_channel(),
            abar,
            bbar,
            c,
        }))
    }
}

/// The recurrent form of a diagonal kernel (state: `[H, M]` complex as interleaved re/im).
#[derive(Debug)]
pub struct DiagStepper<T> {
    h: usize,
    m: usize,
    abar: Vec<(T, T)>,
    bbar: Vec<(T, T)>,
    c: Vec<(T, T)>,
}

impl<T: Float> Stepper<T> for DiagStepper<T> {
    fn state_len(&self) -> usize {
        2 * self.h * self.m
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        let m = self.m;
        for hh in 0..self.h {
            let mut acc = T::zero();
            let uh = u[hh];
            for mm in 0..m {
                let j = hh * m + mm;
                let (xr, xi) = (state[2 * j], state[2 * j + 1]);
                let (ar, ai) = self.abar[j];
                let (br, bi) = self.bbar[j];
                let nr = ar * xr - ai * xi + br * uh;
                let ni = ar * xi + ai * xr + bi * uh;
                state[2 * j] = nr;
                state[2 * j + 1] = ni;
                let (cr, ci) = self.c[j];
                acc += cr * nr - ci * ni;
            }
            y[hh] = acc;
        }
    }
}
