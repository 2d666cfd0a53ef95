//! The memory of a discretized SSM, measured by a delay task ("How to Train Your HiPPO": the step
//! Δ is the timescale of what the state remembers).
//!
//! ```text
//! x_k = Ā x_{k−1} + B̄ u_k        (Ā, B̄) = bilinear(A, B, Δ)
//! u_k = (1/w) Σ_{j<w} ξ_{k−j},  ξ ~ N(0, 1) i.i.d.   (white noise averaged over w steps: a signal
//!                                                    band-limited to ≈ 1/w cycles per step)
//! R²(d) = 1 − min_c Σ_k (u_{k−d} − c·x_k)² / Σ_k u_{k−d}²
//!       = ‖Qᵀ y_d‖² / ‖y_d‖²      X = [x_k]_k = QR (thin),  y_d = (u_{k−d})_k
//! the delay task at delay d: the step Δ*(d) = argmax_Δ R²(d; Δ) that solves it best, and the
//! memory edge Δ_edge(d) = the largest Δ with R²(d; Δ) ≥ ½·max_Δ R²(d; Δ): d·Δ_edge is the memory
//! length in time units (the window θ of a translated measure)
//! ```
//!
//! R²(d) is the fraction of the input d steps back that the best linear readout of the state
//! recovers (the readout C a trained layer could learn, found by least squares). A system
//! remembers about c/Δ steps (c: its window or decay in time units), so the best step for a
//! delay d is Δ* ≈ c/d: the step sets the memory length. A translated measure (LegT, FouT)
//! remembers a window of fixed length in time; LegS (time-invariant, as S4 runs it) remembers
//! with the exponentially decaying weight of its warped basis.

use crate::discretize::dense_bilinear;
use crate::linalg::RMat;
use crate::{Result, invalid};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// R²(d) for every delay of `delays` (steps): `samples` states are regressed on after a burn-in
/// of the longest delay; the input is white noise (seed `seed`) averaged over `width` steps.
pub fn delay_recall(
    a: &RMat,
    b: &[f64],
    dt: f64,
    delays: &[usize],
    samples: usize,
    width: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let n = a.nrows();
    if n == 0 || samples < 2 * n {
        return invalid(format!(
            "the delay task needs a state and at least 2N = {} samples, got N = {n}, {samples}",
            2 * n
        ));
    }
    let (abar, bbar) = dense_bilinear(a, b, dt)?;
    let burn = delays.iter().copied().max().unwrap_or(0);
    let total = burn + samples;
    if width == 0 {
        return invalid("the input's averaging width must be at least 1 step");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let xi: Vec<f64> = (0..total + width)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let u: Vec<f64> = (0..total)
        .map(|k| xi[k..k + width].iter().sum::<f64>() / width as f64)
        .collect();
    // the states of the last `samples` steps, column j = state component j
    let mut cols = vec![vec![0.0; samples]; n];
    let mut x = vec![0.0; n];
    let mut next = vec![0.0; n];
    for (k, &uk) in u.iter().enumerate() {
        for i in 0..n {
            let mut s = bbar[i] * uk;
            for j in 0..n {
                s += abar[(i, j)] * x[j];
            }
            next[i] = s;
        }
        std::mem::swap(&mut x, &mut next);
        if k >= burn {
            for i in 0..n {
                cols[i][k - burn] = x[i];
            }
        }
    }
    // an orthonormal basis of the states' span: Gram–Schmidt twice (columns that are numerically
    // dependent, below 1e-10 of their norm after orthogonalization, are dropped)
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(n);
    for mut v in cols {
        let norm0 = dot(&v, &v).sqrt();
        if norm0 == 0.0 {
            continue;
        }
        for _ in 0..2 {
            for qj in &q {
                let p = dot(qj, &v);
                for (vi, qi) in v.iter_mut().zip(qj) {
                    *vi -= p * qi;
                }
            }
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 1e-10 * norm0 {
            v.iter_mut().for_each(|vi| *vi /= norm);
            q.push(v);
        }
    }
    Ok(delays
        .iter()
        .map(|&d| {
            let y = &u[burn - d..burn - d + samples];
            let yy = dot(y, y);
            let proj: f64 = q.iter().map(|qj| dot(qj, y).powi(2)).sum();
            proj / yy
        })
        .collect())
}

/// The step of `dts` with the largest R² (ties: the first) and that R², refined by a parabola
/// through the best point and its neighbours in log Δ (the grid's resolution otherwise).
pub fn best_step(dts: &[f64], r2: &[f64]) -> Option<(f64, f64)> {
    let (i, &best) = r2
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))?;
    if i == 0 || i + 1 == dts.len() {
        return Some((dts[i], best));
    }
    let (x0, x1, x2) = (dts[i - 1].ln(), dts[i].ln(), dts[i + 1].ln());
    let (y0, y1, y2) = (r2[i - 1], r2[i], r2[i + 1]);
    let den = (x0 - x1) * (x0 - x2) * (x1 - x2);
    let a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den;
    let b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den;
    if a >= 0.0 || !a.is_finite() {
        return Some((dts[i], best));
    }
    let x = (-b / (2.0 * a)).clamp(x0, x2);
    Some((x.exp(), best))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The memory edge of a delay: the largest step of the increasing `dts` at which R² is still at
/// least half its maximum over the grid (linear in log Δ between the two grid points around the
/// crossing). Past it the state no longer reaches d steps back: `d·Δ_edge` is the memory length in
/// time units, the window θ itself for a translated measure. `None` for an empty grid or a
/// maximum of 0.
pub fn memory_edge(dts: &[f64], r2: &[f64]) -> Option<f64> {
    let top = r2.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if top.is_nan() || top <= 0.0 {
        return None;
    }
    let half = 0.5 * top;
    let last = r2.iter().rposition(|&r| r >= half)?;
    if last + 1 == dts.len() {
        return Some(dts[last]);
    }
    let (x0, x1) = (dts[last].ln(), dts[last + 1].ln());
    let t = (r2[last] - half) / (r2[last] - r2[last + 1]);
    Some((x0 + t * (x1 - x0)).exp())
}
