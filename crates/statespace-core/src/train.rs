//! Training runs: config (TOML), task construction, the training loop with validation, best and last
//! checkpoints, exact resume, metrics (JSONL) and a progress bar.
//!
//! A run lives in a directory: `config.toml`, `metrics.jsonl`, `best.safetensors` (weights of the
//! best validation score) and `last.safetensors` (weights, optimizer moments, step; the data order and
//! dropout masks are functions of (seed, step), so they need no stored state). Resuming from `last`
//! with the same config and thread count reproduces an uninterrupted run bit for bit.

use crate::checkpoint;
use crate::layers;
use crate::model::{Input, IoShape, Model, ModelConfig};
use crate::optim::{self, AdamW, GroupConfig, OptimConfig};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use statespace_data::tasks::{AddingTask, CopyingTask, ImageTask};
use statespace_data::{Batch, InputSpec, SeqTask, Split, TargetSpec};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The task of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskName {
    /// Sequential MNIST (IDX files).
    Smnist,
    /// Sequential Fashion-MNIST (IDX files).
    Sfashion,
    /// The adding problem (generated).
    Adding,
    /// The copying task (generated).
    Copying,
    /// LRA ListOps (`basic_{train,val,test}.tsv` in `data_dir`; `statespace data listops` writes them).
    Listops,
    /// LRA Text: IMDB reviews as bytes (the `aclImdb` layout in `data_dir`).
    Text,
    /// LRA Retrieval: AAN document pairs as bytes (`new_aan_pairs.{train,eval,test}.tsv`).
    Retrieval,
    /// LRA Image: grayscale CIFAR-10 pixel by pixel (CIFAR-10 binary files).
    Image,
    /// sCIFAR: RGB CIFAR-10 pixel by pixel, 3 channels.
    Scifar,
    /// LRA Pathfinder / Path-X (the LRA folder layout; `task.resolution`, `task.difficulty`).
    Pathfinder,
    /// Selective copying (generated): `seq_len` noise steps, `copy_tokens` symbols, `alphabet`.
    #[serde(rename = "selective_copying")]
    SelectiveCopying,
    /// Associative recall (generated): `pairs`, `keys`, `values`.
    #[serde(rename = "associative_recall")]
    AssociativeRecall,
    /// Multi-query associative recall (generated): `pairs`, `seq_len`, `keys`, `values`.
    Mqar,
    /// Induction heads (generated): `seq_len`, `alphabet`.
    #[serde(rename = "induction_heads")]
    InductionHeads,
}

fn d_true() -> bool {
    true
}

/// The `[task]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// smnist, sfashion, adding, copying, listops, text, retrieval, image, scifar or pathfinder.
    pub name: TaskName,
    /// Directory of the IDX files (image tasks); `--data` overrides it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Fixed random pixel order (psMNIST).
    #[serde(default)]
    pub permute: bool,
    /// Validation examples (image tasks: held out of the training file; default 10000 / 1000).
    #[serde(default)]
    pub val_size: Option<usize>,
    /// Training examples of generated tasks.
    #[serde(default)]
    pub train_size: Option<usize>,
    /// Test examples of generated tasks.
    #[serde(default)]
    pub test_size: Option<usize>,
    /// Adding problem: sequence length T. ListOps: the model's length (longer examples are
    /// truncated; default the longest example).
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// Copying: symbols to copy (M).
    #[serde(default)]
    pub copy_tokens: Option<usize>,
    /// Copying: blank steps.
    #[serde(default)]
    pub blanks: Option<usize>,
    /// Copying: alphabet size including blank and marker.
    #[serde(default)]
    pub alphabet: Option<usize>,
    /// Associative recall / MQAR: key–value pairs.
    #[serde(default)]
    pub pairs: Option<usize>,
    /// Associative recall / MQAR: key vocabulary.
    #[serde(default)]
    pub keys: Option<usize>,
    /// Associative recall / MQAR: value vocabulary.
    #[serde(default)]
    pub values: Option<usize>,
    /// Image tasks: append this many steps of U[0,1) noise (HOPE's noise-padded sequences).
    #[serde(default)]
    pub noise_pad: Option<usize>,
    /// Pathfinder: image size (32, 64, 128 = Path-X, 256).
    #[serde(default)]
    pub resolution: Option<usize>,
    /// Pathfinder: easy | medium | hard (contour length 6 / 9 / 14).
    #[serde(default)]
    pub difficulty: Option<String>,
    /// Normalize image pixels by the training mean and std (true), or only scale to [0, 1].
    #[serde(default = "d_true")]
    pub normalize: bool,
}

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

/// Builds the task of `cfg` (`data` overrides `task.data_dir`).
pub fn build_task(
    cfg: &TaskConfig,
    data: Option<&Path>,
    seed: u64,
) -> Result<Box<dyn SeqTask>, String> {
    let gen_sizes = || {
        [
            cfg.train_size.unwrap_or(20_000),
            cfg.val_size.unwrap_or(1000),
            cfg.test_size.unwrap_or(1000),
        ]
    };
    let task = build_base_task(cfg, data, seed, gen_sizes())?;
    match cfg.noise_pad {
        Some(p) if p > 0 => Ok(Box::new(
            statespace_data::memory::NoisePadded::new(task, p, seed).map_err(|e| e.to_string())?,
        )),
        _ => Ok(task),
    }
}

fn build_base_task(
    cfg: &TaskConfig,
    data: Option<&Path>,
    seed: u64,
    sizes: [usize; 3],
) -> Result<Box<dyn SeqTask>, String> {
    use statespace_data::memory::{MemoryKind, MemoryTask};
    let gen_sizes = || sizes;
    let memory = |k: MemoryKind| -> Result<Box<dyn SeqTask>, String> {
        Ok(Box::new(
            MemoryTask::new(k, sizes, seed).map_err(|e| e.to_string())?,
        ))
    };
    Ok(match cfg.name {
        TaskName::SelectiveCopying => memory(MemoryKind::SelectiveCopying {
            span: cfg.seq_len.unwrap_or(200),
            tokens: cfg.copy_tokens.unwrap_or(16),
            alphabet: cfg.alphabet.unwrap_or(18),
        })?,
        TaskName::AssociativeRecall => memory(MemoryKind::AssociativeRecall {
            pairs: cfg.pairs.unwrap_or(20),
            keys: cfg.keys.unwrap_or(64),
            values: cfg.values.unwrap_or(64),
        })?,
        TaskName::Mqar => memory(MemoryKind::Mqar {
            pairs: cfg.pairs.unwrap_or(16),
            len: cfg.seq_len.unwrap_or(256),
            keys: cfg.keys.unwrap_or(64),
            values: cfg.values.unwrap_or(64),
        })?,
        TaskName::InductionHeads => memory(MemoryKind::InductionHeads {
            len: cfg.seq_len.unwrap_or(256),
            vocab: cfg.alphabet.unwrap_or(16),
        })?,
        TaskName::Smnist | TaskName::Sfashion => {
            let dir = data
                .map(Path::to_path_buf)
                .or_else(|| cfg.data_dir.clone())
                .ok_or_else(|| "task.data_dir: the image tasks read IDX files; give --data DIR or task.data_dir".to_string())?;
            let name = if cfg.name == TaskName::Smnist {
                "sMNIST"
            } else {
                "sFashion-MNIST"
            };
            let mut t = ImageTask::load(
                name,
                &dir,
                cfg.val_size.unwrap_or(10_000),
                cfg.permute,
                seed,
            )
            .map_err(|e| e.to_string())?;
            if !cfg.normalize {
                t.set_unit_scaling();
            }
            Box::new(t)
        }
        TaskName::Adding => Box::new(
            AddingTask::new(cfg.seq_len.unwrap_or(1000), gen_sizes(), seed)
                .map_err(|e| e.to_string())?,
        ),
        TaskName::Listops => {
            let dir = data
                .map(Path::to_path_buf)
                .or_else(|| cfg.data_dir.clone())
                .ok_or_else(|| "task.data_dir: ListOps reads basic_{train,val,test}.tsv; give --data DIR or task.data_dir (`statespace data listops --out DIR` generates them)".to_string())?;
            Box::new(
                statespace_data::listops::ListOpsTask::load(&dir, cfg.seq_len)
                    .map_err(|e| e.to_string())?,
            )
        }
        TaskName::Text | TaskName::Retrieval | TaskName::Image | TaskName::Scifar => {
            let what = match cfg.name {
                TaskName::Text => "Text reads the aclImdb layout (train/pos/*.txt, …)",
                TaskName::Retrieval => "Retrieval reads new_aan_pairs.{train,eval,test}.tsv",
                _ => "the CIFAR tasks read data_batch_1.bin … data_batch_5.bin and test_batch.bin",
            };
            let dir = data
                .map(Path::to_path_buf)
                .or_else(|| cfg.data_dir.clone())
                .ok_or_else(|| {
                    format!("task.data_dir: {what}; give --data DIR or task.data_dir")
                })?;
            let e = |e: statespace_data::DataError| e.to_string();
            match cfg.name {
                TaskName::Text => Box::new(
                    statespace_data::text::ImdbTask::load(
                        &dir,
                        cfg.seq_len.unwrap_or(4096),
                        cfg.val_size.unwrap_or(0),
                    )
                    .map_err(e)?,
                ),
                TaskName::Retrieval => Box::new(
                    statespace_data::text::AanTask::load(&dir, cfg.seq_len.unwrap_or(4000))
                        .map_err(e)?,
                ),
                _ => Box::new(
                    statespace_data::cifar::CifarTask::load(
                        &dir,
                        cfg.name == TaskName::Image,
                        cfg.val_size.unwrap_or(5000),
                        seed,
                    )
                    .map_err(e)?,
                ),
            }
        }
        TaskName::Pathfinder => {
            let dir = data
                .map(Path::to_path_buf)
                .or_else(|| cfg.data_dir.clone())
                .ok_or_else(|| "task.data_dir: Pathfinder reads the LRA layout (curv_contour_length_14/imgs, …/metadata); give --data DIR or task.data_dir (`statespace data pathfinder` generates it)".to_string())?;
            let diff = statespace_data::pathfinder::Difficulty::parse(
                cfg.difficulty.as_deref().unwrap_or("hard"),
            )
            .map_err(|e| e.to_string())?;
            Box::new(
                statespace_data::pathfinder::PathfinderTask::load(
                    &dir,
                    cfg.resolution.unwrap_or(32),
                    diff,
                    seed,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        TaskName::Copying => Box::new(
            CopyingTask::new(
                cfg.copy_tokens.unwrap_or(10),
                cfg.blanks.unwrap_or(200),
                cfg.alphabet.unwrap_or(10),
                gen_sizes(),
                seed,
            )
            .map_err(|e| e.to_string())?,
        ),
    })
}

/// The model's input/output shape for a task.
pub fn io_shape(task: &dyn SeqTask) -> IoShape {
    let spec = task.spec();
    let (d_input, vocab) = match spec.input {
        InputSpec::Real { channels } => (channels, 0),
        InputSpec::Tokens { vocab } => (0, vocab),
    };
    let d_output = match spec.target {
        TargetSpec::Class { classes } | TargetSpec::ClassPerPosition { classes } => classes,
        TargetSpec::Regression { dims } => dims,
    };
    IoShape {
        d_input,
        vocab,
        d_output,
        pair: spec.pair,
    }
}

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

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Steps done.
    pub steps: usize,
    /// Best validation score.
    pub best_val: Score,
    /// Test score of the best checkpoint.
    pub test: Score,
    /// Wall time of this invocation (seconds).
    pub seconds: f64,
    /// Training throughput of this invocation (sequence positions per second).
    pub tokens_per_s: f64,
}

struct State {
    step: usize,
    best_val: Option<Score>,
}

/// Safetensors names, shapes and values of the model's parameters and buffers.
fn model_tensors(model: &Model<f32>) -> Vec<(String, Vec<usize>, &[f32])> {
    let mut v: Vec<(String, Vec<usize>, &[f32])> = model
        .store
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone(), p.value.as_slice()))
        .collect();
    for (name, buf) in model.buffers() {
        v.push((name, vec![buf.len()], buf.as_slice()));
    }
    v
}

fn meta(cfg: &RunConfig, io: IoShape, extra: &[(&str, String)]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("format".into(), "statespace-checkpoint-1".into());
    m.insert(
        "config".into(),
        serde_json::to_string(cfg).expect("config serializes"),
    );
    m.insert(
        "io".into(),
        serde_json::to_string(&io).expect("io serializes"),
    );
    m.insert("dtype".into(), "f32".into());
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    m
}

fn save_last(
    dir: &Path,
    cfg: &RunConfig,
    model: &Model<f32>,
    opt: &AdamW<f32>,
    st: &State,
) -> Result<(), String> {
    let mut tensors = model_tensors(model);
    for (i, p) in model.store.params.iter().enumerate() {
        tensors.push((
            format!("optim.m.{}", p.name),
            p.shape.clone(),
            opt.m[i].as_slice(),
        ));
        tensors.push((
            format!("optim.v.{}", p.name),
            p.shape.clone(),
            opt.v[i].as_slice(),
        ));
    }
    let best = st
        .best_val
        .map(|s| serde_json::to_string(&s).expect("score serializes"))
        .unwrap_or_default();
    let m = meta(
        cfg,
        model.io,
        &[
            ("step", st.step.to_string()),
            ("optim_t", opt.t.to_string()),
            ("best_val", best),
        ],
    );
    checkpoint::save(&dir.join("last.safetensors"), &tensors, m)
}

fn save_best(
    dir: &Path,
    cfg: &RunConfig,
    model: &Model<f32>,
    st: &State,
    val: Score,
) -> Result<(), String> {
    let m = meta(
        cfg,
        model.io,
        &[
            ("step", st.step.to_string()),
            (
                "val",
                serde_json::to_string(&val).expect("score serializes"),
            ),
        ],
    );
    checkpoint::save(&dir.join("best.safetensors"), &model_tensors(model), m)
}

/// Copies the weights (and BatchNorm buffers) of a checkpoint into `model`; every missing tensor or
/// shape mismatch is an error naming the file and the tensor.
pub fn load_weights(
    path: &Path,
    model: &mut Model<f32>,
    loaded: &checkpoint::Loaded<f32>,
) -> Result<(), String> {
    let name = path.display();
    let get = |tname: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
        let t = loaded
            .tensors
            .get(tname)
            .ok_or_else(|| format!("{name}: missing tensor {tname}"))?;
        if t.shape != shape {
            return Err(format!(
                "{name}: tensor {tname} has shape {:?}, the model needs {shape:?}",
                t.shape
            ));
        }
        if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "{name}: tensor {tname} holds a non-finite value at index {bad}"
            ));
        }
        Ok(t.data.clone())
    };
    for p in model.store.params.iter_mut() {
        p.value = get(&p.name, &p.shape)?;
    }
    for (bname, buf) in model.buffers_mut() {
        let n = buf.len();
        *buf = get(&bname, &[n])?;
    }
    Ok(())
}

/// Reads the run config stored in a checkpoint's metadata.
pub fn config_of(
    path: &Path,
    loaded: &checkpoint::Loaded<f32>,
) -> Result<(RunConfig, IoShape), String> {
    let name = path.display();
    let c = loaded.meta.get("config").ok_or_else(|| {
        format!("{name}: metadata has no \"config\" (not a statespace checkpoint?)")
    })?;
    let cfg: RunConfig =
        serde_json::from_str(c).map_err(|e| format!("{name}: metadata \"config\": {e}"))?;
    let io = loaded
        .meta
        .get("io")
        .ok_or_else(|| format!("{name}: metadata has no \"io\""))?;
    let io: IoShape =
        serde_json::from_str(io).map_err(|e| format!("{name}: metadata \"io\": {e}"))?;
    Ok((cfg, io))
}

/// Batches are cut to their longest sequence rounded up to this (fewer distinct FFT sizes).
pub const TRIM_MULTIPLE: usize = 32;

fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(layers::splitmix64(
        seed ^ 0xda7a_0000 ^ (epoch as u64).wrapping_mul(0x9E37_79B9),
    ));
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rng);
    v
}

/// The epoch order with length bucketing: runs of `buckets · batch` examples sorted by length, cut
/// into batches, and the batches shuffled (a function of seed and epoch, so resume stays exact).
fn bucketed_order(
    seed: u64,
    epoch: usize,
    task: &dyn SeqTask,
    batch: usize,
    buckets: usize,
) -> Vec<usize> {
    let n = task.size(Split::Train);
    let mut v = epoch_order(seed, epoch, n);
    if buckets == 0 || batch == 0 {
        return v;
    }
    for chunk in v.chunks_mut(batch * buckets) {
        chunk.sort_by_key(|&i| task.example_len(Split::Train, i));
    }
    let full = n / batch;
    let mut order: Vec<usize> = (0..full).collect();
    let mut rng = StdRng::seed_from_u64(layers::splitmix64(
        seed ^ 0xb0c7_e700 ^ (epoch as u64).wrapping_mul(0x9E37_79B9),
    ));
    order.shuffle(&mut rng);
    let mut out = Vec::with_capacity(n);
    for b in order {
        out.extend_from_slice(&v[b * batch..(b + 1) * batch]);
    }
    out.extend_from_slice(&v[full * batch..]);
    out
}

fn truncate_metrics(path: &Path, step: usize) -> Result<(), String> {
    let Ok(f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let mut keep = String::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let s = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["step"].as_u64());
        if s.is_some_and(|s| s as usize <= step) {
            keep.push_str(&line);
            keep.push('\n');
        }
    }
    checkpoint::write_atomic(path, keep.as_bytes())
}

/// Sets the worker thread count (the first call wins for the process).
pub fn init_threads(n: usize) {
    let mut b = rayon::ThreadPoolBuilder::new();
    if n > 0 {
        b = b.num_threads(n);
    }
    let _ = b.build_global();
}

/// Trains (or resumes) the run in `dir`. `quiet` hides the progress bar.
pub fn run(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    data: Option<&Path>,
    quiet: bool,
) -> Result<Summary, String> {
    init_threads(cfg.train.threads);
    let t0 = Instant::now();
    let task = build_task(&cfg.task, data, cfg.train.seed)?;
    let io = io_shape(task.as_ref());
    let mut rng = StdRng::seed_from_u64(cfg.train.seed);
    let mut model = Model::<f32>::new(&cfg.model.resolved(task.spec().len), io, &mut rng)?;
    let mut opt = AdamW::new(&model.store);
    let mut st = State {
        step: 0,
        best_val: None,
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the run directory: {e}", dir.display()))?;
    let last = dir.join("last.safetensors");
    if resume {
        let loaded = checkpoint::load::<f32>(&last)?;
        let (stored, _) = config_of(&last, &loaded)?;
        if stored != *cfg {
            return Err(format!(
                "{}: the run was started with a different config; resume with the run's own config.toml",
                last.display()
            ));
        }
        load_weights(&last, &mut model, &loaded)?;
        for (i, p) in model.store.params.iter().enumerate() {
            for (slot, key) in [(&mut opt.m[i], "m"), (&mut opt.v[i], "v")] {
                let t = loaded
                    .tensors
                    .get(&format!("optim.{key}.{}", p.name))
                    .ok_or_else(|| format!("{}: missing optim.{key}.{}", last.display(), p.name))?;
                if t.data.len() != p.value.len() {
                    return Err(format!(
                        "{}: optim.{key}.{} has the wrong size",
                        last.display(),
                        p.name
                    ));
                }
                slot.clone_from(&t.data);
            }
        }
        let num = |k: &str| -> Result<u64, String> {
            loaded
                .meta
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    format!(
                        "{}: metadata \"{k}\" missing or not a number",
                        last.display()
                    )
                })
        };
        st.step = num("step")? as usize;
        opt.t = num("optim_t")?;
        st.best_val = loaded
            .meta
            .get("best_val")
            .filter(|s| !s.is_empty())
            .map(|s| {
                let v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
                Score {
                    loss: v["loss"].as_f64().unwrap_or(f64::NAN),
                    acc: v["acc"].as_f64(),
                }
            });
        truncate_metrics(&dir.join("metrics.jsonl"), st.step)?;
    } else if last.exists() {
        return Err(format!(
            "{} already holds a run: use --resume {} or another --out",
            dir.display(),
            dir.display()
        ));
    } else {
        let _ = std::fs::remove_file(dir.join("metrics.jsonl"));
    }
    let toml_text = toml::to_string(cfg).map_err(|e| e.to_string())?;
    checkpoint::write_atomic(&dir.join("config.toml"), toml_text.as_bytes())?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("metrics.jsonl"))
        .map_err(|e| format!("{}: {e}", dir.join("metrics.jsonl").display()))?;
    let mut log = |v: serde_json::Value| -> Result<(), String> {
        writeln!(metrics, "{v}")
            .and_then(|_| metrics.flush())
            .map_err(|e| format!("metrics.jsonl: {e}"))
    };

    let tc = &cfg.train;
    let n_train = task.size(Split::Train);
    let spe = n_train / tc.batch_size;
    if spe == 0 {
        return Err(format!(
            "train.batch_size = {} exceeds the {n_train} training examples",
            tc.batch_size
        ));
    }
    let total = spe * tc.epochs;
    let stop = tc.max_steps.map_or(total, |m| m.min(total));
    let optim_cfg = cfg.optim();
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(stop as u64)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps · eta {eta} · {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_position(st.step as u64);
    let mut batch = Batch::default();
    let mut dout = Vec::new();
    let mut order: Option<(usize, Vec<usize>)> = None;
    let (mut run_loss, mut run_correct, mut run_count, mut run_steps) =
        (0.0, 0usize, 0usize, 0usize);
    let t_train = Instant::now();
    // sequence positions computed (after cutting each batch to its longest sequence)
    let mut positions = 0usize;
    while st.step < stop {
        let epoch = st.step / spe;
        let i = st.step % spe;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((
                epoch,
                bucketed_order(
                    tc.seed,
                    epoch,
                    task.as_ref(),
                    tc.batch_size,
                    tc.length_buckets,
                ),
            ));
        }
        let idx = &order.as_ref().expect("set above").1[i * tc.batch_size..(i + 1) * tc.batch_size];
        task.fill(Split::Train, idx, &mut batch)
            .map_err(|e| e.to_string())?;
        let blen = batch.trim(&task.spec(), TRIM_MULTIPLE);
        let towers = if task.spec().pair { 2 } else { 1 };
        positions += tc.batch_size * towers * blen;
        model.store.zero_grad();
        let seed =
            layers::splitmix64(tc.seed ^ (st.step as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let (loss, correct, counted) = batch_loss(
            &mut model,
            task.as_ref(),
            &batch,
            tc.batch_size,
            true,
            seed,
            &mut dout,
        );
        if !loss.is_finite() {
            return Err(format!(
                "the loss became {loss} at step {}: lower train.lr or set train.grad_clip",
                st.step
            ));
        }
        model.backward(&dout);
        optim::clip_grad_norm(&mut model.store, tc.grad_clip);
        let scale = optim::schedule(st.step, tc.warmup_steps, total, tc.min_lr_ratio);
        opt.step(&mut model.store, &optim_cfg, scale);
        st.step += 1;
        run_loss += loss;
        run_correct += correct;
        run_count += counted;
        run_steps += 1;
        let elapsed = t_train.elapsed().as_secs_f64();
        let tps = positions as f64 / elapsed.max(1e-9);
        if st.step.is_multiple_of(tc.log_every) || st.step == stop {
            let acc = (run_count > 0
                && !matches!(task.spec().target, TargetSpec::Regression { .. }))
            .then(|| run_correct as f64 / run_count as f64);
            let l = run_loss / run_steps as f64;
            pb.set_message(format!(
                "epoch {} · loss {l:.4}{} · {:.0} tok/s",
                epoch + 1,
                acc.map(|a| format!(" · acc {:.2}%", 100.0 * a))
                    .unwrap_or_default(),
                tps
            ));
            log(
                serde_json::json!({"step": st.step, "epoch": epoch, "lr": tc.lr * scale, "loss": l, "acc": acc, "tokens_per_s": tps}),
            )?;
            (run_loss, run_correct, run_count, run_steps) = (0.0, 0, 0, 0);
        }
        pb.set_position(st.step as u64);
        let epoch_end = st.step.is_multiple_of(spe) || st.step == stop;
        if epoch_end {
            let val = evaluate(&mut model, task.as_ref(), Split::Val, tc.eval_batch_size)?;
            let better = st.best_val.is_none_or(|b| val.key() > b.key());
            if better {
                st.best_val = Some(val);
                save_best(dir, cfg, &model, &st, val)?;
            }
            log(
                serde_json::json!({"step": st.step, "epoch": epoch, "val_loss": val.loss, "val_acc": val.acc, "best": better}),
            )?;
            pb.println(format!(
                "epoch {} (step {}): val loss {:.4}{}{}",
                epoch + 1,
                st.step,
                val.loss,
                val.acc
                    .map(|a| format!(", val acc {:.2}%", 100.0 * a))
                    .unwrap_or_default(),
                if better { " (best)" } else { "" }
            ));
        }
        if epoch_end || st.step.is_multiple_of(tc.checkpoint_every) {
            save_last(dir, cfg, &model, &opt, &st)?;
        }
    }
    pb.finish_and_clear();
    let tokens_per_s = positions as f64 / t_train.elapsed().as_secs_f64().max(1e-9);
    // The test set, once, with the best checkpoint (a run stopped before its first validation,
    // e.g. train.max_steps = 0, is validated now so that there is one).
    let best_path = dir.join("best.safetensors");
    if st.best_val.is_none() || !best_path.exists() {
        let val = evaluate(&mut model, task.as_ref(), Split::Val, tc.eval_batch_size)?;
        st.best_val = Some(val);
        save_best(dir, cfg, &model, &st, val)?;
    }
    let loaded = checkpoint::load::<f32>(&best_path)?;
    load_weights(&best_path, &mut model, &loaded)?;
    let test = evaluate(&mut model, task.as_ref(), Split::Test, tc.eval_batch_size)?;
    log(serde_json::json!({"step": st.step, "test_loss": test.loss, "test_acc": test.acc}))?;
    Ok(Summary {
        steps: st.step,
        best_val: st.best_val.unwrap_or_default(),
        test,
        seconds: t0.elapsed().as_secs_f64(),
        tokens_per_s,
    })
}

/// A run's config, its trained model and its task.
pub type LoadedRun = (RunConfig, Model<f32>, Box<dyn SeqTask>);

/// A trained model from a run directory (its best.safetensors) or a checkpoint file, with its run
/// config and task (`data` overrides the dataset directory).
pub fn load_model(path: &Path, data: Option<&Path>) -> Result<LoadedRun, String> {
    let file = if path.is_dir() {
        path.join("best.safetensors")
    } else {
        path.to_path_buf()
    };
    let loaded = checkpoint::load::<f32>(&file)?;
    let (cfg, io) = config_of(&file, &loaded)?;
    init_threads(cfg.train.threads);
    let task = build_task(&cfg.task, data, cfg.train.seed)?;
    if io_shape(task.as_ref()) != io {
        return Err(format!(
            "{}: the checkpoint's input/output shape does not match the task's",
            file.display()
        ));
    }
    let mut model = Model::<f32>::new(
        &cfg.model.resolved(task.spec().len),
        io,
        &mut StdRng::seed_from_u64(0),
    )?;
    load_weights(&file, &mut model, &loaded)?;
    Ok((cfg, model, task))
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
    noise: crate::model::InputNoise,
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
