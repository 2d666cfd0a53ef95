//! `--engine cpu|torch` and `--device cpu|cuda[:N]` of `train` and `lra`: which engine a run trains
//! on. The torch engine (libtorch through `statespace-torch`) is compiled in with the cargo feature
//! `torch`; the default build has only the CPU engine.

use super::Failure;
use clap::{Args, ValueEnum};
use statespace_train::{CpuEngine, Engine};

/// The engine a run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum EngineKind {
    /// statespace's own CPU engine (hand-written backward, rayon).
    #[default]
    Cpu,
    /// PyTorch's engine (libtorch): CPU or CUDA GPUs; needs a build with `--features torch`.
    Torch,
}

/// The arithmetic of the torch engine's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Precision {
    /// Everything in f32 (kernels in f64).
    #[default]
    F32,
    /// Mixed precision: the linear layers multiply in bfloat16 (f32 weights, optimizer, kernels,
    /// FFT convolutions, norms and loss), as PyTorch's autocast would; torch engine only.
    Bf16,
}

/// The engine options of a training command.
#[derive(Debug, Clone, Args, Default)]
pub struct EngineArgs {
    /// Where the run's forward, backward and optimizer run: cpu (statespace's engine) or torch
    /// (libtorch; build with `--features torch`). The run directory and checkpoints are the same, so
    /// a run resumes on either engine.
    #[arg(long, value_enum, default_value_t = EngineKind::Cpu)]
    pub engine: EngineKind,
    /// The torch engine's device: cpu, cuda (the first GPU) or cuda:N.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// The torch engine's arithmetic: f32, or bf16 (the linear layers' products in bfloat16; on
    /// GPUs with bf16 tensor cores, A100/H100/H200). Checkpoints stay f32 either way.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// A factory for the training loop.
pub type Factory = Box<
    dyn Fn(
        statespace_core::model::Model<f32>,
        statespace_core::engine::optim::AdamW<f32>,
    ) -> Result<Box<dyn Engine>, String>,
>;

impl EngineArgs {
    /// Whether the run's memory lives on a GPU (the host memory estimate does not apply).
    pub fn on_gpu(&self) -> bool {
        self.engine == EngineKind::Torch
            && self
                .device
                .as_deref()
                .is_some_and(|d| d.starts_with("cuda"))
    }

    /// The engine factory, or an error (exit 2) for an engine or device this build or machine lacks.
    pub fn factory(&self) -> Result<Factory, Failure> {
        match self.engine {
            EngineKind::Cpu => {
                if let Some(d) = &self.device
                    && d != "cpu"
                {
                    return Err(Failure::Input(format!(
                        "--device {d}: the CPU engine runs on the CPU; use --engine torch for GPUs"
                    )));
                }
                if self.precision != Precision::F32 {
                    return Err(Failure::Input(
                        "--precision bf16: the CPU engine computes in f32; use --engine torch"
                            .into(),
                    ));
                }
                Ok(Box::new(|m, o| {
                    Ok(Box::new(CpuEngine::new(m, o)) as Box<dyn Engine>)
                }))
            }
            EngineKind::Torch => torch_factory(
                self.device.as_deref().unwrap_or("cpu"),
                self.precision == Precision::Bf16,
            ),
        }
    }
}

/// The libtorch device of `--device` (exit 2 for a malformed one or a GPU this machine lacks).
#[cfg(feature = "torch")]
pub fn torch_device(device: &str) -> Result<statespace_torch::tch::Device, Failure> {
    use statespace_torch::tch::{Cuda, Device};
    let dev = match device {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => {
                return Err(Failure::Input(format!(
                    "--device {d}: expected cpu, cuda or cuda:N"
                )));
            }
        },
    };
    if let Device::Cuda(n) = dev {
        let count = Cuda::device_count() as usize;
        if !Cuda::is_available() || n >= count {
            return Err(Failure::Input(format!(
                "--device {device}: libtorch sees {count} CUDA device(s){}",
                if count == 0 {
                    " (no GPU, or a CPU-only torch; LD_LIBRARY_PATH must point at a CUDA torch's lib/)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(dev)
}

#[cfg(feature = "torch")]
fn torch_factory(device: &str, bf16: bool) -> Result<Factory, Failure> {
    let dev = torch_device(device)?;
    let opts = statespace_torch::TorchOptions {
        bf16_matmul: bf16,
        ..statespace_torch::TorchOptions::default()
    };
    Ok(Box::new(move |m, o| {
        statespace_torch::TorchEngine::new(m, o, dev, opts)
            .map(|e| Box::new(e) as Box<dyn Engine>)
            .map_err(|e| e.to_string())
    }))
}

#[cfg(not(feature = "torch"))]
fn torch_factory(_device: &str, _bf16: bool) -> Result<Factory, Failure> {
    Err(Failure::Input(
        "--engine torch: this statespace was built without the torch engine; build it with \
         `cargo build --release --features torch` (README: GPUs)"
            .into(),
    ))
}
