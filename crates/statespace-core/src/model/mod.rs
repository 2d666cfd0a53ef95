//! The model built from a [`ModelConfig`]: SSM layers, residual blocks, the backbone (encoder →
//! blocks → pooling → decoder) and its streaming runtime.
//!
//! - [`config`]: the `[model]` section, the task's input/output shape, inputs;
//! - [`ssm_layer`]: the SSM layer around a sequence map ([`SsmLayer`]);
//! - [`block`]: the pre-/post-norm residual block ([`SsmBlock`]) and its norms;
//! - [`backbone`]: the whole [`Model`];
//! - [`stream`]: step-by-step inference composed from each layer's step method (no allocation per
//!   step, prompt prefill).

pub mod backbone;
pub mod block;
pub mod config;
pub mod ssm_layer;
pub mod stream;

pub use backbone::Model;
pub use block::{Norm, SsmBlock};
pub use config::{Init, Input, IoShape, LayerKind, ModelConfig, NormKind, config_name};
pub use ssm_layer::{InputNoise, SsmLayer, StepScratch, sequence_map};
pub use stream::Stream;
