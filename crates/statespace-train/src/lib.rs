//! # statespace-train
//!
//! Training runs: config (TOML), the task registry, the training loop with validation, best and last
//! checkpoints, exact resume, metrics (JSONL) and a progress bar.
//!
//! A run lives in a directory: `config.toml`, `metrics.jsonl`, `best.safetensors` (weights of the
//! best validation score) and `last.safetensors` (weights, optimizer moments, step; the data order and
//! dropout masks are functions of (seed, step), so they need no stored state). Resuming from `last`
//! with the same config and thread count reproduces an uninterrupted run bit for bit.

pub mod config;
pub mod engine;
pub mod eval;
pub mod memory;
pub mod metrics;
pub mod plot;
pub mod run;
pub mod run_dir;
pub mod tasks;

pub use config::{NonFinite, RunConfig, TrainConfig, init_threads};
pub use engine::{CpuEngine, Engine};
pub use eval::{TRIM_MULTIPLE, batch_loss, evaluate, evaluate_first, evaluate_with};
pub use metrics::Score;
pub use plot::plot_curves;
pub use run::{
    EngineFactory, Outcome, Progress, RunOptions, Summary, run, run_with, run_with_engine,
};
pub use run_dir::{
    LoadedRun, RunLock, config_diff, config_of, eval_checkpoint, eval_checkpoint_with, load_model,
    load_model_only, load_weights, robustness, save_weights, write_metrics_csv,
};
pub use tasks::{TaskConfig, TaskName, build_task, io_shape};

// the loss skips the targets the data layer leaves unscored
const _: () = assert!(statespace_core::engine::layers::IGNORE == statespace_data::IGNORE);
