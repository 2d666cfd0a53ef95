//! Runs on the torch engine (on the CPU, or on `STATESPACE_TORCH_TEST_DEVICE`): the training loop, run directory and checkpoints
//! are the CPU engine's, so a run switches engines at a checkpoint; and the torch engine learns.

use statespace_core::engine::optim::AdamW;
use statespace_data::Split;
use statespace_torch::{TorchEngine, TorchOptions};
use statespace_train::{self as train, CpuEngine, Engine, Outcome, RunConfig};
use std::path::Path;
use tch::Device;

/// The device the torch engine runs on in these tests: `STATESPACE_TORCH_TEST_DEVICE` (`cuda`,
/// `cuda:N`; the GPU check script sets it), else the CPU.
fn device() -> Device {
    match std::env::var("STATESPACE_TORCH_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        Ok(d) if d.starts_with("cuda:") => Device::Cuda(d[5..].parse().expect("cuda:N")),
        _ => Device::Cpu,
    }
}

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
    TorchEngine::new(m, o, device(), TorchOptions::default())
        .map(|e| Box::new(e) as Box<dyn Engine>)
        .map_err(|e| e.to_string())
}

fn torch_bf16(
    m: statespace_core::model::Model<f32>,
    o: AdamW<f32>,
) -> Result<Box<dyn Engine>, String> {
    let opts = TorchOptions {
        bf16_matmul: true,
        ..TorchOptions::default()
    };
    TorchEngine::new(m, o, device(), opts)
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
    let mut t = TorchEngine::new(model, opt, device(), TorchOptions::default()).unwrap();
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

/// `--precision bf16`: the linear layers multiply in bfloat16. It learns as f32 does, and the same
/// weights score within bf16's rounding of the f32 loss — but not identically (the option acts).
#[test]
fn bf16_matmuls_learn_copying_within_bf16_rounding_of_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run(tmp.path(), false, None, &torch_bf16);
    assert_eq!(s.outcome, Outcome::Finished);
    let acc = s.test.unwrap().acc.unwrap();
    assert!(
        acc >= 0.99,
        "torch engine, bf16 matmuls: test accuracy {acc}"
    );
    let loss = |bf16: bool| {
        let opts = TorchOptions {
            bf16_matmul: bf16,
            ..TorchOptions::default()
        };
        let (_, m, task) = train::load_model(&tmp.path().join("last.safetensors"), None).unwrap();
        let opt = AdamW::new(&m.store);
        let mut e = TorchEngine::new(m, opt, device(), opts).unwrap();
        train::evaluate_with(task.as_ref(), Split::Val, 32, Some(64), &mut |b, n| {
            e.batch(task.as_ref(), b, n, false, 0)
        })
        .unwrap()
        .loss
    };
    let (l32, l16) = (loss(false), loss(true));
    let rel = (l16 - l32).abs() / l32.abs().max(1e-3);
    eprintln!("val loss f32 {l32:.6e}, bf16 matmuls {l16:.6e}, |Δ|/|f32| {rel:.2e}");
    // bf16 keeps 8 significant bits (unit roundoff 2⁻⁹ ≈ 2e-3): the loss moves, but by little
    assert!(
        rel > 1e-6,
        "bf16 matmuls gave the f32 loss exactly ({l16} vs {l32})"
    );
    assert!(
        (l16 - l32).abs() <= 0.05 * l32.abs() + 1e-3,
        "bf16 loss {l16} vs f32 {l32}"
    );
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
