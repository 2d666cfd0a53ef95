//! The torch engine's cases of `statespace bench --engine torch [--device cpu|cuda[:N]]`: the S4D
//! and S4 kernels (forward; forward + backward through one autograd graph, as the PyTorch peers
//! run them) and the full training step (forward, loss, the engine's two-phase backward, AdamW) at
//! the shapes of the CPU engine's cases, so the rows line up with `statespace bench`'s.
//!
//! Each call ends with a device synchronize (CUDA runs asynchronously). Memory: on the CPU the
//! process's peak RSS (`VmHWM`, reset before each case); on CUDA the device memory in use after the
//! case (`cudaMemGetInfo`: total − free) — PyTorch's caching allocator keeps what it reserved, so
//! this is the case's peak reservation plus the CUDA context.

use crate::kernels;
use crate::model::{TorchInput, TorchModel, TorchOptions};
use crate::optim::TorchAdamW;
use crate::tensor::{from_f64, to_f64};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use statespace_bench::{self as bench, Record};
use statespace_core::engine::layers;
use statespace_core::engine::optim::AdamW;
use statespace_core::kernels::discretize::Disc;
use statespace_core::model::{IoShape, LayerKind, Model, ModelConfig};
use tch::{Device, Kind, Tensor};

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Device memory in use on the current CUDA device (total − free, bytes), from the CUDA runtime
/// libtorch is linked with; `None` without one.
pub fn cuda_used_bytes() -> Option<u64> {
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: dlsym on the default namespace with a NUL-terminated name; the symbol, when present,
    // is the CUDA runtime's `cudaError_t cudaMemGetInfo(size_t *free, size_t *total)`.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"cudaMemGetInfo".as_ptr());
        if sym.is_null() {
            return None;
        }
        let f: MemGetInfo = std::mem::transmute(sym);
        let (mut free, mut total) = (0usize, 0usize);
        (f(&mut free, &mut total) == 0).then(|| (total - free) as u64)
    }
}

fn finish(mut r: Record, device: Device) -> Record {
    if device.is_cuda() {
        r.peak_rss_mib = cuda_used_bytes().map(|b| b as f64 / (1 << 20) as f64);
    }
    r
}

fn label(device: Device, opts: &TorchOptions) -> String {
    let dev = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    format!(
        "torch {dev}{}{}",
        if opts.kernel_f64 { ", kernel f64" } else { "" },
        if opts.bf16_matmul {
            ", bf16 matmul"
        } else {
            ""
        }
    )
}

fn one_layer(kind: LayerKind, h: usize, n: usize) -> Result<Model<f32>> {
    let cfg = ModelConfig {
        kind,
        d_model: h,
        n_layers: 1,
        d_state: n,
        ..ModelConfig::default()
    };
    let io = IoShape {
        d_input: 1,
        vocab: 0,
        d_output: 10,
        pair: false,
    };
    Ok(Model::<f32>::new(
        &cfg,
        io,
        &mut rand::rngs::StdRng::seed_from_u64(0),
    )?)
}

/// Times `K` of one layer's kernel: forward without autograd, then forward + backward of `Σ K·dK`
/// through one graph. `kernel` builds `K [1, H, len]` from the model's parameters.
fn kernel_case(
    tm: &TorchModel,
    names: [&str; 2],
    shape: String,
    flops: Option<[f64; 2]>,
    device: Device,
    secs: f64,
    kernel: &dyn Fn(&TorchModel) -> Result<Tensor>,
) -> Result<[Record; 2]> {
    let k0 = kernel(tm)?;
    let dk = Tensor::randn(k0.size(), (k0.kind(), device));
    let mut err = None;
    bench::reset_peak_rss();
    let f = bench::time_it(3, secs, || {
        match tch::no_grad(|| kernel(tm)) {
            Ok(k) => drop(k),
            Err(e) => err = Some(e),
        }
        sync(device);
    });
    let fwd = finish(bench::record(names[0], shape.clone(), 0, f), device);
    bench::reset_peak_rss();
    let fb = bench::time_it(3, secs, || {
        match kernel(tm) {
            Ok(k) => (k * &dk).sum(None::<Kind>).backward(),
            Err(e) => err = Some(e),
        }
        sync(device);
    });
    let both = finish(bench::record(names[1], shape, 0, fb), device);
    if let Some(e) = err {
        return Err(e);
    }
    Ok(match flops {
        Some([a, b]) => [fwd.with_flops(a, None), both.with_flops(b, None)],
        None => [fwd, both],
    })
}

/// The S4D kernel (S4D-Lin, ZOH) of `h` channels, `m` complex modes, length `len`; FLOPs counted as
/// the CPU engine's case (`4·H·M·L` forward, `12·H·M·L` forward + backward).
pub fn s4d_kernel(
    h: usize,
    m: usize,
    len: usize,
    device: Device,
    opts: TorchOptions,
    secs: f64,
) -> Result<[Record; 2]> {
    let tm = TorchModel::from_cpu(
        &one_layer(LayerKind::S4d, h, 2 * m)?,
        Kind::Float,
        device,
        opts,
    )?;
    let shape = format!(
        "H={h} M={m} (N={}) L={len}, {}",
        2 * m,
        label(device, &opts)
    );
    let nominal = (h * m * len) as f64;
    kernel_case(
        &tm,
        ["s4d_kernel_fwd", "s4d_kernel_fwd_bwd"],
        shape,
        Some([4.0 * nominal, 12.0 * nominal]),
        device,
        secs,
        &|tm| {
            kernels::s4d::kernel(
                &tm.params,
                "blocks.0.ssm.kernel",
                Disc::Zoh,
                tm.ctx(),
                0,
                len,
            )
            .map(|k| k.to_kind(tm.kind))
        },
    )
}

/// The S4 (DPLR, LegS, rank 1) kernel of `h` channels, state size `n`, length `len`: Cauchy sums and
/// Woodbury at the `len/2 + 1` roots of unity, then the inverse FFT (the whole `[H, N, L/2]` at once,
/// as one graph: the peers' form).
pub fn s4_kernel(
    h: usize,
    n: usize,
    len: usize,
    device: Device,
    opts: TorchOptions,
    secs: f64,
) -> Result<[Record; 2]> {
    let tm = TorchModel::from_cpu(&one_layer(LayerKind::S4, h, n)?, Kind::Float, device, opts)?;
    let shape = format!("H={h} N={n} L={len}, {}", label(device, &opts));
    kernel_case(
        &tm,
        ["s4_kernel_fwd", "s4_kernel_fwd_bwd"],
        shape,
        None,
        device,
        secs,
        &|tm| {
            kernels::s4::kernel(&tm.params, "blocks.0.ssm.kernel", tm.ctx(), len, len)
                .map(|k| k.to_kind(tm.kind))
        },
    )
}

/// One full training step of the CPU bench's model (`statespace_bench::train_model`: S4D, GLU,
/// LayerNorm, mean pooling, 10 classes) on a batch `[b, 1, len]`: forward, cross-entropy, the
/// engine's backward, AdamW — what `--engine torch` runs per step.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    n_layers: usize,
    h: usize,
    n: usize,
    b: usize,
    len: usize,
    device: Device,
    opts: TorchOptions,
    secs: f64,
) -> Result<Record> {
    bench::reset_peak_rss();
    let cpu = bench::train_model(n_layers, h, n);
    let mut tm = TorchModel::from_cpu(&cpu, Kind::Float, device, opts)?;
    let mut opt = TorchAdamW::from_cpu(&tm, &AdamW::new(&cpu.store))?;
    drop(cpu);
    let ocfg = bench::bench_optim();
    let mut r = rand::rngs::StdRng::seed_from_u64(4);
    let x: Vec<f64> = (0..b * len).map(|_| r.random::<f64>() - 0.5).collect();
    let input = TorchInput::Real(from_f64(&x, &[b, 1, len], Kind::Float, device));
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 10).collect();
    let mut dout = Vec::new();
    let mut step = 0u64;
    let mut err: Option<Error> = None;
    let mut one = || -> Result<()> {
        tm.zero_grad();
        let out = tm.forward(&input, &[], true, step)?;
        let host: Vec<f32> = to_f64(&out).into_iter().map(|v| v as f32).collect();
        layers::cross_entropy(&host, &labels, b, 10, 1, &mut dout);
        let d: Vec<f64> = dout.iter().map(|&v| v as f64).collect();
        tm.backward(&out, &from_f64(&d, &[b, 10], out.kind(), device))?;
        opt.step(&mut tm, &ocfg, 1.0);
        sync(device);
        step += 1;
        Ok(())
    };
    let t = bench::time_it(3, secs, || {
        if let Err(e) = one() {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let mut rec = finish(
        bench::record(
            "train_step",
            format!(
                "S4D {n_layers}×H{h} N{n} B={b} L={len}, {}",
                label(device, &opts)
            ),
            0,
            t,
        ),
        device,
    );
    rec.tokens_per_s = Some((b * len) as f64 / rec.median_s);
    Ok(rec)
}
