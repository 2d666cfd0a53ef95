//! The sequence kernels beyond S4D (S4, S5, SGConv, HOPE, PTD): gradients against finite differences
//! in f64, kernels against the math core's f64 references, recurrent mode against convolution mode.

use crate::common::*;

use num_complex::Complex64 as C64;
use statespace_core::engine::params::ParamStore;
use statespace_core::kernels::SequenceKernel;
use statespace_core::kernels::s4::{DplrInit, S4Config, S4Kernel, StepMode};
use statespace_core::model::{Init, LayerKind, ModelConfig};

fn s4_cfg(h: usize, n: usize, init: DplrInit, bidirectional: bool, n_ssm: usize) -> S4Config {
    S4Config {
        channels: h,
        state_size: n,
        n_ssm,
        init,
        dt_min: 0.01,
        dt_max: 0.3,
        bidirectional,
        step_mode: StepMode::Linear,
    }
}

fn s4_check(init: DplrInit, bidirectional: bool, n_ssm: usize, l: usize) {
    let mut r = rng(11);
    let (h, n) = (2, 8);
    let mut store = ParamStore::<f64>::new();
    let mut kern = S4Kernel::new(
        &mut store,
        "k",
        s4_cfg(h, n, init, bidirectional, n_ssm),
        &mut r,
    )
    .unwrap();
    // perturb every parameter so no gradient vanishes by symmetry
    for p in store.params.iter_mut() {
        let noise = randn(p.value.len(), &mut r);
        for (v, e) in p.value.iter_mut().zip(noise) {
            *v += 0.1 * e;
        }
    }
    check_kernel_gradients(&mut kern, &mut store, l, 100, 1e-4, &mut r);
}

#[test]
fn s4_kernel_gradients() {
    s4_check(DplrInit::Legs, false, 2, 40);
    s4_check(DplrInit::Legt, false, 1, 41); // rank 2, odd length (no Nyquist bin), shared (Λ, P, B)
    s4_check(DplrInit::Fout, true, 2, 32);
}

#[test]
fn s4_kernel_equals_the_krylov_kernel_of_the_recovered_c() {
    // The engine's DPLR kernel (from C̃) equals the math core's Cauchy kernel and the dense Krylov
    // kernel C Ā^l B̄ with C = C̃(I − Ā^L)⁻¹ — at small Δ, where Ā^L is far from negligible.
    let mut r = rng(12);
    let (h, n, l) = (3, 16, 256);
    let mut store = ParamStore::<f64>::new();
    let mut cfg = s4_cfg(h, n, DplrInit::Legs, false, 3);
    cfg.dt_min = 1e-3;
    cfg.dt_max = 1e-2;
    let mut kern = S4Kernel::new(&mut store, "k", cfg, &mut r).unwrap();
    let mut k = Vec::new();
    kern.forward(&store, l, &mut k);
    for c in 0..h {
        let (sys, dt) = kern.system(&store, 0, c);
        let cauchy = sys.kernel_from_c_tilde(&sys.c, dt, l).unwrap();
        let got = &k[c * l..(c + 1) * l];
        let scale = max_abs(&cauchy);
        assert!(max_diff(got, &cauchy) <= 1e-12 * scale, "channel {c}");
        let cc = sys.c_from_c_tilde(&sys.c, dt, l).unwrap();
        let krylov = statespace_math::kernel::DplrSystem { c: cc, ..sys }
            .krylov_kernel(dt, l)
            .unwrap();
        assert!(
            max_diff(got, &krylov) <= 1e-10 * scale,
            "channel {c} vs Krylov"
        );
    }
    // A shorter sequence gets the prefix; a longer one the exact longer kernel (C̃ re-derived).
    let mut short = Vec::new();
    kern.forward(&store, 100, &mut short);
    for c in 0..h {
        assert!(max_diff(&short[c * 100..(c + 1) * 100], &k[c * l..c * l + 100]) < 1e-12);
    }
    let mut long = Vec::new();
    kern.forward(&store, 2 * l, &mut long);
    for c in 0..h {
        let (sys, dt) = kern.system(&store, 0, c);
        let cc = sys.c_from_c_tilde(&sys.c, dt, l).unwrap();
        let krylov = statespace_math::kernel::DplrSystem { c: cc, ..sys }
            .krylov_kernel(dt, 2 * l)
            .unwrap();
        let got = &long[c * 2 * l..(c + 1) * 2 * l];
        assert!(
            max_diff(got, &krylov) <= 1e-9 * max_abs(&krylov),
            "channel {c}: extended kernel"
        );
    }
    assert_eq!(kern.kernel_len(), l);
}

#[test]
fn s4_f32_kernel_against_the_f64_reference() {
    // N = 64, L = 4096, Δ ∈ {1e-4, 1e-3, 1e-2, 1e-1}: ≤ 3e-5 of max|K|.
    let (h, n, l) = (4, 64, 4096);
    let mut store = ParamStore::<f32>::new();
    let mut kern = S4Kernel::new(
        &mut store,
        "k",
        s4_cfg(h, n, DplrInit::Legs, false, 1),
        &mut rng(13),
    )
    .unwrap();
    let dts = [1e-4f64, 1e-3, 1e-2, 1e-1];
    let ldt = store.find("k.log_dt").unwrap();
    for (v, dt) in store.params[ldt].value.iter_mut().zip(dts) {
        *v = dt.ln() as f32;
    }
    let mut k = Vec::new();
    kern.forward(&store, l, &mut k);
    for (c, dt) in dts.iter().enumerate() {
        let (sys, dt64) = kern.system(&store, 0, c);
        assert!((dt64 / dt - 1.0).abs() < 1e-6);
        let want = sys.kernel_from_c_tilde(&sys.c, dt64, l).unwrap();
        let got: Vec<f64> = k[c * l..(c + 1) * l].iter().map(|v| *v as f64).collect();
        let rel = max_diff(&got, &want) / max_abs(&want);
        eprintln!("S4 f32 kernel, N=64 L=4096 dt={dt:e}: {rel:.2e} of max|K|");
        assert!(rel <= 3e-5, "dt = {dt}: {rel:e}");
    }
}

fn model_cfg(kind: LayerKind) -> ModelConfig {
    ModelConfig {
        kind,
        d_model: 4,
        n_layers: 2,
        d_state: 8,
        dt_min: 0.01,
        dt_max: 0.1,
        ..ModelConfig::default()
    }
}

#[test]
fn s4_step_equals_convolution() {
    for (mode, init) in [
        (StepMode::Linear, Init::Legs),
        (StepMode::Dense, Init::Legs),
        (StepMode::Linear, Init::Legt),
    ] {
        let cfg = ModelConfig {
            step_mode: mode,
            init,
            n_ssm: 2,
            ..model_cfg(LayerKind::S4)
        };
        let (e64, e32) = step_vs_conv(&cfg, 300, 21);
        eprintln!("S4 {mode:?} {init:?}: step vs conv {e64:.1e} (f64), {e32:.1e} (f32)");
        assert!(e64 <= 1e-9, "{mode:?} f64: {e64:e}");
        assert!(e32 <= 1e-4, "{mode:?} f32: {e32:e}");
    }
}

#[test]
fn s4_bidirectional_has_no_step_and_kernel_len_is_a_buffer() {
    let mut store = ParamStore::<f64>::new();
    let kern = S4Kernel::new(
        &mut store,
        "k",
        s4_cfg(2, 4, DplrInit::Legs, true, 1),
        &mut rng(0),
    )
    .unwrap();
    let err = kern
        .stepper(&store)
        .err()
        .expect("no step when bidirectional");
    assert!(matches!(err, statespace_core::Error::Unsupported(_)));
    assert!(err.to_string().contains("bidirectional"));
    assert_eq!(kern.buffers()[0].0, "kernel_len");
    let _ = C64::new(0.0, 0.0);
}

// ---------------------------------------------------------------- SGConv

use statespace_core::kernels::sgconv::{SgConvConfig, SgConvKernel, SgConvOptions, Upsample};

fn sg_cfg(
    h: usize,
    lmax: usize,
    d: usize,
    init_scale: usize,
    up: Upsample,
    bi: bool,
) -> SgConvConfig {
    SgConvConfig {
        channels: h,
        max_len: lmax,
        bidirectional: bi,
        opts: SgConvOptions {
            kernel_dim: d,
            init_scale,
            decay_min: 1.5,
            decay_max: 3.0,
            upsample: up,
        },
    }
}

#[test]
fn sgconv_gradients() {
    for (up, bi, s0, l) in [
        (Upsample::Linear, false, 0, 50),
        (Upsample::Nearest, true, 1, 50),
        (Upsample::Linear, false, 0, 30), // shorter than l_max
    ] {
        let mut r = rng(31);
        let mut store = ParamStore::<f64>::new();
        let mut kern =
            SgConvKernel::new(&mut store, "k", sg_cfg(2, 50, 4, s0, up, bi), &mut r).unwrap();
        check_kernel_gradients(&mut kern, &mut store, l, 200, 1e-4, &mut r);
    }
}

#[test]
fn sgconv_kernel_structure() {
    // kernel_dim 2, L_max 16, init_scale 0: S = 1 + log₂ 8 = 4 sub-kernels upsampled by 1, 1, 2, 4
    // (spans 2, 2, 4, 8 = 16), weighted m³, m², m, 1; unit norm after the first forward.
    for up in [Upsample::Linear, Upsample::Nearest] {
        let mut store = ParamStore::<f64>::new();
        let mut cfg = sg_cfg(1, 16, 2, 0, up, false);
        cfg.opts.decay_min = 2.0;
        cfg.opts.decay_max = 2.0;
        let mut kern = SgConvKernel::new(&mut store, "k", cfg, &mut rng(0)).unwrap();
        assert_eq!(kern.scales(), 4);
        let wid = store.find("k.weight").unwrap();
        store.params[wid].value = vec![1.0, 2.0, 3.0, 5.0, 1.0, 2.0, 1.0, 2.0];
        let mut k = Vec::new();
        kern.forward(&store, 16, &mut k);
        // PyTorch interpolate([1, 2], scale 2, linear, align_corners=False) = [1, 1.25, 1.75, 2];
        // scale 4 = [1, 1, 1.125, 1.375, 1.625, 1.875, 2, 2]
        let raw: Vec<f64> = match up {
            Upsample::Linear => [
                vec![8.0, 16.0, 12.0, 20.0],
                vec![2.0, 2.5, 3.5, 4.0],
                vec![1.0, 1.0, 1.125, 1.375, 1.625, 1.875, 2.0, 2.0],
            ]
            .concat(),
            Upsample::Nearest => [
                vec![8.0, 16.0, 12.0, 20.0],
                vec![2.0, 2.0, 4.0, 4.0],
                vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
            ]
            .concat(),
        };
        let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (a, b) in k.iter().zip(&raw) {
            assert!((a - b / norm).abs() < 1e-14, "{up:?}: {k:?}");
        }
        // the norm is frozen: doubling the weights doubles the kernel
        store.params[wid].value.iter_mut().for_each(|v| *v *= 2.0);
        let mut k2 = Vec::new();
        kern.forward(&store, 16, &mut k2);
        assert!((k2[3] - 2.0 * k[3]).abs() < 1e-14);
        assert_eq!(kern.buffers()[0].1[0], norm);
    }
}

#[test]
fn sgconv_step_equals_convolution() {
    let cfg = ModelConfig {
        l_max: 120,
        sgconv: SgConvOptions {
            kernel_dim: 8,
            ..SgConvOptions::default()
        },
        ..model_cfg(LayerKind::Sgconv)
    };
    let (e64, e32) = step_vs_conv(&cfg, 120, 22);
    eprintln!("SGConv: step vs conv {e64:.1e} (f64), {e32:.1e} (f32)");
    assert!(e64 <= 1e-9 && e32 <= 1e-4, "{e64:e} {e32:e}");
}

// ---------------------------------------------------------------- HOPE

use statespace_core::kernels::hope::{HopeConfig, HopeKernel, HopeMode, HopeOptions};

fn hope_cfg(h: usize, n: usize, mode: HopeMode, bi: bool) -> HopeConfig {
    HopeConfig {
        channels: h,
        state_size: n,
        dt_min: 0.05,
        dt_max: 0.5,
        bidirectional: bi,
        opts: HopeOptions { mode },
    }
}

#[test]
fn hope_gradients() {
    for (mode, bi, l) in [
        (HopeMode::Causal, false, 40),
        (HopeMode::Causal, true, 33),
        (HopeMode::Circular, false, 40),
        (HopeMode::Circular, false, 33),
    ] {
        let mut r = rng(41);
        let mut store = ParamStore::<f64>::new();
        let mut kern = HopeKernel::new(&mut store, "k", hope_cfg(2, 8, mode, bi), &mut r).unwrap();
        check_kernel_gradients(&mut kern, &mut store, l, 100, 1e-5, &mut r);
    }
}

#[test]
fn hope_at_unit_step_is_a_circular_fir_filter() {
    // Δ = 1: ω′ = ω, so K̂_k = Σⱼ hⱼ ω^{−(j+1)} — taps Re hⱼ at lags 1..n (circular, and causal).
    let h = [0.3, -1.2, 0.7, 2.0];
    let l = 12;
    let circ = HopeKernel::circular_kernel(&h, 1.0, l);
    let causal = HopeKernel::causal_kernel(&h, 1.0, l);
    for t in 0..l {
        let want = if (1..=4).contains(&t) { h[t - 1] } else { 0.0 };
        assert!((circ[t] - want).abs() < 1e-14, "circular lag {t}");
        assert!((causal[t] - want).abs() < 1e-14, "causal lag {t}");
    }
}

#[test]
fn hope_kernels_follow_algorithm_1() {
    // The paper's formula computed literally (ω′ from the bilinear warp, e^{−i(j+1)·arg ω′}, naive
    // inverse DFT) gives our circular kernel; and the circular kernel is the causal impulse response
    // aliased in time: Σ_m K_causal[l + mL].
    let h = [0.5, -0.25, 1.0, 0.125, -0.75, 0.3];
    let (l, dt) = (64, 0.2);
    let mut naive = vec![0.0; l];
    for k in 0..l {
        let w = C64::from_polar(1.0, 2.0 * std::f64::consts::PI * k as f64 / l as f64);
        let wp = ((1.0 + dt) * w + dt - 1.0) / ((dt - 1.0) * w + dt + 1.0);
        assert!((wp.norm() - 1.0).abs() < 1e-12);
        let khat: C64 = h
            .iter()
            .enumerate()
            .map(|(j, hj)| C64::from_polar(*hj, -((j + 1) as f64) * wp.arg()))
            .sum();
        for (t, o) in naive.iter_mut().enumerate() {
            *o += (khat
                * C64::from_polar(1.0, 2.0 * std::f64::consts::PI * (k * t) as f64 / l as f64))
            .re / l as f64;
        }
    }
    let circ = HopeKernel::circular_kernel(&h, dt, l);
    assert!(max_diff(&circ, &naive) < 1e-12 * max_abs(&naive));
    let long = HopeKernel::causal_kernel(&h, dt, 40 * l);
    let mut aliased = vec![0.0; l];
    for (i, v) in long.iter().enumerate() {
        aliased[i % l] += v;
    }
    assert!(max_diff(&circ, &aliased) < 1e-10 * max_abs(&circ));
}

#[test]
fn hope_step_equals_convolution_and_circular_has_no_step() {
    let cfg = ModelConfig {
        dt_min: 0.05,
        dt_max: 0.5,
        ..model_cfg(LayerKind::Hope)
    };
    let (e64, e32) = step_vs_conv(&cfg, 200, 23);
    eprintln!("HOPE causal: step vs conv {e64:.1e} (f64), {e32:.1e} (f32)");
    assert!(e64 <= 1e-9 && e32 <= 1e-4, "{e64:e} {e32:e}");
    let mut store = ParamStore::<f64>::new();
    let kern = HopeKernel::new(
        &mut store,
        "k",
        hope_cfg(2, 4, HopeMode::Circular, false),
        &mut rng(0),
    )
    .unwrap();
    let err = <HopeKernel as SequenceKernel<f64>>::stepper(&kern, &store)
        .err()
        .unwrap();
    assert!(matches!(err, statespace_core::Error::Unsupported(_)));
    assert!(err.to_string().contains("circular"));
}

// ---------------------------------------------------------------- S5

use statespace_core::kernels::discretize::Disc;
use statespace_core::kernels::s5::{S5Config, S5Layer, S5Options, Scan, block_legs};

fn s5_cfg(h: usize, p: usize, blocks: usize, scan: Scan, disc: Disc, bi: bool) -> S5Config {
    S5Config {
        channels: h,
        state_size: p,
        disc,
        dt_min: 0.01,
        dt_max: 0.2,
        bidirectional: bi,
        opts: S5Options {
            blocks,
            scan,
            step_rescale: 1.0,
        },
        init: None,
    }
}

#[test]
fn s5_gradients() {
    for (scan, disc, bi, blocks) in [
        (Scan::Recurrence, Disc::Zoh, false, 1),
        (Scan::Associative, Disc::Bilinear, true, 2),
        (Scan::Associative, Disc::Zoh, false, 1),
    ] {
        let mut r = rng(51);
        let (b, h, p, l) = (2, 3, 8, 23);
        let mut store = ParamStore::<f64>::new();
        let mut s5 = S5Layer::new(
            &mut store,
            "s5",
            s5_cfg(h, p, blocks, scan, disc, bi),
            &mut r,
        )
        .unwrap();
        check_map_gradients(&mut s5, &mut store, b, l, 100, 1e-4, &mut r);
    }
}

#[test]
fn s5_equals_the_dense_zoh_system_it_diagonalizes() {
    // With one Δ for every state, S5 at init is the real system (blockdiag LegS normal parts, B, C)
    // with B = 2·Re(V B̃), C = 2·Re(C̃ Vᴴ), discretized by dense ZOH (expm) in the math core.
    let (h, p, blocks, l, dt) = (3, 8, 2, 60, 0.07f64);
    let mut store = ParamStore::<f64>::new();
    let mut s5 = S5Layer::new(
        &mut store,
        "s5",
        s5_cfg(h, p, blocks, Scan::Recurrence, Disc::Zoh, false),
        &mut rng(52),
    )
    .unwrap();
    let id = store.find("s5.log_dt").unwrap();
    store.params[id].value.iter_mut().for_each(|v| *v = dt.ln());
    let init = block_legs(p, blocks).unwrap();
    let m = p / 2;
    let v = |n: &str| store.value(store.find(n).unwrap()).to_vec();
    let (br, bi, cr, ci) = (v("s5.b_re"), v("s5.b_im"), v("s5.c_re"), v("s5.c_im"));
    let bmat: Vec<f64> = (0..p * h)
        .map(|k| {
            let (r, c) = (k / h, k % h);
            (0..m)
                .map(|i| init.v[r * m + i] * C64::new(br[i * h + c], bi[i * h + c]))
                .sum::<C64>()
                .re
                * 2.0
        })
        .collect();
    let cmat: Vec<f64> = (0..h * p)
        .map(|k| {
            let (c, r) = (k / p, k % p);
            (0..m)
                .map(|i| C64::new(cr[c * m + i], ci[c * m + i]) * init.v[r * m + i].conj())
                .sum::<C64>()
                .re
                * 2.0
        })
        .collect();
    let bs = p / blocks;
    let (a1, _) =
        statespace_math::hippo::transition(statespace_math::hippo::Measure::LegS, bs).unwrap();
    let p1 = statespace_math::hippo::low_rank(statespace_math::hippo::Measure::LegS, bs).unwrap();
    let s1 = statespace_math::hippo::normal_part(&a1, &p1);
    let a = faer::Mat::from_fn(p, p, |i, j| {
        if i / bs == j / bs {
            s1[(i % bs, j % bs)]
        } else {
            0.0
        }
    });
    let u = randn(h * l, &mut rng(53));
    let mut y = Vec::new();
    s5.forward(&store, &u, 1, l, &mut y);
    // dense reference, one input channel at a time (ZOH is linear in B)
    let mut want = vec![0.0; h * l];
    for cin in 0..h {
        let bcol: Vec<f64> = (0..p).map(|r| bmat[r * h + cin]).collect();
        let (abar, bbar) = statespace_math::discretize::dense_zoh(&a, &bcol, dt).unwrap();
        let mut x = vec![0.0; p];
        for t in 0..l {
            let nx: Vec<f64> = (0..p)
                .map(|i| {
                    (0..p).map(|j| abar[(i, j)] * x[j]).sum::<f64>() + bbar[i] * u[cin * l + t]
                })
                .collect();
            x = nx;
            for c in 0..h {
                want[c * l + t] += (0..p).map(|r| cmat[c * p + r] * x[r]).sum::<f64>();
            }
        }
    }
    let err = max_diff(&y, &want);
    assert!(err <= 1e-10 * max_abs(&want), "S5 vs dense ZOH: {err:e}");
}

#[test]
fn s5_scan_equals_recurrence_in_f32() {
    let (b, h, p, l) = (2, 8, 32, 4096);
    let mut outs = Vec::new();
    for scan in [Scan::Recurrence, Scan::Associative] {
        let mut store = ParamStore::<f32>::new();
        let mut s5 = S5Layer::new(
            &mut store,
            "s5",
            S5Config {
                dt_min: 1e-3,
                dt_max: 1e-1,
                ..s5_cfg(h, p, 4, scan, Disc::Zoh, true)
            },
            &mut rng(54),
        )
        .unwrap();
        let u: Vec<f32> = randn(b * h * l, &mut rng(55))
            .iter()
            .map(|v| *v as f32)
            .collect();
        let mut y = Vec::new();
        s5.forward(&store, &u, b, l, &mut y);
        let g: Vec<f32> = randn(b * h * l, &mut rng(56))
            .iter()
            .map(|v| *v as f32)
            .collect();
        let mut du = Vec::new();
        s5.backward(&mut store, &g, &mut du);
        let grads: Vec<f64> = store
            .params
            .iter()
            .flat_map(|p| p.grad.iter().map(|v| *v as f64))
            .collect();
        outs.push((
            y.iter().map(|v| *v as f64).collect::<Vec<_>>(),
            du.iter().map(|v| *v as f64).collect::<Vec<_>>(),
            grads,
        ));
    }
    let rel = |a: &[f64], b: &[f64]| max_diff(a, b) / max_abs(b);
    let (ry, rdu, rg) = (
        rel(&outs[1].0, &outs[0].0),
        rel(&outs[1].1, &outs[0].1),
        rel(&outs[1].2, &outs[0].2),
    );
    eprintln!("S5 f32 L=4096: scan vs recurrence y {ry:.1e}, du {rdu:.1e}, grads {rg:.1e}");
    assert!(
        ry <= 1e-5 && rdu <= 1e-5 && rg <= 1e-4,
        "{ry:e} {rdu:e} {rg:e}"
    );
}

#[test]
fn s5_step_equals_convolution() {
    for scan in [Scan::Recurrence, Scan::Associative] {
        let cfg = ModelConfig {
            s5: S5Options {
                blocks: 2,
                scan,
                step_rescale: 1.0,
            },
            ..model_cfg(LayerKind::S5)
        };
        let (e64, e32) = step_vs_conv(&cfg, 200, 24);
        eprintln!("S5 {scan:?}: step vs scan {e64:.1e} (f64), {e32:.1e} (f32)");
        assert!(e64 <= 1e-9 && e32 <= 1e-4, "{e64:e} {e32:e}");
    }
}

// ---------------------------------------------------------------- PTD

#[test]
fn ptd_layers_step_equals_convolution_and_train_through_the_generic_paths() {
    for kind in [LayerKind::S4Ptd, LayerKind::S5Ptd] {
        let cfg = model_cfg(kind);
        let (e64, e32) = step_vs_conv(&cfg, 150, 25);
        eprintln!("{kind:?}: step vs conv {e64:.1e} (f64), {e32:.1e} (f32)");
        assert!(e64 <= 1e-9 && e32 <= 1e-4, "{e64:e} {e32:e}");
    }
    // S4-PTD's modes are those of A_LegS + E: B̃ = V⁻¹B reproduces C(sI − A − E)⁻¹B with C = V's rows
    let d = statespace_core::kernels::ptd::legs(8).unwrap();
    assert!(d.cond < 1e3, "cond(V) = {}", d.cond);
    assert!(d.lambda.iter().all(|l| l.re < 0.0));
}

/// Every shipped PTD file, re-verified: its cond(V), ‖E‖₂/‖A‖₂ and max Re λ recomputed by a fresh
/// eigendecomposition and SVD of A + E against its metadata, the claims they carry (within the 5 %
/// budget; cond(V) ≤ 10 at N = 64, far below a random E of the same norm), and the layer's modes.
#[test]
fn shipped_ptd_files_match_their_metadata_and_their_claims() {
    use statespace_core::kernels::ptd as kptd;
    use statespace_math::hippo::{self, Measure};
    use statespace_math::linalg::{CMat, norm2};
    use statespace_math::ptd::eig_complex;
    let sizes = kptd::shipped_sizes();
    // every N the shipped configs use: s4-ptd d_state, s5-ptd d_state / blocks
    for n in [2, 4, 16, 32, 64, 128] {
        assert!(sizes.contains(&n), "N = {n} does not ship");
    }
    for n in sizes {
        let f = kptd::shipped(n).unwrap().unwrap();
        assert_eq!(f.n, n);
        let (a, _) = hippo::transition(Measure::LegS, n).unwrap();
        let ae = CMat::from_fn(n, n, |i, j| f.e[(i, j)] + a[(i, j)]);
        let eig = eig_complex(&ae).unwrap();
        let en =
            f.e.singular_values()
                .unwrap()
                .iter()
                .fold(0.0f64, |m, x| m.max(*x));
        let rel = en / norm2(&a).unwrap();
        let max_re = eig
            .lambda
            .iter()
            .fold(f64::NEG_INFINITY, |m, l| m.max(l.re));
        let close = |x: f64, key: &str, tol: f64| {
            let stored = f.number(key).unwrap_or_else(|| panic!("N = {n}: no {key}"));
            assert!(
                (x - stored).abs() <= tol * (1.0 + stored.abs()),
                "N = {n}: {key} recomputed {x}, stored {stored}"
            );
        };
        close(eig.cond, "cond_v", 1e-6);
        close(rel, "rel_norm", 1e-9);
        close(max_re, "max_re_lambda", 1e-6);
        eprintln!(
            "N = {n}: cond(V) = {:.2}, ‖E‖₂/‖A‖₂ = {rel:.4}, max Re λ = {max_re:.3e}",
            eig.cond
        );
        // the search's constraints: the 3.4 % budget, every eigenvalue at Re λ ≤ −0.5 (S4D-LegS's
        // own real part: the layer flips nothing and no pole sits near the imaginary axis), and at
        // N = 64 the conditioning the paper's own E reaches (9.2) beaten
        assert!(rel <= 0.034 * (1.0 + 1e-9), "N = {n}: ‖E‖/‖A‖ = {rel}");
        assert!(max_re <= -0.5 + 1e-9, "N = {n}: max Re λ = {max_re}");
        if n == 64 {
            assert!(eig.cond <= 9.0, "cond(V) = {}", eig.cond);
        }
        if n >= 16 {
            // a random complex E of the same norm conditions far worse
            let mut r = rng(2);
            use rand::Rng;
            let rnd = CMat::from_fn(n, n, |_, _| {
                C64::new(r.random_range(-1.0..1.0), r.random_range(-1.0..1.0))
            });
            let rs = rnd
                .singular_values()
                .unwrap()
                .iter()
                .fold(0.0f64, |m, x| m.max(*x));
            let ar = CMat::from_fn(n, n, |i, j| rnd[(i, j)] * (en / rs) + a[(i, j)]);
            let random = eig_complex(&ar).unwrap().cond;
            assert!(3.0 * eig.cond < random, "{} vs random {random}", eig.cond);
        }
        // the layer's modes: all N, exactly the eigenvalues of A + E (none flipped)
        let d = kptd::legs(n).unwrap();
        assert_eq!(d.lambda.len(), n);
        let mut mine: Vec<C64> = d.lambda.clone();
        let mut theirs: Vec<C64> = eig.lambda.clone();
        for v in [&mut mine, &mut theirs] {
            v.sort_by(|x, y| x.im.total_cmp(&y.im).then(x.re.total_cmp(&y.re)));
        }
        for (x, y) in mine.iter().zip(&theirs) {
            assert!(
                (x - y).norm() <= 1e-8 * (1.0 + y.norm()),
                "N = {n}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn the_search_reproduces_the_shipped_perturbations_and_bad_files_are_named() {
    use statespace_core::kernels::ptd as kptd;
    // N = 4 and 16 search in seconds: the search, rerun here, returns the shipped E (N = 4, a small
    // problem with one optimum) or one of the same quality (N = 16). faer's kernels run on the
    // widest instruction set the CPU has, and 20000 Adam steps on the non-convex cond(V) amplify
    // the AVX2 / AVX-512 rounding difference into another local optimum: measured here, N = 16
    // reaches cond 8.10 where the shipped file (searched on AVX2 kernels) has 7.84, both at the
    // norm bound 3.4 % and under the 9.0 target.
    for n in [4, 16] {
        let f = kptd::shipped(n).unwrap().unwrap();
        let opts = statespace_math::ptd::PtdOptions::default();
        let p = statespace_math::ptd::legs_perturbation(n, &opts, None, |_, _| {}).unwrap();
        let scale = f.e.singular_values().unwrap()[0];
        let mut worst = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                worst = worst.max((p.e[(i, j)] - f.e[(i, j)]).norm());
            }
        }
        if n == 4 {
            assert!(
                worst <= 1e-6 * scale,
                "N = {n}: searched E differs by {worst:e}"
            );
        }
        let (cond, rel) = (f.number("cond_v").unwrap(), f.number("rel_norm").unwrap());
        let max_rel = opts.max_rel_norm.unwrap();
        let target = opts.target_cond.unwrap();
        assert!(
            (p.rel_norm - rel).abs() < 1e-9 && rel <= max_rel + 1e-12,
            "N = {n}: ‖E‖/‖A‖ {} vs the file's {rel}",
            p.rel_norm
        );
        assert!(
            (p.cond - cond).abs() <= 0.1 * cond && p.cond <= target && cond <= target,
            "N = {n}: searched cond(V) {} vs the file's {cond} (target {target})",
            p.cond
        );
        assert_eq!(
            f.meta["options"],
            format!("{:?}", statespace_math::ptd::PtdOptions::default())
        );
    }
    // a PTD file round-trips, and damaged ones are errors naming the file
    let f = kptd::shipped(4).unwrap().unwrap();
    let opts = statespace_math::ptd::PtdOptions::default();
    let bytes = kptd::encode_ptd(&f.e, &opts, 5.0, 0.05, -0.3).unwrap();
    let path = std::path::Path::new("x.safetensors");
    let back = kptd::decode_ptd(path, &bytes).unwrap();
    assert_eq!(back.e, f.e);
    assert_eq!(back.number("cond_v"), Some(5.0));
    for bad in [&bytes[..bytes.len() - 8], &b"garbage"[..]] {
        let e = kptd::decode_ptd(path, bad).unwrap_err().to_string();
        assert!(e.contains("x.safetensors"), "{e}");
    }
    let other = statespace_core::engine::checkpoint::encode::<f64>(
        &[("e_re".into(), vec![1], &[0.0][..])],
        &[("format".to_string(), "statespace-checkpoint-1".to_string())]
            .into_iter()
            .collect(),
    )
    .unwrap();
    let e = kptd::decode_ptd(path, &other).unwrap_err().to_string();
    assert!(e.contains("statespace-ptd-1"), "{e}");
}

// ---- S4D ------------------------------------------------------------------------------------

use statespace_core::kernels::Convolution;
use statespace_core::kernels::s4d::{S4dConfig, S4dKernel};
use statespace_math::s4d::DiagInit;

fn s4d_check(disc: Disc, bidirectional: bool, init: DiagInit, l: usize) {
    let mut r = rng(6);
    let (h, n) = (3, 8);
    let mut store = ParamStore::<f64>::new();
    let cfg = S4dConfig {
        channels: h,
        state_size: n,
        init,
        disc,
        dt_min: 0.01,
        dt_max: 0.5,
        bidirectional,
        custom: None,
    };
    let mut kern = S4dKernel::new(&mut store, "k", cfg, &mut r).unwrap();
    // non-trivial B
    let bre = store.find("k.b_re").unwrap();
    store.params[bre].value = randn(h * n / 2, &mut r);
    let bim = store.find("k.b_im").unwrap();
    store.params[bim].value = randn(h * n / 2, &mut r);
    check_kernel_gradients(&mut kern, &mut store, l, 100, 1e-4, &mut r);
}

#[test]
fn s4d_kernel_gradients() {
    s4d_check(Disc::Zoh, false, DiagInit::LegS, 40);
    s4d_check(Disc::Bilinear, false, DiagInit::Inv, 40);
    s4d_check(Disc::Zoh, true, DiagInit::Lin, 40);
}

#[test]
fn s4d_kernel_matches_the_math_core() {
    // The engine's S4D kernel equals statespace-math's Vandermonde kernel of the same system.
    let mut r = rng(7);
    let (h, n, l) = (2, 16, 300);
    for disc in [Disc::Zoh, Disc::Bilinear] {
        let mut store = ParamStore::<f64>::new();
        let cfg = S4dConfig {
            channels: h,
            state_size: n,
            init: DiagInit::Inv,
            disc,
            dt_min: 0.01,
            dt_max: 0.1,
            bidirectional: false,
            custom: None,
        };
        let mut kern = S4dKernel::new(&mut store, "k", cfg, &mut r).unwrap();
        let mut k = Vec::new();
        kern.forward(&store, l, &mut k);
        let v = |name: &str| store.value(store.find(name).unwrap()).to_vec();
        let (ldt, lar, ai, cre, cim) = (
            v("k.log_dt"),
            v("k.log_a_real"),
            v("k.a_imag"),
            v("k.c_re"),
            v("k.c_im"),
        );
        for c in 0..h {
            let m = n / 2;
            let sys = statespace_math::kernel::DiagonalSystem {
                lambda: (0..m)
                    .map(|j| num_complex::Complex64::new(-lar[c * m + j].exp(), ai[c * m + j]))
                    .collect(),
                b: vec![num_complex::Complex64::new(1.0, 0.0); m],
                c: (0..m)
                    .map(|j| num_complex::Complex64::new(cre[c * m + j], cim[c * m + j]))
                    .collect(),
            };
            let d = if disc == Disc::Zoh {
                statespace_math::discretize::Discretization::Zoh
            } else {
                statespace_math::discretize::Discretization::Bilinear
            };
            let want = sys.kernel(ldt[c].exp(), d, l).unwrap();
            let got = &k[c * l..(c + 1) * l];
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert!(err < 1e-12 * scale, "{disc:?} channel {c}: {err:e}");
        }
    }
}

#[test]
fn s4d_kernel_gradients_at_lengths_off_the_chunk_grid() {
    // the blocked kernel pads L up to a multiple of its chunk; lengths just off the grid and long
    // enough for several anchors of the in-chunk and chunk powers
    for l in [37, 1, 300] {
        s4d_check(Disc::Zoh, true, DiagInit::Inv, l);
    }
}

#[test]
fn s4d_f32_kernel_is_at_least_as_accurate_as_the_plain_f32_formula() {
    // The shape per channel (64 complex modes, L = 4096; S4D-Lin phases reach 8e4 rad):
    // the fused f32 kernel against the f64 Vandermonde reference of statespace-math, next to the
    // plain f32 formula K_l = 2 Re Σ c̃ exp(l·z) evaluated in f32.
    let (h, n, l) = (4, 128, 4096);
    let m = n / 2;
    let mut store = ParamStore::<f32>::new();
    let cfg = S4dConfig {
        channels: h,
        state_size: n,
        init: DiagInit::Lin,
        disc: Disc::Zoh,
        dt_min: 1e-3,
        dt_max: 1e-1,
        bidirectional: false,
        custom: None,
    };
    let mut kern = S4dKernel::new(&mut store, "k", cfg, &mut rng(9)).unwrap();
    let mut k = Vec::new();
    kern.forward(&store, l, &mut k);
    let v = |name: &str| -> Vec<f64> {
        store
            .value(store.find(name).unwrap())
            .iter()
            .map(|x| *x as f64)
            .collect()
    };
    let (ldt, lar, ai, cre, cim) = (
        v("k.log_dt"),
        v("k.log_a_real"),
        v("k.a_imag"),
        v("k.c_re"),
        v("k.c_im"),
    );
    let (mut worst_fused, mut worst_plain) = (0.0f64, 0.0f64);
    for c in 0..h {
        let lambda: Vec<C64> = (0..m)
            .map(|j| C64::new(-lar[c * m + j].exp(), ai[c * m + j]))
            .collect();
        let cc: Vec<C64> = (0..m)
            .map(|j| C64::new(cre[c * m + j], cim[c * m + j]))
            .collect();
        let dt = ldt[c].exp();
        let sys = statespace_math::kernel::DiagonalSystem {
            lambda: lambda.clone(),
            b: vec![C64::new(1.0, 0.0); m],
            c: cc.clone(),
        };
        let want = sys
            .kernel(dt, statespace_math::discretize::Discretization::Zoh, l)
            .unwrap();
        let scale = want.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        // plain f32: z = Δλ, c̃ = C (e^z − 1)/λ, K_l = 2 Re Σ c̃ e^{l z}, all in f32
        let zs: Vec<(f32, f32)> = lambda
            .iter()
            .map(|a| ((a.re * dt) as f32, (a.im * dt) as f32))
            .collect();
        let cts: Vec<(f32, f32)> = lambda
            .iter()
            .zip(&cc)
            .map(|(a, c)| {
                let z = a * dt;
                let t = c * (z.exp() - 1.0) / a;
                (t.re as f32, t.im as f32)
            })
            .collect();
        for (i, w) in want.iter().enumerate() {
            let lf = i as f32;
            let plain: f32 = zs
                .iter()
                .zip(&cts)
                .map(|(&(zr, zi), &(cr, ci))| {
                    let mag = (zr * lf).exp();
                    let (s, co) = (zi * lf).sin_cos();
                    2.0 * mag * (cr * co - ci * s)
                })
                .sum();
            worst_plain = worst_plain.max((plain as f64 - w).abs() / scale);
            worst_fused = worst_fused.max((k[c * l + i] as f64 - w).abs() / scale);
        }
    }
    eprintln!(
        "max |K − K_f64| / max |K_f64|: fused f32 {worst_fused:.2e}, plain f32 {worst_plain:.2e}"
    );
    assert!(
        worst_fused <= worst_plain,
        "fused {worst_fused:e} vs plain {worst_plain:e}"
    );
    assert!(worst_fused < 1e-5, "fused {worst_fused:e}");
}

#[test]
fn s4d_kernel_trait_object_directions() {
    let mut store = ParamStore::<f32>::new();
    let cfg = S4dConfig {
        channels: 2,
        state_size: 4,
        init: DiagInit::Lin,
        disc: Disc::Zoh,
        dt_min: 0.01,
        dt_max: 0.1,
        bidirectional: true,
        custom: None,
    };
    let k: Box<dyn SequenceKernel<f32>> =
        Box::new(S4dKernel::new(&mut store, "k", cfg, &mut rng(0)).unwrap());
    assert_eq!(k.directions(), 2);
    assert_eq!(k.channels(), 2);
}

#[test]
fn convolution_of_a_kernel_gradients_in_both_directions() {
    // the FFT convolution of an S4D kernel as a sequence map: padding to 2L, the folded reverse
    // direction and the sliced gradient, against finite differences of the whole map
    for bidirectional in [false, true] {
        let mut r = rng(8);
        let mut store = ParamStore::<f64>::new();
        let cfg = S4dConfig {
            channels: 3,
            state_size: 8,
            init: DiagInit::Lin,
            disc: Disc::Zoh,
            dt_min: 0.01,
            dt_max: 0.5,
            bidirectional,
            custom: None,
        };
        let kern = S4dKernel::new(&mut store, "k", cfg, &mut r).unwrap();
        let mut conv = Convolution::new(Box::new(kern));
        check_map_gradients(&mut conv, &mut store, 2, 29, 100, 1e-4, &mut r);
    }
}
