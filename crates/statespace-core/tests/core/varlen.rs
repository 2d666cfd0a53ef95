//! Variable-length batches: a padded batch gives, on the valid part, the outputs and gradients each
//! sequence gives alone (both directions of bidirectional layers, pooling, BatchNorm statistics), and
//! the two-tower (pair) head is differentiated correctly.

use rand::Rng;
use statespace_core::engine::layers::{BatchNorm, Pool};
use statespace_core::engine::params::ParamStore;
use statespace_core::model::{Input, IoShape, LayerKind, Model, ModelConfig, NormKind};

use crate::common::*;

fn cfg(kind: LayerKind, norm: NormKind, bidirectional: bool, pool: Pool) -> ModelConfig {
    ModelConfig {
        kind,
        d_model: 4,
        n_layers: 2,
        d_state: 6,
        norm,
        prenorm: true,
        bidirectional,
        pool,
        glu: true,
        dropout: 0.0,
        dt_min: 0.01,
        dt_max: 0.3,
        // a fixed kernel length, so a sequence alone gets the same kernel prefix as in the batch
        l_max: 16,
        ..ModelConfig::default()
    }
}

fn tokens_io(pair: bool) -> IoShape {
    IoShape {
        d_input: 0,
        vocab: 7,
        d_output: 3,
        pair,
    }
}

/// The sequences of example `b` (one, or two for pair tasks) cut to their valid lengths.
fn alone(tok: &[u32], lens: &[usize], l: usize, rows: &[usize]) -> (Vec<u32>, usize) {
    let n = rows.iter().map(|&r| lens[r]).max().unwrap();
    let mut out = Vec::new();
    for &r in rows {
        let mut s = tok[r * l..r * l + lens[r]].to_vec();
        s.resize(n, 0);
        out.extend(s);
    }
    (out, n)
}

/// Batch vs alone for one model configuration: outputs and every parameter gradient.
fn check_padded_equals_alone(c: &ModelConfig, pair: bool) {
    let mut r = rng(7);
    let io = tokens_io(pair);
    let mut model = Model::<f64>::new(c, io, &mut r).unwrap();
    let (b, l) = (3usize, 16usize);
    let seqs = if pair { 2 * b } else { b };
    // every example's sequences end at different places; pair members have equal lengths so that
    // "alone" needs no padding either
    let lens: Vec<usize> = (0..seqs).map(|s| [16, 5, 11][s % b]).collect();
    // padding holds random tokens: the model must not read them
    let tok: Vec<u32> = (0..seqs * l).map(|_| r.random_range(0..7)).collect();
    let w = randn(b * 3, &mut r);
    model.set_lengths(&lens);
    let y = model.forward(Input::Tokens(&tok), b, l, true, 1).to_vec();
    model.store.zero_grad();
    model.backward(&w);
    let g_batch: Vec<Vec<f64>> = model.store.params.iter().map(|p| p.grad.clone()).collect();

    let mut g_sum: Vec<Vec<f64>> = g_batch.iter().map(|g| vec![0.0; g.len()]).collect();
    model.store.zero_grad();
    for e in 0..b {
        let rows: Vec<usize> = if pair { vec![e, b + e] } else { vec![e] };
        let (t, n) = alone(&tok, &lens, l, &rows);
        model.set_lengths(&[]);
        let ya = model.forward(Input::Tokens(&t), 1, n, true, 1).to_vec();
        let err = max_diff(&ya, &y[e * 3..(e + 1) * 3]);
        assert!(
            err <= 1e-10 * max_abs(&y),
            "{:?} pair={pair}: example {e} (length {n}) differs by {err:e}",
            c.kind
        );
        model.store.zero_grad();
        model.backward(&w[e * 3..(e + 1) * 3]);
        for (s, p) in g_sum.iter_mut().zip(&model.store.params) {
            s.iter_mut().zip(&p.grad).for_each(|(a, b)| *a += b);
        }
    }
    for ((gb, gs), p) in g_batch.iter().zip(&g_sum).zip(&model.store.params) {
        let err = max_diff(gb, gs);
        assert!(
            err <= 1e-9 * max_abs(gs).max(1e-12),
            "{:?} pair={pair}: gradient of {} differs by {err:e} (scale {:e})",
            c.kind,
            p.name,
            max_abs(gs)
        );
    }
}

#[test]
fn padded_batch_equals_each_sequence_alone() {
    for (kind, bidir, pool) in [
        (LayerKind::S4d, true, Pool::Mean),
        (LayerKind::S4d, false, Pool::Last),
        (LayerKind::S4, true, Pool::Mean),
        (LayerKind::S5, true, Pool::Last),
        (LayerKind::Sgconv, true, Pool::Mean),
        (LayerKind::Hope, false, Pool::Mean),
    ] {
        check_padded_equals_alone(&cfg(kind, NormKind::Layer, bidir, pool), false);
    }
}

#[test]
fn padded_pairs_equal_each_pair_alone() {
    check_padded_equals_alone(
        &cfg(LayerKind::S4d, NormKind::Layer, true, Pool::Mean),
        true,
    );
}

#[test]
fn two_tower_head_gradients() {
    let mut r = rng(3);
    let c = cfg(LayerKind::S4d, NormKind::Batch, true, Pool::Mean);
    let mut model = Model::<f64>::new(&c, tokens_io(true), &mut r).unwrap();
    let (b, l) = (2usize, 10usize);
    let lens = vec![10, 6, 8, 3];
    let tok: Vec<u32> = (0..2 * b * l).map(|_| r.random_range(0..7)).collect();
    let w = randn(b * 3, &mut r);
    model.set_lengths(&lens);
    let run = |m: &mut Model<f64>| -> f64 {
        let y = m.forward(Input::Tokens(&tok), b, l, true, 5).to_vec();
        dot(&y, &w)
    };
    run(&mut model);
    model.store.zero_grad();
    model.backward(&w);
    let mut store = model.store.clone();
    check_store(&mut store, 10, &mut |s| {
        let saved = std::mem::replace(&mut model.store, s.clone());
        let v = run(&mut model);
        model.store = saved;
        v
    });
}

#[test]
fn batchnorm_model_ignores_padding_content() {
    // BatchNorm couples the examples of a batch, so compare two batches that differ only in what the
    // padding holds: the outputs and gradients must not change at all.
    let mut r = rng(11);
    let c = cfg(LayerKind::S4d, NormKind::Batch, true, Pool::Mean);
    let mut model = Model::<f64>::new(&c, tokens_io(false), &mut r).unwrap();
    let (b, l) = (3usize, 12usize);
    let lens = vec![12, 4, 9];
    let tok: Vec<u32> = (0..b * l).map(|_| r.random_range(0..7)).collect();
    let mut tok2 = tok.clone();
    for e in 0..b {
        for t in lens[e]..l {
            tok2[e * l + t] = (tok[e * l + t] + 3) % 7;
        }
    }
    let w = randn(b * 3, &mut r);
    let mut grads = Vec::new();
    let mut outs = Vec::new();
    for t in [&tok, &tok2] {
        model.set_lengths(&lens);
        outs.push(model.forward(Input::Tokens(t), b, l, true, 2).to_vec());
        model.store.zero_grad();
        model.backward(&w);
        grads.push(
            model
                .store
                .params
                .iter()
                .flat_map(|p| p.grad.clone())
                .collect::<Vec<f64>>(),
        );
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(grads[0], grads[1]);
}

#[test]
fn batchnorm_statistics_over_the_valid_positions() {
    // Independent reference: the valid parts laid end to end as one sequence [1, C, Σ n_b].
    let mut r = rng(5);
    let (b, c, l) = (3usize, 2usize, 7usize);
    let lens = [7usize, 2, 5];
    let x = randn(b * c * l, &mut r);
    let dy_full = randn(b * c * l, &mut r);
    let total: usize = lens.iter().sum();
    let mut xc = vec![0.0; c * total];
    let mut dyc = vec![0.0; c * total];
    let mut dy = vec![0.0; b * c * l];
    let mut off = 0;
    for e in 0..b {
        for ch in 0..c {
            for t in 0..lens[e] {
                xc[ch * total + off + t] = x[(e * c + ch) * l + t];
                dyc[ch * total + off + t] = dy_full[(e * c + ch) * l + t];
                dy[(e * c + ch) * l + t] = dy_full[(e * c + ch) * l + t];
            }
        }
        off += lens[e];
    }
    let mut store = ParamStore::<f64>::new();
    let mut bn = BatchNorm::new(&mut store, "bn", c);
    let mut store2 = ParamStore::<f64>::new();
    let mut bn2 = BatchNorm::new(&mut store2, "bn", c);
    for s in [&mut store, &mut store2] {
        s.params[0].value = vec![1.3, 0.7];
        s.params[1].value = vec![0.2, -0.4];
    }
    bn.set_lengths(&lens);
    let (mut y, mut yc, mut dx, mut dxc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    bn.forward(&store, &x, b, l, true, &mut y);
    bn2.forward(&store2, &xc, 1, total, true, &mut yc);
    bn.backward(&mut store, &dy, &mut dx);
    bn2.backward(&mut store2, &dyc, &mut dxc);
    let mut off = 0;
    for e in 0..b {
        for ch in 0..c {
            for t in 0..lens[e] {
                let (i, j) = ((e * c + ch) * l + t, ch * total + off + t);
                assert!((y[i] - yc[j]).abs() < 1e-12, "y[{e},{ch},{t}]");
                assert!((dx[i] - dxc[j]).abs() < 1e-12, "dx[{e},{ch},{t}]");
            }
        }
        off += lens[e];
    }
    for k in 0..2 {
        assert!(max_diff(&store.params[k].grad, &store2.params[k].grad) < 1e-12);
    }
    assert!(max_diff(&bn.running_mean, &bn2.running_mean) < 1e-14);
    assert!(max_diff(&bn.running_var, &bn2.running_var) < 1e-14);
}
