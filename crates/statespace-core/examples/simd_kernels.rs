//! Times the SIMD layer's kernels on every instruction set this CPU runs, at the recurrent step's
//! shapes (H = 256, 32 complex modes per channel, six layers' [512, 256] output projections = 3 MB,
//! beyond L2): `cargo run -p statespace-core --example simd_kernels`.

use statespace_core::engine::simd::{self, Isa, Packed};
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
    let (h, m, layers) = (256usize, 32usize, 6usize);
    let n = 2 * h * h;
    let w: Vec<f32> = (0..layers * n).map(|i| (i % 7) as f32 * 0.01).collect();
    let packed: Vec<Packed<f32>> = (0..layers)
        .map(|l| Packed::new(&w[l * n..(l + 1) * n], 2 * h, h))
        .collect();
    let x: Vec<f32> = (0..16 * h).map(|i| (i % 5) as f32 * 0.1).collect();
    let c: Vec<Vec<f32>> = (0..4).map(|k| vec![0.1 * k as f32; h * m]).collect();
    let cc = [&c[0][..], &c[1][..], &c[2][..], &c[3][..]];
    let gbs = |t: f64| (layers * n * 4) as f64 / t / 1e9;
    for isa in Isa::available() {
        let mut y = vec![0f32; 16 * 2 * h];
        let row = time(|| {
            for l in 0..layers {
                simd::gemv_on(isa, &w[l * n..(l + 1) * n], None, &x[..h], &mut y[..2 * h]);
            }
        });
        let pk = time(|| {
            for p in &packed {
                simd::packed_gemv_on(isa, p, None, &x[..h], &mut y[..2 * h]);
            }
        });
        let b16 = time(|| {
            for l in 0..layers {
                simd::gemv_batch_on(isa, &w[l * n..(l + 1) * n], None, &x, h, &mut y);
            }
        });
        let mut st = vec![0f32; 16 * h * 2 * m];
        let mut yy = vec![0f32; 16 * h];
        let d1 = time(|| {
            simd::diag_steps_on(isa, cc, h, m, &mut st[..h * 2 * m], &x[..h], &mut yy[..h])
        });
        let d16 = time(|| simd::diag_steps_on(isa, cc, h, m, &mut st, &x, &mut yy));
        println!(
            "{:>9}: 6 × [512,256]·x row-major {:5.1} µs ({:5.1} GB/s), packed {:5.1} µs ({:5.1} GB/s), \
             16 streams {:6.1} µs ({:5.1} GFLOP/s); diagonal step H256 M32: 1 stream {:4.1} µs, 16 streams {:5.1} µs",
            isa.name(),
            row * 1e6,
            gbs(row),
            pk * 1e6,
            gbs(pk),
            b16 * 1e6,
            (layers * n * 32) as f64 / b16 / 1e9,
            d1 * 1e6,
            d16 * 1e6
        );
    }
}
