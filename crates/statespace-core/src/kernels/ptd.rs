//! The PTD initializations (perturb-then-diagonalize, Yu, Mahoney, Erichson 2024): `s4-ptd` is an
//! S4D layer and `s5-ptd` an S5 layer whose (Λ, B̃, V) come from diagonalizing `A_LegS + E`, with `E`
//! found by [`statespace_math::ptd`] (cond(V) = 8.2 at N = 64 instead of ~1e20, within 3.4 % of ‖A‖,
//! every eigenvalue already at Re λ ≤ −0.5; Re λ is still forced negative for E from elsewhere).
//!
//! ```text
//! s4-ptd:  λ, B̃ = ½V⁻¹B_LegS from eig(A + E): all N modes (E is complex, so the spectrum has no
//!          conjugate symmetry; the layer's 2·Re over them realizes the real part of the complex
//!          system) — the same per channel; C random; ZOH or bilinear
//! s5-ptd:  blocks of size P/J, each eig(A_LegS(P/J) + E(P/J)); B̃ = V⁻¹B, C̃ = CV as in S5
//! ```
//!
//! The cost: N modes per channel instead of S4D's N/2.
//!
//! **Where E comes from.** For every N the shipped configs use (2, 4, 16, 32, 64, 128) the searched
//! E ships with the library as a self-describing safetensors file (`data/ptd/legs-n{N}.safetensors`,
//! compiled in; format below), so an s4-ptd or s5-ptd model at those N starts at once. Any other N
//! is searched on first use (20,000 Adam steps, growing as N³: ≈ 3 min at N = 64 on 2 cores; the
//! search says how long it expects to take) and cached on disk (`$STATESPACE_CACHE`, else
//! `$XDG_CACHE_HOME/statespace`, else `~/.cache/statespace`) and in memory.
//!
//! ```text
//! data/ptd/legs-n{N}.safetensors   (format "statespace-ptd-1")
//!   tensors   e_re [N, N] f64, e_im [N, N] f64     E = e_re + i·e_im, row-major
//!   metadata  format, n, matrix = "legs", options (the search's PtdOptions, Rust Debug form),
//!             cond_v (cond₂ of the unit-column eigenvectors of A + E), rel_norm (‖E‖₂/‖A‖₂),
//!             max_re_lambda (max Re λ(A + E) before the layer forces Re λ < 0),
//!             command (how to recompute it)
//! ```

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

/// The format name of a PTD perturbation file.
pub const PTD_FORMAT: &str = "statespace-ptd-1";

/// The shipped perturbation files, by N.
const SHIPPED: &[(usize, &[u8])] = &[
    (2, include_bytes!("../../data/ptd/legs-n2.safetensors")),
    (4, include_bytes!("../../data/ptd/legs-n4.safetensors")),
    (16, include_bytes!("../../data/ptd/legs-n16.safetensors")),
    (32, include_bytes!("../../data/ptd/legs-n32.safetensors")),
    (64, include_bytes!("../../data/ptd/legs-n64.safetensors")),
    (128, include_bytes!("../../data/ptd/legs-n128.safetensors")),
];

/// The state sizes whose perturbation ships with the library.
pub fn shipped_sizes() -> Vec<usize> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// A perturbation of LegS and what its file says about it.
#[derive(Debug, Clone)]
pub struct PtdFile {
    /// State size N.
    pub n: usize,
    /// E (N × N, complex).
    pub e: statespace_math::linalg::CMat,
    /// The file's metadata (format, n, options, cond_v, rel_norm, max_re_lambda, command).
    pub meta: HashMap<String, String>,
}

impl PtdFile {
    /// A metadata value as a number.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.meta.get(key).and_then(|v| v.parse().ok())
    }
}

/// The bytes of a PTD file for `e` with its measured properties.
pub fn encode_ptd(
    e: &statespace_math::linalg::CMat,
    options: &PtdOptions,
    cond_v: f64,
    rel_norm: f64,
    max_re_lambda: f64,
) -> Result<Vec<u8>, Error> {
    let n = e.nrows();
    let re: Vec<f64> = (0..n * n).map(|k| e[(k / n, k % n)].re).collect();
    let im: Vec<f64> = (0..n * n).map(|k| e[(k / n, k % n)].im).collect();
    let meta: HashMap<String, String> = [
        ("format", PTD_FORMAT.to_string()),
        ("n", n.to_string()),
        ("matrix", "legs".into()),
        ("options", format!("{options:?}")),
        ("cond_v", format!("{cond_v:?}")),
        ("rel_norm", format!("{rel_norm:?}")),
        ("max_re_lambda", format!("{max_re_lambda:?}")),
        (
            "command",
            format!(
                "statespace ptd --n {n} --search --restarts {} --out FILE",
                options.max_restarts
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    crate::engine::checkpoint::encode(
        &[
            ("e_re".to_string(), vec![n, n], re.as_slice()),
            ("e_im".to_string(), vec![n, n], im.as_slice()),
        ],
        &meta,
    )
    .map_err(Error::Invalid)
}

/// Reads a PTD file (`path` names it in errors): the format, N and both tensors are checked.
pub fn decode_ptd(path: &std::path::Path, bytes: &[u8]) -> Result<PtdFile, Error> {
    let loaded = crate::engine::checkpoint::decode::<f64>(path, bytes)?;
    let bad = |why: String| Error::file(path, why);
    if loaded.meta.get("format").map(String::as_str) != Some(PTD_FORMAT) {
        return Err(bad(format!("metadata \"format\" is not \"{PTD_FORMAT}\"")));
    }
    let n: usize = loaded
        .meta
        .get("n")
        .and_then(|v| v.parse().ok())
        .filter(|&n| (2..=4096).contains(&n))
        .ok_or_else(|| bad("metadata \"n\" is missing or out of range".into()))?;
    let part = |name: &str| -> Result<&Vec<f64>, Error> {
        let t = loaded
            .tensors
            .get(name)
            .ok_or_else(|| bad(format!("missing tensor {name}")))?;
        if t.shape != [n, n] {
            return Err(bad(format!(
                "tensor {name} has shape {:?}, not [{n}, {n}]",
                t.shape
            )));
        }
        if t.data.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("tensor {name} holds a non-finite value")));
        }
        Ok(&t.data)
    };
    let (re, im) = (part("e_re")?, part("e_im")?);
    let e =
        statespace_math::linalg::CMat::from_fn(n, n, |i, j| C64::new(re[i * n + j], im[i * n + j]));
    Ok(PtdFile {
        n,
        e,
        meta: loaded.meta,
    })
}

/// The shipped perturbation for state size `n`, if there is one.
pub fn shipped(n: usize) -> Option<Result<PtdFile, Error>> {
    SHIPPED.iter().find(|(m, _)| *m == n).map(|(_, bytes)| {
        decode_ptd(
            std::path::Path::new(&format!("data/ptd/legs-n{n}.safetensors")),
            bytes,
        )
    })
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
    let e = match shipped(n) {
        Some(file) => file?.e,
        None => search(n)?,
    };
    let (a, b) = hippo::transition(Measure::LegS, n).map_err(Error::math("LegS"))?;
    let d = mptd::diagonalize_perturbed(&a, &e, &b, true)
        .map_err(Error::math("PTD diagonalization"))?;
    memo()
        .lock()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .insert(n, d.clone());
    Ok(d)
}

/// Searches (or reads from the disk cache) E for a state size that does not ship, saying what it
/// searches and, once 200 steps are timed, about how long the rest takes.
fn search(n: usize) -> Result<statespace_math::linalg::CMat, Error> {
    let dir = cache_dir();
    let opts = PtdOptions::default();
    let t0 = std::time::Instant::now();
    let total = opts.iters;
    let p = mptd::legs_perturbation(n, &opts, dir.as_deref(), |it, cond| {
        if it == 0 {
            eprintln!(
                "PTD: N = {n} does not ship with statespace (shipped: {:?}); searching the \
                 perturbation of LegS once ({total} Adam steps, up to {} restarts while cond(V) > \
                 {:?}; ≈ 3 min at N = 64 on 2 cores, growing as N³), cached in {}",
                shipped_sizes(),
                opts.max_restarts,
                opts.target_cond.unwrap_or(f64::INFINITY),
                dir.as_ref()
                    .map_or("memory only".into(), |d| d.display().to_string())
            );
        } else if it == 200 {
            let per = t0.elapsed().as_secs_f64() / 200.0;
            eprintln!(
                "PTD: ≈ {:.0} s for this search's {total} steps ({:.1} ms a step)",
                per * total as f64,
                1e3 * per
            );
        } else if it % 2000 == 0 {
            eprintln!("PTD: step {it}, cond(V) = {cond:.2}");
        }
    })
    .map_err(Error::math(format!("PTD perturbation for N = {n}")))?;
    Ok(p.e)
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
