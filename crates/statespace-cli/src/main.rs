//! `statespace`: structured state space sequence models from the command line.
//!
//! Exit status: 0 on success, 2 for bad input (arguments, files), 1 for a failure of the
//! computation itself.

mod bench_cmd;
mod data_cmd;
mod lra_cmd;
mod plot;
mod ssm_file;
mod train_cmd;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use ssm_file::SsmFile;
use statespace_math::discretize::Discretization;
use statespace_math::dplr::Dplr;
use statespace_math::hippo::{self, Measure};
use statespace_math::kernel::DiagonalSystem;
use statespace_math::s4d::{self, DiagInit};
use statespace_math::{C64, kernel, linalg};
use std::path::PathBuf;
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
    Hippo(HippoArgs),
    /// Compute (and optionally plot) the convolution kernel K_l = C Ā^l B̄, l = 0 … L−1.
    Kernel(KernelArgs),
    /// Train a model from a TOML config (or resume a run directory).
    #[command(after_long_help = train_cmd::CONFIG_HELP)]
    Train(TrainArgs),
    /// Evaluate a run's best checkpoint on the test split.
    Eval(EvalArgs),
    /// The frequency response H(e^{iω}) = Σ_l K_l e^{−iωl} of a kernel (|H| and phase), same sources
    /// as `kernel`.
    Transfer(KernelArgs),
    /// The PTD paper's robustness test: test accuracy with 0.1·U[0,1)·cos(325.4·t) added before every
    /// SSM layer (t on each channel's Δ grid), next to the clean accuracy.
    Robustness(RobustnessArgs),
    /// Run (or load from the cache) the PTD perturbation of LegS for state size N and report cond(V),
    /// ‖E‖/‖A‖ and the transfer-function error against LegS next to S4D-LegS's.
    Ptd(PtdArgs),
    /// Train a Long Range Arena task with a model kind and the papers' hyperparameters
    /// (configs/lra/<task>-<model>.toml, built in) and report its test accuracy next to the published one.
    Lra(lra_cmd::LraArgs),
    /// Run a trained causal model step by step: one input per stdin line (d_in whitespace-separated
    /// numbers, or one token id), one output line (d_out numbers) per input, no allocation per step.
    Stream(StreamArgs),
    /// Continue a token prompt with a causal model trained on a next-token task (per-position classes
    /// over its own vocabulary): the prompt runs in convolution mode, then one token per step
    /// (greedy, or sampled with --temperature), printed as token ids.
    Generate(GenerateArgs),
    /// Measure this machine's FMA peak, the S4D kernel, the FFT convolution, a training step (and its
    /// growth with L) and the recurrent step; print a table (with peer ratios from `--peers`), write
    /// JSON. Build with `--release`.
    Bench(bench_cmd::BenchArgs),
    /// Generate benchmark datasets in their standard layouts (ListOps TSV files, …).
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
}

#[derive(Args)]
struct GenerateArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The prompt: whitespace-separated token ids.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Sampling temperature; 0 = greedy (argmax).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory of the dataset files, if the run's task reads files (overrides task.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct StreamArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the dataset files, if the run's task reads files (overrides task.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct PtdArgs {
    /// State size N (even).
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the output row C ~ N(0, 1) used for the transfer functions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RobustnessArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the dataset files (overrides the config's task.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Noise amplitude (times U[0,1) per sample and channel).
    #[arg(long, default_value_t = 0.1)]
    amplitude: f64,
    /// Angular frequency of the noise.
    #[arg(long, default_value_t = 325.4)]
    freq: f64,
    /// Seed of the noise amplitudes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct TrainArgs {
    /// The run configuration (see `statespace train --help` for every field).
    #[arg(long, conflicts_with = "resume", required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last.safetensors (same config, same result).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Override a config field, e.g. --set train.lr=0.004 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Directory of the dataset files (overrides task.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory (default runs/<config name>).
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// A run directory (its best.safetensors) or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Directory of the dataset files (overrides the config's task.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum MeasureArg {
    Legs,
    Legt,
    Lagt,
    Glagt,
    Fout,
    Foud,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq)]
enum Form {
    /// The real transition (A, B), sign convention x' = Ax + Bu.
    Dense,
    /// The DPLR form on N/2 modes (a "dplr" SSM file, C = first coordinate).
    Dplr,
    /// The diagonal part of the DPLR form (S4D-style; a "diagonal" SSM file, C = first coordinate).
    Diagonal,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct HippoArgs {
    /// The measure.
    #[arg(long, value_enum)]
    measure: MeasureArg,
    /// State size N.
    #[arg(long)]
    n: usize,
    /// glagt only: exponent α of the measure x^α e^{−x}, in (−1, 1).
    #[arg(long, default_value_t = 0.0)]
    alpha: f64,
    /// glagt only: tilt β > 0.
    #[arg(long, default_value_t = 0.01)]
    beta: f64,
    /// What to print: dense (A, B), or the dplr / diagonal form as an SSM file for `kernel --from`.
    #[arg(long, value_enum, default_value_t = Form::Dense)]
    form: Form,
    /// Step size written into dplr / diagonal SSM files.
    #[arg(long, default_value_t = 0.01)]
    dt: f64,
    /// Print JSON: {"a": [[…]], "b": […]} (row-major f64) for the dense form, an SSM file otherwise.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq)]
enum DiscArg {
    Zoh,
    Bilinear,
    Dss,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct KernelArgs {
    /// An SSM file: {"kind": "diagonal" | "dplr" | "dense", "dt": …, …} (see the README).
    #[arg(long, conflicts_with_all = ["init", "model", "checkpoint"], required_unless_present_any = ["init", "model", "checkpoint"])]
    from: Option<PathBuf>,
    /// An init: S4D (B = 1, C ~ complex normal from --seed): legs, inv, lin, quad, real, rand; with
    /// --model s4 a HiPPO operator: legs, legt, lagt, fout.
    #[arg(long, conflicts_with = "checkpoint")]
    init: Option<String>,
    /// A layer kind, freshly initialized with one channel: s4, s4d, s4-ptd, s5, s5-ptd, sgconv, hope.
    #[arg(long, conflicts_with = "checkpoint")]
    model: Option<String>,
    /// A trained run directory (or checkpoint file): the kernel of --layer, --channel.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Block of the checkpoint's model.
    #[arg(long, requires = "checkpoint", default_value_t = 0)]
    layer: usize,
    /// Channel of that block.
    #[arg(long, requires = "checkpoint", default_value_t = 0)]
    channel: usize,
    /// Dataset directory of the checkpoint's task (overrides its task.data_dir).
    #[arg(long, requires = "checkpoint")]
    data: Option<PathBuf>,
    /// State size N for --init / --model (N/2 complex modes).
    #[arg(long)]
    n: Option<usize>,
    /// Step size for --init / --model (files carry their own "dt").
    #[arg(long, default_value_t = 0.01)]
    dt: f64,
    /// Seed of C (and of the rand init) for --init / --model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Kernel length L.
    #[arg(long)]
    length: usize,
    /// zoh (default for diagonal and dense), bilinear (dplr: the only one), dss (diagonal only).
    #[arg(long, value_enum)]
    discretization: Option<DiscArg>,
    /// Print {"kernel": […]} instead of one value a line.
    #[arg(long)]
    json: bool,
    /// Also draw the kernel into this PNG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// A failure: bad input (exit 2) or a failed computation (exit 1).
enum Failure {
    Input(String),
    Compute(String),
}

impl From<ssm_file::InputError> for Failure {
    fn from(e: ssm_file::InputError) -> Self {
        Failure::Input(e.to_string())
    }
}

impl From<statespace_math::MathError> for Failure {
    fn from(e: statespace_math::MathError) -> Self {
        match e {
            statespace_math::MathError::Invalid(m) => Failure::Input(m),
            statespace_math::MathError::Numerical(m) => Failure::Compute(m),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hippo(a) => run_hippo(&a),
        Command::Kernel(a) => run_kernel(&a),
        Command::Transfer(a) => run_transfer(&a),
        Command::Robustness(a) => run_robustness(&a),
        Command::Ptd(a) => run_ptd(&a),
        Command::Data(c) => data_cmd::run(&c).map_err(Failure::Input),
        Command::Lra(a) => lra_cmd::run(&a).map_err(Failure::Input),
        Command::Stream(a) => run_stream(&a),
        Command::Bench(a) => bench_cmd::run(&a).map_err(Failure::Input),
        Command::Generate(a) => run_generate(&a),
        Command::Train(a) => train_cmd::train(
            a.config.as_deref(),
            a.resume.as_deref(),
            &a.sets,
            a.data.as_deref(),
            a.out.as_deref(),
            a.quiet,
        )
        .map_err(Failure::Input),
        Command::Eval(a) => {
            train_cmd::eval(&a.checkpoint, a.data.as_deref()).map_err(Failure::Input)
        }
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
    }
}

fn measure_of(a: &HippoArgs) -> Measure {
    match a.measure {
        MeasureArg::Legs => Measure::LegS,
        MeasureArg::Legt => Measure::LegT,
        MeasureArg::Lagt => Measure::LagT,
        MeasureArg::Glagt => Measure::GLagT {
            alpha: a.alpha,
            beta: a.beta,
        },
        MeasureArg::Fout => Measure::FouT,
        MeasureArg::Foud => Measure::FouD,
    }
}

/// Formats a value exactly (shortest round-trip) and readably.
fn fmt_value(x: f64) -> String {
    let ax = x.abs();
    if x == 0.0 || (1e-4..1e6).contains(&ax) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

fn split(z: &[C64]) -> (Vec<f64>, Vec<f64>) {
    (
        z.iter().map(|c| c.re).collect(),
        z.iter().map(|c| c.im).collect(),
    )
}

fn run_hippo(args: &HippoArgs) -> Result<(), Failure> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let measure = measure_of(args);
    let n = args.n;
    if args.form == Form::Dense {
        let (a, b) = hippo::transition(measure, n)?;
        if args.json {
            let _ = writeln!(out, "{}", json!({ "a": linalg::rmat_to_rows(&a), "b": b }));
        } else {
            let _ = writeln!(out, "HiPPO-{measure}, N = {n}, x' = A x + B u");
            let _ = writeln!(out, "A =");
            for row in linalg::rmat_to_rows(&a) {
                let cells: Vec<String> = row.iter().map(|x| format!("{x:>11.5}")).collect();
                let _ = writeln!(out, "{}", cells.join(" "));
            }
            let _ = writeln!(out, "B =");
            for x in &b {
                let _ = writeln!(out, "{x:>11.5}");
            }
            if let Ok(p) = hippo::low_rank(measure, n) {
                let _ = writeln!(out, "P (rank {}, A + PPᵀ normal) =", p.len());
                for row in p {
                    let cells: Vec<String> = row.iter().map(|x| format!("{x:>11.5}")).collect();
                    let _ = writeln!(out, "{}", cells.join(" "));
                }
            }
        }
        return emit(&out);
    }
    if !(args.dt > 0.0 && args.dt.is_finite()) {
        return Err(Failure::Input(format!(
            "--dt must be positive, got {}",
            args.dt
        )));
    }
    let d = Dplr::from_measure(measure, n)?;
    // Output C = first coordinate of the original basis: c = e₀ᵀ V.
    let c: Vec<C64> = (0..n / 2).map(|j| d.v[(0, j)]).collect();
    let (a_re, a_im) = split(&d.lambda);
    let (b_re, b_im) = split(&d.b);
    let (c_re, c_im) = split(&c);
    if args.json {
        let mut obj = json!({
            "kind": if args.form == Form::Dplr { "dplr" } else { "diagonal" },
            "dt": args.dt,
            "a_re": a_re, "a_im": a_im, "b_re": b_re, "b_im": b_im, "c_re": c_re, "c_im": c_im,
        });
        if args.form == Form::Dplr {
            let (p_re, p_im): (Vec<_>, Vec<_>) = d.p.iter().map(|r| split(r)).unzip();
            obj["p_re"] = json!(p_re);
            obj["p_im"] = json!(p_im);
        }
        let _ = writeln!(out, "{obj}");
    } else {
        let _ = writeln!(
            out,
            "HiPPO-{measure}, N = {n}: {} form on N/2 = {} modes (conjugates implied), C = e₀ᵀV",
            if args.form == Form::Dplr {
                "DPLR"
            } else {
                "diagonal"
            },
            n / 2
        );
        let _ = write!(out, "{:>4} {:>24} {:>24} {:>24}", "n", "Λ", "B̃", "C");
        if args.form == Form::Dplr {
            let _ = write!(out, " {:>24}", "P̃ (per rank)");
        }
        out.push('\n');
        let z = |v: C64| format!("{:>11.5}{:+.5}i", v.re, v.im);
        for j in 0..n / 2 {
            let _ = write!(
                out,
                "{j:>4} {:>24} {:>24} {:>24}",
                z(d.lambda[j]),
                z(d.b[j]),
                z(c[j])
            );
            if args.form == Form::Dplr {
                for r in &d.p {
                    let _ = write!(out, " {:>24}", z(r[j]));
                }
            }
            out.push('\n');
        }
    }
    emit(&out)
}

fn disc_of(d: DiscArg) -> Discretization {
    match d {
        DiscArg::Zoh => Discretization::Zoh,
        DiscArg::Bilinear => Discretization::Bilinear,
        DiscArg::Dss => Discretization::Dss,
    }
}

/// The kernel named by the arguments and a title for plots.
fn kernel_of(args: &KernelArgs) -> Result<(Vec<f64>, String), Failure> {
    if args.length == 0 {
        return Err(Failure::Input("--length must be at least 1".into()));
    }
    let requested = args.discretization.map(disc_of);
    if args.checkpoint.is_some() || args.model.is_some() {
        return engine_kernel(args);
    }
    let (k, title) = if let Some(path) = &args.from {
        let file = path.display().to_string();
        let bad_disc = |what: &str| {
            Failure::Input(format!(
                "{file}: kind \"{what}\" does not support --discretization {}",
                requested.map(|d| d.to_string()).unwrap_or_default()
            ))
        };
        match ssm_file::read(path)? {
            SsmFile::Diagonal { dt, sys } => {
                let disc = requested.unwrap_or(Discretization::Zoh);
                let k = sys.kernel(dt, disc, args.length)?;
                (
                    k,
                    format!(
                        "diagonal SSM ({} modes), dt = {dt}, {disc}",
                        sys.lambda.len()
                    ),
                )
            }
            SsmFile::Dplr { dt, sys } => {
                if requested.is_some_and(|d| d != Discretization::Bilinear) {
                    return Err(bad_disc("dplr"));
                }
                let k = sys.kernel(dt, args.length)?;
                (
                    k,
                    format!(
                        "DPLR SSM ({} modes, rank {}), dt = {dt}, bilinear",
                        sys.lambda.len(),
                        sys.p.len()
                    ),
                )
            }
            SsmFile::Dense { dt, a, b, c } => {
                let disc = requested.unwrap_or(Discretization::Zoh);
                if disc == Discretization::Dss {
                    return Err(bad_disc("dense"));
                }
                let k = kernel::dense_kernel(&a, &b, &c, dt, disc, args.length)?;
                (
                    k,
                    format!("dense SSM (N = {}), dt = {dt}, {disc}", a.nrows()),
                )
            }
        }
    } else {
        let name = args.init.as_deref().unwrap_or_default();
        let init: DiagInit = name.parse().map_err(Failure::Input)?;
        let Some(n) = args.n else {
            return Err(Failure::Input("--init needs --n (the state size N)".into()));
        };
        if !(args.dt > 0.0 && args.dt.is_finite()) {
            return Err(Failure::Input(format!(
                "--dt must be positive, got {}",
                args.dt
            )));
        }
        let mut rng = StdRng::seed_from_u64(args.seed);
        let lambda = s4d::init_a(init, n, &mut rng)?;
        let c = s4d::complex_normal(lambda.len(), &mut rng);
        let sys = DiagonalSystem {
            b: vec![C64::new(1.0, 0.0); lambda.len()],
            lambda,
            c,
        };
        let disc = requested.unwrap_or(Discretization::Zoh);
        let k = sys.kernel(args.dt, disc, args.length)?;
        (
            k,
            format!(
                "S4D-{init} kernel, N = {n}, dt = {}, {disc}, seed {}",
                args.dt, args.seed
            ),
        )
    };
    Ok((k, title))
}

/// A kernel from the engine: a freshly initialized one-channel layer of `--model`, or a trained
/// checkpoint's `--layer`/`--channel`.
fn engine_kernel(args: &KernelArgs) -> Result<(Vec<f64>, String), Failure> {
    use statespace_core::model::{IoShape, ModelConfig};
    let len = args.length;
    if let Some(dir) = &args.checkpoint {
        let (cfg, mut model, _) = statespace_core::train::load_model(dir, args.data.as_deref())
            .map_err(Failure::Input)?;
        let h = cfg.model.d_model;
        if args.channel >= h {
            return Err(Failure::Input(format!(
                "--channel {}: the model has {h} channels",
                args.channel
            )));
        }
        let (_, k) = model
            .layer_kernels(args.layer, len)
            .map_err(Failure::Input)?;
        let row = k[args.channel * len..(args.channel + 1) * len]
            .iter()
            .map(|v| *v as f64)
            .collect();
        return Ok((
            row,
            format!(
                "{}: block {} channel {} ({:?})",
                dir.display(),
                args.layer,
                args.channel,
                cfg.model.kind
            ),
        ));
    }
    let kind = args.model.as_deref().unwrap_or_default();
    if !(args.dt > 0.0 && args.dt.is_finite()) {
        return Err(Failure::Input(format!(
            "--dt must be positive, got {}",
            args.dt
        )));
    }
    let n = args.n.unwrap_or(64);
    let mut text = format!(
        "kind = \"{kind}\"\nd_model = 1\nn_layers = 1\nd_state = {n}\ndt_min = {0}\ndt_max = {0}\nl_max = {len}\n",
        args.dt
    );
    if let Some(i) = &args.init {
        text.push_str(&format!("init = \"{i}\"\n"));
    }
    if let Some(d) = args.discretization {
        text.push_str(match d {
            DiscArg::Zoh => "disc = \"zoh\"\n",
            DiscArg::Bilinear => "disc = \"bilinear\"\n",
            DiscArg::Dss => {
                return Err(Failure::Input(
                    "--discretization dss is for --init/--from diagonal systems".into(),
                ));
            }
        });
    }
    let cfg: ModelConfig = toml::from_str(&text)
        .map_err(|e| Failure::Input(format!("--model {kind} / --init: {}", e.message())))?;
    let mut model = statespace_core::model::Model::<f64>::new(
        &cfg,
        IoShape {
            d_input: 1,
            vocab: 0,
            d_output: 1,
            pair: false,
        },
        &mut StdRng::seed_from_u64(args.seed),
    )
    .map_err(Failure::Input)?;
    let (_, k) = model.layer_kernels(0, len).map_err(Failure::Compute)?;
    Ok((
        k[..len].to_vec(),
        format!(
            "{kind} kernel, N = {n}, dt = {}, seed {}",
            args.dt, args.seed
        ),
    ))
}

fn run_kernel(args: &KernelArgs) -> Result<(), Failure> {
    let (k, title) = kernel_of(args)?;
    if let Some((l, x)) = k.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Failure::Compute(format!(
            "the kernel overflowed at l = {l} ({x}): the discretized system is unstable"
        )));
    }
    if let Some(path) = &args.plot {
        let points = k.iter().enumerate().map(|(l, &x)| (l as f64, x)).collect();
        plot::line_plot(
            path,
            &title,
            "l",
            "K_l",
            &[plot::Series { label: "", points }],
        )
        .map_err(Failure::Input)?;
    }
    if args.json {
        emit(&format!("{}\n", json!({ "kernel": k })))
    } else {
        let mut out = String::with_capacity(k.len() * 24);
        for x in &k {
            out.push_str(&fmt_value(*x));
            out.push('\n');
        }
        emit(&out)
    }
}

fn run_transfer(args: &KernelArgs) -> Result<(), Failure> {
    let (k, title) = kernel_of(args)?;
    if k.iter().any(|x| !x.is_finite()) {
        return Err(Failure::Compute(
            "the kernel is not finite: the system is unstable".into(),
        ));
    }
    // H(e^{iω}) at ω = πj/L, j = 0 … L, by an FFT of the kernel zero-padded to 2L
    let len = k.len();
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(2 * len);
    let mut buf = k.clone();
    buf.resize(2 * len, 0.0);
    let mut spec = fft.make_output_vec();
    fft.process(&mut buf, &mut spec)
        .map_err(|e| Failure::Compute(format!("FFT failed: {e}")))?;
    let omega: Vec<f64> = (0..spec.len())
        .map(|j| std::f64::consts::PI * j as f64 / len as f64)
        .collect();
    let mag: Vec<f64> = spec.iter().map(|z| z.norm()).collect();
    let phase: Vec<f64> = spec.iter().map(|z| z.arg()).collect();
    if let Some(path) = &args.plot {
        let db = |m: f64| 20.0 * m.max(1e-300).log10();
        plot::line_plot(
            path,
            &format!("{title}: |H| (dB) and phase (rad)"),
            "ω (rad / sample)",
            "",
            &[
                plot::Series {
                    label: "|H| dB",
                    points: omega.iter().zip(&mag).map(|(w, m)| (*w, db(*m))).collect(),
                },
                plot::Series {
                    label: "phase",
                    points: omega.iter().copied().zip(phase.iter().copied()).collect(),
                },
            ],
        )
        .map_err(Failure::Input)?;
    }
    if args.json {
        emit(&format!(
            "{}\n",
            json!({ "omega": omega, "magnitude": mag, "phase": phase })
        ))
    } else {
        let mut out = String::from("# omega magnitude phase\n");
        for j in 0..omega.len() {
            out.push_str(&format!(
                "{} {} {}\n",
                fmt_value(omega[j]),
                fmt_value(mag[j]),
                fmt_value(phase[j])
            ));
        }
        emit(&out)
    }
}

fn run_ptd(args: &PtdArgs) -> Result<(), Failure> {
    use rand_distr::{Distribution, StandardNormal};
    if args.n < 2 || !args.n.is_multiple_of(2) {
        return Err(Failure::Input(format!(
            "--n must be even and ≥ 2, got {}",
            args.n
        )));
    }
    let n = args.n;
    let opts = statespace_math::ptd::PtdOptions::default();
    let dir = statespace_core::ptd::cache_dir();
    let p = statespace_math::ptd::legs_perturbation(n, &opts, dir.as_deref(), |it, cond| {
        if it % 500 == 0 {
            eprintln!("iteration {it}: cond(V) = {cond:.2}");
        }
    })?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let c: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let omegas: Vec<f64> = (0..=400)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0))
        .collect();
    let t = statespace_math::ptd::transfer_errors(&p.e, &c, &omegas)?;
    if args.json {
        emit(&format!(
            "{}\n",
            json!({"n": n, "cond_v": p.cond, "rel_norm": p.rel_norm,
                   "transfer_error_ptd": t.ptd, "transfer_error_ptd_complex": t.ptd_complex,
                   "transfer_error_s4d_legs": t.s4d})
        ))
    } else {
        emit(&format!(
            "PTD LegS N = {n}: cond(V) = {:.2}, ‖E‖₂/‖A‖₂ = {:.2}%\n\
             max over ω ∈ [1e-3, 1e4] of |G − G_LegS| / max|G_LegS| (C ~ N(0,1), seed {}):\n\
             \tPTD (the layer: real part)   {:.3e}\n\tPTD (complex system)         {:.3e}\n\tS4D-LegS                     {:.3e}\n",
            p.cond,
            100.0 * p.rel_norm,
            args.seed,
            t.ptd,
            t.ptd_complex,
            t.s4d
        ))
    }
}

fn run_stream(args: &StreamArgs) -> Result<(), Failure> {
    use std::io::{BufRead, Write};
    let (_, model, _) = statespace_core::train::load_model(&args.checkpoint, args.data.as_deref())
        .map_err(Failure::Input)?;
    let mut st = model.stream(1).map_err(|e| {
        Failure::Input(format!(
            "{}: this model cannot run step by step: {e}",
            args.checkpoint.display()
        ))
    })?;
    let (d_in, vocab) = (model.io.d_input, model.io.vocab);
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut x, mut tok, mut line_text) = (vec![0f32; d_in], vec![0u32; 1], String::new());
    for (no, line) in stdin.lines().enumerate() {
        let line = line.map_err(|e| Failure::Input(format!("stdin line {}: {e}", no + 1)))?;
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

fn run_generate(args: &GenerateArgs) -> Result<(), Failure> {
    use rand::{Rng, SeedableRng};
    use statespace_core::model::Input;
    let ck = args.checkpoint.display();
    let (_, mut model, _) =
        statespace_core::train::load_model(&args.checkpoint, args.data.as_deref())
            .map_err(Failure::Input)?;
    let (vocab, k) = (model.io.vocab, model.io.d_output);
    if vocab == 0 {
        return Err(Failure::Input(format!(
            "{ck}: the model reads real-valued inputs; generate needs a token model (use `stream`)"
        )));
    }
    if model.cfg.pool != statespace_core::layers::Pool::None || k != vocab {
        return Err(Failure::Input(format!(
            "{ck}: generate needs a next-token model (pool = \"none\", one class per token: \
             d_output = vocab); this one has pool = {:?}, {k} outputs for {vocab} tokens",
            model.cfg.pool
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
        .stream(1)
        .map_err(|e| Failure::Input(format!("{ck}: this model cannot run step by step: {e}")))?;
    let len = prompt.len();
    let per_pos = model
        .prefill(&mut st, Input::Tokens(&prompt), len)
        .map_err(Failure::Compute)?;
    // logits at the last prompt position: [1, K, L] → column L − 1
    let mut logits: Vec<f32> = (0..k).map(|c| per_pos[c * len + len - 1]).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut out = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
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

fn run_robustness(args: &RobustnessArgs) -> Result<(), Failure> {
    let noise = statespace_core::model::InputNoise {
        amplitude: args.amplitude,
        freq: args.freq,
        seed: args.seed,
    };
    let (cfg, clean, noisy) =
        statespace_core::train::robustness(&args.checkpoint, args.data.as_deref(), noise)
            .map_err(Failure::Input)?;
    let show = |s: &statespace_core::train::Score| match s.acc {
        Some(a) => format!("accuracy {:.2}% (loss {:.4})", 100.0 * a, s.loss),
        None => format!("loss {:.5}", s.loss),
    };
    let drop = match (clean.acc, noisy.acc) {
        (Some(a), Some(b)) => format!("accuracy drop {:.2} points", 100.0 * (a - b)),
        _ => format!("loss increase {:.5}", noisy.loss - clean.loss),
    };
    emit(&format!(
        "{:?} on {:?}: clean {}; with {}·U[0,1)·cos({}·t) before every layer {}; {drop}\n",
        cfg.model.kind,
        cfg.task.name,
        show(&clean),
        args.amplitude,
        args.freq,
        show(&noisy)
    ))
}

/// Writes to stdout; a closed pipe (`statespace … | head`) ends the output quietly.
fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Compute(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}
