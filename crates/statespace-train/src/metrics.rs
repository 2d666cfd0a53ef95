//! What a run measures: the loss and score of a pass over a split.

use serde::Serialize;

/// Loss and score of a pass over a split.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Score {
    /// Mean loss.
    pub loss: f64,
    /// Accuracy (classification; per scored position for per-position tasks), or `None`.
    pub acc: Option<f64>,
}

impl Score {
    /// Higher is better: accuracy, or −loss for regression.
    pub fn key(&self) -> f64 {
        self.acc.unwrap_or(-self.loss)
    }
}
