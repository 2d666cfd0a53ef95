//! Linear over channels: y[b] = W x[b] + bias            x [B, Cin, L] → y [B, Cout, L]

use super::{keep_copy, resize, threads};
use crate::engine::float::Float;
use crate::engine::gemm::Gemm;
use crate::engine::params::{ParamId, ParamKind, ParamStore};
use crate::engine::simd::{self, Half, LanePanels, LanePanelsHalf, Packed, PackedHalf, Panels};
use rand::Rng;
use rayon::prelude::*;

/// A [`Linear`]'s weights as the recurrent step reads them: f32 (or f64) [`Packed`] for one
/// stream, in column [`Panels`] or row tiles [`LanePanels`] for several, or rounded to bf16/f16
/// ([`PackedHalf`], [`LanePanelsHalf`]: half the bytes).
#[derive(Debug, Clone)]
pub enum PackedWeights<T> {
    /// The model's own values, packed for one stream (one sequential read per step).
    Full(Packed<T>),
    /// The model's own values in column panels, for several streams (a register-blocked
    /// matrix–matrix product per step).
    Panels(Panels<T>),
    /// The model's own values in row tiles, for many streams in the vector lanes (the weights read
    /// once per chunk of 2 vectors of streams).
    Lanes(LanePanels<T>),
    /// Rounded to a 16-bit format.
    Half(PackedHalf),
    /// Rounded to a 16-bit format, in row tiles for many streams in the vector lanes.
    HalfLanes(LanePanelsHalf),
}

impl<T: Copy + Default> PackedWeights<T> {
    /// Rows of `W` (outputs).
    pub fn rows(&self) -> usize {
        match self {
            PackedWeights::Full(p) => p.rows(),
            PackedWeights::Panels(p) => p.rows(),
            PackedWeights::Lanes(p) => p.rows(),
            PackedWeights::Half(p) => p.rows(),
            PackedWeights::HalfLanes(p) => p.rows(),
        }
    }
    /// Columns of `W` (inputs).
    pub fn cols(&self) -> usize {
        match self {
            PackedWeights::Full(p) => p.cols(),
            PackedWeights::Panels(p) => p.cols(),
            PackedWeights::Lanes(p) => p.cols(),
            PackedWeights::Half(p) => p.cols(),
            PackedWeights::HalfLanes(p) => p.cols(),
        }
    }
    /// Bytes the weights take (what a step reads of them).
    pub fn bytes(&self) -> usize {
        match self {
            PackedWeights::Full(p) => std::mem::size_of_val(p.data()),
            PackedWeights::Panels(p) => std::mem::size_of_val(p.data()),
            PackedWeights::Lanes(p) => std::mem::size_of_val(p.data()),
            PackedWeights::Half(p) => p.rows().div_ceil(4) * p.cols().div_ceil(16) * 64 * 2,
            PackedWeights::HalfLanes(p) => p.bytes(),
        }
    }
}

/// A linear map over the channel dimension (a 1×1 convolution), one GEMM per batch element.
#[derive(Debug, Clone)]
pub struct Linear<T> {
    /// Weight `[Cout, Cin]`.
    pub w: ParamId,
    /// Bias `[Cout]`.
    pub b: Option<ParamId>,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    x: Vec<T>,
    dims: (usize, usize),
}

impl<T: Float> Linear<T> {
    /// Registers `name.weight` (uniform ±1/√Cin, PyTorch's default) and `name.bias`.
    pub fn new(
        store: &mut ParamStore<T>,
        name: &str,
        cin: usize,
        cout: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let bound = 1.0 / (cin as f64).sqrt();
        let w = (0..cin * cout)
            .map(|_| T::of(rng.random_range(-bound..bound)))
            .collect();
        let w = store.add(format!("{name}.weight"), &[cout, cin], w, ParamKind::Weight);
        let b = bias.then(|| {
            let v = (0..cout)
                .map(|_| T::of(rng.random_range(-bound..bound)))
                .collect();
            store.add(format!("{name}.bias"), &[cout], v, ParamKind::NoDecay)
        });
        Self {
            w,
            b,
            cin,
            cout,
            x: Vec::new(),
            dims: (0, 0),
        }
    }

    /// `x [B, Cin, L] → y [B, Cout, L]`.
    pub fn forward(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        keep_copy(&mut self.x, x);
        self.dims = (batch, len);
        self.apply(store, x, batch, len, y);
    }

    /// [`Linear::forward`] (`x [B, Cin, L] → y [B, Cout, L]`) for a caller that itself keeps `x`
    /// unchanged until the backward: no copy of `x` (hand the same `x` to [`Linear::backward_from`]).
    pub fn forward_borrowed(
        &mut self,
        store: &ParamStore<T>,
        x: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        self.x = Vec::new();
        self.dims = (batch, len);
        self.apply(store, x, batch, len, y);
    }

    /// The same map without keeping anything for backward (inference, recurrent steps).
    pub fn apply(&self, store: &ParamStore<T>, x: &[T], batch: usize, len: usize, y: &mut Vec<T>) {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(x.len(), batch * cin * len);
        resize(y, batch * cout * len);
        let w = store.value(self.w);
        // one GEMM per batch element, the batch spread over the threads
        y.par_chunks_mut(cout * len)
            .zip(x.par_chunks(cin * len))
            .for_each(|(yb, xb)| {
                Gemm::new(cout, len, cin).run(yb, w, xb);
            });
        if let Some(bid) = self.b {
            let bias = store.value(bid);
            y.par_chunks_mut(len).enumerate().for_each(|(row, yr)| {
                let bv = bias[row % cout];
                yr.iter_mut().for_each(|v| *v += bv);
            });
        }
    }

    /// `dy [B, Cout, L] → dx [B, Cin, L]`; accumulates `dW += Σ_b dy[b] x[b]ᵀ`, `db += Σ dy`.
    pub fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], dx: &mut Vec<T>) {
        self.backward_from(store, &self.x, dy, dx)
    }

    /// [`Linear::backward`] (`dy [B, Cout, L] → dx [B, Cin, L]`) after [`Linear::forward_borrowed`]:
    /// `x [B, Cin, L]` is that forward's input.
    pub fn backward_from(&self, store: &mut ParamStore<T>, x: &[T], dy: &[T], dx: &mut Vec<T>) {
        let (batch, len) = self.dims;
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(dy.len(), batch * cout * len);
        assert_eq!(
            x.len(),
            batch * cin * len,
            "Linear::backward: the forward's input x [B, {cin}, L]"
        );
        {
            // dW = Σ_b dy[b] x[b]ᵀ: one partial sum per contiguous chunk of the batch (as many chunks
            // as threads), added in order — deterministic for a fixed thread count.
            let chunks = threads().clamp(1, batch.max(1));
            let per = batch.div_ceil(chunks);
            let partial: Vec<Vec<T>> = (0..chunks)
                .into_par_iter()
                .map(|c| {
                    let mut acc = vec![T::zero(); cout * cin];
                    for b in c * per..((c + 1) * per).min(batch) {
                        let dyb = &dy[b * cout * len..(b + 1) * cout * len];
                        let xb = &x[b * cin * len..(b + 1) * cin * len];
                        Gemm::new(cout, cin, len)
                            .transpose_b()
                            .accumulate()
                            .run(&mut acc, dyb, xb);
                    }
                    acc
                })
                .collect();
            let dw = store.grad_mut(self.w);
            for p in partial {
                dw.iter_mut().zip(&p).for_each(|(a, b)| *a += *b);
            }
        }
        if let Some(bid) = self.b {
            let sums: Vec<T> = (0..cout)
                .into_par_iter()
                .map(|o| {
                    (0..batch)
                        .map(|b| {
                            crate::engine::simd::sum(
                                &dy[(b * cout + o) * len..(b * cout + o + 1) * len],
                            )
                        })
                        .sum::<T>()
                })
                .collect();
            store
                .grad_mut(bid)
                .iter_mut()
                .zip(&sums)
                .for_each(|(g, s)| *g += *s);
        }
        resize(dx, batch * cin * len);
        let w = store.value(self.w);
        dx.par_chunks_mut(cin * len)
            .zip(dy.par_chunks(cout * len))
            .for_each(|(dxb, dyb)| {
                Gemm::new(cin, len, cout).transpose_a().run(dxb, w, dyb);
            });
    }

    /// The map on single vectors, for recurrent steps: `x [B, Cin] → y [B, Cout]`. Each block of
    /// weight rows is read once for all B vectors (register blocks of 4 rows × 2 streams, see
    /// [`crate::engine::simd`]); at batch 1 the step is bound by reading the weights.
    pub fn step(&self, store: &ParamStore<T>, x: &[T], y: &mut [T]) {
        let (cin, cout) = (self.cin, self.cout);
        let (w, bias) = (store.value(self.w), self.b.map(|id| store.value(id)));
        let batch = x.len() / cin;
        assert!(
            x.len() == batch * cin && y.len() == batch * cout,
            "Linear::step: x [B, {cin}] and y [B, {cout}], got {} and {} values",
            x.len(),
            y.len()
        );
        if batch == 1 {
            return T::gemv(w, bias, x, &mut y[..cout]);
        }
        T::gemv_batch(w, bias, x, cin, y);
    }

    /// The weights packed for [`Linear::step_packed`] of `batch` streams (a copy; pack again after
    /// the weights change): [`Packed`] for one stream, [`LanePanels`] for whole vectors of streams
    /// ([`lanes_for`]), [`Panels`] for the other batches. Measured on the AVX2 machine (16 streams,
    /// six [512, 256] products): the lanes 302 µs, the panels 335 µs (best of 2 s each); at 8 and
    /// 12 streams the panels were faster.
    pub fn pack(&self, store: &ParamStore<T>, batch: usize) -> PackedWeights<T> {
        let w = store.value(self.w);
        if lanes_for(batch) {
            PackedWeights::Lanes(LanePanels::new(w, self.cout, self.cin))
        } else if batch > 1 {
            PackedWeights::Panels(Panels::new(w, self.cout, self.cin))
        } else {
            PackedWeights::Full(Packed::new(w, self.cout, self.cin))
        }
    }

    /// The weights rounded to a 16-bit format and packed for [`Linear::step_packed`] of `batch`
    /// streams (f32 arithmetic on the rounded weights): row tiles [`LanePanelsHalf`] for whole
    /// vectors of streams ([`lanes_for`]), [`PackedHalf`] for the others; an error names a weight
    /// beyond the format's range.
    pub fn pack_half(
        &self,
        store: &ParamStore<T>,
        kind: Half,
        batch: usize,
    ) -> Result<PackedWeights<T>, String> {
        let w: Vec<f32> = store.value(self.w).iter().map(|v| v.f64() as f32).collect();
        Ok(if lanes_for(batch) {
            PackedWeights::HalfLanes(LanePanelsHalf::new(&w, self.cout, self.cin, kind)?)
        } else {
            PackedWeights::Half(PackedHalf::new(&w, self.cout, self.cin, kind)?)
        })
    }

    /// [`Linear::step`] on weights packed by [`Linear::pack`] or [`Linear::pack_half`]: at batch 1,
    /// one sequential read of the weights; several streams a register-blocked matrix–matrix product
    /// (column panels or, for whole vectors of streams, row tiles with the streams in the lanes, f32
    /// or half; on row-block packed f32 weights, [`Linear::step`]; on row-block half weights, their
    /// packed product).
    pub fn step_packed(
        &self,
        store: &ParamStore<T>,
        packed: &PackedWeights<T>,
        x: &[T],
        y: &mut [T],
    ) {
        assert!(
            packed.rows() == self.cout && packed.cols() == self.cin,
            "Linear::step_packed: packed [{}, {}] for a [{}, {}] layer",
            packed.rows(),
            packed.cols(),
            self.cout,
            self.cin
        );
        let bias = self.b.map(|id| store.value(id));
        match packed {
            PackedWeights::Full(p) => {
                if x.len() != self.cin {
                    // several streams: the register blocks of 4 rows × 2 streams on the row-major
                    // weights measured faster than on the packed ones (each row block in L1 for all
                    // streams)
                    return self.step(store, x, y);
                }
                T::packed_gemv(p, bias, x, y);
            }
            PackedWeights::Panels(p) => T::panel_gemm(p, bias, x, y),
            PackedWeights::Lanes(p) => T::lane_gemm(p, bias, x, y),
            PackedWeights::Half(p) => T::packed_gemv_half(p, bias, x, y),
            PackedWeights::HalfLanes(p) => T::lane_gemm_half(p, bias, x, y),
        }
    }
}

/// Whether `batch` streams step on row tiles with the streams in the vector lanes: whole vectors of
/// streams, at least two, on the dispatched vector instruction set (16, 24, 32, … on AVX2; never on
/// the portable loops).
pub fn lanes_for(batch: usize) -> bool {
    let lanes = simd::isa().lanes();
    // the portable loops (1 lane) would decode half weights once per 2 streams there
    lanes >= 4 && batch >= 2 * lanes && batch.is_multiple_of(lanes)
}
