//! `statespace`: structured state space sequence models from the command line.
//!
//! Exit status: 0 on success, 2 for bad input (arguments, files), 1 for a failure of the
//! computation itself.

// The doc comments of the argument structs are the `--help` text clap prints: `<task>` there is
// a placeholder for the reader, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

mod commands;
use statespace_train::plot;
mod ssm_file;

use clap::{Parser, Subcommand};
use commands::*;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "statespace",
    version,
    about = "Structured state space sequence models (HiPPO, S4, S4D, …): train them, evaluate them, inspect their operators and kernels",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a HiPPO operator: its transition (A, B), or its DPLR / diagonal form as an SSM file.
    Hippo(hippo::HippoArgs),
    /// Compute (and optionally plot) the convolution kernel K_l = C Ā^l B̄, l = 0 … L−1.
    Kernel(kernel::KernelArgs),
    /// Train a model from a TOML config (or resume a run directory).
    #[command(after_long_help = train::CONFIG_HELP)]
    Train(train::TrainArgs),
    /// Evaluate a run's best checkpoint on the test split.
    Eval(train::EvalArgs),
    /// The frequency response H(e^{iω}) = Σ_l K_l e^{−iωl} of a kernel (|H| and phase), same sources
    /// as `kernel`.
    Transfer(kernel::KernelArgs),
    /// The PTD paper's robustness test: test accuracy with 0.1·U[0,1)·cos(325.4·t) added before every
    /// SSM layer (t on each channel's Δ grid), next to the clean accuracy.
    Robustness(robustness::RobustnessArgs),
    /// Run (or load from the cache) the PTD perturbation of LegS for state size N and report cond(V),
    /// ‖E‖/‖A‖ and the transfer-function error against LegS next to S4D-LegS's.
    Ptd(ptd::PtdArgs),
    /// Reproduce a paper's claim: train and measure, then write a markdown table (with the command,
    /// time and seed) and a PNG figure to docs/repro/NAME.{md,png}; `--quick` checks the plumbing
    /// on generated data in under 2 minutes.
    Repro(repro::ReproArgs),
    /// Train a Long Range Arena task with a model kind and the papers' hyperparameters
    /// (configs/lra/<task>-<model>.toml, built in) and report its test accuracy next to the published one.
    Lra(lra::LraArgs),
    /// Run a trained causal model step by step: one input per stdin line (d_in whitespace-separated
    /// numbers, or one token id), one output line (d_out numbers) per input, no allocation per step.
    Stream(stream::StreamArgs),
    /// Continue a token prompt with a causal model trained on a next-token task (per-position classes
    /// over its own vocabulary): the prompt runs in convolution mode, then one token per step
    /// (greedy, or sampled with --temperature), printed as token ids.
    Generate(generate::GenerateArgs),
    /// Measure this machine's FMA peak, the S4D kernel, the FFT convolution, a training step (and its
    /// growth with L) and the recurrent step; print a table (with peer ratios from `--peers`), write
    /// JSON. Build with `--release`.
    Bench(bench::BenchArgs),
    /// Generate benchmark datasets in their standard layouts (ListOps TSV files, …).
    #[command(subcommand)]
    Data(data::DataCommand),
}

// counts heap bytes, so a run's memory is measured on probes before it allocates (statespace-train's
// memory module)
#[global_allocator]
static ALLOC: statespace_train::memory::CountingAlloc = statespace_train::memory::CountingAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // a forced instruction set the CPU cannot run is bad input, not a silent fallback
    if let Err(e) = statespace_core::engine::simd::isa_from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Hippo(a) => hippo::run(&a),
        Command::Kernel(a) => kernel::run(&a),
        Command::Transfer(a) => transfer::run(&a),
        Command::Robustness(a) => robustness::run(&a),
        Command::Ptd(a) => ptd::run(&a),
        Command::Data(c) => data::run(&c).map_err(Failure::Input),
        Command::Lra(a) => lra::run(&a),
        Command::Repro(a) => repro::run(&a),
        Command::Stream(a) => stream::run(&a),
        Command::Bench(a) => bench::run(&a).map_err(Failure::Input),
        Command::Generate(a) => generate::run(&a),
        Command::Train(a) => train::train(&a),
        Command::Eval(a) => train::eval(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Compute(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Stopped(m)) => {
            eprintln!("{m}");
            ExitCode::from(130)
        }
    }
}
