//! The training loop: data order (a function of seed and epoch), steps, validation, checkpoints,
//! metrics lines, the progress bar, exact resume.

use crate::config::RunConfig;
use crate::config::init_threads;
use crate::eval::{TRIM_MULTIPLE, batch_loss, evaluate};
use crate::metrics::Score;
use crate::run_dir::{
    RunLock, State, config_of, load_weights, save_best, save_last, truncate_metrics,
};
use crate::tasks::{build_task, io_shape};
use indicatif::{ProgressBar, ProgressStyle};
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
use std::time::Instant;

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
    // one writer at a time: held until this function returns
    let _lock = RunLock::acquire(dir)?;
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
