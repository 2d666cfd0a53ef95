//! IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed.
//!
//! ```text
//! magic   u32 big-endian: 0x00000803 (u8 images, 3 dims) or 0x00000801 (u8 labels, 1 dim)
//! dims    one u32 big-endian per dimension (count, rows, cols | count)
//! data    the u8 values, row-major
//! ```
//!
//! Every problem is reported with the file name and what is wrong: bad magic, unsupported type,
//! truncated header or data (with the byte counts), trailing bytes, labels out of range.

use crate::DataError;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// Images of an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count × rows × cols` pixels.
    pub pixels: Vec<u8>,
}

fn err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::File {
        file: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Reads a whole file, decompressing gzip (detected by its magic bytes `1f 8b`).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| err(path, format!("cannot read the file: {e}")))?;
    decode_maybe_gz(path, raw)
}

/// Decompresses `raw` if it is a gzip stream (magic `1f 8b`); `path` names it in errors.
pub fn decode_maybe_gz(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| err(path, format!("corrupt or truncated gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(path: &Path, bytes: &[u8], want_dims: u8) -> Result<Vec<usize>, DataError> {
    if bytes.len() < 4 {
        return Err(err(
            path,
            format!(
                "truncated header: {} bytes, an IDX file starts with a 4-byte magic",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            path,
            format!(
                "bad magic {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(err(
            path,
            format!(
                "unsupported element type 0x{:02x} (only 0x08, unsigned bytes)",
                bytes[2]
            ),
        ));
    }
    if bytes[3] != want_dims {
        return Err(err(
            path,
            format!(
                "has {} dimensions, expected {want_dims} (magic 0x0000080{want_dims})",
                bytes[3]
            ),
        ));
    }
    let n = want_dims as usize;
    if bytes.len() < 4 + 4 * n {
        return Err(err(
            path,
            format!(
                "truncated header: {} bytes, need {}",
                bytes.len(),
                4 + 4 * n
            ),
        ));
    }
    Ok((0..n)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect())
}

fn body<'a>(
    path: &Path,
    bytes: &'a [u8],
    offset: usize,
    expected: usize,
    what: &str,
) -> Result<&'a [u8], DataError> {
    let have = bytes.len() - offset;
    if have < expected {
        return Err(err(
            path,
            format!("truncated data: {have} bytes of {what}, the header promises {expected}"),
        ));
    }
    if have > expected {
        return Err(err(
            path,
            format!(
                "{} trailing bytes after the {expected} bytes of {what}",
                have - expected
            ),
        ));
    }
    Ok(&bytes[offset..])
}

/// Reads an IDX image file (`…-images-idx3-ubyte[.gz]`).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    parse_images(path, &read_maybe_gz(path)?)
}

/// Parses the (decompressed) bytes of an IDX image file; `path` names it in errors.
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<IdxImages, DataError> {
    let d = header(path, bytes, 3)?;
    let (count, rows, cols) = (d[0], d[1], d[2]);
    if rows == 0 || cols == 0 {
        return Err(err(path, format!("image size {rows}×{cols} is empty")));
    }
    let total = count
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .ok_or_else(|| err(path, "dimensions overflow"))?;
    let pixels = body(path, bytes, 16, total, "pixels")?.to_vec();
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX label file (`…-labels-idx1-ubyte[.gz]`); every label must be `< classes`.
pub fn read_labels(path: &Path, classes: u8) -> Result<Vec<u8>, DataError> {
    parse_labels(path, &read_maybe_gz(path)?, classes)
}

/// Parses the (decompressed) bytes of an IDX label file; `path` names it in errors.
pub fn parse_labels(path: &Path, bytes: &[u8], classes: u8) -> Result<Vec<u8>, DataError> {
    let d = header(path, bytes, 1)?;
    let labels = body(path, bytes, 8, d[0], "labels")?.to_vec();
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(err(
            path,
            format!(
                "label {l} of record {i} is out of range (classes 0..{})",
                classes - 1
            ),
        ));
    }
    Ok(labels)
}

/// Writes an IDX image file (for tests and tools).
pub fn write_images(path: &Path, img: &IdxImages) -> std::io::Result<()> {
    let mut out = vec![0, 0, 8, 3];
    for d in [img.count, img.rows, img.cols] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&img.pixels);
    std::fs::write(path, out)
}

/// Writes an IDX label file (for tests and tools).
pub fn write_labels(path: &Path, labels: &[u8]) -> std::io::Result<()> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    std::fs::write(path, out)
}
