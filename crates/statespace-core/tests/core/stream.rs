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
        let mut st = m.stream(8).unwrap();
        let xs: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        m.stream_step(&mut st, Input::Real(&xs));
        let before = allocs();
        for _ in 0..50 {
            m.stream_step(&mut st, Input::Real(&xs));
        }
        let n = allocs() - before;
        assert_eq!(n, 0, "{kind:?}: {n} allocations in 50 steps");
    }
}
