//! The task registry: the `[task]` section of a run and the dataset or generator it names.

use serde::{Deserialize, Serialize};
use statespace_core::model::IoShape;
use statespace_data::tasks::{AddingTask, CopyingTask, ImageTask};
use statespace_data::{InputSpec, SeqTask, TargetSpec};
use std::path::{Path, PathBuf};

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
    /// Training examples: generated tasks generate this many (default 20000); dataset tasks keep
    /// the first this many of their training split (default all).
    #[serde(default)]
    pub train_size: Option<usize>,
    /// Test examples: generated tasks generate this many (default 1000); dataset tasks keep the
    /// first this many of their test split (default all).
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

impl TaskConfig {
    /// Bounds every size and count (the message names the field); the memory a task needs is
    /// checked against the machine by `estimate` before anything is generated or read.
    pub fn validate(&self) -> Result<(), String> {
        for (f, v, max) in [
            ("train_size", self.train_size, 1usize << 26),
            ("val_size", self.val_size, 1 << 26),
            ("test_size", self.test_size, 1 << 26),
            ("seq_len", self.seq_len, 1 << 24),
            ("blanks", self.blanks, 1 << 24),
            ("noise_pad", self.noise_pad, 1 << 24),
            ("copy_tokens", self.copy_tokens, 1 << 20),
            ("alphabet", self.alphabet, 1 << 20),
            ("pairs", self.pairs, 1 << 20),
            ("keys", self.keys, 1 << 20),
            ("values", self.values, 1 << 20),
            ("resolution", self.resolution, 1 << 12),
        ] {
            if let Some(v) = v
                && v > max
            {
                return Err(format!("task.{f}: must be at most {max}, got {v}"));
            }
        }
        Ok(())
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
    let mut task = build_base_task(cfg, data, seed, gen_sizes())?;
    if !crate::memory::generated(cfg.name) && (cfg.train_size.is_some() || cfg.test_size.is_some())
    {
        task = Box::new(statespace_data::Subset::new(
            task,
            [cfg.train_size, None, cfg.test_size],
        ));
    }
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
