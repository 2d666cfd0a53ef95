//! S5: one MIMO diagonal state space model shared by all H channels (Smith, Warrington, Linderman
//! 2023), run by a linear recurrence or a parallel associative scan.
//!
//! ```text
//! parameters (H channels, P = d_state states, M = P/2 kept modes (conjugate symmetry), D dirs)
//!   log_lambda_real  [M]        Re Λ = −max(exp(·), 1e-4)     (S5's clip_eigs, always on)
//!   lambda_imag      [M]        Im Λ
//!   b_re, b_im       [M, H]     B̃ = V⁻¹B
//!   c_re, c_im       [D, H, M]  C̃ = CV (one per direction)
//!   log_dt           [M]        per-state step; Δ = exp(log_dt)·step_rescale
//! init: block-diagonal LegS with J blocks — each block the normal part of LegS(P/J), Λ and V from
//!   its eigendecomposition (the math core, f64), M/J kept modes per block; B ~ N(0, 1/H) [P, H],
//!   C ~ N(0, 1) [H, P], then B̃ = Vᴴ B and C̃ = C V on the kept columns.
//! discretization (per mode, as S4D): ZOH Ā = e^{ΔΛ}, B̄ = (Ā − 1)/Λ · B̃;  bilinear likewise.
//! forward (per batch element):  BU = B̄ u            [M, L]  (two real GEMMs)
//!                               x_k = Ā x_{k−1} + BU_k          (reverse: x_k = Ā x_{k+1} + BU_k)
//!                               y = 2·Re(C̃ x) (+ 2·Re(C̃₂ x_rev))  [H, L]  (two real GEMMs each)
//!   the scan: "recurrence" (sequential per (batch, mode), those in parallel) or "associative"
//!   (Blelloch up-sweep / down-sweep with (A₁, b₁)•(A₂, b₂) = (A₁A₂, A₂b₁ + b₂), A = Ā^{2^d} per level)
//! backward (g_x = ∂ℒ/∂Re x + i ∂ℒ/∂Im x):
//!   g_x = 2 conj(C̃)ᵀ g_y;  λ_k = g_x_k + conj(Ā) λ_{k+1} (the adjoint scan runs the other way)
//!   g_C̃ = 2 g_y conj(x)ᵀ,  g_BU = λ,  g_Ā = Σ_k λ_k conj(x_{k−1}),  g_u = Re(B̄ᴴ λ),  g_B̄ = λ uᵀ
//!   g_B̃ = conj(w) g_B̄,  g_w = Σ_h conj(B̃) g_B̄,  g_z = conj(Ā) g_Ā,  then Λ and Δ as in S4D.
//! recurrent form: x ← Ā x + B̄ u,  y = 2·Re(C̃ x) — O(M·H) per step.
//! ```

use crate::engine::float::Float;
use crate::engine::gemm::Gemm;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::error::Error;
use crate::kernels::discretize::{Disc, MIN_NEG_REAL, Mode, clamped_real, discretize};
use crate::kernels::{SequenceMap, Stepper};
use num_complex::{Complex, Complex64 as C64};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use statespace_math::dplr::Dplr;
use statespace_math::hippo::Measure;
use statespace_math::s4d as inits;

type Cx<T> = Complex<T>;

/// How the diagonal recurrence is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scan {
    /// Sequential recurrence per (batch, state), parallel over those; as fast as the associative scan
    /// here at L = 1k…16k (`statespace-bench`'s example `s5_scan_timing`) and simpler, so the default.
    #[default]
    Recurrence,
    /// Work-efficient parallel associative scan (Blelloch) per (batch, state).
    Associative,
}

/// S5 options (`[model.s5]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S5Options {
    /// J: blocks of the block-diagonal LegS initialization (d_state / J must be even).
    pub blocks: usize,
    /// Scan algorithm.
    pub scan: Scan,
    /// Multiplies every Δ (evaluation at another sampling rate).
    pub step_rescale: f64,
}

impl Default for S5Options {
    fn default() -> Self {
        Self {
            blocks: 1,
            scan: Scan::Recurrence,
            step_rescale: 1.0,
        }
    }
}

/// Configuration of an S5 layer.
#[derive(Debug, Clone, PartialEq)]
pub struct S5Config {
    /// Channels H.
    pub channels: usize,
    /// State size P (P/2 kept modes).
    pub state_size: usize,
    /// Discretization.
    pub disc: Disc,
    /// Smallest initial step.
    pub dt_min: f64,
    /// Largest initial step.
    pub dt_max: f64,
    /// Forward and reverse scans.
    pub bidirectional: bool,
    /// Options.
    pub opts: S5Options,
    /// Eigenvalues and eigenvectors to start from instead of block LegS (PTD): Λ (M) and the kept
    /// eigenvector columns `V [P, M]` with the real input matrix they diagonalize, `B [P]` unused.
    pub init: Option<S5Init>,
}

/// A diagonalization to initialize from: Λ (M kept modes) and `V` (P × M, row-major) with
/// `V⁺` (M × P) its left inverse on the kept modes (Vᴴ when V is unitary).
#[derive(Debug, Clone, PartialEq)]
pub struct S5Init {
    /// Kept eigenvalues.
    pub lambda: Vec<C64>,
    /// Kept eigenvectors `[P, M]`.
    pub v: Vec<C64>,
    /// Left inverse rows `[M, P]`.
    pub vinv: Vec<C64>,
}

/// The S5 layer (its own sequence map: not a per-channel convolution).
#[derive(Debug)]
pub struct S5Layer<T> {
    cfg: S5Config,
    m: usize,
    /// `log_lambda_real [M]`.
    pub log_lambda_real: ParamId,
    /// `lambda_imag [M]`.
    pub lambda_imag: ParamId,
    /// `b_re [M, H]`.
    pub b_re: ParamId,
    /// `b_im [M, H]`.
    pub b_im: ParamId,
    /// `c_re [D, H, M]`.
    pub c_re: ParamId,
    /// `c_im [D, H, M]`.
    pub c_im: ParamId,
    /// `log_dt [M]`.
    pub log_dt: ParamId,
    modes: Vec<Mode>,
    abar: Vec<Cx<T>>,
    bbar_re: Vec<T>,
    bbar_im: Vec<T>,
    u: Vec<T>,
    /// Forward states `[dirs, B, M, L]` (re and im planes).
    x_re: Vec<T>,
    x_im: Vec<T>,
    dims: (usize, usize),
}

/// The block-diagonal LegS diagonalization: Λ (M), V (P × M), V⁺ = Vᴴ (M × P).
pub fn block_legs(p: usize, blocks: usize) -> Result<S5Init, Error> {
    if blocks == 0 || !p.is_multiple_of(blocks) || !(p / blocks).is_multiple_of(2) {
        return Err(Error::config(
            "model.s5.blocks",
            format!("{blocks} blocks must split d_state = {p} into even blocks"),
        ));
    }
    let bs = p / blocks;
    let d = Dplr::from_measure(Measure::LegS, bs).map_err(Error::math("S5 block LegS"))?;
    let mb = bs / 2;
    let m = p / 2;
    let mut lambda = Vec::with_capacity(m);
    let mut v = vec![C64::default(); p * m];
    for j in 0..blocks {
        for k in 0..mb {
            let col = j * mb + k;
            lambda.push(C64::new(d.lambda[k].re, d.lambda[k].im));
            for r in 0..bs {
                v[(j * bs + r) * m + col] = d.v[(r, k)];
            }
        }
    }
    let vinv = (0..m)
        .flat_map(|i| (0..p).map(move |r| (i, r)))
        .map(|(i, r)| v[r * m + i].conj())
        .collect();
    Ok(S5Init { lambda, v, vinv })
}

/// `x_k = a·x_{k−1} + b_k` (or `x_{k+1}` when `reverse`) in place over `(re, im)`.
fn recurrence<T: Float>(a: Cx<T>, re: &mut [T], im: &mut [T], reverse: bool) {
    let n = re.len();
    let (mut xr, mut xi) = (T::zero(), T::zero());
    for i in 0..n {
        let k = if reverse { n - 1 - i } else { i };
        let nr = a.re * xr - a.im * xi + re[k];
        let ni = a.re * xi + a.im * xr + im[k];
        re[k] = nr;
        im[k] = ni;
        xr = nr;
        xi = ni;
    }
}

/// The same by a work-efficient associative scan over `buf` (scratch, grown as needed).
fn assoc_scan<T: Float>(a: Cx<T>, re: &mut [T], im: &mut [T], reverse: bool, buf: &mut Vec<Cx<T>>) {
    let n = re.len();
    if n == 0 {
        return;
    }
    let np = n.next_power_of_two();
    let zero = Cx::new(T::zero(), T::zero());
    buf.clear();
    buf.resize(np, zero);
    for i in 0..n {
        let k = if reverse { n - 1 - i } else { i };
        buf[i] = Cx::new(re[k], im[k]);
    }
    let levels = np.trailing_zeros() as usize;
    // A at level d (span 2^d): a^{2^d}
    let mut pows = Vec::with_capacity(levels + 1);
    let mut p = a;
    for _ in 0..=levels {
        pows.push(p);
        p = p * p;
    }
    // up-sweep: the right node of each pair becomes the total of its span
    for (d, pw) in pows.iter().enumerate().take(levels) {
        let span = 1usize << d;
        let mut i = 0;
        while i < np {
            let (l, r) = (i + span - 1, i + 2 * span - 1);
            buf[r] = *pw * buf[l] + buf[r];
            i += 2 * span;
        }
    }
    // down-sweep: exclusive prefixes (identity = 0)
    buf[np - 1] = zero;
    for d in (0..levels).rev() {
        let span = 1usize << d;
        let mut i = 0;
        while i < np {
            let (l, r) = (i + span - 1, i + 2 * span - 1);
            let t = buf[l];
            let pre = buf[r];
            buf[l] = pre;
            buf[r] = pows[d] * pre + t;
            i += 2 * span;
        }
    }
    // inclusive: x_k = a·(prefix before k) + b_k
    for i in 0..n {
        let k = if reverse { n - 1 - i } else { i };
        let x = a * buf[i] + Cx::new(re[k], im[k]);
        re[k] = x.re;
        im[k] = x.im;
    }
}

fn run_scan<T: Float>(
    scan: Scan,
    a: Cx<T>,
    re: &mut [T],
    im: &mut [T],
    reverse: bool,
    buf: &mut Vec<Cx<T>>,
) {
    match scan {
        Scan::Recurrence => recurrence(a, re, im, reverse),
        Scan::Associative => assoc_scan(a, re, im, reverse, buf),
    }
}

impl<T: Float> S5Layer<T> {
    /// Registers the parameters under `prefix` and initializes them (block LegS unless `cfg.init`).
    pub fn new(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: S5Config,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let (h, p) = (cfg.channels, cfg.state_size);
        if p < 2 || !p.is_multiple_of(2) {
            return Err(Error::config(
                "model.d_state",
                format!("S5 needs an even state size ≥ 2, got {p}"),
            ));
        }
        if !(cfg.opts.step_rescale > 0.0 && cfg.opts.step_rescale.is_finite()) {
            return Err(Error::config(
                "model.s5.step_rescale",
                format!("must be positive, got {}", cfg.opts.step_rescale),
            ));
        }
        let init = match &cfg.init {
            Some(i) => i.clone(),
            None => block_legs(p, cfg.opts.blocks)?,
        };
        // M = P/2 for block LegS; a PTD diagonalization may keep a few more (real eigenvalues)
        let m = init.lambda.len();
        if init.v.len() != p * m || init.vinv.len() != m * p {
            return Err(Error::Invalid(
                "S5 init: Λ, V, V⁺ have the wrong sizes".into(),
            ));
        }
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let normal = |rng: &mut dyn rand::RngCore, s: f64| -> f64 {
            let v: f64 = StandardNormal.sample(rng);
            v * s
        };
        // B [P, H] ~ N(0, 1/H) → B̃ = V⁺ B [M, H]
        let bmat: Vec<f64> = (0..p * h)
            .map(|_| normal(rng, 1.0 / (h as f64).sqrt()))
            .collect();
        let mut bt = vec![C64::default(); m * h];
        for i in 0..m {
            for r in 0..p {
                let vi = init.vinv[i * p + r];
                for c in 0..h {
                    bt[i * h + c] += vi * bmat[r * h + c];
                }
            }
        }
        // C [H, P] ~ N(0, 1) → C̃ = C V [H, M], per direction
        let mut ct = vec![C64::default(); dirs * h * m];
        for d in 0..dirs {
            let cmat: Vec<f64> = (0..h * p).map(|_| normal(rng, 1.0)).collect();
            for c in 0..h {
                for r in 0..p {
                    let cv = cmat[c * p + r];
                    for i in 0..m {
                        ct[(d * h + c) * m + i] += init.v[r * m + i] * cv;
                    }
                }
            }
        }
        let dts = inits::log_uniform_dt(m, cfg.dt_min, cfg.dt_max, rng)
            .map_err(Error::math("initial steps"))?;
        let t = |v: Vec<f64>| v.into_iter().map(T::of).collect::<Vec<T>>();
        let log_lambda_real = store.add(
            format!("{prefix}.log_lambda_real"),
            &[m],
            t(init
                .lambda
                .iter()
                .map(|l| (-l.re).max(MIN_NEG_REAL).ln())
                .collect()),
            ParamKind::SsmA,
        );
        let lambda_imag = store.add(
            format!("{prefix}.lambda_imag"),
            &[m],
            t(init.lambda.iter().map(|l| l.im).collect()),
            ParamKind::SsmA,
        );
        let (b_re, b_im) = store.add_complex(&format!("{prefix}.b"), &[m, h], &bt, ParamKind::SsmB);
        let (c_re, c_im) = store.add_complex(
            &format!("{prefix}.c"),
            &[dirs, h, m],
            &ct,
            ParamKind::Weight,
        );
        let log_dt = store.add(
            format!("{prefix}.log_dt"),
            &[m],
            t(dts.iter().map(|d| d.ln()).collect()),
            ParamKind::SsmDt,
        );
        Ok(Self {
            cfg,
            m,
            log_lambda_real,
            lambda_imag,
            b_re,
            b_im,
            c_re,
            c_im,
            log_dt,
            modes: Vec::new(),
            abar: Vec::new(),
            bbar_re: Vec::new(),
            bbar_im: Vec::new(),
            u: Vec::new(),
            x_re: Vec::new(),
            x_im: Vec::new(),
            dims: (0, 0),
        })
    }

    fn dirs(&self) -> usize {
        if self.cfg.bidirectional { 2 } else { 1 }
    }

    /// Channels H.
    pub fn channels(&self) -> usize {
        self.cfg.channels
    }

    /// Discretizes the modes and forms `Ā`, `B̄` from the current parameters.
    fn prepare(&mut self, store: &ParamStore<T>) {
        // the buffers keep their capacity from step to step
        let mut d = (
            std::mem::take(&mut self.modes),
            std::mem::take(&mut self.abar),
            std::mem::take(&mut self.bbar_re),
            std::mem::take(&mut self.bbar_im),
        );
        self.discretize_into(store, &mut d);
        (self.modes, self.abar, self.bbar_re, self.bbar_im) = d;
    }

    /// The discretized modes, `Ā [M]` and `B̄ [M, H]` (re, im) from the current parameters.
    #[allow(clippy::type_complexity)]
    fn discretized(&self, store: &ParamStore<T>) -> (Vec<Mode>, Vec<Cx<T>>, Vec<T>, Vec<T>) {
        let mut d = Default::default();
        self.discretize_into(store, &mut d);
        d
    }

    #[allow(clippy::type_complexity)]
    fn discretize_into(
        &self,
        store: &ParamStore<T>,
        (modes, abar, bbar_re, bbar_im): &mut (Vec<Mode>, Vec<Cx<T>>, Vec<T>, Vec<T>),
    ) {
        let (h, m) = (self.cfg.channels, self.m);
        let (lr, li, ldt) = (
            store.value(self.log_lambda_real),
            store.value(self.lambda_imag),
            store.value(self.log_dt),
        );
        let (br, bi) = (store.value(self.b_re), store.value(self.b_im));
        modes.clear();
        abar.clear();
        bbar_re.clear();
        bbar_im.clear();
        for i in 0..m {
            let (re, clamped) = clamped_real(lr[i].f64());
            let a = C64::new(re, li[i].f64());
            let dt = ldt[i].f64().exp() * self.cfg.opts.step_rescale;
            let md = discretize(a, dt, self.cfg.disc, clamped);
            let ab = md.z.exp();
            abar.push(Cx::new(T::of(ab.re), T::of(ab.im)));
            for c in 0..h {
                let bb = md.w * C64::new(br[i * h + c].f64(), bi[i * h + c].f64());
                bbar_re.push(T::of(bb.re));
                bbar_im.push(T::of(bb.im));
            }
            modes.push(md);
        }
    }

    /// `u [B, H, L] → y [B, H, L]` (without the D skip), keeping the states for backward.
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        u: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        self.prepare(store);
        let (h, m) = (self.cfg.channels, self.m);
        let dirs = self.dirs();
        assert_eq!(u.len(), batch * h * len);
        self.dims = (batch, len);
        self.u.clear();
        self.u.extend_from_slice(u);
        let plane = m * len;
        self.x_re.clear();
        self.x_re.resize(dirs * batch * plane, T::zero());
        self.x_im.clear();
        self.x_im.resize(dirs * batch * plane, T::zero());
        y.clear();
        y.resize(batch * h * len, T::zero());
        let (br, bi, abar, scan) = (&self.bbar_re, &self.bbar_im, &self.abar, self.cfg.opts.scan);
        let (cr, ci) = (store.value(self.c_re), store.value(self.c_im));
        let (xr_f, xr_b) = self.x_re.split_at_mut(batch * plane);
        let (xi_f, xi_b) = self.x_im.split_at_mut(batch * plane);
        let two = T::of(2.0);
        let ncm: Vec<T> = ci.iter().map(|v| -*v).collect();
        // BU = B̄ u (both directions scan the same BU)
        xr_f.par_chunks_mut(plane)
            .zip(xi_f.par_chunks_mut(plane))
            .zip(u.par_chunks(h * len))
            .for_each(|((xr, xi), ub)| {
                Gemm::new(m, len, h).run(xr, br, ub);
                Gemm::new(m, len, h).run(xi, bi, ub);
            });
        let rev_inputs = dirs == 2;
        if rev_inputs {
            xr_b.copy_from_slice(xr_f);
            xi_b.copy_from_slice(xi_f);
        }
        let hm = h * m;
        let mut rev: Vec<Option<(&mut [T], &mut [T])>> = if rev_inputs {
            xr_b.chunks_mut(plane)
                .zip(xi_b.chunks_mut(plane))
                .map(Some)
                .collect()
        } else {
            (0..batch).map(|_| None).collect()
        };
        y.par_chunks_mut(h * len)
            .zip(xr_f.par_chunks_mut(plane).zip(xi_f.par_chunks_mut(plane)))
            .zip(rev.par_iter_mut())
            .for_each(|((yb, (xr, xi)), rv)| {
                let mut buf = Vec::new();
                for i in 0..m {
                    let r = i * len..(i + 1) * len;
                    run_scan(
                        scan,
                        abar[i],
                        &mut xr[r.clone()],
                        &mut xi[r.clone()],
                        false,
                        &mut buf,
                    );
                    if let Some((xr2, xi2)) = rv.as_mut() {
                        run_scan(
                            scan,
                            abar[i],
                            &mut xr2[r.clone()],
                            &mut xi2[r],
                            true,
                            &mut buf,
                        );
                    }
                }
                // y = 2·(C_re X_re − C_im X_im) per direction
                Gemm::new(h, len, m).run(yb, &cr[..hm], xr);
                Gemm::new(h, len, m).accumulate().run(yb, &ncm[..hm], xi);
                if let Some((xr2, xi2)) = rv.as_ref() {
                    Gemm::new(h, len, m).accumulate().run(yb, &cr[hm..], xr2);
                    Gemm::new(h, len, m).accumulate().run(yb, &ncm[hm..], xi2);
                }
                yb.iter_mut().for_each(|v| *v *= two);
            });
    }

    /// `g = dℒ/dy [B, H, L]` → `du [B, H, L]` (overwritten) and the parameter gradients.
    pub fn backward(&mut self, store: &mut ParamStore<T>, g: &[T], du: &mut Vec<T>) {
        let (h, m) = (self.cfg.channels, self.m);
        let dirs = self.dirs();
        let (batch, len) = self.dims;
        assert_eq!(g.len(), batch * h * len);
        let plane = m * len;
        let hm = h * m;
        let scan = self.cfg.opts.scan;
        let (cr, ci) = (
            store.value(self.c_re).to_vec(),
            store.value(self.c_im).to_vec(),
        );
        let two = T::of(2.0);
        du.clear();
        du.resize(batch * h * len, T::zero());
        struct Part<T> {
            gc_re: Vec<T>,
            gc_im: Vec<T>,
            gb_re: Vec<T>,
            gb_im: Vec<T>,
            ga: Vec<C64>,
        }
        let (xr_all, xi_all) = (&self.x_re, &self.x_im);
        let (br, bi, abar, u) = (&self.bbar_re, &self.bbar_im, &self.abar, &self.u);
        let parts: Vec<Part<T>> = du
            .par_chunks_mut(h * len)
            .zip(g.par_chunks(h * len))
            .zip(u.par_chunks(h * len))
            .enumerate()
            .map(|(b, ((dub, gb), ub))| {
                let mut part = Part {
                    gc_re: vec![T::zero(); dirs * hm],
                    gc_im: vec![T::zero(); dirs * hm],
                    gb_re: vec![T::zero(); m * h],
                    gb_im: vec![T::zero(); m * h],
                    ga: vec![C64::default(); m],
                };
                let mut lam_re = vec![T::zero(); plane];
                let mut lam_im = vec![T::zero(); plane];
                let mut l2_re = vec![T::zero(); plane];
                let mut l2_im = vec![T::zero(); plane];
                let mut buf = Vec::new();
                for d in 0..dirs {
                    let off = (d * batch + b) * plane;
                    let (xr, xi) = (&xr_all[off..off + plane], &xi_all[off..off + plane]);
                    let (c_r, c_i) = (&cr[d * hm..(d + 1) * hm], &ci[d * hm..(d + 1) * hm]);
                    // g_C̃ = 2 g conj(x)ᵀ: re = 2 g xrᵀ, im = −2 g xiᵀ
                    Gemm::new(h, m, len).transpose_b().run(
                        &mut part.gc_re[d * hm..(d + 1) * hm],
                        gb,
                        xr,
                    );
                    Gemm::new(h, m, len).transpose_b().run(
                        &mut part.gc_im[d * hm..(d + 1) * hm],
                        gb,
                        xi,
                    );
                    // g_x = 2 conj(C̃)ᵀ g: re = 2 C_reᵀ g, im = −2 C_imᵀ g
                    let (lr, li) = if d == 0 {
                        (&mut lam_re, &mut lam_im)
                    } else {
                        (&mut l2_re, &mut l2_im)
                    };
                    Gemm::new(m, len, h).transpose_a().run(lr, c_r, gb);
                    Gemm::new(m, len, h).transpose_a().run(li, c_i, gb);
                    lr.iter_mut().for_each(|v| *v *= two);
                    li.iter_mut().for_each(|v| *v *= -two);
                    // adjoint scan: λ_k = g_x_k + conj(Ā) λ_{k±1}, opposite to the forward scan
                    for i in 0..m {
                        let r = i * len..(i + 1) * len;
                        run_scan(
                            scan,
                            abar[i].conj(),
                            &mut lr[r.clone()],
                            &mut li[r.clone()],
                            d == 0,
                            &mut buf,
                        );
                        // g_Ā = Σ_k λ_k conj(x_prev)
                        let mut acc = C64::default();
                        for k in 0..len {
                            let prev = if d == 0 {
                                k.checked_sub(1)
                            } else {
                                (k + 1 < len).then_some(k + 1)
                            };
                            if let Some(p) = prev {
                                let lamk = C64::new(lr[i * len + k].f64(), li[i * len + k].f64());
                                let xp = C64::new(xr[i * len + p].f64(), -xi[i * len + p].f64());
                                acc += lamk * xp;
                            }
                        }
                        part.ga[i] += acc;
                    }
                }
                if dirs == 2 {
                    lam_re.iter_mut().zip(&l2_re).for_each(|(a, b)| *a += *b);
                    lam_im.iter_mut().zip(&l2_im).for_each(|(a, b)| *a += *b);
                }
                // g_u = B̄_reᵀ λ_re + B̄_imᵀ λ_im
                Gemm::new(h, len, m).transpose_a().run(dub, br, &lam_re);
                Gemm::new(h, len, m)
                    .transpose_a()
                    .accumulate()
                    .run(dub, bi, &lam_im);
                // g_B̄ = λ uᵀ
                Gemm::new(m, h, len)
                    .transpose_b()
                    .run(&mut part.gb_re, &lam_re, ub);
                Gemm::new(m, h, len)
                    .transpose_b()
                    .run(&mut part.gb_im, &lam_im, ub);
                part
            })
            .collect();
        // reduce over the batch
        let mut gc_re = vec![0.0f64; dirs * hm];
        let mut gc_im = vec![0.0f64; dirs * hm];
        let mut gb = vec![C64::default(); m * h];
        let mut ga = vec![C64::default(); m];
        for p in &parts {
            for i in 0..dirs * hm {
                gc_re[i] += 2.0 * p.gc_re[i].f64();
                gc_im[i] -= 2.0 * p.gc_im[i].f64();
            }
            for i in 0..m * h {
                gb[i] += C64::new(p.gb_re[i].f64(), p.gb_im[i].f64());
            }
            for i in 0..m {
                ga[i] += p.ga[i];
            }
        }
        for i in 0..dirs * hm {
            store.grad_mut(self.c_re)[i] += T::of(gc_re[i]);
            store.grad_mut(self.c_im)[i] += T::of(gc_im[i]);
        }
        let (bre, bim) = (
            store.value(self.b_re).to_vec(),
            store.value(self.b_im).to_vec(),
        );
        for i in 0..m {
            let md = self.modes[i];
            let mut g_w = C64::default();
            for c in 0..h {
                let gbb = gb[i * h + c];
                let gbt = md.w.conj() * gbb;
                store.grad_mut(self.b_re)[i * h + c] += T::of(gbt.re);
                store.grad_mut(self.b_im)[i * h + c] += T::of(gbt.im);
                g_w += C64::new(bre[i * h + c].f64(), bim[i * h + c].f64()).conj() * gbb;
            }
            let g_z = md.z.exp().conj() * ga[i];
            let g_a = g_z * md.dz_da.conj() + g_w * md.dw_da.conj();
            let ddt = (g_z.conj() * md.dz_ddt + g_w.conj() * md.dw_ddt).re;
            if !md.clamped {
                store.grad_mut(self.log_lambda_real)[i] += T::of(g_a.re * md.a.re);
            }
            store.grad_mut(self.lambda_imag)[i] += T::of(g_a.im);
            // Δ = exp(log_dt)·step_rescale: ∂Δ/∂log_dt = Δ
            store.grad_mut(self.log_dt)[i] += T::of(ddt * md.dt);
        }
    }

    /// The recurrent form (causal only).
    pub fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        if self.cfg.bidirectional {
            return Err(Error::Unsupported(
                "a bidirectional S5 layer sees the future: it has no recurrent (step) mode".into(),
            ));
        }
        let (_, abar, bbar_re, bbar_im) = self.discretized(store);
        let two = T::of(2.0);
        Ok(Box::new(S5Stepper {
            h: self.cfg.channels,
            m: self.m,
            abar,
            bbar_re,
            bbar_im,
            c_re: store.value(self.c_re).iter().map(|v| *v * two).collect(),
            c_im: store.value(self.c_im).iter().map(|v| *v * two).collect(),
        }))
    }
}

/// The recurrent form of S5 (state: `[M]` complex, interleaved re/im).
#[derive(Debug)]
pub struct S5Stepper<T> {
    h: usize,
    m: usize,
    abar: Vec<Cx<T>>,
    bbar_re: Vec<T>,
    bbar_im: Vec<T>,
    c_re: Vec<T>,
    c_im: Vec<T>,
}

impl<T: Float> Stepper<T> for S5Stepper<T> {
    fn state_len(&self) -> usize {
        2 * self.m
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        let (h, m) = (self.h, self.m);
        for i in 0..m {
            let (mut bur, mut bui) = (T::zero(), T::zero());
            for c in 0..h {
                bur += self.bbar_re[i * h + c] * u[c];
                bui += self.bbar_im[i * h + c] * u[c];
            }
            let a = self.abar[i];
            let (xr, xi) = (state[2 * i], state[2 * i + 1]);
            state[2 * i] = a.re * xr - a.im * xi + bur;
            state[2 * i + 1] = a.re * xi + a.im * xr + bui;
        }
        for (c, yc) in y.iter_mut().enumerate().take(h) {
            let mut acc = T::zero();
            for i in 0..m {
                acc +=
                    self.c_re[c * m + i] * state[2 * i] - self.c_im[c * m + i] * state[2 * i + 1];
            }
            *yc = acc;
        }
    }
}

impl<T: Float> SequenceMap<T> for S5Layer<T> {
    fn channels(&self) -> usize {
        self.cfg.channels
    }

    fn directions(&self) -> usize {
        self.dirs()
    }

    fn forward(
        &mut self,
        store: &ParamStore<T>,
        u: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        S5Layer::forward(self, store, u, batch, len, y)
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], du: &mut Vec<T>) {
        S5Layer::backward(self, store, dy, du)
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        S5Layer::stepper(self, store)
    }

    /// Channel `c`'s response to an impulse on channel `c` alone (one batch element per channel).
    fn impulse_responses(&mut self, store: &ParamStore<T>, len: usize) -> (usize, Vec<T>) {
        let h = self.cfg.channels;
        let mut u = vec![T::zero(); h * h * len];
        for c in 0..h {
            u[(c * h + c) * len] = T::one();
        }
        let mut y = Vec::new();
        S5Layer::forward(self, store, &u, h, len, &mut y);
        let mut out = Vec::with_capacity(h * len);
        for c in 0..h {
            out.extend_from_slice(&y[(c * h + c) * len..(c * h + c + 1) * len]);
        }
        (1, out)
    }

    /// The mean of the per-state steps `exp(log_dt)`, the same for every channel.
    fn channel_steps(&self, store: &ParamStore<T>) -> Option<Vec<f64>> {
        let v = store.value(self.log_dt);
        let mean = v.iter().map(|x| x.f64().exp()).sum::<f64>() / v.len().max(1) as f64;
        Some(vec![mean; self.cfg.channels])
    }
}
