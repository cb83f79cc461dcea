//! The GGUF container (versions 2 and 3): header, metadata and tensor table, read from the
//! file's bytes into candle's [`Content`], whose tensor readers then load the weights.
//!
//! Read here rather than through `Content::read` because a crafted file must be an error, not a
//! panic: candle divides by `general.alignment` unchecked (0 panics), multiplies tensor dims
//! without overflow checks, and builds a misaligned slice for a tensor of zero elements (all
//! found by `fuzz/`, target `gguf`). Every count is checked against the bytes left before
//! anything is allocated for it, every size is checked arithmetic, and every tensor's data must
//! lie inside the file.

use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;
use std::path::Path;

/// Arrays and strings nest at most this deep (the tokenizer's arrays of strings need 1).
const MAX_DEPTH: usize = 4;
/// Dimensions of a tensor (ggml's limit).
const MAX_DIMS: u32 = 4;
/// Alignment of the tensor data when the metadata does not say.
const DEFAULT_ALIGNMENT: u64 = 32;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: impl std::fmt::Display) -> Error {
        Error::model(self.path, format!("not a readable GGUF file: {what}"))
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(self.bad(format!(
                "{what} needs {n} bytes at offset {}, the file ends first",
                self.pos
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        Ok(std::array::from_fn(|i| s[i]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_size` bytes each, refused unless they can fit in what
    /// is left of the file.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        match usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_size))
        {
            Some(need) if need <= self.left() => Ok(n as usize),
            _ => Err(self.bad(format!(
                "{what} is {n}, more than the {} bytes left can hold",
                self.left()
            ))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let mut v = self.take(n, what)?.to_vec();
        // Some writers NUL-terminate strings.
        while v.last() == Some(&0) {
            v.pop();
        }
        String::from_utf8(v).map_err(|_| self.bad(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, kind: u32, key: &str, depth: usize) -> Result<Value> {
        let v = match kind {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.bad(format!("`{key}`: bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 if depth < MAX_DEPTH => {
                let inner = self.u32(key)?;
                let n = self.count(&format!("`{key}` array length"), min_size(inner))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                Value::Array(items)
            }
            9 => return Err(self.bad(format!("`{key}`: arrays nested deeper than {MAX_DEPTH}"))),
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(self.bad(format!("`{key}`: unknown value type {t}"))),
        };
        Ok(v)
    }
}

/// The fewest bytes a value of GGUF type `kind` takes (unknown types: 1, refused when read).
fn min_size(kind: u32) -> usize {
    match kind {
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => 1,
    }
}

fn dtype(id: u32) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        9 => Q8_1,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        30 => BF16,
        _ => return None,
    })
}

/// Bytes of a tensor of `dims` in `dtype`, if its element count is a whole number of blocks
/// and nothing overflows.
pub fn tensor_bytes(dims: &[usize], dtype: GgmlDType) -> Option<usize> {
    let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if elems == 0 || !elems.is_multiple_of(dtype.block_size()) {
        return None;
    }
    (elems / dtype.block_size()).checked_mul(dtype.type_size())
}

/// Reads the header, metadata and tensor table of the GGUF file `bytes` (all of it), checking
/// that every tensor's data lies inside the file.
pub fn read(path: &Path, bytes: &[u8]) -> Result<Content> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    if r.take(4, "the magic bytes")? != b"GGUF" {
        return Err(r.bad("no GGUF magic bytes"));
    }
    let magic = match r.u32("the version")? {
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(r.bad(format!("version {v} (expected 2 or 3)"))),
    };
    // A tensor entry is at least a name length, a dimension count, a dtype and an offset; a
    // metadata entry at least a key length, a type and one byte.
    let n_tensors = r.count("the tensor count", 24)?;
    let n_meta = r.count("the metadata count", 13)?;
    let mut metadata = HashMap::with_capacity(n_meta);
    for _ in 0..n_meta {
        let key = r.string("a metadata key")?;
        let kind = r.u32(&key)?;
        let value = r.value(kind, &key, 0)?;
        metadata.insert(key, value);
    }
    let mut table = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        table.push(tensor_info(&mut r)?);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(r.bad(format!(
                "`general.alignment` is {v:?}, expected a power of two (u32)"
            )))
        }
    };
    let data_offset = (r.pos as u64).next_multiple_of(alignment);
    let mut tensor_infos = HashMap::with_capacity(table.len());
    for (name, info) in table {
        let size = tensor_bytes(info.shape.dims(), info.ggml_dtype).ok_or_else(|| {
            r.bad(format!(
                "tensor `{name}`: shape {:?} is empty, overflows or is not whole {:?} blocks",
                info.shape.dims(),
                info.ggml_dtype
            ))
        })?;
        let end = data_offset
            .checked_add(info.offset)
            .and_then(|s| s.checked_add(size as u64));
        if end.is_none_or(|e| e > bytes.len() as u64) {
            return Err(r.bad(format!(
                "tensor `{name}` ({size} bytes at data offset {}) runs past the end of the file ({} bytes)",
                info.offset,
                bytes.len()
            )));
        }
        if tensor_infos.insert(name.clone(), info).is_some() {
            return Err(r.bad(format!("tensor `{name}` is listed twice")));
        }
    }
    Ok(Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset: data_offset,
    })
}

fn tensor_info(r: &mut Reader) -> Result<(String, TensorInfo)> {
    let name = r.string("a tensor name")?;
    let n_dims = r.u32(&name)?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(r.bad(format!(
            "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS})"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d = r.u64(&name)?;
        dims.push(
            usize::try_from(d).map_err(|_| r.bad(format!("tensor `{name}`: dimension {d}")))?,
        );
    }
    // GGUF lists the fastest-varying dimension first; candle's shapes are row-major.
    dims.reverse();
    let id = r.u32(&name)?;
    let ggml_dtype =
        dtype(id).ok_or_else(|| r.bad(format!("tensor `{name}`: unknown type {id}")))?;
    let offset = r.u64(&name)?;
    Ok((
        name,
        TensorInfo {
            ggml_dtype,
            shape: candle_core::Shape::from(dims),
            offset,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{gguf_file, QTensor};
    use candle_core::{Device, Tensor};

    fn file(alignment: Option<u32>, dims: &[usize]) -> Vec<u8> {
        let t = Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
        let name = Value::String("x".into());
        let mut meta: Vec<(&str, &Value)> = vec![("general.name", &name)];
        let a = alignment.map(Value::U32);
        if let Some(a) = &a {
            meta.push(("general.alignment", a));
        }
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &meta, &[("w", &q)]).unwrap();
        out.into_inner()
    }

    #[test]
    fn reads_what_candle_writes_and_candle_reads_its_tensors() {
        let bytes = file(None, &[3, 4]);
        let c = read(Path::new("m.gguf"), &bytes).unwrap();
        let ours = c.tensor_infos["w"].shape.dims().to_vec();
        assert_eq!(ours, vec![3, 4]);
        let theirs = Content::read(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(theirs.tensor_data_offset, c.tensor_data_offset);
        let t = c
            .tensor(&mut std::io::Cursor::new(&bytes), "w", &Device::Cpu)
            .unwrap();
        assert_eq!(t.shape().dims(), &[3, 4]);
    }

    #[test]
    fn crafted_files_are_errors() {
        let p = Path::new("m.gguf");
        let ok = file(None, &[3, 4]);
        // Truncated anywhere before the end of the tensor data: an error, never a panic.
        let c = read(p, &ok).unwrap();
        let end = c.tensor_data_offset + c.tensor_infos["w"].offset + 48;
        for n in 0..end as usize {
            assert!(read(p, &ok[..n]).is_err(), "truncated at {n}");
        }
        // Alignment 0 (candle divides by it) and 3 (not a power of two).
        for a in [0, 3] {
            let e = read(p, &file(Some(a), &[2, 2])).unwrap_err().to_string();
            assert!(e.contains("general.alignment"), "{e}");
        }
        // A tensor count no file could hold.
        let mut big = ok.clone();
        big[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let e = read(p, &big).unwrap_err().to_string();
        assert!(e.contains("tensor count"), "{e}");
        // An empty tensor (candle builds a misaligned slice for it).
        let e = read(p, &file(None, &[0, 4])).unwrap_err().to_string();
        assert!(e.contains("tensor `w`"), "{e}");
    }
}
