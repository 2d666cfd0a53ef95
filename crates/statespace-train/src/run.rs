//! The training loop: data order (a function of seed and epoch), steps, validation, checkpoints,
//! metrics lines, progress (a bar on a terminal, plain lines otherwise), a stop request (Ctrl-C)
//! that saves, exact resume.

use crate::config::{NonFinite, RunConfig, init_threads};
use crate::engine::{CpuEngine, Engine};
use crate::eval::{TRIM_MULTIPLE, evaluate_with};
use crate::metrics::Score;
use crate::run_dir::{
    RunLock, State, config_diff, config_of, finished_test_line, load_weights, save_best, save_last,
    truncate_metrics, write_metrics_csv,
};
use crate::tasks::{build_task, io_shape};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use statespace_core::engine::checkpoint;
use statespace_core::engine::layers;
use statespace_core::engine::optim::{self, AdamW};
use statespace_core::model::Model;
use statespace_data::{Batch, SeqTask, Split, TargetSpec};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Trained to its last step and scored on the test split.
    Finished,
    /// `--resume` of a run that had already finished: nothing was done.
    AlreadyFinished,
    /// Stopped on request (Ctrl-C, SIGTERM) after a step; `last` holds that step.
    Stopped,
}

/// What a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How it ended.
    pub outcome: Outcome,
    /// Steps done (in all, not only in this invocation).
    pub steps: usize,
    /// The run's last step.
    pub total_steps: usize,
    /// Best validation score (so far).
    pub best_val: Score,
    /// Test score of the best checkpoint (`None` for a stopped run).
    pub test: Option<Score>,
    /// Wall time of this invocation (seconds).
    pub seconds: f64,
    /// Training throughput of this invocation (sequence positions per second).
    pub tokens_per_s: f64,
    /// Steps skipped for a non-finite loss or gradient (`train.nonfinite = "skip"`), this invocation.
    pub skipped: usize,
    /// The memory estimate made before the run allocated its data and model (bytes).
    pub memory_estimate: f64,
    /// The process's peak resident set at the end (bytes), where the OS says.
    pub peak_rss: Option<u64>,
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar on stderr (for a terminal).
    Bar,
    /// One plain line on stderr per `log_every` steps and per validation (for logs and pipes).
    Lines,
    /// Nothing.
    Silent,
}

/// Options of [`run_with`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Continue the run from its `last.safetensors`.
    pub resume: bool,
    /// The dataset directory (overrides `task.data_dir`; recorded in the run as an absolute path).
    pub data: Option<&'a Path>,
    /// Progress display.
    pub progress: Progress,
    /// Checked after every step: once true, the run writes `last` and returns
    /// [`Outcome::Stopped`] (a signal handler sets it).
    pub stop: Option<&'a AtomicBool>,
    /// Fault injection for tests of the non-finite policy: at these (0-based) steps the gradient
    /// is made NaN after the backward pass.
    #[doc(hidden)]
    pub fault_steps: &'a [usize],
    /// For tests of interruption: stop (as on a signal) once the run has done this many steps.
    #[doc(hidden)]
    pub stop_after: Option<usize>,
    /// Refuse the run when its memory estimate exceeds this many bytes (default: what the machine
    /// has available, see [`crate::memory::available`]).
    pub max_memory: Option<u64>,
}

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

/// Seconds left when `done` of the steps of this invocation took `elapsed` seconds and `remaining`
/// steps are left (`None` before the first step). Only this invocation's steps count, so a resumed
/// run's estimate is not inflated by the steps it loaded.
pub fn eta_seconds(done: usize, elapsed: f64, remaining: usize) -> Option<f64> {
    (done > 0).then(|| elapsed / done as f64 * remaining as f64)
}

/// `1h02m03s`, `4m05s`, `7s`.
pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// Scores `split` on an engine in evaluation mode.
fn evaluate_engine(
    engine: &mut dyn Engine,
    task: &dyn SeqTask,
    split: Split,
    batch_size: usize,
) -> Result<crate::metrics::Score, String> {
    evaluate_with(task, split, batch_size, None, &mut |b, n| {
        engine.batch(task, b, n, false, 0)
    })
}

/// Trains (or resumes) the run in `dir`; `quiet` shows nothing, otherwise a progress bar.
pub fn run(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    data: Option<&Path>,
    quiet: bool,
) -> Result<Summary, String> {
    run_with(
        cfg,
        dir,
        &RunOptions {
            resume,
            data,
            progress: if quiet {
                Progress::Silent
            } else {
                Progress::Bar
            },
            stop: None,
            fault_steps: &[],
            stop_after: None,
            max_memory: None,
        },
    )
}

/// The progress display: a bar or plain lines.
struct Reporter {
    bar: ProgressBar,
    lines: bool,
}

impl Reporter {
    fn new(progress: Progress, start: usize, stop: usize) -> Self {
        let bar = if progress == Progress::Bar {
            ProgressBar::new((stop - start) as u64)
        } else {
            ProgressBar::hidden()
        };
        // the bar counts this invocation's steps (so its ETA is this invocation's rate) and shows
        // the run's step
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {step}/{steps} steps · eta {eta} · {msg}",
            )
            .expect("valid template")
            .with_key(
                "step",
                move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", s.pos() as usize + start);
                },
            )
            .with_key(
                "steps",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{stop}");
                },
            )
            .progress_chars("=> "),
        );
        Self {
            bar,
            lines: progress == Progress::Lines,
        }
    }

    fn println(&self, line: String) {
        if self.lines {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// Builds the engine a run trains on from the initialized (or resumed) CPU model and optimizer.
pub type EngineFactory<'a> = &'a dyn Fn(Model<f32>, AdamW<f32>) -> Result<Box<dyn Engine>, String>;

/// Trains (or resumes) the run in `dir` on the CPU engine.
pub fn run_with(cfg: &RunConfig, dir: &Path, opts: &RunOptions) -> Result<Summary, String> {
    run_with_engine(cfg, dir, opts, &|m, o| Ok(Box::new(CpuEngine::new(m, o))))
}

/// Trains (or resumes) the run in `dir` on the engine `make` builds (the CPU engine's model and
/// optimizer state, initialized or loaded from `last`, are handed to it).
pub fn run_with_engine(
    cfg: &RunConfig,
    dir: &Path,
    opts: &RunOptions,
    make: EngineFactory<'_>,
) -> Result<Summary, String> {
    cfg.validate()?;
    init_threads(cfg.train.threads);
    let t0 = Instant::now();
    // the run records where its data lies, as an absolute path
    let mut cfg = cfg.clone();
    if let Some(d) = opts
        .data
        .map(Path::to_path_buf)
        .or(cfg.task.data_dir.clone())
    {
        cfg.task.data_dir =
            Some(std::path::absolute(&d).map_err(|e| format!("{}: {e}", d.display()))?);
    }
    let cfg = &cfg;
    // memory before allocation: a generated task is estimated from a small probe of itself before
    // it is generated; a task read from files is read first (its bytes are then resident)
    let memory = match crate::memory::probe_task(cfg)? {
        Some((small, data)) => {
            let est = crate::memory::estimate_run(cfg, small.as_ref(), data, true)?;
            crate::memory::check(&est, opts.max_memory)?;
            Some(est)
        }
        None => None,
    };
    let task = build_task(&cfg.task, None, cfg.train.seed)?;
    let memory = match memory {
        Some(m) => m,
        None => {
            let est = crate::memory::estimate_run(cfg, task.as_ref(), 0.0, true)?;
            crate::memory::check(&est, opts.max_memory)?;
            est
        }
    };
    if opts.progress != Progress::Silent {
        eprintln!("memory: {memory}");
    }
    for split in [Split::Train, Split::Val, Split::Test] {
        if task.size(split) == 0 {
            return Err(format!(
                "the {} split of {} is empty: {}",
                split.name(),
                statespace_core::model::config_name(&cfg.task.name),
                match split {
                    Split::Train => "check the data directory or task.train_size",
                    Split::Val => "set task.val_size to at least 1",
                    Split::Test => "check the data directory or task.test_size",
                }
            ));
        }
    }
    let io = io_shape(task.as_ref());
    let mut rng = StdRng::seed_from_u64(cfg.train.seed);
    let mut model = Model::<f32>::new(&cfg.model.resolved(task.spec().len), io, &mut rng)?;
    let mut opt = AdamW::new(&model.store);
    let mut st = State {
        seq_len: task.spec().len,
        ..State::default()
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the run directory: {e}", dir.display()))?;
    // one writer at a time: held until this function returns
    let _lock = RunLock::acquire(dir)?;
    let last = dir.join("last.safetensors");
    let metrics_path = dir.join("metrics.jsonl");
    let tc = &cfg.train;
    let n_train = task.size(Split::Train);
    let spe = n_train / tc.batch_size;
    if spe == 0 {
        return Err(format!(
            "train.batch_size = {} exceeds the {n_train} training examples",
            tc.batch_size
        ));
    }
    let total = spe
        .checked_mul(tc.epochs)
        .ok_or_else(|| format!("train.epochs = {}: too many steps", tc.epochs))?;
    let stop = tc.max_steps.map_or(total, |m| m.min(total));
    if opts.resume {
        let loaded = checkpoint::load::<f32>(&last)?;
        let (stored, _) = config_of(&last, &loaded)?;
        if let Some(diff) = config_diff(&stored, cfg) {
            return Err(format!(
                "{}: the run was started with a different config ({diff}); resume with the \
                 run's own config.toml",
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
        st = State {
            seq_len: st.seq_len,
            ..State::from_meta(&last, &loaded.meta)?
        };
        opt.t = st.optim_t;
        truncate_metrics(&metrics_path, st.step)?;
        if st.step >= stop
            && let Some(test) = finished_test_line(&metrics_path, st.step)?
        {
            return Ok(Summary {
                outcome: Outcome::AlreadyFinished,
                steps: st.step,
                total_steps: stop,
                best_val: st.best_val.unwrap_or_default(),
                test: Some(test),
                seconds: t0.elapsed().as_secs_f64(),
                tokens_per_s: 0.0,
                skipped: 0,
                memory_estimate: memory.total(),
                peak_rss: crate::memory::peak_rss(),
            });
        }
    } else if last.exists() {
        return Err(format!(
            "{} already holds a run: use --resume {} or another --out",
            dir.display(),
            dir.display()
        ));
    } else {
        let _ = std::fs::remove_file(&metrics_path);
    }
    let mut engine = make(model, opt)?;
    let toml_text = toml::to_string(cfg).map_err(|e| e.to_string())?;
    checkpoint::write_atomic(&dir.join("config.toml"), toml_text.as_bytes())?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| format!("{}: {e}", metrics_path.display()))?;
    let mut log = |v: serde_json::Value| -> Result<(), String> {
        writeln!(metrics, "{v}")
            .and_then(|_| metrics.flush())
            .map_err(|e| format!("{}: {e}", metrics_path.display()))
    };

    let optim_cfg = cfg.optim();
    let start_step = st.step;
    let rep = Reporter::new(opts.progress, start_step.min(stop), stop);
    let classify = !matches!(task.spec().target, TargetSpec::Regression { .. });
    let mut batch = Batch::default();
    let mut order: Option<(usize, Vec<usize>)> = None;
    let t_train = Instant::now();
    // sequence positions computed (after cutting each batch to its longest sequence)
    let mut positions = 0usize;
    let mut skipped = 0usize;
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
        let seed =
            layers::splitmix64(tc.seed ^ (st.step as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        // zero_grad, forward, loss and (for a finite loss) backward
        let (loss, correct, counted) =
            engine.batch(task.as_ref(), &batch, tc.batch_size, true, seed)?;
        // a non-finite loss or gradient never reaches the weights
        let bad = if !loss.is_finite() {
            Some(format!("the loss is {loss}"))
        } else {
            if opts.fault_steps.contains(&st.step) {
                engine.poison_gradient();
            }
            let norm = engine.clip_grad_norm(tc.grad_clip);
            (!norm.is_finite()).then(|| format!("the gradient norm is {norm}"))
        };
        let scale = optim::schedule(st.step, tc.warmup_steps, total, tc.min_lr_ratio);
        match bad {
            Some(what) if tc.nonfinite == NonFinite::Error => {
                return Err(format!(
                    "step {} (epoch {}): {what}; lower train.lr, set train.grad_clip, or set \
                     train.nonfinite = \"skip\" to skip such steps ({})",
                    st.step + 1,
                    epoch + 1,
                    if last.exists() {
                        format!("last.safetensors holds step {}", st.last_saved)
                    } else {
                        "no checkpoint was written yet".into()
                    }
                ));
            }
            Some(_) => {
                st.window.skipped += 1;
                skipped += 1;
            }
            None => {
                engine.optim_step(&optim_cfg, scale);
                st.window.add(loss, correct, counted);
            }
        }
        st.step += 1;
        let elapsed = t_train.elapsed().as_secs_f64();
        let tps = positions as f64 / elapsed.max(1e-9);
        if st.step.is_multiple_of(tc.log_every) || st.step == stop {
            let w = std::mem::take(&mut st.window);
            let acc = (classify && w.count > 0).then(|| w.correct as f64 / w.count as f64);
            let l = (w.steps > 0).then(|| w.loss / w.steps as f64);
            let eta = eta_seconds(st.step - start_step, elapsed, stop - st.step)
                .map(format_duration)
                .unwrap_or_default();
            let shown = format!(
                "epoch {} · loss {}{}{} · {:.0} tok/s",
                epoch + 1,
                l.map_or("-".into(), |l| format!("{l:.4}")),
                acc.map(|a| format!(" · acc {:.2}%", 100.0 * a))
                    .unwrap_or_default(),
                if w.skipped > 0 {
                    format!(" · {} skipped", w.skipped)
                } else {
                    String::new()
                },
                tps
            );
            if rep.lines {
                eprintln!("step {}/{stop} · {shown} · eta {eta}", st.step);
            }
            rep.bar.set_message(shown);
            log(
                serde_json::json!({"step": st.step, "epoch": epoch, "lr": tc.lr * scale,
                "loss": l, "acc": acc, "skipped": w.skipped, "tokens_per_s": tps}),
            )?;
        }
        rep.bar.set_position((st.step - start_step) as u64);
        let epoch_end = st.step.is_multiple_of(spe) || st.step == stop;
        if epoch_end {
            let val = evaluate_engine(
                engine.as_mut(),
                task.as_ref(),
                Split::Val,
                tc.eval_batch_size,
            )?;
            let better = st.best_val.is_none_or(|b| val.key() > b.key());
            if better {
                st.best_val = Some(val);
                save_best(dir, cfg, engine.state()?.0, &st, val)?;
            }
            log(
                serde_json::json!({"step": st.step, "epoch": epoch, "val_loss": val.loss, "val_acc": val.acc, "best": better}),
            )?;
            write_metrics_csv(dir)?;
            rep.println(format!(
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
        let stopping = (opts.stop.is_some_and(|s| s.load(Ordering::SeqCst))
            || opts.stop_after.is_some_and(|n| st.step >= n))
            && st.step < stop;
        if epoch_end || st.step.is_multiple_of(tc.checkpoint_every) || stopping {
            let (model, opt) = engine.state()?;
            st.optim_t = opt.t;
            save_last(dir, cfg, model, opt, &st)?;
            st.last_saved = st.step;
        }
        if stopping {
            rep.bar.finish_and_clear();
            write_metrics_csv(dir)?;
            return Ok(Summary {
                outcome: Outcome::Stopped,
                steps: st.step,
                total_steps: stop,
                best_val: st.best_val.unwrap_or_default(),
                test: None,
                seconds: t0.elapsed().as_secs_f64(),
                tokens_per_s: positions as f64 / t_train.elapsed().as_secs_f64().max(1e-9),
                skipped,
                memory_estimate: memory.total(),
                peak_rss: crate::memory::peak_rss(),
            });
        }
    }
    rep.bar.finish_and_clear();
    let tokens_per_s = positions as f64 / t_train.elapsed().as_secs_f64().max(1e-9);
    // The test set, once, with the best checkpoint (a run stopped before its first validation,
    // e.g. train.max_steps = 0, is validated now so that there is one).
    let best_path = dir.join("best.safetensors");
    if st.best_val.is_none() || !best_path.exists() {
        let val = evaluate_engine(
            engine.as_mut(),
            task.as_ref(),
            Split::Val,
            tc.eval_batch_size,
        )?;
        st.best_val = Some(val);
        save_best(dir, cfg, engine.state()?.0, &st, val)?;
    }
    let loaded = checkpoint::load::<f32>(&best_path)?;
    engine.load(&mut |m| load_weights(&best_path, m, &loaded))?;
    let test = evaluate_engine(
        engine.as_mut(),
        task.as_ref(),
        Split::Test,
        tc.eval_batch_size,
    )?;
    log(serde_json::json!({"step": st.step, "test_loss": test.loss, "test_acc": test.acc}))?;
    write_metrics_csv(dir)?;
    Ok(Summary {
        outcome: Outcome::Finished,
        steps: st.step,
        total_steps: stop,
        best_val: st.best_val.unwrap_or_default(),
        test: Some(test),
        seconds: t0.elapsed().as_secs_f64(),
        tokens_per_s,
        skipped,
        memory_estimate: memory.total(),
        peak_rss: crate::memory::peak_rss(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_counts_only_this_invocations_steps() {
        // resumed at step 900 of 1000, 10 steps in 2 s: 90 steps left at 0.2 s each
        assert_eq!(eta_seconds(10, 2.0, 90), Some(18.0));
        assert_eq!(eta_seconds(0, 0.0, 90), None);
        assert_eq!(format_duration(3723.0), "1h02m03s");
        assert_eq!(format_duration(245.0), "4m05s");
        assert_eq!(format_duration(7.2), "7s");
    }
}
