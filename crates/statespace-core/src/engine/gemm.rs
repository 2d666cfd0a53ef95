//! Matrix products on faer's kernels.
//!
//! ```text
//! C [m, n]  =  op(A) [m, k] · op(B) [k, n]        (or C += … with accumulate)
//! op(X) = X as stored, or Xᵀ (A stored [k, m], B stored [n, k])
//! ```
//! Measured here (one core, f32): faer 137–155 GFLOP/s on 64×64×128 … 256³ where `gemm` 0.19
//! gives 29–47 — so the engine's products go through faer.

use crate::engine::float::{Float, MatIn, MatOut};

/// A row-major matrix product `C (+)= op(A)·op(B)`, described by name:
/// `Gemm::new(m, n, k).transpose_b().accumulate().run(c, a, b)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of `C` and of `op(A)`.
    pub m: usize,
    /// Columns of `C` and of `op(B)`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// `A` is stored transposed, `[k, m]`.
    pub a_transposed: bool,
    /// `B` is stored transposed, `[n, k]`.
    pub b_transposed: bool,
    /// `C += op(A)·op(B)` instead of `C = op(A)·op(B)`.
    pub accumulate: bool,
    /// Threads for large products (the product runs on the calling thread below 64³).
    pub threads: usize,
}

impl Gemm {
    /// `C [m, n] = A [m, k] · B [k, n]` on one thread.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            a_transposed: false,
            b_transposed: false,
            accumulate: false,
            threads: 1,
        }
    }

    /// `A` is stored `[k, m]` (the product uses `Aᵀ`).
    pub fn transpose_a(self) -> Self {
        Self {
            a_transposed: true,
            ..self
        }
    }

    /// `B` is stored `[n, k]` (the product uses `Bᵀ`).
    pub fn transpose_b(self) -> Self {
        Self {
            b_transposed: true,
            ..self
        }
    }

    /// Adds to `C` instead of overwriting it.
    pub fn accumulate(self) -> Self {
        Self {
            accumulate: true,
            ..self
        }
    }

    /// Runs large products on `threads` rayon threads.
    pub fn threads(self, threads: usize) -> Self {
        Self { threads, ..self }
    }

    /// Computes the product into `c`. Panics if a slice is shorter than its shape.
    pub fn run<T: Float>(self, c: &mut [T], a: &[T], b: &[T]) {
        let Gemm {
            m,
            n,
            k,
            a_transposed: ta,
            b_transposed: tb,
            accumulate,
            threads,
        } = self;
        assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                c[..m * n].iter_mut().for_each(|x| *x = T::zero());
            }
            return;
        }
        let par = if m * n * k >= 64 * 64 * 64 {
            threads
        } else {
            1
        };
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        T::faer_matmul(
            MatOut {
                data: c,
                rows: m,
                cols: n,
            },
            MatIn {
                data: a,
                rows: ar,
                cols: ac,
                t: ta,
            },
            MatIn {
                data: b,
                rows: br,
                cols: bc,
                t: tb,
            },
            accumulate,
            par,
        );
    }
}
