//! Losses and scores of a model on a split: the training loss of a batch and evaluation.

use crate::metrics::Score;
use statespace_core::engine::layers;
use statespace_core::model::{Input, Model};
use statespace_data::{Batch, InputSpec, SeqTask, Split, TargetSpec};

/// Forward + loss of one batch; leaves `dout` = ∂loss/∂output. Returns (loss, correct, counted).
pub fn batch_loss(
    model: &mut Model<f32>,
    task: &dyn SeqTask,
    batch: &Batch,
    n: usize,
    train: bool,
    seed: u64,
    dout: &mut Vec<f32>,
) -> (f64, usize, usize) {
    let spec = task.spec();
    let len = if batch.len > 0 { batch.len } else { spec.len };
    let input = match spec.input {
        InputSpec::Real { .. } => Input::Real(&batch.real),
        InputSpec::Tokens { .. } => Input::Tokens(&batch.tokens),
    };
    let k = model.io.d_output;
    model.set_lengths(&batch.lengths);
    let out = model.forward(input, n, len, train, seed);
    match spec.target {
        TargetSpec::Class { .. } => layers::cross_entropy(out, &batch.labels, n, k, 1, dout),
        TargetSpec::ClassPerPosition { .. } => {
            layers::cross_entropy(out, &batch.labels, n, k, len, dout)
        }
        TargetSpec::Regression { .. } => (layers::mse(out, &batch.targets, dout), 0, n),
    }
}

/// Evaluates `split` in evaluation mode.
pub fn evaluate(
    model: &mut Model<f32>,
    task: &dyn SeqTask,
    split: Split,
    batch_size: usize,
) -> Result<Score, String> {
    evaluate_first(model, task, split, batch_size, None)
}

/// Evaluates the first `limit` examples of `split` (all for `None`) in evaluation mode.
pub fn evaluate_first(
    model: &mut Model<f32>,
    task: &dyn SeqTask,
    split: Split,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<Score, String> {
    let mut dout = Vec::new();
    evaluate_with(task, split, batch_size, limit, &mut |batch, n| {
        Ok(batch_loss(model, task, batch, n, false, 0, &mut dout))
    })
}

/// The evaluation-mode `(loss, correct, counted)` of a batch of `n` examples on some engine.
pub type BatchScore<'a> = dyn FnMut(&Batch, usize) -> Result<(f64, usize, usize), String> + 'a;

/// Evaluates the first `limit` examples of `split` (all for `None`) with `loss(batch, n)`, the
/// evaluation-mode `(loss, correct, counted)` of a batch of `n` examples on any engine.
pub fn evaluate_with(
    task: &dyn SeqTask,
    split: Split,
    batch_size: usize,
    limit: Option<usize>,
    loss_of: &mut BatchScore<'_>,
) -> Result<Score, String> {
    let size = task.size(split).min(limit.unwrap_or(usize::MAX));
    if size == 0 {
        return Err(format!(
            "the {} split is empty: there is nothing to score",
            split.name()
        ));
    }
    let mut batch = Batch::default();
    let (mut loss, mut correct, mut counted, mut weight) = (0.0, 0usize, 0usize, 0usize);
    let classify = !matches!(task.spec().target, TargetSpec::Regression { .. });
    for start in (0..size).step_by(batch_size) {
        let idx: Vec<usize> = (start..(start + batch_size).min(size)).collect();
        task.fill(split, &idx, &mut batch)
            .map_err(|e| e.to_string())?;
        batch.trim(&task.spec(), TRIM_MULTIPLE);
        let (l, c, n) = loss_of(&batch, idx.len())?;
        if !l.is_finite() {
            return Err(format!(
                "the {} loss is {l} on examples {start}..{} (the model's outputs are not finite)",
                split.name(),
                start + idx.len()
            ));
        }
        let w = if classify { n } else { idx.len() };
        loss += l * w as f64;
        weight += w;
        correct += c;
        counted += n;
    }
    Ok(Score {
        loss: loss / weight.max(1) as f64,
        acc: classify.then(|| correct as f64 / counted.max(1) as f64),
    })
}

/// Batches are cut to their longest sequence rounded up to this (fewer distinct FFT sizes).
pub const TRIM_MULTIPLE: usize = 32;
