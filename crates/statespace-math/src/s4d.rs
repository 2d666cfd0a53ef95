//! S4D diagonal initializations (Gu et al. 2022, "On the Parameterization and Initialization of
//! Diagonal State Space Models") and the step-size initialization.
//!
//! `N` is the state size; the `N/2` kept modes are `n = 0 … N/2−1` (conjugates implied):
//!
//! ```text
//! S4D-LegS   λ = eigenvalues of the LegS normal part  A + PPᵀ = −½ + iω  (Im λ > 0), B̃ = V*B
//! S4D-Inv    λ = −½ + i·(N/π)·(N/(2n+1) − 1)
//! S4D-Lin    λ = −½ + i·πn
//! S4D-Quad   λ = −½ + i·(1+2n)²/π
//! S4D-Real   λ = −(n+1)
//! S4D-Rand   λ = −½ + i·exp(z), z ~ N(0, 1)
//! step       log Δ ~ U[log Δ_min, log Δ_max]  (per channel)
//! ```

use crate::dplr::Dplr;
use crate::hippo::Measure;
use crate::{C64, Result, invalid};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// A diagonal initialization of `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiagInit {
    /// Diagonal part of the LegS NPLR form (S4D-LegS).
    LegS,
    /// S4D-Inv: imaginary parts following the inverse law.
    Inv,
    /// S4D-Lin: imaginary parts πn.
    Lin,
    /// S4D-Quad: imaginary parts (1+2n)²/π.
    Quad,
    /// S4D-Real: real eigenvalues −(n+1).
    Real,
    /// S4D-Rand: imaginary parts exp(N(0,1)).
    Rand,
}

impl DiagInit {
    /// The names accepted by [`FromStr`].
    pub const NAMES: [&'static str; 6] = ["legs", "inv", "lin", "quad", "real", "rand"];
}

impl fmt::Display for DiagInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiagInit::LegS => "legs",
            DiagInit::Inv => "inv",
            DiagInit::Lin => "lin",
            DiagInit::Quad => "quad",
            DiagInit::Real => "real",
            DiagInit::Rand => "rand",
        })
    }
}

impl FromStr for DiagInit {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "legs" => Ok(DiagInit::LegS),
            "inv" => Ok(DiagInit::Inv),
            "lin" => Ok(DiagInit::Lin),
            "quad" => Ok(DiagInit::Quad),
            "real" => Ok(DiagInit::Real),
            "rand" => Ok(DiagInit::Rand),
            o => Err(format!(
                "unknown init '{o}' (expected one of {})",
                DiagInit::NAMES.join(", ")
            )),
        }
    }
}

/// The `N/2` eigenvalues of the diagonal init `kind` for state size `n` (even, ≥ 2).
/// `rng` is used by `rand` only.
pub fn init_a(kind: DiagInit, n: usize, rng: &mut impl Rng) -> Result<Vec<C64>> {
    if n < 2 || !n.is_multiple_of(2) {
        return invalid(format!(
            "state size N must be even and ≥ 2 (N/2 complex modes), got {n}"
        ));
    }
    let h = n / 2;
    let nf = n as f64;
    Ok(match kind {
        DiagInit::LegS => Dplr::from_measure(Measure::LegS, n)?.lambda,
        DiagInit::Inv => (0..h)
            .map(|k| C64::new(-0.5, nf / PI * (nf / (2 * k + 1) as f64 - 1.0)))
            .collect(),
        DiagInit::Lin => (0..h).map(|k| C64::new(-0.5, PI * k as f64)).collect(),
        DiagInit::Quad => (0..h)
            .map(|k| C64::new(-0.5, ((1 + 2 * k) as f64).powi(2) / PI))
            .collect(),
        DiagInit::Real => (0..h).map(|k| C64::new(-((k + 1) as f64), 0.0)).collect(),
        DiagInit::Rand => (0..h)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                C64::new(-0.5, z.exp())
            })
            .collect(),
    })
}

/// `count` step sizes with `log Δ ~ U[log dt_min, log dt_max]`.
pub fn log_uniform_dt(
    count: usize,
    dt_min: f64,
    dt_max: f64,
    rng: &mut impl Rng,
) -> Result<Vec<f64>> {
    if !(dt_min > 0.0 && dt_max >= dt_min && dt_max.is_finite()) {
        return invalid(format!(
            "need 0 < dt_min ≤ dt_max < ∞, got dt_min = {dt_min}, dt_max = {dt_max}"
        ));
    }
    let (lo, hi) = (dt_min.ln(), dt_max.ln());
    Ok((0..count)
        .map(|_| (lo + (hi - lo) * rng.random::<f64>()).exp())
        .collect())
}

/// `count` complex normal numbers with `E|z|² = 1` (real and imaginary parts N(0, ½)).
pub fn complex_normal(count: usize, rng: &mut impl Rng) -> Vec<C64> {
    let s = std::f64::consts::FRAC_1_SQRT_2;
    (0..count)
        .map(|_| {
            let re: f64 = StandardNormal.sample(rng);
            let im: f64 = StandardNormal.sample(rng);
            C64::new(re * s, im * s)
        })
        .collect()
}
