//! Run configs (parsing, validation, overrides) and a short training run that must learn.

use statespace_core::engine::optim::Setting;
use statespace_core::engine::params::ParamKind;
use statespace_train::{self as train, RunConfig};

#[global_allocator]
static ALLOC: train::memory::CountingAlloc = train::memory::CountingAlloc;

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
    let acc = s.test.unwrap().acc.unwrap();
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
    // no lock file: free, and checking creates none
    train::RunLock::check_free(dir.path()).unwrap();
    assert!(!dir.path().join(".lock").exists());
    let lock = train::RunLock::acquire(dir.path()).unwrap();
    let e = train::run(&cfg, dir.path(), false, None, true).unwrap_err();
    let holder = format!("process {} is writing this run", std::process::id());
    assert!(
        e.contains(&dir.path().display().to_string()) && e.contains(&holder),
        "{e}"
    );
    let e = train::RunLock::check_free(dir.path()).unwrap_err();
    assert!(e.contains(&holder), "{e}");
    drop(lock);
    train::RunLock::check_free(dir.path()).unwrap();
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

/// The test config with `path = value` (TOML) set in the file itself.
fn cfg_with(sets: &[(&str, &str)]) -> String {
    let mut doc: toml::Value = toml::from_str(&cfg_text("")).unwrap();
    for (path, value) in sets {
        let v: toml::Value =
            toml::from_str::<toml::Table>(&format!("v = {value}")).unwrap()["v"].clone();
        let parts: Vec<&str> = path.split('.').collect();
        let mut cur = &mut doc;
        for p in &parts[..parts.len() - 1] {
            cur = cur
                .as_table_mut()
                .unwrap()
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        cur.as_table_mut()
            .unwrap()
            .insert(parts[parts.len() - 1].to_string(), v);
    }
    toml::to_string(&doc).unwrap()
}

#[test]
fn every_validation_class_is_refused_naming_its_field() {
    for (path, value) in [
        ("train.weight_decay", "nan"),
        ("train.beta1", "1.0"),
        ("train.beta2", "1.5"),
        ("train.grad_clip", "-1.0"),
        ("train.lr", "inf"),
        ("train.eps", "0.0"),
        ("train.min_lr_ratio", "nan"),
        ("train.ssm_a.lr", "nan"),
        ("train.ssm_dt.weight_decay", "-0.1"),
        ("train.threads", "100000"),
        ("train.epochs", "100000000000"),
        ("train.eval_batch_size", "0"),
        ("train.batch_size", "100000000000"),
        ("train.nonfinite", "\"ignore\""),
        ("task.blanks", "100000000000"),
        ("task.train_size", "100000000000"),
        ("model.d_model", "10000000"),
        ("model.dropout", "1.0"),
        ("model.dt_max", "inf"),
        ("model.s5.step_rescale", "0.0"),
        ("model.sgconv.decay_min", "nan"),
    ] {
        let text = cfg_with(&[(path, value)]);
        let e = RunConfig::from_toml(&text).unwrap_err();
        let field = path.rsplit_once('.').map_or(path, |(_, f)| f);
        assert!(e.contains(field), "{path} = {value}: {e}");
    }
}

#[test]
fn a_field_the_kind_does_not_read_is_an_error_naming_the_kinds_that_do() {
    for (sets, field, users) in [
        (
            &[("model.kind", "\"s4\""), ("model.disc", "\"bilinear\"")][..],
            "model.disc",
            "s4d, s4-ptd, s5, s5-ptd",
        ),
        (
            &[("model.s5.blocks", "2")][..],
            "model.s5.blocks",
            "s5, s5-ptd",
        ),
        (
            &[("model.kind", "\"s5\""), ("model.init", "\"inv\"")][..],
            "model.init",
            "s4d, s4",
        ),
        (
            &[
                ("model.kind", "\"sgconv\""),
                ("model.d_state", "64"),
                ("model.dt_min", "0.0001"),
            ][..],
            "model.dt_min",
            "s4d",
        ),
        (&[("model.l_max", "100")][..], "model.l_max", "sgconv"),
        (
            &[("model.kind", "\"hope\""), ("model.step_mode", "\"dense\"")][..],
            "model.step_mode",
            "s4",
        ),
        (
            &[("model.hope.mode", "\"circular\"")][..],
            "model.hope.mode",
            "hope",
        ),
    ] {
        let e = RunConfig::from_toml(&cfg_with(sets)).unwrap_err();
        assert!(e.contains(field) && e.contains(users), "{sets:?}: {e}");
    }
    // config.toml writes every field: the written config of every kind parses again
    for kind in statespace_core::model::LayerKind::ALL {
        let mut cfg = RunConfig::from_toml(&cfg_text("")).unwrap();
        cfg.model = statespace_core::model::ModelConfig {
            kind,
            d_model: 24,
            n_layers: 1,
            ..Default::default()
        };
        let text = toml::to_string(&cfg).unwrap();
        let back = RunConfig::from_toml(&text).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(back, cfg);
    }
}

#[test]
fn set_errors_name_the_flag_not_a_line_of_a_generated_file() {
    let cfg = RunConfig::from_toml(&cfg_text("")).unwrap();
    let e = cfg.with_overrides(&["train.lr=fast".into()]).unwrap_err();
    assert!(
        e.contains("--set train.lr=fast") && !e.contains("line"),
        "{e}"
    );
    let e = cfg
        .with_overrides(&["train.lr=0.1".into(), "train.beta1=1".into()])
        .unwrap_err();
    assert!(
        e.contains("train.beta1") && e.contains("--set train.beta1=1"),
        "{e}"
    );
    let e = cfg.with_overrides(&["model.nope=3".into()]).unwrap_err();
    assert!(
        e.contains("--set model.nope=3") && e.contains("nope"),
        "{e}"
    );
}

fn metrics(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v
        })
        .collect()
}

fn run_stopping(
    cfg: &RunConfig,
    dir: &std::path::Path,
    resume: bool,
    stop: bool,
) -> train::Summary {
    let flag = std::sync::atomic::AtomicBool::new(stop);
    train::run_with(
        cfg,
        dir,
        &train::RunOptions {
            resume,
            data: None,
            progress: train::Progress::Silent,
            stop: Some(&flag),
            fault_steps: &[],
            stop_after: None,
            max_memory: None,
        },
    )
    .unwrap()
}

#[test]
fn a_run_stopped_at_any_step_resumes_to_the_same_metrics_lines_and_bytes() {
    // checkpoint_every = 7, log_every = 5: stops land inside logging windows, between
    // checkpoints, at a checkpoint (7, 14) and at a log line (5, 10, 15)
    let cfg = RunConfig::from_toml(
        &cfg_text("max_steps = 75\nlog_every = 5")
            .replace("checkpoint_every = 25", "checkpoint_every = 7"),
    )
    .unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole = run_stopping(&cfg, a.path(), false, false);
    assert_eq!(whole.outcome, train::Outcome::Finished);
    // stop after every one of the first 16 steps, then run to the end
    let s = run_stopping(&cfg, b.path(), false, true);
    assert_eq!((s.outcome, s.steps), (train::Outcome::Stopped, 1));
    for step in 2..=16 {
        let s = run_stopping(&cfg, b.path(), true, true);
        assert_eq!((s.outcome, s.steps), (train::Outcome::Stopped, step));
    }
    let s = run_stopping(&cfg, b.path(), true, false);
    assert_eq!(s.outcome, train::Outcome::Finished);
    let (ma, mb) = (metrics(a.path()), metrics(b.path()));
    assert_eq!(ma.len(), mb.len());
    for (i, (x, y)) in ma.iter().zip(&mb).enumerate() {
        assert_eq!(x, y, "metrics line {}", i + 1);
    }
    for f in ["best.safetensors", "last.safetensors"] {
        let (x, y) = (
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs");
    }
    // resuming the finished run does nothing
    let before = std::fs::read(b.path().join("metrics.jsonl")).unwrap();
    let again = run_stopping(&cfg, b.path(), true, false);
    assert_eq!(again.outcome, train::Outcome::AlreadyFinished);
    assert_eq!(again.test.unwrap().acc, s.test.unwrap().acc);
    assert_eq!(
        std::fs::read(b.path().join("metrics.jsonl")).unwrap(),
        before
    );
    // metrics.csv holds the same lines as columns
    let csv = std::fs::read_to_string(b.path().join("metrics.csv")).unwrap();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(header[0], "step");
    let lines: Vec<&str> = rows.collect();
    assert_eq!(lines.len(), mb.len());
    let col = |k: &str| header.iter().position(|h| *h == k).unwrap();
    for (row, v) in lines.iter().zip(&mb) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[col("step")], v["step"].to_string());
        if let Some(l) = v["loss"].as_f64() {
            assert_eq!(cells[col("loss")].parse::<f64>().unwrap(), l);
        }
    }
}

#[test]
fn empty_splits_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::from_toml(&cfg_text("").replace("val_size = 96", "val_size = 0")).unwrap();
    let e = train::run(&cfg, dir.path(), false, None, true).unwrap_err();
    assert!(e.contains("validation split") && e.contains("empty"), "{e}");
    assert!(!dir.path().join("metrics.jsonl").exists());
}

#[test]
fn a_non_finite_loss_stops_the_run_or_is_skipped_and_counted() {
    // lr = 1e30 overflows the weights within a few steps
    let text = cfg_text("max_steps = 40\nlog_every = 10").replace("lr = 0.01", "lr = 1e30");
    let cfg = RunConfig::from_toml(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = train::run(&cfg, dir.path(), false, None, true).unwrap_err();
    assert!(
        e.contains("step ") && (e.contains("loss is") || e.contains("gradient norm is")),
        "{e}"
    );
    // skip: NaN gradients injected at three steps are skipped, counted, and never reach the weights
    let skip = RunConfig::from_toml(&cfg_text(
        "max_steps = 40\nlog_every = 10\nnonfinite = \"skip\"",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = std::sync::atomic::AtomicBool::new(false);
    let s = train::run_with(
        &skip,
        dir.path(),
        &train::RunOptions {
            resume: false,
            data: None,
            progress: train::Progress::Silent,
            stop: Some(&flag),
            fault_steps: &[2, 3, 11],
            stop_after: None,
            max_memory: None,
        },
    )
    .unwrap();
    assert_eq!(s.skipped, 3);
    let m = metrics(dir.path());
    let per_line: Vec<u64> = m.iter().filter_map(|v| v["skipped"].as_u64()).collect();
    assert_eq!(per_line, [2, 1, 0, 0]);
    let last =
        statespace_core::engine::checkpoint::load::<f32>(&dir.path().join("last.safetensors"))
            .unwrap();
    assert!(
        last.tensors
            .values()
            .all(|t| t.data.iter().all(|x| x.is_finite()))
    );
    // the same injection under the default policy stops at that step
    let cfg = RunConfig::from_toml(&cfg_text("max_steps = 40")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = train::run_with(
        &cfg,
        dir.path(),
        &train::RunOptions {
            resume: false,
            data: None,
            progress: train::Progress::Silent,
            stop: None,
            fault_steps: &[2],
            stop_after: None,
            max_memory: None,
        },
    )
    .unwrap_err();
    assert!(
        e.contains("step 3 ") && e.contains("gradient norm is NaN"),
        "{e}"
    );
}
