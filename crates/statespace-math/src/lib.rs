//! # statespace-math
//!
//! The initialization math and the f64 reference computations of the statespace library:
//! HiPPO operators, their normal-plus-low-rank (NPLR/DPLR) forms, the S4D diagonal inits,
//! discretizations and the convolution kernels they generate. Everything here is plain `f64`
//! (complex values are [`num_complex::Complex64`]); it is the ground truth the training engine
//! is tested against.
//!
//! Conventions used everywhere:
//! - continuous-time systems are `x' = A x + B u`, `y = C x` (A stable);
//! - **N = state size** (real dimension of the state); a conjugate-symmetric diagonal system keeps
//!   **N/2 complex modes** and its output is `2·Re` of the sum over them;
//! - a length-`L` convolution kernel is `K_l = C Ā^l B̄`, `l = 0..L`.
//!
//! Modules, one per concept:
//! - [`hippo`]: HiPPO transitions `(A, B)` and low-rank corrections `P`;
//! - [`dplr`]: the NPLR/DPLR decomposition `A = V(Λ − P̃P̃*)V*`;
//! - [`s4d`]: diagonal inits (S4D-LegS, -Inv, -Lin, -Real, -Quad, -Rand) and step sizes;
//! - [`discretize`]: ZOH, bilinear and DSS discretizations;
//! - [`kernel`]: dense Krylov, diagonal Vandermonde and DPLR Cauchy/Woodbury kernels, transfer functions;
//! - [`approx`]: HiPPO online function approximation (LegS, LegT) and reconstruction;
//! - [`delay`]: memory of a discretized SSM: how much of a delayed input its state still holds;
//! - [`linalg`]: the small dense helpers (matrix exponential, solves, special functions).

pub mod approx;
pub mod delay;
pub mod discretize;
pub mod dplr;
pub mod hippo;
pub mod kernel;
pub mod linalg;
pub mod ptd;
pub mod s4d;

pub use num_complex::Complex64 as C64;

/// Errors of the math core: invalid sizes or parameters, and numerical failures.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum MathError {
    /// A size or parameter is out of its domain (the message says which and why).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A numerical routine failed (e.g. an eigensolver did not converge).
    #[error("numerical failure: {0}")]
    Numerical(String),
}

/// Result type of the math core.
pub type Result<T> = std::result::Result<T, MathError>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(MathError::Invalid(msg.into()))
}
