//! IDX files (the MNIST family's format, gzip-compressed as distributed): a 4-byte magic
//! `0, 0, type, rank`, `rank` big-endian u32 dimensions, then the values row-major. Only the
//! unsigned-byte type (0x08) occurs in MNIST and Fashion-MNIST, and only it is read.
//!
//! Images become rows of `[count, rows * cols]` in `[0, 1]` (value / 255); labels a vector.

use flate2::read::GzDecoder;
use sparsecode::{Error, Matrix, Result};
use std::io::Read;
use std::path::Path;

const UBYTE: u8 = 0x08;

/// The dimensions and bytes of an IDX file (gzip-compressed when it starts with gzip's magic).
fn read(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("not a readable gzip stream: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(path, "not an IDX file (no 0, 0 magic)"));
    }
    if bytes[2] != UBYTE {
        return Err(Error::format(
            path,
            format!(
                "IDX value type 0x{:02x}: only unsigned bytes (0x08) are read",
                bytes[2]
            ),
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        return Err(Error::format(
            path,
            format!("IDX header of rank {rank} is cut short"),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
    if bytes.len() - header != count {
        return Err(Error::format(
            path,
            format!(
                "dimensions {dims:?} need {count} values, the file holds {}",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Images of an IDX file of rank 3 as rows `[count, rows * cols]` scaled to `[0, 1]`.
pub fn read_images(path: &Path) -> Result<Matrix> {
    let (dims, values) = read(path)?;
    if dims.len() != 3 {
        return Err(Error::format(
            path,
            format!("expected images [count, rows, cols], found dimensions {dims:?}"),
        ));
    }
    let data = values.iter().map(|v| *v as f32 / 255.0).collect();
    Matrix::from_vec(dims[0], dims[1] * dims[2], data)
}

/// Labels of an IDX file of rank 1.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let (dims, values) = read(path)?;
    if dims.len() != 1 {
        return Err(Error::format(
            path,
            format!("expected labels [count], found dimensions {dims:?}"),
        ));
    }
    Ok(values.iter().map(|v| *v as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn idx(dims: &[u32], values: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(values);
        b
    }

    #[test]
    fn reads_plain_and_gzip_images_and_labels() {
        let t = tempfile::tempdir().unwrap();
        let images = idx(&[2, 2, 3], &[0, 255, 51, 102, 153, 204, 1, 2, 3, 4, 5, 6]);
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&images).unwrap();
        std::fs::write(t.path().join("i.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(t.path().join("l"), idx(&[3], &[7, 0, 9])).unwrap();
        let m = read_images(&t.path().join("i.gz")).unwrap();
        assert_eq!(m.shape(), (2, 6));
        assert_eq!(&m.row(0)[..3], &[0.0, 1.0, 0.2]);
        assert_eq!(read_labels(&t.path().join("l")).unwrap(), vec![7, 0, 9]);
    }

    #[test]
    fn refuses_what_is_not_ubyte_idx_of_the_right_rank_and_length() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let cases: [(Vec<u8>, &str); 5] = [
            (b"PK\x03\x04".to_vec(), "no 0, 0 magic"),
            (
                vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0],
                "only unsigned bytes",
            ),
            (vec![0, 0, UBYTE, 2, 0, 0], "cut short"),
            (idx(&[4], &[1, 2, 3]), "need 4 values, the file holds 3"),
            (idx(&[1, 2], &[1, 2]), "expected labels"),
        ];
        for (bytes, needle) in cases {
            std::fs::write(&p, &bytes).unwrap();
            let e = read_labels(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        std::fs::write(&p, idx(&[3], &[1, 2, 3])).unwrap();
        assert!(read_images(&p)
            .unwrap_err()
            .to_string()
            .contains("expected images"));
        std::fs::write(&p, [0x1f, 0x8b, 0, 1, 2]).unwrap();
        assert!(read_labels(&p).unwrap_err().to_string().contains("gzip"));
    }
}
