//! The FFT convolution of a sequence with a kernel of one or two directions, as `statespace-core`'s
//! `Convolution`:
//!
//! ```text
//! k_circ[h] = pad(K[0,h], (0, L)) + pad(flip(K[1,h]), (L, 0))        [H, 2L]
//! y = irfft(rfft(u, 2L) · rfft(k_circ, 2L))[.., :L]                    [B, H, L]
//! ```
//! The reverse kernel's entry `j` applies at lag `−(j+1)` (strictly anti-causal; `D` carries lag 0).

use tch::Tensor;

/// `u [B, H, L] ∗ K [dirs, H, L] → y [B, H, L]`.
pub fn fft_conv(u: &Tensor, k: &Tensor) -> Tensor {
    let len = u.size()[2];
    let dirs = k.size()[0];
    let kc = if dirs == 2 {
        Tensor::cat(&[k.get(0), k.get(1).flip([-1])], -1)
    } else {
        k.get(0)
    };
    let n = 2 * len;
    let uf = u.fft_rfft(n, -1, "backward");
    let kf = kc.fft_rfft(n, -1, "backward");
    (uf * kf).fft_irfft(n, -1, "backward").narrow(-1, 0, len)
}
