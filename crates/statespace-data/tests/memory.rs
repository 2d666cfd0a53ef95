//! The synthetic memory tasks follow their rules: every target is recomputed from the inputs by a
//! separate procedure; noise padding keeps the inner task and appends U[0,1) noise.

use statespace_data::memory::{MemoryKind, MemoryTask, NoisePadded};
use statespace_data::tasks::AddingTask;
use statespace_data::{Batch, IGNORE, SeqTask, Split};

fn examples(t: &MemoryTask, n: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut b = Batch::default();
    let idx: Vec<usize> = (0..n).collect();
    t.fill(Split::Train, &idx, &mut b).unwrap();
    let l = t.spec().len;
    (0..n)
        .map(|i| {
            (
                b.tokens[i * l..(i + 1) * l].to_vec(),
                b.labels[i * l..(i + 1) * l].to_vec(),
            )
        })
        .collect()
}

#[test]
fn selective_copying_rules() {
    let (span, m, a) = (30, 5, 9);
    let t = MemoryTask::new(
        MemoryKind::SelectiveCopying {
            span,
            tokens: m,
            alphabet: a,
        },
        [50, 5, 5],
        1,
    )
    .unwrap();
    assert_eq!(t.spec().len, span + 2 * m);
    for (x, y) in examples(&t, 50) {
        let data: Vec<u32> = x[..span + m].iter().copied().filter(|&v| v != 0).collect();
        assert_eq!(data.len(), m);
        assert!(data.iter().all(|&v| v >= 1 && v <= a as u32 - 2));
        assert!(x[span + m..].iter().all(|&v| v == a as u32 - 1));
        assert!(y[..span + m].iter().all(|&v| v == IGNORE));
        assert_eq!(&y[span + m..], &data[..]);
    }
}

#[test]
fn associative_recall_rules() {
    let t = MemoryTask::new(
        MemoryKind::AssociativeRecall {
            pairs: 6,
            keys: 10,
            values: 7,
        },
        [100, 5, 5],
        2,
    )
    .unwrap();
    let mut seen_q = std::collections::HashSet::new();
    for (x, y) in examples(&t, 100) {
        let n = 6;
        let keys: Vec<u32> = (0..n).map(|k| x[2 * k]).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), n, "keys distinct");
        assert!(keys.iter().all(|&k| (1..=10).contains(&k)));
        assert!((0..n).all(|k| (11..=17).contains(&x[2 * k + 1])));
        let q = x[2 * n];
        let at = keys.iter().position(|&k| k == q).expect("query is a key");
        seen_q.insert(at);
        assert_eq!(y[2 * n], x[2 * at + 1]);
        assert!(y[..2 * n].iter().all(|&v| v == IGNORE));
    }
    assert_eq!(seen_q.len(), 6, "every pair gets queried");
}

#[test]
fn mqar_rules() {
    let (d, l) = (4, 40);
    let t = MemoryTask::new(
        MemoryKind::Mqar {
            pairs: d,
            len: l,
            keys: 12,
            values: 9,
        },
        [60, 5, 5],
        3,
    )
    .unwrap();
    for (x, y) in examples(&t, 60) {
        let mut queries = 0;
        for p in 2 * d..l {
            if y[p] != IGNORE {
                queries += 1;
                let k = (0..d)
                    .find(|&k| x[2 * k] == x[p])
                    .expect("a query is a key");
                assert_eq!(y[p], x[2 * k + 1]);
            } else {
                assert_eq!(x[p], 0);
            }
        }
        assert_eq!(queries, d);
    }
}

#[test]
fn induction_heads_rules() {
    let (l, v) = (25, 8);
    let t = MemoryTask::new(
        MemoryKind::InductionHeads { len: l, vocab: v },
        [80, 5, 5],
        4,
    )
    .unwrap();
    for (x, y) in examples(&t, 80) {
        let trig = (v - 1) as u32;
        let at: Vec<usize> = (0..l).filter(|&p| x[p] == trig).collect();
        assert_eq!(at.len(), 2, "{x:?}");
        assert_eq!(at[1], l - 1);
        assert_eq!(y[l - 1], x[at[0] + 1]);
        assert!(y[..l - 1].iter().all(|&v| v == IGNORE));
    }
    // seeded: the same example twice, different splits differ
    assert_eq!(t.example(Split::Val, 3), t.example(Split::Val, 3));
    assert_ne!(t.example(Split::Val, 3), t.example(Split::Test, 3));
}

#[test]
fn bad_settings_are_named() {
    let e = MemoryTask::new(
        MemoryKind::AssociativeRecall {
            pairs: 9,
            keys: 4,
            values: 3,
        },
        [1, 1, 1],
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("task.pairs"), "{e}");
    let e = MemoryTask::new(
        MemoryKind::InductionHeads { len: 3, vocab: 8 },
        [1, 1, 1],
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("task.seq_len"), "{e}");
}

#[test]
fn noise_padding_appends_uniform_noise() {
    let inner = AddingTask::new(20, [8, 2, 2], 5).unwrap();
    let mut bi = Batch::default();
    inner.fill(Split::Test, &[0, 1], &mut bi).unwrap();
    let t = NoisePadded::new(Box::new(AddingTask::new(20, [8, 2, 2], 5).unwrap()), 15, 9).unwrap();
    assert_eq!(t.spec().len, 35);
    let mut b = Batch::default();
    t.fill(Split::Test, &[0, 1], &mut b).unwrap();
    assert_eq!(b.real.len(), 2 * 2 * 35);
    for row in 0..4 {
        assert_eq!(
            &b.real[row * 35..row * 35 + 20],
            &bi.real[row * 20..(row + 1) * 20]
        );
        assert!(
            b.real[row * 35 + 20..(row + 1) * 35]
                .iter()
                .all(|v| (0.0..1.0).contains(v))
        );
    }
    assert_eq!(b.targets, bi.targets);
    let mut b2 = Batch::default();
    t.fill(Split::Test, &[1], &mut b2).unwrap();
    assert_eq!(&b2.real[..], &b.real[70..]);
    let tok = MemoryTask::new(
        MemoryKind::InductionHeads { len: 8, vocab: 5 },
        [1, 1, 1],
        0,
    )
    .unwrap();
    assert!(NoisePadded::new(Box::new(tok), 4, 0).is_err());
}
