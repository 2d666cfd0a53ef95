//! Small dense linear-algebra helpers in f64 on top of faer: the matrix exponential, linear solves,
//! matrix powers, norms, and the special functions the HiPPO operators need (log-Gamma, Legendre
//! polynomials).

use crate::{C64, Result, invalid};
use faer::Mat;
use faer::prelude::Solve;

/// Real dense matrix (column-major, faer).
pub type RMat = Mat<f64>;
/// Complex dense matrix (column-major, faer).
pub type CMat = Mat<C64>;

/// Builds a real matrix from rows (`rows[i][j]` = entry (i, j)); every row must have the same length.
pub fn rmat_from_rows(rows: &[Vec<f64>]) -> Result<RMat> {
    let n = rows.len();
    let m = rows.first().map_or(0, Vec::len);
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != m) {
        return invalid(format!("row {i} has {} entries, row 0 has {m}", r.len()));
    }
    Ok(Mat::from_fn(n, m, |i, j| rows[i][j]))
}

/// The rows of a real matrix, row-major.
pub fn rmat_to_rows(a: &RMat) -> Vec<Vec<f64>> {
    (0..a.nrows())
        .map(|i| (0..a.ncols()).map(|j| a[(i, j)]).collect())
        .collect()
}

/// The complex copy of a real matrix.
pub fn to_complex(a: &RMat) -> CMat {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| C64::new(a[(i, j)], 0.0))
}

/// Operator 1-norm (maximum absolute column sum).
pub fn norm1(a: &RMat) -> f64 {
    (0..a.ncols())
        .map(|j| (0..a.nrows()).map(|i| a[(i, j)].abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

/// Largest absolute entry of a complex matrix.
pub fn cmax_abs(a: &CMat) -> f64 {
    let mut m: f64 = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            m = m.max(a[(i, j)].norm());
        }
    }
    m
}

/// Spectral norm (largest singular value) of a real matrix.
pub fn norm2(a: &RMat) -> Result<f64> {
    let s = a
        .singular_values()
        .map_err(|e| crate::MathError::Numerical(format!("SVD failed: {e:?}")))?;
    Ok(s.into_iter().fold(0.0, f64::max))
}

/// Solves `A X = B` for real square `A` by LU with partial pivoting.
pub fn solve(a: &RMat, b: &RMat) -> RMat {
    a.partial_piv_lu().solve(b)
}

/// Solves `A X = B` for complex square `A` by LU with partial pivoting.
pub fn csolve(a: &CMat, b: &CMat) -> CMat {
    a.partial_piv_lu().solve(b)
}

/// `A^p` by repeated squaring (complex).
pub fn cpow(a: &CMat, mut p: usize) -> CMat {
    let n = a.nrows();
    let mut result = CMat::identity(n, n);
    let mut base = a.clone();
    while p > 0 {
        if p & 1 == 1 {
            result = &result * &base;
        }
        p >>= 1;
        if p > 0 {
            base = &base * &base;
        }
    }
    result
}

/// Matrix exponential `e^A` by scaling and squaring with a degree-18 Taylor polynomial.
///
/// ```text
/// e^A = (T₁₈(A / 2^s))^(2^s),   ‖A / 2^s‖₁ ≤ 1/2
/// ```
///
/// The truncation error of `T₁₈` at norm ½ is below `0.5^19 / 19! ≈ 2e-23`, far under f64 rounding;
/// the squarings amplify rounding by about `2^s`, as in every scaling-and-squaring method.
pub fn expm(a: &RMat) -> RMat {
    let n = a.nrows();
    let norm = norm1(a);
    let s = if norm > 0.5 {
        (norm / 0.5).log2().ceil() as i32
    } else {
        0
    };
    let scale = 0.5f64.powi(s);
    let x = Mat::from_fn(n, n, |i, j| a[(i, j)] * scale);
    // Horner: T = I + X(I + X/2(I + X/3(...)))
    let mut t = RMat::identity(n, n);
    for k in (1..=18).rev() {
        let xt = &x * &t;
        t = Mat::from_fn(n, n, |i, j| {
            (if i == j { 1.0 } else { 0.0 }) + xt[(i, j)] / k as f64
        });
    }
    for _ in 0..s {
        t = &t * &t;
    }
    t
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, 9 terms; relative error ~1e-15),
/// with the reflection formula for `x < 0.5`.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x)Γ(1−x) = π / sin(πx)
        let s = (std::f64::consts::PI * x).sin().abs();
        return std::f64::consts::PI.ln() - s.ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut acc = COEF[0];
    let t = x + G + 0.5;
    for (i, c) in COEF.iter().enumerate().skip(1) {
        acc += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + acc.ln()
}

/// Legendre polynomials `P_0(x) … P_{n−1}(x)` by the three-term recurrence
/// `(k+1) P_{k+1} = (2k+1) x P_k − k P_{k−1}`.
pub fn legendre_all(n: usize, x: f64) -> Vec<f64> {
    let mut p = Vec::with_capacity(n);
    if n == 0 {
        return p;
    }
    p.push(1.0);
    if n == 1 {
        return p;
    }
    p.push(x);
    for k in 1..n - 1 {
        let kf = k as f64;
        let next = ((2.0 * kf + 1.0) * x * p[k] - kf * p[k - 1]) / (kf + 1.0);
        p.push(next);
    }
    p
}

/// Largest absolute difference between two real matrices of the same shape.
pub fn max_abs_diff(a: &RMat, b: &RMat) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let mut m: f64 = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}
