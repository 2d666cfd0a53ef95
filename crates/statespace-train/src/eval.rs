//! Losses and scores of a model on a split: the training loss of a batch, evaluation, and the
//! PTD paper's robustness test.

use crate::config::RunConfig;
use crate::run::TRIM_MULTIPLE;
use crate::run_dir::load_model;
use serde::Serialize;
use statespace_core::engine::layers;
use statespace_core::model::{Input, Model};
use statespace_data::{Batch, InputSpec, SeqTask, Split, TargetSpec};
use std::path::Path;

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
    let size = task.size(split);
    let mut batch = Batch::default();
    let mut dout = Vec::new();
    let (mut loss, mut correct, mut counted, mut weight) = (0.0, 0usize, 0usize, 0usize);
    let classify = !matches!(task.spec().target, TargetSpec::Regression { .. });
    for start in (0..size).step_by(batch_size) {
        let idx: Vec<usize> = (start..(start + batch_size).min(size)).collect();
        task.fill(split, &idx, &mut batch)
            .map_err(|e| e.to_string())?;
        batch.trim(&task.spec(), TRIM_MULTIPLE);
        let (l, c, n) = batch_loss(model, task, &batch, idx.len(), false, 0, &mut dout);
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

/// Evaluates a checkpoint (see [`load_model`]) on the test split.
pub fn eval_checkpoint(path: &Path, data: Option<&Path>) -> Result<(RunConfig, Score), String> {
    let (cfg, mut model, task) = load_model(path, data)?;
    let score = evaluate(
        &mut model,
        task.as_ref(),
        Split::Test,
        cfg.train.eval_batch_size,
    )?;
    Ok((cfg, score))
}

/// The PTD paper's robustness test: the test score clean and with `noise` added before every SSM
/// layer.
pub fn robustness(
    path: &Path,
    data: Option<&Path>,
    noise: statespace_core::model::InputNoise,
) -> Result<(RunConfig, Score, Score), String> {
    let (cfg, mut model, task) = load_model(path, data)?;
    let clean = evaluate(
        &mut model,
        task.as_ref(),
        Split::Test,
        cfg.train.eval_batch_size,
    )?;
    model.set_input_noise(Some(noise));
    let noisy = evaluate(
        &mut model,
        task.as_ref(),
        Split::Test,
        cfg.train.eval_batch_size,
    )?;
    Ok((cfg, clean, noisy))
}
