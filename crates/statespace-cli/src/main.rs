//! `statespace`: structured state space sequence models from the command line.
//!
//! Exit status: 0 on success, 2 for bad input (arguments, files), 1 for a failure of the
//! computation itself.

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
    #[arg(long, conflicts_with = "init", required_unless_present = "init")]
    from: Option<PathBuf>,
    /// An S4D init (B = 1, C ~ complex normal from --seed): legs, inv, lin, quad, real, rand.
    #[arg(long)]
    init: Option<String>,
    /// State size N for --init (N/2 complex modes).
    #[arg(long, requires = "init")]
    n: Option<usize>,
    /// Step size for --init (files carry their own "dt").
    #[arg(long, requires = "init", default_value_t = 0.01)]
    dt: f64,
    /// Seed of C (and of the rand init) for --init.
    #[arg(long, requires = "init", default_value_t = 0)]
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

fn run_kernel(args: &KernelArgs) -> Result<(), Failure> {
    if args.length == 0 {
        return Err(Failure::Input("--length must be at least 1".into()));
    }
    let requested = args.discretization.map(disc_of);
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
