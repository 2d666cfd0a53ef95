//! Convolution of every channel with its own long kernel by FFT (size `n = 2L`, [`RealFft`]).
//!
//! ```text
//! forward    y[b,h] = (irfft(rfft(u_pad[b,h]) · rfft(k[h])) / n)[0..L]
//! backward   du[b,h] = (irfft(rfft(dy_pad[b,h]) · conj(rfft(k[h]))) / n)[0..L]
//!            dk[h]   = irfft(Σ_b rfft(dy_pad[b,h]) · conj(rfft(u_pad[b,h]))) / n      (all n lags)
//! ```
//!
//! `k[h]` has length `n = 2L` and is read circularly: entries `0..L` are the causal lags `0..L−1`,
//! entry `n − 1 − j` the anti-causal lag `−(j+1)` (the reverse direction of a bidirectional layer, as
//! `pad(k_fwd, (0, L)) + pad(flip(k_bwd), (L, 0))`). A causal kernel leaves the second half zero; the
//! zero padding of `u` to `2L` makes the circular convolution a linear one on `0..L`.

use crate::engine::float::Float;
use crate::engine::rfft::RealFft;
use num_complex::Complex;
use rayon::prelude::*;

/// FFT convolution with plans and spectra kept between steps.
pub struct FftConv<T: Float> {
    len: usize,
    n: usize,
    fft: RealFft<T>,
    kf: Vec<Complex<T>>,
    uf: Vec<Complex<T>>,
    dyf: Vec<Complex<T>>,
    dims: (usize, usize),
}

impl<T: Float> std::fmt::Debug for FftConv<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FftConv {{ len: {}, n: {} }}", self.len, self.n)
    }
}

impl<T: Float> FftConv<T> {
    /// Plans for sequences of length `len` (FFT size `2·len`).
    pub fn new(len: usize) -> Self {
        let n = 2 * len;
        Self {
            len,
            n,
            // (length 0: a plan that is never run; forward and backward return empty outputs)
            fft: RealFft::new(n.max(2)),
            kf: Vec::new(),
            uf: Vec::new(),
            dyf: Vec::new(),
            dims: (0, 0),
        }
    }

    /// The sequence length it was planned for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it was planned for length 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The FFT size `n = 2L` (the length of the circular kernels).
    pub fn fft_len(&self) -> usize {
        self.n
    }

    fn bins(&self) -> usize {
        self.n / 2 + 1
    }

    /// `u [B, H, L]`, `k [H, n]` → `y [B, H, L]`.
    pub fn forward(&mut self, u: &[T], k: &[T], batch: usize, h: usize, y: &mut Vec<T>) {
        let (len, n, bins) = (self.len, self.n, self.bins());
        assert_eq!(u.len(), batch * h * len);
        self.dims = (batch, h);
        if len == 0 {
            y.clear();
            return;
        }
        assert_eq!(k.len(), h * n);
        self.kf.resize(h * bins, Complex::default());
        self.uf.resize(batch * h * bins, Complex::default());
        y.resize(batch * h * len, T::zero());
        let fft = &self.fft;
        self.kf
            .par_chunks_mut(bins)
            .zip(k.par_chunks(n))
            .for_each_init(
                || fft.make_scratch(),
                |scratch, (kf, kh)| fft.forward(kh, kf, scratch),
            );
        filter_rows(&self.fft, &self.kf, u, &mut self.uf, y, len, h, false);
    }

    /// `dy [B, H, L]` → `du [B, H, L]` and `dk [H, n]` (overwritten, not accumulated).
    pub fn backward(&mut self, dy: &[T], du: &mut Vec<T>, dk: &mut Vec<T>) {
        let (len, n, bins) = (self.len, self.n, self.bins());
        let (batch, h) = self.dims;
        assert_eq!(dy.len(), batch * h * len);
        if len == 0 {
            du.clear();
            dk.clear();
            return;
        }
        du.resize(batch * h * len, T::zero());
        self.dyf.resize(batch * h * bins, Complex::default());
        filter_rows(&self.fft, &self.kf, dy, &mut self.dyf, du, len, h, true);
        let fft = &self.fft;
        let scale = T::of(1.0 / n as f64);
        dk.resize(h * n, T::zero());
        let uf = &self.uf;
        let dyf = &self.dyf;
        dk.par_chunks_mut(n).enumerate().for_each_init(
            || (vec![Complex::<T>::default(); bins], fft.make_scratch()),
            |(acc, s2), (ch, dkh)| {
                acc.iter_mut().for_each(|a| *a = Complex::default());
                // the elementwise loops in the dispatched instruction set (module doc of simd)
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        for b in 0..batch {
                            let off = (b * h + ch) * bins;
                            for ((a, g), u) in acc
                                .iter_mut()
                                .zip(&dyf[off..off + bins])
                                .zip(&uf[off..off + bins])
                            {
                                *a += *g * u.conj();
                            }
                        }
                    },
                );
                fft.inverse(acc, dkh, scale, s2);
            },
        );
    }
}

/// For every row `r` of `x [rows, L]` (channel `r mod h`): `spec[r] = rfft(pad(x[r]))` (kept), and
/// `y[r] = (irfft(spec[r] · K[ch]) / n)[0..L]`, with `conj(K[ch])` when `conj` (the adjoint).
#[allow(clippy::too_many_arguments)]
fn filter_rows<T: Float>(
    fft: &RealFft<T>,
    kf: &[Complex<T>],
    x: &[T],
    spec_out: &mut [Complex<T>],
    y: &mut [T],
    len: usize,
    h: usize,
    conj: bool,
) {
    let bins = fft.bins();
    let scale = T::of(1.0 / fft.len() as f64);
    spec_out
        .par_chunks_mut(bins)
        .zip(y.par_chunks_mut(len))
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each_init(
            || (vec![Complex::<T>::default(); bins], fft.make_scratch()),
            |(spec, s), (row, ((xf, yr), xr))| {
                let ch = row % h;
                fft.forward(xr, xf, s);
                let kh = &kf[ch * bins..(ch + 1) * bins];
                crate::engine::simd::with_isa(
                    #[inline(always)]
                    || {
                        if conj {
                            for ((s, a), b) in spec.iter_mut().zip(xf.iter()).zip(kh) {
                                *s = *a * b.conj();
                            }
                        } else {
                            for ((s, a), b) in spec.iter_mut().zip(xf.iter()).zip(kh) {
                                *s = *a * *b;
                            }
                        }
                    },
                );
                fft.inverse(spec, yr, scale, s);
            },
        );
}
