//! `statespace._native`: the torch engine (`statespace-torch`) behind the Python package's modules.
//!
//! A [`Native`] holds one model's structure (config, I/O shape) and its CPU-engine twin. Python owns
//! the parameters (`nn.Parameter`s) and buffers: every call receives them and the Rust-side graph
//! is built from those very tensors (pyo3-tch hands over the same `TensorImpl`), so Python's
//! autograd, `.to(device)`, DDP's gradient hooks and optimizers see an ordinary graph.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use rand::SeedableRng;
use statespace_core::engine::params::ParamKind;
use statespace_core::model::{Input, IoShape, Model, ModelConfig};
use statespace_torch::tensor::to_f64;
use statespace_torch::{TorchInput, TorchModel, TorchOptions};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

mod train;

fn err<E: std::fmt::Display>(e: E) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn group_name(k: ParamKind) -> &'static str {
    match k {
        ParamKind::Weight => "weight",
        ParamKind::NoDecay => "no_decay",
        ParamKind::SsmA => "ssm_a",
        ParamKind::SsmB => "ssm_b",
        ParamKind::SsmDt => "ssm_dt",
    }
}

/// Parameter gradients by name (f64).
type Grads = HashMap<String, Vec<f64>>;

/// One model on the torch engine, its parameters supplied by the caller on every call.
#[pyclass(unsendable)]
struct Native {
    tm: TorchModel,
    cpu: Model<f32>,
    /// The run config of a model read from a run (JSON), if any.
    run_config: Option<String>,
    seq_len: usize,
}

impl Native {
    fn build(
        cfg: &ModelConfig,
        io: IoShape,
        seed: u64,
        run_config: Option<String>,
        seq_len: usize,
    ) -> PyResult<Self> {
        let cpu = Model::<f32>::new(cfg, io, &mut rand::rngs::StdRng::seed_from_u64(seed))
            .map_err(err)?;
        Self::around(cpu, run_config, seq_len)
    }

    fn around(cpu: Model<f32>, run_config: Option<String>, seq_len: usize) -> PyResult<Self> {
        // the autograd graph is Python's: kernels are made with autograd in one graph
        let opts = TorchOptions {
            two_phase: false,
            ..TorchOptions::default()
        };
        let tm = TorchModel::from_cpu(&cpu, Kind::Float, Device::Cpu, opts).map_err(err)?;
        Ok(Self {
            tm,
            cpu,
            run_config,
            seq_len,
        })
    }

    /// Puts the caller's tensors in place of the model's (the same tensors: autograd reaches them).
    fn bind(&mut self, params: &[PyTensor], buffers: &[PyTensor]) -> PyResult<()> {
        let names = self.tm.params.names.clone();
        if params.len() != names.len() {
            return Err(PyValueError::new_err(format!(
                "{} parameters given, the model has {}",
                params.len(),
                names.len()
            )));
        }
        let mut device = None;
        let mut kind = None;
        for (n, p) in names.iter().zip(params) {
            let want = self.tm.params.map[n].size();
            if p.size() != want {
                return Err(PyValueError::new_err(format!(
                    "parameter {n}: shape {:?}, the model needs {want:?}",
                    p.size()
                )));
            }
            device.get_or_insert(p.device());
            kind.get_or_insert(p.kind());
            self.tm.params.map.insert(n.clone(), p.0.shallow_clone());
        }
        let bnames = self.tm.buffers.names.clone();
        if buffers.len() != bnames.len() {
            return Err(PyValueError::new_err(format!(
                "{} buffers given, the model has {}",
                buffers.len(),
                bnames.len()
            )));
        }
        for (n, b) in bnames.iter().zip(buffers) {
            self.tm.buffers.map.insert(n.clone(), b.0.shallow_clone());
        }
        if let Some(d) = device {
            self.tm.device = d;
        }
        match kind {
            Some(k @ (Kind::Float | Kind::Double)) => self.tm.kind = k,
            Some(k) => {
                return Err(PyValueError::new_err(format!(
                    "parameters of dtype {k:?}: statespace models run in float32 or float64"
                )));
            }
            None => {}
        }
        Ok(())
    }

    /// The model's input from `x`, its shape checked (a clear error, not a libtorch abort).
    fn input(&self, x: &Tensor) -> PyResult<TorchInput> {
        let s = x.size();
        if self.tm.io.vocab > 0 {
            if s.len() != 2 {
                return Err(PyValueError::new_err(format!(
                    "input: token ids [batch, length] expected, got shape {s:?}"
                )));
            }
            Ok(TorchInput::Tokens(
                x.to_kind(Kind::Int64).to_device(self.tm.device),
            ))
        } else {
            let c = self.tm.io.d_input as i64;
            if s.len() != 3 || s[1] != c {
                return Err(PyValueError::new_err(format!(
                    "input: [batch, {c}, length] expected (d_input = {c}), got shape {s:?}"
                )));
            }
            Ok(TorchInput::Real(
                x.to_kind(self.tm.kind).to_device(self.tm.device),
            ))
        }
    }

    /// The buffers as they are after a call (BatchNorm's running statistics, S4's `kernel_len`,
    /// SGConv's `kernel_norm` are replaced, not updated in place).
    fn buffer_values(&self) -> Vec<PyTensor> {
        self.tm
            .buffers
            .names
            .iter()
            .map(|n| PyTensor(self.tm.buffers.map[n].detach()))
            .collect()
    }

    /// The names of kernel `prefix`'s parameters, in the model's order.
    fn kernel_names(&self, prefix: &str) -> Vec<String> {
        let under = format!("{prefix}.");
        self.tm
            .params
            .names
            .iter()
            .filter(|n| n.starts_with(&under))
            .cloned()
            .collect()
    }

    /// The kernels a call supplies (the two-phase path), replacing any left by an earlier call.
    fn set_kernels(&mut self, kernels: Option<HashMap<String, PyTensor>>) {
        self.tm.kernel_inputs = kernels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
    }

    fn sync_cpu(&mut self) -> PyResult<()> {
        self.tm.to_cpu(&mut self.cpu).map_err(err)
    }
}

#[pymethods]
impl Native {
    /// A model from a `[model]` table (TOML text) and the task's input/output shape, initialized as
    /// the CPU engine initializes it (the HiPPO/DPLR/PTD numbers of statespace-math) from `seed`.
    #[staticmethod]
    #[pyo3(signature = (model_toml, d_input, vocab, d_output, pair=false, seed=0, seq_len=0))]
    fn from_config(
        model_toml: &str,
        d_input: usize,
        vocab: usize,
        d_output: usize,
        pair: bool,
        seed: u64,
        seq_len: usize,
    ) -> PyResult<Self> {
        let cfg: ModelConfig = toml::from_str(model_toml).map_err(|e| {
            PyValueError::new_err(format!("model config: {}", e.to_string().trim()))
        })?;
        let cfg = if seq_len > 0 {
            cfg.resolved(seq_len)
        } else {
            cfg
        };
        let io = IoShape {
            d_input,
            vocab,
            d_output,
            pair,
        };
        Self::build(&cfg, io, seed, None, seq_len)
    }

    /// The model of a run directory (its best.safetensors) or a checkpoint file.
    #[staticmethod]
    fn from_checkpoint(path: &str) -> PyResult<Self> {
        // the model alone, without its task's data: config, shape and length from the metadata
        let p = Path::new(path);
        let file = if p.is_dir() {
            p.join("best.safetensors")
        } else {
            p.to_path_buf()
        };
        let loaded = statespace_core::engine::checkpoint::load::<f32>(&file).map_err(err)?;
        let (cfg, io) = statespace_train::config_of(&file, &loaded).map_err(err)?;
        let len = loaded
            .meta
            .get("seq_len")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mcfg = if len > 0 {
            cfg.model.resolved(len)
        } else {
            cfg.model.clone()
        };
        let mut model = Model::<f32>::new(&mcfg, io, &mut rand::rngs::StdRng::seed_from_u64(0))
            .map_err(|e| err(format!("{}: {e}", file.display())))?;
        statespace_train::load_weights(&file, &mut model, &loaded).map_err(err)?;
        let json = serde_json::to_string(&cfg).map_err(err)?;
        Self::around(model, Some(json), len)
    }

    /// The run config (JSON) of a model read from a run, else None.
    fn run_config(&self) -> Option<String> {
        self.run_config.clone()
    }

    /// The sequence length the model was built for (0: any).
    fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The model config (JSON).
    fn model_config(&self) -> PyResult<String> {
        serde_json::to_string(&self.cpu.cfg).map_err(err)
    }

    /// `(d_input, vocab, d_output, pair)`.
    fn io(&self) -> (usize, usize, usize, bool) {
        let io = self.tm.io;
        (io.d_input, io.vocab, io.d_output, io.pair)
    }

    /// Parameter names in the checkpoint's order.
    fn param_names(&self) -> Vec<String> {
        self.tm.params.names.clone()
    }

    /// Each parameter's optimizer group: weight, no_decay, ssm_a, ssm_b, ssm_dt.
    fn param_groups(&self) -> Vec<&'static str> {
        self.tm
            .params
            .names
            .iter()
            .map(|n| group_name(self.tm.groups[n]))
            .collect()
    }

    /// The initial (or loaded) parameter values, float32 on the CPU.
    fn param_values(&self) -> Vec<PyTensor> {
        self.tm
            .params
            .names
            .iter()
            .map(|n| PyTensor(self.tm.params.map[n].detach().copy()))
            .collect()
    }

    /// Buffer names (BatchNorm running statistics, S4's kernel_len, SGConv's kernel_norm).
    fn buffer_names(&self) -> Vec<String> {
        self.tm.buffers.names.clone()
    }

    /// The buffers' values, float32 on the CPU.
    fn buffer_values_now(&self) -> Vec<PyTensor> {
        self.tm
            .buffers
            .names
            .iter()
            .map(|n| PyTensor(self.tm.buffers.map[n].detach().copy()))
            .collect()
    }

    /// The prefixes of the convolution kernels (`blocks.i.ssm.kernel`; none for S5), each with the
    /// names of its parameters.
    fn kernel_params(&self) -> Vec<(String, Vec<String>)> {
        self.tm
            .kernel_prefixes()
            .into_iter()
            .map(|kp| {
                let names = self.kernel_names(&kp);
                (kp, names)
            })
            .collect()
    }

    /// Phase one of the two-phase backward: `K [dirs, H, len]` of kernel `prefix` made without
    /// autograd, chunk by chunk. Returns it and the buffers after the call.
    fn make_kernel(
        &mut self,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        prefix: &str,
        len: usize,
    ) -> PyResult<(PyTensor, Vec<PyTensor>)> {
        self.bind(&params, &buffers)?;
        let k = self
            .tm
            .kernel_no_grad(prefix, len)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((PyTensor(k), self.buffer_values()))
    }

    /// Phase two: the gradients of `Σ K·dK` with respect to the parameters of kernel `prefix` (in
    /// the order of `kernel_params`), recomputed chunk by chunk.
    fn kernel_grads(
        &mut self,
        py: Python<'_>,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        prefix: &str,
        len: usize,
        dk: PyTensor,
    ) -> PyResult<Vec<PyTensor>> {
        self.bind(&params, &buffers)?;
        let names = self.kernel_names(prefix);
        // libtorch's autograd engine refuses to run while the GIL is held
        let tm = &mut self.tm;
        let dk = dk.0;
        let g = py
            .allow_threads(move || tm.kernel_grads(prefix, &names, len, &dk))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(g.into_iter().map(PyTensor).collect())
    }

    /// The model's output for `x` (`[B, d_input, L]` reals or `[B, L]` token ids) from the given
    /// parameters and buffers, with autograd; `lengths` (empty: all valid) masks padding. Returns
    /// the output and the buffers after the call.
    /// `kernels` (prefix → `K`) replaces the kernels the forward would make (the two-phase path).
    #[pyo3(signature = (params, buffers, x, lengths, train, seed, kernels=None))]
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        x: PyTensor,
        lengths: Vec<usize>,
        train: bool,
        seed: u64,
        kernels: Option<HashMap<String, PyTensor>>,
    ) -> PyResult<(PyTensor, Vec<PyTensor>)> {
        self.bind(&params, &buffers)?;
        self.set_kernels(kernels);
        let input = self.input(&x)?;
        if let Some(&n) = lengths.iter().find(|&&n| n == 0) {
            return Err(PyValueError::new_err(format!(
                "lengths: {n} (every example needs at least one valid position)"
            )));
        }
        let out = self.tm.forward(&input, &lengths, train, seed);
        self.tm.kernel_inputs.clear();
        let out = out.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((PyTensor(out), self.buffer_values()))
    }

    /// The sequence map of block `prefix`'s SSM layer (`u [B, H, L] → [B, H, L]`, without `D·u`);
    /// `kernels` as in `forward`.
    #[pyo3(signature = (params, buffers, prefix, u, kernels=None))]
    fn sequence_map(
        &mut self,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        prefix: &str,
        u: PyTensor,
        kernels: Option<HashMap<String, PyTensor>>,
    ) -> PyResult<(PyTensor, Vec<PyTensor>)> {
        self.bind(&params, &buffers)?;
        self.set_kernels(kernels);
        let (s, h) = (u.size(), self.tm.cfg.d_model as i64);
        if s.len() != 3 || s[1] != h {
            return Err(PyValueError::new_err(format!(
                "input: [batch, {h}, length] expected (d_model = {h}), got shape {s:?}"
            )));
        }
        let u = u.to_kind(self.tm.kind);
        let y = self.tm.sequence_map(prefix, &u);
        self.tm.kernel_inputs.clear();
        let y = y.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((PyTensor(y), self.buffer_values()))
    }

    /// The CPU engine's output and parameter gradients (float64, from the given parameters rounded
    /// as they are) for `x`, training mode with `seed`, and the output gradient `dout`: the
    /// reference of the parity tests.
    #[allow(clippy::too_many_arguments)]
    fn cpu_reference(
        &mut self,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        x: PyTensor,
        lengths: Vec<usize>,
        dout: PyTensor,
        train: bool,
        seed: u64,
    ) -> PyResult<(Vec<f64>, Grads)> {
        self.bind(&params, &buffers)?;
        self.sync_cpu()?;
        let mut m = Model::<f64>::new(
            &self.cpu.cfg,
            self.cpu.io,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .map_err(err)?;
        for (p, q) in m.store.params.iter_mut().zip(&self.cpu.store.params) {
            p.value = q.value.iter().map(|&v| v as f64).collect();
        }
        for ((_, b), (_, c)) in m.buffers_mut().into_iter().zip(self.cpu.buffers()) {
            *b = c.iter().map(|&v| v as f64).collect();
        }
        m.set_lengths(&lengths);
        let size = x.size();
        let (batch, len) = (size[0] as usize, *size.last().unwrap_or(&0) as usize);
        let examples = if m.io.pair { batch / 2 } else { batch };
        let xs = to_f64(&x);
        let out = if m.io.vocab > 0 {
            let tok: Vec<u32> = xs.iter().map(|&v| v as u32).collect();
            m.forward(Input::Tokens(&tok), examples, len, train, seed)
                .to_vec()
        } else {
            m.forward(Input::Real(&xs), examples, len, train, seed)
                .to_vec()
        };
        let d = to_f64(&dout);
        if d.len() != out.len() {
            return Err(PyValueError::new_err(format!(
                "dout has {} values, the output {}",
                d.len(),
                out.len()
            )));
        }
        m.store.zero_grad();
        m.backward(&d);
        let grads = m
            .store
            .params
            .iter()
            .map(|p| (p.name.clone(), p.grad.clone()))
            .collect();
        Ok((out, grads))
    }

    /// A [`Streamer`] of `batch` streams with the given parameters (causal models only).
    fn stream(
        &mut self,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        batch: usize,
    ) -> PyResult<Streamer> {
        if batch == 0 {
            return Err(PyValueError::new_err("stream: batch must be at least 1"));
        }
        self.bind(&params, &buffers)?;
        self.sync_cpu()?;
        let mut model = Model::<f32>::new(
            &self.cpu.cfg,
            self.cpu.io,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .map_err(err)?;
        self.tm.to_cpu(&mut model).map_err(err)?;
        let st = model.stream(batch).map_err(err)?;
        Ok(Streamer {
            model,
            st,
            x: Vec::new(),
            tok: Vec::new(),
        })
    }

    /// Writes the given parameters and buffers as a checkpoint at `path` (the run-directory
    /// format of docs/checkpoint-format.md; `run_config` JSON, or the model's own).
    #[pyo3(signature = (params, buffers, path, run_config=None))]
    fn save(
        &mut self,
        params: Vec<PyTensor>,
        buffers: Vec<PyTensor>,
        path: &str,
        run_config: Option<String>,
    ) -> PyResult<()> {
        self.bind(&params, &buffers)?;
        self.sync_cpu()?;
        let json = run_config
            .or_else(|| self.run_config.clone())
            .ok_or_else(|| {
                PyValueError::new_err(
                    "save: this model has no run config (built from a [model] table); pass one",
                )
            })?;
        let cfg: statespace_train::RunConfig = serde_json::from_str(&json).map_err(err)?;
        statespace_train::save_weights(Path::new(path), &cfg, &self.cpu, self.seq_len).map_err(err)
    }
}

/// Streams on the CPU engine's lean recurrent runtime: one input vector (or token) per stream per
/// call, no allocation per step. Holds its own copy of the weights at the time it was made.
#[pyclass(unsendable)]
struct Streamer {
    model: Model<f32>,
    st: statespace_core::model::Stream<f32>,
    x: Vec<f32>,
    tok: Vec<u32>,
}

#[pymethods]
impl Streamer {
    /// One step of every stream: `x` is `[batch, d_input]` reals or `[batch]` token ids; returns
    /// `[batch, d_output]`, the output as if each sequence ended here.
    fn step(&mut self, x: PyTensor) -> PyResult<PyTensor> {
        let b = self.st.batch();
        let io = self.model.io;
        let v = to_f64(&x);
        let out = if io.vocab > 0 {
            if v.len() != b {
                return Err(PyValueError::new_err(format!(
                    "step: {b} token ids expected (one per stream), got {}",
                    v.len()
                )));
            }
            if let Some(t) = v.iter().find(|&&t| t < 0.0 || t >= io.vocab as f64) {
                return Err(PyValueError::new_err(format!(
                    "step: token id {t} outside the vocabulary 0…{}",
                    io.vocab - 1
                )));
            }
            self.tok.clear();
            self.tok.extend(v.iter().map(|&t| t as u32));
            self.model
                .stream_step(&mut self.st, Input::Tokens(&self.tok))
        } else {
            if v.len() != b * io.d_input {
                return Err(PyValueError::new_err(format!(
                    "step: [{b}, {}] values expected, got {}",
                    io.d_input,
                    v.len()
                )));
            }
            self.x.clear();
            self.x.extend(v.iter().map(|&t| t as f32));
            self.model.stream_step(&mut self.st, Input::Real(&self.x))
        };
        Ok(PyTensor(
            Tensor::from_slice(out).reshape([b as i64, io.d_output as i64]),
        ))
    }

    /// Steps taken so far.
    fn steps(&self) -> usize {
        self.st.steps()
    }

    /// Back to the state before the first step.
    fn reset(&mut self) {
        self.st.reset();
    }
}

/// A task of statespace-data (generated or read from its standard files), batch by batch.
#[pyclass(unsendable)]
struct Task {
    task: Box<dyn statespace_data::SeqTask>,
    batch: statespace_data::Batch,
}

fn split_of(name: &str) -> PyResult<statespace_data::Split> {
    use statespace_data::Split;
    match name {
        "train" => Ok(Split::Train),
        "val" => Ok(Split::Val),
        "test" => Ok(Split::Test),
        s => Err(PyValueError::new_err(format!(
            "split {s:?}: one of train, val, test"
        ))),
    }
}

#[pymethods]
impl Task {
    /// The task of a run config (TOML text: its `[task]` table, `[train]` seed), its files under
    /// `data_dir` (or the config's `task.data_dir`).
    #[new]
    #[pyo3(signature = (run_config_toml, data_dir=None))]
    fn new(run_config_toml: &str, data_dir: Option<&str>) -> PyResult<Self> {
        let cfg = statespace_train::RunConfig::from_toml(run_config_toml).map_err(err)?;
        let task = statespace_train::build_task(&cfg.task, data_dir.map(Path::new), cfg.train.seed)
            .map_err(err)?;
        Ok(Self {
            task,
            batch: statespace_data::Batch::default(),
        })
    }

    /// Examples in `split`.
    fn size(&self, split: &str) -> PyResult<usize> {
        Ok(self.task.size(split_of(split)?))
    }

    /// `(d_input, vocab, d_output, pair)`: the model shape the task needs.
    fn io(&self) -> (usize, usize, usize, bool) {
        let io = statespace_train::io_shape(self.task.as_ref());
        (io.d_input, io.vocab, io.d_output, io.pair)
    }

    /// A description.
    fn describe(&self) -> String {
        self.task.describe()
    }

    /// The examples `indices` of `split` as one padded batch: `(x, y, lengths)` — `x`
    /// `[B, channels, L]` float32 or `[B, L]` int64 token ids (pair tasks: `2B` rows, the two towers of
    /// each example one after the other), `y` int64 labels (`[B]` or `[B, L]`) or float32 targets
    /// `[B, dims]` (unscored positions of per-position targets: -100, `cross_entropy`'s default
    /// `ignore_index`), `lengths` the valid lengths (empty: all full).
    fn batch(
        &mut self,
        split: &str,
        indices: Vec<usize>,
    ) -> PyResult<(PyTensor, PyTensor, Vec<usize>)> {
        let sp = split_of(split)?;
        let n = self.task.size(sp);
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(PyValueError::new_err(format!(
                "index {i}: the {split} split has {n} examples"
            )));
        }
        if indices.is_empty() {
            return Err(PyValueError::new_err("batch: no indices"));
        }
        self.task.fill(sp, &indices, &mut self.batch).map_err(err)?;
        let (x, y, lengths) = batch_tensors(self.task.as_ref(), &self.batch, indices.len());
        Ok((PyTensor(x), PyTensor(y), lengths))
    }
}

/// `(x, y, lengths)` of a filled batch of `n` examples, as `Task.batch` documents.
fn batch_tensors(
    task: &dyn statespace_data::SeqTask,
    b: &statespace_data::Batch,
    n: usize,
) -> (Tensor, Tensor, Vec<usize>) {
    use statespace_data::{InputSpec, TargetSpec};
    let spec = task.spec();

    let len = if b.len > 0 { b.len } else { spec.len } as i64;
    let x = match spec.input {
        InputSpec::Real { channels } => {
            Tensor::from_slice(&b.real).reshape([-1, channels as i64, len])
        }
        InputSpec::Tokens { .. } => {
            let t: Vec<i64> = b.tokens.iter().map(|&v| v as i64).collect();
            let seqs = t.len() as i64 / len.max(1);
            Tensor::from_slice(&t).reshape([seqs, len])
        }
    };
    let y = match spec.target {
        TargetSpec::Class { .. } => {
            let l: Vec<i64> = b.labels.iter().map(|&v| v as i64).collect();
            Tensor::from_slice(&l)
        }
        TargetSpec::ClassPerPosition { .. } => {
            // unscored positions (statespace_data::IGNORE) as PyTorch's ignore_index, -100
            let l: Vec<i64> = b
                .labels
                .iter()
                .map(|&v| {
                    if v == statespace_data::IGNORE {
                        -100
                    } else {
                        v as i64
                    }
                })
                .collect();
            Tensor::from_slice(&l).reshape([n as i64, -1])
        }
        TargetSpec::Regression { .. } => Tensor::from_slice(&b.targets).reshape([n as i64, -1]),
    };
    (x, y, b.lengths.clone())
}

/// A run config (the TOML of `statespace train --config`, every table) as the JSON checkpoints keep.
#[pyfunction]
fn run_config_json(toml_text: &str) -> PyResult<String> {
    let cfg = statespace_train::RunConfig::from_toml(toml_text).map_err(err)?;
    serde_json::to_string(&cfg).map_err(err)
}

/// The Python module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Native>()?;
    m.add_class::<Streamer>()?;
    m.add_class::<Task>()?;
    m.add_function(wrap_pyfunction!(run_config_json, m)?)?;
    m.add_function(wrap_pyfunction!(train::check_config, m)?)?;
    m.add_function(wrap_pyfunction!(train::run, m)?)?;
    m.add_function(wrap_pyfunction!(train::run_cpu, m)?)?;
    Ok(())
}
