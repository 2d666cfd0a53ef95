//! Gradient checks of every layer and of whole models against central finite differences (f64), and
//! the recurrent mode against the convolution mode.

use rand::Rng;
use statespace_core::engine::fftconv::FftConv;
use statespace_core::engine::layers::{
    self, BatchNorm, Dropout, Embedding, Gelu, Glu, LayerNorm, Linear, Pool,
};
use statespace_core::engine::params::ParamStore;
use statespace_core::kernels::discretize::Disc;
use statespace_core::model::{Input, IoShape, Model, ModelConfig, NormKind};

use crate::common::*;

#[test]
fn linear_gradients() {
    let mut r = rng(1);
    let (b, cin, cout, l) = (3, 4, 5, 6);
    let mut store = ParamStore::<f64>::new();
    let mut lin = Linear::new(&mut store, "lin", cin, cout, true, &mut r);
    let x = randn(b * cin * l, &mut r);
    let w = randn(b * cout * l, &mut r);
    let mut y = Vec::new();
    lin.forward(&store, &x, b, l, &mut y);
    let mut dx = Vec::new();
    lin.backward(&mut store, &w, &mut dx);
    let mut l2 = lin.clone();
    check_store(&mut store.clone(), 100, &mut |s| {
        let mut y = Vec::new();
        l2.forward(s, &x, b, l, &mut y);
        dot(&y, &w)
    });
    let mut l3 = lin.clone();
    check_input(&x, &dx, &mut |xv| {
        let mut y = Vec::new();
        l3.forward(&store, xv, b, l, &mut y);
        dot(&y, &w)
    });
}

#[test]
fn layernorm_and_batchnorm_gradients() {
    let mut r = rng(2);
    let (b, c, l) = (3, 5, 7);
    let x: Vec<f64> = randn(b * c * l, &mut r)
        .iter()
        .map(|v| 2.0 * v + 0.3)
        .collect();
    let w = randn(b * c * l, &mut r);
    // LayerNorm
    let mut store = ParamStore::<f64>::new();
    let mut ln = LayerNorm::new(&mut store, "ln", c);
    store.params[0].value = randn(c, &mut r);
    store.params[1].value = randn(c, &mut r);
    let mut y = Vec::new();
    ln.forward(&store, &x, b, l, &mut y);
    let mut dx = Vec::new();
    ln.backward(&mut store, &w, &mut dx);
    let mut ln2 = ln.clone();
    check_store(&mut store.clone(), 100, &mut |s| {
        let mut y = Vec::new();
        ln2.forward(s, &x, b, l, &mut y);
        dot(&y, &w)
    });
    check_input(&x, &dx, &mut |xv| {
        let mut y = Vec::new();
        ln2.forward(&store, xv, b, l, &mut y);
        dot(&y, &w)
    });
    // BatchNorm, training mode (batch statistics)
    let mut store = ParamStore::<f64>::new();
    let mut bn = BatchNorm::new(&mut store, "bn", c);
    store.params[0].value = randn(c, &mut r);
    store.params[1].value = randn(c, &mut r);
    bn.forward(&store, &x, b, l, true, &mut y);
    bn.backward(&mut store, &w, &mut dx);
    let mut bn2 = bn.clone();
    check_store(&mut store.clone(), 100, &mut |s| {
        let mut y = Vec::new();
        bn2.forward(s, &x, b, l, true, &mut y);
        dot(&y, &w)
    });
    check_input(&x, &dx, &mut |xv| {
        let mut y = Vec::new();
        bn2.forward(&store, xv, b, l, true, &mut y);
        dot(&y, &w)
    });
    // running statistics: after one step from (0, 1) with momentum 0.1
    let mut bn3 = BatchNorm::new(&mut ParamStore::<f64>::new(), "bn", c);
    bn3.forward(&store, &x, b, l, true, &mut y);
    let m = (b * l) as f64;
    let vals: Vec<f64> = (0..b)
        .flat_map(|bb| x[(bb * c) * l..(bb * c + 1) * l].to_vec())
        .collect();
    let mean = vals.iter().sum::<f64>() / m;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
    assert!((bn3.running_mean[0] - 0.1 * mean).abs() < 1e-12);
    assert!((bn3.running_var[0] - (0.9 + 0.1 * var)).abs() < 1e-12);
}

#[test]
fn elementwise_gradients() {
    let mut r = rng(3);
    let (b, c, l) = (2, 3, 5);
    let x: Vec<f64> = randn(b * 2 * c * l, &mut r)
        .iter()
        .map(|v| 3.0 * v)
        .collect();
    let w2 = randn(b * 2 * c * l, &mut r);
    let w1 = randn(b * c * l, &mut r);
    let mut g = Gelu::new();
    let mut y = Vec::new();
    g.forward(&x, &mut y);
    let mut dx = Vec::new();
    g.backward(&x, &w2, &mut dx);
    check_input(&x, &dx, &mut |xv| {
        let mut y = Vec::new();
        Gelu::new().forward(xv, &mut y);
        dot(&y, &w2)
    });
    // GELU(x) = x Φ(x): Φ(1) = 0.841344746…
    let mut y1: Vec<f64> = Vec::new();
    Gelu::new().forward(&[1.0], &mut y1);
    assert!((y1[0] - 0.841_344_746_068_543).abs() < 1e-12);
    let mut glu = Glu::new();
    glu.forward(&x, b, c, l, &mut y);
    glu.backward(&x, &w1, &mut dx);
    check_input(&x, &dx, &mut |xv| {
        let mut y = Vec::new();
        Glu::new().forward(xv, b, c, l, &mut y);
        dot(&y, &w1)
    });
    for tied in [false, true] {
        let mut d = Dropout::new(0.3, tied);
        d.forward(&x, l, true, 42, &mut y);
        d.backward(&w2, &mut dx);
        check_input(&x, &dx, &mut |xv| {
            let mut y = Vec::new();
            Dropout::new(0.3, tied).forward(xv, l, true, 42, &mut y);
            dot(&y, &w2)
        });
        // inverted scaling and (for tied) one mask per row
        let kept = y.iter().zip(&x).filter(|(a, _)| **a != 0.0).count();
        assert!(kept > 0 && kept < x.len());
        for (a, xv) in y.iter().zip(&x) {
            assert!(*a == 0.0 || (a - xv / 0.7).abs() < 1e-12);
        }
        if tied {
            for row in y.chunks(l) {
                assert!(row.iter().all(|v| *v == 0.0) || row.iter().all(|v| *v != 0.0));
            }
        }
    }
    for pool in [Pool::Mean, Pool::Last] {
        let xs = &x[..b * c * l];
        let wp = randn(b * c, &mut r);
        let mut py = Vec::new();
        layers::pool_forward(pool, xs, b * c, l, &mut py);
        let mut pdx = Vec::new();
        layers::pool_backward(pool, &wp, l, &mut pdx);
        check_input(xs, &pdx, &mut |xv| {
            let mut y = Vec::new();
            layers::pool_forward(pool, xv, b * c, l, &mut y);
            dot(&y, &wp)
        });
    }
}

#[test]
fn embedding_and_loss_gradients() {
    let mut r = rng(4);
    let (b, v, d, l) = (2, 7, 4, 5);
    let mut store = ParamStore::<f64>::new();
    let mut e = Embedding::new(&mut store, "emb", v, d, &mut r);
    let tok: Vec<u32> = (0..b * l).map(|_| r.random_range(0..v as u32)).collect();
    let w = randn(b * d * l, &mut r);
    let mut y = Vec::new();
    e.forward(&store, &tok, b, l, &mut y);
    e.backward(&mut store, &w);
    let mut e2 = e.clone();
    check_store(&mut store.clone(), 100, &mut |s| {
        let mut y = Vec::new();
        e2.forward(s, &tok, b, l, &mut y);
        dot(&y, &w)
    });
    // cross-entropy over [B, K, L] with ignored positions, and MSE
    let k = 5;
    let logits = randn(b * k * l, &mut r);
    let targets: Vec<u32> = (0..b * l)
        .map(|i| {
            if i % 3 == 0 {
                layers::IGNORE
            } else {
                (i % k) as u32
            }
        })
        .collect();
    let mut dl = Vec::new();
    let (loss, _, counted) = layers::cross_entropy(&logits, &targets, b, k, l, &mut dl);
    assert_eq!(
        counted,
        targets.iter().filter(|t| **t != layers::IGNORE).count()
    );
    // independent value: −log softmax at one position
    check_input(&logits, &dl, &mut |lv| {
        let mut tmp = Vec::new();
        layers::cross_entropy(lv, &targets, b, k, l, &mut tmp).0
    });
    assert!(loss > 0.0);
    let uniform = vec![0.0; b * k * l];
    let (lu, _, _) = layers::cross_entropy(&uniform, &targets, b, k, l, &mut dl);
    assert!((lu - (k as f64).ln()).abs() < 1e-12);
    let p = randn(6, &mut r);
    let t = randn(6, &mut r);
    let mut dp = Vec::new();
    let m = layers::mse(&p, &t, &mut dp);
    let want = p.iter().zip(&t).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / 6.0;
    assert!((m - want).abs() < 1e-15);
    check_input(&p, &dp, &mut |pv| layers::mse(pv, &t, &mut Vec::new()));
}

#[test]
fn fft_convolution_matches_direct_sums_and_its_gradients() {
    let mut r = rng(5);
    let (b, h, l) = (2, 3, 9);
    let n = 2 * l;
    let u = randn(b * h * l, &mut r);
    // a bidirectional circular kernel: causal lags in 0..L, anti-causal lags −(j+1) at n−1−j
    let k = randn(h * n, &mut r);
    let mut conv = FftConv::<f64>::new(l);
    let mut y = Vec::new();
    conv.forward(&u, &k, b, h, &mut y);
    for bb in 0..b {
        for c in 0..h {
            for t in 0..l {
                let mut s = 0.0;
                for src in 0..l {
                    let lag = (t as isize - src as isize).rem_euclid(n as isize) as usize;
                    s += u[(bb * h + c) * l + src] * k[c * n + lag];
                }
                assert!((y[(bb * h + c) * l + t] - s).abs() < 1e-12);
            }
        }
    }
    let w = randn(b * h * l, &mut r);
    let (mut du, mut dk) = (Vec::new(), Vec::new());
    conv.backward(&w, &mut du, &mut dk);
    let mut c2 = FftConv::<f64>::new(l);
    check_input(&u, &du, &mut |uv| {
        let mut y = Vec::new();
        c2.forward(uv, &k, b, h, &mut y);
        dot(&y, &w)
    });
    check_input(&k, &dk, &mut |kv| {
        let mut y = Vec::new();
        c2.forward(&u, kv, b, h, &mut y);
        dot(&y, &w)
    });
}

fn small_cfg(
    norm: NormKind,
    prenorm: bool,
    bidirectional: bool,
    pool: Pool,
    glu: bool,
) -> ModelConfig {
    ModelConfig {
        d_model: 4,
        n_layers: 2,
        d_state: 6,
        norm,
        prenorm,
        bidirectional,
        pool,
        glu,
        dropout: 0.2,
        dt_min: 0.01,
        dt_max: 0.3,
        ..ModelConfig::default()
    }
}

#[test]
fn two_block_model_gradients() {
    for (i, (norm, prenorm, bidir, pool, glu, tokens)) in [
        (NormKind::Layer, true, false, Pool::Mean, true, false),
        (NormKind::Batch, false, true, Pool::Last, false, true),
        (NormKind::Layer, false, false, Pool::None, true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rng(10 + i as u64);
        let cfg = small_cfg(norm, prenorm, bidir, pool, glu);
        let (b, l) = (3, 12);
        let io = if tokens {
            IoShape {
                d_input: 0,
                vocab: 5,
                d_output: 3,
                pair: false,
            }
        } else {
            IoShape {
                d_input: 2,
                vocab: 0,
                d_output: 3,
                pair: false,
            }
        };
        let mut model = Model::<f64>::new(&cfg, io, &mut r).unwrap();
        let x = randn(b * 2 * l, &mut r);
        let tok: Vec<u32> = (0..b * l).map(|_| r.random_range(0..5)).collect();
        let input = |x: &[f64]| -> Vec<f64> { x.to_vec() };
        let out_len = if pool == Pool::None { b * 3 * l } else { b * 3 };
        let w = randn(out_len, &mut r);
        let seed = 99;
        let run = |m: &mut Model<f64>, xv: &[f64]| -> f64 {
            let inp = if tokens {
                Input::Tokens(&tok)
            } else {
                Input::Real(xv)
            };
            let y = m.forward(inp, b, l, true, seed).to_vec();
            dot(&y, &w)
        };
        run(&mut model, &input(&x));
        model.store.zero_grad();
        model.backward(&w);
        let mut store = model.store.clone();
        check_store(&mut store, 12, &mut |s| {
            let saved = std::mem::replace(&mut model.store, s.clone());
            let v = run(&mut model, &x);
            model.store = saved;
            v
        });
        if !tokens {
            run(&mut model, &x);
            model.store.zero_grad();
            model.backward(&w);
            let dx = model.input_grad().to_vec();
            check_input(&x, &dx, &mut |xv| run(&mut model, xv));
        }
    }
}

#[test]
fn recurrent_step_equals_convolution() {
    for (disc, glu, prenorm) in [(Disc::Zoh, true, true), (Disc::Bilinear, false, false)] {
        let cfg = ModelConfig {
            d_model: 8,
            n_layers: 2,
            d_state: 16,
            disc,
            glu,
            prenorm,
            pool: Pool::None,
            ..ModelConfig::default()
        };
        // max |Δy| / max |y| over 200 steps of 2 streams (2 inputs, 3 outputs), f64 and f32
        let (e64, e32) = step_vs_conv(&cfg, 200, 20);
        assert!(e64 <= 1e-9, "f64: {e64:e}");
        assert!(e32 <= 1e-4, "f32: {e32:e}");
    }
    // A bidirectional model has no recurrent mode.
    let cfg = ModelConfig {
        bidirectional: true,
        ..ModelConfig::default()
    };
    let m = Model::<f64>::new(
        &cfg,
        IoShape {
            d_input: 1,
            vocab: 0,
            d_output: 2,
            pair: false,
        },
        &mut rng(1),
    )
    .unwrap();
    let err = m
        .stream(1)
        .err()
        .expect("bidirectional stepping is an error");
    assert!(matches!(err, statespace_core::Error::Unsupported(_)));
    assert!(err.to_string().contains("bidirectional"));
}
