//! NumPy `.npy` files: versions 1-3, little-endian `f4`/`f8`/`f2`, C order. Everything else is
//! refused with an error naming the file and what was found.
//!
//! Written by hand rather than through `npyz` (or `ndarray-npy`), measured with
//! `examples/npy_vs_npyz.rs`: npyz reads through `std::io::Read` into a `Vec`, 1.4x slower than
//! this memory-mapped reader on a 205 MB f32 matrix and unable to stream a store larger than
//! memory; it accepts trailing bytes after the array and answers a truncated file with "failed to
//! fill whole buffer", where this reader names the file, the shape and the byte counts. npyz stays
//! as a dev-dependency: `tests/npy_interop.rs` checks both readers and writers against each other.

use crate::{Error, Matrix, Result};
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element types we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// Little-endian IEEE half.
    F16,
    /// Little-endian IEEE single.
    F32,
    /// Little-endian IEEE double.
    F64,
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Element type.
    pub dtype: DType,
    /// Array shape (C order).
    pub shape: Vec<usize>,
    /// Offset of the first data byte.
    pub data_offset: usize,
}

/// Parses the header of `bytes` (the whole file) without judging the dtype: returns the `descr`
/// string, the shape and the offset of the first data byte. Fortran order is refused.
pub fn parse_header_any(path: &Path, bytes: &[u8]) -> Result<(String, Vec<usize>, usize)> {
    let bad = |reason: String| Error::format(path, format!("not a valid .npy file: {reason}"));
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic bytes".into()));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(bad(format!(
                "unsupported format version {v} (expected 1, 2 or 3)"
            )))
        }
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header says {len} bytes but the file ends first (truncated)"
            ))
        })?;
    let text =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text".into()))?;
    let dict = parse_dict(text).map_err(|r| bad(format!("malformed header {text:?}: {r}")))?;
    let descr = dict
        .descr
        .ok_or_else(|| bad("header has no 'descr'".into()))?;
    if dict
        .fortran_order
        .ok_or_else(|| bad("header has no 'fortran_order'".into()))?
    {
        return Err(Error::format(
            path,
            "array is in Fortran (column-major) order; save it in C order (np.ascontiguousarray)",
        ));
    }
    let shape = dict
        .shape
        .ok_or_else(|| bad("header has no 'shape'".into()))?;
    Ok((descr, shape, end))
}

/// Parses the header of `bytes` (the whole file); `path` is only used in errors.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let (descr, shape, data_offset) = parse_header_any(path, bytes)?;
    let dtype = match descr.as_str() {
        "<f4" | "=f4" => DType::F32,
        "<f8" | "=f8" => DType::F64,
        "<f2" | "=f2" => DType::F16,
        other => {
            return Err(Error::format(
                path,
                format!(
                "unsupported dtype '{other}' (expected little-endian float: '<f4', '<f8' or '<f2')"
            ),
            ))
        }
    };
    Ok(Header {
        dtype,
        shape,
        data_offset,
    })
}

#[derive(Default)]
struct Dict {
    descr: Option<String>,
    fortran_order: Option<bool>,
    shape: Option<Vec<usize>>,
}

/// Parses the Python dict literal of an npy header: `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`.
fn parse_dict(text: &str) -> std::result::Result<Dict, String> {
    let t = text.trim().trim_end_matches('\n').trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.trim_end().strip_suffix('}'))
        .ok_or("not a {...} dictionary")?;
    let mut dict = Dict::default();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (key, after) = parse_str(rest).ok_or("expected a quoted key")?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or("expected ':' after a key")?
            .trim_start();
        let after = match key.as_str() {
            "descr" => {
                let (v, a) = parse_str(after).ok_or("'descr' must be a string")?;
                dict.descr = Some(v);
                a
            }
            "fortran_order" => {
                if let Some(a) = after.strip_prefix("True") {
                    dict.fortran_order = Some(true);
                    a
                } else if let Some(a) = after.strip_prefix("False") {
                    dict.fortran_order = Some(false);
                    a
                } else {
                    return Err("'fortran_order' must be True or False".into());
                }
            }
            "shape" => {
                let a = after.strip_prefix('(').ok_or("'shape' must be a tuple")?;
                let close = a.find(')').ok_or("unclosed shape tuple")?;
                let mut shape = Vec::new();
                for part in a[..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    let part = part.trim_end_matches('L');
                    shape.push(
                        part.parse::<usize>()
                            .map_err(|_| format!("bad dimension '{part}'"))?,
                    );
                }
                dict.shape = Some(shape);
                &a[close + 1..]
            }
            other => return Err(format!("unknown key '{other}'")),
        };
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(dict)
}

fn parse_str(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &s[1..];
    let end = body.find(q)?;
    Some((body[..end].to_string(), &body[end + 1..]))
}

/// A memory-mapped `.npy` file whose header and size have been checked: values are converted to
/// f32 only when read, so files larger than RAM can be streamed.
pub struct NpyMap {
    map: memmap2::Mmap,
    header: Header,
    path: std::path::PathBuf,
}

impl NpyMap {
    /// Opens and checks `path` (magic, header, dtype, exact data length).
    pub fn open(path: &Path) -> Result<Self> {
        let map = super::map_file(path, "a .npy file")?;
        let header = parse_header(path, &map)?;
        let count = header
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::format(path, "shape overflows"))?;
        let need = count
            .checked_mul(header.dtype.size())
            .ok_or_else(|| Error::format(path, "shape overflows"))?;
        let have = map.len() - header.data_offset;
        if have < need {
            return Err(Error::format(
                path,
                format!(
                    "truncated: shape {:?} needs {need} data bytes, the file has {have}",
                    header.shape
                ),
            ));
        }
        if have > need {
            return Err(Error::format(
                path,
                format!(
                    "{} bytes of trailing data after the array of shape {:?}",
                    have - need,
                    header.shape
                ),
            ));
        }
        Ok(NpyMap {
            map,
            header,
            path: path.to_path_buf(),
        })
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// The file it maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `[rows, columns]` of a 2-D array with at least one value; other shapes are an error
    /// naming the file.
    pub fn matrix_shape(&self) -> Result<(usize, usize)> {
        match *self.shape() {
            [r, c] if r > 0 && c > 0 => Ok((r, c)),
            [r, c] => Err(Error::Empty {
                context: self.path.display().to_string(),
                reason: format!("shape [{r}, {c}]"),
            }),
            ref shape => Err(Error::shape(
                self.path.display().to_string(),
                "a 2-D array [rows, columns]",
                format!("{}-D array of shape {shape:?}", shape.len()),
            )),
        }
    }

    /// Rows `start..end` of a 2-D array as a matrix, refusing non-finite values (the error names
    /// the file and the row in it). Their pages are released after the copy ([`Self::release`]):
    /// this is the streaming read.
    pub fn read_rows(&self, start: usize, end: usize) -> Result<Matrix> {
        let (rows, cols) = self.matrix_shape()?;
        assert!(start <= end && end <= rows, "rows {start}..{end} of {rows}");
        let mut m = Matrix::zeros(end - start, cols);
        self.read_values(start * cols, m.as_mut_slice());
        self.release(start * cols, end * cols);
        match m.first_non_finite() {
            None => Ok(m),
            Some((row, col, value)) => Err(Error::NonFinite {
                context: self.path.display().to_string(),
                row: start + row,
                col,
                value,
            }),
        }
    }

    /// Gives back the pages of values `start..end` (flat) that this process has mapped in, so a
    /// file read once front to back does not stay resident (RSS) after it was read. Reading them
    /// again maps them in again from the file.
    pub fn release(&self, start: usize, end: usize) {
        let size = self.header.dtype.size();
        let page = 4096;
        // Whole pages inside the range only; the map itself starts on a page boundary.
        let a = (self.header.data_offset + start * size).next_multiple_of(page);
        let b = (self.header.data_offset + end * size) / page * page;
        if b > a {
            // SAFETY: a read-only, shared file map and no borrow of these bytes outlives
            // `read_values`; MADV_DONTNEED drops the pages from this process only (their
            // contents stay in the file and are faulted in again if read).
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a)
            };
        }
    }

    /// Converts values `start..start + out.len()` (flat, C order) to f32.
    pub fn read_values(&self, start: usize, out: &mut [f32]) {
        let size = self.header.dtype.size();
        let a = self.header.data_offset + start * size;
        let data = &self.map[a..a + out.len() * size];
        match self.header.dtype {
            DType::F32 => out
                .iter_mut()
                .zip(data.chunks_exact(4))
                .for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DType::F64 => out.iter_mut().zip(data.chunks_exact(8)).for_each(|(o, c)| {
                *o =
                    f64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")) as f32
            }),
            DType::F16 => out
                .iter_mut()
                .zip(data.chunks_exact(2))
                .for_each(|(o, c)| *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        }
    }
}

/// Reads any-rank array as `(shape, values as f32)`, through a memory map.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let m = NpyMap::open(path)?;
    let mut values = vec![0.0f32; m.shape().iter().product()];
    m.read_values(0, &mut values);
    Ok((m.shape().to_vec(), values))
}

/// Reads a rank-2 array as a [`Matrix`], refusing other ranks and non-finite values (the error
/// names the first bad row).
pub fn read_matrix(path: &Path) -> Result<Matrix> {
    let (shape, values) = read_npy(path)?;
    if shape.len() != 2 {
        return Err(Error::shape(
            path.display().to_string(),
            "a 2-D array [rows, columns]",
            format!("{}-D array of shape {shape:?}", shape.len()),
        ));
    }
    let m = Matrix::from_vec(shape[0], shape[1], values)?;
    m.check_finite(&path.display().to_string())?;
    Ok(m)
}

/// A data matrix `[samples, d_in]` from a `.npy` file: [`read_matrix`], refusing an empty one.
pub fn read_data(path: &Path) -> Result<Matrix> {
    let m = read_matrix(path)?;
    if m.rows() == 0 || m.cols() == 0 {
        return Err(Error::Empty {
            context: path.display().to_string(),
            reason: format!("shape [{}, {}]", m.rows(), m.cols()),
        });
    }
    Ok(m)
}

/// A version-1 `.npy` header for `descr` and `shape`, padded so the data starts on a 64-byte
/// boundary.
pub fn to_npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Encodes an f32 array as `.npy` version 1 bytes.
pub fn to_npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut out = to_npy_header("<f4", shape);
    out.reserve(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a matrix as an f32 `.npy` file, atomically.
pub fn write_matrix(path: &Path, m: &Matrix) -> Result<()> {
    super::write_atomic(path, &to_npy_bytes(&[m.rows(), m.cols()], m.as_slice()))
}

/// An f32 `[rows, cols]` `.npy` file that several processes fill, each its own rows, on a file
/// system they share: made at full size under a temporary name beside its destination by one
/// process ([`SharedNpy::create`]), opened by that name by the others ([`SharedNpy::open`]),
/// and moved into place by the first once every part is written ([`SharedNpy::commit`]), so
/// the destination holds the whole file or is untouched.
#[derive(Debug)]
pub struct SharedNpy {
    tmp: PathBuf,
    data_offset: u64,
    rows: usize,
    cols: usize,
}

impl SharedNpy {
    /// Creates the temporary file for `dest`: the header, then `rows x cols` zeros (a sparse
    /// file until written).
    pub fn create(dest: &Path, rows: usize, cols: usize) -> Result<Self> {
        let header = to_npy_header("<f4", &[rows, cols]);
        let bytes = (rows as u64)
            .checked_mul(cols as u64)
            .and_then(|v| v.checked_mul(4))
            .and_then(|v| v.checked_add(header.len() as u64))
            .ok_or_else(|| {
                Error::shape(
                    dest.display().to_string(),
                    "a size below 2^64 bytes",
                    format!("[{rows}, {cols}] f32"),
                )
            })?;
        let tmp = super::atomic::tmp_sibling(dest, "tmp");
        let made = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &header)?;
            f.set_len(bytes)
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        Ok(Self::open(tmp, rows, cols))
    }

    /// The file another process created for `[rows, cols]` under the temporary name `tmp`.
    pub fn open(tmp: PathBuf, rows: usize, cols: usize) -> Self {
        let data_offset = to_npy_header("<f4", &[rows, cols]).len() as u64;
        SharedNpy {
            tmp,
            data_offset,
            rows,
            cols,
        }
    }

    /// The temporary name (for the other processes).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Writes `m` as rows `first..first + m.rows()` and syncs them to disk.
    pub fn write_rows(&self, first: usize, m: &Matrix) -> Result<()> {
        if m.cols() != self.cols
            || first
                .checked_add(m.rows())
                .is_none_or(|end| end > self.rows)
        {
            return Err(Error::shape(
                self.tmp.display().to_string(),
                format!("rows within {} of width {}", self.rows, self.cols),
                format!("rows {first}.. of [{}, {}]", m.rows(), m.cols()),
            ));
        }
        use std::os::unix::fs::FileExt;
        let written = (|| {
            let f = std::fs::OpenOptions::new().write(true).open(&self.tmp)?;
            let row_bytes = self.cols as u64 * 4;
            // A few MB at a time: the part's codes are not copied whole.
            let per_chunk = ((4 << 20) / row_bytes.max(1)).max(1) as usize;
            for start in (0..m.rows()).step_by(per_chunk) {
                let end = (start + per_chunk).min(m.rows());
                let values = &m.as_slice()[start * self.cols..end * self.cols];
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                let at = self.data_offset + (first + start) as u64 * row_bytes;
                f.write_all_at(&bytes, at)?;
            }
            f.sync_data()
        })();
        written.map_err(|e| Error::io(&self.tmp, e))
    }

    /// Moves the finished file to `dest` (after every process's [`SharedNpy::write_rows`]).
    pub fn commit(self, dest: &Path) -> Result<()> {
        let done = std::fs::File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&self.tmp, dest));
        done.map_err(|e| Error::io(dest, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_npy_filled_in_parts_is_the_file_written_whole() {
        let t = tempfile::tempdir().unwrap();
        let m = Matrix::standard_normal(37, 5, 4);
        let whole = t.path().join("whole.npy");
        write_matrix(&whole, &m).unwrap();
        let dest = t.path().join("parts.npy");
        let first = SharedNpy::create(&dest, 37, 5).unwrap();
        let other = SharedNpy::open(first.temp_path().to_path_buf(), 37, 5);
        let rows = |a: usize, b: usize| {
            Matrix::from_vec(b - a, 5, m.as_slice()[a * 5..b * 5].to_vec()).unwrap()
        };
        other.write_rows(20, &rows(20, 37)).unwrap();
        first.write_rows(0, &rows(0, 20)).unwrap();
        assert!(
            !dest.exists(),
            "nothing at the destination before the commit"
        );
        assert!(first.write_rows(30, &rows(0, 8)).is_err(), "past the end");
        assert!(
            first.write_rows(0, &Matrix::zeros(2, 4)).is_err(),
            "wrong width"
        );
        first.commit(&dest).unwrap();
        assert_eq!(
            std::fs::read(&dest).unwrap(),
            std::fs::read(&whole).unwrap()
        );
    }

    fn header_bytes(dict: &str, major: u8) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out
    }

    #[test]
    fn round_trip_and_alignment() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.npy");
        let m = Matrix::from_fn(3, 5, |r, c| r as f32 * 10.0 + c as f32 - 0.5);
        write_matrix(&p, &m).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(parse_header(&p, &bytes).unwrap().data_offset % 64, 0);
        assert_eq!(read_matrix(&p).unwrap(), m);
    }

    #[test]
    fn reads_v2_f64_and_f16() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.npy");
        let mut bytes = header_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }\n",
            2,
        );
        bytes.extend_from_slice(&1.5f64.to_le_bytes());
        bytes.extend_from_slice(&(-2.0f64).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_matrix(&p).unwrap().as_slice(), &[1.5, -2.0]);
        let mut bytes = header_bytes(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }\n",
            3,
        );
        bytes.extend_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        bytes.extend_from_slice(&half::f16::from_f32(3.0).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_matrix(&p).unwrap().as_slice(), &[0.25, 3.0]);
    }

    fn err_of(bytes: &[u8]) -> String {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("bad.npy");
        std::fs::write(&p, bytes).unwrap();
        let e = read_matrix(&p).unwrap_err().to_string();
        assert!(e.contains("bad.npy"), "error must name the file: {e}");
        e
    }

    #[test]
    fn rejects_malformed_files_with_reasons() {
        assert!(err_of(b"").contains("empty"));
        assert!(err_of(b"hello world, not numpy").contains("magic"));
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n";
        let mut trunc = header_bytes(good, 1);
        trunc.extend_from_slice(&[0u8; 12]);
        assert!(err_of(&trunc).contains("truncated"));
        let short_header = &header_bytes(good, 1)[..20];
        assert!(err_of(short_header).contains("truncated"));
        let mut ints = header_bytes(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1), }\n",
            1,
        );
        ints.extend_from_slice(&[0u8; 8]);
        assert!(err_of(&ints).contains("unsupported dtype '<i8'"));
        let mut big = header_bytes(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1), }\n",
            1,
        );
        big.extend_from_slice(&[0u8; 4]);
        assert!(err_of(&big).contains("'>f4'"));
        let mut fortran = header_bytes(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }\n",
            1,
        );
        fortran.extend_from_slice(&[0u8; 4]);
        assert!(err_of(&fortran).contains("Fortran"));
        let mut rank1 = header_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n",
            1,
        );
        rank1.extend_from_slice(&[0u8; 12]);
        assert!(err_of(&rank1).contains("2-D"));
        let mut nan = header_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n",
            1,
        );
        for v in [1.0f32, 2.0, 3.0, f32::NAN] {
            nan.extend_from_slice(&v.to_le_bytes());
        }
        let e = err_of(&nan);
        assert!(e.contains("row 1") && e.contains("NaN"), "{e}");
        assert!(err_of(&header_bytes("{'descr': '<f4' 'shape'", 1)).contains("malformed"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..200), major in 0u8..5) {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().join("g.npy");
            let mut bytes = MAGIC.to_vec();
            bytes.push(major);
            bytes.extend(tail);
            std::fs::write(&p, &bytes).unwrap();
            let _ = read_npy(&p);
        }
    }
}
