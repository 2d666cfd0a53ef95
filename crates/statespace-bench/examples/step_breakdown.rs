//! Where the batched recurrent step's time goes (f32, one thread): the whole step of the
//! `statespace bench` stack next to its two big parts run alone over the same buffers, six layers
//! deep — the packed output products `[B, H]·[2H, H]ᵀ`, the diagonal recurrence over the states
//! `[B, G, M, 2, 16]` — and next to plain passes over the same bytes (a read of the weights, a
//! read-modify-write of the states), so each part can be held to its own floor:
//! `cargo run --release -p statespace-bench --example step_breakdown [-- LAYERS H N BATCH SECS]`.
use statespace_core::engine::simd::{
    self, Half, LanePanels, LanePanelsHalf, Packed, Panels, diag_state_len, diag_steps, lane_gemm,
    lane_gemm_half, packed_gemv, panel_gemm,
};

fn main() {
    let a: Vec<f64> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numeric argument"))
        .collect();
    let arg = |i: usize, d: f64| a.get(i).copied().unwrap_or(d);
    let (layers, h, n, batch) = (
        arg(0, 6.0) as usize,
        arg(1, 256.0) as usize,
        arg(2, 64.0) as usize,
        arg(3, 16.0) as usize,
    );
    let secs = arg(4, 2.0);
    let m = n / 2;
    println!(
        "S4D {layers}×H{h} N{n} batch {batch}, one thread, ISA {} (median µs, best µs)",
        simd::isa().name()
    );
    let show = |what: &str, bytes: f64, t: (f64, f64, usize)| {
        println!(
            "{what:<44} {:>9.1} {:>9.1}   {:>6.2} MB  {:>5.1} GB/s at the median",
            t.0 * 1e6,
            t.1 * 1e6,
            bytes / 1e6,
            bytes / t.0 / 1e9
        )
    };
    let rec = statespace_bench::recurrent_step(layers, h, n, batch, None, secs);
    show(
        "whole step",
        rec.bytes.unwrap_or(0.0),
        (rec.median_s, rec.min_s, 0),
    );
    println!(
        "{:<44} floor {:.1} µs at {:.1} GB/s (fastest plain read of that size)",
        "",
        rec.bytes.unwrap_or(0.0) / rec.read_gbps.unwrap_or(1.0) / 1e3,
        rec.read_gbps.unwrap_or(0.0)
    );
    if std::env::var_os("WHOLE_ONLY").is_some() {
        return; // for a profiler: the whole step alone
    }

    // the output products alone: six [2H, H] matrices, x [B, H] → y [B, 2H]
    let raw: Vec<Vec<f32>> = (0..layers)
        .map(|l| {
            (0..2 * h * h)
                .map(|i| ((i * 7 + l) % 23) as f32 * 1e-3 - 0.01)
                .collect()
        })
        .collect();
    let w: Vec<Packed<f32>> = raw.iter().map(|v| Packed::new(v, 2 * h, h)).collect();
    let x: Vec<f32> = (0..batch * h).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut y = vec![0f32; batch * 2 * h];
    let t = statespace_bench::time_it(200, secs, || {
        for p in &w {
            packed_gemv(p, None, &x, &mut y);
        }
        std::hint::black_box(&y);
    });
    let wbytes = (layers * 2 * h * h * 4) as f64;
    show("output products alone (row blocks)", wbytes, t);
    let flops = (layers * 2 * 2 * h * h * batch) as f64;
    println!("{:<44} {:.1} GFLOP/s at the median", "", flops / t.0 / 1e9);
    // the same products on column panels (what the step uses for batch > 1)
    let panels: Vec<Panels<f32>> = raw.iter().map(|v| Panels::new(v, 2 * h, h)).collect();
    let t = statespace_bench::time_it(200, secs, || {
        for p in &panels {
            panel_gemm(p, None, &x, &mut y);
        }
        std::hint::black_box(&y);
    });
    show("output products alone (column panels)", wbytes, t);
    println!("{:<44} {:.1} GFLOP/s at the median", "", flops / t.0 / 1e9);
    // the same products with the streams in the vector lanes
    let lanes: Vec<LanePanels<f32>> = raw.iter().map(|v| LanePanels::new(v, 2 * h, h)).collect();
    let t = statespace_bench::time_it(200, secs, || {
        for p in &lanes {
            lane_gemm(p, None, &x, &mut y);
        }
        std::hint::black_box(&y);
    });
    show("output products alone (streams in lanes)", wbytes, t);
    println!("{:<44} {:.1} GFLOP/s at the median", "", flops / t.0 / 1e9);
    // the same on bf16 row tiles (decoded in L1)
    let half: Vec<LanePanelsHalf> = raw
        .iter()
        .map(|v| LanePanelsHalf::new(v, 2 * h, h, Half::Bf16).expect("small weights"))
        .collect();
    let t = statespace_bench::time_it(200, secs, || {
        for p in &half {
            lane_gemm_half(p, None, &x, &mut y);
        }
        std::hint::black_box(&y);
    });
    show("output products alone (bf16, lanes)", wbytes / 2.0, t);
    println!("{:<44} {:.1} GFLOP/s at the median", "", flops / t.0 / 1e9);

    // the recurrence alone: six layers' coefficients [4, G, M, 16], states [B, G, M, 2, 16]
    let clen = diag_state_len(h, m) / 2;
    let coef: Vec<Vec<Vec<f32>>> = (0..layers)
        .map(|l| {
            (0..4)
                .map(|k| {
                    (0..clen)
                        .map(|i| 0.3 + 0.1 * (((i + k + l) % 7) as f32) / 7.0)
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut states: Vec<Vec<f32>> = (0..layers)
        .map(|_| vec![0f32; batch * diag_state_len(h, m)])
        .collect();
    let u: Vec<f32> = (0..batch * h).map(|i| (i % 3) as f32 * 0.1).collect();
    let mut yr = vec![0f32; batch * h];
    let t = statespace_bench::time_it(200, secs, || {
        for (c, s) in coef.iter().zip(states.iter_mut()) {
            diag_steps([&c[0], &c[1], &c[2], &c[3]], h, m, s, &u, &mut yr);
        }
        std::hint::black_box(&yr);
    });
    let sbytes = (layers * batch * diag_state_len(h, m) * 4) as f64;
    show("recurrence alone (state read + written)", 2.0 * sbytes, t);
    // the two parts layer by layer, as the whole step runs them (recurrence, then the product):
    // what the whole step would take if nothing but these two ran
    let mut yl = vec![0f32; batch * 2 * h];
    let t = statespace_bench::time_it(200, secs, || {
        for ((c, s), p) in coef.iter().zip(states.iter_mut()).zip(&lanes) {
            diag_steps([&c[0], &c[1], &c[2], &c[3]], h, m, s, &u, &mut yr);
            lane_gemm(p, None, &yr, &mut yl);
        }
        std::hint::black_box(&yl);
    });
    show("both, layer by layer (lanes)", 2.0 * sbytes + wbytes, t);

    // plain passes over the same bytes
    let t = statespace_bench::time_it(200, secs, || {
        for s in states.iter_mut() {
            for v in s.iter_mut() {
                *v = *v * 0.5 + 0.25;
            }
        }
        std::hint::black_box(&states);
    });
    show("plain read-modify-write of the states", 2.0 * sbytes, t);
    let t = statespace_bench::time_it(200, secs, || {
        let mut acc = [0f32; 16];
        for s in states.iter() {
            for c in s.chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += c[k];
                }
            }
        }
        std::hint::black_box(acc);
    });
    show("plain read of the states", sbytes, t);
    let t = statespace_bench::time_it(200, secs, || {
        let mut acc = [0f32; 16];
        for p in &w {
            for c in p.data().chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += c[k];
                }
            }
        }
        std::hint::black_box(acc);
    });
    show("plain read of the packed weights", wbytes, t);
}
