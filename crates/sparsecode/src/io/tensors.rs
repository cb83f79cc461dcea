//! Named tensors in safetensors files: f32 in memory; f32/f16/bf16/f64 accepted on load.

use crate::{Error, Result};
use safetensors::tensor::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A loaded tensor: its shape and values as f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Writes `(name, shape, values)` triples as an f32 safetensors file, atomically.
///
/// Streamed: the header, then each tensor's values converted a chunk at a time, so writing
/// takes a few MiB beside the tensors, not a copy of the file (the `safetensors` crate's
/// serialiser builds the whole file in memory: twice a checkpoint's size, which does not fit
/// beside a model trained near the memory limit). Tensors are laid out in the order given.
pub fn write_tensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut offset = 0usize;
    for (name, shape, v) in tensors {
        if shape.iter().product::<usize>() != v.len() {
            return Err(Error::format(
                path,
                format!(
                    "tensor {name}: shape {shape:?} does not hold {} values",
                    v.len()
                ),
            ));
        }
        let end = offset + 4 * v.len();
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| Error::format(path, e.to_string()))?;
    // The data starts 8-byte aligned (the format allows trailing spaces in the header).
    head.resize(head.len().next_multiple_of(8), b' ');
    super::write_atomic_with(path, |w| {
        use std::io::Write;
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for (_, _, v) in tensors {
            for chunk in v.chunks(1 << 14) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}

/// Reads every tensor of a safetensors file as f32.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
                .collect(),
            Dtype::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::format(
                    path,
                    format!(
                    "tensor {name}: unsupported dtype {other:?} (expected F32, F16, BF16 or F64)"
                ),
                ))
            }
        };
        out.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Removes tensor `name` from `map`, checking its shape; errors name the file and the tensor.
pub fn take(
    map: &mut BTreeMap<String, Tensor>,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = map.remove(name).ok_or_else(|| {
        Error::format(
            path,
            format!("missing tensor '{name}' (expected shape {shape:?})"),
        )
    })?;
    if t.shape != shape {
        return Err(Error::shape(
            format!("{}: tensor '{name}'", path.display()),
            format!("{shape:?}"),
            format!("{:?}", t.shape),
        ));
    }
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            context: format!("{}: tensor '{name}'", path.display()),
            row: i / shape.last().copied().unwrap_or(1).max(1),
            col: i % shape.last().copied().unwrap_or(1).max(1),
            value: t.data[i],
        });
    }
    Ok(t.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.safetensors");
        write_tensors(
            &p,
            &[
                ("a", vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                ("b", vec![1], &[7.0]),
            ],
            None,
        )
        .unwrap();
        let mut m = read_tensors(&p).unwrap();
        assert_eq!(
            take(&mut m, &p, "a", &[2, 3]).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let e = take(&mut m, &p, "b", &[2]).unwrap_err().to_string();
        assert!(
            e.contains("tensor 'b'") && e.contains("[2]") && e.contains("[1]"),
            "{e}"
        );
        assert!(take(&mut m, &p, "zzz", &[1])
            .unwrap_err()
            .to_string()
            .contains("missing tensor 'zzz'"));
        std::fs::write(&p, b"garbage").unwrap();
        assert!(read_tensors(&p)
            .unwrap_err()
            .to_string()
            .contains("not a valid safetensors"));
    }
}
