//! Runs the PTD perturbation search for LegS:
//! `ptd_search N LAMBDA LR ITERS [MAX_REL_NORM|-] [cond2|frobenius] [STABILITY] [complex|real] [SEED] [SELECT_REL_NORM]`.
use statespace_math::ptd::{Objective, PtdOptions};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).map_or(64, |s| s.parse().expect("N"));
    let mut o = PtdOptions::real();
    if let Some(s) = a.get(2) {
        o.lambda = s.parse().expect("LAMBDA");
    }
    if let Some(s) = a.get(3) {
        o.lr = s.parse().expect("LR");
    }
    if let Some(s) = a.get(4) {
        o.iters = s.parse().expect("ITERS");
    }
    match a.get(5).map(String::as_str) {
        Some("-") => o.max_rel_norm = None,
        Some(s) => o.max_rel_norm = Some(s.parse().expect("MAX_REL_NORM")),
        None => {}
    }
    if let Some(s) = a.get(7) {
        o.stability = s.parse().expect("STABILITY");
    }
    if let Some(s) = a.get(9) {
        o.seed = s.parse().expect("SEED");
    }
    if let Some(s) = a.get(10) {
        o.select_rel_norm = Some(s.parse().expect("SELECT_REL_NORM"));
    }
    if a.get(6).is_some_and(|s| s.as_str() == "cond2") {
        o.objective = Objective::Cond2;
    }
    let (m, _) =
        statespace_math::hippo::transition(statespace_math::hippo::Measure::LegS, n).expect("LegS");
    let t = std::time::Instant::now();
    o.complex = a.get(8).is_some_and(|s| s.as_str() == "complex");
    if o.complex {
        let p = statespace_math::ptd::optimize_complex(&m, &o, |it, c| {
            if it % 500 == 0 {
                eprintln!("{it} cond {c:.2}")
            }
        })
        .expect("search");
        let ae = statespace_math::linalg::CMat::from_fn(n, n, |i, j| p.e[(i, j)] + m[(i, j)]);
        let eg = statespace_math::ptd::eig_complex(&ae).expect("eig");
        let maxre = eg.lambda.iter().map(|l| l.re).fold(f64::MIN, f64::max);
        if let Ok(path) = std::env::var("PTD_SAVE") {
            let rows: Vec<Vec<[f64; 2]>> = (0..n)
                .map(|i| (0..n).map(|j| [p.e[(i, j)].re, p.e[(i, j)].im]).collect())
                .collect();
            std::fs::write(&path, format!("{rows:?}")).expect("write E");
        }
        println!(
            "COMPLEX N={n} {o:?}: cond {:.2} rel {:.2}% max Re λ {maxre:.3} in {:.1}s",
            p.cond,
            100.0 * p.rel_norm,
            t.elapsed().as_secs_f64()
        );
        return;
    }
    let p = statespace_math::ptd::optimize(&m, &o, |it, c| {
        if it % 500 == 0 {
            eprintln!("{it} cond {c:.2}")
        }
    })
    .expect("search");
    let ae = faer::Mat::from_fn(n, n, |i, j| m[(i, j)] + p.e[(i, j)]);
    let maxre = statespace_math::ptd::eig(&ae)
        .expect("eig")
        .lambda
        .iter()
        .map(|l| l.re)
        .fold(f64::MIN, f64::max);
    let mut e0 = vec![0.0; n];
    e0[0] = 1.0;
    let omegas: Vec<f64> = (0..=400)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 400.0))
        .collect();
    let ec = statespace_math::linalg::CMat::from_fn(n, n, |i, j| {
        statespace_math::C64::new(p.e[(i, j)], 0.0)
    });
    let te = statespace_math::ptd::transfer_errors(&ec, &e0, &omegas).expect("transfer");
    println!(
        "N={n} {o:?}: cond {:.2} rel {:.2}% max Re λ {maxre:.3} transfer err (C=e0) ptd {:.3e} s4d {:.3e} in {:.1}s",
        p.cond,
        100.0 * p.rel_norm,
        te.ptd,
        te.s4d,
        t.elapsed().as_secs_f64()
    );
}
