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
    let opts = statespace_math::ptd::PtdOptions::default();
    let dir = statespace_core::kernels::ptd::cache_dir();
    let p = statespace_math::ptd::legs_perturbation(n, &opts, dir.as_deref(), |it, cond| {
        if it % 500 == 0 {
            eprintln!("iteration {it}: cond(V) = {cond:.2}");
        }
    })?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let c: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    let omegas: Vec<f64> = (0..=400)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0))
        .collect();
    let t = statespace_math::ptd::transfer_errors(&p.e, &c, &omegas)?;
    if args.json {
        emit(&format!(
            "{}\n",
            json!({"n": n, "cond_v": p.cond, "rel_norm": p.rel_norm,
                   "transfer_error_ptd": t.ptd, "transfer_error_ptd_complex": t.ptd_complex,
                   "transfer_error_s4d_legs": t.s4d})
        ))
    } else {
        emit(&format!(
            "PTD LegS N = {n}: cond(V) = {:.2}, ‖E‖₂/‖A‖₂ = {:.2}%\n\
             max over ω ∈ [1e-3, 1e4] of |G − G_LegS| / max|G_LegS| (C ~ N(0,1), seed {}):\n\
             \tPTD (the layer: real part)   {:.3e}\n\tPTD (complex system)         {:.3e}\n\tS4D-LegS                     {:.3e}\n",
            p.cond,
            100.0 * p.rel_norm,
            args.seed,
            t.ptd,
            t.ptd_complex,
            t.s4d
        ))
    }
}
