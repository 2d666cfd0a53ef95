//! Run configs (parsing, validation, overrides) and a short training run that must learn.

use statespace_core::engine::optim::Setting;
use statespace_core::engine::params::ParamKind;
use statespace_train::{self as train, RunConfig};

fn cfg_text(extra_train: &str) -> String {
    format!(
        r#"
[task]
name = "copying"
copy_tokens = 3
blanks = 12
alphabet = 6
train_size = 960
val_size = 96
test_size = 96

[model]
d_model = 24
n_layers = 1
d_state = 8
pool = "none"

[train]
epochs = 6
batch_size = 16
lr = 0.01
weight_decay = 0.0
warmup_steps = 10
threads = 2
checkpoint_every = 25
{extra_train}
"#
    )
}

#[test]
fn config_parsing_validation_and_overrides() {
    let cfg = RunConfig::from_toml(&cfg_text("")).unwrap();
    assert_eq!(cfg.train.ssm_a.lr, Setting::Value(1e-3));
    let e = RunConfig::from_toml(&cfg_text("colour = 3")).unwrap_err();
    assert!(e.contains("colour"), "{e}");
    let e = RunConfig::from_toml(&cfg_text("batch_size = 0")).unwrap_err();
    assert!(e.contains("batch_size"), "{e}");
    let e = RunConfig::from_toml(&cfg_text("").replace("d_state = 8", "d_state = 7")).unwrap_err();
    assert!(e.contains("d_state"), "{e}");
    let e =
        RunConfig::from_toml(&cfg_text("lr = \"fast\"").replace("lr = 0.01\n", "")).unwrap_err();
    assert!(e.contains("lr"), "{e}");
    let o = cfg
        .with_overrides(&[
            "train.lr=0.004".into(),
            "model.init=\"inv\"".into(),
            "train.ssm_dt.lr=global".into(),
        ])
        .unwrap();
    assert_eq!(o.train.lr, 0.004);
    assert_eq!(o.model.init, statespace_core::model::Init::Inv);
    assert_eq!(o.optim().group(ParamKind::SsmDt).0, 0.004);
    assert!(
        cfg.with_overrides(&["train.nope=1".into()])
            .unwrap_err()
            .contains("nope")
    );
    assert!(cfg.with_overrides(&["no_equals".into()]).is_err());
}

#[test]
fn a_short_run_learns_copying_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::from_toml(&cfg_text("")).unwrap();
    let s = train::run(&cfg, dir.path(), false, None, true).unwrap();
    // chance is 1/4 per symbol; a working model copies most of them after a few hundred steps
    let acc = s.test.acc.unwrap();
    assert!(acc > 0.6, "test accuracy {acc}");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "best.safetensors",
        "last.safetensors",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let (c2, score) = train::eval_checkpoint(dir.path(), None).unwrap();
    assert_eq!(c2, cfg);
    assert!((score.acc.unwrap() - acc).abs() < 1e-12);
    // a second run into the same directory is refused
    assert!(
        train::run(&cfg, dir.path(), false, None, true)
            .unwrap_err()
            .contains("already holds a run")
    );
}

#[test]
fn a_locked_run_directory_is_refused_and_free_again_once_the_lock_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::from_toml(&cfg_text("max_steps = 3")).unwrap();
    let lock = train::RunLock::acquire(dir.path()).unwrap();
    let e = train::run(&cfg, dir.path(), false, None, true).unwrap_err();
    let holder = format!("process {} is writing this run", std::process::id());
    assert!(
        e.contains(&dir.path().display().to_string()) && e.contains(&holder),
        "{e}"
    );
    drop(lock);
    train::run(&cfg, dir.path(), false, None, true).unwrap();
}

#[test]
fn two_identical_runs_write_byte_identical_checkpoints() {
    let cfg = RunConfig::from_toml(&cfg_text("max_steps = 30")).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train::run(&cfg, a.path(), false, None, true).unwrap();
    train::run(&cfg, b.path(), false, None, true).unwrap();
    for f in ["best.safetensors", "last.safetensors"] {
        let (x, y) = (
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
        );
        assert!(x == y, "{f}: the two runs' files differ");
    }
}
