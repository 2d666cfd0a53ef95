//! # statespace-bench
//!
//! The measurements behind `statespace bench` and the criterion benches (`cargo bench -p
//! statespace-bench`; this crate is outside the workspace's default members, so `cargo test` does
//! not build criterion): the machine's FMA peak, the
//! S4D kernel (forward, forward + backward), the FFT convolution, a full training step, and the
//! recurrent step per token — each with its median time, FLOP rate and peak RSS.
//!
//! Peak RSS is the kernel's high-water mark (`VmHWM`), reset before each case through
//! `/proc/self/clear_refs` (Linux; elsewhere `None`).

use rand::{Rng, SeedableRng};
use serde::Serialize;
use statespace_core::engine::fftconv::FftConv;
use statespace_core::engine::layers::{self, Pool};
use statespace_core::engine::optim::{AdamW, OptimConfig};
use statespace_core::engine::params::ParamStore;
use statespace_core::engine::simd::{self, Half, Isa};
use statespace_core::kernels::SequenceKernel;
use statespace_core::kernels::discretize::Disc;
use statespace_core::kernels::s4d::{S4dConfig, S4dKernel};
use statespace_core::kernels::s5::Scan;
use statespace_core::model::{Input, IoShape, LayerKind, Model, ModelConfig};
use statespace_math::s4d::DiagInit;
use std::time::Instant;

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// What was measured (`s4d_kernel_fwd`, `train_step`, …).
    pub name: String,
    /// The shape, e.g. `H=256 M=64 L=4096`.
    pub shape: String,
    /// Threads used.
    pub threads: usize,
    /// Median seconds per call.
    pub median_s: f64,
    /// Fastest call.
    pub min_s: f64,
    /// Calls timed.
    pub reps: usize,
    /// Floating-point operations per call (the formula is in each case's doc).
    pub flops: Option<f64>,
    /// FLOP rate of the median call.
    pub gflops: Option<f64>,
    /// `gflops` over the measured f32 peak of `threads` cores.
    pub frac_peak: Option<f64>,
    /// Tokens (batch × length) per second.
    pub tokens_per_s: Option<f64>,
    /// Peak resident memory during the case, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Bytes a call must read at least (the recurrent step: weights, recurrence coefficients, state).
    pub bytes: Option<f64>,
    /// Measured single-core read bandwidth for a buffer of `bytes` (GB/s), and so the floor
    /// `bytes / bandwidth` on the call's time.
    pub read_gbps: Option<f64>,
    /// The floor `bytes / (read_gbps·10⁹)` over the median time (1 = at the memory floor).
    pub frac_floor: Option<f64>,
}

/// Calls `f` at least `min_reps` times and for at least `min_secs`; returns (median, min, reps).
pub fn time_it(min_reps: usize, min_secs: f64, mut f: impl FnMut()) -> (f64, f64, usize) {
    f(); // warm-up: buffers sized, caches filled
    let mut ts = Vec::new();
    let t0 = Instant::now();
    while ts.len() < min_reps || t0.elapsed().as_secs_f64() < min_secs {
        let t = Instant::now();
        f();
        ts.push(t.elapsed().as_secs_f64());
        if ts.len() >= 10_000 {
            break;
        }
    }
    ts.sort_by(f64::total_cmp);
    (ts[ts.len() / 2], ts[0], ts.len())
}

/// Resets the peak-RSS counter (Linux).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory since the last reset, bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Measured f32 FMA throughput of this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    /// GFLOP/s (an FMA counts 2) on one core, for each instruction set this CPU runs, widest first
    /// (`avx512`, `avx2`, `portable`, …).
    pub one_core: Vec<(String, f64)>,
    /// The instruction set the kernels dispatch to ([`simd::isa`]), which `best_all` measures.
    pub isa: String,
    /// That instruction set, all `threads` cores together.
    pub best_all: f64,
    /// Cores used for `best_all`.
    pub threads: usize,
}

impl Peak {
    /// Peak GFLOP/s of `threads` cores (the dispatched FMA width, scaled from the all-cores figure).
    pub fn of(&self, threads: usize) -> f64 {
        self.best_all * threads as f64 / self.threads as f64
    }
}

/// Measures the f32 FMA peak: one core on every instruction set this CPU runs, then `threads` cores
/// at once on the dispatched one (best of 3 runs of ~0.2 s each; the SIMD layer's own
/// microbenchmark, [`simd::fma_peak_on`]).
pub fn peak_fma(threads: usize) -> Peak {
    let isa = simd::isa();
    let iters = |i: Isa| 320_000_000u64 / (i.lanes() as u64).max(1) / 12 * 12 / 8;
    let best = |i: Isa| {
        (0..3)
            .map(|_| simd::fma_peak_on(i, iters(i)))
            .fold(0.0, f64::max)
    };
    let one_core = Isa::available()
        .into_iter()
        .map(|i| (i.name().to_string(), best(i)))
        .collect();
    let all = (0..3)
        .map(|_| {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| s.spawn(move || simd::fma_peak_on(isa, iters(isa))))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum::<f64>()
            })
        })
        .fold(0.0, f64::max);
    Peak {
        one_core,
        isa: isa.name().into(),
        best_all: all.max(1e-9),
        threads,
    }
}

/// A record of the timing `t` (median, min, reps) with the peak RSS since the last reset.
pub fn record(name: &str, shape: String, threads: usize, t: (f64, f64, usize)) -> Record {
    Record {
        name: name.into(),
        shape,
        threads,
        median_s: t.0,
        min_s: t.1,
        reps: t.2,
        flops: None,
        gflops: None,
        frac_peak: None,
        tokens_per_s: None,
        peak_rss_mib: peak_rss_bytes().map(|b| b as f64 / (1 << 20) as f64),
        bytes: None,
        read_gbps: None,
        frac_floor: None,
    }
}

impl Record {
    /// Adds the FLOP count of a call, its rate, and (given the machine's peak) the share of peak.
    pub fn with_flops(mut self, flops: f64, peak: Option<&Peak>) -> Self {
        let g = flops / self.median_s / 1e9;
        self.flops = Some(flops);
        self.gflops = Some(g);
        self.frac_peak = peak.map(|p| g / p.of(self.threads));
        self
    }
}

/// An S4D kernel of `h` channels and `m` complex modes (S4D-Lin, ZOH, f32) with random B and C.
pub fn s4d_kernel_setup(h: usize, m: usize, seed: u64) -> (ParamStore<f32>, S4dKernel) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut store = ParamStore::<f32>::new();
    let cfg = S4dConfig {
        channels: h,
        state_size: 2 * m,
        init: DiagInit::Lin,
        disc: Disc::Zoh,
        dt_min: 1e-3,
        dt_max: 1e-1,
        bidirectional: false,
        custom: None,
    };
    let kern = S4dKernel::new(&mut store, "k", cfg, &mut r).expect("valid S4D config");
    (store, kern)
}

/// The S4D kernel of `h` channels, `m` complex modes, length `len`: forward, then forward +
/// backward. FLOPs are the blocked GEMMs': `4·M·L` per channel forward, `8·M·L` backward.
pub fn s4d_kernel(
    h: usize,
    m: usize,
    len: usize,
    threads: usize,
    peak: Option<&Peak>,
    secs: f64,
) -> [Record; 2] {
    let (mut store, mut kern) = s4d_kernel_setup(h, m, 1);
    let mut r = rand::rngs::StdRng::seed_from_u64(2);
    let dk: Vec<f32> = (0..h * len).map(|_| r.random::<f32>() - 0.5).collect();
    let mut k = Vec::new();
    let shape = format!("H={h} M={m} (N={}) L={len}", 2 * m);
    reset_peak_rss();
    let f = time_it(5, secs, || kern.forward(&store, len, &mut k));
    let fwd = record("s4d_kernel_fwd", shape.clone(), threads, f)
        .with_flops((4 * m * len * h) as f64, peak);
    reset_peak_rss();
    let fb = time_it(5, secs, || {
        kern.forward(&store, len, &mut k);
        kern.backward(&mut store, &dk);
    });
    let both = record("s4d_kernel_fwd_bwd", shape, threads, fb)
        .with_flops((12 * m * len * h) as f64, peak);
    [fwd, both]
}

/// A planned FFT convolution of length `len`, an input `[b, h, len]` and a causal kernel on its FFT
/// grid `[h, n]` (random taps in the first `len`, zeros after), from a fixed seed.
pub fn fftconv_inputs(b: usize, h: usize, len: usize) -> (Vec<f32>, Vec<f32>, FftConv<f32>) {
    let mut r = rand::rngs::StdRng::seed_from_u64(3);
    let u: Vec<f32> = (0..b * h * len).map(|_| r.random::<f32>() - 0.5).collect();
    let conv = FftConv::<f32>::new(len);
    let nf = conv.fft_len();
    let k: Vec<f32> = (0..h * nf)
        .map(|i| {
            if i % nf < len {
                r.random::<f32>() - 0.5
            } else {
                0.0
            }
        })
        .collect();
    (u, k, conv)
}

/// FFT convolution of `[B, H, L]` with a causal kernel (see [`fftconv_inputs`]): forward, and forward + backward.
/// FLOPs: 5·n·log₂n per real FFT of size n = 2L (counted as half a complex FFT of n: 2.5·n·log₂n),
/// three transforms per channel and batch forward (kernel amortized: two), plus the products.
pub fn fftconv(
    b: usize,
    h: usize,
    len: usize,
    threads: usize,
    peak: Option<&Peak>,
    secs: f64,
) -> [Record; 2] {
    let (u, k, mut conv) = fftconv_inputs(b, h, len);
    let n = conv.fft_len() as f64;
    let per = 2.5 * n * n.log2();
    let mut y = Vec::new();
    let (mut du, mut dk) = (Vec::new(), Vec::new());
    let shape = format!("B={b} H={h} L={len}");
    reset_peak_rss();
    let f = time_it(5, secs, || conv.forward(&u, &k, b, h, &mut y));
    let fwd = record("fftconv_fwd", shape.clone(), threads, f).with_flops(
        (b * h) as f64 * (2.0 * per + 4.0 * n) + h as f64 * per,
        peak,
    );
    reset_peak_rss();
    let fb = time_it(5, secs, || {
        conv.forward(&u, &k, b, h, &mut y);
        conv.backward(&u, &mut du, &mut dk);
    });
    let both = record("fftconv_fwd_bwd", shape, threads, fb).with_flops(
        (b * h) as f64 * (5.0 * per + 12.0 * n) + h as f64 * per,
        peak,
    );
    [fwd, both]
}

/// An S4D stack (`layers` × H `h`, state size `n`, LayerNorm pre-norm, GELU + GLU) on one real input
/// with 10 outputs after `pool`, built for length `len`.
pub fn s4d_model(layers: usize, h: usize, n: usize, pool: Pool) -> Model<f32> {
    let cfg = ModelConfig {
        kind: LayerKind::S4d,
        d_model: h,
        n_layers: layers,
        d_state: n,
        glu: true,
        pool,
        ..ModelConfig::default()
    };
    let io = IoShape {
        d_input: 1,
        vocab: 0,
        d_output: 10,
        pair: false,
    };
    Model::<f32>::new(&cfg, io, &mut rand::rngs::StdRng::seed_from_u64(0)).expect("valid model")
}

/// The model of the training-step benchmark: [`s4d_model`] with mean pooling (10 classes).
pub fn train_model(layers: usize, h: usize, n: usize) -> Model<f32> {
    s4d_model(layers, h, n, Pool::Mean)
}

/// AdamW settings of the training-step benchmarks (lr 1e-3, weight decay 0.01, default SSM groups).
pub fn bench_optim() -> OptimConfig {
    OptimConfig {
        lr: 1e-3,
        weight_decay: 0.01,
        ssm_a: Default::default(),
        ssm_b: Default::default(),
        ssm_dt: Default::default(),
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
}

/// The causal model of the recurrent-step benchmark: [`s4d_model`] read at the last position.
pub fn stream_model(layers: usize, h: usize, n: usize) -> Model<f32> {
    s4d_model(layers, h, n, Pool::Last)
}

/// One full training step (forward, cross-entropy, backward, AdamW) of [`train_model`] on a batch
/// `[b, 1, len]`. FLOPs are not counted (many small terms); tokens/s = b·len / time.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    layers: usize,
    h: usize,
    n: usize,
    b: usize,
    len: usize,
    threads: usize,
    secs: f64,
    min_reps: usize,
) -> Record {
    reset_peak_rss();
    let mut model = train_model(layers, h, n);
    let mut r = rand::rngs::StdRng::seed_from_u64(4);
    let x: Vec<f32> = (0..b * len).map(|_| r.random::<f32>() - 0.5).collect();
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 10).collect();
    let mut opt = AdamW::new(&model.store);
    let ocfg = bench_optim();
    let mut dout = Vec::new();
    let mut step = 0u64;
    let t = time_it(min_reps, secs, || {
        model.store.zero_grad();
        let out = model.forward(Input::Real(&x), b, len, true, step);
        layers::cross_entropy(out, &labels, b, 10, 1, &mut dout);
        model.backward(&dout);
        opt.step(&mut model.store, &ocfg, 1.0);
        step += 1;
    });
    let mut rec = record(
        "train_step",
        format!("S4D {layers}×H{h} N{n} B={b} L={len}"),
        threads,
        t,
    );
    rec.tokens_per_s = Some((b * len) as f64 / rec.median_s);
    rec
}

/// Recurrent step of a causal S4D stack (`layers` × H `h`, state size `n`, GLU, f32), batch
/// `batch`, on the calling thread, the output projections stored as `half` (bf16/f16) or f32:
/// seconds per step; `tokens_per_s` counts every stream.
pub fn recurrent_step(
    layers: usize,
    h: usize,
    n: usize,
    batch: usize,
    half: Option<Half>,
    secs: f64,
) -> Record {
    reset_peak_rss();
    let m = stream_model(layers, h, n);
    let mut st = m.stream_with(batch, half).expect("causal model");
    let mut x = vec![0.0f32; batch];
    let mut t = 0usize;
    let mut sink = 0.0f32;
    let r = time_it(2000, secs, || {
        x.iter_mut().for_each(|v| *v = (t as f32 * 0.01).sin());
        sink += m.stream_step(&mut st, Input::Real(&x))[0];
        t += 1;
    });
    std::hint::black_box(sink);
    // what one step reads, per layer: the output projection [2H, H] as packed (f32 or 16-bit); in
    // f32 its bias, D and the norm's γ, β (5H) and the diagonal recurrence's 4 coefficient arrays
    // [H, M] (Ā and C̃ = 2C·B̄); its state [H, M] complex per stream, read and written (twice its
    // size). Encoder and decoder are a few hundred values.
    let hm = h * n / 2;
    let bytes = (st.weight_bytes() + 4 * layers * (5 * h + 4 * hm) + 2 * st.state_bytes()) as f64;
    let store = half.map_or(String::new(), |k| format!(" {k}"));
    let mut rec = record(
        "recurrent_step",
        format!("S4D {layers}×H{h} N{n} GLU batch={batch}{store}"),
        1,
        r,
    );
    rec.tokens_per_s = Some(batch as f64 / rec.median_s);
    let gbps = read_bandwidth(bytes as usize);
    rec.bytes = Some(bytes);
    rec.read_gbps = Some(gbps);
    rec.frac_floor = Some(bytes / (gbps * 1e9) / rec.median_s);
    rec
}

/// The largest relative deviation of [`stream_model`]'s outputs with the projections stored as
/// `half` from the f32 stream's, over `steps` steps of one stream (input `sin(0.01 t)` plus a
/// deterministic ±0.5 jitter): `max_t ‖y_half(t) − y_f32(t)‖∞ / ‖y_f32(t)‖∞`.
pub fn half_deviation(layers: usize, h: usize, n: usize, half: Half, steps: usize) -> f64 {
    let m = stream_model(layers, h, n);
    let mut full = m.stream(1).expect("causal model");
    let mut hs = m.stream_with(1, Some(half)).expect("weights in range");
    let mut worst = 0.0f64;
    let mut r = rand::rngs::StdRng::seed_from_u64(9);
    for t in 0..steps {
        let x = [(t as f32 * 0.01).sin() + r.random::<f32>() - 0.5];
        let a = m.stream_step(&mut full, Input::Real(&x)).to_vec();
        let b = m.stream_step(&mut hs, Input::Real(&x));
        let scale = a.iter().fold(0.0f64, |s, v| s.max(v.abs() as f64));
        let dev = a
            .iter()
            .zip(b)
            .fold(0.0f64, |s, (p, q)| s.max((*p as f64 - *q as f64).abs()));
        worst = worst.max(dev / scale.max(f64::MIN_POSITIVE));
    }
    worst
}

/// Single-core read bandwidth (GB/s) of a plain streaming read: the sum of a 64-byte aligned buffer
/// of `bytes`, read again and again, with 64 partial sums (several independent vector accumulators,
/// so the loop is bound by the loads, not by the latency of one add chain), compiled for every
/// instruction set this CPU runs; the fastest counts. It involves none of the kernels it is the
/// floor of.
pub fn read_bandwidth(bytes: usize) -> f64 {
    let n = (bytes / 4).max(1024).div_ceil(64) * 64;
    let raw: Vec<f32> = (0..n + 16).map(|i| (i % 13) as f32 * 0.01).collect();
    let skip = raw.as_ptr().align_offset(64).min(16);
    let buf = &raw[skip..skip + n];
    let read = |isa: Isa| {
        // the fastest pass (a floor is the best the memory system does, and the median of a shared
        // machine's reads swings by 2×)
        let (_, t, _) = time_it(50, 0.5, || {
            let s = simd::with_isa_on(isa, || {
                let mut acc = [0f32; 64];
                for c in buf.chunks_exact(64) {
                    for k in 0..64 {
                        acc[k] += c[k];
                    }
                }
                acc.iter().sum::<f32>()
            });
            std::hint::black_box(s);
        });
        (n * 4) as f64 / t / 1e9
    };
    Isa::available().into_iter().map(read).fold(0.0, f64::max)
}

/// One S5 layer (ZOH, P states, H channels, `scan`) on `[b, h, len]`: forward + backward of
/// `Σ y·w`, the same measurement as `bench/peers/s5_torch.py` on `s5-pytorch`.
pub fn s5_layer(
    b: usize,
    h: usize,
    p: usize,
    len: usize,
    threads: usize,
    secs: f64,
    scan: Scan,
) -> Record {
    use statespace_core::kernels::s5::{S5Config, S5Layer, S5Options};
    reset_peak_rss();
    let mut r = rand::rngs::StdRng::seed_from_u64(5);
    let mut store = ParamStore::<f32>::new();
    let cfg = S5Config {
        channels: h,
        state_size: p,
        disc: Disc::Zoh,
        dt_min: 1e-3,
        dt_max: 1e-1,
        bidirectional: false,
        opts: S5Options {
            scan,
            ..S5Options::default()
        },
        init: None,
    };
    let mut layer = S5Layer::new(&mut store, "s5", cfg, &mut r).expect("valid S5 config");
    let u: Vec<f32> = (0..b * h * len).map(|_| r.random::<f32>() - 0.5).collect();
    let w: Vec<f32> = (0..b * h * len).map(|_| r.random::<f32>() - 0.5).collect();
    let (mut y, mut du) = (Vec::new(), Vec::new());
    let t = time_it(3, secs, || {
        store.zero_grad();
        layer.forward(&store, &u, b, len, &mut y);
        layer.backward(&mut store, &w, &mut du);
    });
    record(
        "s5_layer_fwd_bwd",
        format!("B={b} H={h} P={p} L={len}"),
        threads,
        t,
    )
}

/// FLOPs of the S4 (DPLR) kernel of `h` channels, state size `n`, length `len`, rank `r`, as
/// `crates/statespace-core/src/kernels/s4.rs` computes it: per channel, frequency ω (`len/2 + 1` of
/// them) and mode (all `n` of the conjugate-completed set), with `P = (r+1)²` Cauchy sums:
///
/// ```text
/// forward   D = 1/(e − gλ): 14,  S_ab += ℓρ·D: 8 per sum                          14 + 8P
/// backward  D again: 14,  T_ab = Σ conj(D) gS_ab: 8 per sum,  C = Σ gS_ab·w_ab: 8 per sum,
///           D², conj(D²)·C into g_g, conj(g D²): 19,  Σ conj(g D²)·C: 8              41 + 16P
/// ```
/// (a complex multiply-add counts 8, a division 1). Not counted: the per-frequency Woodbury solves
/// and the FFTs (O(L) per channel, not O(L·N)).
pub fn s4_kernel_flops(h: usize, n: usize, len: usize, rank: usize) -> (f64, f64) {
    let p = ((rank + 1) * (rank + 1)) as f64;
    let points = (h * (len / 2 + 1) * n) as f64;
    (points * (14.0 + 8.0 * p), points * (41.0 + 16.0 * p))
}

/// The S4 (DPLR, LegS, rank 1) kernel of `h` channels, state size `n`, length `len`: forward, and
/// forward + backward (Cauchy kernel + Woodbury at L/2 + 1 frequencies, then an inverse FFT), with
/// their FLOP rates ([`s4_kernel_flops`]) as a share of `peak`.
pub fn s4_kernel(
    h: usize,
    n: usize,
    len: usize,
    threads: usize,
    secs: f64,
    peak: Option<&Peak>,
) -> [Record; 2] {
    use statespace_core::kernels::s4::{DplrInit, S4Config, S4Kernel, StepMode};
    let mut r = rand::rngs::StdRng::seed_from_u64(6);
    let mut store = ParamStore::<f32>::new();
    let cfg = S4Config {
        channels: h,
        state_size: n,
        n_ssm: 1,
        init: DplrInit::Legs,
        dt_min: 1e-3,
        dt_max: 1e-1,
        bidirectional: false,
        step_mode: StepMode::Linear,
    };
    let mut kern = S4Kernel::new(&mut store, "k", cfg, &mut r).expect("valid S4 config");
    let dk: Vec<f32> = (0..h * len).map(|_| r.random::<f32>() - 0.5).collect();
    let mut k = Vec::new();
    let shape = format!("H={h} N={n} L={len}");
    reset_peak_rss();
    let f = time_it(3, secs, || kern.forward(&store, len, &mut k));
    let (fwd_flops, bwd_flops) = s4_kernel_flops(h, n, len, 1);
    let fwd = record("s4_kernel_fwd", shape.clone(), threads, f).with_flops(fwd_flops, peak);
    reset_peak_rss();
    let fb = time_it(3, secs, || {
        kern.forward(&store, len, &mut k);
        kern.backward(&mut store, &dk);
    });
    [
        fwd,
        record("s4_kernel_fwd_bwd", shape, threads, fb).with_flops(fwd_flops + bwd_flops, peak),
    ]
}
