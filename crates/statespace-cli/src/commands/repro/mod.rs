//! `statespace repro NAME`: the papers' claims, one command each. Every experiment writes
//! `OUT/NAME.md` (its tables, with the command, the seed, the wall time and the machine) and
//! `OUT/NAME.png` (its figure); the runs it trains live under `WORK/NAME/{full,quick}/…`, so an
//! interrupted experiment (Ctrl-C) continues where it stopped when the same command is run again
//! (finished runs are read back, the stopped one resumes from its last step).
//!
//! `--quick` runs the same code on generated data at toy sizes (≤ 2 min): it tests the plumbing,
//! not the claims. A full run uses real images (Fashion-MNIST from Debian's
//! `dataset-fashion-mnist`) where the experiment trains on images.

pub mod hope_memory;
pub mod httyh_basis;
pub mod ptd_conditioning;
pub mod ptd_robustness;
pub mod s4d_inits;
pub mod sgconv_params;

use super::Failure;
use clap::{Args, ValueEnum};
use statespace_train as train;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Repro {
    /// PTD: cond(V) and transfer error against ‖E‖ for the search, random E and S4D-LegS.
    PtdConditioning,
    /// PTD: S4D, S4, S4-PTD, S5, S5-PTD on sequential Fashion-MNIST, 3 seeds, test accuracy under
    /// Fourier-mode noise by amplitude and frequency, and the trained layers' gains.
    PtdRobustness,
    /// HOPE vs S4D vs S4 on noise-padded sequential images; the state parameters at the global lr.
    HopeMemory,
    /// How to Train Your HiPPO: LegS kernels as warped Legendre polynomials; memory length vs Δ;
    /// LegS vs FouT vs LegT.
    HttyhBasis,
    /// S4D inits (LegS, Inv, Lin, Real) × (ZOH, bilinear) on one task; S4D-LegS → S4-LegS as N grows.
    S4dInits,
    /// SGConv vs S4D at matched and halved parameter counts.
    SgconvParams,
}

impl Repro {
    /// The file stem and command name (`ptd-conditioning`, …).
    pub fn name(self) -> &'static str {
        match self {
            Repro::PtdConditioning => "ptd-conditioning",
            Repro::PtdRobustness => "ptd-robustness",
            Repro::HopeMemory => "hope-memory",
            Repro::HttyhBasis => "httyh-basis",
            Repro::S4dInits => "s4d-inits",
            Repro::SgconvParams => "sgconv-params",
        }
    }
}

#[derive(Args)]
pub struct ReproArgs {
    /// The experiment.
    #[arg(value_enum)]
    pub name: Repro,
    /// Toy sizes on generated data (≤ 2 min): checks the plumbing, not the claim.
    #[arg(long)]
    pub quick: bool,
    /// Where the table (NAME.md) and the figure (NAME.png) go [default: docs/repro; with --quick
    /// WORK/NAME/quick, so toy numbers never replace the committed ones].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the experiment's training runs go (kept, so a stopped experiment resumes).
    #[arg(long, default_value = "runs/repro")]
    pub work: PathBuf,
    /// Fashion-MNIST's IDX files (default /usr/share/datasets/fashion-mnist, where
    /// `apt-get install dataset-fashion-mnist` puts them).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Seed of the experiment (runs with several seeds use seed, seed + 1, …).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads of the training runs (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// What an experiment needs: its sizes, directories, the stop flag, the clock.
pub struct Ctx {
    pub name: Repro,
    pub quick: bool,
    pub out: PathBuf,
    /// `WORK/NAME/{full,quick}`.
    pub work: PathBuf,
    data: Option<PathBuf>,
    pub seed: u64,
    pub threads: usize,
    stop: Arc<AtomicBool>,
    t0: Instant,
    /// Runs of this experiment trained by this invocation, and runs read back (trained before).
    trained: std::cell::Cell<usize>,
    read_back: std::cell::Cell<usize>,
}

pub fn run(args: &ReproArgs) -> Result<(), Failure> {
    let stop = super::stop_flag()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores);
    if threads == 0 || threads > 4 * cores {
        return Err(Failure::Input(format!(
            "--threads must lie in 1 ..= {} (4 × the {cores} cores), got {threads}",
            4 * cores
        )));
    }
    let work = args
        .work
        .join(args.name.name())
        .join(if args.quick { "quick" } else { "full" });
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            work.clone()
        } else {
            PathBuf::from("docs/repro")
        }
    });
    for dir in [&out, &work] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Input(format!("{}: cannot create it: {e}", dir.display())))?;
    }
    let ctx = Ctx {
        name: args.name,
        quick: args.quick,
        out,
        work,
        data: args.data.clone(),
        seed: args.seed,
        threads,
        stop,
        t0: Instant::now(),
        trained: std::cell::Cell::new(0),
        read_back: std::cell::Cell::new(0),
    };
    let report = match args.name {
        Repro::PtdConditioning => ptd_conditioning::run(&ctx)?,
        Repro::PtdRobustness => ptd_robustness::run(&ctx)?,
        Repro::HopeMemory => hope_memory::run(&ctx)?,
        Repro::HttyhBasis => httyh_basis::run(&ctx)?,
        Repro::S4dInits => s4d_inits::run(&ctx)?,
        Repro::SgconvParams => sgconv_params::run(&ctx)?,
    };
    let path = report.write(&ctx)?;
    eprintln!(
        "{}: wrote {} and {} in {}",
        args.name.name(),
        path.display(),
        ctx.figure().display(),
        train::run::format_duration(ctx.t0.elapsed().as_secs_f64())
    );
    Ok(())
}

impl Ctx {
    /// `OUT/NAME.png`.
    pub fn figure(&self) -> PathBuf {
        self.out.join(format!("{}.png", self.name.name()))
    }

    /// Fails with [`Failure::Stopped`] once a signal asked to stop (between the parts of an
    /// experiment that are not training runs).
    pub fn check_stop(&self) -> Result<(), Failure> {
        if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.stopped("between two steps"));
        }
        Ok(())
    }

    fn stopped(&self, where_: &str) -> Failure {
        Failure::Stopped(format!(
            "{} stopped {where_}; run the same command again to continue (finished runs are read \
             back from {}, a stopped one resumes from its last step)",
            self.name.name(),
            self.work.display()
        ))
    }

    /// Trains (or reads back, or resumes) the run `label` of this experiment; `i` of `n` for the
    /// progress line. Returns its summary and directory.
    pub fn train(
        &self,
        label: &str,
        cfg: &train::RunConfig,
        i: usize,
        n: usize,
    ) -> Result<(train::Summary, PathBuf), Failure> {
        let dir = self.work.join(label);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::Input(format!("{}: cannot create it: {e}", dir.display())))?;
        let resume = dir.join("last.safetensors").exists();
        let mut cfg = cfg.clone();
        cfg.train.threads = self.threads;
        let t = Instant::now();
        eprintln!(
            "[{i}/{n}] {label}: {}",
            if resume {
                "reading back / resuming"
            } else {
                "training"
            }
        );
        let s = train::run_with(
            &cfg,
            &dir,
            &train::RunOptions {
                resume,
                data: None,
                progress: if self.quick {
                    train::Progress::Silent
                } else {
                    train::Progress::Lines
                },
                stop: Some(&self.stop),
                fault_steps: &[],
                stop_after: None,
                max_memory: None,
            },
        )
        .map_err(|e| {
            if e.contains("different config") {
                Failure::Input(format!(
                    "{e}\n(the experiment's settings changed since {} was trained: remove that \
                     directory, or give another --work, to train it again)",
                    dir.display()
                ))
            } else {
                Failure::Input(e)
            }
        })?;
        if s.outcome == train::Outcome::AlreadyFinished {
            self.read_back.set(self.read_back.get() + 1);
        } else {
            self.trained.set(self.trained.get() + 1);
        }
        if s.outcome == train::Outcome::Stopped {
            return Err(self.stopped(&format!("in run {label} at step {}", s.steps)));
        }
        let acc = s
            .test
            .and_then(|t| t.acc)
            .map(|a| format!("test accuracy {:.2}%", 100.0 * a))
            .unwrap_or_else(|| format!("test loss {:.4}", s.test.map_or(f64::NAN, |t| t.loss)));
        eprintln!(
            "[{i}/{n}] {label}: {acc} ({})",
            train::run::format_duration(t.elapsed().as_secs_f64())
        );
        Ok((s, dir))
    }

    /// The image dataset of the experiments that train on images: Fashion-MNIST (full), or a
    /// generated set of 8×8 images in the same IDX format (quick).
    pub fn images(&self) -> Result<PathBuf, Failure> {
        if self.quick {
            let dir = self.work.join("images");
            quick_images(&dir, self.seed)?;
            return Ok(dir);
        }
        let dir = self
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
        let found = ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"]
            .iter()
            .all(|f| dir.join(f).exists() || dir.join(format!("{f}.gz")).exists());
        if !found {
            return Err(Failure::Input(format!(
                "{}: no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], …) there; \
                 `apt-get install dataset-fashion-mnist` puts them in \
                 /usr/share/datasets/fashion-mnist, or give --data DIR (or run with --quick)",
                dir.display()
            )));
        }
        std::path::absolute(&dir).map_err(|e| Failure::Input(format!("{}: {e}", dir.display())))
    }

    /// A run config from TOML text (the experiments' configs are written out in full, so the
    /// table's reader sees every setting in the run's config.toml).
    pub fn config(&self, toml: &str) -> Result<train::RunConfig, Failure> {
        train::RunConfig::from_toml(toml)
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| Failure::Compute(format!("{}: a built-in config: {e}", self.name.name())))
    }
}

/// Writes (once) 10 classes of 8×8 images: a fixed random template per class plus 20 % uniform noise,
/// 2000 training and 500 test images, as IDX files in `dir`.
fn quick_images(dir: &Path, seed: u64) -> Result<(), Failure> {
    use rand::{Rng, SeedableRng};
    use statespace_data::idx;
    if dir.join("t10k-labels-idx1-ubyte").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Input(format!("{}: cannot create it: {e}", dir.display())))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1a6e);
    let templates: Vec<Vec<f64>> = (0..10)
        .map(|_| (0..64).map(|_| rng.random::<f64>()).collect())
        .collect();
    for (stem, count) in [("train", 2000usize), ("t10k", 500)] {
        let mut pixels = Vec::with_capacity(count * 64);
        let mut labels = Vec::with_capacity(count);
        for i in 0..count {
            let c = i % 10;
            labels.push(c as u8);
            pixels.extend(
                templates[c]
                    .iter()
                    .map(|t| ((0.8 * t + 0.2 * rng.random::<f64>()) * 255.0) as u8),
            );
        }
        let images = idx::IdxImages {
            count,
            rows: 8,
            cols: 8,
            pixels,
        };
        let w = |e: std::io::Error| Failure::Input(format!("{}: {e}", dir.display()));
        idx::write_images(&dir.join(format!("{stem}-images-idx3-ubyte")), &images).map_err(w)?;
        idx::write_labels(&dir.join(format!("{stem}-labels-idx1-ubyte")), &labels).map_err(w)?;
    }
    Ok(())
}

/// A markdown report: sections of text and tables, then the provenance lines.
pub struct Report {
    title: String,
    body: String,
}

impl Report {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            body: String::new(),
        }
    }

    /// A paragraph.
    pub fn text(&mut self, text: &str) {
        let _ = writeln!(self.body, "{text}\n");
    }

    /// A table with a caption line above it.
    pub fn table(&mut self, caption: &str, headers: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.body, "{caption}\n");
        let _ = writeln!(self.body, "| {} |", headers.join(" | "));
        let _ = writeln!(
            self.body,
            "|{}",
            headers.iter().map(|_| "---|").collect::<String>()
        );
        for r in rows {
            let _ = writeln!(self.body, "| {} |", r.join(" | "));
        }
        self.body.push('\n');
    }

    fn write(&self, ctx: &Ctx) -> Result<PathBuf, Failure> {
        let path = ctx.out.join(format!("{}.md", ctx.name.name()));
        let args: Vec<String> = std::env::args().skip(1).collect();
        let text = format!(
            "# {}\n\n\
             - command: `statespace {}`\n\
             - seed: {}{}\n\
             - time: {} on {}{}\n\
             - figure: [{}.png]({}.png)\n\n\
             {}",
            self.title,
            args.join(" "),
            ctx.seed,
            if ctx.quick {
                " · **--quick**: toy sizes on generated data, a check of the plumbing; the numbers \
                 below say nothing about the claim"
            } else {
                ""
            },
            train::run::format_duration(ctx.t0.elapsed().as_secs_f64()),
            machine(ctx.threads),
            match (ctx.trained.get(), ctx.read_back.get()) {
                (_, 0) => String::new(),
                (t, r) => format!(
                    " — {r} of its {} runs were read back from {} (trained by an earlier \
                     invocation, not timed here)",
                    t + r,
                    ctx.work.display()
                ),
            },
            ctx.name.name(),
            ctx.name.name(),
            self.body
        );
        statespace_core::engine::checkpoint::write_atomic(&path, text.as_bytes())
            .map_err(|e| Failure::Input(e.to_string()))?;
        Ok(path)
    }
}

/// The CPU, its vector ISA, its L2 and the threads used: `AMD EPYC … (AVX-512), L2 1 MiB/core, 2 threads`.
pub fn machine(threads: usize) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("an unknown CPU".to_string(), |s| s.trim().to_string());
    let isa = statespace_core::engine::simd::isa().label();
    let l2 = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
        .map(|s| format!(", L2 {}/core", s.trim()))
        .unwrap_or_default();
    format!("{model} ({isa}){l2}, {threads} threads")
}

/// The least-squares slope of y against x over `points` (NaN for fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>()
}

/// `mean ± sd` of `xs` in percent (sample sd; `±0` for one value).
pub fn pct_mean_sd(xs: &[f64]) -> String {
    let (m, s) = mean_sd(xs);
    format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s)
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n.max(1.0);
    let v = if xs.len() > 1 {
        xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v.sqrt())
}

/// `|H_c(e^{iθ})| / ‖K_c‖₂` for the kernel row `k`: the gain at angular frequency θ (radians per
/// step) relative to the filter's mean-square gain (Parseval: the mean over θ of |H|² is ‖K‖²).
pub fn relative_gain(k: &[f64], theta: f64) -> f64 {
    let (mut re, mut im) = (0.0, 0.0);
    for (l, &x) in k.iter().enumerate() {
        let a = theta * l as f64;
        re += x * a.cos();
        im -= x * a.sin();
    }
    let norm = k.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        (re * re + im * im).sqrt() / norm
    } else {
        0.0
    }
}

/// The mean over layers and channels of [`relative_gain`] at each angular frequency ω of
/// `omegas`, taken on each channel's own step grid (θ = ω·Δ_c: the frequency the PTD noise test's
/// `cos(ω·k·Δ_c)` has for that channel; a map without a step uses Δ = 1/len, as the noise does).
/// The layers' `D·u` skips are not included.
pub fn layer_gains(
    model: &mut statespace_core::model::Model<f32>,
    len: usize,
    omegas: &[f64],
) -> Result<Vec<f64>, Failure> {
    let mut sum = vec![0.0; omegas.len()];
    let mut count = 0usize;
    for layer in 0..model.n_blocks() {
        let e = |e: statespace_core::Error| Failure::Compute(e.to_string());
        let steps = model.layer_steps(layer).map_err(e)?;
        let (dirs, k) = model.layer_kernels(layer, len).map_err(e)?;
        let h = k.len() / (dirs * len).max(1);
        for (row, kr) in k.chunks(len).enumerate() {
            let ch = row % h.max(1);
            let dt = steps.as_ref().map_or(1.0 / len as f64, |s| s[ch]);
            let kr: Vec<f64> = kr.iter().map(|&x| f64::from(x)).collect();
            for (acc, w) in sum.iter_mut().zip(omegas) {
                *acc += relative_gain(&kr, w * dt);
            }
            count += 1;
        }
    }
    Ok(sum.into_iter().map(|s| s / count.max(1) as f64).collect())
}
