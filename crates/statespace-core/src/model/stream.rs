//! Lean streaming inference: a trained causal model run one step at a time, as in production or
//! generation. The model is only read; a [`Stream`] owns the recurrent state of every layer and
//! every scratch buffer, sized once, so a step allocates nothing (checked by a counting allocator in
//! the tests). A prompt can run in convolution mode first ([`Model::prefill`]): its outputs come
//! from the FFT convolution and each layer's state from its inputs, then stepping continues.
//!
//! ```text
//! per step, for the B streams at once:   x = encoder.step(input)                   [B, H]
//!   per block:   block.step(x): z = norm(x) (pre-norm) | x;  c = stepper(state, z) + D∘z;
//!                a = GELU(c);  s = GLU(out(a));   x = x + s (pre-norm) | norm(x + s) (post-norm)
//!   features = final_norm(x);  pooled = running mean over the steps so far (mean pooling) | features
//!   output = decoder.step(pooled)                                                 [B, d_out]
//! ```
//! Every operation is the layer's own `step` method (the same math as its `forward` on one time
//! step); weights are read in the model's type `T`, no threads (one step is small, and the result
//! is the same on any machine).

use super::backbone::Model;
use super::config::Input;
use super::ssm_layer::StepScratch;
use crate::engine::float::Float;
use crate::engine::layers::PackedWeights;
use crate::engine::layers::Pool;
use crate::engine::simd::Half;
use crate::error::Error;
use crate::kernels::Stepper;

/// The recurrent state and scratch space of `batch` streams of one model.
pub struct Stream<T: Float> {
    /// One recurrent form per block.
    steppers: Vec<Box<dyn Stepper<T>>>,
    /// Each block's output projection packed for stepping (a copy of the model's weights, read in
    /// one sequential pass per step: see [`crate::engine::simd::Packed`]), in the model's type or
    /// rounded to bf16/f16.
    packed: Vec<PackedWeights<T>>,
    /// The projections' storage format (`None`: the model's type).
    half: Option<Half>,
    /// `states[i] [B, steppers[i].state_len()]`.
    states: Vec<Vec<T>>,
    batch: usize,
    /// Steps taken so far.
    t: usize,
    /// `mean [B, H]`: running mean of the features (mean pooling).
    mean: Vec<T>,
    /// `x [B, H]`: the residual stream.
    x: Vec<T>,
    /// `features [B, H]`: `final_norm(x)`.
    features: Vec<T>,
    /// The layers' scratch vectors.
    scratch: StepScratch<T>,
    /// `out [B, d_out]`.
    out: Vec<T>,
}

impl<T: Float> Stream<T> {
    /// Streams.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The output projections' storage format: `None` for the model's own type.
    pub fn half(&self) -> Option<Half> {
        self.half
    }
    /// Bytes of weights and coefficients a step reads (the packed projections, the recurrences'
    /// coefficients as their steppers report them, D and the norms' parameters are not counted):
    /// with [`Stream::state_bytes`], what a step streams through memory.
    pub fn weight_bytes(&self) -> usize {
        self.packed.iter().map(|p| p.bytes()).sum()
    }
    /// Bytes of recurrent state of all streams (each read and written once per step).
    pub fn state_bytes(&self) -> usize {
        self.states.iter().map(|s| s.len() * size_of::<T>()).sum()
    }
    /// Steps taken so far (prompt included).
    pub fn steps(&self) -> usize {
        self.t
    }
    /// Back to the state before the first step (buffers kept).
    pub fn reset(&mut self) {
        self.states
            .iter_mut()
            .for_each(|s| s.iter_mut().for_each(|v| *v = T::zero()));
        self.mean.iter_mut().for_each(|v| *v = T::zero());
        self.t = 0;
    }
}

impl<T: Float> Model<T> {
    /// A fresh [`Stream`] for `batch` independent streams (an error for bidirectional or
    /// non-causal models and for pair models). The stream copies what stepping reads — each
    /// layer's recurrence coefficients and its output projection packed for one sequential read —
    /// so a stream made before the weights change keeps the old ones: make a new stream after
    /// training or loading a checkpoint.
    pub fn stream(&self, batch: usize) -> Result<Stream<T>, Error> {
        self.stream_with(batch, None)
    }

    /// [`Model::stream`] with the output projections stored as `half` (bf16 or f16: half the bytes
    /// a step reads of them, f32 arithmetic on the rounded weights; the recurrences, norms and
    /// states stay in `T`). An error if a weight is beyond the format's range (f16: |w| > 65504).
    pub fn stream_with(&self, batch: usize, half: Option<Half>) -> Result<Stream<T>, Error> {
        if self.io.pair {
            return Err(Error::Unsupported(
                "a two-tower (pair) model has no step mode".into(),
            ));
        }
        let steppers = self
            .blocks
            .iter()
            .map(|b| b.ssm.map.stepper(&self.store))
            .collect::<Result<Vec<_>, _>>()?;
        let h = self.cfg.d_model;
        let states = steppers
            .iter()
            .map(|s| vec![T::zero(); batch * s.state_len()])
            .collect();
        let z = || vec![T::zero(); batch * h];
        let packed = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.ssm.pack_step(&self.store, half, batch).map_err(|e| {
                    Error::Invalid(format!(
                        "blocks.{i}.ssm.out.weight as {}: {e}",
                        half.map_or("f32", |h| h.name())
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Stream {
            steppers,
            packed,
            half,
            states,
            batch,
            t: 0,
            mean: z(),
            x: z(),
            features: z(),
            scratch: StepScratch::new(batch, h),
            out: vec![T::zero(); batch * self.io.d_output],
        })
    }

    /// One step of every stream: `input` is `[B, d_in]` reals or `[B]` tokens; returns the decoder's
    /// output `[B, d_out]` as if the sequences ended here (with mean pooling: over the steps so
    /// far). Allocates nothing.
    pub fn stream_step<'s>(&self, st: &'s mut Stream<T>, input: Input<'_, T>) -> &'s [T] {
        let store = &self.store;
        self.encoder.step(store, input, &mut st.x);
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.step(
                store,
                st.steppers[i].as_ref(),
                &st.packed[i],
                &mut st.states[i],
                &mut st.x,
                &mut st.scratch,
            );
        }
        st.t += 1;
        let feats: &[T] = match &self.final_norm {
            Some(f) => {
                f.step(store, &st.x, &mut st.features);
                &st.features
            }
            None => &st.x,
        };
        if self.cfg.pool == Pool::Mean {
            let w = T::of(1.0 / st.t as f64);
            for (m, f) in st.mean.iter_mut().zip(feats) {
                *m += (*f - *m) * w;
            }
            self.decoder.step(store, &st.mean, &mut st.out);
        } else {
            self.decoder.step(store, feats, &mut st.out);
        }
        &st.out
    }

    /// Runs a prompt `[B, d_in, L]` (or tokens `[B, L]`) in convolution mode and leaves `st` as if
    /// its `L` steps had been taken one by one (the stream must be fresh: `st.steps() == 0`).
    /// Returns the outputs at every prompt position, `[B, d_out, L]`, as stepping gives them.
    pub fn prefill(
        &mut self,
        st: &mut Stream<T>,
        input: Input<'_, T>,
        len: usize,
    ) -> Result<Vec<T>, Error> {
        if st.t != 0 {
            return Err(Error::Invalid(
                "prefill needs a fresh stream (call Stream::reset first)".into(),
            ));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let (batch, h, k) = (st.batch, self.cfg.d_model, self.io.d_output);
        self.set_lengths(&[]);
        let feats = self.forward_features(input, batch, len, false, 0).to_vec();
        // each layer's state from the inputs it kept
        for (i, blk) in self.blocks.iter().enumerate() {
            blk.ssm
                .prefill_states(st.steppers[i].as_ref(), &mut st.states[i]);
        }
        // the running mean of the features (mean pooling) and the step count
        for b in 0..batch {
            for j in 0..h {
                let row = &feats[(b * h + j) * len..(b * h + j + 1) * len];
                st.mean[b * h + j] = row.iter().copied().sum::<T>() * T::of(1.0 / len as f64);
            }
        }
        st.t = len;
        let mut out = vec![T::zero(); batch * k * len];
        if self.cfg.pool == Pool::Mean {
            // the decoder on the running mean up to each position
            let (mut acc, mut m, mut y) =
                (vec![T::zero(); h], vec![T::zero(); h], vec![T::zero(); k]);
            for b in 0..batch {
                acc.iter_mut().for_each(|v| *v = T::zero());
                for t in 0..len {
                    for j in 0..h {
                        acc[j] += feats[(b * h + j) * len + t];
                        m[j] = acc[j] * T::of(1.0 / (t + 1) as f64);
                    }
                    self.decoder.step(&self.store, &m, &mut y);
                    for o in 0..k {
                        out[(b * k + o) * len + t] = y[o];
                    }
                }
            }
        } else {
            // the decoder at every position
            self.decoder
                .apply(&self.store, &feats, batch, len, &mut out);
        }
        Ok(out)
    }
}
