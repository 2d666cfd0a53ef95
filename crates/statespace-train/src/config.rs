//! The run configuration (`config.toml`): `[task]`, `[model]` and `[train]`, validation and
//! `--set` overrides.

use crate::tasks::TaskConfig;
use serde::{Deserialize, Serialize};
use statespace_core::engine::optim::{GroupConfig, OptimConfig};
use statespace_core::model::ModelConfig;

fn epochs() -> usize {
    10
}

fn batch() -> usize {
    50
}

fn lr() -> f64 {
    0.01
}

fn wd() -> f64 {
    0.05
}

fn threads() -> usize {
    2
}

fn ckpt_every() -> usize {
    200
}

fn log_every() -> usize {
    20
}

fn beta1() -> f64 {
    0.9
}

fn beta2() -> f64 {
    0.999
}

fn eps() -> f64 {
    1e-8
}

fn eval_batch() -> usize {
    200
}

/// The `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training split.
    #[serde(default = "epochs")]
    pub epochs: usize,
    /// Examples per step.
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// Global learning rate.
    #[serde(default = "lr")]
    pub lr: f64,
    /// Global weight decay (not applied to biases, norms and the SSM groups unless set).
    #[serde(default = "wd")]
    pub weight_decay: f64,
    /// Linear warmup steps.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak (cosine decay).
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this value (0: off).
    #[serde(default)]
    pub grad_clip: f64,
    /// Seed of initialization, data order and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Worker threads (0: all cores). Results are bitwise reproducible for a fixed count.
    #[serde(default = "threads")]
    pub threads: usize,
    /// Write `last.safetensors` every this many steps (and at every epoch end).
    #[serde(default = "ckpt_every")]
    pub checkpoint_every: usize,
    /// Write a training metrics line every this many steps.
    #[serde(default = "log_every")]
    pub log_every: usize,
    /// Stop after this many steps (the schedule still spans all epochs).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Variable-length tasks: sort each run of `length_buckets` batches of the shuffled epoch by
    /// example length and shuffle the batches, so a batch holds similar lengths and is cut to its
    /// longest (0: off; batches are cut to their longest sequence either way).
    #[serde(default)]
    pub length_buckets: usize,
    /// Batch size of validation and test passes.
    #[serde(default = "eval_batch")]
    pub eval_batch_size: usize,
    /// SSM `A` group.
    #[serde(default)]
    pub ssm_a: GroupConfig,
    /// SSM `B` group.
    #[serde(default)]
    pub ssm_b: GroupConfig,
    /// SSM `log Δ` group.
    #[serde(default)]
    pub ssm_dt: GroupConfig,
    /// Adam β₁.
    #[serde(default = "beta1")]
    pub beta1: f64,
    /// Adam β₂.
    #[serde(default = "beta2")]
    pub beta2: f64,
    /// Adam ε.
    #[serde(default = "eps")]
    pub eps: f64,
}

/// A whole run configuration (`config.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The task.
    pub task: TaskConfig,
    /// The model.
    #[serde(default)]
    pub model: ModelConfig,
    /// Training.
    #[serde(default)]
    pub train: TrainConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("all fields have defaults")
    }
}

impl RunConfig {
    /// Parses TOML; errors carry the line and the field.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values (the message names the field).
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        let t = &self.train;
        if t.batch_size == 0 {
            return Err("train.batch_size: must be at least 1".into());
        }
        if t.epochs == 0 {
            return Err("train.epochs: must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!("train.lr: must be positive, got {}", t.lr));
        }
        if t.weight_decay < 0.0 {
            return Err(format!(
                "train.weight_decay: must be ≥ 0, got {}",
                t.weight_decay
            ));
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return Err(format!(
                "train.min_lr_ratio: must lie in [0, 1], got {}",
                t.min_lr_ratio
            ));
        }
        if t.checkpoint_every == 0 || t.log_every == 0 || t.eval_batch_size == 0 {
            return Err(
                "train.checkpoint_every, log_every and eval_batch_size must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Applies `section.key=value` overrides (the value parsed as TOML, or as a string).
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self, String> {
        let mut doc: toml::Value = toml::Value::try_from(self).map_err(|e| e.to_string())?;
        for s in sets {
            let (path, raw) = s
                .split_once('=')
                .ok_or_else(|| format!("--set {s}: expected section.key=value"))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .map(|t| t["v"].clone())
                .unwrap_or_else(|_| toml::Value::String(raw.to_string()));
            let mut cur = &mut doc;
            let parts: Vec<&str> = path.trim().split('.').collect();
            for (i, p) in parts.iter().enumerate() {
                let table = cur
                    .as_table_mut()
                    .ok_or_else(|| format!("--set {s}: {p} is not a section"))?;
                if i + 1 == parts.len() {
                    table.insert(p.to_string(), value.clone());
                    break;
                }
                cur = table
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            }
        }
        let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
        RunConfig::from_toml(&text).map_err(|e| format!("after --set: {e}"))
    }

    /// The optimizer settings.
    pub fn optim(&self) -> OptimConfig {
        let t = &self.train;
        OptimConfig {
            lr: t.lr,
            weight_decay: t.weight_decay,
            ssm_a: t.ssm_a,
            ssm_b: t.ssm_b,
            ssm_dt: t.ssm_dt,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
        }
    }
}

/// Sets the worker thread count (the first call wins for the process).
pub fn init_threads(n: usize) {
    let mut b = rayon::ThreadPoolBuilder::new();
    if n > 0 {
        b = b.num_threads(n);
    }
    let _ = b.build_global();
}
