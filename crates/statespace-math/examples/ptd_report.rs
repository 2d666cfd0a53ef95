//! Scratch: transfer errors of PTD vs S4D-LegS for C = e₀ and random C, forced or not.
use statespace_math::ptd::{self, PtdOptions};
fn main() {
    let n: usize = std::env::args().nth(1).map_or(64, |s| s.parse().unwrap());
    let dir = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/statespace");
    let p = ptd::legs_perturbation(n, &PtdOptions::default(), Some(&dir), |_, _| {}).unwrap();
    let omegas: Vec<f64> = (0..=400)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0))
        .collect();
    let mut e0 = vec![0.0; n];
    e0[0] = 1.0;
    let t = ptd::transfer_errors(&p.e, &e0, &omegas).unwrap();
    println!("C=e0: ptd {:.3e} s4d {:.3e}", t.ptd, t.s4d);
    let (a, _) =
        statespace_math::hippo::transition(statespace_math::hippo::Measure::LegS, n).unwrap();
    let ae = faer::Mat::from_fn(n, n, |i, j| a[(i, j)] + p.e[(i, j)]);
    let eg = ptd::eig(&ae).unwrap();
    let maxre = eg.lambda.iter().map(|l| l.re).fold(f64::MIN, f64::max);
    println!("max Re λ(A+E) = {maxre:.3}");
}
