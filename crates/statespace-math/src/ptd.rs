//! PTD: perturb-then-diagonalize (Yu, Mahoney, Erichson 2024). The HiPPO-LegS matrix is diagonalizable
//! only with astronomically ill-conditioned eigenvectors (cond(V) ~ 1e20 at N = 64), so S4D drops its
//! low-rank part instead. PTD adds a small perturbation `E` chosen so that `A + E` has well-conditioned
//! eigenvectors, then diagonalizes `A + E` exactly.
//!
//! ```text
//! objective (the paper's):  J(E) = cond(V)² + λ·‖E‖_F,   A + E = V Λ V⁻¹, columns of V of unit norm
//! ours (default):           J(E) = cond(V)² + μ·Σᵢ max(Re λᵢ + m, 0)²
//!                           subject to ‖E‖₂ ≤ 3.4 %·‖A‖₂ (the paper's file's norm), E complex,
//!                           μ = 1000, m = 0.5 (S4D-LegS's own Re λ); only iterates with every
//!                           Re λᵢ ≤ −m are returned, so A + E is stable as it is, the layer flips
//!                           nothing, and no pole sits near the imaginary axis
//!                           (the budget is kept by projecting E after every step: its singular values
//!                           are clipped); options: N·‖V⁻¹‖_F² (smooth, ≥ cond²), a real E
//! gradient (eigenvector derivative, distinct eigenvalues):
//!   cond = σ₁/σₙ:            g_V = 2·cond·[ u₁v₁ᴴ/σₙ − (σ₁/σₙ²) uₙvₙᴴ ]        (SVD V = U Σ Wᴴ)
//!   unit columns:            g_v ← g_v − v·Re(vᴴ g_v)  (per column)
//!   dV = V (F ∘ (V⁻¹ dA V)),  F_ij = 1/(λ_j − λ_i) (i ≠ j), 0 on the diagonal
//!   ⇒ g_A = V⁻ᴴ (conj(F) ∘ (Vᴴ g_V) + diag(g_λ)) Vᴴ  (dλᵢ = (V⁻¹dA V)ᵢᵢ, g_λ = 2μ max(Re λ + m, 0));
//!   complex E: g_E = g_A (∂/∂Re + i ∂/∂Im);  real E: g_E = Re g_A  (+ λ E/‖E‖_F)
//! optimizer: Adam from E ~ U[0, 0.1)(1 + i), lr 0.3 decayed ×0.98 every 100 steps (the paper's
//!            StepLR(100, 0.98)), 20,000 steps; the eligible iterate of lowest J is returned; while
//!            cond(V) > 9 the search restarts from the next seed (at most 3 times), the best run kept
//! ```
//!
//! **E complex (default) or real.** The paper's E is complex: `A + E` then has no conjugate-symmetric
//! spectrum, so [`diagonalize_complex`] keeps all N modes with B̃ halved and a layer's `2·Re` over
//! them realizes the real part of the complex system (N modes: twice S4D's cost). A real E
//! ([`PtdOptions::real`]) keeps `A + E` real and [`diagonalize`] realizes `C (sI − A − E)⁻¹ B`
//! exactly with N/2 modes, but conditions less well. Re λ is then forced negative
//! (λ ← −|Re λ| + i Im λ), as in the paper.
//!
//! **Measured (N = 64, seed 0, this 2-core machine):** the default: cond(V) = 8.31 at
//! ‖E‖₂/‖A‖₂ = 3.40 %, max Re λ(A + E) = −0.86 (≈ 3 min) — the paper's own file: cond 9.2 at 3.4 %
//! with max Re λ = +1.35. The margin matters: with m = 1e-4 (the layers' clamp) the search reaches
//! cond 8.18 but leaves poles at Re λ = −3.3e-4, whose resonances make the transfer error against
//! LegS (max over a grid through every pole frequency, relative to max |G_LegS|) 13.6 for C = e₀ and
//! 399 for C ~ N(0, 1); with m = 0.5 it is 0.92 and 1.19 (S4D-LegS: 0.64 and 24.9). Without the
//! penalty (the first default: 5 % budget, μ = 0) cond 9.14 at 5.00 % but 29 of the 64 eigenvalues
//! had Re λ > 0 (max +65.8), which the layer flipped. LegS itself: cond ~1e15 in f64; a random
//! complex E of the same norm: ≈ 200. Real E ([`PtdOptions::real`]): 22.1 at 4.5 %. The paper's
//! objective (λ = 3e-3, no budget) drifts to cond 4.6 at ‖E‖ = 12 %.

use crate::hippo::{self, Measure};
use crate::linalg::{CMat, RMat, csolve, norm2};
use crate::{C64, MathError, Result, invalid};
use faer::Mat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Settings of the perturbation search.
#[derive(Debug, Clone, PartialEq)]
pub struct PtdOptions {
    /// Weight λ of ‖E‖_F.
    pub lambda: f64,
    /// Adam step size.
    pub lr: f64,
    /// Iterations.
    pub iters: usize,
    /// Step-size decay period.
    pub decay_every: usize,
    /// Step-size decay factor.
    pub decay: f64,
    /// Seed of the initial E ~ U[0, 0.1).
    pub seed: u64,
    /// The conditioning term.
    pub objective: Objective,
    /// If set, E is projected after every step onto ‖E‖₂ ≤ this · ‖A‖₂ (its singular values
    /// clipped): the search then minimizes the conditioning within the norm budget directly.
    pub max_rel_norm: Option<f64>,
    /// Weight μ of the stability penalty μ·Σ max(Re λ + m, 0)² (0 = the paper's objective).
    pub stability: f64,
    /// The margin m of the penalty; when positive, the complex search also returns only an iterate
    /// whose eigenvalues all have Re λ ≤ −m (stable as it is: nothing for the layer to flip).
    pub stability_margin: f64,
    /// If set, the search returns the iterate of lowest cond(V) among those with
    /// ‖E‖₂ ≤ this · ‖A‖₂ (the trajectory itself is not constrained), instead of the lowest J.
    pub select_rel_norm: Option<f64>,
    /// E complex (the paper's setting; `A + E` has no conjugate symmetry, so all N modes are kept
    /// and the layer realizes the real part) or real (conjugate pairs, N/2 modes, exact).
    pub complex: bool,
    /// [`legs_perturbation`] restarts the search from the next seed while cond(V) is above this
    /// (the search is not convex: at N = 64 seed 0 reaches 9.14, seed 1 13.9) …
    pub target_cond: Option<f64>,
    /// … at most this many times, and returns the best run.
    pub max_restarts: usize,
}

/// The conditioning term of the objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// cond₂(V)² (the paper's; not smooth where σ₁ or σₙ is multiple).
    Cond2,
    /// N·‖V⁻¹‖_F² = (‖V‖_F‖V⁻¹‖_F)² ≥ cond₂(V)² for unit columns (smooth).
    Frobenius,
}

impl Default for PtdOptions {
    fn default() -> Self {
        // Measured at N = 64 (seed 0): cond(V) = 8.31 at ‖E‖₂/‖A‖₂ = 3.40 %, max Re λ = −0.86
        // (every eigenvalue stable, none flipped); see the module docs.
        Self {
            lambda: 0.0,
            lr: 0.3,
            iters: 20_000,
            decay_every: 100,
            decay: 0.98,
            seed: 0,
            objective: Objective::Cond2,
            max_rel_norm: Some(0.034),
            stability: 1000.0,
            stability_margin: 0.5,
            select_rel_norm: None,
            complex: true,
            target_cond: Some(9.0),
            max_restarts: 3,
        }
    }
}

impl PtdOptions {
    /// The real-E setting (conjugate pairs, exact real system): Frobenius conditioning with the
    /// stability penalty, 4.5 % budget, 3000 iterations — cond(V) = 22.1 at N = 64.
    pub fn real() -> Self {
        Self {
            iters: 3000,
            objective: Objective::Frobenius,
            max_rel_norm: Some(0.045),
            stability: 1.0,
            stability_margin: 0.0,
            complex: false,
            target_cond: None,
            ..Self::default()
        }
    }
}

/// The eigendecomposition of a real matrix with unit-norm eigenvector columns and cond(V).
#[derive(Debug, Clone)]
pub struct Eig {
    /// Eigenvalues.
    pub lambda: Vec<C64>,
    /// Eigenvectors (columns of unit 2-norm).
    pub v: CMat,
    /// σ_max(V)/σ_min(V).
    pub cond: f64,
}

/// Eigenvalues, unit-column eigenvectors and their condition number.
pub fn eig(a: &RMat) -> Result<Eig> {
    let n = a.nrows();
    let e = a
        .eigen()
        .map_err(|e| MathError::Numerical(format!("eigensolver failed: {e:?}")))?;
    let lambda: Vec<C64> = (0..n).map(|i| e.S().column_vector()[i]).collect();
    let u = e.U();
    let v = unit_columns(&CMat::from_fn(n, n, |i, j| u[(i, j)]));
    let cond = cond2(&v)?;
    Ok(Eig { lambda, v, cond })
}

/// [`eig`] of a complex matrix.
pub fn eig_complex(a: &CMat) -> Result<Eig> {
    let n = a.nrows();
    let e = a
        .eigen()
        .map_err(|e| MathError::Numerical(format!("eigensolver failed: {e:?}")))?;
    let lambda: Vec<C64> = (0..n).map(|i| e.S().column_vector()[i]).collect();
    let u = e.U();
    let v = unit_columns(&CMat::from_fn(n, n, |i, j| u[(i, j)]));
    let cond = cond2(&v)?;
    Ok(Eig { lambda, v, cond })
}

fn unit_columns(u: &CMat) -> CMat {
    let n = u.nrows();
    let mut v = u.clone();
    for j in 0..u.ncols() {
        let nrm = (0..n).map(|i| u[(i, j)].norm_sqr()).sum::<f64>().sqrt();
        for i in 0..n {
            v[(i, j)] = u[(i, j)] / nrm;
        }
    }
    v
}

fn cond2(v: &CMat) -> Result<f64> {
    let s = v
        .singular_values()
        .map_err(|e| MathError::Numerical(format!("SVD failed: {e:?}")))?;
    let (mx, mn) = s
        .iter()
        .fold((0.0f64, f64::INFINITY), |(a, b), x| (a.max(*x), b.min(*x)));
    Ok(mx / mn)
}

/// The conditioning (and stability) term `κ(V)² + μ·Σ max(Re λ, 0)²` of a matrix with
/// eigendecomposition `eg`, and its complex gradient `g_A` with respect to the matrix.
fn conditioning(eg: &Eig, kind: Objective, stability: f64, margin: f64) -> Result<(f64, CMat)> {
    let (lam, v, cond) = (&eg.lambda, &eg.v, eg.cond);
    let n = v.nrows();
    let (kappa2, mut gv) = match kind {
        Objective::Cond2 => {
            let svd = v
                .svd()
                .map_err(|e| MathError::Numerical(format!("SVD failed: {e:?}")))?;
            let (uu, ww) = (svd.U(), svd.V());
            let (s1, sn) = (
                svd.S().column_vector()[0].re,
                svd.S().column_vector()[n - 1].re,
            );
            let f1 = 2.0 * cond / sn;
            let f2 = -2.0 * cond * s1 / (sn * sn);
            (
                cond * cond,
                CMat::from_fn(n, n, |i, j| {
                    uu[(i, 0)] * ww[(j, 0)].conj() * f1
                        + uu[(i, n - 1)] * ww[(j, n - 1)].conj() * f2
                }),
            )
        }
        Objective::Frobenius => {
            // κ² = N‖W‖_F², W = V⁻¹:  g_V = −2N Wᴴ W Wᴴ
            let w = csolve(v, &CMat::identity(n, n));
            let fw: f64 = (0..n)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| w[(i, j)].norm_sqr())
                .sum();
            let wh = w.adjoint().to_owned();
            let g = &wh * &w * &wh;
            let nf = n as f64;
            (nf * fw, CMat::from_fn(n, n, |i, j| g[(i, j)] * (-2.0 * nf)))
        }
    };
    // unit columns: g_v ← g_v − v Re(vᴴ g_v)
    for j in 0..n {
        let d: f64 = (0..n).map(|i| (v[(i, j)].conj() * gv[(i, j)]).re).sum();
        for i in 0..n {
            let vij = v[(i, j)];
            gv[(i, j)] -= vij * d;
        }
    }
    let vh_g = v.adjoint() * &gv;
    // eigenvalue term: dλ_i = (V⁻¹ dA V)_ii, so g_λ enters on the diagonal of g_M
    let unstable: f64 = lam.iter().map(|l| (l.re + margin).max(0.0).powi(2)).sum();
    let gm = CMat::from_fn(n, n, |i, j| {
        if i == j {
            C64::new(2.0 * stability * (lam[i].re + margin).max(0.0), 0.0)
        } else {
            let f = C64::new(1.0, 0.0) / (lam[j] - lam[i]);
            f.conj() * vh_g[(i, j)]
        }
    });
    // g_A = V⁻ᴴ g_M Vᴴ: solve Vᴴ X = g_M, then X Vᴴ
    let vh = v.adjoint().to_owned();
    let x = csolve(&vh, &gm);
    let ga = &x * &vh;
    Ok((kappa2 + stability * unstable, ga))
}

/// `J(E) = κ(V(A+E))² + λ‖E‖_F + μ·Σ max(Re λ, 0)²` and its gradient with respect to (real) `E`;
/// also cond₂(V).
pub fn objective(
    a: &RMat,
    e: &RMat,
    lambda: f64,
    kind: Objective,
    stability: f64,
) -> Result<(f64, RMat, f64)> {
    let n = a.nrows();
    let ae = Mat::from_fn(n, n, |i, j| a[(i, j)] + e[(i, j)]);
    let eg = eig(&ae)?;
    let (j, ga) = conditioning(&eg, kind, stability, 0.0)?;
    let fro = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| e[(i, j)] * e[(i, j)])
        .sum::<f64>()
        .sqrt();
    let grad = Mat::from_fn(n, n, |i, j| {
        ga[(i, j)].re
            + if fro > 0.0 {
                lambda * e[(i, j)] / fro
            } else {
                0.0
            }
    });
    Ok((j + lambda * fro, grad, eg.cond))
}

/// The same for a complex `E` (the paper's setting): the gradient is `g_E = g_A` (∂/∂Re + i ∂/∂Im).
pub fn objective_complex(
    a: &RMat,
    e: &CMat,
    lambda: f64,
    kind: Objective,
    stability: f64,
) -> Result<(f64, CMat, f64)> {
    let (j, grad, cond, _) = objective_complex_margin(a, e, lambda, kind, stability, 0.0)?;
    Ok((j, grad, cond))
}

/// [`objective_complex`] with the stability penalty `μ·Σ max(Re λ + margin, 0)²`; also returns
/// max Re λ(A + E).
pub fn objective_complex_margin(
    a: &RMat,
    e: &CMat,
    lambda: f64,
    kind: Objective,
    stability: f64,
    margin: f64,
) -> Result<(f64, CMat, f64, f64)> {
    let n = a.nrows();
    let ae = CMat::from_fn(n, n, |i, j| e[(i, j)] + a[(i, j)]);
    let eg = eig_complex(&ae)?;
    let max_re = eg.lambda.iter().fold(f64::NEG_INFINITY, |m, l| m.max(l.re));
    let (j, ga) = conditioning(&eg, kind, stability, margin)?;
    let fro = (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| e[(i, j)].norm_sqr())
        .sum::<f64>()
        .sqrt();
    let grad = CMat::from_fn(n, n, |i, j| {
        ga[(i, j)]
            + if fro > 0.0 {
                e[(i, j)] * (lambda / fro)
            } else {
                C64::new(0.0, 0.0)
            }
    });
    Ok((j + lambda * fro, grad, eg.cond, max_re))
}

/// The result of the perturbation search.
#[derive(Debug, Clone)]
pub struct Perturbation {
    /// The perturbation E (N × N, real).
    pub e: RMat,
    /// cond(V) of A + E.
    pub cond: f64,
    /// ‖E‖₂ / ‖A‖₂.
    pub rel_norm: f64,
}

/// Minimizes `J(E)` by Adam from E ~ U[0, 0.1); returns the iterate with the smallest `J`.
pub fn optimize(
    a: &RMat,
    opts: &PtdOptions,
    mut progress: impl FnMut(usize, f64),
) -> Result<Perturbation> {
    let n = a.nrows();
    if n == 0 || a.ncols() != n {
        return invalid("PTD needs a non-empty square matrix");
    }
    if !(opts.lr > 0.0 && opts.lambda >= 0.0 && opts.decay > 0.0 && opts.decay_every > 0) {
        return invalid(format!("PTD options out of range: {opts:?}"));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut e = Mat::from_fn(n, n, |_, _| rng.random_range(0.0..0.1));
    let a_norm = norm2(a)?;
    if let Some(r) = opts.max_rel_norm {
        project(&mut e, r * a_norm)?;
    }
    let (mut m1, mut m2) = (RMat::zeros(n, n), RMat::zeros(n, n));
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let mut best: Option<(f64, RMat, f64)> = None;
    let mut lr = opts.lr;
    for it in 0..opts.iters {
        let (j, g, cond) = objective(a, &e, opts.lambda, opts.objective, opts.stability)?;
        if !j.is_finite() {
            return Err(MathError::Numerical(format!(
                "PTD objective became non-finite at iteration {it}"
            )));
        }
        if best.as_ref().is_none_or(|b| j < b.0) {
            best = Some((j, e.clone(), cond));
        }
        progress(it, cond);
        let t = (it + 1) as f64;
        for c in 0..n {
            for r in 0..n {
                let gi = g[(r, c)];
                m1[(r, c)] = b1 * m1[(r, c)] + (1.0 - b1) * gi;
                m2[(r, c)] = b2 * m2[(r, c)] + (1.0 - b2) * gi * gi;
                let mh = m1[(r, c)] / (1.0 - b1.powf(t));
                let vh = m2[(r, c)] / (1.0 - b2.powf(t));
                e[(r, c)] -= lr * mh / (vh.sqrt() + eps);
            }
        }
        if let Some(r) = opts.max_rel_norm {
            project(&mut e, r * a_norm)?;
        }
        if (it + 1) % opts.decay_every == 0 {
            lr *= opts.decay;
        }
    }
    let (_, e, _) = best.ok_or_else(|| MathError::Invalid("PTD ran zero iterations".into()))?;
    let ae = Mat::from_fn(n, n, |i, j| a[(i, j)] + e[(i, j)]);
    let cond = eig(&ae)?.cond;
    Ok(Perturbation {
        rel_norm: norm2(&e)? / norm2(a)?,
        e,
        cond,
    })
}

/// Clips the singular values of `e` at `limit` (the projection onto the spectral-norm ball).
fn project(e: &mut RMat, limit: f64) -> Result<()> {
    let svd = e
        .svd()
        .map_err(|err| MathError::Numerical(format!("SVD failed: {err:?}")))?;
    let n = e.nrows();
    let s: Vec<f64> = (0..n).map(|i| svd.S().column_vector()[i]).collect();
    if s[0] <= limit {
        return Ok(());
    }
    let (u, v) = (svd.U(), svd.V());
    *e = Mat::from_fn(n, n, |i, j| {
        (0..n)
            .map(|k| u[(i, k)] * s[k].min(limit) * v[(j, k)])
            .sum()
    });
    Ok(())
}

/// A diagonal system from `A + E`: kept modes (one per conjugate pair with Im λ > 0, one per real
/// eigenvalue), `b̃ = (V⁻¹B)` on them (halved for real modes so that 2·Re sums correctly), the kept
/// eigenvector columns `V [N, M]` and rows of `V⁻¹ [M, N]` (for C̃ = C V and B̃ = V⁻¹B).
#[derive(Debug, Clone)]
pub struct Diagonalized {
    /// Kept eigenvalues (Re forced ≤ 0 when requested).
    pub lambda: Vec<C64>,
    /// `V⁻¹B` on the kept modes (halved on real modes).
    pub b: Vec<C64>,
    /// Kept eigenvector columns, `N × M`.
    pub v: CMat,
    /// Rows of `V⁻¹` for the kept modes (halved on real modes), `M × N`.
    pub vinv: CMat,
    /// cond(V).
    pub cond: f64,
}

/// Diagonalizes a real `A` (`A + E`): conjugate pairs become one mode each, real eigenvalues one mode
/// each; `force_stable` replaces Re λ by −|Re λ|.
pub fn diagonalize(a: &RMat, b: &[f64], force_stable: bool) -> Result<Diagonalized> {
    let n = a.nrows();
    if b.len() != n {
        return invalid(format!("B has {} entries, A is {n}×{n}", b.len()));
    }
    let Eig { lambda, v, cond } = eig(a)?;
    let full_inv = csolve(&v, &CMat::identity(n, n));
    let scale = lambda.iter().fold(1.0f64, |m, l| m.max(l.norm()));
    let tol = 1e-10 * scale;
    let mut keep: Vec<(usize, f64)> = Vec::new(); // (index, weight)
    let mut used = vec![false; n];
    for i in 0..n {
        if used[i] {
            continue;
        }
        if lambda[i].im.abs() <= tol {
            used[i] = true;
            keep.push((i, 0.5));
            continue;
        }
        // its conjugate partner
        let j = (0..n)
            .filter(|&j| j != i && !used[j])
            .min_by(|&x, &y| {
                (lambda[x] - lambda[i].conj())
                    .norm()
                    .total_cmp(&(lambda[y] - lambda[i].conj()).norm())
            })
            .ok_or_else(|| MathError::Numerical("unpaired complex eigenvalue".into()))?;
        if (lambda[j] - lambda[i].conj()).norm() > 1e-6 * scale {
            return Err(MathError::Numerical(format!(
                "eigenvalue {} has no conjugate partner (closest {})",
                lambda[i], lambda[j]
            )));
        }
        used[i] = true;
        used[j] = true;
        let k = if lambda[i].im > 0.0 { i } else { j };
        keep.push((k, 1.0));
    }
    keep.sort_by(|x, y| lambda[x.0].im.total_cmp(&lambda[y.0].im));
    Ok(kept_modes(
        &lambda,
        &v,
        &full_inv,
        &keep,
        b,
        force_stable,
        cond,
    ))
}

/// The diagonal system on the modes `keep` (eigenvalue index, input weight) of `A = V Λ V⁻¹`.
fn kept_modes(
    lambda: &[C64],
    v: &CMat,
    full_inv: &CMat,
    keep: &[(usize, f64)],
    b: &[f64],
    force_stable: bool,
    cond: f64,
) -> Diagonalized {
    let (n, m) = (v.nrows(), keep.len());
    let lam = keep
        .iter()
        .map(|(k, _)| {
            let l = lambda[*k];
            if force_stable {
                C64::new(-l.re.abs(), l.im)
            } else {
                l
            }
        })
        .collect();
    let vk = CMat::from_fn(n, m, |i, c| v[(i, keep[c].0)]);
    let vinv = CMat::from_fn(m, n, |r, j| full_inv[(keep[r].0, j)] * keep[r].1);
    let bt = (0..m)
        .map(|r| (0..n).map(|j| vinv[(r, j)] * b[j]).sum())
        .collect();
    Diagonalized {
        lambda: lam,
        b: bt,
        v: vk,
        vinv,
        cond,
    }
}

/// Diagonalizes a complex `A + E`: all N eigenvalues are modes, with input weights halved, so that
/// a layer's `2·Re Σ` over them realizes `Re(C (sI − A − E)⁻¹ B)`-in-time, i.e. the transfer function
/// `½[G(s) + conj G(s̄)]` of the real part of the complex system. `force_stable` as [`diagonalize`].
pub fn diagonalize_complex(a: &CMat, b: &[f64], force_stable: bool) -> Result<Diagonalized> {
    let n = a.nrows();
    if b.len() != n {
        return invalid(format!("B has {} entries, A is {n}×{n}", b.len()));
    }
    let Eig { lambda, v, cond } = eig_complex(a)?;
    let full_inv = csolve(&v, &CMat::identity(n, n));
    let mut keep: Vec<(usize, f64)> = (0..n).map(|k| (k, 0.5)).collect();
    keep.sort_by(|x, y| lambda[x.0].im.total_cmp(&lambda[y.0].im));
    Ok(kept_modes(
        &lambda,
        &v,
        &full_inv,
        &keep,
        b,
        force_stable,
        cond,
    ))
}

/// Diagonalizes `A + E`: [`diagonalize`] when `E` is real, else [`diagonalize_complex`].
pub fn diagonalize_perturbed(
    a: &RMat,
    e: &CMat,
    b: &[f64],
    force_stable: bool,
) -> Result<Diagonalized> {
    let n = a.nrows();
    let real = (0..n).all(|i| (0..n).all(|j| e[(i, j)].im == 0.0));
    if real {
        diagonalize(
            &Mat::from_fn(n, n, |i, j| a[(i, j)] + e[(i, j)].re),
            b,
            force_stable,
        )
    } else {
        diagonalize_complex(
            &CMat::from_fn(n, n, |i, j| e[(i, j)] + a[(i, j)]),
            b,
            force_stable,
        )
    }
}

/// The PTD perturbation of LegS at state size `n` (complex or real by `opts.complex`; a real one is
/// returned with zero imaginary parts), cached on disk under `cache_dir` (a text file: `N`, then N
/// rows of N `re im` pairs) when given.
pub fn legs_perturbation(
    n: usize,
    opts: &PtdOptions,
    cache_dir: Option<&std::path::Path>,
    progress: impl FnMut(usize, f64),
) -> Result<ComplexPerturbation> {
    let (a, _) = hippo::transition(Measure::LegS, n)?;
    let name = format!(
        "ptd-legs-n{n}-{}-lam{:e}-lr{:e}-it{}-seed{}-{:?}-max{:?}-decay{}x{:e}-stab{:e}m{:e}-sel{:?}-target{:?}x{}.txt",
        if opts.complex { "complex" } else { "real" },
        opts.lambda,
        opts.lr,
        opts.iters,
        opts.seed,
        opts.objective,
        opts.max_rel_norm,
        opts.decay_every,
        opts.decay,
        opts.stability,
        opts.stability_margin,
        opts.select_rel_norm,
        opts.target_cond,
        opts.max_restarts
    );
    if let Some(dir) = cache_dir {
        let path = dir.join(&name);
        if let Some(e) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| parse_cache(&text, n))
        {
            let ae = CMat::from_fn(n, n, |i, j| e[(i, j)] + a[(i, j)]);
            let cond = eig_complex(&ae)?.cond;
            let en = e
                .singular_values()
                .map_err(|err| MathError::Numerical(format!("SVD failed: {err:?}")))?
                .iter()
                .fold(0.0f64, |m, x| m.max(*x));
            return Ok(ComplexPerturbation {
                rel_norm: en / norm2(&a)?,
                e,
                cond,
            });
        }
    }
    let mut progress = progress;
    let mut best: Option<ComplexPerturbation> = None;
    for restart in 0..=opts.max_restarts {
        let o = PtdOptions {
            seed: opts.seed.wrapping_add(restart as u64),
            ..opts.clone()
        };
        let offset = restart * opts.iters;
        let p = if opts.complex {
            optimize_complex(&a, &o, |it, c| progress(offset + it, c))?
        } else {
            let r = optimize(&a, &o, |it, c| progress(offset + it, c))?;
            ComplexPerturbation {
                e: CMat::from_fn(n, n, |i, j| C64::new(r.e[(i, j)], 0.0)),
                cond: r.cond,
                rel_norm: r.rel_norm,
            }
        };
        if best.as_ref().is_none_or(|b| p.cond < b.cond) {
            best = Some(p);
        }
        let reached = best
            .as_ref()
            .is_some_and(|b| opts.target_cond.is_none_or(|t| b.cond <= t));
        if reached {
            break;
        }
    }
    let p = best.expect("at least one run");
    if let Some(dir) = cache_dir {
        let mut text = format!(
            "# statespace PTD perturbation of LegS, N = {n}, row-major (re im) pairs\n{n}\n"
        );
        for i in 0..n {
            let row: Vec<String> = (0..n)
                .map(|j| format!("{:e} {:e}", p.e[(i, j)].re, p.e[(i, j)].im))
                .collect();
            text.push_str(&row.join(" "));
            text.push('\n');
        }
        // best effort: a cache that cannot be written is recomputed next time
        if std::fs::create_dir_all(dir).is_ok() {
            let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, dir.join(&name));
            }
        }
    }
    Ok(p)
}

fn parse_cache(text: &str, n: usize) -> Option<CMat> {
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    if lines.next()?.trim().parse::<usize>().ok()? != n {
        return None;
    }
    let vals: Vec<f64> = lines
        .flat_map(|l| l.split_whitespace())
        .map(|t| t.parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    if vals.len() != 2 * n * n || vals.iter().any(|v| !v.is_finite()) {
        return None;
    }
    Some(CMat::from_fn(n, n, |i, j| {
        C64::new(vals[2 * (i * n + j)], vals[2 * (i * n + j) + 1])
    }))
}

/// How well diagonal systems reproduce LegS's transfer function `G(s) = C(sI − A)⁻¹B` on the imaginary
/// axis, `s = iω` for the given `omegas`: `max_ω |G_x(iω) − G(iω)| / max_ω |G(iω)|` for
/// x = PTD (`diag(A + E)`, Re λ forced negative) and x = S4D-LegS (the diagonal of the normal part,
/// `B̃ = V*B` halved as the S4D theory asks).
#[derive(Debug, Clone, PartialEq)]
pub struct TransferErrors {
    /// PTD's relative error: the system the layer realizes (for a complex E the real part of the
    /// complex system, `½[G_E(s) + conj G_E(s̄)]`).
    pub ptd: f64,
    /// The complex system's own `G_E(s) = C V (sI − Λ)⁻¹ V⁻¹ B` (the paper's quantity; equal to
    /// `ptd` for a real E).
    pub ptd_complex: f64,
    /// S4D-LegS's relative error.
    pub s4d: f64,
}

/// [`TransferErrors`] for the perturbation `e` of LegS(N) and output row `c`.
pub fn transfer_errors(e: &CMat, c: &[f64], omegas: &[f64]) -> Result<TransferErrors> {
    use crate::kernel::{DiagonalSystem, dense_transfer};
    let n = e.nrows();
    let (a, b) = hippo::transition(Measure::LegS, n)?;
    let s: Vec<C64> = omegas.iter().map(|w| C64::new(0.0, *w)).collect();
    let g = dense_transfer(&a, &b, c, &s)?;
    let scale = g.iter().fold(0.0f64, |m, z| m.max(z.norm()));
    let rel = |h: &[C64]| {
        h.iter()
            .zip(&g)
            .map(|(x, y)| (x - y).norm())
            .fold(0.0, f64::max)
            / scale
    };
    let d = diagonalize_perturbed(&a, e, &b, true)?;
    let m = d.lambda.len();
    let cv: Vec<C64> = (0..m)
        .map(|k| (0..n).map(|i| d.v[(i, k)] * c[i]).sum())
        .collect();
    let ptd_sys = DiagonalSystem {
        lambda: d.lambda.clone(),
        b: d.b.clone(),
        c: cv.clone(),
    };
    let complex = (0..n).any(|i| (0..n).any(|j| e[(i, j)].im != 0.0));
    let g_complex: Vec<C64> = s
        .iter()
        .map(|&si| {
            (0..m)
                .map(|k| cv[k] * d.b[k] * 2.0 / (si - d.lambda[k]))
                .sum()
        })
        .collect();
    let legs = crate::dplr::Dplr::from_measure(Measure::LegS, n)?;
    let s4d_sys = DiagonalSystem {
        lambda: legs.lambda.clone(),
        b: legs.b.iter().map(|x| x * 0.5).collect(),
        c: (0..legs.lambda.len())
            .map(|k| (0..n).map(|i| legs.v[(i, k)] * c[i]).sum())
            .collect(),
    };
    let ptd = rel(&ptd_sys.transfer(&s)?);
    Ok(TransferErrors {
        ptd,
        ptd_complex: if complex { rel(&g_complex) } else { ptd },
        s4d: rel(&s4d_sys.transfer(&s)?),
    })
}

/// A complex perturbation found by [`optimize_complex`].
#[derive(Debug, Clone)]
pub struct ComplexPerturbation {
    /// The perturbation E (N × N, complex).
    pub e: CMat,
    /// cond(V) of A + E.
    pub cond: f64,
    /// ‖E‖₂ / ‖A‖₂.
    pub rel_norm: f64,
}

/// [`optimize`] over complex `E` (the paper's setting), from E ~ U[0, 0.1)·(1 + i).
pub fn optimize_complex(
    a: &RMat,
    opts: &PtdOptions,
    mut progress: impl FnMut(usize, f64),
) -> Result<ComplexPerturbation> {
    let n = a.nrows();
    if n == 0 || a.ncols() != n {
        return invalid("PTD needs a non-empty square matrix");
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut e = CMat::from_fn(n, n, |_, _| {
        let v = rng.random_range(0.0..0.1);
        C64::new(v, v)
    });
    let a_norm = norm2(a)?;
    let limit = opts.max_rel_norm.map(|r| r * a_norm);
    if let Some(l) = limit {
        project_complex(&mut e, l)?;
    }
    let mut m1 = vec![C64::new(0.0, 0.0); n * n];
    let mut m2 = vec![C64::new(0.0, 0.0); n * n];
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    let mut best: Option<(f64, CMat)> = None;
    let mut lr = opts.lr;
    for it in 0..opts.iters {
        let (j, g, cond, max_re) = objective_complex_margin(
            a,
            &e,
            opts.lambda,
            opts.objective,
            opts.stability,
            opts.stability_margin,
        )?;
        // with a margin, only iterates stable by it may be returned
        let eligible = opts.stability_margin <= 0.0 || max_re <= -opts.stability_margin;
        if !j.is_finite() {
            return Err(MathError::Numerical(format!(
                "PTD objective became non-finite at iteration {it}"
            )));
        }
        match opts.select_rel_norm {
            None => {
                if eligible && best.as_ref().is_none_or(|b| j < b.0) {
                    best = Some((j, e.clone()));
                }
            }
            Some(r) => {
                if eligible && best.as_ref().is_none_or(|b| cond < b.0) {
                    let s = e
                        .singular_values()
                        .map_err(|err| MathError::Numerical(format!("SVD failed: {err:?}")))?;
                    if s.iter().fold(0.0f64, |m, x| m.max(*x)) <= r * a_norm {
                        best = Some((cond, e.clone()));
                    }
                }
            }
        }
        progress(it, cond);
        let t = (it + 1) as f64;
        for c in 0..n {
            for r in 0..n {
                let k = c * n + r;
                let gi = g[(r, c)];
                m1[k] = m1[k] * b1 + gi * (1.0 - b1);
                m2[k] = C64::new(
                    b2 * m2[k].re + (1.0 - b2) * gi.re * gi.re,
                    b2 * m2[k].im + (1.0 - b2) * gi.im * gi.im,
                );
                let (c1, c2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
                let step = C64::new(
                    m1[k].re / c1 / ((m2[k].re / c2).sqrt() + eps),
                    m1[k].im / c1 / ((m2[k].im / c2).sqrt() + eps),
                );
                e[(r, c)] -= step * lr;
            }
        }
        if let Some(l) = limit {
            project_complex(&mut e, l)?;
        }
        if (it + 1) % opts.decay_every == 0 {
            lr *= opts.decay;
        }
    }
    let (_, e) = best.ok_or_else(|| {
        if opts.iters == 0 {
            MathError::Invalid("PTD ran zero iterations".into())
        } else {
            MathError::Numerical(format!(
                "no iterate of the PTD search had every Re λ ≤ −{:e}: raise the stability weight \
                 or the norm budget",
                opts.stability_margin
            ))
        }
    })?;
    let ae = CMat::from_fn(n, n, |i, j| e[(i, j)] + a[(i, j)]);
    let cond = eig_complex(&ae)?.cond;
    let s = e
        .singular_values()
        .map_err(|err| MathError::Numerical(format!("SVD failed: {err:?}")))?;
    let en = s.iter().fold(0.0f64, |m, x| m.max(*x));
    Ok(ComplexPerturbation {
        e,
        cond,
        rel_norm: en / a_norm,
    })
}

fn project_complex(e: &mut CMat, limit: f64) -> Result<()> {
    let svd = e
        .svd()
        .map_err(|err| MathError::Numerical(format!("SVD failed: {err:?}")))?;
    let n = e.nrows();
    let s: Vec<f64> = (0..n).map(|i| svd.S().column_vector()[i].re).collect();
    if s[0] <= limit {
        return Ok(());
    }
    let (u, v) = (svd.U(), svd.V());
    *e = CMat::from_fn(n, n, |i, j| {
        (0..n)
            .map(|k| u[(i, k)] * v[(j, k)].conj() * s[k].min(limit))
            .sum()
    });
    Ok(())
}
