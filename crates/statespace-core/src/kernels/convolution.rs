//! A [`SequenceKernel`] applied as a sequence map by FFT convolution.
//!
//! ```text
//! forward    K = kernel(L) [dirs, H, L]
//!            k_circ[h] = pad(K[0,h], (0, L)) + pad(flip(K[1,h]), (L, 0))        [H, 2L]
//!            y = FftConv(u, k_circ)                                                [B, H, L]
//! backward   du, dk_circ = FftConv.backward(dy)
//!            dK[0,h,j] = dk_circ[h, j],  dK[1,h,j] = dk_circ[h, 2L − 1 − j]   →  kernel.backward(dK)
//! ```
//! The reverse kernel's entry `j` applies at lag `−(j+1)` (strictly anti-causal; the layer's `D`
//! carries lag 0).

use super::{SequenceKernel, SequenceMap, Stepper};
use crate::engine::fftconv::FftConv;
use crate::engine::float::Float;
use crate::engine::params::ParamStore;
use crate::error::Error;

/// A convolution kernel as a sequence map: builds `K` for the input's length, folds both
/// directions into one circular kernel of length `2L` and convolves by FFT; the backward takes
/// `dK` back into the kernel's parameters.
#[derive(Debug)]
pub struct Convolution<T: Float> {
    /// The kernel.
    pub kernel: Box<dyn SequenceKernel<T>>,
    /// FFT plans and spectra for the current length (re-planned when the length changes).
    fft: Option<FftConv<T>>,
    /// `kernel [dirs, H, L]`: the kernel's output for the last forward.
    kernel_out: Vec<T>,
    /// `circular [H, 2L]`: both directions folded into one circular kernel.
    circular: Vec<T>,
    /// `d_circular [H, 2L]`: the FFT convolution's gradient of `circular`.
    d_circular: Vec<T>,
    /// `d_kernel [dirs, H, L]`: that gradient unfolded per direction.
    d_kernel: Vec<T>,
    /// Length of the last forward.
    len: usize,
}

impl<T: Float> Convolution<T> {
    /// Wraps a kernel.
    pub fn new(kernel: Box<dyn SequenceKernel<T>>) -> Self {
        Self {
            kernel,
            fft: None,
            kernel_out: Vec::new(),
            circular: Vec::new(),
            d_circular: Vec::new(),
            d_kernel: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Float> SequenceMap<T> for Convolution<T> {
    fn channels(&self) -> usize {
        self.kernel.channels()
    }

    fn directions(&self) -> usize {
        self.kernel.directions()
    }

    fn forward(
        &mut self,
        store: &ParamStore<T>,
        u: &[T],
        batch: usize,
        len: usize,
        y: &mut Vec<T>,
    ) {
        let h = self.kernel.channels();
        self.len = len;
        if self.fft.as_ref().is_none_or(|c| c.len() != len) {
            self.fft = Some(FftConv::new(len));
        }
        self.kernel.forward(store, len, &mut self.kernel_out);
        let dirs = self.kernel.directions();
        let n = 2 * len;
        self.circular.clear();
        self.circular.resize(h * n, T::zero());
        for ch in 0..h {
            let row = &mut self.circular[ch * n..(ch + 1) * n];
            row[..len].copy_from_slice(&self.kernel_out[ch * len..(ch + 1) * len]);
            if dirs == 2 {
                let rev = &self.kernel_out[(h + ch) * len..(h + ch + 1) * len];
                for (j, v) in rev.iter().enumerate() {
                    row[n - 1 - j] += *v;
                }
            }
        }
        let fft = self.fft.as_mut().expect("planned above");
        fft.forward(u, &self.circular, batch, h, y);
    }

    fn backward(&mut self, store: &mut ParamStore<T>, dy: &[T], du: &mut Vec<T>) {
        let (h, len) = (self.kernel.channels(), self.len);
        let fft = self.fft.as_mut().expect("forward ran");
        fft.backward(dy, du, &mut self.d_circular);
        let dirs = self.kernel.directions();
        let n = 2 * len;
        self.d_kernel.clear();
        self.d_kernel.resize(dirs * h * len, T::zero());
        for ch in 0..h {
            let row = &self.d_circular[ch * n..(ch + 1) * n];
            self.d_kernel[ch * len..(ch + 1) * len].copy_from_slice(&row[..len]);
            if dirs == 2 {
                for j in 0..len {
                    self.d_kernel[(h + ch) * len + j] = row[n - 1 - j];
                }
            }
        }
        self.kernel.backward(store, &self.d_kernel);
    }

    fn stepper(&self, store: &ParamStore<T>) -> Result<Box<dyn Stepper<T>>, Error> {
        self.kernel.stepper(store)
    }

    fn impulse_responses(&mut self, store: &ParamStore<T>, len: usize) -> (usize, Vec<T>) {
        let mut out = Vec::new();
        self.kernel.forward(store, len, &mut out);
        (self.kernel.directions(), out)
    }

    fn channel_steps(&self, store: &ParamStore<T>) -> Option<Vec<f64>> {
        let id = self.kernel.log_dt()?;
        Some(store.value(id).iter().map(|v| v.f64().exp()).collect())
    }

    fn buffers(&self) -> Vec<(String, &Vec<T>)> {
        self.kernel
            .buffers()
            .into_iter()
            .map(|(n, b)| (format!("kernel.{n}"), b))
            .collect()
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut Vec<T>)> {
        self.kernel
            .buffers_mut()
            .into_iter()
            .map(|(n, b)| (format!("kernel.{n}"), b))
            .collect()
    }
}
