//! Helpers shared by the engine's integration tests: finite differences, comparisons, and the
//! recurrent-vs-convolution check of whole models.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statespace_core::engine::layers::Pool;
use statespace_core::engine::params::ParamStore;
use statespace_core::kernels::{SequenceKernel, SequenceMap};
use statespace_core::model::{Input, IoShape, Model, ModelConfig};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn randn(n: usize, r: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
}

pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Five-point central difference of `f` at `x[i]` with step `h`.
pub fn fd(x: &mut [f64], i: usize, h: f64, f: &mut dyn FnMut(&[f64]) -> f64) -> f64 {
    let orig = x[i];
    let mut at = |d: f64, x: &mut [f64]| {
        x[i] = orig + d;
        let v = f(x);
        x[i] = orig;
        v
    };
    (-at(2.0 * h, x) + 8.0 * at(h, x) - 8.0 * at(-h, x) + at(-2.0 * h, x)) / (12.0 * h)
}

pub fn assert_close(what: &str, g: &[f64], f: &[f64]) {
    let num = g
        .iter()
        .zip(f)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let den = f.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    // absolute floor: the five-point difference of an O(1) loss carries ~ε·|ℒ|/h ≈ 1e-13 of rounding
    // noise, which is all a gradient that vanishes exactly (a bias before BatchNorm) shows
    assert!(
        num <= 1e-6 * den + 1e-12,
        "{what}: ‖g − fd‖∞ = {num:e}, ‖fd‖∞ = {den:e}"
    );
}

/// Checks every parameter of `store` (its `grad` holds the analytic gradient) against finite
/// differences of `loss`, on up to `per` entries per tensor.
pub fn check_store(
    store: &mut ParamStore<f64>,
    per: usize,
    loss: &mut dyn FnMut(&ParamStore<f64>) -> f64,
) {
    check_store_h(store, per, 1e-3, loss)
}

/// As [`check_store`] with the relative step `hs` (smaller where the loss varies fast: log Δ scales
/// phases l·Δ·Im A of order 100 over the kernel).
pub fn check_store_h(
    store: &mut ParamStore<f64>,
    per: usize,
    hs: f64,
    loss: &mut dyn FnMut(&ParamStore<f64>) -> f64,
) {
    for p in 0..store.params.len() {
        let n = store.params[p].value.len();
        let idx: Vec<usize> = if n <= per {
            (0..n).collect()
        } else {
            (0..per).map(|k| k * n / per).collect()
        };
        let mut g = Vec::new();
        let mut f = Vec::new();
        for &i in &idx {
            let orig = store.params[p].value[i];
            let h = hs * orig.abs().max(1.0);
            let mut vals = store.params[p].value.clone();
            let mut s2 = store.clone();
            let fdv = fd(&mut vals, i, h, &mut |v| {
                s2.params[p].value.copy_from_slice(v);
                loss(&s2)
            });
            g.push(store.params[p].grad[i]);
            f.push(fdv);
            store.params[p].value[i] = orig;
        }
        assert_close(&store.params[p].name, &g, &f);
    }
}

pub fn check_input(x: &[f64], dx: &[f64], loss: &mut dyn FnMut(&[f64]) -> f64) {
    let mut xv = x.to_vec();
    let n = x.len();
    let idx: Vec<usize> = if n <= 60 {
        (0..n).collect()
    } else {
        (0..60).map(|k| k * n / 60).collect()
    };
    let f: Vec<f64> = idx.iter().map(|&i| fd(&mut xv, i, 1e-3, loss)).collect();
    let g: Vec<f64> = idx.iter().map(|&i| dx[i]).collect();
    assert_close("input", &g, &f);
}

/// The gradient check of every [`SequenceKernel`]: `ℒ = ⟨K(θ), W⟩` for a random `W [dirs, H, len]`
/// drawn from `r`; `backward(W)` must equal finite differences of ℒ in every parameter (up to
/// `per` entries per tensor, relative step `hs`).
pub fn check_kernel_gradients(
    kern: &mut dyn SequenceKernel<f64>,
    store: &mut ParamStore<f64>,
    len: usize,
    per: usize,
    hs: f64,
    r: &mut StdRng,
) {
    let w = randn(kern.directions() * kern.channels() * len, r);
    let mut k = Vec::new();
    kern.forward(store, len, &mut k);
    store.zero_grad();
    kern.backward(store, &w);
    check_store_h(&mut store.clone(), per, hs, &mut |s| {
        let mut k = Vec::new();
        kern.forward(s, len, &mut k);
        dot(&k, &w)
    });
}

/// The gradient check of every [`SequenceMap`] (a kernel's [`Convolution`], S5): `ℒ = ⟨map(u), W⟩`
/// for random `u, W [batch, H, len]` drawn from `r`; the parameter gradients (up to `per` entries
/// per tensor, relative step `hs`) and every 7th entry of the input gradient must equal finite
/// differences of ℒ.
///
/// [`Convolution`]: statespace_core::kernels::Convolution
pub fn check_map_gradients(
    map: &mut dyn SequenceMap<f64>,
    store: &mut ParamStore<f64>,
    batch: usize,
    len: usize,
    per: usize,
    hs: f64,
    r: &mut StdRng,
) {
    let n = batch * map.channels() * len;
    let u = randn(n, r);
    let w = randn(n, r);
    let mut y = Vec::new();
    map.forward(store, &u, batch, len, &mut y);
    store.zero_grad();
    let mut du = Vec::new();
    map.backward(store, &w, &mut du);
    check_store_h(&mut store.clone(), per, hs, &mut |s| {
        let mut y = Vec::new();
        map.forward(s, &u, batch, len, &mut y);
        dot(&y, &w)
    });
    let mut uv = u.clone();
    let f: Vec<f64> = (0..n)
        .step_by(7)
        .map(|i| {
            fd(&mut uv, i, 1e-3, &mut |x| {
                let mut y = Vec::new();
                map.forward(store, x, batch, len, &mut y);
                dot(&y, &w)
            })
        })
        .collect();
    let g: Vec<f64> = (0..n).step_by(7).map(|i| du[i]).collect();
    assert_close("input", &g, &f);
}

/// Runs a model of `cfg` (pool none, 2 real inputs, 3 outputs) in convolution mode and step by step,
/// in f64 and in f32 with the same parameters; returns the max |Δy| relative to max |y| for each.
pub fn step_vs_conv(cfg: &ModelConfig, l: usize, seed: u64) -> (f64, f64) {
    let cfg = ModelConfig {
        pool: Pool::None,
        ..cfg.clone()
    };
    let io = IoShape {
        d_input: 2,
        vocab: 0,
        d_output: 3,
        pair: false,
    };
    let b = 2;
    let mut r = rng(seed);
    let x = randn(b * 2 * l, &mut r);
    fn run<T: statespace_core::Float>(
        cfg: &ModelConfig,
        io: IoShape,
        x: &[T],
        b: usize,
        l: usize,
    ) -> (Vec<f64>, f64) {
        let mut m = Model::<T>::new(cfg, io, &mut StdRng::seed_from_u64(3)).unwrap();
        let conv: Vec<f64> = m
            .forward(Input::Real(x), b, l, false, 0)
            .iter()
            .map(|v| v.f64())
            .collect();
        let mut st = m.stream(b).unwrap();
        let mut max_dy: f64 = 0.0;
        for t in 0..l {
            let xt: Vec<T> = (0..b)
                .flat_map(|bb| (0..2).map(move |c| (bb, c)))
                .map(|(bb, c)| x[(bb * 2 + c) * l + t])
                .collect();
            let y = m.stream_step(&mut st, Input::Real(&xt)).to_vec();
            for bb in 0..b {
                for o in 0..3 {
                    max_dy = max_dy.max((y[bb * 3 + o].f64() - conv[(bb * 3 + o) * l + t]).abs());
                }
            }
        }
        (conv, max_dy)
    }
    let (conv, e64) = run::<f64>(&cfg, io, &x, b, l);
    let scale = conv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let x32: Vec<f32> = x.iter().map(|v| *v as f32).collect();
    let (_, e32) = run::<f32>(&cfg, io, &x32, b, l);
    (e64 / scale, e32 / scale)
}
