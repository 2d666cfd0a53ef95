//! `statespace train` and `statespace eval`.

use crate::plot;
use clap::Args;
use statespace_train::{self as train, RunConfig};
use std::path::{Path, PathBuf};

/// The reference of the config fields shown by `statespace train --help`.
pub const CONFIG_HELP: &str = "\
A run is configured by one TOML file with three sections (every field has a default except
task.name; `--set section.key=value` overrides any field):

[task]
  name          smnist | sfashion | adding | copying                (MNIST IDX files / generated)
                listops | text | retrieval | image | scifar | pathfinder   (Long Range Arena files)
                selective_copying | associative_recall | mqar | induction_heads   (generated)
  data_dir      the task's files; --data DIR overrides it: IDX files (train-images-idx3-ubyte[.gz], …);
                ListOps basic_{train,val,test}.tsv; the aclImdb folder; new_aan_pairs.{train,eval,test}.tsv;
                CIFAR-10 data_batch_1.bin … test_batch.bin; Pathfinder's curv_*/{imgs,metadata}
  permute       fixed random pixel order (psMNIST)                                  [false]
  val_size      validation examples (images: held out of the training files; text: 0 = use test)
                                                                            [10000 | 5000 | 0 | 1000]
  normalize     standardize pixels by the training mean and std                     [true]
  train_size, test_size   examples of the generated tasks                          [20000, 1000]
  seq_len       adding: T [1000]; listops/text/retrieval: longest sequence (longer ones are cut)
                [longest | 4096 | 4000]; selective_copying: noise span [200]; mqar, induction_heads:
                length [256]
  copy_tokens, blanks, alphabet   copying: M symbols, blank steps, alphabet incl. blank and marker
                                  [10, 200, 10]; selective_copying [16, -, 18]; induction_heads alphabet [16]
  pairs, keys, values   associative_recall [20, 64, 64]; mqar [16, 64, 64]
  resolution, difficulty  pathfinder: 32 | 64 | 128 (Path-X) | 256, easy | medium | hard   [32, hard]
  noise_pad     image tasks: append this many steps of U[0,1) noise (HOPE)           [0]
[model]
  kind          s4d | s4 | s4-ptd | s5 | s5-ptd | sgconv | hope                    [s4d]
  d_model       width H                                                            [128]
  n_layers      residual blocks                                                    [4]
  d_state       state size N per channel (N/2 complex modes)                       [64]
  init          s4d: legs | inv | lin | quad | real | rand;  s4: legs | legt | lagt | fout [legs]
  n_ssm         s4: copies of (Λ, P, B) shared by the channels (divides d_model)   [1]
  step_mode     s4 recurrent form: linear (Woodbury, O(N)) | dense (O(N²))         [linear]
  l_max         kernel span (sgconv); 0 = the task's sequence length                [0]
  [model.s5]    blocks (J of the block-diagonal LegS init), scan = recurrence | associative,
                step_rescale                                                        [1, recurrence, 1.0]
  [model.sgconv] kernel_dim, init_scale, decay_min, decay_max, upsample = linear | nearest
                                                                                    [64, 0, 2, 2, linear]
  [model.hope]  mode = causal (exact truncated impulse response, steppable) | circular
                (the paper's Algorithm 1)                                           [causal]
  disc          zoh | bilinear                                                     [zoh]
  dt_min, dt_max  range of the log-uniform initial step                            [0.001, 0.1]
  bidirectional forward and reverse kernels (no recurrent mode)                    [false]
  norm          layer | batch                                                      [layer]
  prenorm       pre-norm (true) or post-norm blocks                                [true]
  dropout       dropout inside the SSM layers; tied_dropout: one mask per channel  [0.0, false]
  pool          mean | last | none (decoder at every position)                     [mean]
  glu           output linear H→2H + GLU (true) or H→H                             [true]
[train]
  epochs, batch_size                                                               [10, 50]
  lr, weight_decay        global AdamW settings (no decay on biases and norms)     [0.01, 0.05]
  ssm_a, ssm_b, ssm_dt    per-group {lr, weight_decay}: a number or \"global\"     [{1e-3, 0}]
  warmup_steps, min_lr_ratio   linear warmup, then cosine decay to min_lr_ratio·lr [0, 0]
  grad_clip               global gradient-norm clip (0: off)                       [0]
  seed, threads           reproducible for a fixed thread count (0: all cores)     [0, 2]
  checkpoint_every, log_every   steps between last.safetensors / metric lines      [200, 20]
  max_steps               stop early (the schedule still spans all epochs)
  length_buckets          variable-length tasks: sort runs of this many batches by length (0: off)
                          [0]; batches are always cut to their longest sequence
  eval_batch_size, beta1, beta2, eps                                               [200, 0.9, 0.999, 1e-8]

A run directory holds config.toml, metrics.jsonl, best.safetensors, last.safetensors and curves.png.
The test split is evaluated once, at the end, with the best validation checkpoint.";

/// Reads a config file, naming the file in every error.
pub fn read_config(path: &Path, sets: &[String]) -> Result<RunConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let cfg = RunConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if sets.is_empty() {
        Ok(cfg)
    } else {
        cfg.with_overrides(sets)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `statespace train`.
pub fn train(
    config: Option<&Path>,
    resume: Option<&Path>,
    sets: &[String],
    data: Option<&Path>,
    out: Option<&Path>,
    quiet: bool,
) -> Result<(), String> {
    let (cfg, dir, resuming) = match (config, resume) {
        (_, Some(dir)) => {
            let cfg = read_config(&dir.join("config.toml"), sets)?;
            (cfg, dir.to_path_buf(), true)
        }
        (Some(path), None) => {
            let cfg = read_config(path, sets)?;
            let dir = out.map(Path::to_path_buf).unwrap_or_else(|| {
                PathBuf::from("runs").join(
                    path.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "run".into()),
                )
            });
            (cfg, dir, false)
        }
        (None, None) => return Err("give --config FILE.toml (a new run) or --resume DIR".into()),
    };
    eprintln!(
        "{} {} → {}",
        if resuming { "resuming" } else { "training" },
        describe(&cfg),
        dir.display()
    );
    let s = train::run(&cfg, &dir, resuming, data, quiet)?;
    let _ = plot_curves(&dir);
    let acc = |sc: &train::Score| {
        sc.acc
            .map(|a| format!("accuracy {:.2}%", 100.0 * a))
            .unwrap_or_else(|| format!("MSE {:.5}", sc.loss))
    };
    println!(
        "{} steps in {:.1} s ({:.0} tokens/s); best validation {}; test {} (loss {:.4})",
        s.steps,
        s.seconds,
        s.tokens_per_s,
        acc(&s.best_val),
        acc(&s.test),
        s.test.loss
    );
    Ok(())
}

fn describe(cfg: &RunConfig) -> String {
    use statespace_core::model::LayerKind;
    let m = &cfg.model;
    let detail = match m.kind {
        LayerKind::S4d | LayerKind::S5 => format!(" ({:?}, {:?} init)", m.disc, m.init),
        LayerKind::S4 => format!(" (bilinear, {:?} init)", m.init),
        LayerKind::S4Ptd | LayerKind::S5Ptd => format!(" ({:?}, PTD LegS init)", m.disc),
        LayerKind::Sgconv => format!(" (kernel_dim {})", m.sgconv.kernel_dim),
        LayerKind::Hope => format!(" ({:?})", m.hope.mode),
    };
    format!(
        "{:?} on {:?}: {} layers × H={} × N={}{detail}, batch {}, lr {}",
        m.kind, cfg.task.name, m.n_layers, m.d_model, m.d_state, cfg.train.batch_size, cfg.train.lr
    )
}

/// `statespace eval`.
pub fn eval(checkpoint: &Path, data: Option<&Path>) -> Result<(), String> {
    let (cfg, score) = train::eval_checkpoint(checkpoint, data)?;
    println!(
        "{:?} test: loss {:.4}{}",
        cfg.task.name,
        score.loss,
        score
            .acc
            .map(|a| format!(", accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default()
    );
    Ok(())
}

/// Draws `curves.png` (training loss and validation accuracy or loss) from `metrics.jsonl`.
pub fn plot_curves(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let (mut loss, mut val) = (Vec::new(), Vec::new());
    let mut val_is_acc = false;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        if let Some(l) = v["loss"].as_f64() {
            loss.push((step, l));
        }
        if let Some(a) = v["val_acc"].as_f64() {
            val.push((step, a));
            val_is_acc = true;
        } else if let Some(l) = v["val_loss"].as_f64() {
            val.push((step, l));
        }
    }
    let vlabel = if val_is_acc {
        "validation accuracy"
    } else {
        "validation loss"
    };
    plot::line_plot(
        &dir.join("curves.png"),
        &format!("training curves — {}", dir.display()),
        "step",
        "",
        &[
            plot::Series {
                label: "training loss",
                points: loss,
            },
            plot::Series {
                label: vlabel,
                points: val,
            },
        ],
    )
}

#[derive(Args)]
pub struct TrainArgs {
    /// The run configuration (see `statespace train --help` for every field).
    #[arg(long, conflicts_with = "resume", required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory from its last.safetensors (same config, same result).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Override a config field, e.g. --set train.lr=0.004 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Directory of the dataset files (overrides task.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory (default runs/<config name>).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory of the dataset files (overrides the config's task.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
}
