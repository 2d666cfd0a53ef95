//! Lean streaming inference: a trained causal model run one step at a time, as in production or
//! generation. The model is only read; a [`Stream`] owns the recurrent state of every layer and
//! every scratch buffer, sized once, so a step allocates nothing (checked by a counting allocator in
//! the tests). A prompt can run in convolution mode first ([`Model::prefill`]): its outputs come
//! from the FFT convolution and each layer's state from its inputs, then stepping continues.
//!
//! ```text
//! per step, per stream b:   x = encoder(input_b)                                   [H]
//!   per block:   z = norm(x) (pre-norm) | x;   c = stepper(state, z) + D∘z;   a = GELU(c)
//!                s = out(a) (→ GLU);   x = x + s (pre-norm) | norm(x + s) (post-norm)
//!   features = final_norm(x);  pooled = running mean over the steps so far (mean pooling) | features
//!   output = decoder(pooled)                                                      [d_out]
//! ```
//! Weights are read in the model's type `T`; every operation is a plain loop over the `[B, H]`
//! vectors (no GEMM, no threads: one step is small, and the result is the same on any machine).

use crate::float::Float;
use crate::kernel::Stepper;
use crate::layers::Pool;
use crate::model::{Encoder, Input, Model, Norm};
use rayon::prelude::*;

/// The recurrent state and scratch space of `batch` streams of one model.
pub struct Stream<T: Float> {
    steppers: Vec<Box<dyn Stepper<T>>>,
    states: Vec<Vec<T>>,
    batch: usize,
    t: usize,
    mean: Vec<T>,
    x: Vec<T>,
    z: Vec<T>,
    c: Vec<T>,
    a: Vec<T>,
    o: Vec<T>,
    s: Vec<T>,
    out: Vec<T>,
}

impl<T: Float> Stream<T> {
    /// Streams.
    pub fn batch(&self) -> usize {
        self.batch
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

/// `Y[b, o] = bias[o] + Σ_i W[o, i] X[b, i]` for a batch of vectors `X [B, cin]`, `Y [B, cout]`: each
/// weight row is read once for all B vectors (at batch 1 the step is bound by reading the weights).
fn matmat<T: Float>(w: &[T], bias: Option<&[T]>, x: &[T], cin: usize, y: &mut [T], cout: usize) {
    let batch = x.len() / cin;
    if batch == 1 {
        return T::gemv(w, bias, x, &mut y[..cout]);
    }
    // blocks of 16 rows (16 KB at H = 256) stay in L1 while every stream uses them
    const ROWS: usize = 16;
    for o0 in (0..cout).step_by(ROWS) {
        let o1 = (o0 + ROWS).min(cout);
        let wb = &w[o0 * cin..o1 * cin];
        let bb = bias.map(|b| &b[o0..o1]);
        for b in 0..batch {
            T::gemv(
                wb,
                bb,
                &x[b * cin..(b + 1) * cin],
                &mut y[b * cout + o0..b * cout + o1],
            );
        }
    }
}

/// `y[o] = b[o] + Σ_i W[o, i] x[i]` for one vector.
fn matvec<T: Float>(w: &[T], b: Option<&[T]>, x: &[T], y: &mut [T]) {
    T::gemv(w, b, x, y);
}

fn norm_apply<T: Float>(model: &Model<T>, n: &Norm<T>, x: &[T], y: &mut [T]) {
    let st = &model.store;
    match n {
        Norm::Layer(ln) => {
            let (g, b) = (st.value(ln.gamma), st.value(ln.beta));
            let c = x.len();
            let inv = T::of(1.0 / c as f64);
            let mean = x.iter().copied().sum::<T>() * inv;
            let var = x.iter().map(|v| (*v - mean) * (*v - mean)).sum::<T>() * inv;
            let r = T::one() / (var + T::of(ln.eps())).sqrt();
            for i in 0..c {
                y[i] = g[i] * (x[i] - mean) * r + b[i];
            }
        }
        Norm::Batch(bn) => {
            let (g, b) = (st.value(bn.gamma), st.value(bn.beta));
            for i in 0..x.len() {
                let r = T::one() / (bn.running_var[i] + T::of(bn.eps())).sqrt();
                y[i] = g[i] * (x[i] - bn.running_mean[i]) * r + b[i];
            }
        }
    }
}

impl<T: Float> Model<T> {
    /// A fresh [`Stream`] for `batch` independent streams (an error for bidirectional or
    /// non-causal models and for pair models).
    pub fn stream(&self, batch: usize) -> Result<Stream<T>, String> {
        if self.io.pair {
            return Err("a two-tower (pair) model has no step mode".into());
        }
        let steppers = self
            .blocks
            .iter()
            .map(|b| b.ssm.mixer.stepper(&self.store))
            .collect::<Result<Vec<_>, _>>()?;
        let h = self.cfg.d_model;
        let states = steppers
            .iter()
            .map(|s| vec![T::zero(); batch * s.state_len()])
            .collect();
        let z = || vec![T::zero(); batch * h];
        Ok(Stream {
            steppers,
            states,
            batch,
            t: 0,
            mean: z(),
            x: z(),
            z: z(),
            c: z(),
            a: z(),
            o: vec![T::zero(); 2 * batch * h],
            s: z(),
            out: vec![T::zero(); batch * self.io.d_output],
        })
    }

    /// One step of every stream: `input` is `[B, d_in]` reals or `[B]` tokens; returns the decoder's
    /// output `[B, d_out]` as if the sequences ended here. Allocates nothing.
    pub fn stream_step<'s>(&self, st: &'s mut Stream<T>, input: Input<'_, T>) -> &'s [T] {
        let h = self.cfg.d_model;
        let batch = st.batch;
        let store = &self.store;
        for b in 0..batch {
            let xb = &mut st.x[b * h..(b + 1) * h];
            match (&self.encoder, input) {
                (Encoder::Linear(lin), Input::Real(v)) => {
                    let cin = lin.cin;
                    matvec(
                        store.value(lin.w),
                        lin.b.map(|id| store.value(id)),
                        &v[b * cin..(b + 1) * cin],
                        xb,
                    );
                }
                (Encoder::Embedding(e), Input::Tokens(t)) => {
                    let tok = t[b] as usize;
                    xb.copy_from_slice(&store.value(e.w)[tok * h..(tok + 1) * h]);
                }
                _ => panic!("input kind does not match the model's encoder"),
            }
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let stepper = &st.steppers[i];
            let sl = stepper.state_len();
            let d = store.value(blk.ssm.d);
            let (w_out, b_out) = (
                store.value(blk.ssm.out.w),
                blk.ssm.out.b.map(|id| store.value(id)),
            );
            for b in 0..batch {
                let r = b * h..(b + 1) * h;
                if blk.prenorm {
                    norm_apply(self, &blk.norm, &st.x[r.clone()], &mut st.z[r.clone()]);
                } else {
                    st.z[r.clone()].copy_from_slice(&st.x[r.clone()]);
                }
                stepper.step(
                    &mut st.states[i][b * sl..(b + 1) * sl],
                    &st.z[r.clone()],
                    &mut st.c[r.clone()],
                );
                let (half, r2) = (T::of(0.5), T::of(std::f64::consts::FRAC_1_SQRT_2));
                for j in 0..h {
                    let c = st.c[b * h + j] + d[j] * st.z[b * h + j];
                    st.a[b * h + j] = half * c * (T::one() + (c * r2).erf());
                }
            }
            // the output projection for all streams in one pass over the weights
            let cout = if blk.ssm.glu.is_some() { 2 * h } else { h };
            matmat(w_out, b_out, &st.a, h, &mut st.o[..batch * cout], cout);
            for b in 0..batch {
                let r = b * h..(b + 1) * h;
                let o = &st.o[b * cout..(b + 1) * cout];
                if blk.ssm.glu.is_some() {
                    for j in 0..h {
                        st.s[b * h + j] = o[j] / (T::one() + (-o[h + j]).fast_exp());
                    }
                } else {
                    st.s[r.clone()].copy_from_slice(o);
                }
                if blk.prenorm {
                    for j in 0..h {
                        st.x[b * h + j] += st.s[b * h + j];
                    }
                } else {
                    for j in 0..h {
                        st.z[b * h + j] = st.x[b * h + j] + st.s[b * h + j];
                    }
                    norm_apply(self, &blk.norm, &st.z[r.clone()], &mut st.x[r.clone()]);
                }
            }
        }
        st.t += 1;
        let w = T::of(1.0 / st.t as f64);
        let k = self.io.d_output;
        let (wd, bd) = (
            store.value(self.decoder.w),
            self.decoder.b.map(|id| store.value(id)),
        );
        for b in 0..batch {
            let r = b * h..(b + 1) * h;
            let feats: &mut [T] = if let Some(f) = &self.final_norm {
                norm_apply(self, f, &st.x[r.clone()], &mut st.z[r.clone()]);
                &mut st.z[r.clone()]
            } else {
                &mut st.x[r.clone()]
            };
            if self.cfg.pool == Pool::Mean {
                for (m, f) in st.mean[r.clone()].iter_mut().zip(feats.iter()) {
                    *m += (*f - *m) * w;
                }
                matvec(wd, bd, &st.mean[r.clone()], &mut st.out[b * k..(b + 1) * k]);
            } else {
                matvec(wd, bd, feats, &mut st.out[b * k..(b + 1) * k]);
            }
        }
        &st.out
    }

    /// Runs a prompt `[B, d_in, L]` (or tokens `[B, L]`) in convolution mode and leaves `st` as if
    /// its `L` steps had been taken one by one (the stream must be fresh: `st.steps() == 0`).
    /// Returns the outputs at every prompt position, `[B, d_out, L]`.
    pub fn prefill(
        &mut self,
        st: &mut Stream<T>,
        input: Input<'_, T>,
        len: usize,
    ) -> Result<Vec<T>, String> {
        if st.t != 0 {
            return Err("prefill needs a fresh stream (call Stream::reset first)".into());
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let (batch, h) = (st.batch, self.cfg.d_model);
        let saved_pool = self.cfg.pool;
        self.cfg.pool = Pool::None;
        self.set_lengths(&[]);
        let per_position = self.forward(input, batch, len, false, 0).to_vec();
        self.cfg.pool = saved_pool;
        // each layer's state from its inputs (the SSM layer keeps them: u [B, H, L])
        for (i, blk) in self.blocks.iter().enumerate() {
            let stepper = &st.steppers[i];
            let sl = stepper.state_len();
            let u = &blk.ssm.u;
            st.states[i]
                .par_chunks_mut(sl)
                .enumerate()
                .for_each(|(b, state)| {
                    let (mut ut, mut yt) = (vec![T::zero(); h], vec![T::zero(); h]);
                    for t in 0..len {
                        for j in 0..h {
                            ut[j] = u[(b * h + j) * len + t];
                        }
                        stepper.step(state, &ut, &mut yt);
                    }
                });
        }
        // the running mean of the features (mean pooling) and the step count
        let feats = if self.final_norm.is_some() {
            &self.fnorm_out
        } else {
            &self.acts[self.blocks.len()]
        };
        for b in 0..batch {
            for j in 0..h {
                let row = &feats[(b * h + j) * len..(b * h + j + 1) * len];
                st.mean[b * h + j] = row.iter().copied().sum::<T>() * T::of(1.0 / len as f64);
            }
        }
        st.t = len;
        if saved_pool == Pool::Mean {
            // outputs as stepping gives them: the decoder on the running mean up to each position
            let k = self.io.d_output;
            let (wd, bd) = (
                self.store.value(self.decoder.w).to_vec(),
                self.decoder.b.map(|id| self.store.value(id).to_vec()),
            );
            let mut out = vec![T::zero(); batch * k * len];
            let (mut acc, mut y) = (vec![T::zero(); h], vec![T::zero(); k]);
            for b in 0..batch {
                acc.iter_mut().for_each(|v| *v = T::zero());
                for t in 0..len {
                    for j in 0..h {
                        acc[j] += feats[(b * h + j) * len + t];
                    }
                    let m: Vec<T> = acc
                        .iter()
                        .map(|v| *v * T::of(1.0 / (t + 1) as f64))
                        .collect();
                    matvec(&wd, bd.as_deref(), &m, &mut y);
                    for o in 0..k {
                        out[(b * k + o) * len + t] = y[o];
                    }
                }
            }
            Ok(out)
        } else {
            Ok(per_position)
        }
    }
}
