//! Moving values between Rust vectors and tensors, and the complex helpers the kernels share.

use tch::{Device, Kind, Tensor};

/// A tensor of `shape` from f64 values, in `kind` on `device`.
pub fn from_f64(values: &[f64], shape: &[usize], kind: Kind, device: Device) -> Tensor {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(values)
        .reshape(dims.as_slice())
        .to_kind(kind)
        .to_device(device)
}

/// The values of `t` as f64, row-major (any shape, any real dtype, any device).
pub fn to_f64(t: &Tensor) -> Vec<f64> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .contiguous()
        .flatten(0, -1);
    Vec::<f64>::try_from(&flat).expect("a flat f64 tensor converts")
}

/// The complex dtype whose parts are `kind` (f32 → complex64, f64 → complex128).
pub fn complex_of(kind: Kind) -> Kind {
    match kind {
        Kind::Double => Kind::ComplexDouble,
        _ => Kind::ComplexFloat,
    }
}

/// `re + i·im` as a complex tensor (autograd flows to both parts).
pub fn complex(re: &Tensor, im: &Tensor) -> Tensor {
    Tensor::complex(re, im)
}

/// `e^{−2πik/n}`, k = 0 … n/2, the frequencies of a real FFT of length `n` (formed in f64).
pub fn rfft_omegas(n: usize, device: Device) -> Tensor {
    let bins = n / 2 + 1;
    let (re, im): (Vec<f64>, Vec<f64>) = (0..bins)
        .map(|k| {
            let t = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
            (t.cos(), t.sin())
        })
        .unzip();
    complex(
        &from_f64(&re, &[bins], Kind::Double, device),
        &from_f64(&im, &[bins], Kind::Double, device),
    )
}

/// A spectrum of a real signal of length `n` (last dim n/2 + 1) with the imaginary parts at DC and,
/// for even `n`, at Nyquist set to zero (a real signal has none), as the CPU engine's inverse FFT
/// takes it.
pub fn hermitian_ends(spec: &Tensor, n: usize) -> Tensor {
    let bins = n / 2 + 1;
    let mut keep = vec![1.0; bins];
    keep[0] = 0.0;
    if n.is_multiple_of(2) {
        keep[bins - 1] = 0.0;
    }
    let keep = from_f64(&keep, &[bins], spec.real().kind(), spec.device());
    complex(&spec.real(), &(spec.imag() * keep))
}
