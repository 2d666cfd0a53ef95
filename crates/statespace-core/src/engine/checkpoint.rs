//! Checkpoints as safetensors files: named tensors plus string metadata (the run's config as JSON,
//! the training state). Written atomically: a temporary file in the same directory, fsync, rename,
//! fsync of the directory. The format is documented in `docs/checkpoint-format.md`.

use crate::engine::float::Float;
use crate::error::Error;
use safetensors::tensor::{Dtype, SafeTensors};
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

/// Writes `tensors` (name, shape, values) and `meta` to `path` atomically.
pub fn save<T: Float>(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[T])],
    meta: HashMap<String, String>,
) -> Result<(), Error> {
    let data = encode(tensors, &meta).map_err(|e| Error::file(path, e))?;
    write_atomic(path, &data)
}

/// The safetensors bytes of `tensors` and `meta`, the same for the same contents: the header lists
/// `__metadata__` with its keys sorted, then the tensors sorted by name, their data in that order;
/// the header is padded with spaces to a multiple of 8 bytes (so the data is aligned).
///
/// ```text
/// [u64 LE: header length n] [n bytes of JSON] [tensor bytes, row-major, little-endian]
/// {"__metadata__":{"k":"v",…},"name":{"dtype":"F32","shape":[…],"data_offsets":[begin,end]},…}
/// ```
pub fn encode<T: Float>(
    tensors: &[(String, Vec<usize>, &[T])],
    meta: &HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let mut order: Vec<&(String, Vec<usize>, &[T])> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("tensor {} is given twice", w[0].0));
    }
    let size = std::mem::size_of::<T>();
    let mut header = String::from("{");
    if !meta.is_empty() {
        let mut keys: Vec<&String> = meta.keys().collect();
        keys.sort();
        header.push_str("\"__metadata__\":{");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            json_string(k, &mut header);
            header.push(':');
            json_string(&meta[*k], &mut header);
        }
        header.push('}');
    }
    let mut offset = 0usize;
    for (i, (name, shape, values)) in order.iter().enumerate() {
        let count: usize = shape.iter().product();
        if count != values.len() {
            return Err(format!(
                "tensor {name}: shape {shape:?} holds {count} values, {} given",
                values.len()
            ));
        }
        if i > 0 || !meta.is_empty() {
            header.push(',');
        }
        json_string(name, &mut header);
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let end = offset + count * size;
        header.push_str(&format!(
            ":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            if size == 4 { "F32" } else { "F64" },
            dims.join(",")
        ));
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, _, values) in order {
        out.extend_from_slice(&T::to_le_bytes_vec(values));
    }
    Ok(out)
}

/// Appends `s` as a JSON string.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
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
    let written = std::fs::File::create(&tmp)
        .map_err(|e| Error::file(&tmp, format!("cannot create: {e}")))
        .and_then(|mut f| {
            f.write_all(data)
                .map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
            f.sync_all()
                .map_err(|e| Error::file(&tmp, format!("cannot sync: {e}")))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| Error::file(path, format!("cannot move the new file into place: {e}")))
        });
    if let Err(e) = written {
        // the old file (if any) is untouched; the partial new one goes
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a checkpoint; every problem names the file and the tensor.
pub fn load<T: Float>(path: &Path) -> Result<Loaded<T>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    decode(path, &bytes)
}

/// Reads a checkpoint from its bytes (`path` names it in errors).
pub fn decode<T: Float>(path: &Path, bytes: &[u8]) -> Result<Loaded<T>, Error> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes)
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
