//! Dropout (optionally tied: one mask value per (b, c), shared along L)

use super::{keep_copy, resize};
use crate::engine::float::Float;
use crate::engine::rng::{splitmix64, uniform01};
use rayon::prelude::*;

/// Inverted dropout with probability `p`; `tied` shares one mask value along the length.
#[derive(Debug, Clone)]
pub struct Dropout<T> {
    /// Drop probability.
    pub p: f64,
    /// One mask per (batch, channel) instead of per element.
    pub tied: bool,
    mask: Vec<T>,
    pub(crate) active: bool,
}

impl<T: Float> Dropout<T> {
    /// A dropout of probability `p`.
    pub fn new(p: f64, tied: bool) -> Self {
        Self {
            p,
            tied,
            mask: Vec::new(),
            active: false,
        }
    }

    /// `y = x·mask/(1−p)` in training (mask from `seed`). Inactive (evaluation, or p = 0) it
    /// leaves `y` alone and returns `false`: the output is `x` itself, and the caller uses it
    /// without a copy. `x` is `[rows, L]`.
    pub fn forward(&mut self, x: &[T], len: usize, train: bool, seed: u64, y: &mut Vec<T>) -> bool {
        self.active = train && self.p > 0.0;
        if !self.active {
            return false;
        }
        resize(y, x.len());
        resize(&mut self.mask, x.len());
        let keep = T::of(1.0 / (1.0 - self.p));
        let (p, tied) = (self.p, self.tied);
        self.mask
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(row, mr)| {
                let mut st = splitmix64(seed ^ splitmix64(row as u64));
                if tied {
                    let v = if uniform01(&mut st) < p {
                        T::zero()
                    } else {
                        keep
                    };
                    mr.iter_mut().for_each(|m| *m = v);
                } else {
                    for m in mr.iter_mut() {
                        *m = if uniform01(&mut st) < p {
                            T::zero()
                        } else {
                            keep
                        };
                    }
                }
            });
        y.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .zip(self.mask.par_chunks(4096))
            .for_each(|((yc, xc), mc)| {
                for ((yv, xv), mv) in yc.iter_mut().zip(xc).zip(mc) {
                    *yv = *xv * *mv;
                }
            });
        true
    }

    /// `dx = dy·mask/(1−p)` (or `dy` when the forward was inactive).
    pub fn backward(&self, dy: &[T], dx: &mut Vec<T>) {
        resize(dx, dy.len());
        if !self.active {
            keep_copy(dx, dy);
            return;
        }
        for ((d, g), m) in dx.iter_mut().zip(dy).zip(&self.mask) {
            *d = *g * *m;
        }
    }
}
