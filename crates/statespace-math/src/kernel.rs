//! Convolution kernels `K_l = C Ā^l B̄ (l = 0 … L−1)` and transfer functions `H(s) = C(sI − A)⁻¹B`
//! of dense, diagonal and DPLR systems, in f64.
//!
//! ```text
//! dense (ground truth)   K_l = C Ā^l B̄                          Krylov: x ← Ā x, L·N² flops
//! diagonal (S4D)         K_l = 2·Re Σₙ Cₙ Bₙ · B̄ₙ/Bₙ · Āₙ^l      Vandermonde over the N/2 kept modes
//! DPLR (S4)              K̂(ω) = Σ_{l<L} K_l ω^l = C̃ (I − Āω)⁻¹ B̄,  ω = e^{−2πik/L},  C̃ = C(I − Ā^L)
//!   bilinear:  (I − Āω)⁻¹B̄ = M(ω)⁻¹ Δ B,  M(ω) = (1−ω)I − (Δ/2)(1+ω)A
//!   A = Λ − PP*:  M = D⁻¹ + g·PP*,  Dₙ = 1/((1−ω) − g·λₙ),  g = (Δ/2)(1+ω)
//!   Woodbury:  K̂(ω) = Δ·[ r_cb − g·r_cp (I + g·r_pp)⁻¹ r_pb ],  r_xy = Σₙ xₙ Dₙ yₙ
//!   (rows: C̃ and P*, i.e. conj(P) on the left; columns: B and P), summed over the full
//!   conjugate-completed set; then K = irfft(K̂).  This form has no pole at ω = −1 (where the
//!   usual z = 2(1−ω)/(1+ω) form divides by zero).
//! ```
//!
//! Because `ω^L = 1` at the roots of unity, `Σ_{l<L} Ā^l ω^l = (I − Ā^L)(I − Āω)⁻¹`: the DPLR kernel
//! needs `C̃ = C(I − Ā^L)` in place of `C` (the C′ "truncation" trick). With `C̃` the Cauchy/Woodbury
//! kernel equals the Krylov kernel of `C` exactly, also when `Ā^L` is far from negligible (small Δ).

use crate::discretize::{self, Discretization};
use crate::dplr::{complete, complete_dense};
use crate::linalg::{CMat, RMat, cpow, csolve};
use crate::{C64, Result, invalid};
use faer::Mat;
use realfft::RealFftPlanner;

/// The Krylov kernel `K_l = C Ā^l B̄` of a discrete real system, by `L` matrix-vector products.
pub fn krylov(abar: &RMat, bbar: &[f64], c: &[f64], len: usize) -> Vec<f64> {
    let n = abar.nrows();
    let mut x = bbar.to_vec();
    let mut next = vec![0.0; n];
    let mut k = Vec::with_capacity(len);
    for _ in 0..len {
        k.push(c.iter().zip(&x).map(|(ci, xi)| ci * xi).sum());
        for (i, nx) in next.iter_mut().enumerate() {
            *nx = (0..n).map(|j| abar[(i, j)] * x[j]).sum();
        }
        std::mem::swap(&mut x, &mut next);
    }
    k
}

/// The kernel of a dense real continuous system `(A, B, C)` discretized with `disc` at step `dt`.
pub fn dense_kernel(
    a: &RMat,
    b: &[f64],
    c: &[f64],
    dt: f64,
    disc: Discretization,
    len: usize,
) -> Result<Vec<f64>> {
    if c.len() != a.nrows() {
        return invalid(format!("C has length {}, N = {}", c.len(), a.nrows()));
    }
    let (abar, bbar) = discretize::dense(a, b, dt, disc)?;
    Ok(krylov(&abar, &bbar, c, len))
}

/// `H(s) = C(sI − A)⁻¹B` of a dense real system at the points `s` (complex LU per point).
pub fn dense_transfer(a: &RMat, b: &[f64], c: &[f64], s: &[C64]) -> Result<Vec<C64>> {
    let n = a.nrows();
    if a.ncols() != n || b.len() != n || c.len() != n {
        return invalid("dense transfer: A must be N×N and B, C of length N");
    }
    let bcol = Mat::from_fn(n, 1, |i, _| C64::new(b[i], 0.0));
    Ok(s.iter()
        .map(|&si| {
            let m = Mat::from_fn(n, n, |i, j| {
                (if i == j { si } else { C64::new(0.0, 0.0) }) - a[(i, j)]
            });
            let x = csolve(&m, &bcol);
            (0..n).map(|i| x[(i, 0)] * c[i]).sum()
        })
        .collect())
}

/// A conjugate-symmetric diagonal system given by its `N/2` kept modes; the output is `2·Re` of the
/// sum over them (the conjugate half contributes the conjugate).
#[derive(Debug, Clone, PartialEq)]
pub struct DiagonalSystem {
    /// Eigenvalues `λₙ` (Re λ < 0 for a stable system).
    pub lambda: Vec<C64>,
    /// Input coefficients `Bₙ`.
    pub b: Vec<C64>,
    /// Output coefficients `Cₙ` (the kernel uses `Cₙ Bₙ`, no conjugation).
    pub c: Vec<C64>,
}

impl DiagonalSystem {
    /// Checks that the three vectors have the same length.
    pub fn check(&self) -> Result<()> {
        if self.b.len() != self.lambda.len() || self.c.len() != self.lambda.len() {
            return invalid(format!(
                "diagonal system: {} eigenvalues, {} B entries, {} C entries",
                self.lambda.len(),
                self.b.len(),
                self.c.len()
            ));
        }
        Ok(())
    }

    /// The Vandermonde kernel `K_l = 2·Re Σₙ Cₙ Bₙ (B̄ₙ/Bₙ) Āₙ^l`.
    pub fn kernel(&self, dt: f64, disc: Discretization, len: usize) -> Result<Vec<f64>> {
        self.check()?;
        let dss = (disc == Discretization::Dss).then_some(len);
        let modes = self
            .lambda
            .iter()
            .map(|&l| discretize::diagonal(l, dt, disc, len))
            .collect::<Result<Vec<_>>>()?;
        Ok((0..len)
            .map(|l| {
                2.0 * modes
                    .iter()
                    .zip(self.b.iter().zip(&self.c))
                    .map(|(m, (b, c))| (c * b * m.power_times_bbar(l, dss)).re)
                    .sum::<f64>()
            })
            .collect())
    }

    /// `H(s) = Σₙ Cₙ Bₙ/(s − λₙ) + conj(Cₙ Bₙ)/(s − λ̄ₙ)` at the points `s`.
    pub fn transfer(&self, s: &[C64]) -> Result<Vec<C64>> {
        self.check()?;
        Ok(s.iter()
            .map(|&si| {
                self.lambda
                    .iter()
                    .zip(self.b.iter().zip(&self.c))
                    .map(|(l, (b, c))| c * b / (si - l) + (c * b).conj() / (si - l.conj()))
                    .sum()
            })
            .collect())
    }
}

/// A DPLR system on its `N/2` kept modes: the full system is
/// `A = diag(Λ, Λ̄) − [p; p̄][p; p̄]*`, `B = [b; b̄]`, `C = [c; c̄]` (C as a row: no conjugation).
#[derive(Debug, Clone, PartialEq)]
pub struct DplrSystem {
    /// Kept eigenvalues `Λ` (N/2).
    pub lambda: Vec<C64>,
    /// Low-rank factor `p` (rank × N/2).
    pub p: Vec<Vec<C64>>,
    /// `b` (N/2).
    pub b: Vec<C64>,
    /// The system's `c` (N/2) — not `C̃`.
    pub c: Vec<C64>,
}

/// Small dense complex solve `M x = y` (Gaussian elimination with partial pivoting), for the r×r
/// capacitance matrix of the Woodbury identity.
fn small_solve(mut m: Vec<Vec<C64>>, mut y: Vec<C64>) -> Vec<C64> {
    let r = y.len();
    for col in 0..r {
        let piv = (col..r)
            .max_by(|&i, &j| m[i][col].norm().total_cmp(&m[j][col].norm()))
            .unwrap_or(col);
        m.swap(col, piv);
        y.swap(col, piv);
        for row in col + 1..r {
            let f = m[row][col] / m[col][col];
            let pivot_row = m[col].clone();
            for (v, p) in m[row].iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            let v = y[col];
            y[row] -= f * v;
        }
    }
    let mut x = vec![C64::new(0.0, 0.0); r];
    for row in (0..r).rev() {
        let s: C64 = (row + 1..r).map(|k| m[row][k] * x[k]).sum();
        x[row] = (y[row] - s) / m[row][row];
    }
    x
}

impl DplrSystem {
    /// Checks the shapes (every vector of length N/2, p of rank ≥ 0 rows of length N/2).
    pub fn check(&self) -> Result<()> {
        let h = self.lambda.len();
        if self.b.len() != h || self.c.len() != h {
            return invalid(format!(
                "dplr system: {h} eigenvalues, {} B entries, {} C entries",
                self.b.len(),
                self.c.len()
            ));
        }
        if let Some((i, r)) = self.p.iter().enumerate().find(|(_, r)| r.len() != h) {
            return invalid(format!(
                "dplr system: p row {i} has {} entries, expected {h}",
                r.len()
            ));
        }
        Ok(())
    }

    /// The full dense system `(A, B, C)` on the conjugate-completed modes (complex, N × N).
    pub fn dense_full(&self) -> (CMat, Vec<C64>, Vec<C64>) {
        (
            complete_dense(&self.lambda, &self.p),
            complete(&self.b),
            complete(&self.c),
        )
    }

    /// Bilinear `(Ā, B̄)` of the full dense system.
    pub fn bilinear_full(&self, dt: f64) -> Result<(CMat, Vec<C64>)> {
        self.check()?;
        if !(dt > 0.0 && dt.is_finite()) {
            return invalid(format!("dt must be positive and finite, got {dt}"));
        }
        let (a, b, _) = self.dense_full();
        let n = a.nrows();
        let eye = |i: usize, j: usize| C64::new(if i == j { 1.0 } else { 0.0 }, 0.0);
        let minus = Mat::from_fn(n, n, |i, j| eye(i, j) - a[(i, j)] * (dt / 2.0));
        let plus = Mat::from_fn(n, n, |i, j| eye(i, j) + a[(i, j)] * (dt / 2.0));
        let abar = csolve(&minus, &plus);
        let bcol = Mat::from_fn(n, 1, |i, _| b[i] * dt);
        let bbar = csolve(&minus, &bcol);
        Ok((abar, (0..n).map(|i| bbar[(i, 0)]).collect()))
    }

    /// The Krylov kernel `C Ā^l B̄` of the full dense (complex) system: the reference for the DPLR
    /// kernel (its imaginary part vanishes to rounding and is dropped).
    pub fn krylov_kernel(&self, dt: f64, len: usize) -> Result<Vec<f64>> {
        let (abar, bbar) = self.bilinear_full(dt)?;
        let c = complete(&self.c);
        let n = abar.nrows();
        let mut x = bbar;
        let mut k = Vec::with_capacity(len);
        for _ in 0..len {
            k.push(c.iter().zip(&x).map(|(ci, xi)| ci * xi).sum::<C64>().re);
            x = (0..n)
                .map(|i| (0..n).map(|j| abar[(i, j)] * x[j]).sum())
                .collect();
        }
        Ok(k)
    }

    /// `C̃ = C(I − Ā^L)` on the kept half (the full `C̃` is `[c̃; conj(c̃)]`), computed in f64 on the
    /// dense bilinear system by repeated squaring.
    pub fn c_tilde(&self, dt: f64, len: usize) -> Result<Vec<C64>> {
        let (abar, _) = self.bilinear_full(dt)?;
        let c = complete(&self.c);
        let al = cpow(&abar, len);
        let n = c.len();
        Ok((0..n / 2)
            .map(|j| c[j] - (0..n).map(|i| c[i] * al[(i, j)]).sum::<C64>())
            .collect())
    }

    /// Recovers `C` from `C̃ = C(I − Ā^L)` (the step mode's need): solves `(I − Ā^L)ᵀ Cᵀ = C̃ᵀ` in f64.
    pub fn c_from_c_tilde(&self, c_tilde: &[C64], dt: f64, len: usize) -> Result<Vec<C64>> {
        let (abar, _) = self.bilinear_full(dt)?;
        let al = cpow(&abar, len);
        let n = al.nrows();
        let ct = complete(c_tilde);
        let m = Mat::from_fn(n, n, |i, j| {
            C64::new(if i == j { 1.0 } else { 0.0 }, 0.0) - al[(j, i)]
        });
        let rhs = Mat::from_fn(n, 1, |i, _| ct[i]);
        let x = csolve(&m, &rhs);
        Ok((0..n / 2).map(|i| x[(i, 0)]).collect())
    }

    /// The generating function `K̂(ω) = C̃ (I − Āω)⁻¹ B̄` by Cauchy sums and Woodbury (module docs).
    pub fn generating_function(&self, c_tilde: &[C64], dt: f64, omega: C64) -> C64 {
        let lam = complete(&self.lambda);
        let b = complete(&self.b);
        let c = complete(c_tilde);
        let p: Vec<Vec<C64>> = self.p.iter().map(|r| complete(r)).collect();
        let r = p.len();
        let one = C64::new(1.0, 0.0);
        let g = (one + omega) * (dt / 2.0);
        let d: Vec<C64> = lam.iter().map(|&l| one / ((one - omega) - g * l)).collect();
        let sum = |x: &dyn Fn(usize) -> C64, y: &dyn Fn(usize) -> C64| -> C64 {
            (0..lam.len()).map(|n| x(n) * d[n] * y(n)).sum()
        };
        let r_cb = sum(&|n| c[n], &|n| b[n]);
        if r == 0 {
            return r_cb * dt;
        }
        let r_cp: Vec<C64> = (0..r).map(|j| sum(&|n| c[n], &|n| p[j][n])).collect();
        let r_pb: Vec<C64> = (0..r)
            .map(|i| sum(&|n| p[i][n].conj(), &|n| b[n]))
            .collect();
        let cap: Vec<Vec<C64>> = (0..r)
            .map(|i| {
                (0..r)
                    .map(|j| {
                        let e = if i == j { one } else { C64::new(0.0, 0.0) };
                        e + g * sum(&|n| p[i][n].conj(), &|n| p[j][n])
                    })
                    .collect()
            })
            .collect();
        let x = small_solve(cap, r_pb);
        let corr: C64 = r_cp.iter().zip(&x).map(|(a, b)| a * b).sum();
        (r_cb - g * corr) * dt
    }

    /// The DPLR kernel from `C̃`: `K̂` at the `L` roots of unity by Cauchy + Woodbury, then irfft.
    pub fn kernel_from_c_tilde(&self, c_tilde: &[C64], dt: f64, len: usize) -> Result<Vec<f64>> {
        self.check()?;
        if c_tilde.len() != self.lambda.len() {
            return invalid("C̃ must have N/2 entries");
        }
        if !(dt > 0.0 && dt.is_finite()) {
            return invalid(format!("dt must be positive and finite, got {dt}"));
        }
        if len == 0 {
            return Ok(vec![]);
        }
        let bins = len / 2 + 1;
        let mut spec: Vec<C64> = (0..bins)
            .map(|k| {
                let theta = -2.0 * std::f64::consts::PI * k as f64 / len as f64;
                self.generating_function(c_tilde, dt, C64::from_polar(1.0, theta))
            })
            .collect();
        // K is real: the DC bin (and the Nyquist bin for even L) are real up to rounding.
        spec[0].im = 0.0;
        if len.is_multiple_of(2) {
            spec[bins - 1].im = 0.0;
        }
        let mut planner = RealFftPlanner::<f64>::new();
        let c2r = planner.plan_fft_inverse(len);
        let mut out = vec![0.0; len];
        c2r.process(&mut spec, &mut out)
            .map_err(|e| crate::MathError::Numerical(format!("inverse FFT failed: {e}")))?;
        Ok(out.into_iter().map(|x| x / len as f64).collect())
    }

    /// The DPLR kernel of this system (`C̃` computed from `C`, then Cauchy + Woodbury).
    pub fn kernel(&self, dt: f64, len: usize) -> Result<Vec<f64>> {
        let ct = self.c_tilde(dt, len)?;
        self.kernel_from_c_tilde(&ct, dt, len)
    }

    /// `H(s) = C(sI − A)⁻¹B` by Woodbury: `r_cb − r_cp (I + r_pp)⁻¹ r_pb` with `Dₙ = 1/(s − λₙ)`.
    pub fn transfer(&self, s: &[C64]) -> Result<Vec<C64>> {
        self.check()?;
        let lam = complete(&self.lambda);
        let b = complete(&self.b);
        let c = complete(&self.c);
        let p: Vec<Vec<C64>> = self.p.iter().map(|r| complete(r)).collect();
        let r = p.len();
        Ok(s.iter()
            .map(|&si| {
                let d: Vec<C64> = lam.iter().map(|&l| 1.0 / (si - l)).collect();
                let dot = |x: &[C64], y: &[C64], conj_x: bool| -> C64 {
                    (0..lam.len())
                        .map(|n| if conj_x { x[n].conj() } else { x[n] } * d[n] * y[n])
                        .sum()
                };
                let r_cb = dot(&c, &b, false);
                if r == 0 {
                    return r_cb;
                }
                let r_cp: Vec<C64> = (0..r).map(|j| dot(&c, &p[j], false)).collect();
                let r_pb: Vec<C64> = (0..r).map(|i| dot(&p[i], &b, true)).collect();
                let cap = (0..r)
                    .map(|i| {
                        (0..r)
                            .map(|j| {
                                C64::new(if i == j { 1.0 } else { 0.0 }, 0.0)
                                    + dot(&p[i], &p[j], true)
                            })
                            .collect()
                    })
                    .collect();
                let x = small_solve(cap, r_pb);
                r_cb - r_cp.iter().zip(&x).map(|(a, b)| a * b).sum::<C64>()
            })
            .collect())
    }
}
