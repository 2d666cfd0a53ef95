//! Times the SIMD layer's kernels on every instruction set this CPU runs, at the recurrent step's
//! shapes (H = 256, 32 complex modes per channel):
//! `cargo run --release -p statespace-core --example simd_kernels`.

use statespace_core::engine::simd::{self, Isa};
use std::time::Instant;

fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..200 {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / 200.0);
    }
    best
}

fn main() {
    alignment();
    let (h, m) = (256usize, 32usize);
    let w: Vec<f32> = (0..2 * h * h).map(|i| (i % 7) as f32 * 0.01).collect();
    let x: Vec<f32> = (0..16 * h).map(|i| (i % 5) as f32 * 0.1).collect();
    let c: Vec<Vec<f32>> = (0..4).map(|k| vec![0.1 * k as f32; h * m]).collect();
    for isa in Isa::available() {
        let mut y = vec![0f32; 16 * 2 * h];
        let g1 = time(|| simd::gemv_on(isa, &w, None, &x[..h], &mut y[..2 * h]));
        let g16 = time(|| simd::gemv_batch_on(isa, &w, None, &x, h, &mut y));
        let mut st = vec![0f32; 16 * h * 2 * m];
        let mut yy = vec![0f32; 16 * h];
        let cc = [&c[0][..], &c[1][..], &c[2][..], &c[3][..]];
        let d1 =
            time(|| simd::diag_steps_on(isa, cc, m, &mut st[..h * 2 * m], &x[..h], &mut yy[..h]));
        let d16 = time(|| simd::diag_steps_on(isa, cc, m, &mut st, &x, &mut yy));
        let dt = time(|| {
            std::hint::black_box(simd::dot_on(isa, &w[..4096], &w[4096..8192]));
        });
        println!(
            "{:>9}: gemv [512,256] {:6.1} µs ({:5.1} GB/s)  batch16 {:7.1} µs ({:5.1} GFLOP/s)  diag B1 {:6.1} µs  B16 {:7.1} µs  dot4096 {:5.2} µs",
            isa.name(),
            g1 * 1e6,
            (w.len() * 4) as f64 / g1 / 1e9,
            g16 * 1e6,
            (16 * 2 * w.len()) as f64 / g16 / 1e9,
            d1 * 1e6,
            d16 * 1e6,
            dt * 1e6
        );
    }
}

/// gemv over 6 distinct [512, 256] matrices (3 MB, beyond L2) with 64-byte aligned or misaligned rows.
#[allow(dead_code)]
pub fn alignment() {
    let (h, layers) = (256usize, 6usize);
    let n = 2 * h * h;
    let raw: Vec<f32> = (0..layers * n + 64)
        .map(|i| (i % 7) as f32 * 0.01)
        .collect();
    let x = vec![0.5f32; h];
    let mut y = vec![0f32; 2 * h];
    for isa in Isa::available() {
        for extra in [0usize, 4] {
            let off = raw.as_ptr().align_offset(64) + extra;
            let t = time(|| {
                for l in 0..layers {
                    let w = &raw[off + l * n..off + (l + 1) * n];
                    simd::gemv_on(isa, w, None, &x, &mut y);
                }
            });
            println!(
                "{:>9}: 6 × gemv [512,256], rows {}: {:6.1} µs ({:5.1} GB/s)",
                isa.name(),
                if extra == 0 {
                    "64-byte aligned"
                } else {
                    "16-byte aligned"
                },
                t * 1e6,
                (layers * n * 4) as f64 / t / 1e9
            );
        }
    }
}
