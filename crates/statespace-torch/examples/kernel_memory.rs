//! Peak memory of one SSM layer's forward + backward on the torch engine, one-graph vs two-phase
//! backward. One configuration per process (peak RSS is per process):
//!
//! ```text
//! cargo run --release -p statespace-torch --example kernel_memory -- KIND L H N BATCH one|two [cpu|cuda]
//! ```
//! Prints the peak resident set (`VmHWM`; on CUDA also the device memory in use after the step,
//! `cudaMemGetInfo` — PyTorch's caching allocator keeps what it reserved, so that is the step's peak
//! reservation plus the CUDA context), and the time of the forward + backward. The Path-X layer is `s4d|s4 16384 256 64 1` (bidirectional, as the paper's).

use rand::SeedableRng;
use statespace_core::model::{IoShape, Model, ModelConfig};
use statespace_torch::tensor::from_f64;
use statespace_torch::{TorchInput, TorchModel, TorchOptions};
use std::time::Instant;
use tch::{Device, Kind};

fn vm_hwm() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        eprintln!("usage: kernel_memory KIND L H N BATCH one|two [cpu|cuda]");
        std::process::exit(2);
    }
    let (kind, len, h, n, b) = (
        &a[0],
        a[1].parse::<usize>().unwrap(),
        a[2].parse::<usize>().unwrap(),
        a[3].parse::<usize>().unwrap(),
        a[4].parse::<usize>().unwrap(),
    );
    let two = a[5] == "two";
    let device = if a.get(6).map(String::as_str) == Some("cuda") {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let cfg: ModelConfig = toml::from_str(&format!(
        "kind = '{kind}'\nd_model = {h}\nn_layers = 1\nd_state = {n}\nbidirectional = true\nnorm = 'batch'\ndt_min = 0.0001"
    ))
    .expect("config");
    let io = IoShape {
        d_input: 1,
        vocab: 0,
        d_output: 2,
        pair: false,
    };
    let cpu =
        Model::<f32>::new(&cfg, io, &mut rand::rngs::StdRng::seed_from_u64(0)).expect("model");
    let opts = TorchOptions {
        two_phase: two,
        ..TorchOptions::default()
    };
    let mut tm = TorchModel::from_cpu(&cpu, Kind::Float, device, opts).expect("torch model");
    drop(cpu);
    let x: Vec<f64> = (0..b * len)
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5)
        .collect();
    let input = TorchInput::Real(from_f64(&x, &[b, 1, len], Kind::Float, device));
    let before = vm_hwm().unwrap_or(0.0);
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    let t0 = Instant::now();
    let out = tm.forward(&input, &[], true, 1).expect("forward");
    let dout = out.ones_like();
    tm.backward(&out, &dout).expect("backward");
    if let Device::Cuda(_) = device {
        tch::Cuda::synchronize(0);
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = vm_hwm().unwrap_or(0.0);
    if let Device::Cuda(_) = device {
        match statespace_torch::bench::cuda_used_bytes() {
            Some(b) => println!(
                "{kind} L={len}: device memory in use after the step {:.0} MiB",
                b as f64 / 1048576.0
            ),
            None => println!("{kind} L={len}: cudaMemGetInfo not found"),
        }
    }
    println!(
        "{kind} L={len} H={h} N={n} B={b} {}: fwd+bwd {secs:.2} s, peak RSS {:.0} MiB (before the step {:.0} MiB)",
        if two { "two-phase" } else { "one graph" },
        peak / 1048576.0,
        before / 1048576.0
    );
}
