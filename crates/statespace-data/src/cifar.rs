//! CIFAR-10 (binary version) as sequential images: LRA Image (grayscale, L = 1024) and sCIFAR
//! (RGB, 3 channels, L = 1024).
//!
//! ```text
//! files     data_batch_1.bin … data_batch_5.bin, test_batch.bin (in DIR or DIR/cifar-10-batches-bin)
//! record    1 label byte (0–9), then 3072 bytes: the R plane, the G plane, the B plane, each 32×32
//!           row-major; 10,000 records per file
//! gray      0.299 R + 0.587 G + 0.114 B  (ITU-R 601, as PIL and torchvision's Grayscale)
//! input     x[c, t] = (pixel/255 − μ_c)/σ_c, t = row·32 + col; μ, σ from the training split
//! ```

use crate::DataError;
use crate::tasks::{Batch, InputSpec, SeqTask, Split, TargetSpec, TaskSpec};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// Bytes of one record.
pub const RECORD: usize = 1 + 3072;
/// Pixels per plane.
pub const PIXELS: usize = 1024;

/// The records of one or more files: labels and the 3072 pixel bytes of each image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CifarImages {
    /// Labels 0–9.
    pub labels: Vec<u8>,
    /// `[n, 3, 1024]` bytes.
    pub pixels: Vec<u8>,
}

/// Reads one CIFAR-10 binary file, appending to `out`. Errors name the file and the record.
pub fn read_batch(path: &Path, out: &mut CifarImages) -> Result<(), DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::File {
        file: path.display().to_string(),
        msg: format!("cannot read: {e}"),
    })?;
    parse_batch(path, &raw, out)
}

/// Parses the bytes of a CIFAR-10 binary file, appending to `out`; `path` names it in errors.
pub fn parse_batch(path: &Path, raw: &[u8], out: &mut CifarImages) -> Result<(), DataError> {
    let file = path.display().to_string();
    if raw.is_empty() {
        return Err(DataError::File {
            file,
            msg: "empty file (expected records of 1 label byte + 3072 pixel bytes)".into(),
        });
    }
    if !raw.len().is_multiple_of(RECORD) {
        return Err(DataError::File {
            file,
            msg: format!(
                "record {} is truncated: the file has {} bytes, not a multiple of the record size {RECORD} (1 label + 3072 pixels)",
                raw.len() / RECORD,
                raw.len()
            ),
        });
    }
    for (i, rec) in raw.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(DataError::File {
                file,
                msg: format!(
                    "record {i} (byte offset {}): label {} is not a class 0–9",
                    i * RECORD,
                    rec[0]
                ),
            });
        }
        out.labels.push(rec[0]);
        out.pixels.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// Writes records in the CIFAR-10 binary layout (for tests and tools).
pub fn write_batch(path: &Path, labels: &[u8], pixels: &[u8]) -> Result<(), DataError> {
    assert_eq!(pixels.len(), labels.len() * 3072, "3072 bytes per image");
    let mut raw = Vec::with_capacity(labels.len() * RECORD);
    for (i, &l) in labels.iter().enumerate() {
        raw.push(l);
        raw.extend_from_slice(&pixels[i * 3072..(i + 1) * 3072]);
    }
    std::fs::write(path, raw).map_err(|e| DataError::File {
        file: path.display().to_string(),
        msg: e.to_string(),
    })
}

fn locate(dir: &Path) -> PathBuf {
    let sub = dir.join("cifar-10-batches-bin");
    if sub.join("test_batch.bin").exists() {
        sub
    } else {
        dir.to_path_buf()
    }
}

/// Sequential CIFAR-10.
#[derive(Debug, Clone)]
pub struct CifarTask {
    train: CifarImages,
    test: CifarImages,
    train_idx: Vec<usize>,
    val_idx: Vec<usize>,
    gray: bool,
    mean: [f32; 3],
    std: [f32; 3],
}

impl CifarTask {
    /// Reads the six files from `dir` (or `dir/cifar-10-batches-bin`); holds out `val_size`
    /// training images (a fixed draw from `seed`) for validation.
    pub fn load(dir: &Path, gray: bool, val_size: usize, seed: u64) -> Result<Self, DataError> {
        let d = locate(dir);
        let mut train = CifarImages::default();
        for k in 1..=5 {
            let p = d.join(format!("data_batch_{k}.bin"));
            if !p.exists() {
                return Err(DataError::File {
                    file: p.display().to_string(),
                    msg: "missing (CIFAR-10 binary version: data_batch_1.bin … data_batch_5.bin, test_batch.bin)".into(),
                });
            }
            read_batch(&p, &mut train)?;
        }
        let mut test = CifarImages::default();
        let tp = d.join("test_batch.bin");
        if !tp.exists() {
            return Err(DataError::File {
                file: tp.display().to_string(),
                msg: "missing".into(),
            });
        }
        read_batch(&tp, &mut test)?;
        let n = train.labels.len();
        if val_size >= n {
            return Err(DataError::Setting {
                field: "val_size".into(),
                msg: format!("{val_size} validation images leave none of the {n} for training"),
            });
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0xc1fa_0010);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let val_idx = order[..val_size].to_vec();
        let mut train_idx = order[val_size..].to_vec();
        train_idx.sort_unstable();
        let mut t = Self {
            train,
            test,
            train_idx,
            val_idx,
            gray,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        // per-channel statistics of the training split
        let ch = t.channels();
        let (mut s, mut s2) = ([0.0f64; 3], [0.0f64; 3]);
        let mut buf = vec![0f32; ch * PIXELS];
        for &i in &t.train_idx {
            t.raw(&t.train, i, &mut buf);
            for c in 0..ch {
                for &v in &buf[c * PIXELS..(c + 1) * PIXELS] {
                    s[c] += v as f64;
                    s2[c] += (v as f64) * (v as f64);
                }
            }
        }
        let m = (t.train_idx.len() * PIXELS) as f64;
        for c in 0..ch {
            let mean = s[c] / m;
            t.mean[c] = mean as f32;
            t.std[c] = (s2[c] / m - mean * mean).max(1e-12).sqrt() as f32;
        }
        Ok(t)
    }

    fn channels(&self) -> usize {
        if self.gray { 1 } else { 3 }
    }

    /// Pixel values in [0, 1], `[channels, 1024]`.
    fn raw(&self, imgs: &CifarImages, i: usize, out: &mut [f32]) {
        let px = &imgs.pixels[i * 3072..(i + 1) * 3072];
        if self.gray {
            for t in 0..PIXELS {
                let (r, g, b) = (
                    px[t] as f32,
                    px[PIXELS + t] as f32,
                    px[2 * PIXELS + t] as f32,
                );
                out[t] = (0.299 * r + 0.587 * g + 0.114 * b) / 255.0;
            }
        } else {
            for (o, &p) in out.iter_mut().zip(px) {
                *o = p as f32 / 255.0;
            }
        }
    }
}

impl SeqTask for CifarTask {
    fn describe(&self) -> String {
        format!(
            "sequential CIFAR-10 ({}, 1024 steps; {} train / {} val / {} test)",
            if self.gray {
                "grayscale, LRA Image"
            } else {
                "RGB, 3 channels"
            },
            self.train_idx.len(),
            self.val_idx.len(),
            self.test.labels.len()
        )
    }

    fn spec(&self) -> TaskSpec {
        TaskSpec {
            input: InputSpec::Real {
                channels: self.channels(),
            },
            target: TargetSpec::Class { classes: 10 },
            len: PIXELS,
            pair: false,
        }
    }

    fn size(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_idx.len(),
            Split::Val => self.val_idx.len(),
            Split::Test => self.test.labels.len(),
        }
    }

    fn fill(&self, split: Split, indices: &[usize], batch: &mut Batch) -> Result<(), DataError> {
        batch.reset();
        let ch = self.channels();
        let mut buf = vec![0f32; ch * PIXELS];
        for &i in indices {
            let (imgs, j) = match split {
                Split::Train => (&self.train, self.train_idx[i]),
                Split::Val => (&self.train, self.val_idx[i]),
                Split::Test => (&self.test, i),
            };
            self.raw(imgs, j, &mut buf);
            for c in 0..ch {
                batch.real.extend(
                    buf[c * PIXELS..(c + 1) * PIXELS]
                        .iter()
                        .map(|v| (v - self.mean[c]) / self.std[c]),
                );
            }
            batch.labels.push(imgs.labels[j] as u32);
        }
        Ok(())
    }
}
