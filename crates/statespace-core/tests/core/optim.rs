//! The optimizer and schedule against their formulas, and checkpoint files.

use statespace_core::engine::checkpoint;
use statespace_core::engine::optim::{self, AdamW, GroupConfig, OptimConfig, Setting};
use statespace_core::engine::params::{ParamKind, ParamStore};

#[test]
fn adamw_matches_the_formula() {
    let mut store = ParamStore::<f64>::new();
    let w = store.add("w", &[2], vec![1.0, -2.0], ParamKind::Weight);
    let b = store.add("b", &[1], vec![0.5], ParamKind::NoDecay);
    let a = store.add("a", &[1], vec![0.3], ParamKind::SsmA);
    let cfg = OptimConfig {
        lr: 0.1,
        weight_decay: 0.01,
        ssm_a: GroupConfig {
            lr: Setting::Value(1e-3),
            weight_decay: Setting::Value(0.0),
        },
        ssm_b: GroupConfig::default(),
        ssm_dt: GroupConfig::default(),
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut opt = AdamW::new(&store);
    let grads = [[0.5, -1.0], [2.0, 0.0], [0.25, 0.0]];
    let mut theta = 1.0f64; // track w[0] by hand
    let (mut m, mut v) = (0.0f64, 0.0f64);
    for (t, g) in (1..=3).zip([0.5, -0.3, 0.2]) {
        store.params[w].grad = vec![g, grads[0][1]];
        store.params[b].grad = vec![grads[1][0]];
        store.params[a].grad = vec![grads[2][0]];
        opt.step(&mut store, &cfg, 0.5);
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        let lr = 0.1 * 0.5;
        theta = theta * (1.0 - lr * 0.01)
            - lr * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
        assert!((store.params[w].value[0] - theta).abs() < 1e-14, "step {t}");
    }
    // the SSM group uses its own lr (1e-3 × schedule 0.5): three steps move it by at most 3 × 5e-4
    assert!(
        store.params[a].value[0] < 0.3 && store.params[a].value[0] > 0.3 - 3.0 * 1e-3 * 0.5 - 1e-12
    );
    assert_eq!(cfg.group(ParamKind::NoDecay), (0.1, 0.0));
    assert_eq!(cfg.group(ParamKind::SsmA), (1e-3, 0.0));
    let global = OptimConfig {
        ssm_b: GroupConfig {
            lr: toml_setting("\"global\""),
            weight_decay: toml_setting("\"global\""),
        },
        ..cfg.clone()
    };
    assert_eq!(global.group(ParamKind::SsmB), (0.1, 0.01));
}

fn toml_setting(v: &str) -> Setting {
    #[derive(serde::Deserialize)]
    struct W {
        v: Setting,
    }
    toml::from_str::<W>(&format!("v = {v}")).unwrap().v
}

#[test]
fn schedule_and_clipping() {
    assert!((optim::schedule(0, 10, 110, 0.0) - 0.1).abs() < 1e-15);
    assert!((optim::schedule(9, 10, 110, 0.0) - 1.0).abs() < 1e-15);
    assert!((optim::schedule(10, 10, 110, 0.0) - 1.0).abs() < 1e-15);
    assert!((optim::schedule(60, 10, 110, 0.0) - 0.5).abs() < 1e-12);
    assert!((optim::schedule(110, 10, 110, 0.2) - 0.2).abs() < 1e-12);
    let mut store = ParamStore::<f64>::new();
    let p = store.add("p", &[2], vec![0.0, 0.0], ParamKind::Weight);
    store.params[p].grad = vec![3.0, 4.0];
    let n = optim::clip_grad_norm(&mut store, 1.0);
    assert_eq!(n, 5.0);
    assert!(
        (store.params[p].grad[0] - 0.6).abs() < 1e-12
            && (store.params[p].grad[1] - 0.8).abs() < 1e-12
    );
}

#[test]
fn checkpoints_round_trip_and_reject_damage() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    let a = [1.5f32, -2.0, 3.25];
    let mut meta = std::collections::HashMap::new();
    meta.insert("k".to_string(), "v".to_string());
    checkpoint::save::<f32>(&p, &[("x".into(), vec![3], &a[..])], meta).unwrap();
    let l = checkpoint::load::<f32>(&p).unwrap();
    assert_eq!(l.tensors["x"].data, a.to_vec());
    assert_eq!(l.tensors["x"].shape, vec![3]);
    assert_eq!(l.meta["k"], "v");
    // the safetensors layout: u64 header length, JSON header with dtype F32
    let raw = std::fs::read(&p).unwrap();
    let hl = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&raw[8..8 + hl]).unwrap();
    assert!(header.contains("\"F32\"") && header.contains("__metadata__"));
    std::fs::write(&p, &raw[..raw.len() - 5]).unwrap();
    let e = checkpoint::load::<f32>(&p).unwrap_err();
    assert!(matches!(e, statespace_core::Error::File { .. }), "{e}");
    assert!(e.to_string().contains("c.safetensors"), "{e}");
    std::fs::write(&p, b"garbage").unwrap();
    assert!(
        checkpoint::load::<f32>(&p)
            .unwrap_err()
            .to_string()
            .contains("c.safetensors")
    );
}

#[test]
fn checkpoint_bytes_are_a_function_of_the_contents() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], vec![-0.5f32]);
    let tensors = vec![
        ("zeta".to_string(), vec![2, 3], &a[..]),
        ("alpha".to_string(), vec![1], &b[..]),
    ];
    let pairs: Vec<(String, String)> = (0..12)
        .map(|i| (format!("key{i}"), format!("value {i}")))
        .chain([(
            "config".to_string(),
            "{\"a\": \"q\\\"\\n\u{1}é\"}".to_string(),
        )])
        .collect();
    // the same metadata inserted in two orders (HashMaps iterate in different orders)
    let m1: std::collections::HashMap<_, _> = pairs.iter().cloned().collect();
    let m2: std::collections::HashMap<_, _> = pairs.iter().rev().cloned().collect();
    let (p1, p2) = (
        dir.path().join("1.safetensors"),
        dir.path().join("2.safetensors"),
    );
    checkpoint::save::<f32>(&p1, &tensors, m1.clone()).unwrap();
    let rev: Vec<_> = tensors.iter().rev().cloned().collect();
    checkpoint::save::<f32>(&p2, &rev, m2).unwrap();
    let (r1, r2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    assert_eq!(r1, r2, "same contents, different bytes");
    // standard safetensors: the header length, an 8-byte aligned data start, and the reader agrees
    let hl = u64::from_le_bytes(r1[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + hl) % 8, 0);
    assert_eq!(r1.len(), 8 + hl + 4 * (a.len() + b.len()));
    let l = checkpoint::load::<f32>(&p1).unwrap();
    assert_eq!(l.meta, m1);
    assert_eq!(l.tensors["zeta"].data, a);
    assert_eq!(l.tensors["zeta"].shape, vec![2, 3]);
    assert_eq!(l.tensors["alpha"].data, b);
    // a tensor given twice, or a shape that does not match its values, is an error naming it
    let twice = vec![tensors[0].clone(), tensors[0].clone()];
    let e = checkpoint::save::<f32>(&p1, &twice, Default::default()).unwrap_err();
    assert!(e.to_string().contains("zeta"), "{e}");
    let bad = vec![("x".to_string(), vec![4], &b[..])];
    let e = checkpoint::save::<f32>(&p1, &bad, Default::default()).unwrap_err();
    assert!(e.to_string().contains("tensor x"), "{e}");
}
