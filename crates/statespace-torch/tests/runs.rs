//! Runs on the torch engine (on the CPU device): the training loop, run directory and checkpoints
//! are the CPU engine's, so a run switches engines at a checkpoint; and the torch engine learns.

use statespace_core::engine::optim::AdamW;
use statespace_data::Split;
use statespace_torch::{TorchEngine, TorchOptions};
use statespace_train::{self as train, CpuEngine, Engine, Outcome, RunConfig};
use std::path::Path;
use tch::Device;

/// Copying 10 symbols across 50 blanks: both engines reach ≥ 99 % in 500 steps.
const COPYING: &str = r#"
[task]
name = "copying"
copy_tokens = 10
blanks = 50
alphabet = 10
train_size = 4000
val_size = 300
test_size = 500

[model]
kind = "s4d"
d_model = 32
n_layers = 2
d_state = 32
pool = "none"

[train]
epochs = 4
batch_size = 32
lr = 0.004
weight_decay = 0.0
warmup_steps = 50
threads = 2
"#;

fn cfg() -> RunConfig {
    RunConfig::from_toml(COPYING).unwrap()
}

fn torch(m: statespace_core::model::Model<f32>, o: AdamW<f32>) -> Result<Box<dyn Engine>, String> {
    TorchEngine::new(m, o, Device::Cpu, TorchOptions::default())
        .map(|e| Box::new(e) as Box<dyn Engine>)
        .map_err(|e| e.to_string())
}

fn cpu(m: statespace_core::model::Model<f32>, o: AdamW<f32>) -> Result<Box<dyn Engine>, String> {
    Ok(Box::new(CpuEngine::new(m, o)))
}

fn run(
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    make: train::EngineFactory<'_>,
) -> train::Summary {
    train::run_with_engine(
        &cfg(),
        dir,
        &train::RunOptions {
            resume,
            data: None,
            progress: train::Progress::Silent,
            stop: None,
            fault_steps: &[],
            stop_after,
            max_memory: None,
        },
        make,
    )
    .unwrap()
}

/// The validation loss of the first 64 examples of the weights in `file`, on both engines.
fn val_loss_on_both(file: &Path) -> (f64, f64) {
    let (_, model, task) = train::load_model(file, None).unwrap();
    let opt = AdamW::new(&model.store);
    let mut c = CpuEngine::new(model, opt);
    let (_, model, _) = train::load_model(file, None).unwrap();
    let opt = AdamW::new(&model.store);
    let mut t = TorchEngine::new(model, opt, Device::Cpu, TorchOptions::default()).unwrap();
    let score = |e: &mut dyn Engine| {
        train::evaluate_with(task.as_ref(), Split::Val, 32, Some(64), &mut |b, n| {
            e.batch(task.as_ref(), b, n, false, 0)
        })
        .unwrap()
        .loss
    };
    (score(&mut c), score(&mut t))
}

#[test]
fn the_torch_engine_learns_copying() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run(tmp.path(), false, None, &torch);
    assert_eq!(s.outcome, Outcome::Finished);
    let acc = s.test.unwrap().acc.unwrap();
    assert!(acc >= 0.99, "torch engine: test accuracy {acc}");
}

#[test]
fn a_run_switches_engines_at_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = run(&tmp.path().join("cpu"), false, None, &cpu);
    let ref_acc = reference.test.unwrap().acc.unwrap();
    for (name, first, then) in [
        (
            "torch→cpu",
            &torch as train::EngineFactory<'_>,
            &cpu as train::EngineFactory<'_>,
        ),
        ("cpu→torch", &cpu, &torch),
    ] {
        let dir = tmp.path().join(name.replace('→', "-"));
        let s = run(&dir, false, Some(50), first);
        assert_eq!(s.outcome, Outcome::Stopped, "{name}");
        assert_eq!(s.steps, 50);
        // the weights at the switch score the same on both engines
        let (lc, lt) = val_loss_on_both(&dir.join("last.safetensors"));
        let rel = (lc - lt).abs() / lc.abs();
        eprintln!("{name}: eval loss at the switch {lc} (cpu) vs {lt} (torch), rel {rel:.2e}");
        assert!(
            rel <= 1e-5,
            "{name}: eval loss {lc} (cpu) vs {lt} (torch), rel {rel:e}"
        );
        let s = run(&dir, true, None, then);
        assert_eq!(s.outcome, Outcome::Finished, "{name}");
        let acc = s.test.unwrap().acc.unwrap();
        eprintln!("{name}: test accuracy {acc} (uninterrupted CPU run {ref_acc})");
        assert!(
            acc >= 0.99 && (acc - ref_acc).abs() <= 0.01,
            "{name}: test accuracy {acc}, uninterrupted CPU run {ref_acc}"
        );
    }
}
