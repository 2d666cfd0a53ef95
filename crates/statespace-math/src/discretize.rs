//! Discretizations of `x' = A x + B u` with step `Δ`, giving `x_k = Ā x_{k−1} + B̄ u_k`.
//!
//! ```text
//! ZOH       Ā = e^{ΔA},                  B̄ = A⁻¹(e^{ΔA} − I) B = ∫₀^Δ e^{sA} ds · B
//! bilinear  Ā = (I − Δ/2·A)⁻¹(I + Δ/2·A),  B̄ = (I − Δ/2·A)⁻¹ Δ B
//! DSS       (diagonal only; the S4 code's "dss", from DSS-exp's row softmax)
//!           Ā = e^{Δλ},  B̄ = (e^{Δλ} − 1) / (λ (e^{LΔλ} − 1)) · B
//!           i.e. ZOH with each mode divided by (e^{LΔλ} − 1), so that Σ_{l<L} Ā^l B̄ = B/λ for
//!           every Δ and L: the kernel's sum is −H(0), independent of the step.
//! ```
//!
//! For DSS with `Re λ > 0` the powers `e^{lΔλ}` are evaluated as `e^{(l−L)Δλ}/(1 − e^{−LΔλ})` so that
//! nothing overflows (the purpose of DSS is to allow growing modes).

use crate::linalg::{RMat, expm, solve};
use crate::{C64, Result, invalid};
use faer::Mat;
use std::fmt;
use std::str::FromStr;

/// A discretization rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discretization {
    /// Zero-order hold (exact for piecewise-constant input).
    Zoh,
    /// Bilinear (Tustin / trapezoid).
    Bilinear,
    /// DSS-exp normalization (diagonal systems only).
    Dss,
}

impl Discretization {
    /// The names accepted by [`FromStr`].
    pub const NAMES: [&'static str; 3] = ["zoh", "bilinear", "dss"];
}

impl fmt::Display for Discretization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Discretization::Zoh => "zoh",
            Discretization::Bilinear => "bilinear",
            Discretization::Dss => "dss",
        })
    }
}

impl FromStr for Discretization {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "zoh" => Ok(Discretization::Zoh),
            "bilinear" | "tustin" => Ok(Discretization::Bilinear),
            "dss" => Ok(Discretization::Dss),
            o => Err(format!(
                "unknown discretization '{o}' (expected zoh, bilinear or dss)"
            )),
        }
    }
}

/// One discretized diagonal mode: `x_k = abar·x_{k−1} + bbar·B·u_k`, and how to take powers of `abar`.
#[derive(Debug, Clone, Copy)]
pub struct DiagMode {
    /// `Ā` of the mode.
    pub abar: C64,
    /// The factor multiplying `B` to give `B̄`.
    pub bbar: C64,
    /// `log Ā` (so `Ā^l = exp(l·log Ā)` without accumulating rounding).
    pub log_abar: C64,
}

impl DiagMode {
    /// `Ā^l · B̄/B`, evaluated in closed form (no repeated multiplication), stable for DSS growth.
    pub fn power_times_bbar(&self, l: usize, dss_len: Option<usize>) -> C64 {
        match dss_len {
            Some(len) if self.log_abar.re > 0.0 => {
                // e^{lΔλ}(e^{Δλ}−1)/(λ(e^{LΔλ}−1)) = e^{(l−L)Δλ}·(e^{Δλ}−1)/(λ(1−e^{−LΔλ}))
                // here bbar stores (e^{Δλ}−1)/(λ(1−e^{−LΔλ})).
                (self.log_abar * (l as f64 - len as f64)).exp() * self.bbar
            }
            _ => (self.log_abar * l as f64).exp() * self.bbar,
        }
    }
}

/// `(e^z − 1)/z`, accurate near `z = 0`.
pub fn expm1_over(z: C64) -> C64 {
    if z.norm() < 1e-5 {
        C64::new(1.0, 0.0) + z / 2.0 + z * z / 6.0
    } else {
        (z.exp() - 1.0) / z
    }
}

/// Discretizes one diagonal mode `λ` with step `dt`. `len` is the kernel length (used by DSS only).
pub fn diagonal(lambda: C64, dt: f64, disc: Discretization, len: usize) -> Result<DiagMode> {
    if !(dt > 0.0 && dt.is_finite()) {
        return invalid(format!("dt must be positive and finite, got {dt}"));
    }
    let dl = lambda * dt;
    Ok(match disc {
        Discretization::Zoh => DiagMode {
            abar: dl.exp(),
            // (e^{Δλ} − 1)/λ = Δ·(e^{Δλ} − 1)/(Δλ)
            bbar: expm1_over(dl) * dt,
            log_abar: dl,
        },
        Discretization::Bilinear => {
            let one = C64::new(1.0, 0.0);
            let abar = (one + dl / 2.0) / (one - dl / 2.0);
            DiagMode {
                abar,
                bbar: dt / (one - dl / 2.0),
                log_abar: abar.ln(),
            }
        }
        Discretization::Dss => {
            if len == 0 {
                return invalid("the DSS discretization needs a kernel length L ≥ 1");
            }
            let zoh = expm1_over(dl) * dt; // (e^{Δλ}−1)/λ
            let big = dl * len as f64;
            let bbar = if dl.re > 0.0 {
                zoh / (C64::new(1.0, 0.0) - (-big).exp())
            } else {
                // (e^{LΔλ} − 1) = LΔλ·expm1_over(LΔλ), accurate for small LΔλ
                zoh / (big * expm1_over(big))
            };
            DiagMode {
                abar: dl.exp(),
                bbar,
                log_abar: dl,
            }
        }
    })
}

/// ZOH of a dense real system: `(Ā, B̄)` from `exp([[A, B], [0, 0]]·Δ) = [[Ā, B̄], [0, 1]]`.
pub fn dense_zoh(a: &RMat, b: &[f64], dt: f64) -> Result<(RMat, Vec<f64>)> {
    let n = a.nrows();
    check_dense(a, b, dt)?;
    let aug = Mat::from_fn(n + 1, n + 1, |i, j| {
        if i < n && j < n {
            a[(i, j)] * dt
        } else if i < n && j == n {
            b[i] * dt
        } else {
            0.0
        }
    });
    let e = expm(&aug);
    let abar = Mat::from_fn(n, n, |i, j| e[(i, j)]);
    let bbar = (0..n).map(|i| e[(i, n)]).collect();
    Ok((abar, bbar))
}

/// Bilinear discretization of a dense real system.
pub fn dense_bilinear(a: &RMat, b: &[f64], dt: f64) -> Result<(RMat, Vec<f64>)> {
    let n = a.nrows();
    check_dense(a, b, dt)?;
    let minus = Mat::from_fn(n, n, |i, j| {
        (if i == j { 1.0 } else { 0.0 }) - dt / 2.0 * a[(i, j)]
    });
    let plus = Mat::from_fn(n, n, |i, j| {
        (if i == j { 1.0 } else { 0.0 }) + dt / 2.0 * a[(i, j)]
    });
    let abar = solve(&minus, &plus);
    let bcol = Mat::from_fn(n, 1, |i, _| dt * b[i]);
    let bbar = solve(&minus, &bcol);
    Ok((abar, (0..n).map(|i| bbar[(i, 0)]).collect()))
}

/// Discretizes a dense real system with `disc` (ZOH or bilinear; DSS is diagonal-only).
pub fn dense(a: &RMat, b: &[f64], dt: f64, disc: Discretization) -> Result<(RMat, Vec<f64>)> {
    match disc {
        Discretization::Zoh => dense_zoh(a, b, dt),
        Discretization::Bilinear => dense_bilinear(a, b, dt),
        Discretization::Dss => invalid("the dss discretization applies to diagonal systems only"),
    }
}

fn check_dense(a: &RMat, b: &[f64], dt: f64) -> Result<()> {
    if a.nrows() != a.ncols() || b.len() != a.nrows() {
        return invalid(format!(
            "A is {}×{} and B has length {}: A must be N×N and B of length N",
            a.nrows(),
            a.ncols(),
            b.len()
        ));
    }
    if !(dt > 0.0 && dt.is_finite()) {
        return invalid(format!("dt must be positive and finite, got {dt}"));
    }
    Ok(())
}
