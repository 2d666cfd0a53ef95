//! `statespace data …`: writes generated benchmark datasets in their standard file layouts.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use statespace_data::listops::{self, GenOptions};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Generate LRA ListOps: basic_train.tsv, basic_val.tsv, basic_test.tsv (TSV, header
    /// `Source\tTarget`) by LRA's rules (max depth 10, 2–10 arguments, leaf when U[0,1) > 0.25,
    /// min-length < length < max-length counting tokens without parentheses, no duplicates).
    Listops(ListopsArgs),
    /// Generate Pathfinder images in the LRA layout (DIR/curv_contour_length_14/imgs/<k>/sample_<i>.png
    /// and metadata/<k>.npy): two snakes of 6 / 9 / 14 paddles, distractors, circle markers on the
    /// ends of one snake (label 1) or of both (label 0), each image checked by a flood fill.
    Pathfinder(PathfinderArgs),
}

#[derive(Args)]
pub struct PathfinderArgs {
    /// Output directory (the difficulty folder is created inside).
    #[arg(long)]
    out: PathBuf,
    /// Image size (32, 64, 128 = Path-X, 256).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// easy | medium | hard (contour length 6 / 9 / 14).
    #[arg(long, default_value = "hard")]
    difficulty: String,
    /// Number of images (LRA: 200,000).
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct ListopsArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Keep expressions longer than this (exclusive).
    #[arg(long, default_value_t = 500)]
    min_length: usize,
    /// Keep expressions shorter than this (exclusive).
    #[arg(long, default_value_t = 2000)]
    max_length: usize,
    /// Training examples.
    #[arg(long, default_value_t = 96_000)]
    train: usize,
    /// Validation examples.
    #[arg(long, default_value_t = 2000)]
    val: usize,
    /// Test examples.
    #[arg(long, default_value_t = 2000)]
    test: usize,
    /// Deepest nesting level (the root is level 1).
    #[arg(long, default_value_t = 10)]
    max_depth: usize,
    /// Most arguments of an operator.
    #[arg(long, default_value_t = 10)]
    max_args: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn bar(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} · eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

pub fn run(cmd: &DataCommand) -> Result<(), String> {
    match cmd {
        DataCommand::Pathfinder(a) => {
            use statespace_data::pathfinder::{self, Difficulty};
            if !(16..=512).contains(&a.size) {
                return Err(format!("--size {} must be in 16…512", a.size));
            }
            if a.count == 0 || a.count > 10_000_000 {
                return Err(format!(
                    "--count {} must be in 1…10000000 (LRA has 200000 per difficulty)",
                    a.count
                ));
            }
            let d = Difficulty::parse(&a.difficulty).map_err(|e| format!("--difficulty: {e}"))?;
            let pb = bar(a.count, "images");
            pathfinder::generate_dataset(&a.out, a.size, d, a.count, a.seed, |k| {
                if k % 64 == 0 || k == a.count {
                    pb.set_position(k as u64)
                }
            })
            .map_err(|e| e.to_string())?;
            pb.finish_and_clear();
            println!(
                "wrote {} {}×{} images to {}",
                a.count,
                a.size,
                a.size,
                a.out.join(d.dir()).display()
            );
            Ok(())
        }
        DataCommand::Listops(a) => {
            let o = GenOptions {
                max_depth: a.max_depth,
                max_args: a.max_args,
                value_p: 0.25,
                min_length: a.min_length,
                max_length: a.max_length,
            };
            let total = a.train + a.val + a.test;
            let pb = bar(total, "expressions");
            listops::generate_files(&a.out, [a.train, a.val, a.test], &o, a.seed, |k| {
                if k % 256 == 0 || k == total {
                    pb.set_position(k as u64)
                }
            })
            .map_err(|e| e.to_string())?;
            pb.finish_and_clear();
            let train =
                listops::read_tsv(&a.out.join("basic_train.tsv")).map_err(|e| e.to_string())?;
            let test =
                listops::read_tsv(&a.out.join("basic_test.tsv")).map_err(|e| e.to_string())?;
            println!(
                "wrote {}/basic_{{train,val,test}}.tsv ({} / {} / {} expressions, {} < length < {}); root-operator baseline on test: {:.1}%",
                a.out.display(),
                a.train,
                a.val,
                a.test,
                a.min_length,
                a.max_length,
                100.0 * listops::root_operator_baseline(&train, &test)
            );
            Ok(())
        }
    }
}
