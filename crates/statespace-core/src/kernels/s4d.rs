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
//! Fused generation (never an `[H, M, L]` tensor): with chunk length `T ≈ √L` and `l = qT + j`,
//!
//! ```text
//! e^{lz} = e^{qTz}·e^{jz}   ⇒   K[qT + j] = Σ_m Re(2c̃ e^{qTz})·Re e^{jz} − Im(2c̃ e^{qTz})·Im e^{jz}
//! ```
//!
//! one real GEMM `[Q, 2M]·[2M, T]` per channel and direction; the backward's S0 and S1 are one GEMM
//! `[4M, T]·[T, Q]` (rows e^{jz} and j·e^{jz}) followed by an `O(QM)` sum over the anchors. The
//! anchors e^{qTz} and the in-chunk powers e^{jz} are computed in f64 (phases `l·Im z` reach 1e4–1e5
//! rad at long L; recurrences re-anchored by an exact `exp(lz)` every 32 steps) and rounded to `T`
//! once, so an f32 kernel only carries the rounding of the GEMM's accumulation (`≈ √(2M)·ε`).

use crate::engine::float::Float;
use crate::engine::gemm::Gemm;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::engine::simd;
use crate::error::Error;
use crate::kernels::discretize::{Disc, MIN_NEG_REAL, Mode, clamped_real, discretize};
use crate::kernels::{SequenceKernel, Stepper};
use num_complex::Complex64 as C64;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statespace_math::s4d::{self as inits, DiagInit};

const ANCHOR: usize = 64;

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
    grad_buf: Vec<f64>,
}

impl S4dKernel {
    /// Registers the parameters under `prefix` and initializes them (A from `cfg.init`, B = 1,
    /// C complex normal with E|C|² = 1, log Δ uniform in [log dt_min, log dt_max]).
    pub fn new<T: Float>(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: S4dConfig,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let (h, n) = (cfg.channels, cfg.state_size);
        let m = n / 2;
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let (a, b0): (Vec<C64>, Vec<C64>) = match &cfg.custom {
            Some(modes) => {
                if modes.len() != m {
                    return Err(Error::Invalid(format!(
                        "S4D: {} explicit modes for state size {n} (need N/2)",
                        modes.len()
                    )));
                }
                modes.iter().copied().unzip()
            }
            None => (
                inits::init_a(cfg.init, n, rng).map_err(Error::math("S4D init of A"))?,
                vec![C64::new(1.0, 0.0); m],
            ),
        };
        let dts = inits::log_uniform_dt(h, cfg.dt_min, cfg.dt_max, rng)
            .map_err(Error::math("initial steps"))?;
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
            grad_buf: Vec::new(),
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
                let (re, clamped) = clamped_real(lar[i].f64());
                let a = C64::new(re, ai[i].f64());
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

/// Chunk length `T` of the blocked Vandermonde product: about √L, a power of two in [8, 128].
fn chunk_len(len: usize) -> usize {
    ((len as f64).sqrt().ceil() as usize)
        .next_power_of_two()
        .clamp(8, 128)
}

/// Per-thread scratch of the blocked kernel (sized on first use, reused across channels).
struct Blocked<T> {
    /// `[T, 2M]` (forward) or `[T, 4M]` (backward), row j: Re e^{jz_m}, Im e^{jz_m} (then j·Re, j·Im).
    v: Vec<T>,
    /// `[Q, 2M]`: Re(c·e^{qTz}), −Im(c·e^{qTz}) (forward) / the padded `dK [Q, T]` (backward).
    p: Vec<T>,
    /// `[Q, T]` output when `L` is not a multiple of `T` (forward) / `Rᵀ [Q, 4M]` (backward).
    out: Vec<T>,
    /// `[Q, M]` chunk anchors e^{qTz} in f64 (real and imaginary parts).
    er: Vec<f64>,
    ei: Vec<f64>,
    /// Per-mode recurrence state and step.
    cur: [Vec<f64>; 4],
    /// `[dirs, M]` S0 = Σ_l dK_l conj(e^{lz}) and S1 = Σ_l l·dK_l conj(e^{lz}) (backward).
    s0: Vec<C64>,
    s1: Vec<C64>,
}

/// `x` rounded to `T`, with magnitudes below 1e-30 flushed to zero: decayed powers (e^{lΔ Re A} at
/// long L) would otherwise be subnormal in f32, and every FMA on a subnormal costs ~100 cycles.
#[inline]
fn flush<T: Float>(x: f64) -> T {
    if x.abs() < 1e-30 { T::zero() } else { T::of(x) }
}

/// Powers `e^{k·z_m}`, k = 0..count, of every mode at once (modes innermost, so the complex
/// products vectorize): calls `row(k, re, im)` with the M values of power k. The recurrence is
/// re-anchored by an exact `exp` every `ANCHOR` steps (f64 error ≲ ANCHOR·ε).
fn mode_powers(
    zs: &[C64],
    count: usize,
    cur: &mut [Vec<f64>; 4],
    mut row: impl FnMut(usize, &[f64], &[f64]),
) {
    let m = zs.len();
    for v in cur.iter_mut() {
        v.clear();
        v.resize(m, 0.0);
    }
    let [cr, ci, sr, si] = cur;
    let (cr, ci, sr, si) = (&mut cr[..], &mut ci[..], &mut sr[..], &mut si[..]);
    for (mm, z) in zs.iter().enumerate() {
        let s = z.exp();
        (sr[mm], si[mm]) = (s.re, s.im);
    }
    for k in 0..count {
        if k % ANCHOR == 0 {
            for (mm, z) in zs.iter().enumerate() {
                let a = (z * k as f64).exp();
                (cr[mm], ci[mm]) = (a.re, a.im);
            }
        }
        row(k, cr, ci);
        for (((r, i), a), b) in cr.iter_mut().zip(ci.iter_mut()).zip(&*sr).zip(&*si) {
            (*r, *i) = (*r * a - *i * b, *r * b + *i * a);
        }
    }
}

impl<T: Float> Blocked<T> {
    fn new() -> Self {
        Self {
            v: Vec::new(),
            p: Vec::new(),
            out: Vec::new(),
            er: Vec::new(),
            ei: Vec::new(),
            cur: Default::default(),
            s0: Vec::new(),
            s1: Vec::new(),
        }
    }

    /// Fills `v` and the anchors `er`, `ei` for the modes `zs` of one channel (`zt` = the same modes'
    /// `T·z`).
    fn powers(&mut self, zs: &[C64], zt: &[C64], tc: usize, q: usize, weighted: bool) {
        let m = zs.len();
        let w = if weighted { 4 * m } else { 2 * m };
        self.v.resize(tc * w, T::zero()); // every element is written below
        let v = &mut self.v;
        mode_powers(zs, tc, &mut self.cur, |j, re, im| {
            let row = &mut v[j * w..(j + 1) * w];
            let (a, rest) = row.split_at_mut(m);
            let (b, rest) = rest.split_at_mut(m);
            for ((o, x), (p, y)) in a.iter_mut().zip(re).zip(b.iter_mut().zip(im)) {
                (*o, *p) = (flush(*x), flush(*y));
            }
            if weighted {
                let jf = j as f64;
                let (a, b) = rest.split_at_mut(m);
                for ((o, x), (p, y)) in a.iter_mut().zip(re).zip(b.iter_mut().zip(im)) {
                    (*o, *p) = (flush(*x * jf), flush(*y * jf));
                }
            }
        });
        self.er.resize(q * m, 0.0);
        self.ei.resize(q * m, 0.0);
        let (er, ei) = (&mut self.er, &mut self.ei);
        mode_powers(zt, q, &mut self.cur, |qq, re, im| {
            er[qq * m..(qq + 1) * m].copy_from_slice(re);
            ei[qq * m..(qq + 1) * m].copy_from_slice(im);
        });
    }

    /// S0 and S1 of every mode for one row `dk [L]`, appended to `s0`, `s1` (after
    /// [`Blocked::powers`] with `weighted`):
    ///
    /// ```text
    /// Rᵀ[q, r] = Σ_j dK[qT + j]·V[j, r]      (one GEMM [Q, T]·[T, 4M])
    /// S0 = Σ_q conj(e^{qTz}) (R_re − i R_im),   S1 = Σ_q conj(e^{qTz}) (qT (R_re − i R_im) + R_jre − i R_jim)
    /// ```
    fn sums(&mut self, dk: &[T], tc: usize, q: usize, m: usize) {
        let len = dk.len();
        let dks: &[T] = if q * tc == len {
            dk
        } else {
            self.p.clear();
            self.p.extend_from_slice(dk);
            self.p.resize(q * tc, T::zero());
            &self.p
        };
        let w = 4 * m;
        self.out.resize(q * w, T::zero()); // overwritten by the product
        Gemm::new(q, w, tc).run(&mut self.out, dks, &self.v);
        let [s0r, s0i, s1r, s1i] = &mut self.cur;
        for v in [&mut *s0r, &mut *s0i, &mut *s1r, &mut *s1i] {
            v.clear();
            v.resize(m, 0.0);
        }
        for qq in 0..q {
            let r = &self.out[qq * w..(qq + 1) * w];
            let (er, ei) = (
                &self.er[qq * m..(qq + 1) * m],
                &self.ei[qq * m..(qq + 1) * m],
            );
            let lq = (qq * tc) as f64;
            let (r0, rest) = r.split_at(m);
            let (r1, rest) = rest.split_at(m);
            let (r2, r3) = rest.split_at(m);
            let sums = s0r
                .iter_mut()
                .zip(s0i.iter_mut())
                .zip(s1r.iter_mut().zip(s1i.iter_mut()));
            let rows = r0.iter().zip(r1).zip(r2.iter().zip(r3));
            for ((((s0r, s0i), (s1r, s1i)), ((r0, r1), (r2, r3))), (er, ei)) in
                sums.zip(rows).zip(er.iter().zip(ei))
            {
                // a = R_re − i R_im, b = lq·a + R_jre − i R_jim; S0 += conj(E)·a, S1 += conj(E)·b
                let (ar, ai) = (r0.f64(), -r1.f64());
                let (br, bi) = (lq * ar + r2.f64(), lq * ai - r3.f64());
                let (xr, xi) = (*er, -*ei);
                *s0r += xr * ar - xi * ai;
                *s0i += xr * ai + xi * ar;
                *s1r += xr * br - xi * bi;
                *s1i += xr * bi + xi * br;
            }
        }
        for mm in 0..m {
            self.s0.push(C64::new(s0r[mm], s0i[mm]));
            self.s1.push(C64::new(s1r[mm], s1i[mm]));
        }
    }
}

impl<T: Float> SequenceKernel<T> for S4dKernel {
    fn log_dt(&self) -> Option<crate::engine::params::ParamId> {
        Some(self.log_dt)
    }

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
        if len == 0 || m == 0 {
            k.clear();
            k.resize(dirs * h * len, T::zero());
            return;
        }
        k.resize(dirs * h * len, T::zero()); // every element is written below
        let tc = chunk_len(len);
        let q = len.div_ceil(tc);
        let ctilde = &self.ctilde;
        let zs: Vec<C64> = self.modes.iter().map(|md| md.z).collect();
        let zt: Vec<C64> = zs.iter().map(|z| z * tc as f64).collect();
        let (zs, zt) = (&zs, &zt);
        // one row K[d, h, :] per task: K[qT + j] = Σ_m Re(c̃₂ e^{qTz}) Re e^{jz} − Im(c̃₂ e^{qTz}) Im e^{jz}
        k.par_chunks_mut(len)
            .enumerate()
            .for_each_init(Blocked::<T>::new, |s, (row, out)| {
                let (d, hh) = (row / h, row % h);
                let (zs, zt) = (&zs[hh * m..(hh + 1) * m], &zt[hh * m..(hh + 1) * m]);
                s.powers(zs, zt, tc, q, false);
                s.p.resize(q * 2 * m, T::zero()); // every element is written below
                let c2: Vec<C64> = ctilde[(d * h + hh) * m..(d * h + hh + 1) * m]
                    .iter()
                    .map(|c| c * 2.0)
                    .collect();
                for qq in 0..q {
                    let (er, ei) = (&s.er[qq * m..(qq + 1) * m], &s.ei[qq * m..(qq + 1) * m]);
                    let (pr, pi) = s.p[qq * 2 * m..(qq + 1) * 2 * m].split_at_mut(m);
                    // 2c̃·e^{qTz}: real part, minus imaginary part
                    for ((c2, (o, p)), (a, b)) in
                        c2.iter().zip(pr.iter_mut().zip(pi)).zip(er.iter().zip(ei))
                    {
                        (*o, *p) = (
                            flush(c2.re * a - c2.im * b),
                            flush(-(c2.re * b + c2.im * a)),
                        );
                    }
                }
                // [Q, 2M] · ([T, 2M])ᵀ → [Q, T] = K[d, h, :] (padded to Q·T)
                if q * tc == len {
                    Gemm::new(q, tc, 2 * m).transpose_b().run(out, &s.p, &s.v);
                } else {
                    s.out.resize(q * tc, T::zero());
                    Gemm::new(q, tc, 2 * m)
                        .transpose_b()
                        .run(&mut s.out, &s.p, &s.v);
                    out.copy_from_slice(&s.out[..len]);
                }
            });
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dk: &[T]) {
        let (h, m, len) = (self.cfg.channels, self.modes_per_channel(), self.len);
        let dirs = self.directions_count();
        assert_eq!(dk.len(), dirs * h * len);
        if len == 0 || m == 0 {
            return;
        }
        let tc = chunk_len(len);
        let q = len.div_ceil(tc);
        // per channel: [∂log Δ, ∂log(−Re A) [M], ∂Im A [M], ∂B re/im [2M], ∂C re/im [dirs, 2M]]
        let stride = 1 + m * (4 + 2 * dirs);
        let mut gbuf = std::mem::take(&mut self.grad_buf);
        gbuf.clear();
        gbuf.resize(h * stride, 0.0);
        let (modes, ctilde, bs, cs) = (&self.modes, &self.ctilde, &self.b, &self.c);
        gbuf.par_chunks_mut(stride)
            .enumerate()
            .for_each_init(Blocked::<T>::new, |s, (hh, g)| {
                let zs = &modes[hh * m..(hh + 1) * m];
                let zz: Vec<C64> = zs.iter().map(|md| md.z).collect();
                let zt: Vec<C64> = zz.iter().map(|z| z * tc as f64).collect();
                s.powers(&zz, &zt, tc, q, true);
                s.s0.clear();
                s.s1.clear();
                for d in 0..dirs {
                    s.sums(&dk[(d * h + hh) * len..][..len], tc, q, m);
                }
                let (dlog_dt, rest) = g.split_at_mut(1);
                let (dlar, rest) = rest.split_at_mut(m);
                let (dai, rest) = rest.split_at_mut(m);
                let (db, dc) = rest.split_at_mut(2 * m);
                let mut ddt = 0.0;
                for mm in 0..m {
                    let j = hh * m + mm;
                    let md = modes[j];
                    let (mut g_z, mut g_w, mut g_b) =
                        (C64::default(), C64::default(), C64::default());
                    for d in 0..dirs {
                        let (s0, s1) = (s.s0[d * m + mm], s.s1[d * m + mm]);
                        let i = (d * h + hh) * m + mm;
                        let g_ct = s0 * 2.0;
                        g_z += ctilde[i].conj() * s1 * 2.0;
                        let c = cs[i];
                        let g_c = g_ct * (bs[j] * md.w).conj();
                        dc[d * 2 * m + mm] = g_c.re;
                        dc[d * 2 * m + m + mm] = g_c.im;
                        g_b += g_ct * (c * md.w).conj();
                        g_w += g_ct * (c * bs[j]).conj();
                    }
                    db[mm] = g_b.re;
                    db[m + mm] = g_b.im;
                    let g_a = g_z * md.dz_da.conj() + g_w * md.dw_da.conj();
                    ddt += (g_z.conj() * md.dz_ddt + g_w.conj() * md.dw_ddt).re;
                    // Re A = −exp(α) (unclamped): ∂ℒ/∂α = Re(g_A)·(−exp α) = Re(g_A)·Re A
                    dlar[mm] = if md.clamped { 0.0 } else { g_a.re * md.a.re };
                    dai[mm] = g_a.im;
                }
                dlog_dt[0] = ddt * zs[0].dt;
            });
        for (hh, g) in gbuf.chunks(stride).enumerate() {
            store.grad_mut(self.log_dt)[hh] += T::of(g[0]);
            let g = &g[1..];
            for mm in 0..m {
                let j = hh * m + mm;
                store.grad_mut(self.log_a_real)[j] += T::of(g[mm]);
                store.grad_mut(self.a_imag)[j] += T::of(g[m + mm]);
                store.grad_mut(self.b_re)[j] += T::of(g[2 * m + mm]);
                store.grad_mut(self.b_im)[j] += T::of(g[3 * m + mm]);
                for d in 0..dirs {
                    let i = (d * h + hh) * m + mm;
                    store.grad_mut(self.c_re)[i] += T::of(g[4 * m + d * 2 * m + mm]);
                    store.grad_mut(self.c_im)[i] += T::of(g[4 * m + d * 2 * m + m + mm]);
                }
            }
        }
        self.grad_buf = gbuf;
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        if self.cfg.bidirectional {
            return Err(Error::Unsupported(
                "a bidirectional S4D layer sees the future: it has no recurrent (step) mode".into(),
            ));
        }
        let mut me = S4dKernel {
            cfg: self.cfg.clone(),
            modes: Vec::new(),
            ctilde: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
            len: 0,
            grad_buf: Vec::new(),
            ..*self
        };
        me.prepare(store);
        let split = |f: &dyn Fn(usize) -> C64| -> [Vec<T>; 2] {
            let v: Vec<C64> = (0..me.modes.len()).map(f).collect();
            [
                v.iter().map(|z| T::of(z.re)).collect(),
                v.iter().map(|z| T::of(z.im)).collect(),
            ]
        };
        let (h, m) = (me.cfg.channels, me.modes_per_channel());
        let il = |v: Vec<T>| simd::interleave_modes(&v, h, m);
        let [ar, ai] = split(&|j| me.modes[j].z.exp()).map(il);
        // B̄ folded into the readout: C̃ = 2C·B̄, the state z = x / B̄ (see engine::simd::diag_steps)
        let [cr, ci] = split(&|j| me.c[j] * 2.0 * me.b[j] * me.modes[j].w).map(il);
        Ok(Box::new(DiagStepper {
            h,
            m,
            ar,
            ai,
            cr,
            ci,
        }))
    }
}

/// The recurrent form of a diagonal kernel with `B̄` folded into the readout: per mode
/// `z ← Ā z + u`, `y = Re Σ C̃ z` with `C̃ = 2C·B̄` (the state `z = x / B̄`; four coefficient arrays
/// per step instead of six). Channels interleaved in blocks of 16 ([`simd::diag_steps`]): the
/// coefficients `[⌈H/16⌉, M, 16]`, the state of a stream `[⌈H/16⌉, M, 2, 16]`, so a vector holds one
/// mode of several channels and the update runs without horizontal sums.
#[derive(Debug)]
pub struct DiagStepper<T> {
    h: usize,
    m: usize,
    /// Ā = e^{z}, `[⌈H/16⌉, M, 16]` real and imaginary parts.
    ar: Vec<T>,
    ai: Vec<T>,
    /// C̃ = 2C·B̄, `[⌈H/16⌉, M, 16]` (y = Re C̃·z).
    cr: Vec<T>,
    ci: Vec<T>,
}

impl<T: Float> Stepper<T> for DiagStepper<T> {
    fn state_len(&self) -> usize {
        simd::diag_state_len(self.h, self.m)
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        self.step_batch(state, u, y);
    }

    fn step_batch(&self, states: &mut [T], u: &[T], y: &mut [T]) {
        let c = [&self.ar[..], &self.ai[..], &self.cr[..], &self.ci[..]];
        T::diag_steps(c, self.h, self.m, states, u, y);
    }
}
