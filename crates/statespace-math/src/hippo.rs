//! HiPPO operators: the transitions `(A, B)` of the online projection of a signal onto a
//! polynomial or Fourier basis under a measure, and their low-rank corrections `P`.
//!
//! Sign convention `x' = A x + B u` (A stable). `n, k = 0 … N−1`.
//!
//! ```text
//! LegS  (scaled Legendre, HiPPO):
//!   A[n,k] = −√(2n+1)·√(2k+1)  (n > k),   −(n+1)  (n = k),   0  (n < k)
//!   B[n]   = √(2n+1)
//!   P[n]   = √(n + ½)                    A + PPᵀ = −½·I + skew
//!   (used with a 1/t time scale: c'(t) = (1/t)(A c + B f), see `approx`)
//!
//! LegT  (translated Legendre, halved "for timescale" as in the S4 code):
//!   A[n,k] = −½·√(2n+1)·√(2k+1)·((−1)^(n−k) if n < k else 1)
//!   B[n]   = ½·√(2n+1)
//!   P      = rank 2: 2^(−½)·√(2n+1) on the odd n, and on the even n   A + PPᵀ = skew
//!
//! LagT  (translated Laguerre):
//!   A = ½·I − tril(1)  (−½ on the diagonal, −1 below),  B = 1,  P = √½·1   A + PPᵀ = skew
//!
//! GLagT(α, β)  (generalized Laguerre; α = 0, β → 0 is LagT):
//!   A₀ = −(1+β)/2·I − strict_tril(1),  B₀[n] = binom(α+n, n)
//!   L[n] = √(Γ(n+α+1)/Γ(n+1)),  A = diag(L)⁻¹·A₀·diag(L),
//!   B[n] = B₀[n]/L[n] · Γ(1−α)^(−½) · β^((1−α)/2)
//!   (low-rank correction only for α = 0: P = √½·1, A + PPᵀ = −β/2·I + skew)
//!
//! FouT  (translated Fourier; S4 code "fout"):   d = (0, 0, 1, 0, 2, 0, 3, …) of length N−1
//!   B = (1, 0, √2, 0, √2, 0, …),  A = π(−diag(d, +1) + diag(d, −1)) − B·Bᵀ,  P = B,  A + PPᵀ = skew
//!
//! FouD  (diagonal Fourier; S4 code "foud"; essentially S4D-Lin):
//!   A = 2π(−diag(d, +1) + diag(d, −1)) − ½·I  (normal: eigenvalues −½ ± 2πik, k = 0 … N/2−1)
//!   B = (1, 0, √2, 0, √2, 0, …),  no correction needed (P = 0)
//! ```
//!
//! `LegS`, `LegT` and `FouT` keep a constant input stationary: `A e₀ + B = 0`.

use crate::linalg::{RMat, ln_gamma};
use crate::{Result, invalid};
use faer::Mat;
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// A HiPPO measure (basis and window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Scaled Legendre (window [0, t]).
    LegS,
    /// Translated Legendre (sliding window), halved as in the S4 code.
    LegT,
    /// Translated Laguerre (exponentially decaying measure).
    LagT,
    /// Generalized Laguerre with parameters α (> −1, < 1) and β (> 0).
    GLagT {
        /// Exponent of the measure's polynomial factor `x^α`.
        alpha: f64,
        /// Tilt / timescale of the measure.
        beta: f64,
    },
    /// Translated Fourier.
    FouT,
    /// Fourier with exponential decay (diagonal, normal).
    FouD,
}

impl Measure {
    /// The names accepted by [`FromStr`].
    pub const NAMES: [&'static str; 6] = ["legs", "legt", "lagt", "glagt", "fout", "foud"];
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::LegS => write!(f, "legs"),
            Measure::LegT => write!(f, "legt"),
            Measure::LagT => write!(f, "lagt"),
            Measure::GLagT { alpha, beta } => write!(f, "glagt(alpha={alpha}, beta={beta})"),
            Measure::FouT => write!(f, "fout"),
            Measure::FouD => write!(f, "foud"),
        }
    }
}

impl FromStr for Measure {
    type Err = String;
    /// Parses `legs|legt|lagt|glagt|fout|foud` (`glagt` with the S4 defaults α = 0, β = 0.01).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "legs" => Ok(Measure::LegS),
            "legt" => Ok(Measure::LegT),
            "lagt" => Ok(Measure::LagT),
            "glagt" => Ok(Measure::GLagT {
                alpha: 0.0,
                beta: 0.01,
            }),
            "fout" | "fourier" => Ok(Measure::FouT),
            "foud" | "fourier_diag" => Ok(Measure::FouD),
            other => Err(format!(
                "unknown measure '{other}' (expected one of {})",
                Measure::NAMES.join(", ")
            )),
        }
    }
}

/// The pattern `d = (0, 0, 1, 0, 2, 0, …)` (length N−1) that couples state pairs (2k, 2k+1) of the
/// Fourier measures: `d[2k] = k`, `d[2k+1] = 0`.
fn fourier_d(n: usize) -> Vec<f64> {
    (0..n.saturating_sub(1))
        .map(|j| {
            if j.is_multiple_of(2) {
                (j / 2) as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// `B = (1, 0, √2, 0, √2, 0, …)` of the Fourier measures.
fn fourier_b(n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| match j {
            0 => 1.0,
            j if j.is_multiple_of(2) => 2f64.sqrt(),
            _ => 0.0,
        })
        .collect()
}

fn check(measure: Measure, n: usize) -> Result<()> {
    if n == 0 {
        return invalid("state size N must be at least 1");
    }
    if matches!(measure, Measure::FouT | Measure::FouD) && !n.is_multiple_of(2) {
        return invalid(format!(
            "measure {measure} pairs states (cos, sin): N must be even, got {n}"
        ));
    }
    if let Measure::GLagT { alpha, beta } = measure {
        if !(alpha > -1.0 && alpha < 1.0) {
            return invalid(format!("glagt alpha must lie in (-1, 1), got {alpha}"));
        }
        if !(beta > 0.0 && beta.is_finite()) {
            return invalid(format!("glagt beta must be positive, got {beta}"));
        }
    }
    Ok(())
}

/// The HiPPO transition `(A, B)` of `measure` with state size `n` (see the module docs).
pub fn transition(measure: Measure, n: usize) -> Result<(RMat, Vec<f64>)> {
    check(measure, n)?;
    let r = |i: usize| ((2 * i + 1) as f64).sqrt();
    Ok(match measure {
        Measure::LegS => {
            let a = Mat::from_fn(n, n, |i, k| match i.cmp(&k) {
                std::cmp::Ordering::Greater => -r(i) * r(k),
                std::cmp::Ordering::Equal => -((i + 1) as f64),
                std::cmp::Ordering::Less => 0.0,
            });
            (a, (0..n).map(r).collect())
        }
        Measure::LegT => {
            let a = Mat::from_fn(n, n, |i, k| {
                let sign = if i < k && (k - i) % 2 == 1 { -1.0 } else { 1.0 };
                -0.5 * r(i) * r(k) * sign
            });
            (a, (0..n).map(|i| 0.5 * r(i)).collect())
        }
        Measure::LagT => {
            let a = Mat::from_fn(n, n, |i, k| match i.cmp(&k) {
                std::cmp::Ordering::Greater => -1.0,
                std::cmp::Ordering::Equal => -0.5,
                std::cmp::Ordering::Less => 0.0,
            });
            (a, vec![1.0; n])
        }
        Measure::GLagT { alpha, beta } => {
            let l: Vec<f64> = (0..n)
                .map(|i| {
                    (0.5 * (ln_gamma(i as f64 + alpha + 1.0) - ln_gamma(i as f64 + 1.0))).exp()
                })
                .collect();
            let a = Mat::from_fn(n, n, |i, k| {
                let a0 = match i.cmp(&k) {
                    std::cmp::Ordering::Greater => -1.0,
                    std::cmp::Ordering::Equal => -(1.0 + beta) / 2.0,
                    std::cmp::Ordering::Less => 0.0,
                };
                a0 * l[k] / l[i]
            });
            let scale = (-0.5 * ln_gamma(1.0 - alpha)).exp() * beta.powf((1.0 - alpha) / 2.0);
            let b = (0..n)
                .map(|i| {
                    // binom(α+i, i) = Γ(α+i+1) / (Γ(i+1) Γ(α+1))
                    let binom = (ln_gamma(alpha + i as f64 + 1.0)
                        - ln_gamma(i as f64 + 1.0)
                        - ln_gamma(alpha + 1.0))
                    .exp();
                    binom / l[i] * scale
                })
                .collect();
            (a, b)
        }
        Measure::FouT => {
            let d = fourier_d(n);
            let b = fourier_b(n);
            let a = Mat::from_fn(n, n, |i, k| {
                let rot = if k == i + 1 {
                    -PI * d[i]
                } else if i == k + 1 {
                    PI * d[k]
                } else {
                    0.0
                };
                rot - b[i] * b[k]
            });
            (a, b)
        }
        Measure::FouD => {
            let d = fourier_d(n);
            let a = Mat::from_fn(n, n, |i, k| {
                if k == i + 1 {
                    -2.0 * PI * d[i]
                } else if i == k + 1 {
                    2.0 * PI * d[k]
                } else if i == k {
                    -0.5
                } else {
                    0.0
                }
            });
            (a, fourier_b(n))
        }
    })
}

/// The low-rank correction `P` (rank × N) with `A + Σ_r P_r P_rᵀ` normal (−c·I + skew).
///
/// Rank 1 for LegS, LagT, GLagT(α = 0) and FouT; rank 2 for LegT; rank 0 (empty) for FouD, whose `A`
/// is already normal. GLagT with α ≠ 0 has no such correction (error).
pub fn low_rank(measure: Measure, n: usize) -> Result<Vec<Vec<f64>>> {
    check(measure, n)?;
    Ok(match measure {
        Measure::LegS => vec![(0..n).map(|i| (i as f64 + 0.5).sqrt()).collect()],
        Measure::LegT => {
            let s = std::f64::consts::FRAC_1_SQRT_2;
            let r = |i: usize| ((2 * i + 1) as f64).sqrt() * s;
            vec![
                (0..n)
                    .map(|i| if i % 2 == 1 { r(i) } else { 0.0 })
                    .collect(),
                (0..n)
                    .map(|i| if i.is_multiple_of(2) { r(i) } else { 0.0 })
                    .collect(),
            ]
        }
        Measure::LagT => vec![vec![std::f64::consts::FRAC_1_SQRT_2; n]],
        Measure::GLagT { alpha, .. } => {
            if alpha != 0.0 {
                return invalid(format!(
                    "glagt with alpha = {alpha} ≠ 0 has no symmetric low-rank correction to a normal matrix"
                ));
            }
            vec![vec![std::f64::consts::FRAC_1_SQRT_2; n]]
        }
        Measure::FouT => vec![fourier_b(n)],
        Measure::FouD => vec![],
    })
}

/// `A + Σ_r P_r P_rᵀ`: the normal part of the transition.
pub fn normal_part(a: &RMat, p: &[Vec<f64>]) -> RMat {
    let n = a.nrows();
    Mat::from_fn(n, n, |i, k| {
        a[(i, k)] + p.iter().map(|pr| pr[i] * pr[k]).sum::<f64>()
    })
}

/// The basis functions of the time-invariant LegS system ("How to Train Your HiPPO", Gu et al.
/// 2022): the impulse response `e^{tA}B` of `x' = Ax + Bu` with LegS `(A, B)` is
///
/// ```text
/// K_n(t) = √(2n+1) · e^{−t} · P_n(2e^{−t} − 1),   n = 0 … N−1
/// ```
///
/// Legendre polynomials in the exponentially warped time `e^{−t}`, weighted by the measure
/// `e^{−t}`: S4 with LegS projects the input history onto them, and the step Δ of a discretized
/// layer sets how many steps one unit of `t` spans — its memory length.
pub fn legs_basis(n: usize, t: f64) -> Vec<f64> {
    let x = (-t).exp();
    crate::linalg::legendre_all(n, 2.0 * x - 1.0)
        .into_iter()
        .enumerate()
        .map(|(k, p)| ((2 * k + 1) as f64).sqrt() * x * p)
        .collect()
}
