//! GLU over channels:  x [B, 2C, L] → y = a σ(g),  a = x[:, :C], g = x[:, C:]

use super::resize;
use crate::engine::float::Float;
use rayon::prelude::*;

/// Gated linear unit over the channel dimension (first half gated by the sigmoid of the second).
#[derive(Debug, Clone, Default)]
pub struct Glu<T> {
    dims: (usize, usize, usize),
    _t: std::marker::PhantomData<T>,
}

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

impl<T: Float> Glu<T> {
    /// An empty GLU.
    pub fn new() -> Self {
        Self {
            dims: (0, 0, 0),
            _t: std::marker::PhantomData,
        }
    }

    /// `x [B, 2C, L] → y [B, C, L]` (the caller keeps `x` for the backward).
    pub fn forward(&mut self, x: &[T], batch: usize, c: usize, len: usize, y: &mut Vec<T>) {
        self.dims = (batch, c, len);
        resize(y, batch * c * len);
        y.par_chunks_mut(c * len)
            .zip(x.par_chunks(2 * c * len))
            .for_each(|(yb, xb)| {
                let (a, g) = xb.split_at(c * len);
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for ((yv, &av), &gv) in yb.iter_mut().zip(a).zip(g) {
                            *yv = av * sigmoid(gv);
                        }
                    },
                )
            });
    }

    /// `da = dy σ(g)`, `dg = dy a σ(g)(1 − σ(g))`, `x = [a, g]` the input of the forward.
    pub fn backward(&self, x: &[T], dy: &[T], dx: &mut Vec<T>) {
        let (batch, c, len) = self.dims;
        resize(dx, batch * 2 * c * len);
        dx.par_chunks_mut(2 * c * len)
            .zip(dy.par_chunks(c * len))
            .zip(x.par_chunks(2 * c * len))
            .for_each(|((dxb, dyb), xb)| {
                let (a, g) = xb.split_at(c * len);
                let (da, dg) = dxb.split_at_mut(c * len);
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for i in 0..c * len {
                            let s = sigmoid(g[i]);
                            da[i] = dyb[i] * s;
                            dg[i] = dyb[i] * a[i] * s * (T::one() - s);
                        }
                    },
                )
            });
    }

    /// The map on single vectors, for recurrent steps: `x [B, 2C] → y [B, C]`.
    pub fn step(&self, x: &[T], c: usize, y: &mut [T]) {
        crate::engine::simd::with_isa(
            #[inline(always)]
            || {
                for (xr, yr) in x.chunks_exact(2 * c).zip(y.chunks_exact_mut(c)) {
                    let (a, g) = xr.split_at(c);
                    for ((yv, &av), &gv) in yr.iter_mut().zip(a).zip(g) {
                        *yv = av * sigmoid(gv);
                    }
                }
            },
        )
    }
}
