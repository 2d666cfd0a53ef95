//! `python -m statespace.train`: statespace-train's run loop — the CLI's, unchanged: data order (a
//! function of seed and epoch), learning-rate schedule, clipping, the non-finite policy, metrics
//! lines, validation, best/last checkpoints, exact resume, the test at the end — driving a Python
//! model through [`PyEngine`], an [`Engine`] whose forward, loss and backward are the Python side's
//! (`statespace.train._Engine`: the torch module, DistributedDataParallel, the collectives).
//!
//! Every rank runs the same loop on the same global batches; the Python side takes its rank's
//! examples of each batch (rank `r` of `K`: examples `r, r + K, …` — the rows a DistributedSampler
//! over the run's order gives), and all-reduces the loss sums and counts, so the loop sees the
//! global batch's loss and every rank makes the same decisions (skip a step, best checkpoint,
//! stop). Clipping and AdamW act on the Python parameters in place (statespace-torch's
//! [`TorchAdamW`], the CLI torch engine's update), after DDP has averaged their gradients.

use crate::{Native, err};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use rand::SeedableRng;
use statespace_core::engine::optim::{AdamW, OptimConfig};
use statespace_core::model::Model;
use statespace_data::{Batch, SeqTask};
use statespace_torch::optim::{TorchAdamW, clip_grad_norm};
use statespace_train::{Engine, Progress, RunConfig, RunOptions};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first Python exception a callback raised: re-raised (with its traceback) when the loop
/// returns its error.
type Raised = Rc<RefCell<Option<PyErr>>>;

/// The training engine whose forward and backward are a Python object's.
struct PyEngine {
    /// `statespace.train._Engine`.
    side: Py<PyAny>,
    /// The model structure, its tensors bound to the Python module's parameters and buffers.
    native: Py<Native>,
    opt: TorchAdamW,
    /// What checkpoints are written from (synced on request).
    cpu: Model<f32>,
    cpu_opt: AdamW<f32>,
    stop: Rc<AtomicBool>,
    raised: Raised,
}

/// Keeps the first Python exception in `raised` (to re-raise with its traceback) and gives its
/// message to the loop.
fn keep(raised: &Raised, e: PyErr) -> String {
    let msg = e.to_string();
    raised.borrow_mut().get_or_insert(e);
    msg
}

impl PyEngine {
    fn keep(&self, e: PyErr) -> String {
        keep(&self.raised, e)
    }

    /// Binds the Python module's current parameters and buffers (a broadcast or an in-place copy
    /// may have changed which tensors hold the latest values).
    fn rebind(&self, py: Python<'_>) -> Result<(), String> {
        let t: (Vec<PyTensor>, Vec<PyTensor>) = self
            .side
            .call_method0(py, "tensors")
            .and_then(|v| v.extract(py))
            .map_err(|e| self.keep(e))?;
        self.native
            .borrow_mut(py)
            .bind(&t.0, &t.1)
            .map_err(|e| self.keep(e))
    }
}

impl Engine for PyEngine {
    fn name(&self) -> String {
        "python".into()
    }

    fn batch(
        &mut self,
        task: &dyn SeqTask,
        batch: &Batch,
        n: usize,
        train: bool,
        seed: u64,
    ) -> Result<(f64, usize, usize), String> {
        Python::with_gil(|py| {
            let (x, y, lengths) = crate::batch_tensors(task, batch, n);
            let r: (f64, usize, usize, bool) = self
                .side
                .call_method1(
                    py,
                    "batch",
                    (PyTensor(x), PyTensor(y), lengths, n, train, seed),
                )
                .and_then(|v| v.extract(py))
                .map_err(|e| self.keep(e))?;
            if r.3 {
                self.stop.store(true, Ordering::SeqCst);
            }
            if train {
                // the two-phase backward binds detached copies; clipping and AdamW need the
                // module's own parameters (their gradients)
                self.rebind(py)?;
            }
            Ok((r.0, r.1, r.2))
        })
    }

    fn poison_gradient(&mut self) {
        Python::with_gil(|py| statespace_torch::train::poison_gradient(&self.native.borrow(py).tm));
    }

    fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        Python::with_gil(|py| clip_grad_norm(&mut self.native.borrow_mut(py).tm, max_norm))
    }

    fn optim_step(&mut self, cfg: &OptimConfig, scale: f64) {
        Python::with_gil(|py| {
            self.opt
                .step(&mut self.native.borrow_mut(py).tm, cfg, scale)
        });
    }

    fn state(&mut self) -> Result<(&Model<f32>, &AdamW<f32>), String> {
        Python::with_gil(|py| {
            self.rebind(py)?;
            self.native
                .borrow(py)
                .tm
                .to_cpu(&mut self.cpu)
                .map_err(|e| e.to_string())
        })?;
        self.opt.to_cpu(&mut self.cpu_opt);
        Ok((&self.cpu, &self.cpu_opt))
    }

    fn load(
        &mut self,
        load: &mut dyn FnMut(&mut Model<f32>) -> Result<(), String>,
    ) -> Result<(), String> {
        Python::with_gil(|py| {
            self.rebind(py)?;
            let mut native = self.native.borrow_mut(py);
            native.tm.to_cpu(&mut self.cpu).map_err(|e| e.to_string())?;
            load(&mut self.cpu)?;
            // in place: the Python module's tensors take the loaded values
            native
                .tm
                .load_from_cpu(&self.cpu)
                .map_err(|e| e.to_string())?;
            drop(native);
            self.side
                .call_method0(py, "loaded")
                .map(drop)
                .map_err(|e| self.keep(e))
        })
    }
}

/// A run config from TOML text with `--set` overrides, errors naming `origin` (the file).
fn config_from(text: &str, origin: &str, sets: &[String]) -> PyResult<RunConfig> {
    let cfg = RunConfig::from_toml(text).map_err(|e| err(format!("{origin}: {e}")))?;
    let cfg = if sets.is_empty() {
        cfg
    } else {
        cfg.with_overrides(sets)
            .map_err(|e| err(format!("{origin}: {e}")))?
    };
    cfg.validate().map_err(|e| err(format!("{origin}: {e}")))?;
    Ok(cfg)
}

/// The run config of `text` (a `statespace train --config` file's TOML, read from `origin`) with the
/// `--set` overrides `sets`, validated; returns it as TOML. Errors name `origin`.
#[pyfunction]
#[pyo3(signature = (text, origin, sets=Vec::new()))]
pub(crate) fn check_config(text: &str, origin: &str, sets: Vec<String>) -> PyResult<String> {
    let cfg = config_from(text, origin, &sets)?;
    toml::to_string(&cfg).map_err(err)
}

fn progress_of(name: &str) -> PyResult<Progress> {
    match name {
        "bar" => Ok(Progress::Bar),
        "lines" => Ok(Progress::Lines),
        "silent" => Ok(Progress::Silent),
        p => Err(PyValueError::new_err(format!(
            "progress {p:?}: one of bar, lines, silent"
        ))),
    }
}

/// Trains (or, `resume`, continues) the run of config `text` (from `origin`, with `sets`) in `dir`
/// with the Python engine `side` (`statespace.train._Engine`); `leader` draws `curves.png` at the
/// end; `on_gpu` skips the host-memory check (the estimate is the CPU engine's). Returns the
/// summary (JSON: outcome, steps, total_steps, best_val, test, seconds, tokens_per_s, …).
#[pyfunction]
#[pyo3(signature = (text, origin, sets, dir, resume, side, data=None, progress="lines", leader=true, on_gpu=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    py: Python<'_>,
    text: &str,
    origin: &str,
    sets: Vec<String>,
    dir: &str,
    resume: bool,
    side: Py<PyAny>,
    data: Option<&str>,
    progress: &str,
    leader: bool,
    on_gpu: bool,
) -> PyResult<String> {
    let cfg = config_from(text, origin, &sets)?;
    let progress = progress_of(progress)?;
    let raised: Raised = Rc::new(RefCell::new(None));
    let stop = Rc::new(AtomicBool::new(false));
    let json = serde_json::to_string(&cfg).map_err(err)?;
    let make = |model: Model<f32>, opt: AdamW<f32>| -> Result<Box<dyn Engine>, String> {
        let keep = |e: PyErr| keep(&raised, e);
        // checkpoints are written from a second CPU model, synced from the Python tensors
        let cpu = Model::<f32>::new(
            &model.cfg,
            model.io,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )?;
        let native = Native::around(model, Some(json.clone()), 0).map_err(keep)?;
        let native = Py::new(py, native).map_err(keep)?;
        let (params, buffers): (Vec<PyTensor>, Vec<PyTensor>) = side
            .call_method1(py, "build", (native.clone_ref(py),))
            .and_then(|v| v.extract(py))
            .map_err(keep)?;
        native
            .borrow_mut(py)
            .bind(&params, &buffers)
            .map_err(keep)?;
        let topt = TorchAdamW::from_cpu(&native.borrow(py).tm, &opt).map_err(|e| e.to_string())?;
        Ok(Box::new(PyEngine {
            side: side.clone_ref(py),
            native,
            opt: topt,
            cpu,
            cpu_opt: opt,
            stop: stop.clone(),
            raised: raised.clone(),
        }))
    };
    // the loop checks the flag after every step; the Python side sets it (through `batch`'s
    // answer) on every rank at the same step
    let summary = statespace_train::run_with_engine(
        &cfg,
        Path::new(dir),
        &RunOptions {
            resume,
            data: data.map(Path::new),
            progress,
            stop: Some(&*stop),
            fault_steps: &[],
            stop_after: None,
            max_memory: on_gpu.then_some(u64::MAX),
        },
        &make,
    );
    let summary = match summary {
        Ok(s) => s,
        Err(msg) => {
            return Err(raised
                .borrow_mut()
                .take()
                .unwrap_or_else(|| PyValueError::new_err(msg)));
        }
    };
    if leader
        && summary.outcome != statespace_train::Outcome::AlreadyFinished
        && let Err(e) = statespace_train::plot_curves(Path::new(dir))
    {
        eprintln!(
            "warning: {}: {e}",
            Path::new(dir).join("curves.png").display()
        );
    }
    serde_json::to_string(&summary).map_err(err)
}

/// The same run on statespace's CPU engine (what `statespace train --config … --out DIR` does, no
/// progress shown): the reference the Python trainer's tests compare with. Returns the summary.
#[pyfunction]
#[pyo3(signature = (text, dir, resume=false))]
pub(crate) fn run_cpu(py: Python<'_>, text: &str, dir: &str, resume: bool) -> PyResult<String> {
    let cfg = config_from(text, "config", &[])?;
    let dir = dir.to_owned();
    let s = py
        .allow_threads(move || {
            statespace_train::run_with(
                &cfg,
                Path::new(&dir),
                &RunOptions {
                    resume,
                    data: None,
                    progress: Progress::Silent,
                    stop: None,
                    fault_steps: &[],
                    stop_after: None,
                    max_memory: None,
                },
            )
        })
        .map_err(err)?;
    serde_json::to_string(&s).map_err(err)
}
