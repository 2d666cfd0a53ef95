//! Recurrent step latency of the lean streaming runtime (issue 6's shape): f32, batch 1, one thread,
//! 6 layers, H = 256, N = 64 (32 complex modes), GLU; every causal kind.
//! `cargo run --release -p statespace-core --example stream_latency [STEPS] [BATCH] [KIND]`
use rand::SeedableRng;
use statespace_core::engine::layers::Pool;
use statespace_core::model::{Input, IoShape, LayerKind, Model, ModelConfig};

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |s| s.parse().expect("STEPS"));
    let batch: usize = std::env::args()
        .nth(2)
        .map_or(1, |s| s.parse().expect("BATCH"));
    let io = IoShape {
        d_input: 1,
        vocab: 0,
        d_output: 10,
        pair: false,
    };
    for kind in [
        LayerKind::S4d,
        LayerKind::S4,
        LayerKind::S5,
        LayerKind::Hope,
        LayerKind::Sgconv,
    ] {
        if let Some(only) = std::env::args().nth(3)
            && !format!("{kind:?}").eq_ignore_ascii_case(&only)
        {
            continue;
        }
        let cfg = ModelConfig {
            kind,
            d_model: 256,
            n_layers: 6,
            d_state: 64,
            glu: true,
            pool: Pool::Last,
            l_max: 1024,
            ..ModelConfig::default()
        };
        let m = Model::<f32>::new(&cfg, io, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
        let mut st = m.stream(batch).unwrap();
        let mut x = vec![0.0f32; batch];
        for t in 0..1000 {
            x.iter_mut().for_each(|v| *v = (t as f32 * 0.01).sin());
            m.stream_step(&mut st, Input::Real(&x));
        }
        let t0 = std::time::Instant::now();
        let mut acc = 0.0f32;
        for t in 0..steps {
            x[0] = (t as f32 * 0.01).sin();
            acc += m.stream_step(&mut st, Input::Real(&x))[0];
        }
        let us = t0.elapsed().as_secs_f64() * 1e6 / steps as f64;
        println!(
            "{kind:?}: {us:.1} µs per step of {batch} stream(s) = {:.1} µs per token (6 × H256, N64, GLU, f32, one thread) [{acc:.3}]",
            us / batch as f64
        );
    }
}
