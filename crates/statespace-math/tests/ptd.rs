//! PTD: the gradient of the perturbation objective against finite differences, and the search
//! reaching well-conditioned eigenvectors with a small perturbation.

use faer::Mat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statespace_math::C64;
use statespace_math::hippo::{self, Measure};
use statespace_math::linalg::CMat;
use statespace_math::linalg::norm2;
use statespace_math::ptd::{self, Objective, PtdOptions};

#[test]
fn objective_gradient_matches_finite_differences() {
    let n = 8;
    let (a, _) = hippo::transition(Measure::LegS, n).unwrap();
    let mut r = StdRng::seed_from_u64(1);
    let e0 = Mat::from_fn(n, n, |_, _| r.random_range(-0.5..0.5));
    let lam = 3e-3;
    // the shifted case puts eigenvalues in the right half-plane, exercising the stability term
    for (kind, shift, mu) in [
        (Objective::Cond2, 0.0, 0.0),
        (Objective::Frobenius, 0.0, 0.0),
        (Objective::Frobenius, 4.5, 30.0),
    ] {
        let e = Mat::from_fn(n, n, |i, j| e0[(i, j)] + if i == j { shift } else { 0.0 });
        let ae = Mat::from_fn(n, n, |i, j| a[(i, j)] + e[(i, j)]);
        if mu > 0.0 {
            assert!(ptd::eig(&ae).unwrap().lambda.iter().any(|l| l.re > 0.5));
        }
        let (_, g, _) = ptd::objective(&a, &e, lam, kind, mu).unwrap();
        let mut worst: f64 = 0.0;
        let mut scale: f64 = 0.0;
        for (i, j) in [(0, 0), (1, 3), (5, 2), (7, 7), (3, 6), (6, 1)] {
            let h = 1e-6;
            let f = |d: f64| {
                let mut e2 = e.clone();
                e2[(i, j)] += d;
                ptd::objective(&a, &e2, lam, kind, mu).unwrap().0
            };
            let fd = (f(h) - f(-h)) / (2.0 * h);
            worst = worst.max((fd - g[(i, j)]).abs());
            scale = scale.max(fd.abs());
        }
        assert!(worst <= 1e-5 * scale, "{kind:?}: {worst:e} vs {scale:e}");
    }
}

#[test]
#[ignore = "the N = 64 search itself (≈ 3 min); its result ships as data/ptd/legs-n64.safetensors, which \
            statespace-core's tests verify: run with `cargo test -- --ignored legs64`"]
fn legs64_perturbation_reaches_cond_10_within_5_percent() {
    // The goal (the paper's shipped file: 9.2 at 3.4 %). The search runs in the test (20,000
    // Adam steps, a few minutes) unless $STATESPACE_CACHE holds its result.
    let n = 64;
    let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
    let t0 = std::time::Instant::now();
    let cache = std::env::var_os("STATESPACE_CACHE").map(std::path::PathBuf::from);
    let p = ptd::legs_perturbation(n, &PtdOptions::default(), cache.as_deref(), |_, _| {}).unwrap();
    eprintln!(
        "PTD LegS N=64: cond(V) = {:.3}, ‖E‖₂/‖A‖₂ = {:.3}% ({:.1} s)",
        p.cond,
        100.0 * p.rel_norm,
        t0.elapsed().as_secs_f64()
    );
    // independent checks of the returned E: its norm by an SVD and cond(V) by a fresh
    // eigendecomposition of A + E
    let s = p.e.singular_values().unwrap();
    let en = s.iter().fold(0.0f64, |m, x| m.max(*x));
    let rel = en / norm2(&a).unwrap();
    let ae = CMat::from_fn(n, n, |i, j| p.e[(i, j)] + a[(i, j)]);
    let cond = ptd::eig_complex(&ae).unwrap().cond;
    assert!(cond <= 9.0, "cond(V) = {cond}");
    assert!(rel <= 0.034 * (1.0 + 1e-9), "‖E‖₂/‖A‖₂ = {rel}");
    // stable as it is: every eigenvalue of A + E at Re λ ≤ −0.5 (the margin), nothing to flip
    let max_re = ptd::eig_complex(&ae)
        .unwrap()
        .lambda
        .iter()
        .fold(f64::NEG_INFINITY, |m, l| m.max(l.re));
    assert!(max_re <= -0.5 + 1e-9, "max Re λ = {max_re}");
    // a random complex E of the same norm (the facts sheet: median ≈ 64 at 5 %)
    let mut r = StdRng::seed_from_u64(2);
    let rnd = CMat::from_fn(n, n, |_, _| {
        C64::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
    });
    let rs = rnd
        .singular_values()
        .unwrap()
        .iter()
        .fold(0.0f64, |m, x| m.max(*x));
    let ar = CMat::from_fn(n, n, |i, j| rnd[(i, j)] * (en / rs) + a[(i, j)]);
    let random_cond = ptd::eig_complex(&ar).unwrap().cond;
    eprintln!("random complex E at the same norm: cond(V) = {random_cond:.1}");
    assert!(3.0 * cond < random_cond, "{cond} vs random {random_cond}");
    let unperturbed = ptd::eig(&a).unwrap().cond;
    assert!(unperturbed > 1e8);
    let d = ptd::diagonalize_complex(&ae, &b, true).unwrap();
    assert_eq!(d.lambda.len(), n);
    assert!(d.lambda.iter().all(|l| l.re < 0.0));
    let omegas: Vec<f64> = (0..=200)
        .map(|i| 10f64.powf(-3.0 + 7.0 * i as f64 / 200.0))
        .collect();
    let mut e0 = vec![0.0; n];
    e0[0] = 1.0;
    let t = ptd::transfer_errors(&p.e, &e0, &omegas).unwrap();
    eprintln!(
        "transfer error (C = e0): PTD layer {:.3e}, PTD complex {:.3e}, S4D-LegS {:.3e}",
        t.ptd, t.ptd_complex, t.s4d
    );
}

#[test]
fn complex_diagonalization_realizes_the_real_part_of_the_system() {
    // All N modes with B̃ halved: the 2·Re layer convention gives ½[G(s) + conj G(s̄)] with
    // G(s) = C (sI − A − E)⁻¹ B by a dense complex solve.
    use statespace_math::kernel::DiagonalSystem;
    use statespace_math::linalg::csolve;
    let n = 10;
    let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
    let mut r = StdRng::seed_from_u64(8);
    let ae = CMat::from_fn(n, n, |i, j| {
        C64::new(
            a[(i, j)] + r.random_range(-0.3..0.3),
            r.random_range(-0.3..0.3),
        )
    });
    let c: Vec<f64> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
    let d = ptd::diagonalize_complex(&ae, &b, false).unwrap();
    let sys = DiagonalSystem {
        lambda: d.lambda.clone(),
        b: d.b.clone(),
        c: (0..n)
            .map(|k| (0..n).map(|i| d.v[(i, k)] * c[i]).sum())
            .collect(),
    };
    let g = |s: C64| -> C64 {
        let m = CMat::from_fn(
            n,
            n,
            |i, j| if i == j { s } else { C64::new(0.0, 0.0) } - ae[(i, j)],
        );
        let rhs = CMat::from_fn(n, 1, |i, _| C64::new(b[i], 0.0));
        let x = csolve(&m, &rhs);
        (0..n).map(|i| x[(i, 0)] * c[i]).sum()
    };
    let pts: Vec<C64> = [0.0, 0.3, 2.0, 17.0, 150.0]
        .iter()
        .map(|w| C64::new(0.0, *w))
        .collect();
    let got = sys.transfer(&pts).unwrap();
    for (s, h) in pts.iter().zip(&got) {
        let want = (g(*s) + g(s.conj()).conj()) * 0.5;
        assert!(
            (h - want).norm() <= 1e-9 * want.norm().max(1.0),
            "{h} vs {want}"
        );
    }
}

#[test]
fn diagonalization_realizes_the_perturbed_system_exactly() {
    // Kept modes (conjugate pairs once, real eigenvalues with B̃ halved) reproduce
    // H(s) = C (sI − A − E)⁻¹ B of the dense real system, real eigenvalues included.
    use statespace_math::kernel::{DiagonalSystem, dense_transfer};
    let n = 10;
    let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
    let mut r = StdRng::seed_from_u64(3);
    let ae = Mat::from_fn(n, n, |i, j| a[(i, j)] + r.random_range(-0.3..0.3));
    let c: Vec<f64> = (0..n).map(|_| r.random_range(-1.0..1.0)).collect();
    let d = ptd::diagonalize(&ae, &b, false).unwrap();
    let m = d.lambda.len();
    let reals = d.lambda.iter().filter(|l| l.im.abs() < 1e-9).count();
    assert_eq!(2 * m - reals, n, "modes: {m}, real: {reals}");
    let sys = DiagonalSystem {
        lambda: d.lambda.clone(),
        b: d.b.clone(),
        c: (0..m)
            .map(|k| (0..n).map(|i| d.v[(i, k)] * c[i]).sum())
            .collect(),
    };
    let s: Vec<statespace_math::C64> = [0.0, 0.3, 2.0, 17.0, 150.0]
        .iter()
        .map(|w| statespace_math::C64::new(0.0, *w))
        .collect();
    let got = sys.transfer(&s).unwrap();
    let want = dense_transfer(&ae, &b, &c, &s).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).norm() <= 1e-9 * w.norm().max(1.0), "{g} vs {w}");
    }
}

#[test]
fn complex_objective_gradient_matches_finite_differences() {
    let n = 8;
    let (a, _) = hippo::transition(Measure::LegS, n).unwrap();
    let mut r = StdRng::seed_from_u64(4);
    let e = CMat::from_fn(n, n, |_, _| {
        statespace_math::C64::new(r.random_range(-0.5..0.5), r.random_range(-0.5..0.5))
    });
    let lam = 3e-3;
    let (_, g, _) = ptd::objective_complex(&a, &e, lam, Objective::Frobenius, 0.5).unwrap();
    let (mut worst, mut scale): (f64, f64) = (0.0, 0.0);
    for (i, j) in [(0, 0), (2, 5), (7, 1), (4, 4)] {
        for imag in [false, true] {
            let h = 1e-6;
            let f = |d: f64| {
                let mut e2 = e.clone();
                e2[(i, j)] += if imag {
                    statespace_math::C64::new(0.0, d)
                } else {
                    statespace_math::C64::new(d, 0.0)
                };
                ptd::objective_complex(&a, &e2, lam, Objective::Frobenius, 0.5)
                    .unwrap()
                    .0
            };
            let fd = (f(h) - f(-h)) / (2.0 * h);
            let an = if imag { g[(i, j)].im } else { g[(i, j)].re };
            worst = worst.max((fd - an).abs());
            scale = scale.max(fd.abs());
        }
    }
    assert!(worst <= 1e-5 * scale, "{worst:e} vs {scale:e}");
}
