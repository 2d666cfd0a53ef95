//! Pooling over L:  mean  y[b,c] = (1/L) Σ_l x[b,c,l];  last  y[b,c] = x[b,c,L−1]

use super::{resize, zeroed};
use crate::engine::float::Float;

/// Pooling of `[B, C, L]` to `[B, C]` (as `[B, C, 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Mean over the length.
    Mean,
    /// The last position.
    Last,
    /// No pooling: the decoder runs at every position.
    None,
}

/// `x [B, C, L] → y [B, C]`.
pub fn pool_forward<T: Float>(pool: Pool, x: &[T], rows: usize, len: usize, y: &mut Vec<T>) {
    pool_forward_masked(pool, x, rows, 1, len, &[], y);
}

/// `dy [B, C] → dx [B, C, L]`.
pub fn pool_backward<T: Float>(pool: Pool, dy: &[T], len: usize, dx: &mut Vec<T>) {
    pool_backward_masked(pool, dy, 1, len, &[], dx);
}

/// Valid length of batch element `b` (`lengths` empty: every element has the full `len`).
#[inline]
pub fn valid_len(lengths: &[usize], b: usize, len: usize) -> usize {
    lengths.get(b).map_or(len, |&n| n.min(len))
}

/// Pooling over the valid part of each sequence: `x [B, C, L] → y [B, C]`, row `r` belonging to
/// batch element `r / c`, whose first `lengths[r / c]` positions are valid (`lengths` empty: all).
///
/// ```text
/// mean  y[b,c] = (1/n_b) Σ_{l<n_b} x[b,c,l]        last  y[b,c] = x[b,c,n_b−1]
/// ```
pub fn pool_forward_masked<T: Float>(
    pool: Pool,
    x: &[T],
    rows: usize,
    c: usize,
    len: usize,
    lengths: &[usize],
    y: &mut Vec<T>,
) {
    resize(y, rows);
    for (r, yv) in y.iter_mut().enumerate() {
        let n = valid_len(lengths, r / c, len).max(1);
        let xr = &x[r * len..r * len + n];
        *yv = match pool {
            Pool::Mean => xr.iter().copied().sum::<T>() * T::of(1.0 / n as f64),
            Pool::Last => xr[n - 1],
            Pool::None => panic!("pool_forward with Pool::None"),
        };
    }
}

/// Backward of [`pool_forward_masked`]: `dy [B, C] → dx [B, C, L]` (zero at padded positions).
pub fn pool_backward_masked<T: Float>(
    pool: Pool,
    dy: &[T],
    c: usize,
    len: usize,
    lengths: &[usize],
    dx: &mut Vec<T>,
) {
    zeroed(dx, dy.len() * len);
    for (r, &g) in dy.iter().enumerate() {
        let n = valid_len(lengths, r / c, len).max(1);
        let dr = &mut dx[r * len..r * len + n];
        match pool {
            Pool::Mean => {
                let inv = T::of(1.0 / n as f64);
                dr.iter_mut().for_each(|d| *d = g * inv)
            }
            Pool::Last => dr[n - 1] = g,
            Pool::None => panic!("pool_backward with Pool::None"),
        }
    }
}
