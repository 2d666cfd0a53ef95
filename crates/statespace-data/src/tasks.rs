//! Sequence tasks: sequential images (MNIST / Fashion-MNIST pixel by pixel, optionally permuted),
//! the adding problem and the copying task.
//!
//! ```text
//! sequential image   input  x_t = (pixel_t/255 − μ)/σ, t = 0 … 783 (one channel), label = class
//!                    psMNIST: the pixels in a fixed random order (same permutation for every image)
//! adding (T)         input  two channels: values U[0,1] and markers, exactly one marker in each half
//!                    target the sum of the two marked values (MSE; always predicting 1 gives ≈ 0.167)
//! copying (M, P, A)  tokens: M data symbols from 1 … A−2, then P blanks (0), then M markers (A−1)
//!                    targets: the M data symbols at the last M positions (other positions ignored)
//! ```
//!
//! Generated examples are a pure function of (seed, split, index).

use crate::idx::{self, IdxImages};
use crate::{DataError, IGNORE};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// A split of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training examples.
    Train,
    /// Validation examples (model selection).
    Val,
    /// Test examples (evaluated once, at the end).
    Test,
}

impl Split {
    /// `train`, `validation` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "validation",
            Split::Test => "test",
        }
    }

    fn salt(self) -> u64 {
        match self {
            Split::Train => 0x7472_6169_6e00_0001,
            Split::Val => 0x7661_6c00_0000_0002,
            Split::Test => 0x7465_7374_0000_0003,
        }
    }
}

/// What the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSpec {
    /// Real values, `channels` per step.
    Real {
        /// Channels per time step.
        channels: usize,
    },
    /// Token ids below `vocab`.
    Tokens {
        /// Vocabulary size.
        vocab: usize,
    },
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSpec {
    /// One class per sequence.
    Class {
        /// Number of classes.
        classes: usize,
    },
    /// One class per position (positions labelled [`IGNORE`] are not scored).
    ClassPerPosition {
        /// Number of classes.
        classes: usize,
    },
    /// Real targets per sequence (MSE).
    Regression {
        /// Number of targets.
        dims: usize,
    },
}

/// Shape of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// Inputs.
    pub input: InputSpec,
    /// Targets.
    pub target: TargetSpec,
    /// Sequence length (the longest, for variable-length tasks: shorter sequences are padded and
    /// carry their length in [`Batch::lengths`]).
    pub len: usize,
    /// Each example is a pair of sequences (two-tower tasks such as LRA Retrieval).
    pub pair: bool,
}

/// A batch in the engine's layout.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Real inputs `[B, channels, L]`.
    pub real: Vec<f32>,
    /// Token inputs `[B, L]`.
    pub tokens: Vec<u32>,
    /// Class labels `[B]`, or `[B, L]` for per-position targets.
    pub labels: Vec<u32>,
    /// Regression targets `[B, dims]`.
    pub targets: Vec<f32>,
    /// Valid length of each sequence `[B]` (`[2B]` for pair tasks; empty: all have the task's
    /// length). Positions at or beyond it hold padding (token 0 or 0.0).
    pub lengths: Vec<usize>,
    /// Length of the rows as laid out (0: the task's length); see [`Batch::trim`].
    pub len: usize,
}

impl Batch {
    /// Empties every field (keeping the capacity).
    pub fn reset(&mut self) {
        self.real.clear();
        self.tokens.clear();
        self.labels.clear();
        self.targets.clear();
        self.lengths.clear();
        self.len = 0;
    }

    /// Cuts the padding shared by every sequence: rows of length `spec.len` become rows of the
    /// longest valid length rounded up to a multiple of `multiple` (at most `spec.len`), in place.
    /// Returns the new row length. Nothing changes without per-sequence lengths.
    pub fn trim(&mut self, spec: &TaskSpec, multiple: usize) -> usize {
        let full = if self.len > 0 { self.len } else { spec.len };
        let Some(&longest) = self.lengths.iter().max() else {
            return full;
        };
        let m = multiple.max(1);
        let new = longest.div_ceil(m).saturating_mul(m).clamp(1, full);
        if new < full {
            let rows_compact = |v: &mut Vec<u32>| {
                let rows = v.len() / full;
                for r in 0..rows {
                    v.copy_within(r * full..r * full + new, r * new);
                }
                v.truncate(rows * new);
            };
            rows_compact(&mut self.tokens);
            if matches!(spec.target, TargetSpec::ClassPerPosition { .. }) {
                rows_compact(&mut self.labels);
            }
            let rows = self.real.len() / full;
            for r in 0..rows {
                self.real.copy_within(r * full..r * full + new, r * new);
            }
            self.real.truncate(rows * new);
        }
        self.len = new;
        new
    }
}

/// A sequence task with fixed-size splits addressable by index.
pub trait SeqTask: Send + Sync {
    /// A short description.
    fn describe(&self) -> String;
    /// Inputs, targets and length.
    fn spec(&self) -> TaskSpec;
    /// Number of examples in `split`.
    fn size(&self, split: Split) -> usize;
    /// Writes the examples `indices` of `split` into `batch` (replacing its contents). Tasks that
    /// read their files lazily report a file that became unreadable here.
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError>;
    /// Valid length of example `i` of `split` (the longer tower for pair tasks); fixed-length
    /// tasks return the task length. Used to group examples of similar length into batches.
    fn example_len(&self, split: Split, i: usize) -> usize {
        let _ = (split, i);
        self.spec().len
    }
}

pub(crate) fn example_rng(seed: u64, split: Split, index: usize) -> StdRng {
    let mut z = seed ^ split.salt() ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

// =================================================================================================

/// Sequential image classification from IDX files.
#[derive(Debug, Clone)]
pub struct ImageTask {
    name: String,
    train: IdxImages,
    train_labels: Vec<u8>,
    test: IdxImages,
    test_labels: Vec<u8>,
    /// Indices into the training file of the training split, then of the validation split.
    train_idx: Vec<usize>,
    val_idx: Vec<usize>,
    perm: Option<Vec<usize>>,
    mean: f32,
    std: f32,
}

fn find(dir: &Path, stem: &str) -> Result<std::path::PathBuf, DataError> {
    for cand in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&cand);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(DataError::File {
        file: dir.join(stem).display().to_string(),
        msg: format!(
            "missing (looked for {stem} and {stem}.gz in {})",
            dir.display()
        ),
    })
}

impl ImageTask {
    /// Loads `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…` from `dir`;
    /// holds out `val_size` training images (a fixed draw from `seed`) for validation; `permute`
    /// applies one fixed random pixel order (psMNIST).
    pub fn load(
        name: &str,
        dir: &Path,
        val_size: usize,
        permute: bool,
        seed: u64,
    ) -> Result<Self, DataError> {
        let train_p = find(dir, "train-images-idx3-ubyte")?;
        let train_l = find(dir, "train-labels-idx1-ubyte")?;
        let test_p = find(dir, "t10k-images-idx3-ubyte")?;
        let test_l = find(dir, "t10k-labels-idx1-ubyte")?;
        let train = idx::read_images(&train_p)?;
        let train_labels = idx::read_labels(&train_l, 10)?;
        let test = idx::read_images(&test_p)?;
        let test_labels = idx::read_labels(&test_l, 10)?;
        let mismatch = |p: &Path, n: usize, m: usize| DataError::File {
            file: p.display().to_string(),
            msg: format!("{n} labels for {m} images"),
        };
        if train_labels.len() != train.count {
            return Err(mismatch(&train_l, train_labels.len(), train.count));
        }
        if test_labels.len() != test.count {
            return Err(mismatch(&test_l, test_labels.len(), test.count));
        }
        if (test.rows, test.cols) != (train.rows, train.cols) {
            return Err(DataError::File {
                file: test_p.display().to_string(),
                msg: format!(
                    "images are {}×{}, the training images {}×{}",
                    test.rows, test.cols, train.rows, train.cols
                ),
            });
        }
        if val_size >= train.count {
            return Err(DataError::Setting {
                field: "val_size".into(),
                msg: format!(
                    "{val_size} validation images leave none of the {} for training",
                    train.count
                ),
            });
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x005e_ed0f_da7a);
        let mut order: Vec<usize> = (0..train.count).collect();
        order.shuffle(&mut rng);
        let val_idx = order[..val_size].to_vec();
        let mut train_idx = order[val_size..].to_vec();
        train_idx.sort_unstable();
        let len = train.rows * train.cols;
        let perm = permute.then(|| {
            let mut p: Vec<usize> = (0..len).collect();
            p.shuffle(&mut rng);
            p
        });
        // normalization from the training split's pixels
        let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0.0f64);
        for &i in &train_idx {
            for &px in &train.pixels[i * len..(i + 1) * len] {
                let v = px as f64 / 255.0;
                s += v;
                s2 += v * v;
                n += 1.0;
            }
        }
        let mean = s / n;
        let std = (s2 / n - mean * mean).max(1e-12).sqrt();
        Ok(Self {
            name: name.to_string(),
            train,
            train_labels,
            test,
            test_labels,
            train_idx,
            val_idx,
            perm,
            mean: mean as f32,
            std: std as f32,
        })
    }
}

impl ImageTask {
    /// Uses `pixel/255` without standardization.
    pub fn set_unit_scaling(&mut self) {
        self.mean = 0.0;
        self.std = 1.0;
    }
}

impl SeqTask for ImageTask {
    fn describe(&self) -> String {
        format!(
            "{} ({}×{} pixels as a sequence of {}{}; {} train / {} val / {} test)",
            self.name,
            self.train.rows,
            self.train.cols,
            self.train.rows * self.train.cols,
            if self.perm.is_some() {
                ", permuted"
            } else {
                ""
            },
            self.train_idx.len(),
            self.val_idx.len(),
            self.test.count
        )
    }

    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Real { channels: 1 },
            target: TargetSpec::Class { classes: 10 },
            len: self.train.rows * self.train.cols,
            pair: false,
        }
    }

    fn size(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_idx.len(),
            Split::Val => self.val_idx.len(),
            Split::Test => self.test.count,
        }
    }

    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        let len = self.train.rows * self.train.cols;
        for &i in indices {
            let (img, lab, j) = match split {
                Split::Train => (&self.train, &self.train_labels, self.train_idx[i]),
                Split::Val => (&self.train, &self.train_labels, self.val_idx[i]),
                Split::Test => (&self.test, &self.test_labels, i),
            };
            let px = &img.pixels[j * len..(j + 1) * len];
            for t in 0..len {
                let src = self.perm.as_ref().map_or(t, |p| p[t]);
                batch
                    .real
                    .push((px[src] as f32 / 255.0 - self.mean) / self.std);
            }
            batch.labels.push(lab[j] as u32);
        }
        Ok(())
    }
}

// =================================================================================================

/// The adding problem of length `t`.
#[derive(Debug, Clone)]
pub struct AddingTask {
    /// Sequence length T.
    pub t: usize,
    /// Split sizes (train, val, test).
    pub sizes: [usize; 3],
    /// Seed of the generator.
    pub seed: u64,
}

impl AddingTask {
    /// Checks the settings.
    pub fn new(t: usize, sizes: [usize; 3], seed: u64) -> Result<Self, DataError> {
        if t < 2 {
            return Err(DataError::Setting {
                field: "seq_len".into(),
                msg: format!("the adding problem needs T ≥ 2, got {t}"),
            });
        }
        Ok(Self { t, sizes, seed })
    }
}

fn split_size(sizes: &[usize; 3], split: Split) -> usize {
    match split {
        Split::Train => sizes[0],
        Split::Val => sizes[1],
        Split::Test => sizes[2],
    }
}

impl SeqTask for AddingTask {
    fn describe(&self) -> String {
        format!(
            "adding problem, T = {} ({} / {} / {} examples)",
            self.t, self.sizes[0], self.sizes[1], self.sizes[2]
        )
    }

    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Real { channels: 2 },
            target: TargetSpec::Regression { dims: 1 },
            len: self.t,
            pair: false,
        }
    }

    fn size(&self, split: Split) -> usize {
        split_size(&self.sizes, split)
    }

    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        let t = self.t;
        for &i in indices {
            let mut rng = example_rng(self.seed, split, i);
            let vals: Vec<f32> = (0..t).map(|_| rng.random::<f32>()).collect();
            let a = rng.random_range(0..t / 2);
            let b = rng.random_range(t / 2..t);
            batch.real.extend_from_slice(&vals);
            batch
                .real
                .extend((0..t).map(|j| if j == a || j == b { 1.0 } else { 0.0 }));
            batch.targets.push(vals[a] + vals[b]);
        }
        Ok(())
    }
}

// =================================================================================================

/// The copying task: remember `m` symbols across `blanks` steps.
#[derive(Debug, Clone)]
pub struct CopyingTask {
    /// Symbols to copy (M).
    pub m: usize,
    /// Blank steps between the symbols and the markers.
    pub blanks: usize,
    /// Alphabet size A including blank (0) and marker (A−1): data symbols are 1 … A−2.
    pub alphabet: usize,
    /// Split sizes (train, val, test).
    pub sizes: [usize; 3],
    /// Seed of the generator.
    pub seed: u64,
}

impl CopyingTask {
    /// Checks the settings.
    pub fn new(
        m: usize,
        blanks: usize,
        alphabet: usize,
        sizes: [usize; 3],
        seed: u64,
    ) -> Result<Self, DataError> {
        if m == 0 {
            return Err(DataError::Setting {
                field: "copy_tokens".into(),
                msg: "must be at least 1".into(),
            });
        }
        if alphabet < 3 {
            return Err(DataError::Setting {
                field: "alphabet".into(),
                msg: format!("needs blank, marker and at least one symbol: ≥ 3, got {alphabet}"),
            });
        }
        Ok(Self {
            m,
            blanks,
            alphabet,
            sizes,
            seed,
        })
    }

    fn len(&self) -> usize {
        2 * self.m + self.blanks
    }
}

impl SeqTask for CopyingTask {
    fn describe(&self) -> String {
        format!(
            "copying: {} symbols of {} across {} blanks (L = {}; {} / {} / {} examples)",
            self.m,
            self.alphabet - 2,
            self.blanks,
            self.len(),
            self.sizes[0],
            self.sizes[1],
            self.sizes[2]
        )
    }

    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Tokens {
                vocab: self.alphabet,
            },
            target: TargetSpec::ClassPerPosition {
                classes: self.alphabet,
            },
            len: self.len(),
            pair: false,
        }
    }

    fn size(&self, split: Split) -> usize {
        split_size(&self.sizes, split)
    }

    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        let (m, len) = (self.m, self.len());
        let marker = (self.alphabet - 1) as u32;
        for &i in indices {
            let mut rng = example_rng(self.seed, split, i);
            let data: Vec<u32> = (0..m).map(|_| rng.random_range(1..marker)).collect();
            batch.tokens.extend_from_slice(&data);
            batch.tokens.extend(std::iter::repeat_n(0, self.blanks));
            batch.tokens.extend(std::iter::repeat_n(marker, m));
            batch.labels.extend(std::iter::repeat_n(IGNORE, len - m));
            batch.labels.extend_from_slice(&data);
        }
        Ok(())
    }
}

// =================================================================================================

/// The first examples of each split of a dataset task: `train_size` / `test_size` of a run on a
/// dataset (`None` keeps a split whole). The examples keep their indices, so example `i` is the
/// inner task's example `i`.
pub struct Subset {
    inner: Box<dyn SeqTask>,
    limits: [Option<usize>; 3],
}

impl Subset {
    /// Keeps at most `limits[s]` examples of split s (train, validation, test).
    pub fn new(inner: Box<dyn SeqTask>, limits: [Option<usize>; 3]) -> Self {
        Self { inner, limits }
    }

    fn limit(&self, split: Split) -> Option<usize> {
        self.limits[match split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        }]
    }
}

impl SeqTask for Subset {
    fn describe(&self) -> String {
        let kept: Vec<String> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .filter(|s| self.limit(*s).is_some())
            .map(|s| format!("{} {}", self.size(s), s.name()))
            .collect();
        format!(
            "{} (the first {} examples)",
            self.inner.describe(),
            kept.join(", ")
        )
    }
    fn spec(&self) -> TaskSpec {
        self.inner.spec()
    }
    fn size(&self, split: Split) -> usize {
        let n = self.inner.size(split);
        self.limit(split).map_or(n, |k| k.min(n))
    }
    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        let n = self.size(split);
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::Setting {
                field: format!(
                    "{}_size",
                    if split == Split::Test {
                        "test"
                    } else {
                        "train"
                    }
                ),
                msg: format!(
                    "example {i} of the {} split does not exist (the run keeps {n})",
                    split.name()
                ),
            });
        }
        self.inner.fill(split, indices, batch)
    }
    fn example_len(&self, split: Split, i: usize) -> usize {
        self.inner.example_len(split, i)
    }
}
