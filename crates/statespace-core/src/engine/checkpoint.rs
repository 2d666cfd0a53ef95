//! Checkpoints as safetensors files: named tensors plus string metadata (the run's config as JSON,
//! the training state). Written atomically: a temporary file in the same directory, fsync, rename,
//! fsync of the directory. The format is documented in `docs/checkpoint-format.md`.

use crate::engine::float::Float;
use crate::error::Error;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A tensor read from a checkpoint, converted to the engine's type.
#[derive(Debug, Clone)]
pub struct Tensor<T> {
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<T>,
}

/// The contents of a checkpoint.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// Tensors by name.
    pub tensors: HashMap<String, Tensor<T>>,
    /// String metadata.
    pub meta: HashMap<String, String>,
}

fn dtype_of<T: Float>() -> Dtype {
    if T::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// Writes `tensors` (name, shape, values) and `meta` to `path` atomically.
pub fn save<T: Float>(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[T])],
    meta: HashMap<String, String>,
) -> Result<(), Error> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), T::to_le_bytes_vec(v)))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(dtype_of::<T>(), s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::file(path, format!("cannot build the tensors: {e}")))?;
    let data = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, &data)
}

/// Writes `data` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Error::file(&tmp, format!("cannot create: {e}")))?;
    f.write_all(data)
        .map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    f.sync_all()
        .map_err(|e| Error::file(&tmp, format!("cannot sync: {e}")))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::file(path, format!("cannot move the new file into place: {e}")))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a checkpoint; every problem names the file and the tensor.
pub fn load<T: Float>(path: &Path) -> Result<Loaded<T>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let mut tensors = HashMap::new();
    for (tname, view) in st.tensors() {
        let data: Vec<T> = match view.dtype() {
            Dtype::F32 => f32::from_le_bytes_slice(view.data())
                .map(|v| v.into_iter().map(|x| T::of(x as f64)).collect()),
            Dtype::F64 => {
                f64::from_le_bytes_slice(view.data()).map(|v| v.into_iter().map(T::of).collect())
            }
            other => {
                return Err(Error::file(
                    path,
                    format!("tensor {tname} has dtype {other:?}; statespace reads F32 and F64"),
                ));
            }
        }
        .ok_or_else(|| {
            Error::file(
                path,
                format!("tensor {tname}: data length does not match its dtype"),
            )
        })?;
        tensors.insert(
            tname,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(Loaded { tensors, meta })
}
