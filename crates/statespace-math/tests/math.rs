//! Tests of the math core against independently derived numbers: closed forms from the papers,
//! dense references computed by a different route, and properties that hold exactly.

use faer::Mat;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use statespace_math::C64;
use statespace_math::approx;
use statespace_math::discretize::{self, Discretization};
use statespace_math::dplr::Dplr;
use statespace_math::hippo::{self, Measure};
use statespace_math::kernel::{self, DiagonalSystem, DplrSystem};
use statespace_math::linalg::{self, RMat};
use statespace_math::s4d::{self, DiagInit};

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    max_abs(&d) / max_abs(b)
}

/// Largest |S + Sᵀ − 2c·I| entry: zero iff S = c·I + skew.
fn skew_defect(s: &RMat, c: f64) -> f64 {
    let n = s.nrows();
    let mut m: f64 = 0.0;
    for i in 0..n {
        for j in 0..n {
            let target = if i == j { 2.0 * c } else { 0.0 };
            m = m.max((s[(i, j)] + s[(j, i)] - target).abs());
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// HiPPO operators
// ---------------------------------------------------------------------------------------------

#[test]
fn normal_parts_are_shifted_skew_at_n64() {
    for (measure, c) in [
        (Measure::LegS, -0.5),
        (Measure::LegT, 0.0),
        (Measure::FouT, 0.0),
        (Measure::LagT, 0.0),
        (
            Measure::GLagT {
                alpha: 0.0,
                beta: 0.3,
            },
            -0.15,
        ),
        (Measure::FouD, -0.5),
    ] {
        let (a, _) = hippo::transition(measure, 64).unwrap();
        let p = hippo::low_rank(measure, 64).unwrap();
        let s = hippo::normal_part(&a, &p);
        let d = skew_defect(&s, c);
        assert!(d < 1e-12, "{measure}: A + PPᵀ − c·I not skew, defect {d:e}");
    }
}

#[test]
fn constant_input_is_stationary() {
    // A e₀ + B = 0: the projection of a constant signal does not move.
    for measure in [Measure::LegS, Measure::LegT, Measure::FouT] {
        let (a, b) = hippo::transition(measure, 64).unwrap();
        let m = (0..64)
            .map(|i| (a[(i, 0)] + b[i]).abs())
            .fold(0.0, f64::max);
        assert!(m < 1e-12, "{measure}: |A e0 + B| = {m:e}");
    }
}

#[test]
fn legs_entries_and_eigenvalues() {
    let (a, b) = hippo::transition(Measure::LegS, 4).unwrap();
    // A[2,1] = −√5·√3, A[2,2] = −3, A[1,2] = 0, B[3] = √7
    assert!((a[(2, 1)] + 15f64.sqrt()).abs() < 1e-15);
    assert_eq!(a[(2, 2)], -3.0);
    assert_eq!(a[(1, 2)], 0.0);
    assert!((b[3] - 7f64.sqrt()).abs() < 1e-15);
}

#[test]
fn legs_impulse_response_matches_closed_form() {
    // e^{tA}B = (√(2n+1)·e^{−t}·Pₙ(2e^{−t} − 1))ₙ (S4 / HiPPO), through our matrix exponential.
    let n = 64;
    let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
    for t in [0.01, 0.1, 0.5, 1.0, 3.0] {
        let ta = Mat::from_fn(n, n, |i, j| t * a[(i, j)]);
        let e = linalg::expm(&ta);
        let x = (-t).exp();
        let p = linalg::legendre_all(n, 2.0 * x - 1.0);
        let mut err: f64 = 0.0;
        for i in 0..n {
            let got: f64 = (0..n).map(|j| e[(i, j)] * b[j]).sum();
            let want = ((2 * i + 1) as f64).sqrt() * x * p[i];
            err = err.max((got - want).abs());
        }
        assert!(err < 1e-12, "t = {t}: max error {err:e}");
    }
}

#[test]
fn legs_exact_solution_for_linear_input() {
    // For f(s) = s the LegS ODE c' = (1/t)(Ac + Bf) is solved by c(t) = (t/2, t/(2√3), 0, …).
    let l = 4000;
    let f: Vec<f64> = (1..=l).map(|k| k as f64 / l as f64).collect();
    let states = approx::legs_states(&f, 16).unwrap();
    let c = states.last().unwrap();
    assert!((c[0] - 0.5).abs() < 1e-3, "c0 = {}", c[0]);
    assert!((c[1] - 0.5 / 3f64.sqrt()).abs() < 1e-3, "c1 = {}", c[1]);
    assert!(c[2..].iter().all(|x| x.abs() < 1e-3), "{c:?}");
}

#[test]
fn fourier_measures_structure() {
    // FouD is normal with eigenvalues −½ ± 2πik: each (2k, 2k+1) block is [[−½, −2πk], [2πk, −½]].
    let (a, b) = hippo::transition(Measure::FouD, 8).unwrap();
    for k in 0..4 {
        let (i, j) = (2 * k, 2 * k + 1);
        assert_eq!(a[(i, i)], -0.5);
        assert!((a[(i, j)] + 2.0 * std::f64::consts::PI * k as f64).abs() < 1e-14);
        assert!((a[(j, i)] - 2.0 * std::f64::consts::PI * k as f64).abs() < 1e-14);
    }
    assert_eq!(
        b,
        vec![
            1.0,
            0.0,
            2f64.sqrt(),
            0.0,
            2f64.sqrt(),
            0.0,
            2f64.sqrt(),
            0.0
        ]
    );
    // FouT = π·rotation − BBᵀ with the same pairing.
    let (a, b) = hippo::transition(Measure::FouT, 8).unwrap();
    assert!((a[(2, 3)] + std::f64::consts::PI + b[2] * b[3]).abs() < 1e-14);
    assert!((a[(0, 2)] + 2f64.sqrt()).abs() < 1e-14);
    assert!(hippo::transition(Measure::FouT, 7).is_err());
}

#[test]
fn glagt_matches_lagt_and_is_a_diagonal_similarity() {
    // α = 0: A = −(1+β)/2·I − strict_tril(1) = LagT's A − β/2·I, B = √β.
    let beta = 0.3;
    let (a0, b0) = hippo::transition(Measure::GLagT { alpha: 0.0, beta }, 6).unwrap();
    let (al, _) = hippo::transition(Measure::LagT, 6).unwrap();
    for i in 0..6 {
        for j in 0..6 {
            let want = al[(i, j)] - if i == j { beta / 2.0 } else { 0.0 };
            assert!((a0[(i, j)] - want).abs() < 1e-14);
        }
        assert!((b0[i] - beta.sqrt()).abs() < 1e-14);
    }
    // α ≠ 0: A_α = D⁻¹ A₀ D, D = diag(L), L_n² = Γ(n+α+1)/Γ(n+1) computed here by the recurrence
    // L_n² = L_{n−1}²·(n+α)/n with L_0² = Γ(1+α); B_n = binom(α+n, n)/L_n · Γ(1−α)^{−½} β^{(1−α)/2}.
    let alpha = 0.5;
    let (aa, ba) = hippo::transition(Measure::GLagT { alpha, beta }, 6).unwrap();
    let gamma_1p5 = std::f64::consts::PI.sqrt() / 2.0; // Γ(1.5)
    let gamma_0p5 = std::f64::consts::PI.sqrt(); // Γ(0.5) = Γ(1 − α)
    let mut l2 = vec![gamma_1p5];
    let mut binom = vec![1.0];
    for n in 1..6 {
        l2.push(l2[n - 1] * (n as f64 + alpha) / n as f64);
        binom.push(binom[n - 1] * (alpha + n as f64) / n as f64);
    }
    for i in 0..6 {
        for j in 0..6 {
            let want = a0[(i, j)] * (l2[j] / l2[i]).sqrt();
            assert!((aa[(i, j)] - want).abs() < 1e-12, "A[{i},{j}]");
        }
        let want_b = binom[i] / l2[i].sqrt() / gamma_0p5.sqrt() * beta.powf(0.25);
        assert!(
            (ba[i] - want_b).abs() < 1e-12,
            "B[{i}] = {} want {want_b}",
            ba[i]
        );
    }
    assert!(hippo::low_rank(Measure::GLagT { alpha, beta }, 6).is_err());
}

// ---------------------------------------------------------------------------------------------
// NPLR / DPLR
// ---------------------------------------------------------------------------------------------

#[test]
fn legs_normal_part_spectrum_matches_published_values() {
    let d = Dplr::from_measure(Measure::LegS, 8).unwrap();
    let mut w: Vec<f64> = d.lambda.iter().map(|l| l.im).collect();
    w.sort_by(|a, b| b.total_cmp(a));
    for (got, want) in w.iter().zip([19.857, 5.354, 1.958, 0.428]) {
        assert!((got - want).abs() < 1e-3, "{w:?}");
    }
    assert!(d.lambda.iter().all(|l| (l.re + 0.5).abs() < 1e-12));
    let d = Dplr::from_measure(Measure::LegS, 64).unwrap();
    let top = d.lambda.iter().map(|l| l.im).fold(0.0, f64::max);
    assert!((top - 1303.27).abs() < 0.01, "largest |ω| at N=64: {top}");
}

#[test]
fn dplr_reproduces_a_on_the_conjugate_completed_modes() {
    for measure in [
        Measure::LegS,
        Measure::LegT,
        Measure::LagT,
        Measure::FouT,
        Measure::FouD,
    ] {
        let n = 64;
        let (a, b) = hippo::transition(measure, n).unwrap();
        let d = Dplr::from_measure(measure, n).unwrap();
        let rec = d.reconstruct_a();
        let mut err: f64 = 0.0;
        for i in 0..n {
            for j in 0..n {
                err = err.max((rec[(i, j)] - C64::new(a[(i, j)], 0.0)).norm());
            }
        }
        assert!(err < 1e-9, "{measure}: ‖V(Λ − PP*)V* − A‖max = {err:e}");
        // V_full is unitary and B = V_full [b̃; conj b̃].
        let vf = d.full_v();
        let vv = vf.adjoint() * &vf;
        let uerr = linalg::cmax_abs(&(&vv - faer::Mat::<C64>::identity(n, n)));
        assert!(uerr < 1e-12, "{measure}: V not unitary ({uerr:e})");
        let bf = statespace_math::dplr::complete(&d.b);
        let berr = (0..n)
            .map(|i| ((0..n).map(|j| vf[(i, j)] * bf[j]).sum::<C64>() - b[i]).norm())
            .fold(0.0, f64::max);
        assert!(berr < 1e-11, "{measure}: V B̃ ≠ B ({berr:e})");
    }
}

#[test]
fn dplr_on_the_kept_half_alone_is_not_a() {
    // The pitfall: Λ − P̃P̃* on the N/2 kept modes, conjugate-completed as if block diagonal,
    // misses the coupling of conjugate pairs and is off by O(100) at N = 64.
    let n = 64;
    let (a, _) = hippo::transition(Measure::LegS, n).unwrap();
    let d = Dplr::from_measure(Measure::LegS, n).unwrap();
    let h = n / 2;
    let half = Mat::from_fn(h, h, |i, j| {
        (if i == j {
            d.lambda[i]
        } else {
            C64::new(0.0, 0.0)
        }) - d.p[0][i] * d.p[0][j].conj()
    });
    let v = &d.v;
    let t = v * &half;
    let rec = &t * v.adjoint();
    // 2·Re of the half reconstruction (what "2·Re of the half-sum" would give)
    let mut err: f64 = 0.0;
    for i in 0..n {
        for j in 0..n {
            err = err.max((2.0 * rec[(i, j)].re - a[(i, j)]).abs());
        }
    }
    assert!(
        err > 1.0,
        "half-set reconstruction unexpectedly close: {err}"
    );
}

/// The LegS system in the diagonal basis with a real output row `c_orig` of the original basis.
fn legs_dplr_system(n: usize, c_orig: &[f64]) -> (DplrSystem, RMat, Vec<f64>) {
    let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
    let d = Dplr::from_measure(Measure::LegS, n).unwrap();
    // C V_full = [C V, conj(C V)] because C is real.
    let c: Vec<C64> = (0..n / 2)
        .map(|j| (0..n).map(|i| d.v[(i, j)] * c_orig[i]).sum())
        .collect();
    (
        DplrSystem {
            lambda: d.lambda.clone(),
            p: d.p.clone(),
            b: d.b.clone(),
            c,
        },
        a,
        b,
    )
}

fn random_real(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    s4d::complex_normal(n, &mut rng)
        .iter()
        .map(|z| z.re)
        .collect()
}

#[test]
fn cauchy_woodbury_kernel_with_c_tilde_equals_krylov_kernel() {
    let (n, l) = (64, 1024);
    let c_orig = random_real(n, 7);
    let (sys, a, b) = legs_dplr_system(n, &c_orig);
    for dt in [1e-4, 1e-3, 1e-2, 1e-1] {
        let reference =
            kernel::dense_kernel(&a, &b, &c_orig, dt, Discretization::Bilinear, l).unwrap();
        let k = sys.kernel(dt, l).unwrap();
        let e = rel_err(&k, &reference);
        eprintln!("LegS N=64 L=1024 dt={dt}: Cauchy/Woodbury vs Krylov max|ΔK|/max|K| = {e:.2e}");
        assert!(e < 1e-11, "dt = {dt}: max|ΔK|/max|K| = {e:e}");
    }
    // Without the truncation factor (C in place of C̃) the kernel is wrong where Ā^L matters.
    let dt = 1e-4;
    let reference = kernel::dense_kernel(&a, &b, &c_orig, dt, Discretization::Bilinear, l).unwrap();
    let wrong = sys.kernel_from_c_tilde(&sys.c, dt, l).unwrap();
    assert!(rel_err(&wrong, &reference) > 1e-2);
}

#[test]
fn rank2_legt_dplr_kernel_equals_krylov() {
    let (n, l) = (32, 512);
    let (a, b) = hippo::transition(Measure::LegT, n).unwrap();
    let d = Dplr::from_measure(Measure::LegT, n).unwrap();
    assert_eq!(d.p.len(), 2);
    let c_orig = random_real(n, 3);
    let c = (0..n / 2)
        .map(|j| (0..n).map(|i| d.v[(i, j)] * c_orig[i]).sum())
        .collect();
    let sys = DplrSystem {
        lambda: d.lambda,
        p: d.p,
        b: d.b,
        c,
    };
    for dt in [1e-3, 1e-1] {
        let reference =
            kernel::dense_kernel(&a, &b, &c_orig, dt, Discretization::Bilinear, l).unwrap();
        let e = rel_err(&sys.kernel(dt, l).unwrap(), &reference);
        assert!(e < 1e-10, "LegT dt = {dt}: {e:e}");
    }
}

#[test]
fn c_is_recovered_from_c_tilde() {
    let n = 16;
    let (sys, _, _) = legs_dplr_system(n, &random_real(n, 11));
    let (dt, l) = (1e-3, 256);
    let ct = sys.c_tilde(dt, l).unwrap();
    let back = sys.c_from_c_tilde(&ct, dt, l).unwrap();
    let err = back
        .iter()
        .zip(&sys.c)
        .map(|(x, y)| (x - y).norm())
        .fold(0.0, f64::max);
    assert!(err < 1e-10, "{err:e}");
}

#[test]
fn transfer_functions_agree_dense_dplr() {
    let n = 16;
    let c_orig = random_real(n, 5);
    let (sys, a, b) = legs_dplr_system(n, &c_orig);
    let s: Vec<C64> = [0.0, 0.3, 1.0, 10.0, 200.0]
        .iter()
        .map(|&w| C64::new(0.0, w))
        .chain([C64::new(0.5, -2.0), C64::new(3.0, 7.0)])
        .collect();
    let hd = kernel::dense_transfer(&a, &b, &c_orig, &s).unwrap();
    let hp = sys.transfer(&s).unwrap();
    for (x, y) in hd.iter().zip(&hp) {
        assert!((x - y).norm() < 1e-10 * (1.0 + x.norm()), "{x} vs {y}");
    }
}

// ---------------------------------------------------------------------------------------------
// Diagonal systems
// ---------------------------------------------------------------------------------------------

/// The real 2×2-block realization of a conjugate-symmetric diagonal system: for z = x₁ + i·x₂,
/// z' = λz + b·u, y = 2Re(c z)  ⇔  x' = [[Re λ, −Im λ], [Im λ, Re λ]] x + (Re b, Im b) u,
/// y = 2(Re c·x₁ − Im c·x₂).
fn real_block_realization(sys: &DiagonalSystem) -> (RMat, Vec<f64>, Vec<f64>) {
    let h = sys.lambda.len();
    let a = Mat::from_fn(2 * h, 2 * h, |i, j| {
        if i / 2 != j / 2 {
            return 0.0;
        }
        let l = sys.lambda[i / 2];
        match (i % 2, j % 2) {
            (0, 0) | (1, 1) => l.re,
            (0, 1) => -l.im,
            _ => l.im,
        }
    });
    let b = (0..2 * h)
        .map(|i| {
            if i % 2 == 0 {
                sys.b[i / 2].re
            } else {
                sys.b[i / 2].im
            }
        })
        .collect();
    let c = (0..2 * h)
        .map(|i| {
            if i % 2 == 0 {
                2.0 * sys.c[i / 2].re
            } else {
                -2.0 * sys.c[i / 2].im
            }
        })
        .collect();
    (a, b, c)
}

fn random_diagonal(h: usize, seed: u64) -> DiagonalSystem {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lambda = s4d::init_a(DiagInit::Inv, 2 * h, &mut rng).unwrap();
    lambda[0] = C64::new(-0.3, 0.0); // a real mode too
    DiagonalSystem {
        lambda,
        b: s4d::complex_normal(h, &mut rng),
        c: s4d::complex_normal(h, &mut rng),
    }
}

#[test]
fn diagonal_kernels_equal_recurrence_impulse_responses() {
    let sys = random_diagonal(16, 1);
    let (dt, l) = (0.05, 300);
    for disc in [Discretization::Zoh, Discretization::Bilinear] {
        let k = sys.kernel(dt, disc, l).unwrap();
        // Impulse response of x ← Ā x + B̄ u, y = 2Re(C x), with u = δ.
        let modes: Vec<_> = sys
            .lambda
            .iter()
            .map(|&lam| discretize::diagonal(lam, dt, disc, l).unwrap())
            .collect();
        let mut x: Vec<C64> = modes.iter().zip(&sys.b).map(|(m, b)| m.bbar * b).collect();
        let mut y = Vec::new();
        for _ in 0..l {
            y.push(2.0 * x.iter().zip(&sys.c).map(|(x, c)| (c * x).re).sum::<f64>());
            x.iter_mut().zip(&modes).for_each(|(x, m)| *x *= m.abar);
        }
        let e = rel_err(&k, &y);
        assert!(e < 1e-12, "{disc}: {e:e}");
    }
}

#[test]
fn diagonal_kernels_equal_dense_real_realization() {
    // An independent route: the real block realization discretized densely (matrix exponential of
    // the augmented system for ZOH, LU for bilinear) and run as a Krylov kernel.
    let sys = random_diagonal(12, 2);
    let (a, b, c) = real_block_realization(&sys);
    for dt in [1e-3, 0.1] {
        for disc in [Discretization::Zoh, Discretization::Bilinear] {
            let k = sys.kernel(dt, disc, 500).unwrap();
            let reference = kernel::dense_kernel(&a, &b, &c, dt, disc, 500).unwrap();
            let e = rel_err(&k, &reference);
            assert!(e < 1e-11, "{disc} dt = {dt}: {e:e}");
        }
    }
}

#[test]
fn dss_kernel_sums_to_minus_h0_for_any_step() {
    // Σ_{l<L} Ā^l B̄ = B/λ per mode ⇒ Σ_l K_l = 2Re Σ CB/λ = −H(0), also for growing modes.
    let mut sys = random_diagonal(8, 4);
    sys.lambda[3] = C64::new(0.2, 1.5); // Re λ > 0 is allowed in DSS
    let h0 = sys.transfer(&[C64::new(0.0, 0.0)]).unwrap()[0];
    for (dt, l) in [(1e-3, 100), (0.05, 1000), (1.0, 64)] {
        let k = sys.kernel(dt, Discretization::Dss, l).unwrap();
        let s: f64 = k.iter().sum();
        assert!(
            (s + h0.re).abs() < 1e-9 * h0.norm().max(1.0),
            "dt {dt}: Σ K = {s}, −H(0) = {}",
            -h0.re
        );
        assert!(k.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn diagonal_transfer_equals_dense_realization() {
    let sys = random_diagonal(10, 9);
    let (a, b, c) = real_block_realization(&sys);
    let s = [C64::new(0.0, 0.7), C64::new(0.0, 40.0), C64::new(1.0, -3.0)];
    let h1 = sys.transfer(&s).unwrap();
    let h2 = kernel::dense_transfer(&a, &b, &c, &s).unwrap();
    for (x, y) in h1.iter().zip(&h2) {
        assert!((x - y).norm() < 1e-11 * (1.0 + y.norm()));
    }
}

#[test]
fn s4d_legs_kernel_converges_to_s4_legs_kernel() {
    // S4D paper: the diagonal part of LegS (with B halved) recovers the LegS kernel as N → ∞.
    // Compared as discrete ZOH kernels at dt = 0.01 with C on the first coordinate.
    let (dt, l) = (0.01, 1000);
    let mut errs = Vec::new();
    for n in [16, 64, 256] {
        let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
        let mut c = vec![0.0; n];
        c[0] = 1.0;
        let reference = kernel::dense_kernel(&a, &b, &c, dt, Discretization::Zoh, l).unwrap();
        let d = Dplr::from_measure(Measure::LegS, n).unwrap();
        let diag = DiagonalSystem {
            lambda: d.lambda.clone(),
            b: d.b.iter().map(|x| x * 0.5).collect(),
            c: (0..n / 2).map(|j| d.v[(0, j)]).collect(),
        };
        let k = diag.kernel(dt, Discretization::Zoh, l).unwrap();
        errs.push(rel_err(&k, &reference));
    }
    eprintln!("S4D-LegS vs S4-LegS relative errors N=16/64/256: {errs:?}");
    assert!(errs[0] > errs[1] && errs[1] > errs[2], "{errs:?}");
    assert!(errs[2] < 0.1, "{errs:?}");
}

// ---------------------------------------------------------------------------------------------
// Inits, discretization details, special functions
// ---------------------------------------------------------------------------------------------

#[test]
fn s4d_inits_follow_their_formulas() {
    let mut rng = StdRng::seed_from_u64(0);
    let inv = s4d::init_a(DiagInit::Inv, 8, &mut rng).unwrap();
    for (got, want) in inv.iter().zip([17.83, 4.24, 1.53, 0.36]) {
        assert!((got.im - want).abs() < 0.01 && got.re == -0.5);
    }
    let lin = s4d::init_a(DiagInit::Lin, 8, &mut rng).unwrap();
    assert!((lin[3].im - 3.0 * std::f64::consts::PI).abs() < 1e-14);
    let quad = s4d::init_a(DiagInit::Quad, 8, &mut rng).unwrap();
    assert!((quad[2].im - 25.0 / std::f64::consts::PI).abs() < 1e-13);
    let real = s4d::init_a(DiagInit::Real, 8, &mut rng).unwrap();
    assert_eq!(real[3], C64::new(-4.0, 0.0));
    let rand = s4d::init_a(DiagInit::Rand, 8, &mut rng).unwrap();
    assert!(rand.iter().all(|z| z.re == -0.5 && z.im > 0.0));
    let legs = s4d::init_a(DiagInit::LegS, 8, &mut rng).unwrap();
    assert!(legs.iter().any(|z| (z.im - 19.857).abs() < 1e-3));
    assert!(s4d::init_a(DiagInit::Lin, 7, &mut rng).is_err());
}

#[test]
fn log_uniform_dt_is_log_uniform() {
    let mut rng = StdRng::seed_from_u64(42);
    let dts = s4d::log_uniform_dt(20000, 1e-3, 1e-1, &mut rng).unwrap();
    assert!(dts.iter().all(|&d| (1e-3..=1e-1).contains(&d)));
    // log10 Δ ~ U[−3, −1]: mean −2, variance 1/3; fraction below 1e-2 is ½.
    let logs: Vec<f64> = dts.iter().map(|d| d.log10()).collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logs.len() as f64;
    assert!((mean + 2.0).abs() < 0.02, "{mean}");
    assert!((var - 1.0 / 3.0).abs() < 0.02, "{var}");
    assert!(s4d::log_uniform_dt(3, 0.0, 1.0, &mut rng).is_err());
}

#[test]
fn expm_and_special_functions() {
    let th = 0.7;
    let r = Mat::from_fn(2, 2, |i, j| match (i, j) {
        (0, 1) => -th,
        (1, 0) => th,
        _ => 0.0,
    });
    let e = linalg::expm(&r);
    assert!((e[(0, 0)] - th.cos()).abs() < 1e-15 && (e[(1, 0)] - th.sin()).abs() < 1e-15);
    let big = Mat::from_fn(1, 1, |_, _| 5.0);
    assert!((linalg::expm(&big)[(0, 0)] / 5f64.exp() - 1.0).abs() < 1e-14);
    assert!((linalg::ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
    assert!((linalg::ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    assert!((linalg::ln_gamma(0.25) - 3.625_609_908_221_908_f64.ln()).abs() < 1e-13);
    let p = linalg::legendre_all(4, 0.3);
    assert!((p[3] - 0.5 * (5.0 * 0.027 - 3.0 * 0.3)).abs() < 1e-15);
}

#[test]
fn bilinear_and_zoh_agree_to_second_order() {
    // Both rules agree with the exact exponential to O(Δ³) per step on a scalar mode.
    let lam = C64::new(-0.7, 3.0);
    for dt in [1e-2, 1e-3] {
        let z = discretize::diagonal(lam, dt, Discretization::Zoh, 1).unwrap();
        let b = discretize::diagonal(lam, dt, Discretization::Bilinear, 1).unwrap();
        let d = (z.abar - b.abar).norm();
        assert!(d < 2.0 * (lam.norm() * dt).powi(3), "dt {dt}: {d:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Online function approximation
// ---------------------------------------------------------------------------------------------

#[test]
fn legs_reconstructs_cubic_and_sine() {
    let (n, l) = (32, 2000);
    let grid: Vec<f64> = (1..=l).map(|k| k as f64 / l as f64).collect();
    for (name, f) in [
        ("t^3", (|t: f64| t.powi(3)) as fn(f64) -> f64),
        ("sin 6t", |t: f64| (6.0 * t).sin()),
    ] {
        let samples: Vec<f64> = grid.iter().map(|&t| f(t)).collect();
        let states = approx::legs_states(&samples, n).unwrap();
        let rec = approx::legs_reconstruct(states.last().unwrap(), 1.0, &grid);
        let err = rec
            .iter()
            .zip(&samples)
            .map(|(r, s)| (r - s).abs())
            .fold(0.0, f64::max);
        eprintln!("LegS reconstruction of {name}: max error {err:.3e}");
        assert!(err < 5e-3, "{name}: {err:e}");
        // c₀ is the running mean of the signal.
        let mean = samples.iter().sum::<f64>() / l as f64;
        assert!((states.last().unwrap()[0] - mean).abs() < 2e-3);
    }
}

#[test]
fn legt_reconstructs_the_sliding_window() {
    let (n, dt, theta) = (32, 1e-3, 1.0);
    let f = |t: f64| (4.0 * t).sin() + 0.5 * (9.0 * t).cos();
    let l = 3000; // t = 3: the window [2, 3] is well inside the signal
    let samples: Vec<f64> = (1..=l).map(|k| f(k as f64 * dt)).collect();
    let states = approx::legt_states(&samples, n, dt, theta).unwrap();
    let ys: Vec<f64> = (0..=100).map(|i| 0.05 + 0.9 * i as f64 / 100.0).collect();
    let rec = approx::legt_reconstruct(states.last().unwrap(), &ys);
    let t = l as f64 * dt;
    let err = ys
        .iter()
        .zip(&rec)
        .map(|(&y, r)| (r - f(t - theta + y * theta)).abs())
        .fold(0.0, f64::max);
    eprintln!("LegT window reconstruction: max error {err:.3e}");
    assert!(err < 2e-2, "{err:e}");
}

// ---------------------------------------------------------------------------------------------
// Property tests on random stable systems
// ---------------------------------------------------------------------------------------------

fn arb_mode() -> impl Strategy<Value = (f64, f64, f64, f64, f64, f64)> {
    (
        0.01f64..3.0,   // −Re λ
        -50.0f64..50.0, // Im λ
        -2.0f64..2.0,
        -2.0f64..2.0,
        -2.0f64..2.0,
        -2.0f64..2.0,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn prop_diagonal_kernel_equals_dense(modes in prop::collection::vec(arb_mode(), 1..8),
                                         log_dt in -4.0f64..-0.5,
                                         zoh in any::<bool>()) {
        let sys = DiagonalSystem {
            lambda: modes.iter().map(|m| C64::new(-m.0, m.1)).collect(),
            b: modes.iter().map(|m| C64::new(m.2, m.3)).collect(),
            c: modes.iter().map(|m| C64::new(m.4, m.5)).collect(),
        };
        let disc = if zoh { Discretization::Zoh } else { Discretization::Bilinear };
        let dt = 10f64.powf(log_dt);
        let (a, b, c) = real_block_realization(&sys);
        let k = sys.kernel(dt, disc, 200).unwrap();
        let r = kernel::dense_kernel(&a, &b, &c, dt, disc, 200).unwrap();
        let scale = max_abs(&r).max(1e-300);
        let d: Vec<f64> = k.iter().zip(&r).map(|(x, y)| x - y).collect();
        prop_assert!(max_abs(&d) <= 1e-10 * scale, "rel err {}", max_abs(&d) / scale);
    }

    #[test]
    fn prop_dplr_kernel_equals_krylov(modes in prop::collection::vec(arb_mode(), 1..6),
                                      p in prop::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 6),
                                      log_dt in -4.0f64..-0.5,
                                      len in 8usize..300) {
        let h = modes.len();
        let sys = DplrSystem {
            lambda: modes.iter().map(|m| C64::new(-m.0, m.1)).collect(),
            p: vec![p[..h].iter().map(|&(r, i)| C64::new(r, i) * 0.5).collect()],
            b: modes.iter().map(|m| C64::new(m.2, m.3)).collect(),
            c: modes.iter().map(|m| C64::new(m.4, m.5)).collect(),
        };
        let dt = 10f64.powf(log_dt);
        let k = sys.kernel(dt, len).unwrap();
        let r = sys.krylov_kernel(dt, len).unwrap();
        let scale = max_abs(&r).max(1e-300);
        let d: Vec<f64> = k.iter().zip(&r).map(|(x, y)| x - y).collect();
        prop_assert!(max_abs(&d) <= 1e-9 * scale, "rel err {}", max_abs(&d) / scale);
        // And its transfer function equals the dense one of the completed system.
        let (a, b, c) = sys.dense_full();
        let s = C64::new(0.1, 2.0);
        let n = a.nrows();
        let m = Mat::from_fn(n, n, |i, j| (if i == j { s } else { C64::new(0.0, 0.0) }) - a[(i, j)]);
        let x = linalg::csolve(&m, &Mat::from_fn(n, 1, |i, _| b[i]));
        let hd: C64 = (0..n).map(|i| c[i] * x[(i, 0)]).sum();
        let hw = sys.transfer(&[s]).unwrap()[0];
        prop_assert!((hd - hw).norm() <= 1e-9 * (1.0 + hd.norm()));
    }
}

#[test]
fn legs_basis_is_the_impulse_response_of_legs() {
    let n = 32;
    let (a, b) = hippo::transition(Measure::LegS, n).unwrap();
    for t in [0.0, 0.05, 0.7, 2.5, 6.0] {
        let e = linalg::expm(&Mat::from_fn(n, n, |i, j| t * a[(i, j)]));
        let k = hippo::legs_basis(n, t);
        for (i, ki) in k.iter().enumerate() {
            let dense: f64 = (0..n).map(|j| e[(i, j)] * b[j]).sum();
            assert!(
                (dense - ki).abs() < 1e-12,
                "t = {t}, n = {i}: {dense} vs {ki}"
            );
        }
    }
}

#[test]
fn delay_recall_of_one_mode_is_its_autocorrelation() {
    // x_k = a x_{k−1} + b u_k with white u: corr(x_k, u_{k−d})² = a^{2d}(1 − a²)
    use statespace_math::delay::delay_recall;
    let (lambda, dt) = (2.0, 0.1);
    let a_bar = (1.0 - lambda * dt / 2.0) / (1.0 + lambda * dt / 2.0);
    let a = Mat::from_fn(1, 1, |_, _| -lambda);
    let delays = [0usize, 1, 3, 10];
    let r2 = delay_recall(&a, &[1.0], dt, &delays, 200_000, 1, 7).unwrap();
    for (&d, got) in delays.iter().zip(&r2) {
        let want = a_bar.powi(2 * d as i32) * (1.0 - a_bar * a_bar);
        assert!((got - want).abs() < 0.01, "d = {d}: {got} vs {want}");
    }
    // the input averaged over w steps: the state of the system is unchanged in kind, and an
    // empty averaging window is refused
    assert!(delay_recall(&a, &[1.0], dt, &delays, 1000, 0, 7).is_err());
    assert!(delay_recall(&a, &[1.0], dt, &delays, 1, 1, 7).is_err());
}

#[test]
fn the_best_step_of_a_delay_is_inverse_to_it_for_legt() {
    // LegT remembers a window of fixed length in time: the step that recalls d steps back best
    // is ∝ 1/d
    use statespace_math::delay::{best_step, delay_recall};
    let n = 16;
    let (a, b) = hippo::transition(Measure::LegT, n).unwrap();
    let dts: Vec<f64> = (0..=24)
        .map(|i| 10f64.powf(-3.0 + 3.0 * i as f64 / 24.0))
        .collect();
    let delays = [10usize, 40];
    let r2: Vec<Vec<f64>> = dts
        .iter()
        .map(|&dt| delay_recall(&a, &b, dt, &delays, 4000, 4, 1).unwrap())
        .collect();
    let best: Vec<f64> = (0..delays.len())
        .map(|i| {
            let col: Vec<f64> = r2.iter().map(|r| r[i]).collect();
            let (dt, r) = best_step(&dts, &col).unwrap();
            assert!(r > 0.5, "delay {}: best R² {r}", delays[i]);
            dt
        })
        .collect();
    let ratio = best[0] / best[1];
    assert!(
        (2.8..5.7).contains(&ratio),
        "Δ*(10)/Δ*(40) = {ratio} (4 expected)"
    );
}

#[test]
fn best_step_finds_the_vertex_of_a_parabola_in_log_step() {
    use statespace_math::delay::best_step;
    let dts: Vec<f64> = (0..9).map(|i| 10f64.powf(-2.0 + 0.25 * i as f64)).collect();
    let peak = 0.037f64;
    let r2: Vec<f64> = dts
        .iter()
        .map(|d| 0.9 - 0.1 * (d.ln() - peak.ln()).powi(2))
        .collect();
    let (dt, r) = best_step(&dts, &r2).unwrap();
    assert!((dt / peak - 1.0).abs() < 1e-9, "{dt}");
    assert!((r - r2.iter().cloned().fold(f64::MIN, f64::max)).abs() < 1e-15);
    // at the edge of the grid: the edge itself
    let rising: Vec<f64> = (0..9).map(|i| i as f64).collect();
    assert_eq!(best_step(&dts, &rising).unwrap().0, dts[8]);
}

#[test]
fn memory_edge_is_where_recall_falls_to_half_its_best() {
    use statespace_math::delay::memory_edge;
    let dts = [0.001, 0.01, 0.1, 1.0];
    // R² 0.8 up to Δ = 0.01, then 0.2: half of 0.8 is crossed at t = (0.8 − 0.4)/(0.8 − 0.2) = 2/3
    // of the way from log 0.01 to log 0.1
    let e = memory_edge(&dts, &[0.6, 0.8, 0.2, 0.0]).unwrap();
    assert!((e.log10() - (-2.0 + 2.0 / 3.0)).abs() < 1e-12, "{e}");
    assert_eq!(memory_edge(&dts, &[0.1, 0.2, 0.3, 0.4]), Some(1.0));
    assert_eq!(memory_edge(&dts, &[0.0; 4]), None);
}
