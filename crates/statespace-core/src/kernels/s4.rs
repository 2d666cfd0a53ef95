//! S4: the diagonal-plus-low-rank (DPLR) state space kernel (Gu, Goel, Ré 2022), bilinear, with the
//! C′ ("C̃") truncation trick.
//!
//! ```text
//! parameters (per layer; H channels, S = n_ssm copies of (Λ, P, B), M = N/2 kept modes, rank r,
//!             D = 1 or 2 directions; channel h uses copy h mod S)
//!   log_dt            [H]        Δ = exp(log_dt)
//!   log_lambda_real   [S, M]     Re Λ = −max(exp(·), 1e-4)
//!   lambda_imag       [S, M]     Im Λ (≥ 0 at init: the kept half)
//!   p_re, p_im        [S, r, M]  P̃
//!   b_re, b_im        [S, M]     B̃
//!   c_re, c_im        [D, H, M]  C̃ = C(I − Ā^L): the kernel's C′ for the length L in `kernel_len`
//! buffer  kernel_len  [1]        L, fixed by the first forward (C̃ is relative to it)
//!
//! full system (conjugate-completed, N = 2M modes): A = diag(Λ, Λ̄) − [P; P̄][P; P̄]*,
//!   B = [B; B̄], C = [C; C̄] as a row (no conjugation); y = C x is real.
//! kernel: K̂(ω) = Σ_{l<L} K_l ω^l = C̃ (I − Āω)⁻¹ B̄ at ω_k = e^{−2πik/L}, k = 0 … L/2, then irfft:
//!   g = (Δ/2)(1 + ω),  Dₙ = 1/((1 − ω) − g λₙ)                       (Cauchy; no pole at ω = −1)
//!   S_ab = Σₙ ℓ_a,ₙ Dₙ ρ_b,ₙ,  rows ℓ = (C̃, P̄₁ … P̄ᵣ), columns ρ = (B, P₁ … Pᵣ), n over all N
//!   K̂ = Δ·[ S_cb − g·S_cp (I + g·S_pp)⁻¹ S_pb ]                       (Woodbury)
//! backward (g_x = ∂ℒ/∂Re x + i ∂ℒ/∂Im x; holomorphic y = f(x): g_x += g_y·conj(f′(x))):
//!   g_K̂ₖ = (cₖ/L)·rfft(dK)ₖ, cₖ = 2 inside, 1 at DC and Nyquist
//!   g_Scb = Δ g,  g_corr = −Δ ḡ g,  g_g = −Δ conj(corr) g,  x = Cap⁻¹ S_pb,
//!   g_Scp = x̄ g_corr,  y = Cap⁻ᴴ (conj(S_cp) g_corr) = g_Spb,  g_Cap = −y xᴴ,
//!   g_Spp = ḡ g_Cap,  g_g += Σ conj(S_pp)∘g_Cap
//!   g_ℓ_a,ₙ = D̄ₙ Σ_b ρ̄_b,ₙ g_S_ab,  g_ρ_b,ₙ = D̄ₙ Σ_a ℓ̄_a,ₙ g_S_ab,  g_Dₙ = Σ_ab conj(ℓ_a,ₙ ρ_b,ₙ) g_S_ab
//!   g_λₙ = conj(g Dₙ²) g_Dₙ,  g_g += conj(λₙ Dₙ²) g_Dₙ,  ∂ℒ/∂Δ = Re(conj(g_K̂) K̂/Δ) + Re(conj(g_g)(1+ω)/2)
//!   then fold the conjugate half and P̄ back onto the kept parameters.
//! recurrent form (bilinear, on the kept half; P*x of the full state is real):
//!   x ← (I − Δ/2·A)⁻¹ [(I + Δ/2·A) x + Δ B u],   y = 2·Re(C x),   C = C̃ (I − Ā^L)⁻¹ (solved in f64)
//!   "linear": the inverse by Woodbury, O(N·r) per step;  "dense": Ā, B̄ as an N×N complex matrix.
//! ```
//!
//! The kernel runs in `T` (f32 in training: ≤ 1.1e-5 of max|K| against f64 at N = 64, L = 4096 per
//! the facts sheet; measured in the tests); the frequencies ω are formed in f64.
//!
//! Layout (per row = direction × channel): every per-frequency quantity is a structure of arrays over
//! ω — the Cauchy sums (modes outside, frequencies inside), the Woodbury solves (`r ≤ 2` by Cramer's
//! rule, branch-free), and in the backward per mode one dot pass per sum and one fused pass (`C`, `g_g`,
//! `conj(g D²)`) — all compiled for the dispatched instruction set (`simd::with_isa`). The forward
//! keeps each row's sums `S_ab(ω)` for the backward.

use crate::engine::float::Float;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::error::Error;
use crate::kernels::discretize::MIN_NEG_REAL;
use crate::kernels::{SequenceKernel, Stepper};
use num_complex::{Complex, Complex64 as C64};
use rand::Rng;
use rayon::prelude::*;
use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};
use statespace_math::dplr::Dplr;
use statespace_math::hippo::Measure;
use statespace_math::kernel::DplrSystem;
use statespace_math::s4d as inits;

/// The HiPPO operator an S4 layer starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DplrInit {
    /// Scaled Legendre (rank 1).
    Legs,
    /// Translated Legendre (rank 2).
    Legt,
    /// Translated Laguerre (rank 1).
    Lagt,
    /// Translated Fourier (rank 1).
    Fout,
}

impl DplrInit {
    /// The measure of the math core.
    pub fn measure(self) -> Measure {
        match self {
            DplrInit::Legs => Measure::LegS,
            DplrInit::Legt => Measure::LegT,
            DplrInit::Lagt => Measure::LagT,
            DplrInit::Fout => Measure::FouT,
        }
    }
}

/// How the recurrent form applies the DPLR transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StepMode {
    /// Woodbury on the DPLR form, O(N·r) per step.
    #[default]
    Linear,
    /// The dense N×N complex transition, O(N²) per step.
    Dense,
}

/// Configuration of an S4 kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S4Config {
    /// Channels H.
    pub channels: usize,
    /// State size N (N/2 kept modes).
    pub state_size: usize,
    /// Independent copies of (Λ, P, B), shared by the channels round robin (1 ≤ S ≤ H, S | H).
    pub n_ssm: usize,
    /// The HiPPO operator of the initialization.
    pub init: DplrInit,
    /// Smallest initial step.
    pub dt_min: f64,
    /// Largest initial step.
    pub dt_max: f64,
    /// Two directions (forward and reverse kernels).
    pub bidirectional: bool,
    /// Recurrent form.
    pub step_mode: StepMode,
}

/// The S4 (DPLR) kernel.
#[derive(Debug)]
pub struct S4Kernel<T> {
    cfg: S4Config,
    rank: usize,
    /// `log_dt [H]`.
    pub log_dt: ParamId,
    /// `log_lambda_real [S, M]`.
    pub log_lambda_real: ParamId,
    /// `lambda_imag [S, M]`.
    pub lambda_imag: ParamId,
    /// `p_re [S, r, M]`.
    pub p_re: ParamId,
    /// `p_im [S, r, M]`.
    pub p_im: ParamId,
    /// `b_re [S, M]`.
    pub b_re: ParamId,
    /// `b_im [S, M]`.
    pub b_im: ParamId,
    /// `c_re [D, H, M]` (C̃).
    pub c_re: ParamId,
    /// `c_im [D, H, M]` (C̃).
    pub c_im: ParamId,
    kernel_len: Vec<T>,
    len: usize,
    /// The Cauchy sums `S_ab(ω)` of every row of the last forward at `kernel_len` (what the backward
    /// needs: it then skips their recomputation).
    saved: Vec<SavedSums<T>>,
}

/// One row's Cauchy sums (per pair, real and imaginary parts over ω).
type SavedSums<T> = (Vec<Vec<T>>, Vec<Vec<T>>);

type Cx<T> = Complex<T>;

fn cx<T: Float>(z: C64) -> Cx<T> {
    Cx::new(T::of(z.re), T::of(z.im))
}

/// The values one (direction, channel) kernel needs, on the full conjugate-completed set.
struct Full<T> {
    dt: T,
    lam: Vec<Cx<T>>,
    /// Rows ℓ: C̃, then P̄ᵢ (each N).
    left: Vec<Vec<Cx<T>>>,
    /// Columns ρ: B, then Pⱼ (each N).
    right: Vec<Vec<Cx<T>>>,
    /// The same as separate real and imaginary arrays (Λ, and ℓ_a ρ_b for every pair a·nr + b),
    /// so the Cauchy sums run as vector loops.
    lam_re: Vec<T>,
    lam_im: Vec<T>,
    lr_re: Vec<Vec<T>>,
    lr_im: Vec<Vec<T>>,
}

/// Frequencies per block of the sweeps (modes inside each block). Measured on the 2-core machine of
/// the bench (two threads on one core's caches): blocks of 256, whose rows stay in L1 alone, lost
/// 10 % to the per-block overhead with both threads running, so the blocks are long.
const BLOCK: usize = 4096;

/// Largest rank of the low-rank term (LegT has 2; the rest 1): the per-frequency Woodbury values
/// live in fixed arrays, so the frequency loop allocates nothing.
const RMAX: usize = 2;

/// Per-thread scratch of a sweep over all frequencies of one row (structure of arrays over ω).
#[derive(Default)]
struct Sweep<T> {
    er: Vec<T>,
    ei: Vec<T>,
    gr: Vec<T>,
    gi: Vec<T>,
    dr: Vec<T>,
    di: Vec<T>,
    /// `S_ab(ω)` per pair.
    sr: Vec<Vec<T>>,
    si: Vec<Vec<T>>,
    /// Backward: `gS_ab(ω)` per pair, `g_g(ω)`, and two work rows.
    gsr: Vec<Vec<T>>,
    gsi: Vec<Vec<T>>,
    ggr: Vec<T>,
    ggi: Vec<T>,
    pr: Vec<T>,
    pi: Vec<T>,
    cr: Vec<T>,
    ci: Vec<T>,
}

/// Solves `m x = y` for a small dense complex system (`r ≤ RMAX`, partial pivoting); `conj_t` solves
/// with `mᴴ`.
fn solve_fixed<T: Float>(
    m: &[[Cx<T>; RMAX]; RMAX],
    y: &[Cx<T>; RMAX],
    r: usize,
    conj_t: bool,
) -> [Cx<T>; RMAX] {
    let zero = Cx::new(T::zero(), T::zero());
    let mut a = [[zero; RMAX]; RMAX];
    for i in 0..r {
        for j in 0..r {
            a[i][j] = if conj_t { m[j][i].conj() } else { m[i][j] };
        }
    }
    let mut b = *y;
    for col in 0..r {
        let mut piv = col;
        for i in col + 1..r {
            if a[i][col].norm_sqr() > a[piv][col].norm_sqr() {
                piv = i;
            }
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..r {
            let f = a[row][col] / a[col][col];
            for k in col..r {
                let v = a[col][k];
                a[row][k] -= f * v;
            }
            let v = b[col];
            b[row] -= f * v;
        }
    }
    let mut x = [zero; RMAX];
    for row in (0..r).rev() {
        let mut s = b[row];
        for k in row + 1..r {
            s -= a[row][k] * x[k];
        }
        x[row] = s / a[row][row];
    }
    x
}

/// `m x = y` for `R ≤ 2` by Cramer's rule (`conj_t`: with `mᴴ`), branch-free so the frequency loops
/// that call it vectorize.
#[inline(always)]
fn solve_small<T: Float, const R: usize>(
    m: &[[Cx<T>; R]; R],
    y: &[Cx<T>; R],
    conj_t: bool,
) -> [Cx<T>; R] {
    let at = |i: usize, j: usize| if conj_t { m[j][i].conj() } else { m[i][j] };
    let mut x = *y;
    if R == 1 {
        x[0] = y[0] / at(0, 0);
    } else {
        let det = at(0, 0) * at(1, 1) - at(0, 1) * at(1, 0);
        let inv = Cx::new(T::one(), T::zero()) / det;
        x[0] = (at(1, 1) * y[0] - at(0, 1) * y[1]) * inv;
        x[1] = (at(0, 0) * y[1] - at(1, 0) * y[0]) * inv;
    }
    x
}

impl<T: Float> Full<T> {
    /// Fills `sw` with `e = 1 − ω`, `g = (Δ/2)(1 + ω)` at every frequency and (`sums`) the Cauchy
    /// sums `S_ab(ω) = Σ_n ℓ_a,n ρ_b,n D_n(ω)`: modes outside, frequencies inside (plain vector
    /// loops, no reductions).
    #[inline(always)]
    fn cauchy_all(&self, omegas: &[C64], sw: &mut Sweep<T>, sums: bool) {
        let half = self.dt / T::of(2.0);
        for v in [&mut sw.er, &mut sw.ei, &mut sw.gr, &mut sw.gi] {
            v.clear();
        }
        for w in omegas {
            sw.er.push(T::of(1.0 - w.re));
            sw.ei.push(T::of(-w.im));
            sw.gr.push(half * T::of(1.0 + w.re));
            sw.gi.push(half * T::of(w.im));
        }
        if sums {
            self.cauchy_sums(sw);
        }
    }

    /// The Cauchy sums `S_ab(ω)` at the frequencies of the last [`Full::cauchy_all`], into `sw.sr`,
    /// `sw.si`.
    #[inline(always)]
    fn cauchy_sums(&self, sw: &mut Sweep<T>) {
        let nw = sw.er.len();
        let pairs = self.lr_re.len();
        sw.sr.resize_with(pairs, Vec::new);
        sw.si.resize_with(pairs, Vec::new);
        for v in sw.sr.iter_mut().chain(sw.si.iter_mut()) {
            v.clear();
            v.resize(nw, T::zero());
        }
        // ω in blocks that stay in L1, the modes inside each block
        for b0 in (0..nw).step_by(BLOCK) {
            let b1 = (b0 + BLOCK).min(nw);
            for n in 0..self.lam.len() {
                self.d_block(n, sw, b0, b1);
                let Sweep { dr, di, sr, si, .. } = &mut *sw;
                let (dr, di) = (&dr[..b1 - b0], &di[..b1 - b0]);
                for k in 0..pairs {
                    let (lr, li) = (self.lr_re[k][n], self.lr_im[k][n]);
                    for ((a, b), (x, y)) in sr[k][b0..b1]
                        .iter_mut()
                        .zip(si[k][b0..b1].iter_mut())
                        .zip(dr.iter().zip(di.iter()))
                    {
                        *a += lr * *x - li * *y;
                        *b += lr * *y + li * *x;
                    }
                }
            }
        }
    }

    /// `D_n(ω) = 1/(e(ω) − g(ω) λ_n)` at the frequencies `b0..b1`, into `sw.dr`, `sw.di` (from 0),
    /// and `p = conj(g D²)` into `sw.pr`, `sw.pi` (the backward's).
    #[inline(always)]
    fn d_block(&self, n: usize, sw: &mut Sweep<T>, b0: usize, b1: usize) {
        let (lr, li) = (self.lam_re[n], self.lam_im[n]);
        let len = b1 - b0;
        sw.dr.resize(len.max(sw.dr.len()), T::zero());
        sw.di.resize(len.max(sw.di.len()), T::zero());
        for (((dr, di), (er, ei)), (gr, gi)) in sw.dr[..len]
            .iter_mut()
            .zip(sw.di[..len].iter_mut())
            .zip(sw.er[b0..b1].iter().zip(&sw.ei[b0..b1]))
            .zip(sw.gr[b0..b1].iter().zip(&sw.gi[b0..b1]))
        {
            let den_r = *er - (*gr * lr - *gi * li);
            let den_i = *ei - (*gr * li + *gi * lr);
            let inv = T::one() / (den_r * den_r + den_i * den_i);
            (*dr, *di) = (den_r * inv, -den_i * inv);
        }
    }

    /// One pass over the frequencies `b0..b1` for mode `n` (after [`Full::d_block`], `P` pairs): the
    /// combination `C = Σ_ab gS_ab conj(λ_n ℓ_a,n ρ_b,n)` into `sw.cr`, `sw.ci`, `p = conj(g D²)` into
    /// `sw.pr`, `sw.pi` (from 0), and `g_g += conj(D²)·C` in place.
    #[inline(always)]
    fn mode_pass<const P: usize>(&self, n: usize, sw: &mut Sweep<T>, b0: usize, b1: usize) {
        let len = b1 - b0;
        let lam = self.lam[n];
        let mut wr = [T::zero(); P];
        let mut wi = [T::zero(); P];
        for p in 0..P {
            let w = (lam * Cx::new(self.lr_re[p][n], self.lr_im[p][n])).conj();
            (wr[p], wi[p]) = (w.re, w.im);
        }
        for v in [&mut sw.pr, &mut sw.pi, &mut sw.cr, &mut sw.ci] {
            v.resize(len.max(v.len()), T::zero());
        }
        let Sweep {
            dr,
            di,
            gr,
            gi,
            gsr,
            gsi,
            ggr,
            ggi,
            pr,
            pi,
            cr,
            ci,
            ..
        } = sw;
        let gs: [(&[T], &[T]); P] = std::array::from_fn(|p| (&gsr[p][b0..b1], &gsi[p][b0..b1]));
        let (dr, di, gr, gi) = (&dr[..len], &di[..len], &gr[b0..b1], &gi[b0..b1]);
        let (ggr, ggi) = (&mut ggr[b0..b1], &mut ggi[b0..b1]);
        let (pr, pi, cr, ci) = (
            &mut pr[..len],
            &mut pi[..len],
            &mut cr[..len],
            &mut ci[..len],
        );
        for k in 0..len {
            let (mut u, mut v) = (T::zero(), T::zero());
            for p in 0..P {
                let (x, y) = (gs[p].0[k], gs[p].1[k]);
                u += x * wr[p] - y * wi[p];
                v += x * wi[p] + y * wr[p];
            }
            let (x, y) = (dr[k], di[k]);
            let (qr, qi) = (x * x - y * y, (x + x) * y);
            // conj(q)·C = (qr − i qi)(u + i v)
            ggr[k] += qr * u + qi * v;
            ggi[k] += qr * v - qi * u;
            (cr[k], ci[k]) = (u, v);
            let (g_r, g_i) = (gr[k], gi[k]);
            (pr[k], pi[k]) = (g_r * qr - g_i * qi, -(g_r * qi + g_i * qr));
        }
    }

    /// The Woodbury step at every frequency of the last [`Full::cauchy_all`] (structure of arrays
    /// over ω, `R` = rank): `K̂ = Δ (S_00 − g S_0r (I + g S_rr)⁻¹ S_r0)` into `kr`, `ki`.
    #[inline(always)]
    fn woodbury_all<const R: usize>(&self, sw: &Sweep<T>, kr: &mut [T], ki: &mut [T]) {
        let nr = R + 1;
        let nw = sw.gr.len();
        let one = Cx::new(T::one(), T::zero());
        let zero = Cx::new(T::zero(), T::zero());
        let (sr, si) = (&sw.sr, &sw.si);
        let (gr, gi) = (&sw.gr[..nw], &sw.gi[..nw]);
        let (kr, ki) = (&mut kr[..nw], &mut ki[..nw]);
        let s = |a: usize, b: usize, k: usize| {
            Cx::new(sr[a * nr + b][..nw][k], si[a * nr + b][..nw][k])
        };
        for k in 0..nw {
            let g = Cx::new(gr[k], gi[k]);
            let mut cap = [[zero; R]; R];
            let mut spb = [zero; R];
            for i in 0..R {
                for j in 0..R {
                    cap[i][j] = g * s(i + 1, j + 1, k);
                }
                cap[i][i] += one;
                spb[i] = s(i + 1, 0, k);
            }
            let x = solve_small(&cap, &spb, false);
            let mut corr = zero;
            for j in 0..R {
                corr += s(0, j + 1, k) * x[j];
            }
            let khat = (s(0, 0, k) - g * corr) * self.dt;
            (kr[k], ki[k]) = (khat.re, khat.im);
        }
    }

    /// The Woodbury part of the backward at every frequency (`gks` = ∂ℒ/∂K̂): fills `sw.gsr`/`gsi`
    /// (∂ℒ/∂S_ab) and `sw.ggr`/`ggi` (∂ℒ/∂g, this part), returns this part of ∂ℒ/∂Δ.
    #[inline(always)]
    fn woodbury_backward_all<const R: usize>(
        &self,
        gks_re: &[T],
        gks_im: &[T],
        sw: &mut Sweep<T>,
    ) -> f64 {
        let nr = R + 1;
        let nw = sw.gr.len();
        let one = Cx::new(T::one(), T::zero());
        let zero = Cx::new(T::zero(), T::zero());
        let dt = self.dt;
        let inv_dt = T::one() / dt;
        let Sweep {
            gr,
            gi,
            sr,
            si,
            gsr,
            gsi,
            ggr,
            ggi,
            pr,
            ..
        } = sw;
        let (gr, gi) = (&gr[..nw], &gi[..nw]);
        let (gks_re, gks_im) = (&gks_re[..nw], &gks_im[..nw]);
        let (ggr, ggi) = (&mut ggr[..nw], &mut ggi[..nw]);
        // per-frequency terms of ∂ℒ/∂Δ, summed after the loop
        pr.clear();
        pr.resize(nw, T::zero());
        let ddt = &mut pr[..nw];
        for k in 0..nw {
            let s = |a: usize, b: usize| Cx::new(sr[a * nr + b][k], si[a * nr + b][k]);
            let g = Cx::new(gr[k], gi[k]);
            let gk = Cx::new(gks_re[k], gks_im[k]);
            let mut cap = [[zero; R]; R];
            let mut spb = [zero; R];
            for i in 0..R {
                for j in 0..R {
                    cap[i][j] = g * s(i + 1, j + 1);
                }
                cap[i][i] += one;
                spb[i] = s(i + 1, 0);
            }
            let x = solve_small(&cap, &spb, false);
            let mut corr = zero;
            for j in 0..R {
                corr += s(0, j + 1) * x[j];
            }
            let khat = (s(0, 0) - g * corr) * dt;
            // K̂ = Δ (S_00 − g·corr)
            ddt[k] = (gk.conj() * khat * inv_dt).re;
            let put = |gsr: &mut Vec<Vec<T>>, gsi: &mut Vec<Vec<T>>, p: usize, v: Cx<T>| {
                gsr[p][k] = v.re;
                gsi[p][k] = v.im;
            };
            put(gsr, gsi, 0, gk * dt);
            let g_corr = -(g.conj() * gk) * dt;
            let mut g_g = -(corr.conj() * gk) * dt;
            let mut gx = [zero; R];
            for j in 0..R {
                put(gsr, gsi, j + 1, x[j].conj() * g_corr);
                gx[j] = s(0, j + 1).conj() * g_corr;
            }
            let y = solve_small(&cap, &gx, true);
            for i in 0..R {
                put(gsr, gsi, (i + 1) * nr, y[i]);
                for j in 0..R {
                    let g_cap = -(y[i] * x[j].conj());
                    put(gsr, gsi, (i + 1) * nr + j + 1, g.conj() * g_cap);
                    g_g += s(i + 1, j + 1).conj() * g_cap;
                }
            }
            (ggr[k], ggi[k]) = (g_g.re, g_g.im);
        }
        ddt.iter().map(|v| v.f64()).sum()
    }
}

/// Gradients of one (direction, channel) kernel with respect to its full-set values.
struct FullGrad<T> {
    dt: f64,
    lam: Vec<Cx<T>>,
    left: Vec<Vec<Cx<T>>>,
    right: Vec<Vec<Cx<T>>>,
    /// Over the frequencies, per pair a·nr + b: `T_ab,n = Σ_ω conj(D_n) gS_ab` (the ℓ and ρ gradients
    /// are these times ρ, ℓ, fixed across ω: combined once in [`Full::finish_grad`]).
    t: Vec<Vec<Cx<T>>>,
}

impl<T: Float> Full<T> {
    /// The backward over all frequencies at once (`gks` = ∂ℒ/∂K̂(ω)): the Woodbury part per frequency,
    /// then per mode n with vector loops over ω:
    ///
    /// ```text
    /// T_ab,n = Σ_ω conj(D_n) gS_ab                                            (dot products over ω)
    /// C_n(ω) = Σ_ab gS_ab(ω) conj(λ_n ℓ_a,n ρ_b,n),  g_g(ω) += conj(D_n²(ω)) C_n(ω)   (elementwise)
    /// g_λn = Σ_ab conj(ℓ_a,n ρ_b,n) Σ_ω conj(g D_n²) gS_ab = Σ_ω conj(g D_n²) C_n / conj(λ_n)
    /// ∂ℒ/∂Δ += Σ_ω Re(conj(g_g) (1 + ω)/2)
    /// ```
    #[inline(always)]
    fn backward_sweep(
        &self,
        omegas: &[C64],
        gks: &[Cx<T>],
        sw: &mut Sweep<T>,
        out: &mut FullGrad<T>,
    ) {
        let one = Cx::new(T::one(), T::zero());
        let r = self.right.len() - 1;
        let pairs = self.lr_re.len();
        let nw = omegas.len();
        // the forward's sums if it kept them (`sw.sr`, `sw.si` filled by the caller)
        let have = sw.sr.len() == pairs && sw.sr.iter().all(|v| v.len() == nw);
        self.cauchy_all(omegas, sw, !have);
        sw.gsr.resize_with(pairs, Vec::new);
        sw.gsi.resize_with(pairs, Vec::new);
        for v in sw.gsr.iter_mut().chain(sw.gsi.iter_mut()) {
            v.clear();
            v.resize(nw, T::zero());
        }
        sw.ggr.clear();
        sw.ggr.resize(nw, T::zero());
        sw.ggi.clear();
        sw.ggi.resize(nw, T::zero());
        // the Woodbury part, all frequencies at once
        let (gre, gim): (Vec<T>, Vec<T>) = gks.iter().map(|z| (z.re, z.im)).unzip();
        out.dt += match r {
            1 => self.woodbury_backward_all::<1>(&gre, &gim, sw),
            2 => self.woodbury_backward_all::<2>(&gre, &gim, sw),
            _ => unreachable!("S4 ranks are 1 or 2"),
        };
        // the mode part: ω in blocks that stay in L1, the modes inside each block
        for b0 in (0..nw).step_by(BLOCK) {
            let b1 = (b0 + BLOCK).min(nw);
            let len = b1 - b0;
            for n in 0..self.lam.len() {
                self.d_block(n, sw, b0, b1);
                {
                    let Sweep {
                        dr, di, gsr, gsi, ..
                    } = &*sw;
                    let (dr, di) = (&dr[..len], &di[..len]);
                    for p in 0..pairs {
                        // T = Σ conj(D) gS
                        let d = T::dot4([dr, di], [&gsr[p][b0..b1], &gsi[p][b0..b1]]);
                        out.t[p][n] += Cx::new(d[0] + d[1], d[2] - d[3]);
                    }
                }
                let lam = self.lam[n];
                // C = Σ_ab gS_ab conj(λ_n ℓ_a,n ρ_b,n), g_g += conj(D²) C, p = conj(g D²): one pass
                match pairs {
                    4 => self.mode_pass::<4>(n, sw, b0, b1),
                    9 => self.mode_pass::<9>(n, sw, b0, b1),
                    _ => unreachable!("S4 ranks are 1 or 2"),
                }
                // g_λ = Σ_ab conj(ℓ_a ρ_b) Σ_ω p gS_ab = Σ_ω p C / conj(λ_n)
                let d = T::dot4(
                    [&sw.pr[..len], &sw.pi[..len]],
                    [&sw.cr[..len], &sw.ci[..len]],
                );
                out.lam[n] += Cx::new(d[0] - d[1], d[2] + d[3]) / lam.conj();
            }
        }
        // g = (Δ/2)(1 + ω)
        for (k, w) in omegas.iter().enumerate() {
            let gg = Cx::new(sw.ggr[k], sw.ggi[k]);
            out.dt += (gg.conj() * (one + cx::<T>(*w)) / T::of(2.0)).re.f64();
        }
    }

    /// The mode gradients from the per-pair sums over frequencies (see [`FullGrad`]).
    fn finish_grad(&self, out: &mut FullGrad<T>) {
        let (nl, nr) = (self.left.len(), self.right.len());
        for a in 0..nl {
            for b in 0..nr {
                let k = a * nr + b;
                for (i, t) in out.t[k].iter().enumerate() {
                    out.left[a][i] += self.right[b][i].conj() * *t;
                    out.right[b][i] += self.left[a][i].conj() * *t;
                }
            }
        }
    }
}

impl<T: Float> S4Kernel<T> {
    /// Registers the parameters under `prefix` and initializes them from the NPLR form of the
    /// HiPPO operator (computed in f64 by the math core), C̃ complex normal with E|C̃|² = 1,
    /// log Δ uniform in [log dt_min, log dt_max].
    pub fn new(
        store: &mut ParamStore<T>,
        prefix: &str,
        cfg: S4Config,
        rng: &mut impl Rng,
    ) -> Result<Self, Error> {
        let (h, n, s) = (cfg.channels, cfg.state_size, cfg.n_ssm);
        if n < 2 || n % 2 != 0 {
            return Err(Error::config(
                "model.d_state",
                format!("S4 needs an even state size ≥ 2, got {n}"),
            ));
        }
        if s == 0 || s > h || h % s != 0 {
            return Err(Error::config(
                "model.n_ssm",
                format!("must divide d_model = {h} (1 ≤ n_ssm ≤ d_model), got {s}"),
            ));
        }
        let m = n / 2;
        let dirs = if cfg.bidirectional { 2 } else { 1 };
        let dplr =
            Dplr::from_measure(cfg.init.measure(), n).map_err(Error::math("S4 DPLR form"))?;
        let rank = dplr.p.len();
        if rank > RMAX {
            return Err(Error::config(
                "model.init",
                format!(
                    "S4: the {:?} measure has a rank-{rank} correction; the kernel supports rank ≤ {RMAX}",
                    cfg.init
                ),
            ));
        }
        let dts = inits::log_uniform_dt(h, cfg.dt_min, cfg.dt_max, rng)
            .map_err(Error::math("initial steps"))?;
        let c = inits::complex_normal(dirs * h * m, rng);
        let t = |v: Vec<f64>| v.into_iter().map(T::of).collect::<Vec<T>>();
        let tile = |f: &dyn Fn(usize) -> f64, per: usize| -> Vec<T> {
            t((0..s).flat_map(|_| (0..per).map(f)).collect())
        };
        let log_dt = store.add(
            format!("{prefix}.log_dt"),
            &[h],
            t(dts.iter().map(|d| d.ln()).collect()),
            ParamKind::SsmDt,
        );
        let lam = &dplr.lambda;
        let log_lambda_real = store.add(
            format!("{prefix}.log_lambda_real"),
            &[s, m],
            tile(&|i| (-lam[i].re).max(MIN_NEG_REAL).ln(), m),
            ParamKind::SsmA,
        );
        let lambda_imag = store.add(
            format!("{prefix}.lambda_imag"),
            &[s, m],
            tile(&|i| lam[i].im, m),
            ParamKind::SsmA,
        );
        let p = &dplr.p;
        let (p_re, p_im) = store.add_complex(
            &format!("{prefix}.p"),
            &[s, rank, m],
            &(0..s)
                .flat_map(|_| (0..rank * m).map(|i| p[i / m][i % m]))
                .collect::<Vec<_>>(),
            ParamKind::SsmA,
        );
        let b = &dplr.b;
        let (b_re, b_im) = store.add_complex(
            &format!("{prefix}.b"),
            &[s, m],
            &(0..s).flat_map(|_| b.iter().copied()).collect::<Vec<_>>(),
            ParamKind::SsmB,
        );
        let (c_re, c_im) =
            store.add_complex(&format!("{prefix}.c"), &[dirs, h, m], &c, ParamKind::Weight);
        Ok(Self {
            cfg,
            rank,
            log_dt,
            log_lambda_real,
            lambda_imag,
            p_re,
            p_im,
            b_re,
            b_im,
            c_re,
            c_im,
            kernel_len: vec![T::zero()],
            len: 0,
            saved: Vec::new(),
        })
    }

    fn dirs(&self) -> usize {
        if self.cfg.bidirectional { 2 } else { 1 }
    }

    /// The length `L` that C̃ refers to (0 before the first forward).
    pub fn kernel_len(&self) -> usize {
        self.kernel_len[0].f64().round().max(0.0) as usize
    }

    /// The kept-half system of channel `h` in f64 (C̃ of direction `d` as `c`) and its Δ.
    pub fn system(&self, store: &ParamStore<T>, d: usize, h: usize) -> (DplrSystem, f64) {
        let (hh, m, r, s) = (
            self.cfg.channels,
            self.cfg.state_size / 2,
            self.rank,
            self.cfg.n_ssm,
        );
        let k = h % s;
        let v = |id: ParamId| store.value(id);
        let lam = (0..m)
            .map(|i| {
                C64::new(
                    -v(self.log_lambda_real)[k * m + i]
                        .f64()
                        .exp()
                        .max(MIN_NEG_REAL),
                    v(self.lambda_imag)[k * m + i].f64(),
                )
            })
            .collect();
        let p = (0..r)
            .map(|j| {
                (0..m)
                    .map(|i| {
                        let o = (k * r + j) * m + i;
                        C64::new(v(self.p_re)[o].f64(), v(self.p_im)[o].f64())
                    })
                    .collect()
            })
            .collect();
        let b = (0..m)
            .map(|i| C64::new(v(self.b_re)[k * m + i].f64(), v(self.b_im)[k * m + i].f64()))
            .collect();
        let c = (0..m)
            .map(|i| {
                let o = (d * hh + h) * m + i;
                C64::new(v(self.c_re)[o].f64(), v(self.c_im)[o].f64())
            })
            .collect();
        (
            DplrSystem {
                lambda: lam,
                p,
                b,
                c,
            },
            v(self.log_dt)[h].f64().exp(),
        )
    }

    /// The full-set values of (direction `d`, channel `h`) in `T`, with C̃ replaced by `ct` if given.
    fn full(&self, store: &ParamStore<T>, d: usize, h: usize, ct: Option<&[C64]>) -> Full<T> {
        let (sys, dt) = self.system(store, d, h);
        let comp = |x: &[C64]| -> Vec<Cx<T>> {
            x.iter()
                .map(|z| cx::<T>(*z))
                .chain(x.iter().map(|z| cx::<T>(z.conj())))
                .collect()
        };
        let mut left = vec![comp(ct.unwrap_or(&sys.c))];
        let mut right = vec![comp(&sys.b)];
        for row in &sys.p {
            let pc: Vec<C64> = row.iter().map(|z| z.conj()).collect();
            left.push(comp(&pc));
            right.push(comp(row));
        }
        let lam = comp(&sys.lambda);
        let nr = right.len();
        let pairs = left.len() * nr;
        let prod = |k: usize| -> Vec<Cx<T>> {
            let (a, b) = (k / nr, k % nr);
            left[a]
                .iter()
                .zip(&right[b])
                .map(|(l, r)| *l * *r)
                .collect()
        };
        let (lr_re, lr_im): (Vec<Vec<T>>, Vec<Vec<T>>) = (0..pairs)
            .map(|k| {
                let v = prod(k);
                (
                    v.iter().map(|z| z.re).collect(),
                    v.iter().map(|z| z.im).collect(),
                )
            })
            .unzip();
        Full {
            dt: T::of(dt),
            lam_re: lam.iter().map(|z| z.re).collect(),
            lam_im: lam.iter().map(|z| z.im).collect(),
            lam,
            left,
            right,
            lr_re,
            lr_im,
        }
    }

    fn omegas(len: usize) -> Vec<C64> {
        (0..len / 2 + 1)
            .map(|k| C64::from_polar(1.0, -2.0 * std::f64::consts::PI * k as f64 / len as f64))
            .collect()
    }
}

impl<T: Float> SequenceKernel<T> for S4Kernel<T> {
    fn log_dt(&self) -> Option<crate::engine::params::ParamId> {
        Some(self.log_dt)
    }

    fn channels(&self) -> usize {
        self.cfg.channels
    }

    fn directions(&self) -> usize {
        self.dirs()
    }

    fn forward(&mut self, store: &ParamStore<T>, len: usize, k: &mut Vec<T>) {
        if self.kernel_len() == 0 {
            self.kernel_len[0] = T::of(len as f64);
        }
        let kl = self.kernel_len();
        self.len = len;
        let (h, dirs) = (self.cfg.channels, self.dirs());
        // Lengths beyond the trained L: C̃ for the longer kernel, C̃' = C(I − Ā^{L'}), in f64.
        let (lk, extend) = if len > kl { (len, true) } else { (kl, false) };
        let omegas = Self::omegas(lk);
        let plan = RealFftPlanner::<T>::new().plan_fft_inverse(lk); // planned once, shared by the rows
        let rows: Vec<(Vec<T>, Option<SavedSums<T>>)> = (0..dirs * h)
            .into_par_iter()
            .map(|row| {
                let (d, hh) = (row / h, row % h);
                let ct = extend.then(|| {
                    let (sys, dt) = self.system(store, d, hh);
                    let c = sys
                        .c_from_c_tilde(&sys.c, dt, kl)
                        .expect("validated system");
                    let sys = DplrSystem { c, ..sys };
                    sys.c_tilde(dt, lk).expect("validated system")
                });
                let full = self.full(store, d, hh, ct.as_deref());
                let mut sw = Sweep::default();
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || full.cauchy_all(&omegas, &mut sw, true),
                );
                let nw = omegas.len();
                let (mut kr, mut ki) = (vec![T::zero(); nw], vec![T::zero(); nw]);
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || match full.right.len() - 1 {
                        1 => full.woodbury_all::<1>(&sw, &mut kr, &mut ki),
                        2 => full.woodbury_all::<2>(&sw, &mut kr, &mut ki),
                        _ => unreachable!("S4 ranks are 1 or 2"),
                    },
                );
                let mut spec: Vec<Cx<T>> =
                    kr.iter().zip(&ki).map(|(&a, &b)| Cx::new(a, b)).collect();
                spec[0].im = T::zero();
                if lk.is_multiple_of(2) {
                    let last = spec.len() - 1;
                    spec[last].im = T::zero();
                }
                let mut out = vec![T::zero(); lk];
                plan.process(&mut spec, &mut out)
                    .expect("irfft of a well-formed spectrum");
                let scale = T::one() / T::of(lk as f64);
                out.truncate(len);
                out.iter_mut().for_each(|v| *v *= scale);
                // the backward runs at kernel_len only: the sums of a longer kernel are not kept
                let keep =
                    (!extend).then(|| (std::mem::take(&mut sw.sr), std::mem::take(&mut sw.si)));
                (out, keep)
            })
            .collect();
        k.clear();
        k.reserve(dirs * h * len);
        self.saved.clear();
        for (r, keep) in rows {
            k.extend_from_slice(&r);
            if let Some(kp) = keep {
                self.saved.push(kp);
            }
        }
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dk: &[T]) {
        let (h, dirs, len) = (self.cfg.channels, self.dirs(), self.len);
        let kl = self.kernel_len();
        assert!(
            len <= kl,
            "S4 backward at a length ({len}) beyond the kernel length ({kl}) it was trained at"
        );
        assert_eq!(dk.len(), dirs * h * len);
        let m = self.cfg.state_size / 2;
        let r = self.rank;
        let omegas = Self::omegas(kl);
        let plan = RealFftPlanner::<T>::new().plan_fft_forward(kl); // planned once, shared by the rows
        let mut saved = std::mem::take(&mut self.saved);
        saved.resize_with(dirs * h, Default::default);
        let grads: Vec<FullGrad<T>> = saved
            .into_par_iter()
            .enumerate()
            .map(|(row, (sr, si))| {
                let (d, hh) = (row / h, row % h);
                let full = self.full(store, d, hh, None);
                // g_K̂ = (c_k / L)·rfft(dK)
                let mut g = vec![T::zero(); kl];
                g[..len].copy_from_slice(&dk[row * len..(row + 1) * len]);
                let mut spec = plan.make_output_vec();
                plan.process(&mut g, &mut spec).expect("rfft");
                let n = 2 * m;
                let zero = Cx::new(T::zero(), T::zero());
                let mut out = FullGrad {
                    dt: 0.0,
                    lam: vec![zero; n],
                    left: vec![vec![zero; n]; r + 1],
                    right: vec![vec![zero; n]; r + 1],
                    t: vec![vec![zero; n]; (r + 1) * (r + 1)],
                };
                let last = spec.len() - 1;
                let gks: Vec<Cx<T>> = (0..omegas.len())
                    .map(|kk| {
                        let edge = kk == 0 || (kl.is_multiple_of(2) && kk == last);
                        let c = if edge { 1.0 } else { 2.0 };
                        let mut gk = spec[kk] * T::of(c / kl as f64);
                        if edge {
                            gk.im = T::zero();
                        }
                        gk
                    })
                    .collect();
                let mut sw = Sweep {
                    sr,
                    si,
                    ..Sweep::default()
                };
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || full.backward_sweep(&omegas, &gks, &mut sw, &mut out),
                );
                full.finish_grad(&mut out);
                out
            })
            .collect();
        let s = self.cfg.n_ssm;
        fn acc<T: Float>(store: &mut ParamStore<T>, id: ParamId, i: usize, v: f64) {
            store.grad_mut(id)[i] += T::of(v);
        }
        for (row, g) in grads.iter().enumerate() {
            let (d, hh) = (row / h, row % h);
            let k = hh % s;
            let c64 = |z: Cx<T>| C64::new(z.re.f64(), z.im.f64());
            // fold: x_full = [x; x̄] → g_x = g[n] + conj(g[n + M])
            let fold = |v: &[Cx<T>], i: usize| c64(v[i]) + c64(v[i + m]).conj();
            for i in 0..m {
                let gc = fold(&g.left[0], i);
                let o = (d * h + hh) * m + i;
                acc(store, self.c_re, o, gc.re);
                acc(store, self.c_im, o, gc.im);
                let gb = fold(&g.right[0], i);
                acc(store, self.b_re, k * m + i, gb.re);
                acc(store, self.b_im, k * m + i, gb.im);
                for j in 0..r {
                    // columns hold P, rows hold P̄ (so the row gradients enter conjugated)
                    let gp = fold(&g.right[j + 1], i) + fold(&g.left[j + 1], i).conj();
                    let o = (k * r + j) * m + i;
                    acc(store, self.p_re, o, gp.re);
                    acc(store, self.p_im, o, gp.im);
                }
                let gl = fold(&g.lam, i);
                let e = store.value(self.log_lambda_real)[k * m + i].f64().exp();
                if e >= MIN_NEG_REAL {
                    // Re Λ = −exp(α): ∂ℒ/∂α = Re(g_Λ)·(−exp α)
                    store.grad_mut(self.log_lambda_real)[k * m + i] += T::of(-gl.re * e);
                }
                store.grad_mut(self.lambda_imag)[k * m + i] += T::of(gl.im);
            }
            let dt = store.value(self.log_dt)[hh].f64().exp();
            store.grad_mut(self.log_dt)[hh] += T::of(g.dt * dt);
        }
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        if self.cfg.bidirectional {
            return Err(Error::Unsupported(
                "a bidirectional S4 layer sees the future: it has no recurrent (step) mode".into(),
            ));
        }
        let (h, m, r) = (self.cfg.channels, self.cfg.state_size / 2, self.rank);
        let kl = self.kernel_len();
        let chans: Vec<Result<(DplrSystem, f64), Error>> = (0..h)
            .into_par_iter()
            .map(|hh| {
                let (sys, dt) = self.system(store, 0, hh);
                // C from C̃ in f64 (kernel_len 0: never run as a convolution, C̃ = C)
                let c = if kl == 0 {
                    sys.c.clone()
                } else {
                    sys.c_from_c_tilde(&sys.c, dt, kl)
                        .map_err(Error::math(format!("S4 channel {hh}: recovering C from C̃")))?
                };
                Ok((DplrSystem { c, ..sys }, dt))
            })
            .collect();
        let chans = chans.into_iter().collect::<Result<Vec<_>, _>>()?;
        match self.cfg.step_mode {
            StepMode::Dense => {
                let mut abar = Vec::with_capacity(h * 4 * m * m);
                let mut bbar = Vec::with_capacity(h * 2 * m);
                let mut c = Vec::with_capacity(h * 2 * m);
                for (sys, dt) in &chans {
                    let (a, b) = sys
                        .bilinear_full(*dt)
                        .map_err(Error::math("S4 dense step matrices"))?;
                    let n = 2 * m;
                    for i in 0..n {
                        for j in 0..n {
                            abar.push(cx::<T>(a[(i, j)]));
                        }
                    }
                    bbar.extend(b.iter().map(|z| cx::<T>(*z)));
                    let cf = statespace_math::dplr::complete(&sys.c);
                    c.extend(cf.iter().map(|z| cx::<T>(*z)));
                }
                Ok(Box::new(DenseStepper {
                    h,
                    n: 2 * m,
                    abar,
                    bbar,
                    c,
                }))
            }
            StepMode::Linear => {
                let mut ch = Vec::with_capacity(h);
                for (sys, dt) in &chans {
                    let dt = *dt;
                    let e: Vec<C64> = sys
                        .lambda
                        .iter()
                        .map(|l| 1.0 / (1.0 - l * (dt / 2.0)))
                        .collect();
                    // W = (2/Δ I + P* E P)⁻¹ on the full set (real r×r, r ≤ RMAX)
                    let mut w = [[C64::new(0.0, 0.0); RMAX]; RMAX];
                    for (i, row) in w.iter_mut().enumerate().take(r) {
                        for (j, v) in row.iter_mut().enumerate().take(r) {
                            let s: C64 = (0..m)
                                .map(|n| sys.p[i][n].conj() * e[n] * sys.p[j][n])
                                .sum();
                            let diag = if i == j { 2.0 / dt } else { 0.0 };
                            *v = C64::new(2.0 * s.re + diag, 0.0);
                        }
                    }
                    // columns of W⁻¹
                    let winv: Vec<Vec<C64>> = (0..r)
                        .map(|j| {
                            let mut ej = [C64::new(0.0, 0.0); RMAX];
                            ej[j] = C64::new(1.0, 0.0);
                            solve_fixed(&w, &ej, r, false)[..r].to_vec()
                        })
                        .collect();
                    ch.push(LinChannel {
                        lam: sys.lambda.iter().map(|z| cx::<T>(*z)).collect(),
                        e: e.iter().map(|z| cx::<T>(*z)).collect(),
                        p: sys
                            .p
                            .iter()
                            .map(|row| row.iter().map(|z| cx::<T>(*z)).collect())
                            .collect(),
                        winv: (0..r)
                            .map(|i| (0..r).map(|j| T::of(winv[j][i].re)).collect())
                            .collect(),
                        b: sys.b.iter().map(|z| cx::<T>(*z * dt)).collect(),
                        c: sys.c.iter().map(|z| cx::<T>(*z * 2.0)).collect(),
                        half_dt: T::of(dt / 2.0),
                    });
                }
                Ok(Box::new(LinearStepper { m, r, ch }))
            }
        }
    }

    fn buffers(&self) -> Vec<(&'static str, &Vec<T>)> {
        vec![("kernel_len", &self.kernel_len)]
    }

    fn buffers_mut(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("kernel_len", &mut self.kernel_len)]
    }
}

/// One channel of the Woodbury step.
#[derive(Debug)]
struct LinChannel<T> {
    lam: Vec<Cx<T>>,
    e: Vec<Cx<T>>,
    p: Vec<Vec<Cx<T>>>,
    winv: Vec<Vec<T>>,
    b: Vec<Cx<T>>,
    c: Vec<Cx<T>>,
    half_dt: T,
}

/// The O(N·r) bilinear step of the DPLR form (state: `[H, M]` complex, interleaved re/im).
#[derive(Debug)]
pub struct LinearStepper<T> {
    m: usize,
    r: usize,
    ch: Vec<LinChannel<T>>,
}

impl<T: Float> Stepper<T> for LinearStepper<T> {
    fn state_len(&self) -> usize {
        // the state [H, M] complex, then scratch: q [r], v [M] complex (no allocation per step)
        2 * self.ch.len() * self.m + self.r + 2 * self.m
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        let (m, r) = (self.m, self.r);
        let zero = Cx::new(T::zero(), T::zero());
        let two = T::of(2.0);
        let (state, scratch) = state.split_at_mut(2 * self.ch.len() * m);
        let (q, vs) = scratch.split_at_mut(r);
        for (hh, c) in self.ch.iter().enumerate() {
            let st = &mut state[2 * hh * m..2 * (hh + 1) * m];
            // P*x over the full (conjugate-symmetric) state: 2·Re Σ p̄ x — real
            for (j, qj) in q.iter_mut().enumerate() {
                let mut s = T::zero();
                for n in 0..m {
                    let x = Cx::new(st[2 * n], st[2 * n + 1]);
                    s += (c.p[j][n].conj() * x).re;
                }
                *qj = two * s;
            }
            // v = (I + Δ/2·A) x + Δ B u,  A x = Λx − P(P*x)
            for n in 0..m {
                let x = Cx::new(st[2 * n], st[2 * n + 1]);
                let mut ax = c.lam[n] * x;
                for j in 0..r {
                    ax -= c.p[j][n] * q[j];
                }
                let vn = x + ax * c.half_dt + c.b[n] * u[hh];
                vs[2 * n] = vn.re;
                vs[2 * n + 1] = vn.im;
            }
            // x = (I − Δ/2·A)⁻¹ v = E v − E P W⁻¹ P* E v
            for (j, qj) in q.iter_mut().enumerate() {
                let mut s = T::zero();
                for n in 0..m {
                    let vn = Cx::new(vs[2 * n], vs[2 * n + 1]);
                    s += (c.p[j][n].conj() * c.e[n] * vn).re;
                }
                *qj = two * s;
            }
            let mut acc = T::zero();
            for n in 0..m {
                let mut corr = zero;
                for j in 0..r {
                    let mut wq = T::zero();
                    for k in 0..r {
                        wq += c.winv[j][k] * q[k];
                    }
                    corr += c.p[j][n] * wq;
                }
                let x = c.e[n] * (Cx::new(vs[2 * n], vs[2 * n + 1]) - corr);
                st[2 * n] = x.re;
                st[2 * n + 1] = x.im;
                acc += (c.c[n] * x).re;
            }
            y[hh] = acc;
        }
    }
}

/// The dense bilinear step on the full complex state (state: `[H, N]` complex, interleaved).
#[derive(Debug)]
pub struct DenseStepper<T> {
    h: usize,
    n: usize,
    abar: Vec<Cx<T>>,
    bbar: Vec<Cx<T>>,
    c: Vec<Cx<T>>,
}

impl<T: Float> Stepper<T> for DenseStepper<T> {
    fn state_len(&self) -> usize {
        // the state [H, N] complex, then scratch for the next state [N] complex
        2 * self.h * self.n + 2 * self.n
    }

    fn step(&self, state: &mut [T], u: &[T], y: &mut [T]) {
        let n = self.n;
        let (state, next) = state.split_at_mut(2 * self.h * n);
        for hh in 0..self.h {
            let st = &mut state[2 * hh * n..2 * (hh + 1) * n];
            let a = &self.abar[hh * n * n..(hh + 1) * n * n];
            for i in 0..n {
                let mut s = self.bbar[hh * n + i] * u[hh];
                for j in 0..n {
                    s += a[i * n + j] * Cx::new(st[2 * j], st[2 * j + 1]);
                }
                next[2 * i] = s.re;
                next[2 * i + 1] = s.im;
            }
            let mut acc = T::zero();
            for i in 0..n {
                let x = Cx::new(next[2 * i], next[2 * i + 1]);
                st[2 * i] = x.re;
                st[2 * i + 1] = x.im;
                acc += (self.c[hh * n + i] * x).re;
            }
            y[hh] = acc;
        }
    }
}
