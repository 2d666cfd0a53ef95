//! Lean streaming inference: the step-by-step outputs equal the convolution mode for every causal
//! kind, a prompt prefilled in convolution mode continues exactly as if it had been stepped, and a
//! step allocates nothing (a counting global allocator).

use statespace_core::engine::layers::Pool;
use statespace_core::model::{Input, IoShape, LayerKind, Model, ModelConfig, NormKind};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::common::*;

/// Counts the allocations of the current thread (the other tests run on other threads).
struct Counting;
thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}
fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}
fn allocs() -> usize {
    ALLOCS.with(|c| c.get())
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

/// Every kind with a recurrent form (the PTD kinds are S4D / S5 layers).
const CAUSAL: [LayerKind; 5] = [
    LayerKind::S4d,
    LayerKind::S4,
    LayerKind::S5,
    LayerKind::Sgconv,
    LayerKind::Hope,
];

fn cfg(kind: LayerKind, norm: NormKind, prenorm: bool, pool: Pool) -> ModelConfig {
    ModelConfig {
        kind,
        d_model: 4,
        n_layers: 2,
        d_state: 6,
        norm,
        prenorm,
        pool,
        glu: true,
        dropout: 0.0,
        dt_min: 0.01,
        dt_max: 0.3,
        l_max: 24,
        ..ModelConfig::default()
    }
}

const IO: IoShape = IoShape {
    d_input: 2,
    vocab: 0,
    d_output: 3,
    pair: false,
};

fn column(x: &[f64], b: usize, c: usize, l: usize, t: usize) -> Vec<f64> {
    (0..b)
        .flat_map(|bb| (0..c).map(move |cc| (bb, cc)))
        .map(|(bb, cc)| x[(bb * c + cc) * l + t])
        .collect()
}

#[test]
fn stream_equals_convolution_mode_for_every_causal_kind() {
    let (b, l) = (2, 24);
    let mut r = rng(1);
    let x = randn(b * 2 * l, &mut r);
    for kind in CAUSAL {
        for (norm, prenorm) in [(NormKind::Layer, true), (NormKind::Batch, false)] {
            let c = cfg(kind, norm, prenorm, Pool::None);
            let mut m = Model::<f64>::new(&c, IO, &mut rng(2)).unwrap();
            let conv = m.forward(Input::Real(&x), b, l, false, 0).to_vec();
            let scale = conv.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let mut st = m.stream(b).unwrap();
            let mut err: f64 = 0.0;
            for t in 0..l {
                let y = m.stream_step(&mut st, Input::Real(&column(&x, b, 2, l, t)));
                for bb in 0..b {
                    for o in 0..3 {
                        err = err.max((y[bb * 3 + o] - conv[(bb * 3 + o) * l + t]).abs());
                    }
                }
            }
            assert!(
                err <= 1e-9 * scale,
                "{kind:?} {norm:?}: {err:e} (scale {scale:e})"
            );
            // mean pooling: the last step equals the pooled convolution output
            let cm = cfg(kind, norm, prenorm, Pool::Mean);
            let mut m = Model::<f64>::new(&cm, IO, &mut rng(2)).unwrap();
            let pooled = m.forward(Input::Real(&x), b, l, false, 0).to_vec();
            let mut st = m.stream(b).unwrap();
            let mut last = Vec::new();
            for t in 0..l {
                last = m
                    .stream_step(&mut st, Input::Real(&column(&x, b, 2, l, t)))
                    .to_vec();
            }
            let e = last
                .iter()
                .zip(&pooled)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                e <= 1e-9 * pooled.iter().fold(0.0f64, |a, v| a.max(v.abs())),
                "{kind:?}: {e:e}"
            );
        }
    }
}

#[test]
fn prefill_then_step_equals_stepping_from_the_start() {
    let (b, l, p) = (3, 20, 13);
    let mut r = rng(5);
    let x = randn(b * 2 * l, &mut r);
    for kind in [LayerKind::S4d, LayerKind::S5, LayerKind::Hope] {
        for pool in [Pool::Mean, Pool::Last] {
            let c = cfg(kind, NormKind::Layer, true, pool);
            let mut m = Model::<f64>::new(&c, IO, &mut rng(3)).unwrap();
            let mut st = m.stream(b).unwrap();
            let mut stepped = Vec::new();
            for t in 0..l {
                stepped.push(
                    m.stream_step(&mut st, Input::Real(&column(&x, b, 2, l, t)))
                        .to_vec(),
                );
            }
            let prompt: Vec<f64> = (0..b * 2)
                .flat_map(|row| x[row * l..row * l + p].to_vec())
                .collect();
            let mut st2 = m.stream(b).unwrap();
            let pre = m.prefill(&mut st2, Input::Real(&prompt), p).unwrap();
            assert_eq!(st2.steps(), p);
            let scale = stepped.iter().flatten().fold(0.0f64, |a, v| a.max(v.abs()));
            for t in 0..p {
                for bb in 0..b {
                    for o in 0..3 {
                        let e = (pre[(bb * 3 + o) * p + t] - stepped[t][bb * 3 + o]).abs();
                        assert!(
                            e <= 1e-9 * scale,
                            "{kind:?} {pool:?} prompt step {t}: {e:e}"
                        );
                    }
                }
            }
            for t in p..l {
                let y = m.stream_step(&mut st2, Input::Real(&column(&x, b, 2, l, t)));
                let e = y
                    .iter()
                    .zip(&stepped[t])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(
                    e <= 1e-9 * scale,
                    "{kind:?} {pool:?} step {t} after prefill: {e:e}"
                );
            }
        }
    }
}

#[test]
fn a_step_allocates_nothing() {
    for kind in CAUSAL {
        let c = cfg(kind, NormKind::Layer, true, Pool::Mean);
        let m = Model::<f32>::new(&c, IO, &mut rng(4)).unwrap();
        // 8 streams: column panels on AVX2; 32: the streams in the vector lanes
        for batch in [8usize, 32] {
            let mut st = m.stream(batch).unwrap();
            let xs: Vec<f32> = (0..2 * batch).map(|i| (i as f32 * 0.37).sin()).collect();
            m.stream_step(&mut st, Input::Real(&xs));
            let before = allocs();
            for _ in 0..50 {
                m.stream_step(&mut st, Input::Real(&xs));
            }
            let n = allocs() - before;
            assert_eq!(n, 0, "{kind:?} batch {batch}: {n} allocations in 50 steps");
        }
    }
    // half-precision weights, the row-block product and the half row tiles
    let m = Model::<f32>::new(
        &cfg(LayerKind::S4d, NormKind::Layer, true, Pool::Mean),
        IO,
        &mut rng(4),
    )
    .unwrap();
    for batch in [3usize, 32] {
        let mut st = m
            .stream_with(batch, Some(statespace_core::engine::simd::Half::Bf16))
            .unwrap();
        let xs: Vec<f32> = (0..2 * batch).map(|i| (i as f32 * 0.37).sin()).collect();
        m.stream_step(&mut st, Input::Real(&xs));
        let before = allocs();
        for _ in 0..50 {
            m.stream_step(&mut st, Input::Real(&xs));
        }
        let n = allocs() - before;
        assert_eq!(n, 0, "bf16 batch {batch}: {n} allocations in 50 steps");
    }
}

/// A stream with its output projections stored as bf16 or f16 computes what an f32 stream of the
/// same model with those weights rounded computes (the rounding done here, by the format's
/// definition: the nearest representable value), for one and for several streams; over 1000 steps
/// its outputs stay within a few unit roundoffs of the unrounded model's, and do move (the option
/// is live).
#[test]
fn half_weights_step_the_model_with_rounded_projections() {
    use statespace_core::engine::simd::Half;
    let mut c = cfg(LayerKind::S4d, NormKind::Layer, true, Pool::Last);
    (c.d_model, c.n_layers, c.d_state) = (40, 3, 16);
    let io = IoShape { d_input: 1, ..IO };
    for kind in [Half::Bf16, Half::F16] {
        let m = Model::<f32>::new(&c, io, &mut rng(7)).unwrap();
        let mut rounded = Model::<f32>::new(&c, io, &mut rng(7)).unwrap();
        let mut moved = 0usize;
        for p in rounded.store.params.iter_mut() {
            if p.name.starts_with("blocks.") && p.name.ends_with(".ssm.out.weight") {
                for v in p.value.iter_mut().filter(|v| **v != 0.0) {
                    // the nearest value of the format, from its own definition: an f64 search over
                    // the significand grid of v's binade (p significant bits)
                    let bits = if kind == Half::Bf16 { 8 } else { 11 };
                    let e = (v.abs() as f64).log2().floor() as i32;
                    let e = if kind == Half::F16 { e.max(-14) } else { e };
                    let q = 2f64.powi(e - (bits - 1));
                    let r = (*v as f64 / q).round_ties_even() * q;
                    moved += (r != *v as f64) as usize;
                    *v = r as f32;
                }
            }
        }
        assert!(
            moved > 1000,
            "{kind}: only {moved} weights changed by rounding"
        );
        // 1 and 3 streams: the row-block half product; 16 (AVX2) and 32 (AVX2, AVX-512): half row
        // tiles with the streams in the vector lanes
        for batch in [1usize, 3, 16, 32] {
            let mut hs = m.stream_with(batch, Some(kind)).unwrap();
            assert_eq!(hs.half(), Some(kind));
            let mut rs = rounded.stream(batch).unwrap();
            let mut fs = m.stream(batch).unwrap();
            let steps = if batch == 1 { 1000 } else { 100 };
            let (mut exact, mut dev) = (0.0f64, 0.0f64);
            for t in 0..steps {
                let x: Vec<f32> = (0..batch)
                    .map(|b| ((t * (b + 1)) as f32 * 0.05).sin() + 0.3 * ((t * 7 + b) % 5) as f32)
                    .collect();
                let yh = m.stream_step(&mut hs, Input::Real(&x)).to_vec();
                let yr = rounded.stream_step(&mut rs, Input::Real(&x)).to_vec();
                let yf = m.stream_step(&mut fs, Input::Real(&x));
                let scale = yf.iter().fold(0.0f64, |s, v| s.max(v.abs() as f64));
                for ((h, r), f) in yh.iter().zip(&yr).zip(yf) {
                    exact = exact.max((*h as f64 - *r as f64).abs() / scale);
                    dev = dev.max((*h as f64 - *f as f64).abs() / scale);
                }
            }
            println!("{kind} B={batch}: vs the rounded model {exact:.2e}, vs f32 {dev:.2e}");
            assert!(
                exact < 1e-5,
                "{kind} B={batch}: {exact:e} from the rounded model"
            );
            let u = kind.unit_roundoff();
            assert!(
                dev < 8.0 * u,
                "{kind} B={batch}: {dev:e} from f32 (u = {u:e})"
            );
            assert!(
                dev > u / 100.0,
                "{kind} B={batch}: {dev:e}: the weights did not change"
            );
        }
    }
    // a weight beyond f16's range is an error naming the parameter, not an infinity
    let mut big = Model::<f32>::new(&c, io, &mut rng(7)).unwrap();
    let p = big.store.find("blocks.1.ssm.out.weight").unwrap();
    big.store.params[p].value[3] = 1e5;
    let e = big
        .stream_with(1, Some(Half::F16))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("blocks.1.ssm.out.weight") && e.contains("range"),
        "{e}"
    );
    assert!(big.stream_with(1, Some(Half::Bf16)).is_ok());
}

/// f32 streams stepped together (the output projections as column panels or, for whole vectors of
/// streams, in row tiles with the streams in the vector lanes) compute what each stream stepped
/// alone computes (one sequential read of packed weights): three products checked against each
/// other, at the widths where the packing changes (2, 8, 16, 24, 32 streams; d_model 20, so 40
/// outputs end in a partial 6-row tile and a partial 32-row panel).
#[test]
fn batched_f32_streams_equal_each_stream_alone() {
    let c = ModelConfig {
        d_model: 20,
        d_state: 8,
        ..cfg(LayerKind::S4d, NormKind::Layer, true, Pool::Mean)
    };
    let m = Model::<f32>::new(&c, IO, &mut rng(6)).unwrap();
    for batch in [2usize, 8, 16, 24, 32] {
        let mut all = m.stream(batch).unwrap();
        let mut alone: Vec<_> = (0..batch).map(|_| m.stream(1).unwrap()).collect();
        let mut worst = 0.0f64;
        for t in 0..12 {
            let xs: Vec<f32> = (0..2 * batch)
                .map(|i| ((i * 7 + t * 3) as f32 * 0.37).sin())
                .collect();
            let y = m.stream_step(&mut all, Input::Real(&xs)).to_vec();
            for (b, st) in alone.iter_mut().enumerate() {
                let yb = m.stream_step(st, Input::Real(&xs[2 * b..2 * b + 2]));
                for o in 0..3 {
                    let (p, q) = (y[b * 3 + o] as f64, yb[o] as f64);
                    worst = worst.max((p - q).abs() / q.abs().max(1.0));
                }
            }
        }
        assert!(worst < 1e-5, "batch {batch}: {worst:e}");
    }
}
