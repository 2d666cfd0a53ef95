//! The PTD initializations (perturb-then-diagonalize, Yu, Mahoney, Erichson 2024): `s4-ptd` is an
//! S4D layer and `s5-ptd` an S5 layer whose (Λ, B̃, V) come from diagonalizing `A_LegS + E`, with `E`
//! found in-process by [`statespace_math::ptd`] (cond(V) = 9.1 at N = 64 instead of ~1e20) and Re λ
//! forced negative.
//!
//! ```text
//! s4-ptd:  λ, B̃ = ½V⁻¹B_LegS from eig(A + E): all N modes (E is complex, so the spectrum has no
//!          conjugate symmetry; the layer's 2·Re over them realizes the real part of the complex
//!          system) — the same per channel; C random; ZOH or bilinear
//! s5-ptd:  blocks of size P/J, each eig(A_LegS(P/J) + E(P/J)); B̃ = V⁻¹B, C̃ = CV as in S5
//! ```
//!
//! The cost: N modes per channel instead of S4D's N/2. `E` for state size N is cached on disk
//! (`$STATESPACE_CACHE`, else `$XDG_CACHE_HOME/statespace`, else `~/.cache/statespace`) and in
//! memory; the first use of an N runs the search (20,000 Adam steps: ≈ 4 min at N = 64 on 2 cores).

use crate::error::Error;
use crate::kernels::s5::S5Init;
use num_complex::Complex64 as C64;
use statespace_math::hippo::{self, Measure};
use statespace_math::ptd::{self as mptd, Diagonalized, PtdOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Where PTD perturbations are cached.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("STATESPACE_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("statespace"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("statespace"))
}

fn memo() -> &'static Mutex<HashMap<usize, Diagonalized>> {
    static M: OnceLock<Mutex<HashMap<usize, Diagonalized>>> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The diagonalization of `A_LegS(n) + E(n)` with `B_LegS` (Re λ forced negative).
pub fn legs(n: usize) -> Result<Diagonalized, Error> {
    if let Some(d) = memo()
        .lock()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .get(&n)
    {
        return Ok(d.clone());
    }
    let dir = cache_dir();
    let p = mptd::legs_perturbation(n, &PtdOptions::default(), dir.as_deref(), |it, cond| {
        if it == 0 {
            eprintln!(
                "PTD: searching the perturbation of LegS for N = {n} (once; cached in {})",
                dir.as_ref()
                    .map_or("memory only".into(), |d| d.display().to_string())
            );
        } else if it % 1000 == 0 {
            eprintln!("PTD: iteration {it}, cond(V) = {cond:.2}");
        }
    })
    .map_err(Error::math(format!("PTD perturbation for N = {n}")))?;
    let (a, b) = hippo::transition(Measure::LegS, n).map_err(Error::math("LegS"))?;
    let d = mptd::diagonalize_perturbed(&a, &p.e, &b, true)
        .map_err(Error::math("PTD diagonalization"))?;
    memo()
        .lock()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .insert(n, d.clone());
    Ok(d)
}

/// The S4D modes `(λ, B̃)` of S4-PTD for state size `n` (all n of them for the default complex E).
pub fn s4_modes(n: usize) -> Result<Vec<(C64, C64)>, Error> {
    let d = legs(n)?;
    Ok(d.lambda.iter().copied().zip(d.b.iter().copied()).collect())
}

/// The S5 initialization of S5-PTD: `blocks` diagonal blocks of size `p / blocks`.
pub fn s5_init(p: usize, blocks: usize) -> Result<S5Init, Error> {
    if blocks == 0 || !p.is_multiple_of(blocks) || !(p / blocks).is_multiple_of(2) {
        return Err(Error::config(
            "model.s5.blocks",
            format!("{blocks} blocks must split d_state = {p} into even blocks"),
        ));
    }
    let bs = p / blocks;
    let d = legs(bs)?;
    let mb = d.lambda.len();
    let m = mb * blocks;
    let mut v = vec![C64::default(); p * m];
    let mut vinv = vec![C64::default(); m * p];
    let mut lambda = Vec::with_capacity(m);
    for j in 0..blocks {
        for k in 0..mb {
            let col = j * mb + k;
            lambda.push(d.lambda[k]);
            for r in 0..bs {
                v[(j * bs + r) * m + col] = d.v[(r, k)];
                vinv[col * p + j * bs + r] = d.vinv[(k, r)];
            }
        }
    }
    Ok(S5Init { lambda, v, vinv })
}
