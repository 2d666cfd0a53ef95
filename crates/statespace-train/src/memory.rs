//! Memory before allocation: what a run will need, measured on small probes of its own model and
//! task, against what the machine has (the smaller of `MemAvailable` and the cgroup's limit, or
//! `--max-memory`).
//!
//! ```text
//! estimate = RSS now
//!          + data            generated tasks: a probe task of ≤ 64 examples per split, scaled to
//!                            the split sizes (file tasks are read first; their bytes are in RSS)
//!          + 4 · 4 B · P     parameters, gradients, AdamW's m and v (P counted exactly: the model
//!                            built at d_model = k·n_ssm, k = 1, 2, 3 and 1, 2 layers; P is quadratic
//!                            in d_model and linear in n_layers)
//!          + 3 · 4 B · P     the bytes of last.safetensors while it is written
//!          + A_train(B, L) + max(0, A_eval(B_eval, L) − A_eval(B, L))
//! A(b, l)  = c₀ + c_l·l + c_b·b + c_bl·b·l   (forward [+ backward] buffers: fitted to the heap peak
//!            of probes at b ∈ {1, 2} and two lengths ≤ 128, or at the run's own L when the fit
//!            says that costs little)
//! ```
//!
//! Heap bytes come from [`CountingAlloc`] when the binary installs it as its global allocator
//! (`statespace` does); otherwise from the process's resident set (coarser).

use crate::config::RunConfig;
use crate::tasks::{TaskName, build_task, io_shape};
use rand::SeedableRng;
use rand::rngs::StdRng;
use statespace_core::model::{Input, IoShape, Model, ModelConfig};
use statespace_data::SeqTask;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the bytes in use and their peak (install it with
/// `#[global_allocator] static A: CountingAlloc = CountingAlloc;`).
pub struct CountingAlloc;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Heap bytes in use (the counting allocator's, else the resident set).
fn heap_now() -> usize {
    if INSTALLED.load(Ordering::Relaxed) {
        CURRENT.load(Ordering::Relaxed)
    } else {
        rss().unwrap_or(0) as usize
    }
}

/// Starts a new peak measurement; returns the bytes in use now.
fn start_peak() -> usize {
    let now = heap_now();
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    now
}

/// The peak since [`start_peak`] (resident set if the allocator is not installed).
fn peak() -> usize {
    if INSTALLED.load(Ordering::Relaxed) {
        PEAK.load(Ordering::Relaxed)
    } else {
        rss().unwrap_or(0) as usize
    }
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This process's resident set (bytes), where the OS says.
pub fn rss() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

/// This process's peak resident set so far (bytes, `VmHWM`), where the OS says.
pub fn peak_rss() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// The memory this process may still use (bytes): the smaller of `MemAvailable` and the cgroup's
/// limit minus its usage, and where it comes from.
pub fn available() -> Option<(u64, String)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mem = meminfo.as_deref().and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemAvailable:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    });
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    // cgroup v2, then v1
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .zip(read("/sys/fs/cgroup/memory.current"))
        .or_else(|| {
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                .zip(read("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
        })
        .filter(|(limit, _)| *limit < (1 << 60))
        .map(|(limit, used)| limit.saturating_sub(used));
    match (mem, cgroup) {
        (Some(m), Some(c)) if c < m => Some((c, "the cgroup's memory limit".into())),
        (Some(m), _) => Some((m, "MemAvailable".into())),
        (None, Some(c)) => Some((c, "the cgroup's memory limit".into())),
        (None, None) => None,
    }
}

/// `12.3 MiB`, `4.56 GiB`.
pub fn human(bytes: f64) -> String {
    let mib = bytes / (1024.0 * 1024.0);
    if mib >= 1024.0 * 1024.0 {
        format!("{:.2} TiB", mib / (1024.0 * 1024.0))
    } else if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// A run's memory, by part (bytes).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Estimate {
    /// Resident set when the estimate was made.
    pub baseline: f64,
    /// Data still to be generated.
    pub data: f64,
    /// Parameter count.
    pub params: f64,
    /// Parameters, gradients, optimizer moments and the checkpoint being written.
    pub model: f64,
    /// Activations and workspaces of training and evaluation.
    pub activations: f64,
}

impl Estimate {
    /// The whole estimate.
    pub fn total(&self) -> f64 {
        self.baseline + self.data + self.model + self.activations
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "≈ {} (process {}, data {}, {:.3e} parameters with gradients, AdamW moments and a \
             checkpoint {}, activations {})",
            human(self.total()),
            human(self.baseline),
            human(self.data),
            self.params,
            human(self.model),
            human(self.activations)
        )
    }
}

/// Whether the task is generated (not read from files).
pub fn generated(name: TaskName) -> bool {
    !matches!(
        name,
        TaskName::Smnist
            | TaskName::Sfashion
            | TaskName::Listops
            | TaskName::Text
            | TaskName::Retrieval
            | TaskName::Image
            | TaskName::Scifar
            | TaskName::Pathfinder
    )
}

/// Split sizes of a generated task (the defaults of `build_task`).
fn generated_sizes(cfg: &RunConfig) -> [usize; 3] {
    [
        cfg.task.train_size.unwrap_or(20_000),
        cfg.task.val_size.unwrap_or(1000),
        cfg.task.test_size.unwrap_or(1000),
    ]
}

/// A small probe task and the bytes the whole task will hold.
pub type ProbeTask = (Box<dyn SeqTask>, f64);

/// For a generated task: a probe task of ≤ 64 examples per split (its input/output shape and length
/// are the run's) and the bytes the whole task will hold, scaled from the probe's; `None` for a task
/// read from files (build it; its bytes are then part of the resident set).
pub fn probe_task(cfg: &RunConfig) -> Result<Option<ProbeTask>, String> {
    if !generated(cfg.task.name) {
        return Ok(None);
    }
    let sizes = generated_sizes(cfg);
    let total: usize = sizes.iter().sum();
    let probe: Vec<usize> = sizes.iter().map(|&s| s.clamp(1, 64)).collect();
    let mut small = cfg.task.clone();
    small.train_size = Some(probe[0]);
    small.val_size = Some(probe[1]);
    small.test_size = Some(probe[2]);
    let before = heap_now();
    let task = build_task(&small, None, cfg.train.seed)?;
    let used = heap_now().saturating_sub(before) as f64;
    Ok(Some((
        task,
        used * total as f64 / probe.iter().sum::<usize>() as f64,
    )))
}

/// The exact parameter count of the model (built at tiny widths and extrapolated: quadratic in
/// d_model, linear in n_layers).
pub fn param_count(model: &ModelConfig, io: IoShape) -> Result<f64, String> {
    let k = model.n_ssm.max(1);
    let count = |h: usize, layers: usize| -> Result<f64, String> {
        let cfg = ModelConfig {
            d_model: h,
            n_layers: layers,
            ..model.clone()
        };
        let m = Model::<f32>::new(&cfg, io, &mut StdRng::seed_from_u64(0))?;
        Ok(m.store.params.iter().map(|p| p.value.len()).sum::<usize>() as f64)
    };
    // per layer count q(h) = a h² + b h + c from h = k, 2k, 3k, and the layer-independent part
    let (h1, h2, h3) = (k as f64, 2.0 * k as f64, 3.0 * k as f64);
    let one = [count(k, 1)?, count(2 * k, 1)?, count(3 * k, 1)?];
    let two = [count(k, 2)?, count(2 * k, 2)?, count(3 * k, 2)?];
    let quad = |y: [f64; 3], h: f64| {
        // Lagrange interpolation through (h1, y0), (h2, y1), (h3, y2)
        y[0] * (h - h2) * (h - h3) / ((h1 - h2) * (h1 - h3))
            + y[1] * (h - h1) * (h - h3) / ((h2 - h1) * (h2 - h3))
            + y[2] * (h - h1) * (h - h2) / ((h3 - h1) * (h3 - h2))
    };
    let h = model.d_model as f64;
    let per_layer = quad([two[0] - one[0], two[1] - one[1], two[2] - one[2]], h);
    let outside = quad(one, h) - per_layer;
    Ok(outside + per_layer * model.n_layers as f64)
}

/// The heap peak of one probe: a fresh model, a forward (and backward when `train`) at `b`
/// examples of length `l` (an SGConv kernel spans `l` too: its memory grows with its span).
fn probe(model: &ModelConfig, io: IoShape, b: usize, l: usize, train: bool) -> Result<f64, String> {
    let start = start_peak();
    {
        let mut cfg = model.clone();
        if cfg.kind == statespace_core::model::LayerKind::Sgconv {
            cfg.l_max = l;
        }
        let mut m = Model::<f32>::new(&cfg, io, &mut StdRng::seed_from_u64(0))?;
        let seqs = if io.pair { 2 * b } else { b };
        let (real, tokens);
        let input = if io.vocab > 0 {
            tokens = vec![0u32; seqs * l];
            Input::Tokens(&tokens)
        } else {
            real = vec![0.1f32; seqs * io.d_input * l];
            Input::Real(&real)
        };
        let n_out = m.forward(input, b, l, train, 1).len();
        if train {
            let dout = vec![1e-3f32; n_out];
            m.backward(&dout);
        }
    }
    Ok(peak().saturating_sub(start) as f64)
}

/// Runs a small matrix product on every worker thread and this one: the GEMM kernels keep a
/// per-thread packing buffer (64 MiB of address space, touched only as far as used), allocated on
/// a thread's first product. Allocated here, before the probes, it is not mistaken for activations
/// (and the resident set that follows counts only its touched pages).
fn warm_threads() {
    fn small_gemm() {
        let (a, b) = (vec![1.0f32; 64 * 64], vec![1.0f32; 64 * 64]);
        let mut c = vec![0.0f32; 64 * 64];
        statespace_core::engine::gemm::Gemm::new(64, 64, 64)
            .threads(1)
            .run(&mut c, &a, &b);
    }
    small_gemm();
    rayon::broadcast(|_| small_gemm());
}

/// `A(b, l) = c₀ + c_l·l + c_b·b + c_bl·b·l` fitted to probes at b ∈ {1, 2} and the lengths `ls`.
fn fit(
    model: &ModelConfig,
    io: IoShape,
    ls: (usize, usize),
    train: bool,
) -> Result<[f64; 4], String> {
    let (l1, l2) = ls;
    // a warm-up first: one-time caches (thread pools, GEMM packing buffers kept per thread, FFT
    // plans) are allocated by it and stay, so the measured probes see only what scales
    probe(model, io, 2, l2, train)?;
    let p11 = probe(model, io, 1, l1, train)?;
    let p21 = probe(model, io, 2, l1, train)?;
    if l1 == l2 {
        // one length: A(b) = (p11 − (p21 − p11)) + (p21 − p11)·b
        let per = (p21 - p11).max(0.0);
        return Ok([p11 - per, 0.0, per, 0.0]);
    }
    let p12 = probe(model, io, 1, l2, train)?;
    let p22 = probe(model, io, 2, l2, train)?;
    let (dl1, dl2) = (l1 as f64, l2 as f64);
    // per-example cost at each length, then linear in l
    let (e1, e2) = ((p21 - p11).max(0.0), (p22 - p12).max(0.0));
    let c_bl = ((e2 - e1) / (dl2 - dl1)).max(0.0);
    let c_b = e1 - c_bl * dl1;
    let (f1, f2) = (p11 - e1, p12 - e2);
    let c_l = ((f2 - f1) / (dl2 - dl1)).max(0.0);
    let c0 = f1 - c_l * dl1;
    Ok([c0, c_l, c_b, c_bl])
}

fn eval_fit(c: [f64; 4], b: usize, l: usize) -> f64 {
    let (b, l) = (b as f64, l as f64);
    (c[0] + c[1] * l + c[2] * b + c[3] * b * l).max(0.0)
}

/// The memory a run of `cfg` on `task` will need (`training`: parameters, gradients, moments, a
/// checkpoint and training plus evaluation activations; otherwise a loaded model evaluated at
/// `train.eval_batch_size`). `data_to_come`: bytes of data not yet generated.
pub fn estimate_run(
    cfg: &RunConfig,
    task: &dyn SeqTask,
    data_to_come: f64,
    training: bool,
) -> Result<Estimate, String> {
    // the epoch order (and its bucketed copy): 2 × 8 B per training example
    let order = if training {
        16.0 * task.size(statespace_data::Split::Train) as f64
    } else {
        0.0
    };
    estimate_model(
        cfg,
        io_shape(task),
        task.spec().len,
        data_to_come + order,
        training,
    )
}

/// [`estimate_run`] for a model of shape `io` at sequence length `len`.
pub fn estimate_model(
    cfg: &RunConfig,
    io: IoShape,
    len: usize,
    data_to_come: f64,
    training: bool,
) -> Result<Estimate, String> {
    let model_cfg = cfg.model.resolved(len.max(1));
    // SGConv's kernel spans l_max, which may exceed the sequence: its memory is estimated at the
    // longer of the two (an over-estimate of the per-position terms when l_max ≫ L)
    let len = if model_cfg.kind == statespace_core::model::LayerKind::Sgconv {
        model_cfg.l_max.max(len).max(1)
    } else {
        len.max(1)
    };
    let params = param_count(&model_cfg, io)?;
    let model = if training {
        4.0 * 4.0 * params + 3.0 * 4.0 * params
    } else {
        2.0 * 4.0 * params
    };
    warm_threads();
    let baseline = rss().unwrap_or(0) as f64;
    let mut est = Estimate {
        baseline,
        data: data_to_come,
        params,
        model,
        activations: 0.0,
    };
    // a model that cannot fit is refused before a probe builds it
    if let Some((avail, _)) = available()
        && est.total() - baseline > avail as f64
    {
        return Ok(est);
    }
    let (b, be) = (cfg.train.batch_size, cfg.train.eval_batch_size);
    let mut ls = (len.min(64), len.min(128));
    let fits = |ls| -> Result<([f64; 4], [f64; 4]), String> {
        let t = if training {
            fit(&model_cfg, io, ls, true)?
        } else {
            [0.0; 4]
        };
        Ok((t, fit(&model_cfg, io, ls, false)?))
    };
    let (mut train, mut evalf) = fits(ls)?;
    // where probing at the run's own length costs little, measure there instead of extrapolating
    let probe_cost = eval_fit(train, 2, len).max(eval_fit(evalf, 2, len));
    if len > ls.1 && probe_cost < 256.0 * 1024.0 * 1024.0 {
        ls = (len, len);
        (train, evalf) = fits(ls)?;
    }
    // the probes' own parameters and gradients are counted in `model`
    let own = 2.0 * 4.0 * params;
    est.activations = if training {
        (eval_fit(train, b, len) - own).max(0.0)
            + (eval_fit(evalf, be, len) - eval_fit(evalf, b.min(be), len)).max(0.0)
    } else {
        (eval_fit(evalf, be, len) - own).max(0.0)
    };
    Ok(est)
}

/// Parses a memory size: bytes, or a number with K, M, G or T (powers of 1024, optional `iB`/`B`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a memory size (e.g. 8G, 512M)"))?;
    let mult = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("{text:?} is not a memory size (e.g. 8G, 512M)")),
    };
    let bytes = x * mult as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("{text:?} is not a memory size (e.g. 8G, 512M)"));
    }
    Ok(bytes as u64)
}

/// Refuses a run whose estimate exceeds the memory available (or `max_memory`), naming both.
pub fn check(est: &Estimate, max_memory: Option<u64>) -> Result<(), String> {
    let need = est.total() - est.baseline;
    // (the caches in `baseline` are already allocated)
    let (limit, source) = match (max_memory, available()) {
        (Some(m), _) => (
            m as f64 - est.baseline,
            format!("--max-memory {}", human(m as f64)),
        ),
        (None, Some((a, s))) => (a as f64, s),
        (None, None) => return Ok(()),
    };
    if need > limit {
        return Err(format!(
            "this run needs memory {est}, {} more than this process holds, but {source} leaves {}: \
             lower train.batch_size, train.eval_batch_size, model.d_model, model.n_layers or the \
             sequence length",
            human(need),
            human(limit.max(0.0))
        ));
    }
    Ok(())
}
