//! GELU (exact):  y = x Φ(x),  y' = Φ(x) + x φ(x)

use super::resize;
use crate::engine::float::Float;
use rayon::prelude::*;

/// The exact (erf) GELU.
#[derive(Debug, Clone, Default)]
pub struct Gelu<T> {
    _t: std::marker::PhantomData<T>,
}

impl<T: Float> Gelu<T> {
    /// An empty GELU.
    pub fn new() -> Self {
        Self {
            _t: std::marker::PhantomData,
        }
    }

    /// `y = x Φ(x)` elementwise (the caller keeps `x` for the backward).
    pub fn forward(&mut self, x: &[T], y: &mut Vec<T>) {
        resize(y, x.len());
        let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        y.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(yc, xc)| {
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for (yv, &xv) in yc.iter_mut().zip(xc) {
                            *yv = half * xv * (T::one() + (xv * r2).erf());
                        }
                    },
                )
            });
    }

    /// The D skip and GELU in one pass: per row `r` of `c [B·H, L]` (channel `r mod h`)
    /// `c ← c + D[ch]·u`, `y = c Φ(c)` — `c` keeps the GELU's input for the backward.
    pub fn forward_skip(
        &mut self,
        c: &mut [T],
        u: &[T],
        d: &[T],
        h: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        assert!(
            u.len() == c.len() && d.len() >= h && len > 0 && c.len().is_multiple_of(len),
            "Gelu::forward_skip: c, u [B·{h}, {len}], D [{h}]; got {}, {}, {}",
            c.len(),
            u.len(),
            d.len()
        );
        resize(y, c.len());
        let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        y.par_chunks_mut(len)
            .zip(c.par_chunks_mut(len))
            .zip(u.par_chunks(len))
            .enumerate()
            .for_each(|(row, ((yr, cr), ur))| {
                let dv = d[row % h];
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for ((yv, cv), &uv) in yr.iter_mut().zip(cr.iter_mut()).zip(ur) {
                            let x = *cv + dv * uv;
                            *cv = x;
                            *yv = half * x * (T::one() + (x * r2).erf());
                        }
                    },
                )
            });
    }

    /// `dx = dy (Φ(x) + x φ(x))`, `x` the input of the forward.
    pub fn backward(&self, x: &[T], dy: &[T], dx: &mut Vec<T>) {
        resize(dx, dy.len());
        let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        let inv_sqrt_2pi = T::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
        dx.par_chunks_mut(4096)
            .zip(dy.par_chunks(4096))
            .zip(x.par_chunks(4096))
            .for_each(|((dxc, dyc), xc)| {
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for ((d, &g), &x) in dxc.iter_mut().zip(dyc).zip(xc) {
                            let cdf = half * (T::one() + (x * r2).erf());
                            let pdf = inv_sqrt_2pi * (-half * x * x).fast_exp();
                            *d = g * (cdf + x * pdf);
                        }
                    },
                )
            });
    }

    /// `x ← x Φ(x)` in place on a few values (recurrent steps: no threads, nothing kept).
    pub fn step(&self, x: &mut [T]) {
        let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
        crate::engine::simd::with_isa(
            #[inline(always)]
            || {
                for v in x.iter_mut() {
                    *v = half * *v * (T::one() + (*v * r2).erf());
                }
            },
        )
    }
}
