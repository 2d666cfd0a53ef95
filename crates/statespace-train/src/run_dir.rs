//! The files of a run directory: `best.safetensors` / `last.safetensors` (weights, buffers, AdamW
//! moments, the config as metadata) and `metrics.jsonl`; loading a trained model back, scoring it
//! on the test split and the PTD paper's robustness test.

use crate::config::RunConfig;
use crate::config::init_threads;
use crate::eval::evaluate;
use crate::metrics::Score;
use crate::tasks::{build_task, io_shape};
use rand::SeedableRng;
use rand::rngs::StdRng;
use statespace_core::engine::checkpoint;
use statespace_core::engine::optim::AdamW;
use statespace_core::model::{IoShape, Model};
use statespace_data::{SeqTask, Split};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

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

pub(crate) fn save_last(
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
            ("log_window", st.window.to_json()),
            ("seq_len", st.seq_len.to_string()),
        ],
    );
    Ok(checkpoint::save(
        &dir.join("last.safetensors"),
        &tensors,
        m,
    )?)
}

pub(crate) fn save_best(
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
            ("seq_len", st.seq_len.to_string()),
            (
                "val",
                serde_json::to_string(&val).expect("score serializes"),
            ),
        ],
    );
    Ok(checkpoint::save(
        &dir.join("best.safetensors"),
        &model_tensors(model),
        m,
    )?)
}

/// Writes `model`'s weights and buffers with the run config `cfg` as a checkpoint at `path` (the
/// layout of `best.safetensors`, docs/checkpoint-format.md; `seq_len` the length the model was
/// built for, 0 if any): what the Python package's `Model.save` writes.
pub fn save_weights(
    path: &Path,
    cfg: &RunConfig,
    model: &Model<f32>,
    seq_len: usize,
) -> Result<(), String> {
    if cfg.model != model.cfg && cfg.model.resolved(seq_len.max(1)) != model.cfg {
        return Err(format!(
            "{}: the run config's [model] table is not this model's",
            path.display()
        ));
    }
    let m = meta(cfg, model.io, &[("seq_len", seq_len.to_string())]);
    Ok(checkpoint::save(path, &model_tensors(model), m)?)
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
    let mut cfg: RunConfig =
        serde_json::from_str(c).map_err(|e| format!("{name}: metadata \"config\": {e}"))?;
    // fields the kind does not read had no effect (checkpoints from before they were refused)
    cfg.model = cfg.model.without_unused_fields();
    let io = loaded
        .meta
        .get("io")
        .ok_or_else(|| format!("{name}: metadata has no \"io\""))?;
    let io: IoShape =
        serde_json::from_str(io).map_err(|e| format!("{name}: metadata \"io\": {e}"))?;
    cfg.validate()
        .map_err(|e| format!("{name}: the stored config: {e}"))?;
    for (f, v, max) in [
        ("d_input", io.d_input, 1usize << 16),
        ("vocab", io.vocab, 1 << 24),
        ("d_output", io.d_output, 1 << 24),
    ] {
        if v > max {
            return Err(format!("{name}: metadata \"io\": {f} = {v} exceeds {max}"));
        }
    }
    Ok((cfg, io))
}

pub(crate) fn truncate_metrics(path: &Path, step: usize) -> Result<(), String> {
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
    Ok(checkpoint::write_atomic(path, keep.as_bytes())?)
}

/// A trained model and its run config without its dataset (see [`load_model`]), and the run's
/// sequence length: from the checkpoint's `seq_len` metadata, or (checkpoints written before it
/// existed) from the task, which then needs its data (`data` overrides the data directory).
pub fn load_model_only(
    path: &Path,
    data: Option<&Path>,
) -> Result<(RunConfig, Model<f32>, usize), String> {
    let file = checkpoint_file(path);
    let loaded = checkpoint::load::<f32>(&file)?;
    let (cfg, io) = config_of(&file, &loaded)?;
    let stored = loaded
        .meta
        .get("seq_len")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&l| l > 0);
    let len = match stored {
        Some(l) => l,
        None => {
            let (_, model, task) = load_model(path, data)?;
            return Ok((cfg, model, task.spec().len));
        }
    };
    init_threads(cfg.train.threads);
    let est = crate::memory::estimate_model(&cfg, io, len, 0.0, false)?;
    crate::memory::check(&est, None).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut model = Model::<f32>::new(&cfg.model.resolved(len), io, &mut StdRng::seed_from_u64(0))?;
    load_weights(&file, &mut model, &loaded)?;
    Ok((cfg, model, len))
}

fn checkpoint_file(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        path.join("best.safetensors")
    } else {
        path.to_path_buf()
    }
}

/// A run's config, its trained model and its task.
pub type LoadedRun = (RunConfig, Model<f32>, Box<dyn SeqTask>);

/// A trained model from a run directory (its best.safetensors) or a checkpoint file, with its run
/// config and task (`data` overrides the dataset directory).
pub fn load_model(path: &Path, data: Option<&Path>) -> Result<LoadedRun, String> {
    let file = checkpoint_file(path);
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
    let est = crate::memory::estimate_run(&cfg, task.as_ref(), 0.0, false)?;
    crate::memory::check(&est, None).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut model = Model::<f32>::new(
        &cfg.model.resolved(task.spec().len),
        io,
        &mut StdRng::seed_from_u64(0),
    )?;
    load_weights(&file, &mut model, &loaded)?;
    Ok((cfg, model, task))
}

/// The training metrics accumulated since the last metrics line (kept in `last`, so the first line
/// after a resume is the uninterrupted run's whatever `checkpoint_every` and `log_every` are).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Window {
    /// Sum of the step losses.
    pub(crate) loss: f64,
    pub(crate) correct: usize,
    pub(crate) count: usize,
    /// Steps whose loss is in `loss`.
    pub(crate) steps: usize,
    /// Steps skipped for a non-finite loss or gradient.
    pub(crate) skipped: usize,
}

impl Window {
    pub(crate) fn add(&mut self, loss: f64, correct: usize, counted: usize) {
        self.loss += loss;
        self.correct += correct;
        self.count += counted;
        self.steps += 1;
    }

    fn to_json(self) -> String {
        // the loss sum as its bits: a decimal round trip may differ in the last place
        serde_json::json!({"loss_bits": self.loss.to_bits(), "correct": self.correct,
            "count": self.count, "steps": self.steps, "skipped": self.skipped})
        .to_string()
    }

    fn from_json(path: &Path, text: &str) -> Result<Self, String> {
        let bad = || format!("{}: metadata \"log_window\" is malformed", path.display());
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
        let n = |k: &str| v[k].as_u64().ok_or_else(bad);
        Ok(Self {
            loss: f64::from_bits(n("loss_bits")?),
            correct: n("correct")? as usize,
            count: n("count")? as usize,
            steps: n("steps")? as usize,
            skipped: n("skipped")? as usize,
        })
    }
}

/// Where a run stands: what `last.safetensors` keeps besides tensors.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub(crate) step: usize,
    pub(crate) best_val: Option<Score>,
    pub(crate) optim_t: u64,
    pub(crate) window: Window,
    /// The step `last.safetensors` holds (this process's knowledge).
    pub(crate) last_saved: usize,
    /// The task's sequence length (stored, so that commands reading the run need no dataset).
    pub(crate) seq_len: usize,
}

impl State {
    /// Reads the state from `last`'s metadata (checkpoints written before `log_window` existed
    /// resume with an empty window).
    pub(crate) fn from_meta(path: &Path, meta: &HashMap<String, String>) -> Result<Self, String> {
        let num = |k: &str| -> Result<u64, String> {
            meta.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                format!(
                    "{}: metadata \"{k}\" missing or not a number",
                    path.display()
                )
            })
        };
        let step = num("step")? as usize;
        let best_val = match meta.get("best_val").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(score_of(s).ok_or_else(|| {
                format!("{}: metadata \"best_val\" is malformed", path.display())
            })?),
        };
        let window = match meta.get("log_window") {
            None => Window::default(),
            Some(t) => Window::from_json(path, t)?,
        };
        Ok(Self {
            step,
            best_val,
            optim_t: num("optim_t")?,
            window,
            last_saved: step,
            seq_len: meta
                .get("seq_len")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

fn score_of(text: &str) -> Option<Score> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let loss = v["loss"].as_f64()?;
    Some(Score {
        loss,
        acc: v["acc"].as_f64(),
    })
}

/// The test score of a finished run: its `metrics.jsonl` line with `test_loss` at `step`.
pub(crate) fn finished_test_line(path: &Path, step: usize) -> Result<Option<Score>, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    Ok(text.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["step"].as_u64()? as usize == step).then_some(())?;
        Some(Score {
            loss: v["test_loss"].as_f64()?,
            acc: v["test_acc"].as_f64(),
        })
    }))
}

/// The fields in which two run configs differ (`section.key: a → b`, at most 5 named), ignoring
/// `task.data_dir` (where the data lies is not part of what was trained), or `None`.
pub fn config_diff(stored: &RunConfig, now: &RunConfig) -> Option<String> {
    fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, x) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, x, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let flat = |c: &RunConfig| {
        let mut c = c.clone();
        c.task.data_dir = None;
        let mut out = Vec::new();
        flatten(
            "",
            &toml::Value::try_from(&c).expect("a config is TOML"),
            &mut out,
        );
        out.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (flat(stored), flat(now));
    let none = "(unset)".to_string();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: the run has {}, this config {}",
                a.get(k).unwrap_or(&none),
                b.get(k).unwrap_or(&none)
            )
        })
        .collect();
    match diffs.len() {
        0 => None,
        n if n > 5 => Some(format!("{}; and {} more", diffs[..5].join("; "), n - 5)),
        _ => Some(diffs.join("; ")),
    }
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

/// [`eval_checkpoint`] on the engine `make` builds (`statespace eval --engine torch`): the test
/// split in eval mode, batch by batch through [`Engine::batch`](crate::Engine::batch).
pub fn eval_checkpoint_with(
    path: &Path,
    data: Option<&Path>,
    make: crate::EngineFactory<'_>,
) -> Result<(RunConfig, Score), String> {
    let (cfg, model, task) = load_model(path, data)?;
    let opt = statespace_core::engine::optim::AdamW::new(&model.store);
    let mut engine = make(model, opt)?;
    let score = crate::evaluate_with(
        task.as_ref(),
        Split::Test,
        cfg.train.eval_batch_size,
        None,
        &mut |b, n| engine.batch(task.as_ref(), b, n, false, 0),
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

/// An exclusive lock on a run directory, held while a process writes the run (`DIR/.lock`, an
/// advisory `flock`). The operating system releases it when the holder exits in any way (`kill -9`
/// included), so a lock left by a dead process never blocks the next run; the file keeps the
/// holder's pid for the message a second writer gets.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Says which process holds the lock of `dir`, if one does, without taking it or creating a
    /// lock file: `--resume` asks this before it reads the run's files, which a live first writer
    /// may not have written yet.
    pub fn check_free(dir: &Path) -> Result<(), String> {
        let path = dir.join(".lock");
        if !path.is_file() {
            return Ok(());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| format!("{}: cannot open the run's lock: {e}", path.display()))?;
        match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => Err(Self::held(dir, file)),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("{}: cannot lock the run: {e}", path.display()))
            }
        }
    }

    fn held(dir: &Path, mut file: std::fs::File) -> String {
        use std::io::Read;
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another process".to_string(),
            pid => format!("process {pid}"),
        };
        format!(
            "{}: {holder} is writing this run; wait for it to finish or use another --out",
            dir.display()
        )
    }

    /// Takes the lock of `dir` (which must exist), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        use std::io::{Seek, Write};
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: cannot open the run's lock: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                let pid = std::process::id();
                file.set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{pid}"))
                    .and_then(|()| file.flush())
                    .map_err(|e| format!("{}: cannot write the run's lock: {e}", path.display()))?;
                Ok(Self { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Self::held(dir, file)),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("{}: cannot lock the run: {e}", path.display()))
            }
        }
    }
}

/// Writes `metrics.csv` beside `metrics.jsonl`: one row per line, the keys as columns (in the
/// order they first appear), empty cells where a line lacks a key. Written atomically.
pub fn write_metrics_csv(dir: &Path) -> Result<(), String> {
    let src = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", src.display(), no + 1))?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{} line {}: not an object", src.display(), no + 1))?
            .clone();
        for k in obj.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        rows.push(obj);
    }
    if let Some(i) = columns.iter().position(|c| c == "step") {
        let step = columns.remove(i);
        columns.insert(0, step);
    }
    let mut out = columns.join(",");
    out.push('\n');
    for r in &rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match r.get(c) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(x) => x.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    Ok(checkpoint::write_atomic(
        &dir.join("metrics.csv"),
        out.as_bytes(),
    )?)
}
