//! One module per subcommand; `main.rs` only parses and dispatches. Each command returns
//! [`Failure`]: bad input (exit 2), a failed computation (exit 1) or a stop on request (130).

pub mod bench;
pub mod data;
pub mod engine;
pub mod generate;
pub mod hippo;
pub mod kernel;
pub mod lra;
pub mod ptd;
pub mod repro;
pub mod robustness;
pub mod stream;
pub mod train;
pub mod transfer;

/// A failure: bad input (exit 2), a failed computation (exit 1) or a stop on request (exit 130).
pub enum Failure {
    /// Bad input: arguments or files (exit 2).
    Input(String),
    /// The computation failed (exit 1).
    Compute(String),
    /// Stopped by SIGINT/SIGTERM after saving (exit 130, the shell's code for Ctrl-C); the message
    /// says how to continue.
    Stopped(String),
}

impl From<crate::ssm_file::InputError> for Failure {
    fn from(e: crate::ssm_file::InputError) -> Self {
        Failure::Input(e.to_string())
    }
}

impl From<statespace_math::MathError> for Failure {
    fn from(e: statespace_math::MathError) -> Self {
        match e {
            statespace_math::MathError::Invalid(m) => Failure::Input(m),
            statespace_math::MathError::Numerical(m) => Failure::Compute(m),
        }
    }
}

/// A flag set by SIGINT or SIGTERM, checked by long work between steps so it can save and stop
/// (exit 130); a second signal exits at once.
pub fn stop_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, Failure> {
    use std::sync::Arc;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // the exit on a second signal must be registered before the flag it tests
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .map_err(|e| Failure::Compute(format!("cannot install the signal handler: {e}")))?;
    }
    Ok(stop)
}

/// Formats a value exactly (shortest round-trip) and readably.
pub fn fmt_value(x: f64) -> String {
    let ax = x.abs();
    if x == 0.0 || (1e-4..1e6).contains(&ax) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// Writes to stdout; a closed pipe (`statespace … | head`) ends the output quietly.
pub fn emit(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Compute(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// `--weights f32|bf16|f16` (clap has checked the value) as the stream's storage format.
pub fn half_weights(name: &str) -> Option<statespace_core::engine::simd::Half> {
    name.parse().ok()
}
