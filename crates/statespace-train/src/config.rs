//! The run configuration (`config.toml`): `[task]`, `[model]` and `[train]`, validation and
//! `--set` overrides.

use crate::tasks::TaskConfig;
use serde::{Deserialize, Serialize};
use statespace_core::engine::optim::{GroupConfig, OptimConfig, Setting};
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

/// What a training step does with a non-finite loss or gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinite {
    /// Stop the run with an error naming the step (the default).
    #[default]
    Error,
    /// Skip the step (no update) and count it in the metrics (`skipped`).
    Skip,
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
    /// A non-finite loss or gradient: "error" (stop, naming the step) or "skip" (skip the step).
    #[serde(default)]
    pub nonfinite: NonFinite,
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

    /// Checks every value (the message names the field): sizes and counts in range, every optimizer
    /// setting finite and in range, the model's values, and no field set that the model's kind does
    /// not read (`ModelConfig::validate`, `ModelConfig::check_fields_of_other_kinds`).
    pub fn validate(&self) -> Result<(), String> {
        self.task.validate()?;
        self.model.validate()?;
        self.model.check_fields_of_other_kinds()?;
        self.train.validate()
    }

    /// Applies `section.key=value` overrides (the value parsed as TOML, or as a string); an error
    /// names the `--set` flag it comes from.
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self, String> {
        let base: toml::Value = toml::Value::try_from(self).map_err(|e| e.to_string())?;
        let mut doc = base.clone();
        for s in sets {
            apply_set(&mut doc, s)?;
            // a value of the wrong type or an unknown key, on its own
            let mut alone = base.clone();
            apply_set(&mut alone, s)?;
            if let Err(e) = alone.try_into::<RunConfig>() {
                return Err(format!("--set {s}: {}", e.message().trim()));
            }
        }
        let cfg: RunConfig = doc
            .try_into()
            .map_err(|e: toml::de::Error| format!("after --set: {}", e.message().trim()))?;
        cfg.validate().map_err(|e| {
            let flags: Vec<String> = sets.iter().map(|s| format!("--set {s}")).collect();
            format!("{e} (after {})", flags.join(" "))
        })?;
        Ok(cfg)
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

fn apply_set(doc: &mut toml::Value, s: &str) -> Result<(), String> {
    let (path, raw) = s
        .split_once('=')
        .ok_or_else(|| format!("--set {s}: expected section.key=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .map(|t| t["v"].clone())
        .unwrap_or_else(|_| toml::Value::String(raw.to_string()));
    let mut cur = doc;
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("--set {s}: expected section.key=value"));
    }
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
    Ok(())
}

/// The most worker threads a run may ask for: this many per core (more only adds contention; far
/// more exhausts the machine).
pub const MAX_THREADS_PER_CORE: usize = 4;

impl TrainConfig {
    /// Checks the values (the message names the field).
    pub fn validate(&self) -> Result<(), String> {
        let t = self;
        let bad = |f: &str, why: String| Err(format!("train.{f}: {why}"));
        for (f, v, min, max) in [
            ("batch_size", t.batch_size, 1, 1 << 20),
            ("eval_batch_size", t.eval_batch_size, 1, 1 << 20),
            ("epochs", t.epochs, 1, 1_000_000),
            ("checkpoint_every", t.checkpoint_every, 1, usize::MAX),
            ("log_every", t.log_every, 1, usize::MAX),
            ("warmup_steps", t.warmup_steps, 0, 1 << 40),
            ("length_buckets", t.length_buckets, 0, 1 << 20),
        ] {
            if v < min || v > max {
                return bad(
                    f,
                    if max == usize::MAX {
                        format!("must be at least {min}, got {v}")
                    } else {
                        format!("must lie in {min} ..= {max}, got {v}")
                    },
                );
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if t.threads > MAX_THREADS_PER_CORE * cores {
            return bad(
                "threads",
                format!(
                    "{} threads on {cores} cores (at most {}; 0 = one per core)",
                    t.threads,
                    MAX_THREADS_PER_CORE * cores
                ),
            );
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("lr", format!("must be positive and finite, got {}", t.lr));
        }
        let finite_nonneg = |f: &str, v: f64| {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                bad(f, format!("must be finite and ≥ 0, got {v}"))
            }
        };
        finite_nonneg("weight_decay", t.weight_decay)?;
        finite_nonneg("grad_clip", t.grad_clip)?;
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad(
                "min_lr_ratio",
                format!("must lie in [0, 1], got {}", t.min_lr_ratio),
            );
        }
        for (f, v) in [("beta1", t.beta1), ("beta2", t.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(f, format!("must lie in [0, 1), got {v}"));
            }
        }
        if !(t.eps > 0.0 && t.eps.is_finite()) {
            return bad("eps", format!("must be positive and finite, got {}", t.eps));
        }
        for (g, c) in [("ssm_a", t.ssm_a), ("ssm_b", t.ssm_b), ("ssm_dt", t.ssm_dt)] {
            for (k, v) in [("lr", c.lr), ("weight_decay", c.weight_decay)] {
                if let Setting::Value(x) = v
                    && !(x >= 0.0 && x.is_finite())
                {
                    return bad(
                        &format!("{g}.{k}"),
                        format!("must be finite and ≥ 0 (or \"global\"), got {x}"),
                    );
                }
            }
        }
        Ok(())
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
