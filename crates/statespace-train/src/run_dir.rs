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

pub(crate) struct State {
    pub(crate) step: usize,
    pub(crate) best_val: Option<Score>,
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
    /// Takes the lock of `dir` (which must exist), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        use std::io::{Read, Seek, Write};
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
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("process {pid}"),
                };
                Err(format!(
                    "{}: {holder} is writing this run; wait for it to finish or use another --out",
                    dir.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("{}: cannot lock the run: {e}", path.display()))
            }
        }
    }
}
