//! Discretization of diagonal modes, shared by S4D, S4-PTD, S5 and S5-PTD (and S4's clamp).
//!
//! ```text
//! per mode A (Re A = −max(exp(log_re), 1e-4)), step Δ:   z = log Ā,  w = B̄/B
//!   ZOH       z = ΔA,                           w = (e^{ΔA} − 1)/A
//!   bilinear  z = log((1 + ΔA/2)/(1 − ΔA/2)),   w = Δ/(1 − ΔA/2)
//! with ∂z/∂A, ∂z/∂Δ, ∂w/∂A, ∂w/∂Δ for the backward passes
//! ```

use num_complex::Complex64 as C64;
use serde::{Deserialize, Serialize};

/// Discretization of the diagonal system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disc {
    /// Zero-order hold.
    Zoh,
    /// Bilinear.
    Bilinear,
}

/// Smallest magnitude of `Re A` (the clamp of every diagonal parameterization: S4D, S4-PTD, S4's Λ,
/// S5's Λ): `Re A = −max(exp(log_a_real), MIN_NEG_REAL)`.
pub const MIN_NEG_REAL: f64 = 1e-4;

/// Per-mode discretization and its derivatives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// The continuous mode A.
    pub a: C64,
    /// The step Δ.
    pub dt: f64,
    /// `z = log Ā`.
    pub z: C64,
    /// `w = B̄/B`.
    pub w: C64,
    /// ∂z/∂A.
    pub dz_da: C64,
    /// ∂z/∂Δ.
    pub dz_ddt: C64,
    /// ∂w/∂A.
    pub dw_da: C64,
    /// ∂w/∂Δ.
    pub dw_ddt: C64,
    /// `Re A` sits at the clamp `−MIN_NEG_REAL` (no gradient reaches `log_a_real`).
    pub clamped: bool,
}

/// One mode `a` discretized at step `dt`, with the derivatives of log Ā and B̄/B.
pub fn discretize(a: C64, dt: f64, disc: Disc, clamped: bool) -> Mode {
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

/// `Re A = −max(exp(log_re), MIN_NEG_REAL)` and whether the clamp is active.
#[inline]
pub fn clamped_real(log_re: f64) -> (f64, bool) {
    let e = log_re.exp();
    (-e.max(MIN_NEG_REAL), e < MIN_NEG_REAL)
}
