//! `statespace lra`: one command per Long Range Arena task × model kind with the papers'
//! hyperparameters (the configs of `configs/lra/`, compiled into the binary).

use super::Failure;
use super::train::execute;
use clap::Args;
use statespace_train::RunConfig;
use std::path::PathBuf;

/// The tasks, in the papers' table order.
pub const TASKS: [&str; 6] = [
    "listops",
    "text",
    "retrieval",
    "image",
    "pathfinder",
    "pathx",
];
/// The model kinds.
pub const KINDS: [&str; 7] = ["s4", "s4d", "s5", "s4-ptd", "s5-ptd", "sgconv", "hope"];

/// (task, kind, config text) — `configs/lra/<task>-<kind>.toml`.
pub const CONFIGS: &[(&str, &str, &str)] = &[
    (
        "listops",
        "s4",
        include_str!("../../../../configs/lra/listops-s4.toml"),
    ),
    (
        "listops",
        "s4d",
        include_str!("../../../../configs/lra/listops-s4d.toml"),
    ),
    (
        "listops",
        "s5",
        include_str!("../../../../configs/lra/listops-s5.toml"),
    ),
    (
        "listops",
        "s4-ptd",
        include_str!("../../../../configs/lra/listops-s4-ptd.toml"),
    ),
    (
        "listops",
        "s5-ptd",
        include_str!("../../../../configs/lra/listops-s5-ptd.toml"),
    ),
    (
        "listops",
        "sgconv",
        include_str!("../../../../configs/lra/listops-sgconv.toml"),
    ),
    (
        "listops",
        "hope",
        include_str!("../../../../configs/lra/listops-hope.toml"),
    ),
    (
        "text",
        "s4",
        include_str!("../../../../configs/lra/text-s4.toml"),
    ),
    (
        "text",
        "s4d",
        include_str!("../../../../configs/lra/text-s4d.toml"),
    ),
    (
        "text",
        "s5",
        include_str!("../../../../configs/lra/text-s5.toml"),
    ),
    (
        "text",
        "s4-ptd",
        include_str!("../../../../configs/lra/text-s4-ptd.toml"),
    ),
    (
        "text",
        "s5-ptd",
        include_str!("../../../../configs/lra/text-s5-ptd.toml"),
    ),
    (
        "text",
        "sgconv",
        include_str!("../../../../configs/lra/text-sgconv.toml"),
    ),
    (
        "text",
        "hope",
        include_str!("../../../../configs/lra/text-hope.toml"),
    ),
    (
        "retrieval",
        "s4",
        include_str!("../../../../configs/lra/retrieval-s4.toml"),
    ),
    (
        "retrieval",
        "s4d",
        include_str!("../../../../configs/lra/retrieval-s4d.toml"),
    ),
    (
        "retrieval",
        "s5",
        include_str!("../../../../configs/lra/retrieval-s5.toml"),
    ),
    (
        "retrieval",
        "s4-ptd",
        include_str!("../../../../configs/lra/retrieval-s4-ptd.toml"),
    ),
    (
        "retrieval",
        "s5-ptd",
        include_str!("../../../../configs/lra/retrieval-s5-ptd.toml"),
    ),
    (
        "retrieval",
        "sgconv",
        include_str!("../../../../configs/lra/retrieval-sgconv.toml"),
    ),
    (
        "retrieval",
        "hope",
        include_str!("../../../../configs/lra/retrieval-hope.toml"),
    ),
    (
        "image",
        "s4",
        include_str!("../../../../configs/lra/image-s4.toml"),
    ),
    (
        "image",
        "s4d",
        include_str!("../../../../configs/lra/image-s4d.toml"),
    ),
    (
        "image",
        "s5",
        include_str!("../../../../configs/lra/image-s5.toml"),
    ),
    (
        "image",
        "s4-ptd",
        include_str!("../../../../configs/lra/image-s4-ptd.toml"),
    ),
    (
        "image",
        "s5-ptd",
        include_str!("../../../../configs/lra/image-s5-ptd.toml"),
    ),
    (
        "image",
        "sgconv",
        include_str!("../../../../configs/lra/image-sgconv.toml"),
    ),
    (
        "image",
        "hope",
        include_str!("../../../../configs/lra/image-hope.toml"),
    ),
    (
        "pathfinder",
        "s4",
        include_str!("../../../../configs/lra/pathfinder-s4.toml"),
    ),
    (
        "pathfinder",
        "s4d",
        include_str!("../../../../configs/lra/pathfinder-s4d.toml"),
    ),
    (
        "pathfinder",
        "s5",
        include_str!("../../../../configs/lra/pathfinder-s5.toml"),
    ),
    (
        "pathfinder",
        "s4-ptd",
        include_str!("../../../../configs/lra/pathfinder-s4-ptd.toml"),
    ),
    (
        "pathfinder",
        "s5-ptd",
        include_str!("../../../../configs/lra/pathfinder-s5-ptd.toml"),
    ),
    (
        "pathfinder",
        "sgconv",
        include_str!("../../../../configs/lra/pathfinder-sgconv.toml"),
    ),
    (
        "pathfinder",
        "hope",
        include_str!("../../../../configs/lra/pathfinder-hope.toml"),
    ),
    (
        "pathx",
        "s4",
        include_str!("../../../../configs/lra/pathx-s4.toml"),
    ),
    (
        "pathx",
        "s4d",
        include_str!("../../../../configs/lra/pathx-s4d.toml"),
    ),
    (
        "pathx",
        "s5",
        include_str!("../../../../configs/lra/pathx-s5.toml"),
    ),
    (
        "pathx",
        "s4-ptd",
        include_str!("../../../../configs/lra/pathx-s4-ptd.toml"),
    ),
    (
        "pathx",
        "s5-ptd",
        include_str!("../../../../configs/lra/pathx-s5-ptd.toml"),
    ),
    (
        "pathx",
        "sgconv",
        include_str!("../../../../configs/lra/pathx-sgconv.toml"),
    ),
    (
        "pathx",
        "hope",
        include_str!("../../../../configs/lra/pathx-hope.toml"),
    ),
];

/// Published LRA test accuracy (%) per kind, in [`TASKS`] order (S5-PTD published only its average).
const PUBLISHED: &[(&str, [f64; 6])] = &[
    ("s4", [59.6, 86.82, 90.9, 88.65, 94.2, 96.35]),
    ("s4d", [60.47, 86.18, 89.46, 88.19, 93.06, 91.95]),
    ("s5", [62.15, 89.31, 91.4, 88.0, 95.33, 98.58]),
    ("s4-ptd", [60.65, 88.32, 91.07, 88.27, 94.79, 96.39]),
    ("sgconv", [61.45, 89.2, 91.11, 87.97, 95.46, 97.83]),
    ("hope", [62.6, 89.83, 91.8, 88.68, 95.73, 98.45]),
];

/// The published accuracy of `kind` on `task`, if any.
pub fn published(task: &str, kind: &str) -> Option<f64> {
    let t = TASKS.iter().position(|x| *x == task)?;
    PUBLISHED
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v[t])
}

#[derive(Args)]
pub struct LraArgs {
    /// listops | text | retrieval | image | pathfinder | pathx
    #[arg(long)]
    task: String,
    /// s4 | s4d | s5 | s4-ptd | s5-ptd | sgconv | hope
    #[arg(long)]
    model: String,
    /// The task's files (overrides the config's data_dir; see `statespace train --help`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stop after this many steps (the learning-rate schedule still spans all epochs).
    #[arg(long)]
    limit_steps: Option<usize>,
    /// Override a config field, e.g. --set train.batch_size=16 (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    sets: Vec<String>,
    /// Run directory (default runs/lra-<task>-<model>); a run already there is resumed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the config and exit.
    #[arg(long)]
    print_config: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Refuse the run if its memory estimate exceeds this (e.g. 8G; default: what is available).
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    #[command(flatten)]
    pub engine: super::engine::EngineArgs,
}

/// The config of `task` × `kind`.
pub fn config(task: &str, kind: &str) -> Result<&'static str, String> {
    CONFIGS
        .iter()
        .find(|(t, k, _)| *t == task && *k == kind)
        .map(|(_, _, c)| *c)
        .ok_or_else(|| {
            format!(
                "no LRA config for --task {task} --model {kind} (tasks: {}; models: {})",
                TASKS.join(", "),
                KINDS.join(", ")
            )
        })
}

pub fn run(a: &LraArgs) -> Result<(), Failure> {
    let text = config(&a.task, &a.model).map_err(Failure::Input)?;
    if a.print_config {
        print!("{text}");
        return Ok(());
    }
    let mut sets = a.sets.clone();
    if let Some(n) = a.limit_steps {
        sets.push(format!("train.max_steps={n}"));
    }
    let name = format!("configs/lra/{}-{}.toml", a.task, a.model);
    let cfg = RunConfig::from_toml(text).map_err(|e| Failure::Input(format!("{name}: {e}")))?;
    let cfg = if sets.is_empty() {
        cfg
    } else {
        cfg.with_overrides(&sets)
            .map_err(|e| Failure::Input(format!("{name}: {e}")))?
    };
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("lra-{}-{}", a.task, a.model)));
    let resuming = dir.join("last.safetensors").exists();
    eprintln!(
        "LRA {} × {} ({name}){} → {}",
        a.task,
        a.model,
        if resuming { ", resuming" } else { "" },
        dir.display()
    );
    let s = execute(
        &cfg,
        &dir,
        resuming,
        a.data.as_deref(),
        a.quiet,
        a.max_memory.as_deref(),
        &a.engine,
    )?;
    let acc = s.test.and_then(|t| t.acc).map_or(f64::NAN, |x| 100.0 * x);
    println!(
        "LRA {} × {}: test accuracy {acc:.2}% after {} steps ({:.0} s, {:.0} tokens/s){}",
        a.task,
        a.model,
        s.steps,
        s.seconds,
        s.tokens_per_s,
        published(&a.task, &a.model)
            .map(|p| format!("; published {p:.2}%"))
            .unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lra_config_parses_and_validates() {
        assert_eq!(CONFIGS.len(), TASKS.len() * KINDS.len());
        for (t, k, text) in CONFIGS {
            let cfg = RunConfig::from_toml(text).unwrap_or_else(|e| panic!("{t}-{k}: {e}"));
            cfg.model
                .validate()
                .unwrap_or_else(|e| panic!("{t}-{k}: {e}"));
            assert!(cfg.model.bidirectional, "{t}-{k}");
            let kind = serde_json::to_value(cfg.model.kind).unwrap();
            assert_eq!(kind.as_str(), Some(*k));
        }
        assert_eq!(published("listops", "s4"), Some(59.60));
        assert_eq!(published("pathx", "hope"), Some(98.45));
    }
}
