//! `statespace kernel`: the convolution kernel `K_l = C Ā^l B̄` of an SSM file, an init, a fresh
//! layer or a trained checkpoint.

use super::{Failure, emit, fmt_value};
use crate::plot;
use crate::ssm_file::{self, SsmFile};
use clap::{Args, ValueEnum};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;
use statespace_math::discretize::Discretization;
use statespace_math::kernel::DiagonalSystem;
use statespace_math::s4d::{self, DiagInit};
use statespace_math::{C64, kernel};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq)]
pub enum DiscArg {
    Zoh,
    Bilinear,
    Dss,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct KernelArgs {
    /// An SSM file: {"kind": "diagonal" | "dplr" | "dense", "dt": …, …} (see the README).
    #[arg(long, conflicts_with_all = ["init", "model", "checkpoint"], required_unless_present_any = ["init", "model", "checkpoint"])]
    pub from: Option<PathBuf>,
    /// An init: S4D (B = 1, C ~ complex normal from --seed): legs, inv, lin, quad, real, rand; with
    /// --model s4 a HiPPO operator: legs, legt, lagt, fout.
    #[arg(long, conflicts_with = "checkpoint")]
    pub init: Option<String>,
    /// A layer kind, freshly initialized with one channel: s4, s4d, s4-ptd, s5, s5-ptd, sgconv, hope.
    #[arg(long, conflicts_with = "checkpoint")]
    pub model: Option<String>,
    /// A trained run directory (or checkpoint file): the kernel of --layer, --channel.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Block of the checkpoint's model.
    #[arg(long, requires = "checkpoint", default_value_t = 0)]
    pub layer: usize,
    /// Channel of that block.
    #[arg(long, requires = "checkpoint", default_value_t = 0)]
    pub channel: usize,
    /// Dataset directory of the checkpoint's task (overrides its task.data_dir).
    #[arg(long, requires = "checkpoint")]
    pub data: Option<PathBuf>,
    /// State size N for --init / --model (N/2 complex modes).
    #[arg(long)]
    pub n: Option<usize>,
    /// Step size for --init / --model (files carry their own "dt").
    #[arg(long, default_value_t = 0.01)]
    pub dt: f64,
    /// Seed of C (and of the rand init) for --init / --model.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Kernel length L (with --checkpoint: the run's sequence length unless given).
    #[arg(long)]
    pub length: Option<usize>,
    /// zoh (default for diagonal and dense), bilinear (dplr: the only one), dss (diagonal only).
    #[arg(long, value_enum)]
    pub discretization: Option<DiscArg>,
    /// Print {"kernel": […]} instead of one value a line.
    #[arg(long)]
    pub json: bool,
    /// Also draw the kernel into this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn disc_of(d: DiscArg) -> Discretization {
    match d {
        DiscArg::Zoh => Discretization::Zoh,
        DiscArg::Bilinear => Discretization::Bilinear,
        DiscArg::Dss => Discretization::Dss,
    }
}

/// The longest kernel `--length` asks for (8 bytes a step, several buffers).
pub const MAX_LENGTH: usize = 1 << 26;

/// The kernel named by the arguments and a title for plots.
pub fn kernel_of(args: &KernelArgs) -> Result<(Vec<f64>, String), Failure> {
    let length = match args.length {
        Some(l) if l == 0 || l > MAX_LENGTH => {
            return Err(Failure::Input(format!(
                "--length must lie in 1 ..= {MAX_LENGTH}, got {l}"
            )));
        }
        Some(l) => l,
        // a checkpoint's run knows its length
        None if args.checkpoint.is_some() => 0,
        None => {
            return Err(Failure::Input(
                "--length L is required (with --checkpoint it defaults to the run's length)".into(),
            ));
        }
    };
    let requested = args.discretization.map(disc_of);
    if args.checkpoint.is_some() || args.model.is_some() {
        return engine_kernel(args, length);
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
                let k = sys.kernel(dt, disc, length)?;
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
                let k = sys.kernel(dt, length)?;
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
                let k = kernel::dense_kernel(&a, &b, &c, dt, disc, length)?;
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
        if n > super::hippo::MAX_N {
            return Err(Failure::Input(format!(
                "--n: at most {} (the inits are computed from dense N × N operators), got {n}",
                super::hippo::MAX_N
            )));
        }
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
        let k = sys.kernel(args.dt, disc, length)?;
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
/// `length` 0 means the checkpoint run's sequence length.
pub fn engine_kernel(args: &KernelArgs, length: usize) -> Result<(Vec<f64>, String), Failure> {
    use statespace_core::model::{IoShape, ModelConfig};
    let mut len = length;
    if let Some(dir) = &args.checkpoint {
        let (cfg, mut model, run_len) =
            statespace_train::load_model_only(dir, args.data.as_deref()).map_err(Failure::Input)?;
        if len == 0 {
            len = run_len;
        }
        let h = cfg.model.d_model;
        if args.channel >= h {
            return Err(Failure::Input(format!(
                "--channel {}: the model has {h} channels",
                args.channel
            )));
        }
        let (_, k) = model
            .layer_kernels(args.layer, len)
            .map_err(|e| Failure::Input(e.to_string()))?;
        let row = k[args.channel * len..(args.channel + 1) * len]
            .iter()
            .map(|v| *v as f64)
            .collect();
        return Ok((
            row,
            format!(
                "{}: block {} channel {} ({})",
                dir.display(),
                args.layer,
                args.channel,
                cfg.model.kind.name()
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
    let mut text = format!("kind = \"{kind}\"\nd_model = 1\nn_layers = 1\n");
    if kind == "sgconv" {
        // SGConv has no state and no step; its span is the kernel length
        text.push_str(&format!("l_max = {len}\n"));
    } else {
        text.push_str(&format!(
            "d_state = {n}\ndt_min = {0}\ndt_max = {0}\n",
            args.dt
        ));
    }
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
    .map_err(|e| Failure::Input(e.to_string()))?;
    let (_, k) = model
        .layer_kernels(0, len)
        .map_err(|e| Failure::Compute(e.to_string()))?;
    Ok((
        k[..len].to_vec(),
        format!(
            "{kind} kernel, N = {n}, dt = {}, seed {}",
            args.dt, args.seed
        ),
    ))
}

pub fn run(args: &KernelArgs) -> Result<(), Failure> {
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
