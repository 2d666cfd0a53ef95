//! HiPPO online function approximation: run the HiPPO recurrence over a signal and reconstruct the
//! signal from the state with (scaled or translated) Legendre polynomials.
//!
//! ```text
//! LegS  (measure uniform on [0, t]):   c'(t) = (1/t)(A c + B f(t))
//!   bilinear at step k = 1 … L (t_k = k·Δ, the step in 1/t-time is 1/k):
//!   c_k = (I − A/(2k))⁻¹ [ (I + A/(2k)) c_{k−1} + (B/k) f_k ]
//!   f(s) ≈ Σₙ cₙ √(2n+1) Pₙ(2s/t − 1),  s ∈ [0, t]           (c₀ = running mean)
//!
//! LegT  (measure uniform on the window [t − θ, t]; A, B the halved S4 LegT):
//!   c'(t) = (2/θ)(A c + B f(t)),  bilinear with step Δ
//!   f(t − θ + yθ) ≈ Σₙ cₙ √(2n+1) Pₙ(2y − 1),  y ∈ [0, 1]
//! ```

use crate::hippo::{Measure, transition};
use crate::linalg::{RMat, legendre_all, solve};
use crate::{Result, invalid};
use faer::Mat;

fn bilinear_step_mats(a: &RMat, h: f64) -> (RMat, RMat) {
    let n = a.nrows();
    let minus = Mat::from_fn(n, n, |i, j| {
        (if i == j { 1.0 } else { 0.0 }) - h / 2.0 * a[(i, j)]
    });
    let plus = Mat::from_fn(n, n, |i, j| {
        (if i == j { 1.0 } else { 0.0 }) + h / 2.0 * a[(i, j)]
    });
    (minus, plus)
}

/// Runs the HiPPO-LegS recurrence over the samples `f[k−1] = f(k·Δ)`, `k = 1 … L`, with `n` states,
/// and returns every state `c_k` (L × N).
pub fn legs_states(f: &[f64], n: usize) -> Result<Vec<Vec<f64>>> {
    let (a, b) = transition(Measure::LegS, n)?;
    let mut c = vec![0.0; n];
    let mut out = Vec::with_capacity(f.len());
    for (idx, &fk) in f.iter().enumerate() {
        let k = (idx + 1) as f64;
        let (minus, plus) = bilinear_step_mats(&a, 1.0 / k);
        let rhs = Mat::from_fn(n, 1, |i, _| {
            (0..n).map(|j| plus[(i, j)] * c[j]).sum::<f64>() + b[i] / k * fk
        });
        let x = solve(&minus, &rhs);
        c = (0..n).map(|i| x[(i, 0)]).collect();
        out.push(c.clone());
    }
    Ok(out)
}

/// Reconstructs a signal on `[0, t]` from a LegS state: `f(s) ≈ Σ cₙ √(2n+1) Pₙ(2s/t − 1)` at the
/// points `s`.
pub fn legs_reconstruct(c: &[f64], t: f64, s: &[f64]) -> Vec<f64> {
    s.iter()
        .map(|&si| eval_legendre_series(c, 2.0 * si / t - 1.0))
        .collect()
}

/// Runs the HiPPO-LegT recurrence with window `theta` over samples `f[k−1] = f(k·dt)` and returns
/// every state (L × N).
pub fn legt_states(f: &[f64], n: usize, dt: f64, theta: f64) -> Result<Vec<Vec<f64>>> {
    if !(dt > 0.0 && theta > 0.0) {
        return invalid(format!(
            "dt and theta must be positive, got dt = {dt}, theta = {theta}"
        ));
    }
    let (a, b) = transition(Measure::LegT, n)?;
    let h = 2.0 * dt / theta;
    let (minus, plus) = bilinear_step_mats(&a, h);
    let abar = solve(&minus, &plus);
    let bcol = Mat::from_fn(n, 1, |i, _| h * b[i]);
    let bbar = solve(&minus, &bcol);
    let mut c = vec![0.0; n];
    let mut out = Vec::with_capacity(f.len());
    for &fk in f {
        c = (0..n)
            .map(|i| (0..n).map(|j| abar[(i, j)] * c[j]).sum::<f64>() + bbar[(i, 0)] * fk)
            .collect();
        out.push(c.clone());
    }
    Ok(out)
}

/// Reconstructs the window `[t − θ, t]` from a LegT state at the relative positions `y ∈ [0, 1]`
/// (`y = 1` is the present): `f(t − θ + yθ) ≈ Σ cₙ √(2n+1) Pₙ(2y − 1)`.
pub fn legt_reconstruct(c: &[f64], y: &[f64]) -> Vec<f64> {
    y.iter()
        .map(|&yi| eval_legendre_series(c, 2.0 * yi - 1.0))
        .collect()
}

fn eval_legendre_series(c: &[f64], x: f64) -> f64 {
    legendre_all(c.len(), x)
        .iter()
        .enumerate()
        .map(|(n, p)| c[n] * ((2 * n + 1) as f64).sqrt() * p)
        .sum()
}
