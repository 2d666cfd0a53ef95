//! The sequence maps on libtorch: each kernel family computes `K [dirs, H, L]` from its parameters
//! with autograd through every operation; [`fftconv`] applies it. S5 is a map of its own.

pub mod discretize;
pub mod fftconv;
pub mod hope;
pub mod s4;
pub mod s4d;
pub mod s5;
pub mod sgconv;

use crate::{Error, Result};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Named tensors: the parameters (leaves with `requires_grad`) or the buffers of a model.
#[derive(Debug, Default)]
pub struct Named {
    /// Names in registration order (the CPU store's order).
    pub names: Vec<String>,
    /// The tensors by name.
    pub map: HashMap<String, Tensor>,
}

impl Named {
    /// Adds `name`.
    pub fn insert(&mut self, name: String, t: Tensor) {
        if !self.map.contains_key(&name) {
            self.names.push(name.clone());
        }
        self.map.insert(name, t);
    }

    /// The tensor `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.map
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("the model has no tensor named {name}")))
    }

    /// Whether `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }
}

/// Where kernels are computed: the device and the real dtype of the kernel math (f64 by default).
#[derive(Debug, Clone, Copy)]
pub struct KernelCtx {
    /// The model's device.
    pub device: Device,
    /// The real dtype of the kernel math.
    pub kind: Kind,
}

impl KernelCtx {
    /// `t` in the kernel dtype (autograd flows through the cast).
    pub fn real(&self, t: &Tensor) -> Tensor {
        t.to_kind(self.kind)
    }

    /// `0, 1, …, n − 1` in the kernel dtype.
    pub fn arange(&self, n: usize) -> Tensor {
        Tensor::arange(n as i64, (self.kind, self.device))
    }
}

/// `−max(exp(log_re), 1e-4)`: the real part of every diagonal parameterization (no gradient at the
/// clamp, as the CPU engine's).
pub fn clamped_real(log_re: &Tensor) -> Tensor {
    -log_re
        .exp()
        .clamp_min(statespace_core::kernels::discretize::MIN_NEG_REAL)
}
