//! ListOps: the LRA string format, the generator's rules (statistics against formulas and LRA's
//! measured baseline), labels by an independent evaluator, the TSV reader and its errors.

use rand::SeedableRng;
use rand::rngs::StdRng;
use statespace_data::listops::{self, GenOptions, Op, Tree};
use statespace_data::{Batch, SeqTask, Split};
use std::collections::HashSet;

/// An evaluator of LRA source strings written independently of the library: a stack machine over
/// the whitespace tokens, median in f64.
fn eval_source(src: &str) -> u32 {
    let mut stack: Vec<(String, Vec<u32>)> = Vec::new();
    let mut result = None;
    for tok in src.split_whitespace() {
        match tok {
            "(" | ")" => {}
            "]" => {
                let (op, v) = stack.pop().expect("balanced");
                let x = match op.as_str() {
                    "[MIN" => *v.iter().min().unwrap(),
                    "[MAX" => *v.iter().max().unwrap(),
                    "[SM" => v.iter().sum::<u32>() % 10,
                    "[MED" => {
                        let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
                        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
                        let n = s.len();
                        let m = if n % 2 == 1 {
                            s[n / 2]
                        } else {
                            0.5 * (s[n / 2 - 1] + s[n / 2])
                        };
                        m.trunc() as u32
                    }
                    _ => panic!("op {op}"),
                };
                match stack.last_mut() {
                    Some(f) => f.1.push(x),
                    None => result = Some(x),
                }
            }
            t if t.starts_with('[') => stack.push((t.to_string(), Vec::new())),
            d => {
                let x: u32 = d.parse().unwrap();
                match stack.last_mut() {
                    Some(f) => f.1.push(x),
                    None => result = Some(x),
                }
            }
        }
    }
    assert!(stack.is_empty());
    result.unwrap()
}

#[test]
fn lra_string_format() {
    let t = Tree::Node(Op::Max, vec![Tree::Leaf(2), Tree::Leaf(9)]);
    assert_eq!(t.to_lra_string(), "( ( ( [MAX 2 ) 9 ) ] )");
    let t = Tree::Node(
        Op::Sm,
        vec![
            Tree::Leaf(5),
            Tree::Node(Op::Min, vec![Tree::Leaf(3), Tree::Leaf(4)]),
            Tree::Leaf(8),
        ],
    );
    assert_eq!(
        t.to_lra_string(),
        "( ( ( ( [SM 5 ) ( ( ( [MIN 3 ) 4 ) ] ) ) 8 ) ] )"
    );
    assert_eq!(t.len(), 8); // [SM 5 [MIN 3 4 ] 8 ]
    assert_eq!(t.eval(), (5 + 3 + 8) % 10);
    let mut tok = Vec::new();
    listops::tokenize(&t.to_lra_string(), &mut tok).unwrap();
    assert_eq!(tok, vec![14, 6, 11, 4, 5, 15, 9, 15]);
    // MED of an even count: int of the mean of the middle two
    assert_eq!(Op::Med.apply(&[1, 4, 2, 9]), 3);
    assert_eq!(Op::Med.apply(&[7, 0, 3]), 3);
}

#[test]
fn generated_labels_match_an_independent_evaluator() {
    let o = GenOptions {
        min_length: 20,
        max_length: 300,
        ..GenOptions::default()
    };
    let mut rng = StdRng::seed_from_u64(1);
    let ex = listops::generate(2000, &o, &mut rng, &mut HashSet::new(), |_| {}).unwrap();
    let mut distinct = HashSet::new();
    for (s, label) in &ex {
        assert_eq!(eval_source(s), *label as u32, "{s}");
        let mut tok = Vec::new();
        listops::tokenize(s, &mut tok).unwrap();
        assert!(tok.len() > 20 && tok.len() < 300);
        assert!(distinct.insert(s.clone()), "duplicate {s}");
    }
}

/// Mean and second moment of the length of an unfiltered expression generated at `depth`, by the
/// recursion of the branching process: leaf (length 1) w.p. 1 − p below max depth, else
/// 2 + Σ_{i ≤ k} X_i with k ~ U{2..A} and X_i i.i.d. from the next depth.
fn length_moments(p: f64, max_depth: usize, max_args: usize) -> (f64, f64) {
    let ks: Vec<f64> = (2..=max_args).map(|k| k as f64).collect();
    let ek = ks.iter().sum::<f64>() / ks.len() as f64;
    let ekk = ks.iter().map(|k| k * (k - 1.0)).sum::<f64>() / ks.len() as f64;
    let (mut m1, mut m2) = (1.0, 1.0); // at max depth: a leaf
    for _ in 1..max_depth {
        let s1 = 2.0 + ek * m1;
        let s2 = 4.0 + 4.0 * ek * m1 + ek * m2 + ekk * m1 * m1;
        m1 = (1.0 - p) + p * s1;
        m2 = (1.0 - p) + p * s2;
    }
    (m1, m2)
}

#[test]
fn generator_follows_the_lra_rules() {
    let o = GenOptions::default();
    let mut rng = StdRng::seed_from_u64(2);
    let n = 200_000usize;
    let (mut sum, mut leaves, mut k_hist, mut op_hist) = (0.0, 0usize, [0usize; 11], [0usize; 4]);
    for _ in 0..n {
        let t = listops::generate_tree(&mut rng, 1, &o);
        sum += t.len() as f64;
        match &t {
            Tree::Leaf(_) => leaves += 1,
            Tree::Node(op, c) => {
                k_hist[c.len()] += 1;
                op_hist[*op as usize] += 1;
            }
        }
    }
    // root is a leaf with probability 0.75
    let pl = leaves as f64 / n as f64;
    assert!(
        (pl - 0.75).abs() < 5.0 * (0.75f64 * 0.25 / n as f64).sqrt(),
        "{pl}"
    );
    // arguments uniform on 2..=10 and operators uniform (chi-square, 8 and 3 degrees of freedom,
    // thresholds at p ≈ 1e-4)
    let nodes = (n - leaves) as f64;
    let chi = |obs: &[usize], e: f64| obs.iter().map(|&o| (o as f64 - e).powi(2) / e).sum::<f64>();
    assert_eq!(k_hist[0] + k_hist[1], 0);
    assert!(chi(&k_hist[2..], nodes / 9.0) < 30.0, "{k_hist:?}");
    assert!(chi(&op_hist, nodes / 4.0) < 21.0, "{op_hist:?}");
    // mean length against the branching-process formula
    let (m1, m2) = length_moments(0.25, 10, 10);
    let sd = (m2 - m1 * m1).sqrt();
    let mean = sum / n as f64;
    assert!(
        (mean - m1).abs() < 5.0 * sd / (n as f64).sqrt(),
        "mean length {mean} vs formula {m1} ± {}",
        sd / (n as f64).sqrt()
    );
}

#[test]
fn root_operator_baseline_matches_lra() {
    // The facts sheet: at 100 < length < 500, reading only the root operator gives 33.8% (measured
    // with LRA's generator).
    let o = GenOptions {
        min_length: 100,
        max_length: 500,
        ..GenOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    listops::generate_files(dir.path(), [6000, 100, 6000], &o, 9, |_| {}).unwrap();
    let train = listops::read_tsv(&dir.path().join("basic_train.tsv")).unwrap();
    let test = listops::read_tsv(&dir.path().join("basic_test.tsv")).unwrap();
    let acc = listops::root_operator_baseline(&train, &test);
    // standard error ≈ 0.6 points at 6000 examples
    eprintln!("root-operator baseline at 100 < length < 500: {acc:.4}");
    assert!((acc - 0.338).abs() < 0.025, "root-operator baseline {acc}");
    for i in 0..test.len() {
        let l = test.example(i).len();
        assert!(l > 100 && l < 500);
    }
}

#[test]
fn tsv_round_trip_and_task() {
    let dir = tempfile::tempdir().unwrap();
    let o = GenOptions {
        min_length: 5,
        max_length: 60,
        ..GenOptions::default()
    };
    listops::generate_files(dir.path(), [30, 5, 7], &o, 3, |_| {}).unwrap();
    let text = std::fs::read_to_string(dir.path().join("basic_train.tsv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Source\tTarget"));
    let rows: Vec<(String, u32)> = lines
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.to_string(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 30);
    let task = listops::ListOpsTask::load(dir.path(), None).unwrap();
    assert_eq!(task.size(Split::Train), 30);
    assert_eq!(task.size(Split::Test), 7);
    let len = task.spec().len;
    let mut b = Batch::default();
    task.fill(Split::Train, &[0, 3], &mut b).unwrap();
    assert_eq!(b.tokens.len(), 2 * len);
    for (j, &i) in [0usize, 3].iter().enumerate() {
        let (src, label) = &rows[i];
        assert_eq!(b.labels[j], *label);
        assert_eq!(eval_source(src), *label);
        let toks: Vec<&str> = src
            .split_whitespace()
            .filter(|t| *t != "(" && *t != ")")
            .collect();
        assert_eq!(b.lengths[j], toks.len());
        for (t, s) in toks.iter().enumerate() {
            let id = b.tokens[j * len + t];
            let want = match *s {
                "]" => 15,
                "[MIN" => 11,
                "[MAX" => 12,
                "[MED" => 13,
                "[SM" => 14,
                d => 1 + d.parse::<u32>().unwrap(),
            };
            assert_eq!(id, want);
        }
        assert!(
            b.tokens[j * len + toks.len()..(j + 1) * len]
                .iter()
                .all(|&t| t == 0)
        );
    }
    // truncation is counted
    let short = listops::ListOpsTask::load(dir.path(), Some(10)).unwrap();
    assert!(short.describe().contains("truncated"));
}

#[test]
fn malformed_tsv_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("basic_train.tsv");
    let cases: Vec<(&[u8], &str)> = vec![
        (b"Src\tTarget\n", ":1: header"),
        (
            b"Source\tTarget\n( ( [MAX 2 ) 3 ) ] )\t12\n",
            ":2: field Target",
        ),
        (
            b"Source\tTarget\n( ( [MAX 2 ) 3 ) ] )\tx\n",
            ":2: field Target",
        ),
        (
            b"Source\tTarget\n( ( [MAX 2 ) 3 ) ] )\t3\n[FOO 1 ]\t1\n",
            ":3: field Source: unknown token \"[FOO\"",
        ),
        (
            b"Source\tTarget\n( ( [MAX 2 ) 3 ) ] )\n",
            ":2: expected 2 tab-separated fields",
        ),
        (
            b"Source\tTarget\n( ( [MAX 2 ) \xff 3 ) ] )\t3\n",
            ":2: not UTF-8",
        ),
        (b"Source\tTarget\n( )\t3\n", ":2: field Source: empty"),
        (b"", "empty file"),
    ];
    for (content, want) in cases {
        std::fs::write(&p, content).unwrap();
        let e = listops::read_tsv(&p).unwrap_err().to_string();
        assert!(e.contains("basic_train.tsv"), "{e}");
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
    let e = listops::ListOpsTask::load(&dir.path().join("nope"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("basic_train.tsv") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn a_line_longer_than_the_limit_and_lengths_that_are_rarely_drawn_are_errors_not_hangs() {
    use std::io::Read;
    // a 65 MiB line is refused, naming the file and line, without being held in memory
    let head: &[u8] = b"Source\tTarget\n";
    let r = std::io::BufReader::new(head.chain(std::io::repeat(b'(').take(65 << 20)));
    let e = listops::parse_tsv(std::path::Path::new("basic_train.tsv"), r)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("basic_train.tsv:2") && e.contains("longer than 64 MiB"),
        "{e}"
    );
    // lengths the generator almost never draws: refused after 1e5 draws with the measured rate
    let o = GenOptions {
        min_length: 1900,
        max_length: 2000,
        max_depth: 2,
        ..GenOptions::default()
    };
    let t0 = std::time::Instant::now();
    let e = listops::generate(
        1000,
        &o,
        &mut StdRng::seed_from_u64(0),
        &mut HashSet::new(),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("of the first 100000 draws"), "{e}");
    assert!(t0.elapsed().as_secs() < 30, "{:?}", t0.elapsed());
}
