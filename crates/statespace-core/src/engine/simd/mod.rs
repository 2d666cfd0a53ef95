//! The engine's SIMD layer: every vector kernel written once, on [`pulp`]'s `Simd` trait, and run
//! on the instruction set chosen at run time — AVX-512 (16 f32 lanes), AVX2 + FMA (8 lanes), NEON
//! on aarch64 (through pulp's own dispatch), or the portable scalar fallback.
//!
//! ```text
//! isa()            the chosen instruction set: the widest this CPU has, or STATESPACE_ISA
//!                  (avx512 | avx2 | neon | portable) to force a narrower one, or set_isa() (bench --isa)
//! dispatch(op)     runs a pulp kernel (`WithSimd`) compiled for isa()
//! with_isa(f)      runs a closure compiled for isa(): generic element loops (GELU, GLU, the S4
//!                  sweeps) auto-vectorize for the chosen width
//! *_on(isa, …)     the kernels on a given instruction set (tests run every one the CPU supports)
//! ```
//!
//! Kernels (f32, each against f64 sums in the tests): [`dot`], [`dot4`] (a complex dot product's
//! four real parts in one pass), [`gemv`] (`y = W x`, four rows per
//! pass sharing each load of `x`), [`gemv_batch`] (`Y = X Wᵀ` for B streams, register blocks of four
//! weight rows × two streams, so the weights are read once per step for every stream), [`diag_steps`]
//! (the diagonal recurrence of B streams with `B̄` folded into the readout: four coefficient arrays),
//! [`packed_gemv`] (the recurrent step's products on weights [`Packed`] for one sequential read),
//! [`packed_gemv_half`] (the same on weights stored as bf16 or f16, [`PackedHalf`], f32 arithmetic),
//! [`panel_gemm`] (several streams on column [`Panels`]), [`lane_gemm`] (whole vectors of streams in
//! the vector lanes, on row tiles [`LanePanels`]: the weights read once per 2 vectors of streams),
//! [`lane_gemm_half`] (the same on bf16/f16 row tiles [`LanePanelsHalf`], decoded in L1),
//! [`rfft_split`] / [`rfft_merge`] (the passes around the half-length complex FFT of a real FFT),
//! [`fma_peak`] (the FMA throughput microbenchmark behind `statespace bench`). [`generic`] holds the
//! portable loops for any element type (`f64` gradient checks).

use pulp::{Simd, WithSimd};
use std::sync::atomic::{AtomicU8, Ordering};

mod dot;
mod gemv;
pub mod generic;
mod half;
mod lanes;
mod packed;
mod panel;
mod peak;
mod recurrence;
mod rfft;
mod tiles;

pub use dot::{dot, dot_on, dot4, dot4_on};
pub use gemv::{gemv, gemv_batch, gemv_batch_on, gemv_on};
pub use generic::{diag_steps_generic, dot_generic, gemv_batch_generic, gemv_generic, sum};
pub use half::{Half, LanePanelsHalf, PackedHalf, packed_gemv_half, packed_gemv_half_on};
pub use lanes::{
    LANE_KC, LANE_ROWS, LanePanels, lane_gemm, lane_gemm_generic, lane_gemm_half,
    lane_gemm_half_on, lane_gemm_on,
};
pub use packed::{Packed, packed_gemv, packed_gemv_generic, packed_gemv_on};
pub use panel::{KC, PANEL, Panels, panel_gemm, panel_gemm_generic, panel_gemm_on};
pub use peak::{fma_peak, fma_peak_on};
pub use recurrence::{
    DIAG_BLOCK, diag_blocks, diag_state_len, diag_steps, diag_steps_on, interleave_modes,
};
pub use rfft::{
    rfft_merge, rfft_merge_generic, rfft_merge_on, rfft_split, rfft_split_generic, rfft_split_on,
};
pub use tiles::RowTiles;

/// The environment variable that forces an instruction set (`avx512`, `avx2`, `neon`, `portable`).
pub const ISA_ENV: &str = "STATESPACE_ISA";

/// An instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL, 16 f32 lanes.
    Avx512,
    /// x86-64-v3: AVX2 + FMA, 8 f32 lanes.
    Avx2,
    /// aarch64 NEON (pulp's widest aarch64 level), 4 f32 lanes.
    Neon,
    /// Scalar loops, any CPU.
    Portable,
}

impl Isa {
    /// Every instruction set, widest first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Portable];

    /// The name `STATESPACE_ISA` and `--isa` take.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Portable => "portable",
        }
    }

    /// A human-readable label (`AVX-512`, `AVX2+FMA`, …).
    pub fn label(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Neon => "NEON",
            Isa::Portable => "portable (scalar)",
        }
    }

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Neon => 4,
            Isa::Portable => 1,
        }
    }

    /// Whether this CPU runs it (checked at run time).
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => pulp::x86::V4::try_new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => pulp::x86::V3::try_new().is_some(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            Isa::Portable => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The instruction sets this CPU runs, widest first (always ends with `Portable`).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The widest this CPU runs.
    pub fn best() -> Isa {
        Isa::available()[0]
    }

    /// Parses a name (`avx512`, `avx2`, `neon`, `portable`) and checks that this CPU runs it.
    pub fn parse(s: &str) -> Result<Isa, String> {
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown instruction set `{s}` (one of avx512, avx2, neon, portable)")
            })?;
        if !isa.supported() {
            let have: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
            return Err(format!(
                "this CPU cannot run {} (it runs: {})",
                isa.name(),
                have.join(", ")
            ));
        }
        Ok(isa)
    }

    fn code(self) -> u8 {
        match self {
            Isa::Avx512 => 1,
            Isa::Avx2 => 2,
            Isa::Neon => 3,
            Isa::Portable => 4,
        }
    }

    fn from_code(c: u8) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.code() == c)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// 0 until the first [`isa`] call or a [`set_isa`].
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The instruction set of `STATESPACE_ISA`, if set (an error names the variable and the value).
pub fn isa_from_env() -> Result<Option<Isa>, String> {
    match std::env::var(ISA_ENV) {
        Ok(v) if !v.trim().is_empty() => Isa::parse(&v)
            .map(Some)
            .map_err(|e| format!("{ISA_ENV}={v}: {e}")),
        _ => Ok(None),
    }
}

/// The instruction set the kernels run on: set by [`set_isa`], else `STATESPACE_ISA` (ignored with a
/// warning on stderr if this CPU cannot run it; the CLI checks it first and exits 2), else the
/// widest this CPU has. Chosen once.
pub fn isa() -> Isa {
    if let Some(i) = Isa::from_code(CHOSEN.load(Ordering::Relaxed)) {
        return i;
    }
    let i = match isa_from_env() {
        Ok(Some(i)) => i,
        Ok(None) => Isa::best(),
        Err(e) => {
            eprintln!("warning: {e}; using {}", Isa::best().name());
            Isa::best()
        }
    };
    let _ = CHOSEN.compare_exchange(0, i.code(), Ordering::Relaxed, Ordering::Relaxed);
    Isa::from_code(CHOSEN.load(Ordering::Relaxed)).unwrap_or(i)
}

/// Forces the instruction set of every later kernel call (an error if this CPU cannot run it).
pub fn set_isa(i: Isa) -> Result<(), String> {
    if !i.supported() {
        return Err(Isa::parse(i.name()).err().unwrap_or_default());
    }
    CHOSEN.store(i.code(), Ordering::Relaxed);
    Ok(())
}

/// Runs the kernel `op` compiled for [`isa`].
#[inline(always)]
pub fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    dispatch_on(isa(), op)
}

/// Runs the kernel `op` compiled for `isa` (the portable loops if this CPU cannot run it).
#[inline(always)]
pub fn dispatch_on<Op: WithSimd>(isa: Isa, op: Op) -> Op::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            if let Some(s) = pulp::x86::V4::try_new() {
                return Simd::vectorize(s, op);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if let Some(s) = pulp::x86::V3::try_new() {
                return Simd::vectorize(s, op);
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => return pulp::Arch::new().dispatch(op),
        _ => {}
    }
    Simd::vectorize(pulp::Scalar::new(), op)
}

/// Runs `f` compiled for [`isa`]: its loops (and what it inlines — mark hot helpers
/// `#[inline(always)]`) auto-vectorize for that width. Wrap whole loops (a row, a channel), not single
/// elements, and mark the closure itself `#[inline(always)]` (`with_isa(#[inline(always)] || …)`):
/// otherwise it may stay a function of its own, compiled for the baseline (SSE2) — measured: the S4
/// sweeps, GELU and GLU ran 4-lane SSE code on an AVX-512 machine until their closures were marked.
#[inline(always)]
pub fn with_isa<R>(f: impl FnOnce() -> R) -> R {
    dispatch(f)
}

/// [`with_isa`] on a given instruction set.
#[inline(always)]
pub fn with_isa_on<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    dispatch_on(isa, f)
}

/// `a·b + c`, fused on the vector instruction sets; a plain multiply and add on the scalar fallback
/// (a fused scalar multiply-add without FMA hardware is a slow library call).
#[inline(always)]
pub(crate) fn fma<S: Simd>(s: S, a: S::f32s, b: S::f32s, c: S::f32s) -> S::f32s {
    if S::IS_SCALAR {
        s.add_f32s(s.mul_f32s(a, b), c)
    } else {
        s.mul_add_e_f32s(a, b, c)
    }
}

/// Deterministic test values in [−1, 1) (a multiplicative hash of `i` and `seed`), shared by the
/// kernels' tests.
#[cfg(test)]
pub(crate) fn test_value(i: usize, seed: usize) -> f64 {
    let v = (i as u64)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(seed as u64 * 40_503);
    (v % 20_000) as f64 / 10_000.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_names_round_trip_and_unknown_names_are_errors() {
        for i in Isa::available() {
            assert_eq!(Isa::parse(i.name()), Ok(i));
        }
        assert!(Isa::available().ends_with(&[Isa::Portable]));
        assert!(
            Isa::parse("sse9")
                .unwrap_err()
                .contains("unknown instruction set")
        );
        for i in Isa::ALL.into_iter().filter(|i| !i.supported()) {
            assert!(Isa::parse(i.name()).unwrap_err().contains("cannot run"));
        }
    }
}
