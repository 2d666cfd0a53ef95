//! Pathfinder: the LRA layout (real PNG files, metadata as LRA writes it), malformed inputs, and the
//! generator's labels checked by an independent flood fill on the decoded PNGs.

use rand::SeedableRng;
use rand::rngs::StdRng;
use statespace_data::pathfinder::{self, Difficulty, PathfinderTask};
use statespace_data::{Batch, SeqTask, Split};

/// 4-connected components touching each marker, written independently of the library's fill:
/// an iterative labelling by repeated relaxation (slow but obvious).
fn same_component(px: &[u8], size: usize, a: usize, b: usize) -> bool {
    let mut lab: Vec<usize> = (0..px.len())
        .map(|i| if px[i] > 0 { i } else { usize::MAX })
        .collect();
    loop {
        let mut changed = false;
        for p in 0..px.len() {
            if lab[p] == usize::MAX {
                continue;
            }
            let (r, c) = (p / size, p % size);
            let mut nb = Vec::new();
            for (dr, dc) in [
                (-1i64, -1i64),
                (-1, 0),
                (-1, 1),
                (0, -1),
                (0, 1),
                (1, -1),
                (1, 0),
                (1, 1),
            ] {
                let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                if rr >= 0 && cc >= 0 && (rr as usize) < size && (cc as usize) < size {
                    nb.push(rr as usize * size + cc as usize);
                }
            }
            for q in nb {
                if lab[q] != usize::MAX && lab[q] < lab[p] {
                    lab[p] = lab[q];
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    lab[a] != usize::MAX && lab[a] == lab[b]
}

#[test]
fn generated_labels_agree_with_an_independent_flood_fill() {
    let mut rng = StdRng::seed_from_u64(4);
    for (i, d) in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard]
        .into_iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        let label = (i % 2) as u8;
        let (px, [m0, m1]) = pathfinder::generate_image(32, d, label, &mut rng).unwrap();
        // through a real PNG file and back
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        pathfinder::write_png(&p, &px, 32).unwrap();
        let back = pathfinder::decode_png(&p, &std::fs::read(&p).unwrap(), 32).unwrap();
        assert_eq!(back, px);
        assert_eq!(
            same_component(&back, 32, m0, m1),
            label == 1,
            "{d:?} image {i}"
        );
        // something besides the two snakes is drawn (distractors), but not everything
        let on = back.iter().filter(|&&v| v > 0).count();
        assert!(on > 40 && on < 32 * 32 / 2, "{on} pixels on");
    }
}

#[test]
fn lra_layout_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    pathfinder::generate_dataset(dir.path(), 32, Difficulty::Hard, 30, 1, |_| {}).unwrap();
    let root = dir.path().join("curv_contour_length_14");
    let meta = std::fs::read_to_string(root.join("metadata/0.npy")).unwrap();
    let first: Vec<&str> = meta.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&first[..2], &["imgs/0", "sample_0.png"]);
    assert!(root.join("imgs/0/sample_29.png").exists());
    let t = PathfinderTask::load(dir.path(), 32, Difficulty::Hard, 0).unwrap();
    assert_eq!(
        t.size(Split::Train) + t.size(Split::Val) + t.size(Split::Test),
        30
    );
    assert_eq!(t.spec().len, 1024);
    let mut b = Batch::default();
    t.fill(Split::Train, &[0, 1, 2], &mut b).unwrap();
    assert_eq!(b.real.len(), 3 * 1024);
    assert!(
        b.real
            .iter()
            .all(|&v| v == -1.0 || v == 1.0 || (-1.0..=1.0).contains(&v))
    );
    // the labels of the split agree with the metadata and the pictures
    let labels: Vec<u32> = meta
        .lines()
        .map(|l| l.split_whitespace().nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 15);
}

#[test]
fn malformed_pathfinder_inputs() {
    let dir = tempfile::tempdir().unwrap();
    pathfinder::generate_dataset(dir.path(), 32, Difficulty::Easy, 4, 2, |_| {}).unwrap();
    let root = dir.path().join("curv_baseline");
    // wrong image size
    let e = PathfinderTask::load(dir.path(), 64, Difficulty::Easy, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample_0.png") && e.contains("32×32, expected 64×64"),
        "{e}"
    );
    // bad label field
    let mp = root.join("metadata/0.npy");
    let good = std::fs::read_to_string(&mp).unwrap();
    std::fs::write(&mp, good.replacen(" 0 0 ", " 0 7 ", 1)).unwrap();
    let e = PathfinderTask::load(dir.path(), 32, Difficulty::Easy, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0.npy:1") && e.contains("label"), "{e}");
    // too few fields
    std::fs::write(&mp, "imgs/0 sample_0.png\n").unwrap();
    let e = PathfinderTask::load(dir.path(), 32, Difficulty::Easy, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0.npy:1") && e.contains("at least 4"), "{e}");
    // missing image
    std::fs::write(&mp, good.replace("sample_1.png", "sample_9.png")).unwrap();
    let e = PathfinderTask::load(dir.path(), 32, Difficulty::Easy, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample_9.png") && e.contains("cannot be opened"),
        "{e}"
    );
    // not a PNG
    std::fs::write(&mp, &good).unwrap();
    std::fs::write(root.join("imgs/0/sample_2.png"), b"GIF89a....").unwrap();
    let e = PathfinderTask::load(dir.path(), 32, Difficulty::Easy, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample_2.png") && e.contains("not a readable PNG"),
        "{e}"
    );
    // non-UTF-8 metadata
    std::fs::write(&mp, b"imgs/0 \xff 0 1\n").unwrap();
    let e = PathfinderTask::load(dir.path(), 32, Difficulty::Easy, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("0.npy") && e.contains("UTF-8"), "{e}");
    // missing layout
    let e = PathfinderTask::load(&dir.path().join("none"), 32, Difficulty::Hard, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("curv_contour_length_14"), "{e}");
}

#[test]
#[ignore = "prints generated images as ASCII art"]
fn show_images() {
    let mut rng = StdRng::seed_from_u64(7);
    for label in [1u8, 0] {
        let (px, m) = pathfinder::generate_image(32, Difficulty::Hard, label, &mut rng).unwrap();
        println!("label {label} markers {m:?}");
        for r in 0..32 {
            let row: String = (0..32)
                .map(|c| if px[r * 32 + c] > 0 { '#' } else { '.' })
                .collect();
            println!("{row}");
        }
    }
}
