//! Readers on small files written in the exact standard formats, malformed inputs, and the
//! generated tasks' rules.

use flate2::Compression;
use flate2::write::GzEncoder;
use statespace_data::idx::{self, IdxImages};
use statespace_data::tasks::{AddingTask, CopyingTask, ImageTask};
use statespace_data::{Batch, IGNORE, InputSpec, SeqTask, Split, TargetSpec};
use std::io::Write;
use std::path::Path;

fn images(count: usize, rows: usize, cols: usize) -> IdxImages {
    IdxImages {
        count,
        rows,
        cols,
        pixels: (0..count * rows * cols)
            .map(|i| (i * 7 % 256) as u8)
            .collect(),
    }
}

fn gzip(path: &Path) {
    let raw = std::fs::read(path).unwrap();
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&raw).unwrap();
    std::fs::write(
        path.with_extension(format!(
            "{}gz",
            path.extension()
                .map(|e| format!("{}.", e.to_string_lossy()))
                .unwrap_or_default()
        )),
        enc.finish().unwrap(),
    )
    .unwrap();
}

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let img = images(3, 4, 5);
    let p = dir.path().join("x-images-idx3-ubyte");
    idx::write_images(&p, &img).unwrap();
    // header bytes as the format defines them
    let raw = std::fs::read(&p).unwrap();
    assert_eq!(&raw[..4], &[0, 0, 8, 3]);
    assert_eq!(&raw[4..8], &3u32.to_be_bytes());
    assert_eq!(idx::read_images(&p).unwrap(), img);
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(&raw).unwrap();
    let pg = dir.path().join("x-images-idx3-ubyte.gz");
    std::fs::write(&pg, enc.finish().unwrap()).unwrap();
    assert_eq!(idx::read_images(&pg).unwrap(), img);
    let lp = dir.path().join("y-labels-idx1-ubyte");
    idx::write_labels(&lp, &[3, 1, 4]).unwrap();
    assert_eq!(idx::read_labels(&lp, 10).unwrap(), vec![3, 1, 4]);
}

#[test]
fn malformed_idx_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut good = vec![0, 0, 8, 3];
    for d in [2u32, 2, 2] {
        good.extend_from_slice(&d.to_be_bytes());
    }
    good.extend_from_slice(&[1; 8]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short", vec![0, 0], "truncated header"),
        ("magic", vec![1, 2, 3, 4, 0, 0, 0, 0], "bad magic"),
        ("float", vec![0, 0, 0x0d, 3, 0, 0, 0, 1], "element type"),
        ("dims", vec![0, 0, 8, 1, 0, 0, 0, 1, 5], "dimensions"),
        ("header", vec![0, 0, 8, 3, 0, 0, 0, 2], "truncated header"),
        ("data", good[..good.len() - 3].to_vec(), "truncated data"),
        ("trailing", [good.clone(), vec![9, 9]].concat(), "trailing"),
        ("gzip", vec![0x1f, 0x8b, 8, 0, 1, 2], "gzip"),
    ];
    for (name, bytes, needle) in cases {
        let p = w(name, &bytes);
        let e = idx::read_images(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    }
    let lp = dir.path().join("labels");
    idx::write_labels(&lp, &[1, 12]).unwrap();
    let e = idx::read_labels(&lp, 10).unwrap_err().to_string();
    assert!(
        e.contains("labels") && e.contains("record 1") && e.contains("12"),
        "{e}"
    );
    let e = idx::read_images(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent"), "{e}");
}

fn write_mnist_like(dir: &Path, n_train: usize, n_test: usize) {
    let mk = |n: usize, off: usize| IdxImages {
        count: n,
        rows: 28,
        cols: 28,
        pixels: (0..n * 784).map(|i| ((i + off) % 251) as u8).collect(),
    };
    idx::write_images(&dir.join("train-images-idx3-ubyte"), &mk(n_train, 0)).unwrap();
    idx::write_labels(
        &dir.join("train-labels-idx1-ubyte"),
        &(0..n_train).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    idx::write_images(&dir.join("t10k-images-idx3-ubyte"), &mk(n_test, 3)).unwrap();
    idx::write_labels(
        &dir.join("t10k-labels-idx1-ubyte"),
        &(0..n_test).map(|i| (i % 10) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    gzip(&dir.join("t10k-images-idx3-ubyte"));
    std::fs::remove_file(dir.join("t10k-images-idx3-ubyte")).unwrap();
}

#[test]
fn image_task_splits_normalizes_and_permutes() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 50, 20);
    let t = ImageTask::load("test", dir.path(), 10, false, 1).unwrap();
    assert_eq!(
        (
            t.size(Split::Train),
            t.size(Split::Val),
            t.size(Split::Test)
        ),
        (40, 10, 20)
    );
    assert_eq!(t.spec().len, 784);
    assert_eq!(t.spec().input, InputSpec::Real { channels: 1 });
    let mut b = Batch::default();
    t.fill(Split::Train, &(0..40).collect::<Vec<_>>(), &mut b)
        .unwrap();
    assert_eq!(b.real.len(), 40 * 784);
    let mean = b.real.iter().map(|v| *v as f64).sum::<f64>() / b.real.len() as f64;
    let var = b
        .real
        .iter()
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / b.real.len() as f64;
    assert!(
        mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
        "standardized: mean {mean}, var {var}"
    );
    // the test image 0 is (i + 3) % 251 pixel by pixel (gzip'd file)
    t.fill(Split::Test, &[0], &mut b).unwrap();
    let mut raw = b.real.clone();
    let mut tu = t.clone();
    tu.set_unit_scaling();
    tu.fill(Split::Test, &[0], &mut b).unwrap();
    assert!((b.real[5] - 8.0 / 255.0).abs() < 1e-6);
    // the permuted task reads the same pixels in a fixed other order
    let tp = ImageTask::load("test", dir.path(), 10, true, 1).unwrap();
    let mut bp = Batch::default();
    tp.fill(Split::Test, &[0], &mut bp).unwrap();
    assert_ne!(bp.real, raw);
    raw.sort_by(f32::total_cmp);
    let mut sorted = bp.real.clone();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(raw, sorted);
    // validation and training images are disjoint and cover the file
    assert!(ImageTask::load("test", dir.path(), 50, false, 1).is_err());
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let e = ImageTask::load("test", dir.path(), 10, false, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
}

#[test]
fn adding_problem_follows_its_rules() {
    let t = AddingTask::new(100, [500, 10, 10], 3).unwrap();
    let mut b = Batch::default();
    t.fill(Split::Train, &(0..500).collect::<Vec<_>>(), &mut b)
        .unwrap();
    let mut sq = 0.0;
    for i in 0..500 {
        let x = &b.real[i * 200..(i + 1) * 200];
        let (vals, marks) = x.split_at(100);
        let idx: Vec<usize> = (0..100).filter(|&j| marks[j] == 1.0).collect();
        assert_eq!(idx.len(), 2);
        assert!(idx[0] < 50 && idx[1] >= 50);
        assert!(marks.iter().all(|m| *m == 0.0 || *m == 1.0));
        assert!((b.targets[i] - vals[idx[0]] - vals[idx[1]]).abs() < 1e-6);
        sq += (b.targets[i] as f64 - 1.0).powi(2);
    }
    // predicting 1 always: E[(U1 + U2 − 1)²] = 1/6
    let mse = sq / 500.0;
    assert!((mse - 1.0 / 6.0).abs() < 0.03, "{mse}");
    // deterministic by (seed, split, index)
    let mut b2 = Batch::default();
    t.fill(Split::Train, &[7], &mut b2).unwrap();
    assert_eq!(&b2.real[..], &b.real[7 * 200..8 * 200]);
    t.fill(Split::Val, &[7], &mut b2).unwrap();
    assert_ne!(&b2.real[..], &b.real[7 * 200..8 * 200]);
}

#[test]
fn copying_task_follows_its_rules() {
    let t = CopyingTask::new(10, 200, 10, [100, 10, 10], 5).unwrap();
    let spec = t.spec();
    assert_eq!(spec.len, 220);
    assert_eq!(spec.target, TargetSpec::ClassPerPosition { classes: 10 });
    let mut b = Batch::default();
    t.fill(Split::Test, &[0, 1, 2], &mut b).unwrap();
    for i in 0..3 {
        let tok = &b.tokens[i * 220..(i + 1) * 220];
        let lab = &b.labels[i * 220..(i + 1) * 220];
        assert!(tok[..10].iter().all(|&s| (1..=8).contains(&s)));
        assert!(tok[10..210].iter().all(|&s| s == 0));
        assert!(tok[210..].iter().all(|&s| s == 9));
        assert!(lab[..210].iter().all(|&l| l == IGNORE));
        assert_eq!(&lab[210..], &tok[..10]);
    }
    assert!(CopyingTask::new(0, 10, 10, [1, 1, 1], 0).is_err());
    assert!(CopyingTask::new(5, 10, 2, [1, 1, 1], 0).is_err());
}

#[test]
fn a_subset_keeps_the_first_examples_of_its_splits() {
    let dir = tempfile::tempdir().unwrap();
    write_mnist_like(dir.path(), 50, 20);
    let full = ImageTask::load("test", dir.path(), 10, false, 1).unwrap();
    let sub = statespace_data::Subset::new(Box::new(full.clone()), [Some(25), None, Some(100)]);
    // a limit above the split's size keeps it whole
    assert_eq!(
        (
            sub.size(Split::Train),
            sub.size(Split::Val),
            sub.size(Split::Test)
        ),
        (25, 10, 20)
    );
    assert_eq!(sub.spec(), full.spec());
    assert!(sub.describe().contains("25 train"), "{}", sub.describe());
    // example i is the whole task's example i
    let (mut a, mut b) = (Batch::default(), Batch::default());
    let idx: Vec<usize> = (0..25).rev().collect();
    sub.fill(Split::Train, &idx, &mut a).unwrap();
    full.fill(Split::Train, &idx, &mut b).unwrap();
    assert_eq!(a.real, b.real);
    assert_eq!(a.labels, b.labels);
    // an example past the limit is an error naming the setting
    let e = sub
        .fill(Split::Train, &[3, 25], &mut a)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("task.train_size") && e.contains("example 25"),
        "{e}"
    );
}
