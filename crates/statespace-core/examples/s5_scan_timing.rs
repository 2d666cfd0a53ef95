//! Times S5's two scans (forward + backward, f32) at L = 1k … 16k:
//! `cargo run --release --example s5_scan_timing [-- H P BATCH]`.
use rand::SeedableRng;
use rand::rngs::StdRng;
use statespace_core::engine::params::ParamStore;
use statespace_core::kernels::discretize::Disc;
use statespace_core::kernels::s5::{S5Config, S5Layer, S5Options, Scan};
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("integer argument"))
        .collect();
    let (h, p, b) = (
        a.first().copied().unwrap_or(64),
        a.get(1).copied().unwrap_or(64),
        a.get(2).copied().unwrap_or(4),
    );
    println!("S5 H={h} P={p} batch {b}, f32, forward + backward, best of 3 (ms)");
    println!("{:>7} {:>12} {:>12}", "L", "recurrence", "associative");
    for l in [1024, 2048, 4096, 8192, 16384] {
        let mut row = Vec::new();
        for scan in [Scan::Recurrence, Scan::Associative] {
            let mut store = ParamStore::<f32>::new();
            let cfg = S5Config {
                channels: h,
                state_size: p,
                disc: Disc::Zoh,
                dt_min: 1e-3,
                dt_max: 1e-1,
                bidirectional: false,
                opts: S5Options {
                    blocks: 4,
                    scan,
                    step_rescale: 1.0,
                },
                init: None,
            };
            let mut s5 = S5Layer::new(&mut store, "s5", cfg, &mut StdRng::seed_from_u64(0))
                .expect("valid config");
            let u: Vec<f32> = (0..b * h * l)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let (mut y, mut du) = (Vec::new(), Vec::new());
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                s5.forward(&store, &u, b, l, &mut y);
                s5.backward(&mut store, &u, &mut du);
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            row.push(best);
        }
        println!("{l:>7} {:>12.1} {:>12.1}", row[0], row[1]);
    }
}
