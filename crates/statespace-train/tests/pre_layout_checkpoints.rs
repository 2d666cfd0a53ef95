//! The checkpoint contract (docs/checkpoint-format.md) across the layout change: run directories
//! trained by the code before it (commit 7ac8018, `tests/fixtures/pre-layout/*`, one per kind plus a
//! BatchNorm / post-norm / bilinear model on real inputs) load into today's models, every stored
//! tensor finds its parameter or buffer, and the test loss the run recorded in its metrics.jsonl is
//! reproduced.

use statespace_core::engine::checkpoint;
use std::collections::BTreeSet;
use std::path::Path;

const RUNS: [&str; 6] = [
    "s4d",
    "s4-legt",
    "s5-bidir",
    "sgconv",
    "hope",
    "s4d-batchnorm-adding",
];

/// The `{test_loss, test_acc}` line the training run wrote.
fn recorded_test(dir: &Path) -> (f64, Option<f64>) {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("test_loss").is_some())
        .unwrap_or_else(|| panic!("{}: no test line", dir.display()));
    (
        line["test_loss"].as_f64().unwrap(),
        line["test_acc"].as_f64(),
    )
}

#[test]
fn checkpoints_written_before_the_layout_change_load_and_score_the_same() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-layout");
    for run in RUNS {
        let dir = root.join(run);
        let (want_loss, want_acc) = recorded_test(&dir);
        let (_, score) =
            statespace_train::eval_checkpoint(&dir, None).unwrap_or_else(|e| panic!("{run}: {e}"));
        assert!(
            (score.loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0),
            "{run}: test loss {} now, {want_loss} when trained",
            score.loss
        );
        match (score.acc, want_acc) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{run}: accuracy {a} vs {b}"),
            (None, None) => {}
            other => panic!("{run}: accuracy {other:?}"),
        }
        // every tensor of best.safetensors is a parameter or buffer of the model, and back
        let (_, model, _) = statespace_train::load_model(&dir, None).unwrap();
        let mut want: BTreeSet<String> =
            model.store.params.iter().map(|p| p.name.clone()).collect();
        want.extend(model.buffers().into_iter().map(|(n, _)| n));
        let best = checkpoint::load::<f32>(&dir.join("best.safetensors")).unwrap();
        let have: BTreeSet<String> = best.tensors.keys().cloned().collect();
        assert_eq!(have, want, "{run}: tensor names");
        // last.safetensors holds the AdamW moments of every parameter, shaped like it
        let last = checkpoint::load::<f32>(&dir.join("last.safetensors")).unwrap();
        for p in &model.store.params {
            for key in ["m", "v"] {
                let t = &last.tensors[&format!("optim.{key}.{}", p.name)];
                assert_eq!(t.shape, p.shape, "{run}: optim.{key}.{}", p.name);
            }
        }
    }
}
