//! Synthetic memory tasks, generated on the fly (an example is a pure function of seed, split and
//! index). Token inputs; targets per position ([`IGNORE`] where nothing is asked).
//!
//! ```text
//! selective copying (L, M, A)   M symbols from 1…A−2 at sorted random positions among L + M steps
//!                               (0 elsewhere), then M markers A−1; targets: the M symbols in order
//!                               at the last M steps                         length L + 2M, vocab A
//! associative recall (n, K, V)  k₁ v₁ k₂ v₂ … k_n v_n q: n distinct keys from 1…K, values from
//!                               K+1…K+V, the query q one of the keys; target at the last step: its
//!                               value                                       length 2n + 1, vocab 1+K+V
//! MQAR (D, L, K, V)             (Zoology) D key–value pairs, then L − 2D steps of 0 in which each
//!                               of the D keys appears once more at a random position; target at
//!                               each re-appearance: its value              length L, vocab 1+K+V
//! induction heads (L, V)        random symbols from 1…V−2; the trigger V−1 once at a random step
//!                               p ≤ L − 3 followed by a symbol x, and again at the last step;
//!                               target at the last step: x                 length L, vocab V
//! ```

use crate::tasks::{Batch, InputSpec, SeqTask, Split, TargetSpec, TaskSpec, example_rng};
use crate::{DataError, IGNORE};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

fn setting(field: &str, msg: String) -> DataError {
    DataError::Setting {
        field: field.into(),
        msg,
    }
}

/// Which memory task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Selective copying: span L, M symbols, alphabet A.
    SelectiveCopying {
        /// Noise steps in the data span.
        span: usize,
        /// Symbols to copy.
        tokens: usize,
        /// Alphabet size including 0 and the marker.
        alphabet: usize,
    },
    /// Associative recall: n pairs, K keys, V values.
    AssociativeRecall {
        /// Key–value pairs.
        pairs: usize,
        /// Key vocabulary.
        keys: usize,
        /// Value vocabulary.
        values: usize,
    },
    /// Multi-query associative recall.
    Mqar {
        /// Key–value pairs (and queries).
        pairs: usize,
        /// Sequence length.
        len: usize,
        /// Key vocabulary.
        keys: usize,
        /// Value vocabulary.
        values: usize,
    },
    /// Induction heads.
    InductionHeads {
        /// Sequence length.
        len: usize,
        /// Vocabulary including the trigger.
        vocab: usize,
    },
}

/// A memory task with fixed split sizes.
#[derive(Debug, Clone)]
pub struct MemoryTask {
    kind: MemoryKind,
    sizes: [usize; 3],
    seed: u64,
}

impl MemoryTask {
    /// Checks the settings.
    pub fn new(kind: MemoryKind, sizes: [usize; 3], seed: u64) -> Result<Self, DataError> {
        match kind {
            MemoryKind::SelectiveCopying {
                span,
                tokens,
                alphabet,
            } => {
                if alphabet < 3 || tokens == 0 || span == 0 {
                    return Err(setting(
                        "alphabet",
                        format!(
                            "selective copying needs alphabet ≥ 3, copy_tokens ≥ 1, seq_len ≥ 1 (got {alphabet}, {tokens}, {span})"
                        ),
                    ));
                }
            }
            MemoryKind::AssociativeRecall { pairs, keys, .. } => {
                if pairs == 0 || keys < pairs {
                    return Err(setting(
                        "pairs",
                        format!(
                            "associative recall needs 1 ≤ pairs ≤ keys (got {pairs} pairs, {keys} keys)"
                        ),
                    ));
                }
            }
            MemoryKind::Mqar {
                pairs, len, keys, ..
            } => {
                if pairs == 0 || keys < pairs || len < 3 * pairs {
                    return Err(setting(
                        "pairs",
                        format!(
                            "MQAR needs 1 ≤ pairs ≤ keys and seq_len ≥ 3·pairs (got {pairs} pairs, {keys} keys, length {len})"
                        ),
                    ));
                }
            }
            MemoryKind::InductionHeads { len, vocab } => {
                if len < 4 || vocab < 3 {
                    return Err(setting(
                        "seq_len",
                        format!(
                            "induction heads needs seq_len ≥ 4 and alphabet ≥ 3 (got {len}, {vocab})"
                        ),
                    ));
                }
            }
        }
        Ok(Self { kind, sizes, seed })
    }

    fn vocab(&self) -> usize {
        match self.kind {
            MemoryKind::SelectiveCopying { alphabet, .. } => alphabet,
            MemoryKind::AssociativeRecall { keys, values, .. }
            | MemoryKind::Mqar { keys, values, .. } => 1 + keys + values,
            MemoryKind::InductionHeads { vocab, .. } => vocab,
        }
    }

    fn len(&self) -> usize {
        match self.kind {
            MemoryKind::SelectiveCopying { span, tokens, .. } => span + 2 * tokens,
            MemoryKind::AssociativeRecall { pairs, .. } => 2 * pairs + 1,
            MemoryKind::Mqar { len, .. } | MemoryKind::InductionHeads { len, .. } => len,
        }
    }

    /// Example `i` of `split`: (tokens, targets).
    pub fn example(&self, split: Split, i: usize) -> (Vec<u32>, Vec<u32>) {
        let mut r = example_rng(self.seed, split, i);
        let len = self.len();
        let mut x = vec![0u32; len];
        let mut y = vec![IGNORE; len];
        match self.kind {
            MemoryKind::SelectiveCopying {
                span,
                tokens,
                alphabet,
            } => {
                let mut pos: Vec<usize> = (0..span + tokens).collect();
                pos.shuffle(&mut r);
                let mut pos = pos[..tokens].to_vec();
                pos.sort_unstable();
                for (k, &p) in pos.iter().enumerate() {
                    let s = r.random_range(1..alphabet as u32 - 1);
                    x[p] = s;
                    y[span + tokens + k] = s;
                }
                for v in &mut x[span + tokens..] {
                    *v = alphabet as u32 - 1;
                }
            }
            MemoryKind::AssociativeRecall {
                pairs,
                keys,
                values,
            } => {
                let ks = kv_pairs(&mut r, &mut x, pairs, keys, values);
                let q = r.random_range(0..pairs);
                x[2 * pairs] = ks[q];
                y[2 * pairs] = x[2 * q + 1];
            }
            MemoryKind::Mqar {
                pairs,
                len,
                keys,
                values,
            } => {
                let ks = kv_pairs(&mut r, &mut x, pairs, keys, values);
                let mut slots: Vec<usize> = (2 * pairs..len).collect();
                slots.shuffle(&mut r);
                for k in 0..pairs {
                    x[slots[k]] = ks[k];
                    y[slots[k]] = x[2 * k + 1];
                }
            }
            MemoryKind::InductionHeads { len, vocab } => {
                let trig = vocab as u32 - 1;
                for v in x.iter_mut() {
                    *v = r.random_range(1..trig);
                }
                let p = r.random_range(0..=len - 3);
                let sym = *(1..trig)
                    .collect::<Vec<u32>>()
                    .choose(&mut r)
                    .expect("vocab ≥ 3");
                x[p] = trig;
                x[p + 1] = sym;
                x[len - 1] = trig;
                y[len - 1] = sym;
            }
        }
        (x, y)
    }
}

/// Writes `pairs` key–value pairs `k v` at the start of `x` (distinct keys from 1…K, values from
/// K+1…K+V); returns the shuffled keys (the first `pairs` are used, in order).
fn kv_pairs(r: &mut impl Rng, x: &mut [u32], pairs: usize, keys: usize, values: usize) -> Vec<u32> {
    let mut ks: Vec<u32> = (1..=keys as u32).collect();
    ks.shuffle(r);
    for k in 0..pairs {
        x[2 * k] = ks[k];
        x[2 * k + 1] = 1 + keys as u32 + r.random_range(0..values as u32);
    }
    ks
}

impl SeqTask for MemoryTask {
    fn describe(&self) -> String {
        let what = match self.kind {
            MemoryKind::SelectiveCopying {
                span,
                tokens,
                alphabet,
            } => {
                format!("selective copying (span {span}, {tokens} symbols, alphabet {alphabet})")
            }
            MemoryKind::AssociativeRecall {
                pairs,
                keys,
                values,
            } => {
                format!("associative recall ({pairs} pairs, {keys} keys, {values} values)")
            }
            MemoryKind::Mqar {
                pairs,
                len,
                keys,
                values,
            } => {
                format!("MQAR ({pairs} pairs, length {len}, {keys} keys, {values} values)")
            }
            MemoryKind::InductionHeads { len, vocab } => {
                format!("induction heads (length {len}, vocabulary {vocab})")
            }
        };
        format!(
            "{what}; {} train / {} val / {} test",
            self.sizes[0], self.sizes[1], self.sizes[2]
        )
    }
    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Tokens {
                vocab: self.vocab(),
            },
            target: TargetSpec::ClassPerPosition {
                classes: self.vocab(),
            },
            len: self.len(),
            pair: false,
        }
    }
    fn size(&self, split: Split) -> usize {
        self.sizes[match split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        }]
    }
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        for &i in indices {
            let (x, y) = self.example(split, i);
            batch.tokens.extend(x);
            batch.labels.extend(y);
        }
        Ok(())
    }
}

/// A real-input task followed by `pad` steps of U[0,1) noise in every channel (HOPE's
/// noise-padded sequential images); the noise of an example is a function of (seed, split, index).
pub struct NoisePadded {
    inner: Box<dyn SeqTask>,
    pad: usize,
    seed: u64,
}

impl NoisePadded {
    /// Wraps `inner` (real inputs only).
    pub fn new(inner: Box<dyn SeqTask>, pad: usize, seed: u64) -> Result<Self, DataError> {
        if !matches!(inner.spec().input, InputSpec::Real { .. }) {
            return Err(setting(
                "noise_pad",
                "noise padding needs a task with real inputs (an image task)".into(),
            ));
        }
        Ok(Self { inner, pad, seed })
    }
}

impl SeqTask for NoisePadded {
    fn describe(&self) -> String {
        format!(
            "{}, then {} steps of U[0,1) noise",
            self.inner.describe(),
            self.pad
        )
    }
    fn spec(&self) -> TaskSpec {
        let s = self.inner.spec();
        TaskSpec {
            len: s.len + self.pad,
            ..s
        }
    }
    fn size(&self, split: Split) -> usize {
        self.inner.size(split)
    }
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        self.inner.fill(split, indices, batch)?;
        let s = self.inner.spec();
        let InputSpec::Real { channels } = s.input else {
            unreachable!("checked in new")
        };
        let (l, n) = (s.len, s.len + self.pad);
        let rows = indices.len() * channels;
        let mut out = Vec::with_capacity(rows * n);
        for (b, &i) in indices.iter().enumerate() {
            let mut r = example_rng(self.seed ^ 0x0015_e9ad, split, i);
            for c in 0..channels {
                let row = b * channels + c;
                out.extend_from_slice(&batch.real[row * l..(row + 1) * l]);
                out.extend((0..self.pad).map(|_| r.random::<f32>()));
            }
        }
        batch.real = out;
        Ok(())
    }
}
