//! Losses

use super::{resize, zeroed};
use crate::engine::float::Float;

/// Mean cross-entropy of `logits [B, K, L]` against `targets [B, L]` at the positions where
/// `targets != IGNORE`; writes `dlogits` (the gradient of the mean) and returns (loss, correct, counted).
pub fn cross_entropy<T: Float>(
    logits: &[T],
    targets: &[u32],
    batch: usize,
    k: usize,
    len: usize,
    dlogits: &mut Vec<T>,
) -> (f64, usize, usize) {
    zeroed(dlogits, logits.len());
    let counted = targets.iter().filter(|&&t| t != IGNORE).count();
    if counted == 0 {
        return (0.0, 0, 0);
    }
    let inv = 1.0 / counted as f64;
    let mut loss = 0.0;
    let mut correct = 0;
    for b in 0..batch {
        for l in 0..len {
            let t = targets[b * len + l];
            if t == IGNORE {
                continue;
            }
            let at = |j: usize| (b * k + j) * len + l;
            let mx = (0..k).map(|j| logits[at(j)].f64()).fold(f64::MIN, f64::max);
            let z: f64 = (0..k).map(|j| (logits[at(j)].f64() - mx).exp()).sum();
            let lse = mx + z.ln();
            loss += lse - logits[at(t as usize)].f64();
            let argmax = (0..k)
                .max_by(|&i, &j| logits[at(i)].f64().total_cmp(&logits[at(j)].f64()))
                .unwrap_or(0);
            correct += usize::from(argmax == t as usize);
            for j in 0..k {
                let p = (logits[at(j)].f64() - lse).exp();
                let onehot = if j == t as usize { 1.0 } else { 0.0 };
                dlogits[at(j)] = T::of((p - onehot) * inv);
            }
        }
    }
    (loss * inv, correct, counted)
}

/// Targets equal to this are ignored by [`cross_entropy`] (the value `statespace-data` marks
/// unscored positions with; statespace-train checks at compile time that the two agree).
pub const IGNORE: u32 = u32::MAX;

/// Mean squared error of `pred` against `target` (same length); writes `dpred`, returns the loss.
pub fn mse<T: Float>(pred: &[T], target: &[T], dpred: &mut Vec<T>) -> f64 {
    resize(dpred, pred.len());
    let n = pred.len() as f64;
    let mut loss = 0.0;
    for ((d, p), t) in dpred.iter_mut().zip(pred).zip(target) {
        let e = p.f64() - t.f64();
        loss += e * e;
        *d = T::of(2.0 * e / n);
    }
    loss / n
}
