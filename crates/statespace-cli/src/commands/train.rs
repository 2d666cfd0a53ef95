//! `statespace train` and `statespace eval`.

use super::Failure;
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
  train_size, test_size   generated tasks: examples generated [20000, 1000]; dataset tasks: keep
                          the first this many of the split                   [all]
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
  nonfinite               a non-finite loss or gradient: error (stop, naming the step) | skip (skip the
                          step, count it in metrics.jsonl)                                 [error]
A [model] field that the chosen kind does not read (disc for s4, s5.* for s4d, init for s5, d_state for
sgconv, …) must keep its default: a set one is an error naming the kinds that read it.

A run directory holds config.toml, metrics.jsonl, metrics.csv, best.safetensors, last.safetensors and
curves.png. Ctrl-C saves the current step (exit 130); `--resume DIR` continues it exactly.
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

/// Runs (or resumes) a run the way both `train` and `lra` do: the first SIGINT or SIGTERM asks the
/// run to stop after its current step and write `last` (exit 130 with the command that resumes);
/// a second one exits at once (every file is written atomically, so nothing is corrupted). On a
/// terminal the progress is a bar, otherwise one plain line per `log_every` steps and per
/// validation.
pub fn execute(
    cfg: &RunConfig,
    dir: &Path,
    resuming: bool,
    data: Option<&Path>,
    quiet: bool,
    max_memory: Option<&str>,
    engine: &super::engine::EngineArgs,
) -> Result<train::Summary, Failure> {
    let make = engine.factory()?;
    let given = max_memory.is_some();
    let max_memory = max_memory
        .map(|m| {
            train::memory::parse_size(m).map_err(|e| Failure::Input(format!("--max-memory: {e}")))
        })
        .transpose()?;
    // on a GPU the host estimate (the CPU engine's activations) does not apply
    let max_memory = if engine.on_gpu() && !given {
        Some(u64::MAX)
    } else {
        max_memory
    };
    use std::io::IsTerminal;
    let stop = super::stop_flag()?;
    let progress = if quiet {
        train::Progress::Silent
    } else if std::io::stderr().is_terminal() {
        train::Progress::Bar
    } else {
        train::Progress::Lines
    };
    let s = train::run_with_engine(
        cfg,
        dir,
        &train::RunOptions {
            resume: resuming,
            data,
            progress,
            stop: Some(&stop),
            fault_steps: &[],
            stop_after: None,
            max_memory,
        },
        &make,
    )
    .map_err(Failure::Input)?;
    if s.outcome != train::Outcome::AlreadyFinished
        && let Err(e) = train::plot_curves(dir)
    {
        eprintln!("warning: {}: {e}", dir.join("curves.png").display());
    }
    match s.outcome {
        train::Outcome::Stopped => Err(Failure::Stopped(format!(
            "stopped at step {} of {}; resume with: statespace train --resume {}",
            s.steps,
            s.total_steps,
            dir.display()
        ))),
        train::Outcome::AlreadyFinished => {
            eprintln!(
                "{}: the run finished at step {}; nothing to do (its test score is in metrics.jsonl)",
                dir.display(),
                s.steps
            );
            Ok(s)
        }
        train::Outcome::Finished => Ok(s),
    }
}

/// `statespace train`.
pub fn train(a: &TrainArgs) -> Result<(), Failure> {
    let (config, resume, sets, data, out) = (
        a.config.as_deref(),
        a.resume.as_deref(),
        &a.sets[..],
        a.data.as_deref(),
        a.out.as_deref(),
    );
    let (quiet, max_memory, engine) = (a.quiet, a.max_memory.as_deref(), &a.engine);
    let (cfg, dir, resuming) = match (config, resume) {
        (_, Some(dir)) => {
            // a live first writer may not have written config.toml yet: name it, not the file
            statespace_train::RunLock::check_free(dir).map_err(Failure::Input)?;
            let cfg = read_config(&dir.join("config.toml"), sets).map_err(Failure::Input)?;
            (cfg, dir.to_path_buf(), true)
        }
        (Some(path), None) => {
            let cfg = read_config(path, sets).map_err(Failure::Input)?;
            let dir = out.map(Path::to_path_buf).unwrap_or_else(|| {
                PathBuf::from("runs").join(
                    path.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "run".into()),
                )
            });
            (cfg, dir, false)
        }
        (None, None) => {
            return Err(Failure::Input(
                "give --config FILE.toml (a new run) or --resume DIR".into(),
            ));
        }
    };
    eprintln!(
        "{} {} → {}{}",
        if resuming { "resuming" } else { "training" },
        describe(&cfg),
        dir.display(),
        match engine.engine {
            super::engine::EngineKind::Cpu => String::new(),
            super::engine::EngineKind::Torch => format!(
                " (torch engine, {})",
                engine.device.as_deref().unwrap_or("cpu")
            ),
        }
    );
    let s = execute(&cfg, &dir, resuming, data, quiet, max_memory, engine)?;
    let acc = |sc: &train::Score| {
        sc.acc
            .map(|a| format!("accuracy {:.2}%", 100.0 * a))
            .unwrap_or_else(|| format!("MSE {:.5}", sc.loss))
    };
    let test = s.test.unwrap_or_default();
    let timing = if s.outcome == train::Outcome::AlreadyFinished {
        String::new()
    } else {
        format!(" in {:.1} s ({:.0} tokens/s)", s.seconds, s.tokens_per_s)
    };
    let memory = s.peak_rss.map_or(String::new(), |p| {
        format!(
            "; memory: estimated {}, peak {}",
            train::memory::human(s.memory_estimate),
            train::memory::human(p as f64)
        )
    });
    println!(
        "{} steps{timing}; best validation {}; test {} (loss {:.4}){}{memory}",
        s.steps,
        acc(&s.best_val),
        acc(&test),
        test.loss,
        if s.skipped > 0 {
            format!("; {} steps skipped (non-finite)", s.skipped)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// One line saying what a run trains, in the configs' own names.
pub fn describe(cfg: &RunConfig) -> String {
    use statespace_core::model::{LayerKind, config_name};
    let m = &cfg.model;
    let detail = match m.kind {
        LayerKind::S4d | LayerKind::S5 => {
            format!(" ({}, init {})", config_name(&m.disc), config_name(&m.init))
        }
        LayerKind::S4 => format!(" (bilinear, init {})", config_name(&m.init)),
        LayerKind::S4Ptd | LayerKind::S5Ptd => {
            format!(" ({}, PTD legs init)", config_name(&m.disc))
        }
        LayerKind::Sgconv => format!(" (kernel_dim {})", m.sgconv.kernel_dim),
        LayerKind::Hope => format!(" ({})", config_name(&m.hope.mode)),
    };
    let state = match m.kind {
        LayerKind::Sgconv => String::new(),
        _ => format!(" × N={}", m.d_state),
    };
    format!(
        "{} on {}: {} layer{} × H={}{state}{detail}, batch {}, lr {}",
        m.kind.name(),
        config_name(&cfg.task.name),
        m.n_layers,
        if m.n_layers == 1 { "" } else { "s" },
        m.d_model,
        cfg.train.batch_size,
        cfg.train.lr
    )
}

/// `statespace eval`.
pub fn eval(a: &EvalArgs) -> Result<(), Failure> {
    let make = a.engine.factory()?;
    let (cfg, score) = train::eval_checkpoint_with(&a.checkpoint, a.data.as_deref(), &*make)
        .map_err(Failure::Input)?;
    println!(
        "{} test: loss {:.4}{}",
        statespace_core::model::config_name(&cfg.task.name),
        score.loss,
        score
            .acc
            .map(|a| format!(", accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default()
    );
    Ok(())
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
    /// Refuse the run if its memory estimate exceeds this (e.g. 8G, 512M; default: what the machine
    /// has available: MemAvailable or the cgroup's limit).
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    #[command(flatten)]
    pub engine: super::engine::EngineArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory of the dataset files (overrides the config's task.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub engine: super::engine::EngineArgs,
}
