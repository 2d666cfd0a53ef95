//! Where a run's forward, backward and optimizer step execute: the [`Engine`] the training loop
//! drives. [`CpuEngine`] is statespace's own engine; `statespace-torch` implements the trait on
//! libtorch (GPUs). Both keep the run directory's format: checkpoints are written from the CPU
//! engine's [`Model`] and [`AdamW`] state, which an engine syncs on request, so a run trained on one
//! engine resumes on the other.

use crate::eval::batch_loss;
use statespace_core::engine::optim::{self, AdamW, OptimConfig};
use statespace_core::model::Model;
use statespace_data::{Batch, SeqTask};

/// What the training loop needs from an engine.
pub trait Engine {
    /// A name for messages: `cpu`, `torch cuda:0`, …
    fn name(&self) -> String;

    /// Zeroes the gradients, runs the forward pass and the loss of `batch` (`n` examples; `train`
    /// selects training mode, `seed` drives dropout) and, in training mode with a finite loss, the
    /// backward pass. Returns `(loss, correct, counted)` as [`batch_loss`].
    fn batch(
        &mut self,
        task: &dyn SeqTask,
        batch: &Batch,
        n: usize,
        train: bool,
        seed: u64,
    ) -> Result<(f64, usize, usize), String>;

    /// Fault injection for tests of the non-finite policy: makes one gradient entry NaN.
    fn poison_gradient(&mut self);

    /// Scales the gradients to global norm `max_norm` if they exceed it (0: never); returns the norm
    /// before clipping.
    fn clip_grad_norm(&mut self, max_norm: f64) -> f64;

    /// One AdamW step at learning-rate scale `scale`.
    fn optim_step(&mut self, cfg: &OptimConfig, scale: f64);

    /// The model and optimizer as the CPU engine holds them, synced from the engine: what the
    /// checkpoints store.
    fn state(&mut self) -> Result<(&Model<f32>, &AdamW<f32>), String>;

    /// Replaces the engine's weights and buffers by those `load` writes into the (synced) CPU model.
    fn load(
        &mut self,
        load: &mut dyn FnMut(&mut Model<f32>) -> Result<(), String>,
    ) -> Result<(), String>;
}

/// statespace's own engine: the model and optimizer in this process's memory, hand-written
/// backward, rayon threads.
#[derive(Debug)]
pub struct CpuEngine {
    /// The model.
    pub model: Model<f32>,
    /// Its optimizer.
    pub opt: AdamW<f32>,
    dout: Vec<f32>,
}

impl CpuEngine {
    /// The engine around a model and its optimizer state.
    pub fn new(model: Model<f32>, opt: AdamW<f32>) -> Self {
        Self {
            model,
            opt,
            dout: Vec::new(),
        }
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn batch(
        &mut self,
        task: &dyn SeqTask,
        batch: &Batch,
        n: usize,
        train: bool,
        seed: u64,
    ) -> Result<(f64, usize, usize), String> {
        self.model.store.zero_grad();
        let r = batch_loss(&mut self.model, task, batch, n, train, seed, &mut self.dout);
        if train && r.0.is_finite() {
            self.model.backward(&self.dout);
        }
        Ok(r)
    }

    fn poison_gradient(&mut self) {
        self.model.store.params[0].grad[0] = f32::NAN;
    }

    fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        optim::clip_grad_norm(&mut self.model.store, max_norm)
    }

    fn optim_step(&mut self, cfg: &OptimConfig, scale: f64) {
        self.opt.step(&mut self.model.store, cfg, scale);
    }

    fn state(&mut self) -> Result<(&Model<f32>, &AdamW<f32>), String> {
        Ok((&self.model, &self.opt))
    }

    fn load(
        &mut self,
        load: &mut dyn FnMut(&mut Model<f32>) -> Result<(), String>,
    ) -> Result<(), String> {
        load(&mut self.model)
    }
}
