//! `statespace robustness`: the PTD paper's Fourier-mode noise test on a trained checkpoint.

use super::{Failure, emit};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct RobustnessArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory of the dataset files (overrides the config's task.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Noise amplitude (times U[0,1) per sample and channel).
    #[arg(long, default_value_t = 0.1)]
    pub amplitude: f64,
    /// Angular frequency of the noise.
    #[arg(long, default_value_t = 325.4)]
    pub freq: f64,
    /// Seed of the noise amplitudes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &RobustnessArgs) -> Result<(), Failure> {
    for (flag, v) in [("--amplitude", args.amplitude), ("--freq", args.freq)] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(Failure::Input(format!(
                "{flag}: must be a finite number ≥ 0, got {v}"
            )));
        }
    }
    let noise = statespace_core::model::InputNoise {
        amplitude: args.amplitude,
        freq: args.freq,
        seed: args.seed,
    };
    let (cfg, clean, noisy) =
        statespace_train::robustness(&args.checkpoint, args.data.as_deref(), noise)
            .map_err(Failure::Input)?;
    let show = |s: &statespace_train::Score| match s.acc {
        Some(a) => format!("accuracy {:.2}% (loss {:.4})", 100.0 * a, s.loss),
        None => format!("loss {:.5}", s.loss),
    };
    let drop = match (clean.acc, noisy.acc) {
        (Some(a), Some(b)) => format!("accuracy drop {:.2} points", 100.0 * (a - b)),
        _ => format!("loss increase {:.5}", noisy.loss - clean.loss),
    };
    emit(&format!(
        "{} on {}: clean {}; with {}·U[0,1)·cos({}·t) before every layer {}; {drop}\n",
        cfg.model.kind.name(),
        statespace_core::model::config_name(&cfg.task.name),
        show(&clean),
        args.amplitude,
        args.freq,
        show(&noisy)
    ))
}
