//! `statespace generate`: continue a token prompt (prefill by convolution, then one step per token).

use super::Failure;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The prompt: whitespace-separated token ids.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Sampling temperature; 0 = greedy (argmax).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage of the output projections while stepping: f32 (the model's), or bf16 / f16 (half
    /// the bytes a step reads of them; f32 arithmetic on the rounded weights).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub weights: String,
    /// Directory of the dataset files, if the run's task reads files (overrides task.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// The most tokens one call generates.
pub const MAX_STEPS: usize = 1 << 24;

pub fn run(args: &GenerateArgs) -> Result<(), Failure> {
    use rand::{Rng, SeedableRng};
    use statespace_core::model::Input;
    let ck = args.checkpoint.display();
    if args.steps > MAX_STEPS {
        return Err(Failure::Input(format!(
            "--steps: at most {MAX_STEPS} tokens per call, got {}",
            args.steps
        )));
    }
    let (_, mut model, _) = statespace_train::load_model(&args.checkpoint, args.data.as_deref())
        .map_err(Failure::Input)?;
    let (vocab, k) = (model.io.vocab, model.io.d_output);
    if vocab == 0 {
        return Err(Failure::Input(format!(
            "{ck}: the model reads real-valued inputs; generate needs a token model (use `stream`)"
        )));
    }
    if model.cfg.pool != statespace_core::engine::layers::Pool::None || k != vocab {
        return Err(Failure::Input(format!(
            "{ck}: generate needs a next-token model (pool = \"none\", one class per token: \
             d_output = vocab); this one has pool = \"{}\", {k} outputs for {vocab} tokens",
            statespace_core::model::config_name(&model.cfg.pool)
        )));
    }
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(Failure::Input(format!(
            "--temperature: {} is not a number ≥ 0",
            args.temperature
        )));
    }
    let mut prompt = Vec::new();
    for (i, f) in args.prompt.split_whitespace().enumerate() {
        match f.parse::<u32>() {
            Ok(t) if (t as usize) < vocab => prompt.push(t),
            _ => {
                return Err(Failure::Input(format!(
                    "--prompt: token {} ({f:?}) is not a token id below {vocab}",
                    i + 1
                )));
            }
        }
    }
    if prompt.is_empty() {
        return Err(Failure::Input("--prompt: no token ids".into()));
    }
    let mut st = model
        .stream_with(1, super::half_weights(&args.weights))
        .map_err(|e| Failure::Input(format!("{ck}: this model cannot run step by step: {e}")))?;
    let len = prompt.len();
    let per_pos = model
        .prefill(&mut st, Input::Tokens(&prompt), len)
        .map_err(|e| Failure::Compute(e.to_string()))?;
    // logits at the last prompt position: [1, K, L] → column L − 1
    let mut logits: Vec<f32> = (0..k).map(|c| per_pos[c * len + len - 1]).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut out = Vec::new();
    for step in 0..args.steps {
        if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
            return Err(Failure::Compute(format!(
                "generated token {}: logit {i} is {} (the model overflowed)",
                step + 1,
                logits[i]
            )));
        }
        let tok = if args.temperature == 0.0 {
            logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
                )
                .0
        } else {
            // softmax(logits / T), sampled by its CDF
            let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let w: Vec<f64> = logits
                .iter()
                .map(|v| ((*v as f64 - mx) / args.temperature).exp())
                .collect();
            let mut r = rng.random::<f64>() * w.iter().sum::<f64>();
            let mut pick = w.len() - 1;
            for (i, p) in w.iter().enumerate() {
                if r < *p {
                    pick = i;
                    break;
                }
                r -= p;
            }
            pick
        } as u32;
        out.push(tok);
        logits.copy_from_slice(model.stream_step(&mut st, Input::Tokens(&[tok])));
    }
    let text: Vec<String> = out.iter().map(|t| t.to_string()).collect();
    println!("{}", text.join(" "));
    Ok(())
}
