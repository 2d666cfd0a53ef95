//! The default PTD perturbation of LegS(N) (computed, or read from the cache): cond(V), ‖E‖₂/‖A‖₂,
//! max Re λ before forcing, and the transfer-function errors for C = e₀ and C ~ N(0, 1).
//! `ptd_report [N]`; the cache directory is `$STATESPACE_CACHE` or `~/.cache/statespace`.
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use statespace_math::ptd::{self, PtdOptions};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(64, |s| s.parse().expect("N"));
    let dir = std::env::var_os("STATESPACE_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/statespace")
        });
    let t0 = std::time::Instant::now();
    let p = ptd::legs_perturbation(n, &PtdOptions::default(), Some(&dir), |it, c| {
        if it % 1000 == 0 {
            eprintln!("{it}: cond {c:.2}")
        }
    })
    .expect("PTD");
    let (a, _) =
        statespace_math::hippo::transition(statespace_math::hippo::Measure::LegS, n).unwrap();
    let ae = statespace_math::linalg::CMat::from_fn(n, n, |i, j| p.e[(i, j)] + a[(i, j)]);
    let eg = ptd::eig_complex(&ae).unwrap();
    let maxre = eg.lambda.iter().map(|l| l.re).fold(f64::MIN, f64::max);
    println!(
        "N = {n}: cond(V) = {:.3}, ‖E‖₂/‖A‖₂ = {:.3}%, max Re λ(A+E) = {maxre:.3} ({:.1} s)",
        p.cond,
        100.0 * p.rel_norm,
        t0.elapsed().as_secs_f64()
    );
    let omegas: Vec<f64> = (0..=400)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0))
        .collect();
    let mut e0 = vec![0.0; n];
    e0[0] = 1.0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let cr: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    for (what, c) in [("C = e0", e0), ("C ~ N(0,1)", cr)] {
        let t = ptd::transfer_errors(&p.e, &c, &omegas).unwrap();
        println!(
            "{what}: max|G − G_LegS|/max|G_LegS|: PTD layer {:.3e}, PTD complex system {:.3e}, S4D-LegS {:.3e}",
            t.ptd, t.ptd_complex, t.s4d
        );
    }
}
