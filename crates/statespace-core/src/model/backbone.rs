//! The deep backbone: encoder → residual SSM blocks (pre- or post-norm) → pooling → decoder.
//!
//! ```text
//! SSM layer   u [B,H,L] → c = map(u) + D·u → GELU → dropout → linear H→2H → GLU → [B,H,L]
//! block       pre-norm:  x + ssm(norm(x))          post-norm:  norm(x + ssm(x))
//! model       encoder (linear d_in→H, or embedding) → blocks → [final norm if pre-norm]
//!             → pool (mean | last | none) → decoder (linear H→d_out)
//! ```
//!
//! The recurrent mode is [`super::stream`]: the same layers one time step at a time through each
//! map's stepper; it equals the convolution mode for causal models and is an error for
//! bidirectional ones.

use super::block::{Norm, SsmBlock};
use super::config::{Input, IoShape, ModelConfig};
use super::ssm_layer::InputNoise;
use crate::engine::float::Float;
use crate::engine::layers::{self, Embedding, Gelu, Linear, Pool};
use crate::engine::params::ParamStore;
use crate::error::Error;
use rand::Rng;

/// The one walk over a model's buffers, shared (`&`) or mutable (`&mut`): `iter`/`as_ref`/… name
/// the accessors of the flavour.
macro_rules! buffers_of {
    ($model:ident, $iter:ident, $as:ident, $stats:ident, $bufs:ident) => {{
        let mut out = Vec::new();
        for (i, blk) in $model.blocks.$iter().enumerate() {
            if let Some((m, v)) = blk.norm.$stats() {
                out.push((format!("blocks.{i}.norm.running_mean"), m));
                out.push((format!("blocks.{i}.norm.running_var"), v));
            }
            for (n, b) in blk.ssm.map.$bufs() {
                out.push((format!("blocks.{i}.ssm.{n}"), b));
            }
        }
        if let Some((m, v)) = $model.final_norm.$as().and_then(|f| f.$stats()) {
            out.push(("final_norm.running_mean".to_string(), m));
            out.push(("final_norm.running_var".to_string(), v));
        }
        out
    }};
}

/// How inputs enter the model: a linear map of real channels, or a token embedding.
#[derive(Debug)]
pub enum Encoder<T: Float> {
    /// Real inputs `[B, d_in, L]` → `[B, H, L]` (`encoder.weight [H, d_in]`, `encoder.bias`).
    Linear(Linear<T>),
    /// Tokens `[B, L]` → `[B, H, L]` (`encoder.weight [V, H]`).
    Embedding(Embedding),
}

impl<T: Float> Encoder<T> {
    /// `input → x [B, H, L]`, keeping what the backward needs. Panics if the input kind does not
    /// match the encoder (the data layer guarantees it).
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        input: Input<'_, T>,
        batch: usize,
        len: usize,
        x: &mut Vec<T>,
    ) {
        match (self, input) {
            (Encoder::Linear(lin), Input::Real(v)) => lin.forward(store, v, batch, len, x),
            (Encoder::Embedding(e), Input::Tokens(t)) => e.forward(store, t, batch, len, x),
            _ => panic!("input kind does not match the model's encoder"),
        }
    }

    /// Accumulates the encoder's gradients from `dx [B, H, L]`; the real input's gradient goes to
    /// `d_input` (tokens have none).
    pub fn backward(&mut self, store: &mut ParamStore<T>, dx: &[T], d_input: &mut Vec<T>) {
        match self {
            Encoder::Linear(lin) => lin.backward(store, dx, d_input),
            Encoder::Embedding(e) => e.backward(store, dx),
        }
    }

    /// One step of every stream: `[B, d_in]` reals or `[B]` tokens → `x [B, H]`.
    pub fn step(&self, store: &ParamStore<T>, input: Input<'_, T>, x: &mut [T]) {
        match (self, input) {
            (Encoder::Linear(lin), Input::Real(v)) => lin.step(store, v, x),
            (Encoder::Embedding(e), Input::Tokens(t)) => e.step(store, t, x),
            _ => panic!("input kind does not match the model's encoder"),
        }
    }
}

/// A model: parameters, layers and the activations of the last forward.
#[derive(Debug)]
pub struct Model<T: Float> {
    /// The model configuration.
    pub cfg: ModelConfig,
    /// Input and output shape.
    pub io: IoShape,
    /// All parameters.
    pub store: ParamStore<T>,
    /// The encoder (`encoder.*`).
    pub encoder: Encoder<T>,
    /// The residual blocks (`blocks.i.*`).
    pub blocks: Vec<SsmBlock<T>>,
    /// The final norm of pre-norm models (`final_norm.*`).
    pub final_norm: Option<Norm<T>>,
    /// The decoder (`decoder.*`).
    pub decoder: Linear<T>,
    /// Two-tower head (`io.pair`): `decoder.hidden` (4H → H), GELU, then `decoder` (H → out).
    pub pair_head: Option<(Linear<T>, Gelu<T>)>,
    /// `acts[i] [B, H, L]`: the input of block `i` (`acts[0]` the encoder's output), `acts[n]` the
    /// last block's output.
    acts: Vec<Vec<T>>,
    /// `features [B, H, L]`: `final_norm(acts[n])` (pre-norm models).
    features: Vec<T>,
    /// `pooled [B, H]` (pair tasks: `[2B, H]`, the first towers then the second).
    pooled: Vec<T>,
    /// `pair_features [B, 4H]`: `[u, v, u∗v, u−v]` of the two towers.
    pair_features: Vec<T>,
    /// `pair_hidden [B, H]` and its GELU `pair_hidden_act [B, H]`.
    pair_hidden: Vec<T>,
    pair_hidden_act: Vec<T>,
    /// `out [B, d_out]` (pooled) or `[B, d_out, L]` (pool = none).
    out: Vec<T>,
    /// `grad_a`, `grad_b`: gradient scratch of the backward; `grad_b` ends as the real input's
    /// gradient `[B, d_in, L]`.
    grad_a: Vec<T>,
    grad_b: Vec<T>,
    /// `(batch, len)` of the last forward (sequences: a pair task counts both towers).
    dims: (usize, usize),
    /// Valid length of each sequence (empty: all).
    lengths: Vec<usize>,
}

impl<T: Float> Model<T> {
    /// Builds and initializes a model (parameters drawn from `rng`).
    pub fn new(cfg: &ModelConfig, io: IoShape, rng: &mut impl Rng) -> Result<Self, Error> {
        cfg.validate()?;
        if (io.d_input == 0) == (io.vocab == 0) {
            return Err(Error::Invalid(
                "exactly one of d_input (real inputs) and vocab (tokens) must be non-zero".into(),
            ));
        }
        if io.d_output == 0 {
            return Err(Error::Invalid(
                "the task has no outputs (d_output = 0)".into(),
            ));
        }
        let h = cfg.d_model;
        let mut store = ParamStore::new();
        let encoder = if io.vocab > 0 {
            Encoder::Embedding(Embedding::new(&mut store, "encoder", io.vocab, h, rng))
        } else {
            Encoder::Linear(Linear::new(&mut store, "encoder", io.d_input, h, true, rng))
        };
        let blocks = (0..cfg.n_layers)
            .map(|i| SsmBlock::new(&mut store, &format!("blocks.{i}"), cfg, rng))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = cfg
            .prenorm
            .then(|| Norm::new(&mut store, "final_norm", cfg.norm, h));
        if io.pair && cfg.pool == Pool::None {
            return Err(Error::config(
                "model.pool",
                "a two-tower (pair) task needs \"mean\" or \"last\"",
            ));
        }
        let pair_head = io.pair.then(|| {
            (
                Linear::new(&mut store, "decoder.hidden", 4 * h, h, true, rng),
                Gelu::new(),
            )
        });
        let decoder = Linear::new(&mut store, "decoder", h, io.d_output, true, rng);
        Ok(Self {
            cfg: cfg.clone(),
            io,
            store,
            encoder,
            blocks,
            final_norm,
            decoder,
            pair_head,
            acts: Vec::new(),
            features: Vec::new(),
            pooled: Vec::new(),
            pair_features: Vec::new(),
            pair_hidden: Vec::new(),
            pair_hidden_act: Vec::new(),
            out: Vec::new(),
            grad_a: Vec::new(),
            grad_b: Vec::new(),
            dims: (0, 0),
            lengths: Vec::new(),
        })
    }

    /// Sets the valid length of each input sequence for later forwards (empty: every sequence has
    /// the full length). Padded positions (`l ≥ lengths[b]`) are zeroed at the input of every
    /// sequence map, left out of BatchNorm statistics and of pooling, so a padded batch gives, on
    /// the valid part, what each sequence gives alone. For pair tasks: one length per sequence
    /// (`2B`, the first towers then the second).
    pub fn set_lengths(&mut self, lengths: &[usize]) {
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
        for blk in &mut self.blocks {
            blk.set_lengths(lengths);
        }
        if let Some(f) = &mut self.final_norm {
            f.set_lengths(lengths);
        }
    }

    /// The backbone without its head: encoder, blocks and final norm, `input → [B, H, L]` (the
    /// features the pooling and decoder read), keeping what the backward needs. `batch` counts
    /// sequences (a pair task's `2B`).
    pub fn forward_features(
        &mut self,
        input: Input<'_, T>,
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
    ) -> &[T] {
        self.dims = (batch, len);
        let nb = self.blocks.len();
        self.acts.resize_with(nb + 1, Vec::new);
        self.encoder
            .forward(&self.store, input, batch, len, &mut self.acts[0]);
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            let lseed = layers::splitmix64(seed ^ layers::splitmix64(i as u64 + 1));
            blk.forward(
                &self.store,
                &before[i],
                batch,
                len,
                train,
                lseed,
                &mut after[0],
            );
        }
        match &mut self.final_norm {
            Some(fnorm) => {
                fnorm.forward(
                    &self.store,
                    &self.acts[nb],
                    batch,
                    len,
                    train,
                    &mut self.features,
                );
                &self.features
            }
            None => &self.acts[nb],
        }
    }

    /// Forward pass; returns the output `[B, d_out]` (pooled) or `[B, d_out, L]` (pool = none).
    /// `batch` counts examples: for a pair task the input holds `2·batch` sequences (all first
    /// documents, then all second documents).
    /// `seed` drives dropout (a function of the training step, so runs are reproducible).
    pub fn forward(
        &mut self,
        input: Input<'_, T>,
        batch: usize,
        len: usize,
        train: bool,
        seed: u64,
    ) -> &[T] {
        let h = self.cfg.d_model;
        let examples = batch;
        let batch = if self.io.pair { 2 * batch } else { batch };
        self.forward_features(input, batch, len, train, seed);
        let feats: &[T] = if self.final_norm.is_some() {
            &self.features
        } else {
            &self.acts[self.blocks.len()]
        };
        if self.cfg.pool == Pool::None {
            self.decoder
                .forward(&self.store, feats, batch, len, &mut self.out);
        } else {
            layers::pool_forward_masked(
                self.cfg.pool,
                feats,
                batch * h,
                h,
                len,
                &self.lengths,
                &mut self.pooled,
            );
            if let Some((hidden, gelu)) = &mut self.pair_head {
                // [u, v, u∗v, u−v] per example: [B, 4H]
                let (u, v) = self.pooled.split_at(examples * h);
                self.pair_features.clear();
                for b in 0..examples {
                    let (ub, vb) = (&u[b * h..(b + 1) * h], &v[b * h..(b + 1) * h]);
                    self.pair_features.extend_from_slice(ub);
                    self.pair_features.extend_from_slice(vb);
                    self.pair_features
                        .extend(ub.iter().zip(vb).map(|(a, b)| *a * *b));
                    self.pair_features
                        .extend(ub.iter().zip(vb).map(|(a, b)| *a - *b));
                }
                hidden.forward(
                    &self.store,
                    &self.pair_features,
                    examples,
                    1,
                    &mut self.pair_hidden,
                );
                gelu.forward(&self.pair_hidden, &mut self.pair_hidden_act);
                self.decoder.forward(
                    &self.store,
                    &self.pair_hidden_act,
                    examples,
                    1,
                    &mut self.out,
                );
            } else {
                self.decoder
                    .forward(&self.store, &self.pooled, batch, 1, &mut self.out);
            }
        }
        &self.out
    }

    /// Backward pass from `dout` (same shape as the output); accumulates every parameter gradient.
    pub fn backward(&mut self, dout: &[T]) {
        let (batch, len) = self.dims;
        let h = self.cfg.d_model;
        let mut g = std::mem::take(&mut self.grad_a);
        let mut g2 = std::mem::take(&mut self.grad_b);
        if self.cfg.pool == Pool::None {
            self.decoder.backward(&mut self.store, dout, &mut g);
        } else {
            self.decoder.backward(&mut self.store, dout, &mut g2);
            if let Some((hidden, gelu)) = &mut self.pair_head {
                let examples = batch / 2;
                gelu.backward(&self.pair_hidden, &g2, &mut g);
                hidden.backward(&mut self.store, &g, &mut g2);
                // g2 = dℒ/d[u, v, u∗v, u−v]  →  dℒ/du, dℒ/dv stacked as [2B, H]
                let mut dp = vec![T::zero(); batch * h];
                let (u, v) = self.pooled.split_at(examples * h);
                for b in 0..examples {
                    let f = &g2[b * 4 * h..(b + 1) * 4 * h];
                    for j in 0..h {
                        let (gu, gv, gm, gd) = (f[j], f[h + j], f[2 * h + j], f[3 * h + j]);
                        dp[b * h + j] = gu + gm * v[b * h + j] + gd;
                        dp[(examples + b) * h + j] = gv + gm * u[b * h + j] - gd;
                    }
                }
                g2 = dp;
            }
            layers::pool_backward_masked(self.cfg.pool, &g2, h, len, &self.lengths, &mut g);
        }
        if let Some(fnorm) = &mut self.final_norm {
            fnorm.backward(&mut self.store, &g, &mut g2);
            std::mem::swap(&mut g, &mut g2);
        }
        for blk in self.blocks.iter_mut().rev() {
            blk.backward_in_place(&mut self.store, &mut g);
        }
        self.encoder.backward(&mut self.store, &g, &mut g2);
        self.grad_a = g;
        self.grad_b = g2;
    }

    /// Adds `noise` to the input of every SSM layer in later forwards (`None` removes it).
    pub fn set_input_noise(&mut self, noise: Option<InputNoise>) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.ssm.set_input_noise(noise.map(|n| InputNoise {
                seed: crate::engine::layers::splitmix64(n.seed ^ (i as u64 + 1)),
                ..n
            }));
        }
    }

    /// Number of residual blocks.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The impulse responses of block `layer`'s sequence map (without the `D·u` skip), as
    /// `(directions, [dirs, H, len])`: the convolution kernels, or for S5 the responses of each
    /// channel to an impulse on itself.
    pub fn layer_kernels(&mut self, layer: usize, len: usize) -> Result<(usize, Vec<T>), Error> {
        let nb = self.blocks.len();
        let blk = self.blocks.get_mut(layer).ok_or_else(|| {
            Error::Invalid(format!("layer {layer} does not exist (the model has {nb})"))
        })?;
        Ok(blk.ssm.map.impulse_responses(&self.store, len))
    }

    /// The step Δ of each channel of block `layer`'s sequence map (S5: the mean of its per-state
    /// steps), the grid `t = k·Δ` the PTD noise test uses; `None` for a map without a step (SGConv).
    pub fn layer_steps(&self, layer: usize) -> Result<Option<Vec<f64>>, Error> {
        let nb = self.blocks.len();
        let blk = self.blocks.get(layer).ok_or_else(|| {
            Error::Invalid(format!("layer {layer} does not exist (the model has {nb})"))
        })?;
        Ok(blk.ssm.map.channel_steps(&self.store))
    }

    /// Gradient of the loss with respect to a real input of the last forward/backward (`[B, d_in, L]`).
    pub fn input_grad(&self) -> &[T] {
        &self.grad_b
    }

    /// The non-trainable state saved in checkpoints, by name: BatchNorm running statistics
    /// (`blocks.0.norm.running_mean`, …) and the sequence maps' buffers (`blocks.0.ssm.kernel.*`).
    pub fn buffers(&self) -> Vec<(String, &Vec<T>)> {
        buffers_of!(self, iter, as_ref, running_stats, buffers)
    }

    /// Mutable access to [`Model::buffers`] (for loading checkpoints).
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<T>)> {
        buffers_of!(self, iter_mut, as_mut, running_stats_mut, buffers_mut)
    }
}
