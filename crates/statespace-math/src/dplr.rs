//! NPLR / DPLR form of a HiPPO operator (S4, Gu et al. 2022, Theorem 1).
//!
//! ```text
//! A = S − P Pᵀ                      S = A + PPᵀ normal:  S = c·I + K,  K skew-symmetric
//! S = V Λ V*                        V unitary (from the Hermitian eigenproblem of −iK)
//! A = V (Λ − P̃ P̃*) V*,  P̃ = V* P,  B̃ = V* B      ("diagonal plus low rank" in the basis V)
//! ```
//!
//! The identity holds on the **full conjugate-completed** set of modes: `Λ_full = (Λ, Λ̄)`,
//! `V_full = [V, V̄]`, `P̃_full = [P̃; conj(P̃)]`. Only the `N/2` modes with `Im λ > 0` are kept
//! (the others are their conjugates); `Λ − P̃P̃*` on the kept half alone is **not** `A` (it misses the
//! coupling of conjugate pairs through `P̃`).
//!
//! Eigenvalue 0 of `K` (FouT's constant/dead pair) is handled by pairing an orthonormal real basis
//! `u₁, u₂` of the null space into `(u₁ − i·u₂)/√2` and its conjugate. Each kept eigenvector's phase is
//! fixed so that `B̃ₙ` is real and positive (or, where `B̃ₙ ≈ 0`, its largest component is).

use crate::hippo::{self, Measure};
use crate::linalg::{CMat, RMat};
use crate::{C64, MathError, Result, invalid};
use faer::{Mat, Side};

/// A DPLR system on `N/2` kept modes (the conjugate half is implied).
#[derive(Debug, Clone)]
pub struct Dplr {
    /// Kept eigenvalues `λₙ = c + iμₙ`, `μₙ ≥ 0` (length N/2).
    pub lambda: Vec<C64>,
    /// `P̃ = V*P` on the kept modes (rank × N/2).
    pub p: Vec<Vec<C64>>,
    /// `B̃ = V*B` on the kept modes (length N/2).
    pub b: Vec<C64>,
    /// The kept eigenvectors `V` (N × N/2); the full unitary basis is `[V, V̄]`.
    pub v: CMat,
}

impl Dplr {
    /// The NPLR decomposition of the HiPPO operator `measure` with state size `n` (even).
    pub fn from_measure(measure: Measure, n: usize) -> Result<Self> {
        let (a, b) = hippo::transition(measure, n)?;
        let p = hippo::low_rank(measure, n)?;
        Self::decompose(&a, &b, &p)
    }

    /// The NPLR decomposition of a real `(A, B)` with `A + PPᵀ = c·I + skew` (`P` is rank × N).
    pub fn decompose(a: &RMat, b: &[f64], p: &[Vec<f64>]) -> Result<Self> {
        let n = a.nrows();
        if n == 0 || !n.is_multiple_of(2) || a.ncols() != n {
            return invalid(format!(
                "DPLR needs a square A of even size, got {}×{}",
                a.nrows(),
                a.ncols()
            ));
        }
        if b.len() != n || p.iter().any(|r| r.len() != n) {
            return invalid("B and the rows of P must have length N");
        }
        let s = hippo::normal_part(a, p);
        let c = (0..n).map(|i| s[(i, i)]).sum::<f64>() / n as f64;
        let scale = (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| s[(i, j)].abs())
            .fold(1.0, f64::max);
        // K = S − cI must be skew: S is then normal with eigenvalues c + iμ.
        let mut asym: f64 = 0.0;
        for i in 0..n {
            for j in 0..n {
                let k_ij = s[(i, j)] - if i == j { c } else { 0.0 };
                let k_ji = s[(j, i)] - if i == j { c } else { 0.0 };
                asym = asym.max((k_ij + k_ji).abs());
            }
        }
        if asym > 1e-10 * scale {
            return invalid(format!(
                "A + PPᵀ is not c·I + skew (symmetric part off by {asym:.3e}): no NPLR form with this P"
            ));
        }
        // H = −iK is Hermitian; K v = iμ v.
        let h = Mat::from_fn(n, n, |i, j| {
            let k = s[(i, j)] - if i == j { c } else { 0.0 };
            C64::new(0.0, -k)
        });
        let eig = h
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| MathError::Numerical(format!("Hermitian eigensolver failed: {e:?}")))?;
        let u = eig.U();
        let mu: Vec<f64> = (0..n).map(|i| eig.S().column_vector()[i].re).collect();
        let mu_max = mu.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let tol = 1e-9 * mu_max;
        let zero: Vec<usize> = (0..n).filter(|&i| mu[i].abs() <= tol).collect();
        let pos: Vec<usize> = (0..n).filter(|&i| mu[i] > tol).collect();
        if !zero.len().is_multiple_of(2) || 2 * pos.len() + zero.len() != n {
            return invalid(format!(
                "the spectrum of A + PPᵀ is not conjugate-paired ({} positive, {} zero imaginary parts, N = {n})",
                pos.len(),
                zero.len()
            ));
        }
        let mut lambda = Vec::with_capacity(n / 2);
        let mut cols: Vec<Vec<C64>> = Vec::with_capacity(n / 2);
        // Null space of K: a real orthonormal basis, paired as (u1 − i u2)/√2.
        if !zero.is_empty() {
            let mut basis: Vec<Vec<f64>> = Vec::new();
            for &j in &zero {
                for part in 0..2 {
                    let mut w: Vec<f64> = (0..n)
                        .map(|i| {
                            if part == 0 {
                                u[(i, j)].re
                            } else {
                                u[(i, j)].im
                            }
                        })
                        .collect();
                    for q in &basis {
                        let d: f64 = w.iter().zip(q).map(|(x, y)| x * y).sum();
                        w.iter_mut().zip(q).for_each(|(x, y)| *x -= d * y);
                    }
                    let nrm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
                    if nrm > 1e-6 && basis.len() < zero.len() {
                        basis.push(w.iter().map(|x| x / nrm).collect());
                    }
                }
            }
            if basis.len() != zero.len() {
                return Err(MathError::Numerical(
                    "could not build a real basis of the null space of A + PPᵀ".into(),
                ));
            }
            let r = std::f64::consts::FRAC_1_SQRT_2;
            for pair in basis.chunks(2) {
                lambda.push(C64::new(c, 0.0));
                cols.push(
                    (0..n)
                        .map(|i| C64::new(pair[0][i] * r, -pair[1][i] * r))
                        .collect(),
                );
            }
        }
        for &j in &pos {
            lambda.push(C64::new(c, mu[j]));
            cols.push((0..n).map(|i| u[(i, j)]).collect());
        }
        // Fix each eigenvector's phase: B̃ₙ = vₙ*B real positive (or the largest component real positive).
        let bnorm = b.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
        for col in cols.iter_mut() {
            let bt: C64 = col.iter().zip(b).map(|(v, &bi)| v.conj() * bi).sum();
            let phase = if bt.norm() > 1e-12 * bnorm {
                // v ← v·e^{iθ} makes v*B ← e^{−iθ} v*B; choose θ = arg(v*B).
                bt / bt.norm()
            } else {
                let big = col.iter().copied().fold(C64::new(0.0, 0.0), |m, x| {
                    if x.norm() > m.norm() + 1e-12 { x } else { m }
                });
                (big / big.norm()).conj()
            };
            col.iter_mut().for_each(|x| *x *= phase);
        }
        let v = Mat::from_fn(n, n / 2, |i, j| cols[j][i]);
        let project = |x: &[f64]| -> Vec<C64> {
            (0..n / 2)
                .map(|j| (0..n).map(|i| v[(i, j)].conj() * x[i]).sum())
                .collect()
        };
        Ok(Dplr {
            b: project(b),
            p: p.iter().map(|r| project(r)).collect(),
            lambda,
            v,
        })
    }

    /// State size N (twice the number of kept modes).
    pub fn state_size(&self) -> usize {
        2 * self.lambda.len()
    }

    /// The full unitary basis `[V, V̄]` (N × N).
    pub fn full_v(&self) -> CMat {
        let (n, h) = (self.v.nrows(), self.v.ncols());
        Mat::from_fn(n, 2 * h, |i, j| {
            if j < h {
                self.v[(i, j)]
            } else {
                self.v[(i, j - h)].conj()
            }
        })
    }

    /// `V_full (Λ_full − P̃_full P̃_full*) V_full*`: the original `A` (as a complex matrix whose
    /// imaginary part vanishes to rounding).
    pub fn reconstruct_a(&self) -> CMat {
        let vf = self.full_v();
        let inner = complete_dense(&self.lambda, &self.p);
        let t = &vf * &inner;
        &t * vf.adjoint()
    }
}

/// Completes a half set `x` (length N/2) to `(x, x̄)` (length N).
pub fn complete(x: &[C64]) -> Vec<C64> {
    x.iter()
        .copied()
        .chain(x.iter().map(|z| z.conj()))
        .collect()
}

/// The dense `N × N` matrix `diag(Λ, Λ̄) − [p; p̄][p; p̄]*` of a DPLR system given on its kept half.
pub fn complete_dense(lambda: &[C64], p: &[Vec<C64>]) -> CMat {
    let lf = complete(lambda);
    let pf: Vec<Vec<C64>> = p.iter().map(|r| complete(r)).collect();
    let n = lf.len();
    Mat::from_fn(n, n, |i, j| {
        let d = if i == j { lf[i] } else { C64::new(0.0, 0.0) };
        d - pf.iter().map(|r| r[i] * r[j].conj()).sum::<C64>()
    })
}
