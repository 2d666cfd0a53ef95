//! Times S5's two scans (forward + backward, f32, one thread) at L = 1k … 16k with the
//! `statespace bench` S5 case: `cargo run --release -p statespace-bench --example s5_scan_timing
//! [-- H P BATCH]`.
use statespace_core::kernels::s5::Scan;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("integer argument"))
        .collect();
    let arg = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let (h, p, b) = (arg(0, 64), arg(1, 64), arg(2, 4));
    println!("S5 H={h} P={p} batch {b}, f32, forward + backward, median (ms)");
    println!("{:>7} {:>12} {:>12}", "L", "recurrence", "associative");
    for l in [1024, 2048, 4096, 8192, 16384] {
        let t = [Scan::Recurrence, Scan::Associative]
            .map(|scan| statespace_bench::s5_layer(b, h, p, l, 1, 0.5, scan).median_s * 1e3);
        println!("{l:>7} {:>12.1} {:>12.1}", t[0], t[1]);
    }
}
