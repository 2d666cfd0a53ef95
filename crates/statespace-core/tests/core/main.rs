//! statespace-core's tests, in one binary (each test binary links the engine's generics again):
//!
//! - [`engine`]: every layer's gradients against finite differences (f64), whole models, the
//!   recurrent mode against the convolution mode;
//! - [`kernels`]: every sequence kernel (S4D, S4, S5, SGConv, HOPE, PTD): gradients through the
//!   two shared checks of `common` (one per kernel trait), kernels against the math core's f64
//!   references, recurrent mode against convolution mode;
//! - [`stream`]: the streaming runtime (no allocation per step, prefill);
//! - [`varlen`]: variable-length batches and the two-tower head;
//! - [`optim`]: AdamW, schedules, clipping, checkpoint files;
//! - the `custom_model` example learns copying.

mod common;
mod engine;
mod kernels;
mod optim;
mod stream;
mod varlen;

#[path = "../../examples/custom_model.rs"]
#[allow(dead_code)]
mod custom_model;

#[test]
fn the_custom_model_example_learns_copying() {
    let acc = custom_model::train(1000);
    eprintln!("custom_model: test token accuracy {acc}");
    // chance is 1/4 per symbol
    assert!(acc >= 0.99, "test token accuracy {acc}");
}
