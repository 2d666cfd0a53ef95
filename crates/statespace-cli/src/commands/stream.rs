//! `statespace stream`: a trained causal model step by step, one input per stdin line.

use super::Failure;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct StreamArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Storage of the output projections while stepping: f32 (the model's), or bf16 / f16 (half
    /// the bytes a step reads of them; f32 arithmetic on the rounded weights).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub weights: String,
    /// Directory of the dataset files, if the run's task reads files (overrides task.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

pub fn run(args: &StreamArgs) -> Result<(), Failure> {
    use std::io::Write;
    let (_, model, _) = statespace_train::load_model(&args.checkpoint, args.data.as_deref())
        .map_err(Failure::Input)?;
    let mut st = model
        .stream_with(1, super::half_weights(&args.weights))
        .map_err(|e| {
            Failure::Input(format!(
                "{}: this model cannot run step by step: {e}",
                args.checkpoint.display()
            ))
        })?;
    let (d_in, vocab) = (model.io.d_input, model.io.vocab);
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut x, mut tok, mut line_text) = (vec![0f32; d_in], vec![0u32; 1], String::new());
    let mut stdin = stdin;
    let mut raw = Vec::new();
    for no in 0.. {
        // a line is bounded (a stream of one endless line is refused, not buffered)
        raw.clear();
        let n = statespace_data::read_bounded_line(&mut stdin, &mut raw)
            .map_err(|e| Failure::Input(format!("stdin line {}: {e}", no + 1)))?;
        if n == 0 {
            break;
        }
        let line = std::str::from_utf8(&raw)
            .map_err(|e| Failure::Input(format!("stdin line {}: not UTF-8 ({e})", no + 1)))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let at = |msg: String| Failure::Input(format!("stdin line {}: {msg}", no + 1));
        let y = if vocab > 0 {
            if fields.len() != 1 {
                return Err(at(format!(
                    "expected one token id, found {} fields",
                    fields.len()
                )));
            }
            match fields[0].parse::<u32>() {
                Ok(t) if (t as usize) < vocab => tok[0] = t,
                _ => {
                    return Err(at(format!(
                        "{:?} is not a token id below {vocab}",
                        fields[0]
                    )));
                }
            }
            model.stream_step(&mut st, statespace_core::model::Input::Tokens(&tok))
        } else {
            if fields.len() != d_in {
                return Err(at(format!(
                    "expected {d_in} numbers, found {}",
                    fields.len()
                )));
            }
            for (i, f) in fields.iter().enumerate() {
                x[i] = match f.parse::<f32>() {
                    Ok(v) if v.is_finite() => v,
                    _ => return Err(at(format!("field {}: {f:?} is not a finite number", i + 1))),
                };
            }
            model.stream_step(&mut st, statespace_core::model::Input::Real(&x))
        };
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(Failure::Compute(format!(
                "stdin line {}: output {} is {} (the model overflowed on this input; the \
                 state is lost, restart the stream)",
                no + 1,
                i + 1,
                y[i]
            )));
        }
        line_text.clear();
        for (i, v) in y.iter().enumerate() {
            if i > 0 {
                line_text.push(' ');
            }
            line_text.push_str(&v.to_string());
        }
        line_text.push('\n');
        match out.write_all(line_text.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => {
                return Err(Failure::Compute(format!(
                    "cannot write to standard output: {e}"
                )));
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Compute(format!(
            "cannot write to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}
