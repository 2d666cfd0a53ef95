//! `cargo bench -p statespace-bench [-- FILTER]`: S4D kernel (forward, forward + backward) over H, M
//! and L; FFT convolution; a full training step; the recurrent step per token.
// criterion_group! generates an undocumented `pub fn benches`
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use statespace_bench::{bench_optim, fftconv_inputs, s4d_kernel_setup, stream_model, train_model};
use statespace_core::engine::layers;
use statespace_core::engine::optim::AdamW;
use statespace_core::kernels::SequenceKernel;
use statespace_core::model::Input;

fn kernel(c: &mut Criterion) {
    let mut g = c.benchmark_group("s4d_kernel");
    g.sample_size(20);
    for &(h, m, l) in &[
        (256, 64, 1024),
        (256, 64, 4096),
        (256, 32, 4096),
        (64, 64, 16384),
    ] {
        let (mut store, mut kern) = s4d_kernel_setup(h, m, 1);
        let mut r = rand::rngs::StdRng::seed_from_u64(2);
        let dk: Vec<f32> = (0..h * l).map(|_| r.random::<f32>() - 0.5).collect();
        let mut k = Vec::new();
        let id = format!("H{h}_M{m}_L{l}");
        g.throughput(Throughput::Elements((h * m * l) as u64));
        g.bench_function(BenchmarkId::new("fwd", &id), |b| {
            b.iter(|| kern.forward(&store, l, &mut k))
        });
        g.bench_function(BenchmarkId::new("fwd_bwd", &id), |b| {
            b.iter(|| {
                kern.forward(&store, l, &mut k);
                kern.backward(&mut store, &dk);
            })
        });
    }
    g.finish();
}

fn fftconv(c: &mut Criterion) {
    let mut g = c.benchmark_group("fftconv");
    g.sample_size(20);
    for &(b, h, l) in &[(16, 128, 1024), (4, 128, 4096)] {
        let (u, k, mut conv) = fftconv_inputs(b, h, l);
        let (mut y, mut du, mut dk) = (Vec::new(), Vec::new(), Vec::new());
        g.throughput(Throughput::Elements((b * h * l) as u64));
        g.bench_function(
            BenchmarkId::new("fwd_bwd", format!("B{b}_H{h}_L{l}")),
            |bch| {
                bch.iter(|| {
                    conv.forward(&u, &k, b, h, &mut y);
                    conv.backward(&u, &mut du, &mut dk);
                })
            },
        );
    }
    g.finish();
}

fn train_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    for &(b, l) in &[(16usize, 1024usize), (2, 4096), (2, 16384)] {
        let mut model = train_model(4, 128, 64);
        let mut r = rand::rngs::StdRng::seed_from_u64(4);
        let x: Vec<f32> = (0..b * l).map(|_| r.random::<f32>() - 0.5).collect();
        let labels: Vec<u32> = (0..b as u32).map(|i| i % 10).collect();
        let mut opt = AdamW::new(&model.store);
        let ocfg = bench_optim();
        let mut dout = Vec::new();
        g.throughput(Throughput::Elements((b * l) as u64));
        g.bench_function(
            BenchmarkId::new("s4d_4xH128_N64", format!("B{b}_L{l}")),
            |bch| {
                bch.iter(|| {
                    model.store.zero_grad();
                    let out = model.forward(Input::Real(&x), b, l, true, 0);
                    layers::cross_entropy(out, &labels, b, 10, 1, &mut dout);
                    model.backward(&dout);
                    opt.step(&mut model.store, &ocfg, 1.0);
                })
            },
        );
    }
    g.finish();
}

fn recurrent_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("recurrent_step");
    for batch in [1usize, 16] {
        let m = stream_model(6, 256, 64);
        let mut st = m.stream(batch).expect("causal model");
        let x = vec![0.1f32; batch];
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(
            BenchmarkId::new("s4d_6xH256_N64_glu", format!("batch{batch}")),
            |b| b.iter(|| m.stream_step(&mut st, Input::Real(&x))[0]),
        );
    }
    g.finish();
}

criterion_group!(benches, kernel, fftconv, train_step, recurrent_step);
criterion_main!(benches);
