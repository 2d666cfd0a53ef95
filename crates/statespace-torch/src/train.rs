//! The torch engine as a training engine of `statespace-train`: the same run loop, run directory,
//! metrics, checkpoints and resume as the CPU engine. Losses and their gradients with respect to the
//! outputs are the CPU engine's functions (`cross_entropy`, `mse`) on the outputs copied to the
//! host (`[B, d_out]`, or `[B, d_out, L]` without pooling); the gradient then flows back through
//! libtorch's autograd. Checkpoints are written from a CPU model kept in sync on request.

use crate::model::{TorchInput, TorchModel, TorchOptions};
use crate::optim::{TorchAdamW, clip_grad_norm};
use crate::tensor::{from_f64, to_f64};
use statespace_core::engine::layers;
use statespace_core::engine::optim::{AdamW, OptimConfig};
use statespace_core::model::Model;
use statespace_data::{Batch, InputSpec, SeqTask, TargetSpec};
use statespace_train::Engine;
use tch::{Device, Kind, Tensor};

/// Fault injection for tests of the non-finite policy: makes the first parameter's first gradient
/// entry NaN (if it has a gradient).
pub fn poison_gradient(model: &TorchModel) {
    let name = &model.params.names[0];
    let g = model.params.map[name].grad();
    if g.defined() {
        tch::no_grad(|| {
            let _ = g.flatten(0, -1).get(0).fill_(f64::NAN);
        });
    }
}

/// Training on libtorch (`--engine torch`).
#[derive(Debug)]
pub struct TorchEngine {
    /// The model on the device.
    pub model: TorchModel,
    /// Its optimizer.
    pub opt: TorchAdamW,
    cpu: Model<f32>,
    cpu_opt: AdamW<f32>,
    dout: Vec<f32>,
}

impl TorchEngine {
    /// The engine for a CPU model and optimizer state (initialized or resumed), in f32 on `device`.
    pub fn new(
        cpu: Model<f32>,
        cpu_opt: AdamW<f32>,
        device: Device,
        opts: TorchOptions,
    ) -> crate::Result<Self> {
        let model = TorchModel::from_cpu(&cpu, Kind::Float, device, opts)?;
        let opt = TorchAdamW::from_cpu(&model, &cpu_opt)?;
        Ok(Self {
            model,
            opt,
            cpu,
            cpu_opt,
            dout: Vec::new(),
        })
    }

    /// The batch's input on the device.
    fn input(&self, task: &dyn SeqTask, batch: &Batch, len: usize) -> TorchInput {
        let dev = self.model.device;
        match task.spec().input {
            InputSpec::Real { .. } => {
                let c = self.model.io.d_input;
                let seqs = batch.real.len() / (c * len).max(1);
                TorchInput::Real(
                    Tensor::from_slice(&batch.real)
                        .reshape([seqs as i64, c as i64, len as i64])
                        .to_device(dev),
                )
            }
            InputSpec::Tokens { .. } => {
                let t: Vec<i64> = batch.tokens.iter().map(|&v| v as i64).collect();
                let seqs = t.len() / len.max(1);
                TorchInput::Tokens(
                    Tensor::from_slice(&t)
                        .reshape([seqs as i64, len as i64])
                        .to_device(dev),
                )
            }
        }
    }
}

impl Engine for TorchEngine {
    fn name(&self) -> String {
        format!("torch {:?}", self.model.device)
    }

    fn batch(
        &mut self,
        task: &dyn SeqTask,
        batch: &Batch,
        n: usize,
        train: bool,
        seed: u64,
    ) -> Result<(f64, usize, usize), String> {
        let spec = task.spec();
        let len = if batch.len > 0 { batch.len } else { spec.len };
        self.model.zero_grad();
        let input = self.input(task, batch, len);
        let out = if train {
            self.model.forward(&input, &batch.lengths, true, seed)
        } else {
            tch::no_grad(|| self.model.forward(&input, &batch.lengths, false, seed))
        }
        .map_err(|e| e.to_string())?;
        let host: Vec<f32> = to_f64(&out).into_iter().map(|v| v as f32).collect();
        let k = self.model.io.d_output;
        let r = match spec.target {
            TargetSpec::Class { .. } => {
                layers::cross_entropy(&host, &batch.labels, n, k, 1, &mut self.dout)
            }
            TargetSpec::ClassPerPosition { .. } => {
                layers::cross_entropy(&host, &batch.labels, n, k, len, &mut self.dout)
            }
            TargetSpec::Regression { .. } => {
                (layers::mse(&host, &batch.targets, &mut self.dout), 0, n)
            }
        };
        if train && r.0.is_finite() {
            let shape: Vec<usize> = out.size().iter().map(|&d| d as usize).collect();
            let d: Vec<f64> = self.dout.iter().map(|&v| v as f64).collect();
            let dt = from_f64(&d, &shape, out.kind(), out.device());
            self.model.backward(&out, &dt).map_err(|e| e.to_string())?;
        }
        Ok(r)
    }

    fn poison_gradient(&mut self) {
        poison_gradient(&self.model);
    }

    fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        clip_grad_norm(&mut self.model, max_norm)
    }

    fn optim_step(&mut self, cfg: &OptimConfig, scale: f64) {
        self.opt.step(&mut self.model, cfg, scale);
    }

    fn state(&mut self) -> Result<(&Model<f32>, &AdamW<f32>), String> {
        self.model
            .to_cpu(&mut self.cpu)
            .map_err(|e| e.to_string())?;
        self.opt.to_cpu(&mut self.cpu_opt);
        Ok((&self.cpu, &self.cpu_opt))
    }

    fn load(
        &mut self,
        load: &mut dyn FnMut(&mut Model<f32>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.model
            .to_cpu(&mut self.cpu)
            .map_err(|e| e.to_string())?;
        load(&mut self.cpu)?;
        self.model
            .load_from_cpu(&self.cpu)
            .map_err(|e| e.to_string())
    }
}
