//! # statespace-data
//!
//! Datasets and generated tasks for statespace, independent of the engine: readers of the standard
//! file formats ([`idx`]: MNIST / Fashion-MNIST; [`listops`]: ListOps TSV; [`text`]: IMDB's
//! `aclImdb` layout and AAN pairs; [`cifar`]: CIFAR-10 binary; [`pathfinder`]: Pathfinder PNG +
//! metadata) and seeded generators ([`tasks`]: adding problem, copying, image tasks; [`memory`]:
//! selective copying, associative recall, MQAR, induction heads, noise padding; ListOps and
//! Pathfinder in their readers' formats).
//! Every task is a [`SeqTask`]: a fixed number of examples per split, any of which can be written
//! into a batch by index — so data order is a function of (seed, epoch) and training can resume
//! exactly.

pub mod cifar;
pub mod idx;
pub mod listops;
pub mod memory;
pub mod pathfinder;
pub mod tasks;
pub mod text;

pub use tasks::{Batch, InputSpec, SeqTask, Split, Subset, TargetSpec, TaskSpec};

/// The longest line a text reader accepts (bytes): LRA's longest lines (AAN pairs) are ≈ 100 KB, so
/// a longer one is a damaged or wrong file, refused before it is held in memory.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Reads one line (through `\n`) into `buf` like `read_until`, but refuses one longer than
/// [`MAX_LINE_BYTES`] with an error instead of growing `buf` without bound.
pub fn read_bounded_line(
    r: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use std::io::{BufRead, Read};
    let n = r
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if n > MAX_LINE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a line longer than {} MiB (not a data file of this task?)",
                MAX_LINE_BYTES >> 20
            ),
        ));
    }
    Ok(n)
}

/// Targets equal to this are not scored (per-position tasks score only some positions).
pub const IGNORE: u32 = u32::MAX;

/// Errors of the data layer; every one names the file (or the setting) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A problem with a file.
    #[error("{file}: {msg}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// A problem with the task's settings.
    #[error("task.{field}: {msg}")]
    Setting {
        /// The setting.
        field: String,
        /// What is wrong.
        msg: String,
    },
}
