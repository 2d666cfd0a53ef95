//! Readers of the LRA file formats on small files written in exactly those formats: CIFAR-10 binary
//! records, the aclImdb layout, AAN pair TSV files; and one clear error per kind of malformed input.

use statespace_data::cifar::{self, CifarImages, CifarTask};
use statespace_data::text::{self, AanTask, ImdbTask};
use statespace_data::{Batch, InputSpec, SeqTask, Split};
use std::path::Path;

fn cifar_dir(dir: &Path, per_file: usize) -> (Vec<u8>, Vec<u8>) {
    // pixel (img, channel, t) = (img·7 + channel·50 + t) mod 256
    let mut all_labels = Vec::new();
    let mut all_pixels = Vec::new();
    let mut img = 0usize;
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let mut labels = Vec::new();
        let mut pixels = Vec::new();
        for _ in 0..per_file {
            labels.push((img % 10) as u8);
            for c in 0..3 {
                for t in 0..1024 {
                    pixels.push(((img * 7 + c * 50 + t) % 256) as u8);
                }
            }
            img += 1;
        }
        cifar::write_batch(&dir.join(name), &labels, &pixels).unwrap();
        all_labels.extend(labels);
        all_pixels.extend(pixels);
    }
    (all_labels, all_pixels)
}

#[test]
fn cifar_record_layout_and_task() {
    let dir = tempfile::tempdir().unwrap();
    let (labels, pixels) = cifar_dir(dir.path(), 4);
    // the record layout, byte by byte: label, then R, G, B planes
    let raw = std::fs::read(dir.path().join("data_batch_2.bin")).unwrap();
    assert_eq!(raw.len(), 4 * 3073);
    assert_eq!(raw[3073], labels[5]);
    let (img, c, t) = (5usize, 1usize, 3usize);
    assert_eq!(
        raw[3073 + 1 + c * 1024 + t],
        ((img * 7 + c * 50 + t) % 256) as u8
    );
    let mut read = CifarImages::default();
    cifar::read_batch(&dir.path().join("data_batch_2.bin"), &mut read).unwrap();
    assert_eq!(read.labels, labels[4..8]);
    assert_eq!(read.pixels, pixels[4 * 3072..8 * 3072]);

    for gray in [true, false] {
        let t = CifarTask::load(dir.path(), gray, 2, 0).unwrap();
        assert_eq!(t.size(Split::Train) + t.size(Split::Val), 20);
        assert_eq!(t.size(Split::Test), 4);
        let ch = if gray { 1 } else { 3 };
        assert_eq!(t.spec().input, InputSpec::Real { channels: ch });
        let mut b = Batch::default();
        t.fill(Split::Test, &[1], &mut b).unwrap();
        assert_eq!(b.labels, vec![labels[21] as u32]);
        assert_eq!(b.real.len(), ch * 1024);
        // standardized values are an affine map of the raw pixel value per channel: recover it
        // from two positions and check a third
        let img = 21usize;
        let raw_of = |c: usize, t: usize| ((img * 7 + c * 50 + t) % 256) as f64;
        let val = |c: usize, t: usize| -> f64 {
            if gray {
                0.299 * raw_of(0, t) + 0.587 * raw_of(1, t) + 0.114 * raw_of(2, t)
            } else {
                raw_of(c, t)
            }
        };
        for c in 0..ch {
            let (t0, t1, t2) = (0usize, 10usize, 100usize);
            let (x0, x1, x2) = (
                b.real[c * 1024 + t0] as f64,
                b.real[c * 1024 + t1] as f64,
                b.real[c * 1024 + t2] as f64,
            );
            let slope = (x1 - x0) / (val(c, t1) - val(c, t0));
            let pred = x0 + slope * (val(c, t2) - val(c, t0));
            assert!((pred - x2).abs() < 1e-3, "channel {c}: {pred} vs {x2}");
            assert!(slope > 0.0);
        }
    }
}

#[test]
fn cifar_malformed_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_batch_1.bin");
    // truncated record
    std::fs::write(&p, vec![1u8; 3073 + 100]).unwrap();
    let e = cifar::read_batch(&p, &mut CifarImages::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_1.bin") && e.contains("record 1 is truncated"),
        "{e}"
    );
    // bad label
    let mut raw = vec![3u8; 2 * 3073];
    raw[3073] = 12;
    std::fs::write(&p, raw).unwrap();
    let e = cifar::read_batch(&p, &mut CifarImages::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("record 1") && e.contains("label 12"), "{e}");
    // missing file
    let e = CifarTask::load(dir.path(), true, 1, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_1.bin") || e.contains("data_batch_2.bin"),
        "{e}"
    );
    assert!(e.contains("missing") || e.contains("label"), "{e}");
    std::fs::write(&p, b"").unwrap();
    let e = cifar::read_batch(&p, &mut CifarImages::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
}

fn imdb(dir: &Path) {
    for (split, docs) in [
        (
            "train",
            [
                ("pos", "0_9.txt", "Great film.<br />Loved it"),
                ("neg", "1_2.txt", "Bad. é"),
            ],
        ),
        (
            "test",
            [
                ("pos", "3_8.txt", "Superb"),
                ("neg", "4_1.txt", "Awful, awful"),
            ],
        ),
    ] {
        for (sub, name, text) in docs {
            let d = dir.join(split).join(sub);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), text).unwrap();
        }
    }
}

#[test]
fn imdb_layout_bytes_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    imdb(dir.path());
    let t = ImdbTask::load(dir.path(), 12, 0).unwrap();
    assert_eq!(t.size(Split::Train), 2);
    assert_eq!(t.size(Split::Val), 2); // validation = test, as the LRA papers
    let mut b = Batch::default();
    t.fill(Split::Train, &[0, 1], &mut b).unwrap();
    // neg first (name order within neg, then pos)
    assert_eq!(b.labels, vec![0, 1]);
    let want0: Vec<u32> = "Bad. é".bytes().map(|x| x as u32 + 1).collect();
    assert_eq!(&b.tokens[..want0.len()], &want0[..]);
    assert_eq!(b.lengths[0], "Bad. é".len());
    assert!(b.tokens[want0.len()..12].iter().all(|&x| x == 0));
    // cut to 12 bytes
    let want1: Vec<u32> = "Great film.<".bytes().map(|x| x as u32 + 1).collect();
    assert_eq!(&b.tokens[12..24], &want1[..]);
    assert_eq!(b.lengths[1], 12);
    // non-UTF-8 text
    std::fs::write(dir.path().join("train/pos/5_7.txt"), b"ok \xff\xfe").unwrap();
    let e = ImdbTask::load(dir.path(), 12, 0).unwrap_err().to_string();
    assert!(e.contains("5_7.txt") && e.contains("not UTF-8"), "{e}");
    let e = ImdbTask::load(&dir.path().join("nope"), 12, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("neg"), "{e}");
}

#[test]
fn aan_pairs_two_towers() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        "1\tacl-1\tacl-2\tfirst text\tsecond, longer text",
        "0.0\tacl-3\tacl-4\tabc\tx",
    ];
    for s in ["train", "eval", "test"] {
        std::fs::write(
            dir.path().join(format!("new_aan_pairs.{s}.tsv")),
            rows.join("\n") + "\n",
        )
        .unwrap();
    }
    let t = AanTask::load(dir.path(), 16).unwrap();
    assert!(t.spec().pair);
    assert_eq!(t.size(Split::Train), 2);
    let mut b = Batch::default();
    t.fill(Split::Test, &[1, 0], &mut b).unwrap();
    assert_eq!(b.labels, vec![0, 1]);
    // [2B, L]: the first documents of both examples, then the second documents
    assert_eq!(b.tokens.len(), 4 * 16);
    let tok = |s: &str| -> Vec<u32> { s.bytes().map(|x| x as u32 + 1).collect() };
    assert_eq!(&b.tokens[0..3], &tok("abc")[..]);
    assert_eq!(&b.tokens[16..26], &tok("first text")[..]);
    assert_eq!(&b.tokens[32..33], &tok("x")[..]);
    assert_eq!(&b.tokens[48..64], &tok("second, longer text")[..16]);
    assert_eq!(b.lengths, vec![3, 10, 1, 16]);
    assert_eq!(t.example_len(Split::Train, 0), 16);
}

#[test]
fn aan_malformed_lines_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("new_aan_pairs.train.tsv");
    let cases: Vec<(&[u8], &str)> = vec![
        (b"1\ta\tb\tt1\tt2\n2\ta\tb\tt1\tt2\n", ":2: field label"),
        (b"1\ta\tb\tt1\n", ":1: expected 5 tab-separated fields"),
        (b"1\ta\tb\tt1\t\xff\n", ":1: not UTF-8"),
        (b"\n\n", "no data lines"),
    ];
    for (content, want) in cases {
        std::fs::write(&p, content).unwrap();
        let e = AanTask::load(dir.path(), 8).unwrap_err().to_string();
        assert!(e.contains("new_aan_pairs.train.tsv"), "{e}");
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
    let l = text::parse_aan_line(b"1.0\tx\ty\tp\tq").unwrap();
    assert_eq!((l.label, l.id1, l.text2), (1, "x", "q"));
}
