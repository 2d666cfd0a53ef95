//! `statespace ptd`: the PTD perturbation of LegS for a state size, its conditioning and transfer
//! errors.

use super::{Failure, emit};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

#[derive(Args)]
pub struct PtdArgs {
    /// State size N (even).
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Seed of the output row C ~ N(0, 1) used for the transfer functions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Search E even where one ships with statespace (N = 2, 4, 16, 32, 64, 128); otherwise the
    /// shipped one is read.
    #[arg(long)]
    pub search: bool,
    /// Restarts of the search while cond(V) > 9 (default 3).
    #[arg(long)]
    pub restarts: Option<usize>,
    /// The search's norm budget ‖E‖₂/‖A‖₂ (default 0.034).
    #[arg(long)]
    pub budget: Option<f64>,
    /// The search's stability margin m: every eigenvalue of A + E at Re λ ≤ −m (default 0.5).
    #[arg(long)]
    pub margin: Option<f64>,
    /// Write E as a PTD file (safetensors, format statespace-ptd-1) here.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub fn run(args: &PtdArgs) -> Result<(), Failure> {
    use rand_distr::{Distribution, StandardNormal};
    if args.n < 2 || !args.n.is_multiple_of(2) {
        return Err(Failure::Input(format!(
            "--n must be even and ≥ 2, got {}",
            args.n
        )));
    }
    let n = args.n;
    if n > 4096 {
        return Err(Failure::Input(format!("--n must be at most 4096, got {n}")));
    }
    use statespace_core::kernels::ptd as kptd;
    let mut opts = statespace_math::ptd::PtdOptions::default();
    if let Some(r) = args.restarts {
        opts.max_restarts = r;
    }
    if let Some(b) = args.budget {
        if !(b > 0.0 && b <= 1.0) {
            return Err(Failure::Input(format!(
                "--budget must lie in (0, 1], got {b}"
            )));
        }
        opts.max_rel_norm = Some(b);
    }
    if let Some(m) = args.margin {
        if !(m >= 0.0 && m.is_finite()) {
            return Err(Failure::Input(format!(
                "--margin must be finite and ≥ 0, got {m}"
            )));
        }
        opts.stability_margin = m;
    }
    let (e, source) = match kptd::shipped(n) {
        Some(file) if !args.search => {
            let f = file.map_err(|e| Failure::Compute(e.to_string()))?;
            (f.e, "shipped with statespace".to_string())
        }
        _ => {
            let dir = kptd::cache_dir();
            let p =
                statespace_math::ptd::legs_perturbation(n, &opts, dir.as_deref(), |it, cond| {
                    if it % 500 == 0 {
                        eprintln!("iteration {it}: cond(V) = {cond:.2}");
                    }
                })?;
            (p.e, "searched".to_string())
        }
    };
    // every reported number from a fresh eigendecomposition and SVD of this E
    let (a, _) = statespace_math::hippo::transition(statespace_math::hippo::Measure::LegS, n)?;
    let ae = statespace_math::linalg::CMat::from_fn(n, n, |i, j| e[(i, j)] + a[(i, j)]);
    let eig = statespace_math::ptd::eig_complex(&ae)?;
    let max_re = eig
        .lambda
        .iter()
        .fold(f64::NEG_INFINITY, |m, l| m.max(l.re));
    let unstable = eig.lambda.iter().filter(|l| l.re >= 0.0).count();
    let e_norm = e
        .singular_values()
        .map_err(|err| Failure::Compute(format!("SVD failed: {err:?}")))?
        .iter()
        .fold(0.0f64, |m, x| m.max(*x));
    let rel_norm = e_norm / statespace_math::linalg::norm2(&a)?;
    let p = statespace_math::ptd::ComplexPerturbation {
        e,
        cond: eig.cond,
        rel_norm,
    };
    if let Some(path) = &args.out {
        let bytes = kptd::encode_ptd(&p.e, &opts, p.cond, p.rel_norm, max_re)
            .map_err(|e| Failure::Compute(e.to_string()))?;
        statespace_core::engine::checkpoint::write_atomic(path, &bytes)
            .map_err(|e| Failure::Input(e.to_string()))?;
        eprintln!("wrote {}", path.display());
    }
    let mut rng = StdRng::seed_from_u64(args.seed);
    let c_rand: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut c_e0 = vec![0.0; n];
    c_e0[0] = 1.0;
    let omegas = resolved_omegas(n, &eig.lambda)?;
    let te0 = statespace_math::ptd::transfer_errors(&p.e, &c_e0, &omegas)?;
    let t = statespace_math::ptd::transfer_errors(&p.e, &c_rand, &omegas)?;
    let grid = omegas.len();
    if args.json {
        emit(&format!(
            "{}\n",
            json!({"n": n, "source": source, "cond_v": p.cond, "rel_norm": p.rel_norm,
                   "max_re_lambda": max_re, "unstable_eigenvalues": unstable, "grid_points": grid,
                   "transfer_error_ptd": t.ptd, "transfer_error_ptd_complex": t.ptd_complex,
                   "transfer_error_s4d_legs": t.s4d,
                   "transfer_error_e0_ptd": te0.ptd, "transfer_error_e0_ptd_complex": te0.ptd_complex,
                   "transfer_error_e0_s4d_legs": te0.s4d})
        ))
    } else {
        emit(&format!(
            "PTD LegS N = {n} ({source}): cond(V) = {:.2}, ‖E‖₂/‖A‖₂ = {:.2}%, max Re λ(A + E) = \
             {max_re:.3e} ({unstable} of {n} eigenvalues with Re λ ≥ 0, flipped by the layer)\n\
             max over ω of |G − G_LegS| / max|G_LegS|, ω on {grid} points (log grid on [1e-3, 1e4] \
             plus every pole frequency):\n\
             \t                             C = e₀        C ~ N(0,1), seed {}\n\
             \tPTD (the layer: real part)   {:.3e}     {:.3e}\n\
             \tPTD (complex system)         {:.3e}     {:.3e}\n\
             \tS4D-LegS                     {:.3e}     {:.3e}\n",
            p.cond,
            100.0 * p.rel_norm,
            args.seed,
            te0.ptd,
            t.ptd,
            te0.ptd_complex,
            t.ptd_complex,
            te0.s4d,
            t.s4d
        ))
    }
}

/// The frequency grid that resolves every pole: 401 log points on [1e-3, 1e4] plus the resonance
/// frequency |Im λ| of every eigenvalue in `poles` and of every mode of S4D-LegS(N), where their
/// narrow peaks lie.
pub fn resolved_omegas(n: usize, poles: &[num_complex::Complex64]) -> Result<Vec<f64>, Failure> {
    let mut omegas: Vec<f64> = (0..=400)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0))
        .collect();
    let s4d_legs = statespace_math::s4d::init_a(
        statespace_math::s4d::DiagInit::LegS,
        n,
        &mut StdRng::seed_from_u64(0),
    )?;
    omegas.extend(
        poles
            .iter()
            .chain(&s4d_legs)
            .map(|l| l.im.abs())
            .filter(|w| *w > 0.0),
    );
    omegas.sort_by(f64::total_cmp);
    omegas.dedup();
    Ok(omegas)
}
