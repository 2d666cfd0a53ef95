//! Discretization of diagonal modes (S4D, S4-PTD, S5, S5-PTD), as `statespace-core`'s
//! `kernels/discretize.rs`:
//!
//! ```text
//! per mode A, step Δ:   z = log Ā,  w = B̄/B
//!   ZOH       z = ΔA,                           w = (e^{ΔA} − 1)/A
//!   bilinear  z = log((1 + ΔA/2)/(1 − ΔA/2)),   w = Δ/(1 − ΔA/2)
//! ```

use statespace_core::kernels::discretize::Disc;
use tch::Tensor;

/// `(z, w)` of complex modes `a` at real steps `dt` (broadcast against `a`).
pub fn discretize(a: &Tensor, dt: &Tensor, disc: Disc) -> (Tensor, Tensor) {
    match disc {
        Disc::Zoh => {
            let z = a * dt;
            let w = (z.exp() - 1.0) / a;
            (z, w)
        }
        Disc::Bilinear => {
            let h = a * dt / 2.0;
            let m = -&h + 1.0;
            let z = ((&h + 1.0) / &m).log();
            let w = dt / &m;
            (z, w)
        }
    }
}
