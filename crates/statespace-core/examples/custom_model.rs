//! A model of your own around two S4D blocks: token embedding → 2 × `SsmBlock` (pre-norm, S4D-LegS,
//! N = 64, GLU) → linear head at every position, trained with AdamW on the copying task (4 symbols
//! across 40 blanks). `cargo run --release -p statespace-core --example custom_model`
use rand::{SeedableRng, rngs::StdRng};
use statespace_core::engine::layers::{Embedding, Linear, cross_entropy};
use statespace_core::engine::{optim::AdamW, optim::OptimConfig, params::ParamStore};
use statespace_core::model::{ModelConfig, SsmBlock};
use statespace_data::{Batch, SeqTask, Split, tasks::CopyingTask};

/// Trains for `steps` steps of 32 examples; returns the token accuracy on 512 test examples.
pub fn train(steps: usize) -> f64 {
    let task = CopyingTask::new(4, 40, 6, [8192, 0, 512], 0).unwrap();
    let (h, len, cfg) = (64, task.spec().len, ModelConfig::default());
    let (mut store, rng) = (ParamStore::new(), &mut StdRng::seed_from_u64(0));
    let mut embed = Embedding::new(&mut store, "embed", 6, h, rng);
    let mut blocks: Vec<SsmBlock<f32>> = (0..2)
        .map(|i| SsmBlock::new(&mut store, &format!("blocks.{i}"), &cfg, rng).unwrap())
        .collect();
    let mut head = Linear::new(&mut store, "head", h, 6, true, rng);
    let (mut opt, mut optim) = (AdamW::new(&store), OptimConfig::default());
    (optim.lr, optim.weight_decay) = (4e-3, 0.0);
    let (mut batch, mut acts, mut logits) = (Batch::default(), vec![vec![]; 3], vec![]);
    let (mut g, mut g2) = (vec![], vec![]);
    let (mut correct, mut counted) = (0, 0);
    for step in 0..steps + 4 {
        let (split, b, first) = match step.checked_sub(steps) {
            None => (Split::Train, 32, step * 32 % 8192),
            Some(k) => (Split::Test, 128, k * 128),
        };
        task.fill(split, &(first..first + b).collect::<Vec<_>>(), &mut batch)
            .unwrap();
        embed.forward(&store, &batch.tokens, b, len, &mut acts[0]);
        for (i, blk) in blocks.iter_mut().enumerate() {
            let (x, y) = acts.split_at_mut(i + 1);
            blk.forward(&store, &x[i], b, len, false, 0, &mut y[0]);
        }
        head.forward(&store, &acts[2], b, len, &mut logits);
        let (_, c, n) = cross_entropy(&logits, &batch.labels, b, 6, len, &mut g);
        if split == Split::Test {
            (correct, counted) = (correct + c, counted + n);
            continue;
        }
        store.zero_grad();
        head.backward(&mut store, &g, &mut g2);
        blocks
            .iter_mut()
            .rev()
            .for_each(|blk| blk.backward_in_place(&mut store, &mut g2));
        embed.backward(&mut store, &g2);
        opt.step(&mut store, &optim, 1.0);
    }
    correct as f64 / counted as f64
}

fn main() {
    println!("test token accuracy {:.2}%", 100.0 * train(1000));
}
