//! `statespace bench`: this machine's FMA peak, then the S4D kernel, the FFT convolution, a full
//! training step (and its growth with L) and the recurrent step, as a table and as JSON; with
//! `--peers FILE` (JSON lines from `bench/peers/`) the statespace/peer speed ratios beside them.

use clap::Args;
use statespace_bench::{self as bench, Record};
use statespace_core::engine::simd;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct BenchArgs {
    /// Cases to run (comma-separated): kernel, fftconv, s5, train, scaling, step (default: all; with
    /// `--engine torch`: kernel, train — the cases the torch engine runs).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Threads for the multithreaded cases (the recurrent step always uses one).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Minimum seconds timed per case (each also runs at least a few times).
    #[arg(long, default_value_t = 3.0)]
    pub secs: f64,
    /// Fewer shapes (the must-show shapes only).
    #[arg(long)]
    pub quick: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// JSON lines written by the peer scripts (`bench/peers/run.sh`): adds the speed ratios.
    #[arg(long)]
    pub peers: Option<PathBuf>,
    /// Instruction set of the kernels: avx512, avx2, neon, portable (default: the widest this CPU
    /// runs, or $STATESPACE_ISA) — to measure a narrower one on a wider machine.
    #[arg(long)]
    pub isa: Option<String>,
    /// The engine measured: cpu (statespace's own), or torch on `--device` (build with
    /// `--features torch`).
    #[command(flatten)]
    pub engine: super::engine::EngineArgs,
}

const CASES: [&str; 6] = ["kernel", "fftconv", "s5", "train", "scaling", "step"];

/// The cases the torch engine runs.
const TORCH_CASES: [&str; 2] = ["kernel", "train"];

pub fn run(a: &BenchArgs) -> Result<(), String> {
    let torch = a.engine.engine == super::engine::EngineKind::Torch;
    let (known, default): (&[&str], &[&str]) = if torch {
        (&CASES, &TORCH_CASES)
    } else {
        (&CASES, &CASES)
    };
    for c in &a.cases {
        if !known.contains(&c.as_str()) {
            return Err(format!(
                "--cases: unknown case `{c}` (one of {})",
                known.join(", ")
            ));
        }
        if torch && !TORCH_CASES.contains(&c.as_str()) {
            return Err(format!(
                "--cases {c}: the torch engine's cases are {} (the others measure the CPU engine's own kernels)",
                TORCH_CASES.join(", ")
            ));
        }
    }
    let cases: Vec<String> = if a.cases.is_empty() {
        default.iter().map(|c| c.to_string()).collect()
    } else {
        a.cases.clone()
    };
    if a.threads == 0 {
        return Err("--threads: must be at least 1".into());
    }
    if !(a.secs > 0.0 && a.secs.is_finite()) {
        return Err(format!("--secs: {} is not a positive number", a.secs));
    }
    let peers = match &a.peers {
        Some(p) => read_peers(p)?,
        None => HashMap::new(),
    };
    if let Some(name) = &a.isa {
        let isa = simd::Isa::parse(name).map_err(|e| format!("--isa: {e}"))?;
        simd::set_isa(isa).map_err(|e| format!("--isa: {e}"))?;
    }
    if torch {
        return run_torch(a, &cases);
    }
    if a.engine.device.as_deref().is_some_and(|d| d != "cpu") {
        return Err("--device: the CPU engine runs on the CPU; use --engine torch for GPUs".into());
    }
    statespace_train::init_threads(a.threads);
    let has = |c: &str| cases.iter().any(|x| x == c);
    eprintln!("measuring the FMA peak …");
    let peak = bench::peak_fma(a.threads);
    let isa = simd::isa();
    println!(
        "kernels dispatched to {} ({} f32 lanes); this CPU runs: {}",
        isa.label(),
        isa.lanes(),
        simd::Isa::available()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "f32 FMA peak, one core: {}; {} cores on {}: {:.0} GFLOP/s (the % peak column)",
        peak.one_core
            .iter()
            .map(|(i, g)| format!("{i} {g:.0} GFLOP/s"))
            .collect::<Vec<_>>()
            .join(", "),
        peak.threads,
        isa.name(),
        peak.best_all
    );
    let mut recs: Vec<Record> = Vec::new();
    let t = a.threads;
    let mut run_case = |what: &str, f: &mut dyn FnMut() -> Vec<Record>| {
        eprintln!("{what} …");
        let r = f();
        for x in &r {
            print_row(x, &peers);
        }
        recs.extend(r);
    };
    print_header(!peers.is_empty());
    if has("kernel") {
        let shapes: &[(usize, usize, usize)] = if a.quick {
            &[(256, 64, 4096)]
        } else {
            &[
                (256, 64, 1024),
                (256, 64, 4096),
                (256, 32, 4096),
                (256, 64, 16384),
            ]
        };
        for &(h, m, l) in shapes {
            run_case(&format!("S4D kernel H={h} M={m} L={l}"), &mut || {
                bench::s4d_kernel(h, m, l, t, Some(&peak), a.secs).to_vec()
            });
        }
    }
    if has("kernel") {
        run_case("S4 (DPLR) kernel H=256 N=64 L=4096", &mut || {
            bench::s4_kernel(256, 64, 4096, t, a.secs, Some(&peak)).to_vec()
        });
    }
    if has("fftconv") {
        let shapes: &[(usize, usize, usize)] = if a.quick {
            &[(16, 128, 1024)]
        } else {
            &[(16, 128, 1024), (4, 128, 4096)]
        };
        for &(b, h, l) in shapes {
            run_case(&format!("FFT convolution B={b} H={h} L={l}"), &mut || {
                bench::fftconv(b, h, l, t, Some(&peak), a.secs).to_vec()
            });
        }
    }
    if has("s5") {
        run_case("S5 layer B=16 H=128 P=64 L=1024", &mut || {
            vec![bench::s5_layer(
                16,
                128,
                64,
                1024,
                t,
                a.secs,
                statespace_core::kernels::s5::Scan::default(),
            )]
        });
    }
    if has("train") {
        run_case("training step 4×H128 N64 B16 L1024", &mut || {
            vec![bench::train_step(4, 128, 64, 16, 1024, t, a.secs, 3)]
        });
        // the shape users start with (sequential MNIST: 4×H64, batch 50, L 784)
        run_case("training step 4×H64 N64 B50 L784", &mut || {
            vec![bench::train_step(4, 64, 64, 50, 784, t, a.secs, 3)]
        });
    }
    if has("scaling") {
        let lens: &[usize] = if a.quick {
            &[1024, 4096, 16384]
        } else {
            &[1024, 2048, 4096, 8192, 16384]
        };
        let mut rows = Vec::new();
        for &l in lens {
            run_case(&format!("training step L={l}"), &mut || {
                let mut r = bench::train_step(4, 128, 64, 2, l, t, a.secs, 3);
                r.name = "train_step_scaling".into();
                rows.push(r.clone());
                vec![r]
            });
        }
        print_scaling(&rows);
    }
    if has("step") {
        // the shape at batch 1 and 16, and a narrower stack whose weights fit in L2; then
        // the projections stored as bf16 and f16, with their deviation from f32 over 1000 steps
        use statespace_core::engine::simd::Half;
        let shapes = [
            (256, 1, None),
            (256, 16, None),
            (128, 1, None),
            (256, 1, Some(Half::Bf16)),
            (256, 1, Some(Half::F16)),
            (256, 16, Some(Half::Bf16)),
        ];
        for (h, batch, half) in shapes {
            let store = half.map_or(String::new(), |k| format!(" {k}"));
            run_case(
                &format!("recurrent step H={h} batch {batch}{store}"),
                &mut || {
                    let r = bench::recurrent_step(6, h, 64, batch, half, a.secs);
                    if let (Some(b), Some(g)) = (r.bytes, r.read_gbps) {
                        println!(
                            "  (reads {:.2} MB per step; a plain read of a buffer that size runs at {g:.1} GB/s on one core ⇒ floor {})",
                            b / 1e6,
                            fmt_time(b / (g * 1e9))
                        );
                    }
                    if let (Some(k), 1) = (half, batch) {
                        let d = bench::half_deviation(6, h, 64, k, 1000);
                        println!(
                            "  ({k} projections: max relative deviation of the outputs from f32 over 1000 steps {d:.2e}; {k}'s unit roundoff {:.2e})",
                            k.unit_roundoff()
                        );
                    }
                    vec![r]
                },
            );
        }
    }
    if let Some(p) = &a.json {
        let doc = serde_json::json!({
            "peak": peak,
            "threads": a.threads,
            "records": recs,
            "peers": peers.values().flatten().collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// `statespace bench --engine torch`: the kernel and training-step cases on libtorch.
#[cfg(feature = "torch")]
fn run_torch(a: &BenchArgs, cases: &[String]) -> Result<(), String> {
    use statespace_torch::bench as tb;
    let device =
        super::engine::torch_device(a.engine.device.as_deref().unwrap_or("cpu")).map_err(|f| {
            match f {
                super::Failure::Input(m)
                | super::Failure::Compute(m)
                | super::Failure::Stopped(m) => m,
            }
        })?;
    let opts = statespace_torch::TorchOptions {
        bf16_matmul: a.engine.precision == super::engine::Precision::Bf16,
        ..statespace_torch::TorchOptions::default()
    };
    statespace_torch::tch::set_num_threads(a.threads as i32);
    let peers = match &a.peers {
        Some(p) => read_peers(p)?,
        None => HashMap::new(),
    };
    println!(
        "torch engine (libtorch through tch) on {}, {} CPU threads; GFLOP/s are the CPU case's nominal counts; \
         the memory column is peak RSS on the CPU, device memory in use after the case on CUDA",
        a.engine.device.as_deref().unwrap_or("cpu"),
        a.threads
    );
    print_header(!peers.is_empty());
    let mut recs: Vec<Record> = Vec::new();
    let mut show = |r: Vec<Record>| {
        for mut x in r {
            x.threads = a.threads;
            print_row(&x, &peers);
            recs.push(x);
        }
    };
    let e = |e: statespace_torch::Error| e.to_string();
    let has = |c: &str| cases.iter().any(|x| x == c);
    if has("kernel") {
        let shapes: &[(usize, usize, usize)] = if a.quick {
            &[(256, 64, 4096)]
        } else {
            &[(256, 64, 1024), (256, 64, 4096), (256, 64, 16384)]
        };
        for &(h, m, l) in shapes {
            eprintln!("S4D kernel H={h} M={m} L={l} …");
            show(
                tb::s4d_kernel(h, m, l, device, opts, a.secs)
                    .map_err(e)?
                    .to_vec(),
            );
        }
        eprintln!("S4 (DPLR) kernel H=256 N=64 L=4096 …");
        show(
            tb::s4_kernel(256, 64, 4096, device, opts, a.secs)
                .map_err(e)?
                .to_vec(),
        );
    }
    if has("train") {
        for (layers, h, b, l) in [(4, 128, 16, 1024), (4, 64, 50, 784)] {
            eprintln!("training step {layers}×H{h} N64 B{b} L{l} …");
            show(vec![
                tb::train_step(layers, h, 64, b, l, device, opts, a.secs).map_err(e)?,
            ]);
        }
    }
    if let Some(p) = &a.json {
        let doc = serde_json::json!({
            "engine": "torch",
            "device": a.engine.device.as_deref().unwrap_or("cpu"),
            "threads": a.threads,
            "records": recs,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[cfg(not(feature = "torch"))]
fn run_torch(_a: &BenchArgs, _cases: &[String]) -> Result<(), String> {
    Err(
        "--engine torch: this statespace was built without the torch engine; build it with \
         `cargo build --release --features torch` (README: GPUs)"
            .into(),
    )
}

fn print_header(peers: bool) {
    println!(
        "{:<20} {:<34} {:>3} {:>11} {:>9} {:>7} {:>7} {:>11} {:>9}{}",
        "case",
        "shape",
        "thr",
        "median",
        "GFLOP/s",
        "% peak",
        "% floor",
        "tokens/s",
        "RSS MiB",
        if peers { "  peer: median, ratio" } else { "" }
    );
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn print_row(r: &Record, peers: &HashMap<(String, String), Vec<PeerRecord>>) {
    let peer: String = peers
        .get(&(r.name.clone(), r.shape.clone()))
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "  {}: {}, ×{:.2}{}",
                p.peer,
                fmt_time(p.median_s),
                p.median_s / r.median_s,
                p.peak_rss_mib
                    .map_or(String::new(), |m| format!(" (RSS {m:.0} MiB)"))
            )
        })
        .collect();
    println!(
        "{:<20} {:<34} {:>3} {:>11} {:>9} {:>7} {:>7} {:>11} {:>9}{}",
        r.name,
        r.shape,
        r.threads,
        fmt_time(r.median_s),
        r.gflops.map_or("".into(), |g| format!("{g:.1}")),
        r.frac_peak
            .map_or("".into(), |f| format!("{:.1}", 100.0 * f)),
        r.frac_floor
            .map_or("".into(), |f| format!("{:.1}", 100.0 * f)),
        r.tokens_per_s.map_or("".into(), |t| format!("{t:.0}")),
        r.peak_rss_mib.map_or("".into(), |m| format!("{m:.0}")),
        peer
    );
}

/// Growth with L: `time/(B·L·log₂L)` relative to the first row (flat = O(L log L)), and peak RSS
/// against a least-squares line `a + b·(B·L)` (small residuals = O(L)).
fn print_scaling(rows: &[Record]) {
    if rows.len() < 2 {
        return;
    }
    let tokens = |r: &Record| r.tokens_per_s.unwrap_or(0.0) * r.median_s;
    let l_of = |r: &Record| {
        r.shape
            .rsplit("L=")
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(2.0)
    };
    let per = |r: &Record| r.median_s / (tokens(r) * l_of(r).log2());
    let t0 = per(&rows[0]);
    // least squares of RSS on tokens
    let xs: Vec<f64> = rows.iter().map(tokens).collect();
    let ys: Vec<f64> = rows.iter().map(|r| r.peak_rss_mib.unwrap_or(0.0)).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let icpt = my - slope * mx;
    println!(
        "growth with L: peak RSS ≈ {icpt:.0} MiB + {:.1} MiB per 1k tokens (least squares)",
        slope * 1000.0
    );
    for (r, (x, y)) in rows.iter().zip(xs.iter().zip(&ys)) {
        println!(
            "  L={:<6} {:>10}  time/(B·L·log₂L) {:>5.2}× the first row   peak RSS {:>7.0} MiB (line: {:>7.0})",
            l_of(r),
            fmt_time(r.median_s),
            per(r) / t0,
            y,
            icpt + slope * x
        );
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PeerRecord {
    name: String,
    shape: String,
    median_s: f64,
    peer: String,
    #[serde(default)]
    peak_rss_mib: Option<f64>,
}

fn read_peers(p: &PathBuf) -> Result<HashMap<(String, String), Vec<PeerRecord>>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || !line.starts_with('{') {
            continue;
        }
        let r: PeerRecord = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", p.display(), i + 1))?;
        out.entry((r.name.clone(), r.shape.clone()))
            .or_insert_with(Vec::new)
            .push(r);
    }
    Ok(out)
}
